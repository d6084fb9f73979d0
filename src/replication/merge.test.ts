import { describe, expect, it } from "vitest";
import { entryWrite } from "../../tests/contracts/registry-store.contract.js";
import { createManualClock } from "../../tests/support/manual-clock.js";
import {
  createReplicaNode,
  declaredService,
  type ReplicaNode,
} from "../../tests/support/replica-node.js";
import type { DeclaredService, RegistryChange, RegistryEntry } from "../registry/model.js";
import type { RegistryStore } from "../registry/registry-store.js";
import { HybridLogicalClock } from "./hybrid-logical-clock.js";
import { compareStamps, type Stamp } from "./stamp.js";

const call = { correlationId: "", traceId: "" };

/** A node whose leases and tombstones run out within a test's manual time. */
function createNode(nodeId: string): ReplicaNode {
  return createReplicaNode(nodeId, {
    registry: { leaseGraceMs: 5_000, tombstoneRetentionMs: 60_000 },
  });
}

function declared(name: string, overrides: Partial<DeclaredService> = {}): DeclaredService {
  return declaredService(name, { ttlSeconds: 10, ...overrides });
}

/** A put made on `origin`, as another node's stream would carry it (its revision is theirs). */
function putOf(
  name: string,
  hlc: bigint,
  origin: string,
  overrides: Partial<RegistryEntry> = {},
): RegistryChange {
  const entry: RegistryEntry = {
    ...entryWrite(name, { origin, hlc, baseUrl: `http://${name}.${origin}.test/${hlc}` }),
    revision: 41,
    ...overrides,
  };
  return { type: "put", revision: entry.revision, entry };
}

function deleteOf(name: string, hlc: bigint, origin: string): RegistryChange {
  return {
    type: "delete",
    revision: 42,
    tombstone: { name, revision: 42, deletedAt: 1_700_000_000_000, origin, hlc },
  };
}

const nameOf = (change: RegistryChange) =>
  change.type === "put" ? change.entry.name : change.tombstone.name;
const stampOf = (change: RegistryChange): Stamp =>
  change.type === "put" ? change.entry : change.tombstone;

/** What replication must agree on: every name, live or dead, with its stamp (and its content). */
function stateOf(store: RegistryStore): string[] {
  const lines = [...store.entries()].map((e) => `${e.name} + ${e.hlc}@${e.origin} ${e.baseUrl}`);
  for (const t of store.tombstones()) lines.push(`${t.name} - ${t.hlc}@${t.origin}`);
  return lines.sort();
}

/** The state the newest change of every name leaves, whatever the order they came in. */
function expectedStateOf(changes: readonly RegistryChange[]): string[] {
  const newest = new Map<string, RegistryChange>();
  for (const change of changes) {
    const held = newest.get(nameOf(change));
    if (held === undefined || compareStamps(stampOf(change), stampOf(held)) > 0) {
      newest.set(nameOf(change), change);
    }
  }
  return [...newest.values()]
    .map((c) =>
      c.type === "put"
        ? `${c.entry.name} + ${c.entry.hlc}@${c.entry.origin} ${c.entry.baseUrl}`
        : `${c.tombstone.name} - ${c.tombstone.hlc}@${c.tombstone.origin}`,
    )
    .sort();
}

