import { afterEach, describe, expect, it, vi } from "vitest";
import { DomainError } from "../../src/errors/domain-error.js";
import { entryWeight } from "../../src/registry/entry-limits.js";
import type {
  EntryWrite,
  OpenApiBaseline,
  RegistryChange,
  TombstoneWrite,
} from "../../src/registry/model.js";
import type { RegistryStore } from "../../src/registry/registry-store.js";
import type { RegistryViewLimits } from "../../src/registry/registry-view.js";

/** How a store implementation is brought up for the contract suite. */
export interface RegistryStoreHarness {
  /** A new, empty store of its own (for Redis: a fresh key prefix), opened. */
  create(
    options?: Partial<RegistryViewLimits> & { baselinesMaxBytes?: number },
  ): Promise<RegistryStore>;
  /** A second store over the same backing data, as another process would open it. */
  twin?(store: RegistryStore): Promise<RegistryStore>;
  /** The same backing data opened anew after `store` was closed: a restart. */
  reopen?(store: RegistryStore): Promise<RegistryStore>;
  /** Releases everything created since the last cleanup. */
  cleanup(): Promise<void>;
}

/** A valid entry write; fields may be overridden. */
export function entryWrite(name: string, overrides: Partial<EntryWrite> = {}): EntryWrite {
  return {
    name,
    baseUrl: `http://${name}.svc:8080`,
    openapiUrl: "",
    healthUrl: `http://${name}.svc:8080/health`,
    endpoints: ["/a", "/b"],
    metadata: { team: "core", "zone.id": "eu-1" },
    tags: ["blue", "critical"],
    version: "1.2.3",
    ttlSeconds: 30,
    status: "UNKNOWN",
    registeredAt: 1_700_000_000_000,
    lastHeartbeat: 1_700_000_000_000,
    updatedAt: 1_700_000_000_000,
    leaseExpiresAt: 1_700_000_030_000,
    origin: "node-a",
    // Beyond 2^53: stamps must survive storage exactly.
    hlc: 117_684_903_530_921_984n,
    ...overrides,
  };
}

/** A baseline whose summary is these bytes (opaque to the store: newlines and zeros included). */
function baselineOf(hash: string, summary: number[]): OpenApiBaseline {
  return { hash, operationCount: summary.length, summary: Buffer.from(summary), recordedAt: 5 };
}

function tombstoneWrite(name: string, deletedAt = 1_700_000_100_000): TombstoneWrite {
  return { name, deletedAt, origin: "node-a", hlc: 117_684_903_530_925_000n };
}

// Generous: another process's change reaches a view over pub/sub on a loaded machine.
const waitLong = { timeout: 20_000, interval: 50 };

/** The DomainError `promise` rejects with (the test fails if it resolves or rejects otherwise). */
export async function failureOf(promise: Promise<unknown>): Promise<DomainError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DomainError);
  return error as DomainError;
}

async function conflictOf(promise: Promise<unknown>): Promise<DomainError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DomainError);
  expect((error as DomainError).kind).toBe("conflict");
  return error as DomainError;
}