/** A small seeded PRNG (mulberry32): the property test is the same on every run. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy;
}

const conflicts = (node: ReplicaNode) =>
  node.events.recent().filter((e) => e.type === "replication.conflict_resolved");

describe("compareStamps", () => {
  it("orders by clock first, then by origin, and is zero only for the same stamp", () => {
    expect(compareStamps({ hlc: 1n, origin: "z" }, { hlc: 2n, origin: "a" })).toBeLessThan(0);
    expect(compareStamps({ hlc: 2n, origin: "a" }, { hlc: 1n, origin: "z" })).toBeGreaterThan(0);
    expect(compareStamps({ hlc: 5n, origin: "a" }, { hlc: 5n, origin: "b" })).toBeLessThan(0);
    expect(compareStamps({ hlc: 5n, origin: "b" }, { hlc: 5n, origin: "a" })).toBeGreaterThan(0);
    expect(compareStamps({ hlc: 5n, origin: "a" }, { hlc: 5n, origin: "a" })).toBe(0);
  });
});

describe("HybridLogicalClock", () => {
  it("follows wall-clock time and never goes backwards, even when the wall clock does", () => {
    const clock = createManualClock();
    const hlc = new HybridLogicalClock(clock);
    const first = hlc.now();
    expect(HybridLogicalClock.millisOf(first)).toBe(clock.now());
    const second = hlc.now();
    expect(second).toBe(first + 1n);
    clock.advance(-60_000);
    const third = hlc.now();
    expect(third).toBeGreaterThan(second);
    clock.advance(120_000);
    expect(HybridLogicalClock.millisOf(hlc.now())).toBe(clock.now());
  });

  it("stamps after a stamp it observed, and ignores older ones", () => {
    const clock = createManualClock();
    const hlc = new HybridLogicalClock(clock);
    const future = BigInt(clock.now() + 3_600_000) << 16n;
    hlc.observe(future);
    hlc.observe(5n);
    expect(hlc.now()).toBe(future + 1n);
  });
});

describe("ReplicationMerger", () => {
  it("applies a newer put, ignores an older one, and ignores the same one again", async () => {
    const a = createNode("node-a");
    expect(await a.merger.merge(putOf("svc", 100n, "node-b"))).toBe("applied");
    expect(await a.merger.merge(putOf("svc", 200n, "node-b", { version: "2" }))).toBe("applied");
    expect(a.store.get("svc")).toMatchObject({ hlc: 200n, origin: "node-b", version: "2" });
    const revision = a.store.revision;

    expect(await a.merger.merge(putOf("svc", 150n, "node-b", { version: "old" }))).toBe("ignored");
    expect(await a.merger.merge(putOf("svc", 200n, "node-b", { version: "2" }))).toBe("ignored");
    expect(a.store.get("svc")).toMatchObject({ hlc: 200n, version: "2" });
    // Nothing written: no revision, so nothing re-emitted down this node's own stream.
    expect(a.store.revision).toBe(revision);
    // Older writes from the same origin are history, not conflicts.
    expect(conflicts(a)).toEqual([]);
  });

  it("writes a merged entry under its own stamp and content, at this node's revision", async () => {
    const a = createNode("node-a");
    await a.registry.register(declared("other"), call);
    const remote: RegistryEntry = {
      ...entryWrite("svc", { origin: "node-b", hlc: 100n, tags: ["t"], status: "HEALTHY" }),
      revision: 977,
    };
    await a.merger.merge({ type: "put", revision: remote.revision, entry: remote });
    expect(a.store.get("svc")).toEqual({ ...remote, status: "UNKNOWN", revision: 2 });
  });

  it("breaks a tie on the clock by origin, the same way on every node", async () => {
    const a = createNode("node-a");
    await a.merger.merge(putOf("svc", 100n, "node-a", { version: "from-a" }));
    expect(await a.merger.merge(putOf("svc", 100n, "node-b", { version: "from-b" }))).toBe(
      "applied",
    );
    const b = createNode("node-b");
    await b.merger.merge(putOf("svc", 100n, "node-b", { version: "from-b" }));
    expect(await b.merger.merge(putOf("svc", 100n, "node-a", { version: "from-a" }))).toBe(
      "ignored",
    );
    expect(a.store.get("svc")).toMatchObject({ origin: "node-b", version: "from-b" });
    expect(b.store.get("svc")).toMatchObject({ origin: "node-b", version: "from-b" });
  });

  it("records a delete of a name it never saw, so that an older put arriving later stays dead", async () => {
    const a = createNode("node-a");
    expect(await a.merger.merge(deleteOf("ghost", 200n, "node-b"))).toBe("applied");
    expect(a.store.tombstone("ghost")).toMatchObject({ hlc: 200n, origin: "node-b" });
    expect(a.store.get("ghost")).toBeUndefined();

    expect(await a.merger.merge(putOf("ghost", 100n, "node-c"))).toBe("ignored");
    expect(a.store.get("ghost")).toBeUndefined();
    expect(a.store.tombstone("ghost")).toMatchObject({ hlc: 200n, origin: "node-b" });

    expect(await a.merger.merge(putOf("ghost", 300n, "node-c"))).toBe("applied");
    expect(a.store.get("ghost")).toMatchObject({ hlc: 300n, origin: "node-c" });
    expect(a.store.tombstone("ghost")).toBeUndefined();
  });

  it("deletes a live entry for a newer delete, and ignores an older one", async () => {
    const a = createNode("node-a");
    await a.merger.merge(putOf("svc", 200n, "node-b"));
    expect(await a.merger.merge(deleteOf("svc", 100n, "node-b"))).toBe("ignored");
    expect(a.store.get("svc")).toBeDefined();
    expect(await a.merger.merge(deleteOf("svc", 300n, "node-c"))).toBe("applied");
    expect(a.store.get("svc")).toBeUndefined();
    expect(a.store.tombstone("svc")).toMatchObject({ hlc: 300n, origin: "node-c" });
  });

  it("keeps the health status this node learned, whatever the origin saw", async () => {
    const a = createNode("node-a");
    await a.registry.register(declared("svc"), call);
    await a.registry.setHealth("svc", "HEALTHY", {});
    await a.merger.merge(putOf("svc", a.hlc.now() + 10n, "node-b", { status: "UNHEALTHY" }));
    expect(a.store.get("svc")).toMatchObject({ origin: "node-b", status: "HEALTHY" });

    // A name new to this node starts UNKNOWN until this node probes it.
    await a.merger.merge(putOf("fresh", 1n, "node-b", { status: "HEALTHY" }));
    expect(a.store.get("fresh")?.status).toBe("UNKNOWN");
  });

  it("brings an entry this node had DOWN back as UNKNOWN, as a registration would", async () => {
    const a = createNode("node-a");
    await a.registry.register(declared("svc", { ttlSeconds: 10 }), call);
    a.clock.advance(10_000);
    await a.registry.sweep();
    expect(a.store.get("svc")?.status).toBe("DOWN");
    await a.merger.merge(putOf("svc", a.hlc.now() + 10n, "node-b", { status: "DOWN" }));
    expect(a.store.get("svc")).toMatchObject({ origin: "node-b", status: "UNKNOWN" });
  });

  it("emits conflict_resolved when a concurrent write from another origin loses", async () => {
    const a = createNode("node-a");
    const { entry } = await a.registry.register(declared("svc"), call);
    const loser = putOf("svc", entry.hlc - 1n, "node-b");
    expect(await a.merger.merge(loser)).toBe("ignored");
    expect(a.store.get("svc")?.origin).toBe("node-a");
    const events = conflicts(a);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      subject: "svc",
      payload: {
        service: "svc",
        winner_origin: "node-a",
        winner_hlc: entry.hlc.toString(),
        loser_origin: "node-b",
        loser_hlc: (entry.hlc - 1n).toString(),
      },
    });

    // The winner's own echo (the same stamp) is no conflict.
    await a.merger.merge(putOf("svc", entry.hlc, "node-a"));
    expect(conflicts(a)).toHaveLength(1);
  });

  it("makes this node's next write newer than a far-future stamp it merged", async () => {
    const a = createNode("node-a");
    // Half an hour ahead: within the skew a peer's clock is allowed.
    const future = BigInt(a.clock.now() + 1_800_000) << 16n;
    await a.merger.merge(putOf("svc", future, "node-b"));
    const { entry } = await a.registry.register(declared("svc", { version: "2" }), call);
    expect(entry.hlc).toBeGreaterThan(future);
    expect(entry.origin).toBe("node-a");
    // Even a change that loses is observed: the clock must stay ahead of everything seen.
    const further = future + (1_000n << 16n);
    await a.merger.merge(deleteOf("elsewhere", further, "node-c"));
    await a.merger.merge(putOf("elsewhere", further - 1n, "node-c"));
    expect((await a.registry.register(declared("x"), call)).entry.hlc).toBeGreaterThan(further);
  });

  it("rejects a change a registration could not have made, and does not let it move the clock", async () => {
    const a = createNode("node-a");
    const tooFar = BigInt(a.clock.now() + 2 * 3_600_000) << 16n;
    expect(await a.merger.merge(putOf("svc", tooFar, "node-b"))).toBe("rejected");
    expect(await a.merger.merge(putOf("svc", (1n << 63n) + 5n, "node-b"))).toBe("rejected");
    expect(await a.merger.merge(putOf("Not A/Name", 100n, "node-b"))).toBe("rejected");
    expect(await a.merger.merge(putOf("svc", 100n, "node-b", { baseUrl: "ftp://x" }))).toBe(
      "rejected",
    );
    expect(await a.merger.merge(deleteOf("svc", 100n, ""))).toBe("rejected");
    expect(a.store.revision).toBe(0);
    expect(a.events.recent().filter((e) => e.type === "replication.change_rejected")).toHaveLength(
      5,
    );
    const { entry } = await a.registry.register(declared("svc"), call);
    expect(entry.hlc).toBeLessThan(tooFar);
  });

  it("rejects an entry over the limits of a registration: long values, 16 KiB in all", async () => {
    const a = createNode("node-a");
    const heavy = Object.fromEntries(
      Array.from({ length: 40 }, (_, i) => [`k${i}`, "v".repeat(500)]),
    );
    expect(await a.merger.merge(putOf("big", 100n, "node-b", { metadata: heavy }))).toBe(
      "rejected",
    );
    const long = { k: "v".repeat(1_024) };
    expect(await a.merger.merge(putOf("long", 100n, "node-b", { metadata: long }))).toBe(
      "rejected",
    );
    expect(a.store.size).toBe(0);
  });

  it("refuses a new entry when this registry is full, without failing the stream", async () => {
    const a = createReplicaNode("node-a", { store: { maxEntries: 1 } });
    expect(await a.merger.merge(putOf("one", 100n, "node-b"))).toBe("applied");
    expect(await a.merger.merge(putOf("two", 101n, "node-b"))).toBe("rejected");
    const rejected = a.events.recent().filter((e) => e.type === "replication.change_rejected");
    expect(rejected.map((e) => e.payload.reason)).toEqual(["this registry is full"]);
    // A change that does not grow the registry still goes through.
    expect(await a.merger.merge(putOf("one", 102n, "node-b", { version: "2" }))).toBe("applied");
  });

  it("converges whatever order a set of puts and deletes arrives in (seeded property)", async () => {
    const random = seededRandom(0x5eed);
    const names = ["a", "b", "c", "d"];
    const origins = ["node-1", "node-2", "node-3"];
    for (let trial = 0; trial < 300; trial++) {
      const changes: RegistryChange[] = [];
      const seen = new Set<string>();
      const count = 3 + Math.floor(random() * 12);
      while (changes.length < count) {
        const name = names[Math.floor(random() * names.length)] as string;
        // A narrow clock range: many ties on the clock, decided by origin.
        const hlc = BigInt(1 + Math.floor(random() * 6));
        const origin = origins[Math.floor(random() * origins.length)] as string;
        const key = `${name} ${hlc} ${origin}`;
        if (seen.has(key)) continue; // one change per (name, stamp): stamps are unique per write
        seen.add(key);
        changes.push(random() < 0.3 ? deleteOf(name, hlc, origin) : putOf(name, hlc, origin));
      }
      // Some changes arrive twice (by two paths): merging must be idempotent too.
      const delivered = [...changes, ...changes.filter(() => random() < 0.3)];
      const x = createNode("node-x");
      const y = createNode("node-y");
      for (const change of shuffled(delivered, random)) await x.merger.merge(change);
      for (const change of shuffled(delivered, random)) await y.merger.merge(change);
      const expected = expectedStateOf(changes);
      expect(stateOf(x.store), `trial ${trial}`).toEqual(expected);
      expect(stateOf(y.store), `trial ${trial}`).toEqual(expected);
    }
  });
});

describe("ReplicationMerger with the registry's own stamps", () => {
  it("does not carry a health status across nodes: setHealth leaves the stamp alone", async () => {
    const a = createNode("node-a");
    const b = createNode("node-b");
    await b.registry.register(declared("svc"), call);
    const before = b.store.revision;
    await b.registry.setHealth("svc", "HEALTHY", {});
    for (const change of b.store.changesSince(0) ?? []) await a.merger.merge(change);
    const [healthChange] = b.store.changesSince(before) ?? [];
    expect(healthChange?.type === "put" && healthChange.entry.status).toBe("HEALTHY");
    expect(a.store.get("svc")).toMatchObject({ status: "UNKNOWN", hlc: b.store.get("svc")?.hlc });
  });

  it("lets a renewal made elsewhere win over a removal by lease expiry (which keeps the entry's stamp)", async () => {
    const a = createNode("node-a");
    const b = createNode("node-b");
    const { entry } = await a.registry.register(declared("svc", { ttlSeconds: 10 }), call);
    for (const change of a.store.changesSince(0) ?? []) await b.merger.merge(change);

    b.clock.advance(5_000);
    await b.registry.heartbeat("svc", call);
    const renewal = b.store.changesSince(b.store.revision - 1)?.[0];

    a.clock.advance(10_000);
    await a.registry.sweep(); // DOWN
    a.clock.advance(5_000);
    await a.registry.sweep(); // removed after the grace period
    const removal = a.store.tombstone("svc");
    expect(removal).toMatchObject({ origin: "node-a", hlc: entry.hlc });

    expect(renewal).toBeDefined();
    if (renewal === undefined || removal === undefined) return;
    expect(await a.merger.merge(renewal)).toBe("applied");
    expect(a.store.get("svc")).toMatchObject({ origin: "node-b", status: "UNKNOWN" });
    expect(
      await b.merger.merge({ type: "delete", revision: removal.revision, tombstone: removal }),
    ).toBe("ignored");
    expect(b.store.get("svc")?.origin).toBe("node-b");
    expect(conflicts(b)).toHaveLength(1);
    expect(stateOf(a.store)).toEqual(stateOf(b.store));
  });

  it("lets a deregistration made elsewhere, later, remove a live entry", async () => {
    const a = createNode("node-a");
    const b = createNode("node-b");
    await a.registry.register(declared("svc"), call);
    for (const change of a.store.changesSince(0) ?? []) await b.merger.merge(change);
    b.clock.advance(1);
    await b.registry.deregister("svc", call);
    const revision = b.store.revision;
    for (const change of b.store.changesSince(revision - 1) ?? []) await a.merger.merge(change);
    expect(a.store.get("svc")).toBeUndefined();
    expect(a.store.tombstone("svc")?.origin).toBe("node-b");
    expect(stateOf(a.store)).toEqual(stateOf(b.store));
  });
});