/** The behaviour every RegistryStore must have. */
export function registryStoreContract(name: string, harness: RegistryStoreHarness): void {
  describe(`RegistryStore contract: ${name}`, () => {
    afterEach(() => harness.cleanup());

    it("starts empty at revision 0", async () => {
      const store = await harness.create();
      expect(store.revision).toBe(0);
      expect(store.size).toBe(0);
      expect(store.get("a")).toBeUndefined();
      expect(store.changesSince(0)).toEqual([]);
    });

    it("writes a new entry at the next revision, and reads it back exactly", async () => {
      const store = await harness.create();
      const written = await store.put(entryWrite("a"), 0);
      expect(written).toEqual({ ...entryWrite("a"), revision: 1 });
      expect(store.get("a")).toEqual(written);
      expect(store.size).toBe(1);
      expect(store.revision).toBe(1);
      expect([...store.entries()]).toEqual([written]);
    });

    it("updates an entry only from the revision it was read at", async () => {
      const store = await harness.create();
      const first = await store.put(entryWrite("a"), 0);
      await conflictOf(store.put(entryWrite("a", { version: "2" }), 0));
      await conflictOf(store.put(entryWrite("a", { version: "2" }), first.revision + 5));
      const second = await store.put(entryWrite("a", { version: "2" }), first.revision);
      expect(second.revision).toBe(2);
      expect(store.get("a")?.version).toBe("2");
      expect(store.revision).toBe(2);
    });

    it("removes an entry leaving a tombstone, and a new registration replaces the tombstone", async () => {
      const store = await harness.create();
      const entry = await store.put(entryWrite("a"), 0);
      await conflictOf(store.remove(tombstoneWrite("a"), entry.revision + 1));
      const tombstone = await store.remove(tombstoneWrite("a"), entry.revision);
      expect(tombstone).toEqual({ ...tombstoneWrite("a"), revision: 2 });
      expect(store.get("a")).toBeUndefined();
      expect(store.tombstone("a")).toEqual(tombstone);
      expect([...store.tombstones()]).toEqual([tombstone]);
      expect(store.size).toBe(0);
      const again = await store.put(entryWrite("a"), 0);
      expect(again.revision).toBe(3);
      expect(store.tombstone("a")).toBeUndefined();
    });

    it("records a tombstone for an entry it never had, blocking nothing but itself", async () => {
      const store = await harness.create();
      await conflictOf(store.remove(tombstoneWrite("ghost"), 7));
      const tombstone = await store.remove(tombstoneWrite("ghost", 2_000), 0);
      expect(tombstone).toEqual({ ...tombstoneWrite("ghost", 2_000), revision: 1 });
      expect(store.tombstone("ghost")).toEqual(tombstone);
      expect(store.get("ghost")).toBeUndefined();
      // A newer delete replaces the tombstone; a registration replaces it too.
      const newer = await store.remove(tombstoneWrite("ghost", 3_000), 0);
      expect(store.tombstone("ghost")).toEqual(newer);
      expect(store.changesSince(0)?.map((c) => c.type)).toEqual(["delete", "delete"]);
      await store.put(entryWrite("ghost"), 0);
      expect(store.tombstone("ghost")).toBeUndefined();
    });

    it("keeps a node id, a history id and replication cursors", async () => {
      const store = await harness.create();
      expect(store.historyId).toMatch(/\S/);
      expect(await store.ensureNodeId("node-first")).toBe("node-first");
      expect(await store.ensureNodeId("node-second")).toBe("node-first");
      expect(await store.getCursor("http://peer-a:5099")).toBeUndefined();
      await store.putCursor("http://peer-a:5099", { historyId: "h1", revision: 42 });
      await store.putCursor("http://peer-a:5099", { historyId: "h1", revision: 43 });
      expect(await store.getCursor("http://peer-a:5099")).toEqual({
        historyId: "h1",
        revision: 43,
      });
      expect(store.revision).toBe(0);
      const other = await harness.create();
      expect(other.historyId).not.toBe(store.historyId);
    });

    it("logs every change in revision order, and says when it no longer holds them", async () => {
      const store = await harness.create({ changeLogSize: 5 });
      const a = await store.put(entryWrite("a"), 0);
      await store.put(entryWrite("b"), 0);
      await store.remove(tombstoneWrite("a"), a.revision);
      const changes = store.changesSince(0) ?? [];
      expect(changes.map((c) => [c.type, c.revision])).toEqual([
        ["put", 1],
        ["put", 2],
        ["delete", 3],
      ]);
      expect(store.changesSince(2)?.map((c) => c.revision)).toEqual([3]);
      expect(store.changesSince(3)).toEqual([]);
      for (let i = 0; i < 12; i++) await store.put(entryWrite(`n${i}`), 0);
      expect(store.revision).toBe(15);
      expect(store.changesSince(0)).toBeUndefined();
      // The log keeps exactly the last changeLogSize changes.
      expect(store.compactedRevision).toBe(10);
      expect(store.changesSince(10)?.map((c) => c.revision)).toEqual([11, 12, 13, 14, 15]);
      expect(store.changesSince(9)).toBeUndefined();
      expect(store.changesSince(10, 2)?.map((c) => c.revision)).toEqual([11, 12]);
    });

    it("keeps no more bytes of changes than changeLogBytes, dropping the oldest first", async () => {
      const heavy = (name: string) =>
        entryWrite(name, { metadata: { blob: "x".repeat(500), more: "y".repeat(500) } });
      const weight = entryWeight({ ...heavy("n00"), revision: 1 });
      // Room for three such changes, not four.
      const store = await harness.create({ changeLogSize: 1000, changeLogBytes: 3 * weight + 10 });
      for (let i = 0; i < 10; i++) await store.put(heavy(`n0${i}`), 0);
      expect(store.compactedRevision).toBe(7);
      expect(store.changesSince(7)?.map((c) => c.revision)).toEqual([8, 9, 10]);
      expect(store.changesSince(6)).toBeUndefined();
      // A twin (another process) reads the same bounded log from the backing store.
      if (harness.twin) {
        const twin = await harness.twin(store);
        await twin.put(heavy("n10"), 0);
        await vi.waitFor(() => expect(store.revision).toBe(11), waitLong);
        expect(store.changesSince(8)?.map((c) => c.revision)).toEqual([9, 10, 11]);
      }
    });

    it("refuses a write past maxEntries or maxBytes, but never one that does not grow", async () => {
      const store = await harness.create({ maxEntries: 3 });
      for (const n of ["a", "b", "c"]) await store.put(entryWrite(n), 0);
      const full = await failureOf(store.put(entryWrite("d"), 0));
      expect(full.kind).toBe("resource_exhausted");
      expect(full.message).toContain("REGISTRY_MAX_ENTRIES");
      // Updates of a full registry go on; a removal makes room.
      const a = await store.put(entryWrite("a", { version: "2" }), store.get("a")?.revision ?? 0);
      await store.remove(tombstoneWrite("a"), a.revision);
      await store.put(entryWrite("d"), 0);
      expect(store.size).toBe(3);

      const weight = entryWeight({ ...entryWrite("e"), revision: 1 });
      const bytes = await harness.create({ maxBytes: 2 * weight + 100 });
      await bytes.put(entryWrite("e"), 0);
      await bytes.put(entryWrite("f"), 0);
      expect(bytes.bytes).toBe(2 * weight);
      expect((await failureOf(bytes.put(entryWrite("g"), 0))).message).toContain(
        "REGISTRY_MAX_BYTES",
      );
      // Growing an entry past the bound is refused; the same size or smaller passes.
      const grown = entryWrite("e", { metadata: { team: "z".repeat(200) } });
      const e = bytes.get("e")?.revision ?? 0;
      expect((await failureOf(bytes.put(grown, e))).kind).toBe("resource_exhausted");
      await bytes.put(entryWrite("e", { status: "HEALTHY" }), e);
      await bytes.put(entryWrite("e", { metadata: {} }), bytes.get("e")?.revision ?? 0);
      expect(bytes.bytes).toBeLessThan(2 * weight);
    });

    it("names the cut-off that keeps only the newest tombstones", async () => {
      const store = await harness.create();
      for (const [n, at] of [
        ["t1", 1_000],
        ["t2", 2_000],
        ["t3", 3_000],
        ["t4", 4_000],
      ] as const) {
        await store.remove(tombstoneWrite(n, at), 0);
      }
      expect(store.tombstoneCutoff(4)).toBeUndefined();
      const cutoff = store.tombstoneCutoff(2);
      expect(cutoff).toBe(2_001);
      expect(await store.purgeTombstones(cutoff ?? 0)).toBe(2);
      expect([...store.tombstones()].map((t) => t.name).sort()).toEqual(["t3", "t4"]);
    });

    it("tells listeners of every change, in order, until they unsubscribe", async () => {
      const store = await harness.create();
      const seen: RegistryChange[] = [];
      const unsubscribe = store.onChange((change) => seen.push(change));
      const a = await store.put(entryWrite("a"), 0);
      await store.remove(tombstoneWrite("a"), a.revision);
      unsubscribe();
      await store.put(entryWrite("b"), 0);
      expect(seen.map((c) => [c.type, c.revision])).toEqual([
        ["put", 1],
        ["delete", 2],
      ]);
    });

    it("forgets only tombstones older than the cut-off, without a revision", async () => {
      const store = await harness.create();
      for (const n of ["old", "new"]) await store.put(entryWrite(n), 0);
      await store.remove(tombstoneWrite("old", 1_000), store.get("old")?.revision ?? 0);
      await store.remove(tombstoneWrite("new", 5_000), store.get("new")?.revision ?? 0);
      const revision = store.revision;
      expect(await store.purgeTombstones(2_000)).toBe(1);
      expect(store.tombstone("old")).toBeUndefined();
      expect(store.tombstone("new")).toBeDefined();
      expect(store.revision).toBe(revision);
    });

    it("keeps OpenAPI baselines apart from entries, for live entries only", async () => {
      const store = await harness.create();
      expect(await store.getBaseline("a")).toBeUndefined();
      const baseline = baselineOf("h1", [0x4f, 0x00, 0x0a, 0xff]);
      // No live entry, no baseline: a poll that ends after a removal leaves nothing behind.
      expect(await store.putBaseline("a", baseline)).toBe(false);
      expect(await store.getBaseline("a")).toBeUndefined();
      const a = await store.put(entryWrite("a"), 0);
      const revision = store.revision;
      expect(await store.putBaseline("a", baseline)).toBe(true);
      expect(await store.getBaseline("a")).toEqual(baseline);
      expect(store.revision).toBe(revision);
      await store.remove(tombstoneWrite("a"), a.revision);
      expect(await store.putBaseline("a", baselineOf("h2", [1]))).toBe(false);
      expect(await store.getBaseline("a")).toEqual(baseline);
    });

    it("deletes a baseline, and purges those without a live entry", async () => {
      const store = await harness.create();
      const [a, b] = [await store.put(entryWrite("a"), 0), await store.put(entryWrite("b"), 0)];
      await store.put(entryWrite("c"), 0);
      for (const name of ["a", "b", "c"]) {
        expect(await store.putBaseline(name, baselineOf(name, [1, 2, 3]))).toBe(true);
      }
      await store.deleteBaseline("c");
      await store.deleteBaseline("never-had-one");
      expect(await store.getBaseline("c")).toBeUndefined();
      await store.remove(tombstoneWrite("a"), a.revision);
      await store.remove(tombstoneWrite("b"), b.revision);
      expect(await store.purgeBaselines()).toBe(2);
      expect(await store.getBaseline("a")).toBeUndefined();
      expect(await store.getBaseline("b")).toBeUndefined();
      expect(await store.purgeBaselines()).toBe(0);
    });

    it("keeps all baselines within baselinesMaxBytes, refusing growth, never a smaller one", async () => {
      const store = await harness.create({ baselinesMaxBytes: 35_000 });
      const big = (hash: string) =>
        baselineOf(
          hash,
          Array.from({ length: 10_000 }, (_, i) => i),
        );
      for (const name of ["a", "b", "c", "d"]) await store.put(entryWrite(name), 0);
      for (const name of ["a", "b", "c"])
        expect(await store.putBaseline(name, big(name))).toBe(true);
      const full = await failureOf(store.putBaseline("d", big("d")));
      expect(full.kind).toBe("resource_exhausted");
      expect(full.message).toContain("OPENAPI_BASELINES_MAX_BYTES");
      expect(await store.getBaseline("d")).toBeUndefined();
      // A baseline no larger than the one it replaces always fits; a removal makes room.
      expect(await store.putBaseline("a", baselineOf("a2", [1, 2]))).toBe(true);
      expect(await store.putBaseline("d", big("d"))).toBe(true);
      expect(await failureOf(store.putBaseline("a", big("a3")))).toMatchObject({
        kind: "resource_exhausted",
      });
      await store.deleteBaseline("b");
      expect(await store.putBaseline("a", big("a3"))).toBe(true);
      const c = store.get("c");
      await store.remove(tombstoneWrite("c"), c?.revision ?? 0);
      expect(await store.purgeBaselines()).toBe(1);
      expect(await store.putBaseline("b", big("b2"))).toBe(true);
    });

    it("gives concurrent writes distinct, gapless revisions", async () => {
      const store = await harness.create();
      const written = await Promise.all(
        Array.from({ length: 50 }, (_, i) => store.put(entryWrite(`s${i}`), 0)),
      );
      const revisions = written.map((e) => e.revision).sort((a, b) => a - b);
      expect(revisions).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      expect(store.revision).toBe(50);
      expect(store.size).toBe(50);
    });

    it("lets exactly one of two racing writers of the same entry win", async () => {
      const store = await harness.create();
      const outcomes = await Promise.allSettled([
        store.put(entryWrite("a", { version: "x" }), 0),
        store.put(entryWrite("a", { version: "y" }), 0),
      ]);
      expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
      const loser = outcomes.find((o) => o.status === "rejected");
      expect((loser as PromiseRejectedResult).reason).toMatchObject({ kind: "conflict" });
    });

    it.runIf(harness.twin !== undefined)(
      "shares revisions and entries with a second process on the same data",
      async () => {
        const one = await harness.create();
        const two = await (harness.twin as NonNullable<RegistryStoreHarness["twin"]>)(one);
        const seen: number[] = [];
        two.onChange((change) => seen.push(change.revision));
        await one.put(entryWrite("a"), 0);
        await two.put(entryWrite("b"), 0);
        await vi.waitFor(() => expect(one.get("b")?.revision).toBe(2), { timeout: 10_000 });
        await vi.waitFor(() => expect(two.get("a")?.revision).toBe(1), { timeout: 10_000 });
        expect(seen).toEqual([1, 2]);
        // A write from a stale view is refused, whichever process makes it.
        await conflictOf(two.put(entryWrite("a", { version: "stale" }), 0));
        // Racing writers in two processes: revisions stay distinct and gapless.
        await Promise.all(
          Array.from({ length: 20 }, (_, i) => (i % 2 ? one : two).put(entryWrite(`r${i}`), 0)),
        );
        await vi.waitFor(() => expect(one.revision).toBe(22), { timeout: 10_000 });
        await vi.waitFor(() => expect(two.revision).toBe(22), { timeout: 10_000 });
        expect(one.changesSince(2)?.map((c) => c.revision)).toEqual(
          Array.from({ length: 20 }, (_, i) => i + 3),
        );
      },
    );

    it.runIf(harness.reopen !== undefined)("loses nothing across a restart", async () => {
      const store = await harness.create();
      const a = await store.put(entryWrite("a"), 0);
      await store.put(entryWrite("b"), 0);
      await store.remove(tombstoneWrite("a"), a.revision);
      expect(await store.putBaseline("b", baselineOf("h", [7, 0x0a, 8]))).toBe(true);
      await store.ensureNodeId("node-kept");
      await store.putCursor("http://peer:1", { historyId: "h", revision: 9 });
      const before = {
        revision: store.revision,
        entries: [...store.entries()],
        tombstones: [...store.tombstones()],
      };
      await store.close();
      const again = await (harness.reopen as NonNullable<RegistryStoreHarness["reopen"]>)(store);
      expect(again.revision).toBe(before.revision);
      expect([...again.entries()]).toEqual(before.entries);
      expect([...again.tombstones()]).toEqual(before.tombstones);
      expect(await again.getBaseline("b")).toEqual(baselineOf("h", [7, 0x0a, 8]));
      // The revisions go on: the history, the node id and the cursors stay.
      expect(again.historyId).toBe(store.historyId);
      expect(await again.ensureNodeId("node-other")).toBe("node-kept");
      expect(await again.getCursor("http://peer:1")).toEqual({ historyId: "h", revision: 9 });
      const next = await again.put(entryWrite("c"), 0);
      expect(next.revision).toBe(before.revision + 1);
    });
  });
}
