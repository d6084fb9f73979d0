import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { createManualClock, type ManualClock } from "../../tests/support/manual-clock.js";
import { createRecordingEventLog } from "../../tests/support/recording-event-log.js";
import { declaredService } from "../../tests/support/replica-node.js";
import { DomainError } from "../errors/domain-error.js";
import { changeWeight } from "../registry/entry-limits.js";
import { createMemoryRegistryStore } from "../registry/memory-registry-store.js";
import type { RegistryChange } from "../registry/model.js";
import { Registry } from "../registry/registry.js";
import type { RegistryStore } from "../registry/registry-store.js";
import { HybridLogicalClock } from "./hybrid-logical-clock.js";
import { ReplicationMerger } from "./merge.js";
import {
  batchesOf,
  coalesce,
  maxBatchBytes,
  maxBatchChanges,
  type ReplicationFeedOptions,
  type ReplicationMessage,
  replicationFeed,
} from "./replication-feed.js";

const logger = pino({ level: "silent" });
const call = { correlationId: "", traceId: "" };

/**
 * The serving node: a real memory store written through a real registry. Its store is seen through
 * a wrapper that only counts change subscriptions (everything else is the store itself), to check
 * that a feed lets go of its subscription when it ends.
 */
interface ServingNode {
  readonly clock: ManualClock;
  readonly store: RegistryStore;
  readonly registry: Registry;
  /** Merges changes from other nodes into this one, as its peer links do. */
  readonly merger: ReplicationMerger;
  readonly subscriptions: () => number;
}

function createServingNode(changeLogSize?: number, nodeId = "node-b"): ServingNode {
  const clock = createManualClock();
  const real = createMemoryRegistryStore(changeLogSize === undefined ? {} : { changeLogSize });
  let subscriptions = 0;
  const store: RegistryStore = Object.create(real, {
    onChange: {
      value: (listener: (change: RegistryChange) => void) => {
        subscriptions++;
        const unsubscribe = real.onChange(listener);
        return () => {
          subscriptions--;
          unsubscribe();
        };
      },
    },
  });
  const hlc = new HybridLogicalClock(clock);
  const events = createRecordingEventLog({ clock, source: nodeId });
  const registry = new Registry({ store, clock, hlc, events, nodeId, logger });
  const merger = new ReplicationMerger({ store, hlc, clock, events, nodeId });
  return { clock, store, registry, merger, subscriptions: () => subscriptions };
}

const controllers: AbortController[] = [];
afterEach(() => {
  for (const controller of controllers.splice(0)) controller.abort();
});

function feedOf(
  node: ServingNode,
  from: { historyId?: string; revision?: number; acceptsBatches?: boolean } = {},
  options: Partial<ReplicationFeedOptions> = {},
): { feed: AsyncGenerator<ReplicationMessage>; controller: AbortController } {
  const controller = new AbortController();
  controllers.push(controller);
  const feed = replicationFeed(
    {
      store: node.store,
      clock: node.clock,
      nodeId: "node-b",
      learnedFrom: (change) => node.merger.learnedFrom(change),
    },
    {
      peerNodeId: "node-c",
      fromHistoryId: from.historyId ?? "",
      fromRevision: from.revision ?? 0,
      acceptsBatches: from.acceptsBatches ?? false,
      signal: controller.signal,
    },
    { keepaliveMs: 60_000, ...options },
  );
  return { feed, controller };
}

function changeSummary(change: RegistryChange): string {
  return change.type === "put"
    ? `put ${change.entry.name}@${change.revision}`
    : `delete ${change.tombstone.name}@${change.revision}`;
}

function summary(message: ReplicationMessage): string {
  switch (message.kind) {
    case "hello":
      return `hello@${message.revision}${message.snapshot ? " snapshot" : ""}`;
    case "change":
      return changeSummary(message.change);
    case "batch":
      return `batch[${message.changes.map(changeSummary).join(", ")}]`;
    case "snapshot_end":
      return `end@${message.revision}`;
    case "keepalive":
      return `keepalive@${message.revision}`;
  }
}

async function take(feed: AsyncGenerator<ReplicationMessage>, n: number): Promise<string[]> {
  const taken: string[] = [];
  while (taken.length < n) {
    const result = await feed.next();
    if (result.done) throw new Error(`the feed ended after ${taken.join(", ")}`);
    taken.push(summary(result.value));
  }
  return taken;
}

/** a@1, b@2, a deleted @3, c@4, b renewed @5. */
async function fiveChanges(node: ServingNode): Promise<void> {
  await node.registry.register(declaredService("a"), call);
  await node.registry.register(declaredService("b"), call);
  await node.registry.deregister("a", call);
  await node.registry.register(declaredService("c"), call);
  node.clock.advance(1_000);
  await node.registry.heartbeat("b", call);
}

/** Registers `name` on a node of its own (`origin`) and returns that write's change. */
async function writtenOn(origin: string, name: string): Promise<RegistryChange> {
  const other = createServingNode(undefined, origin);
  await other.registry.register(declaredService(name), call);
  const [change] = other.store.changesSince(0) ?? [];
  if (change === undefined) throw new Error("no change");
  return change;
}

describe("replicationFeed", () => {
  it("sends the peer (node-c) neither its own changes nor those learned from it, and tells it how far it got", async () => {
    const node = createServingNode();
    await node.registry.register(declaredService("local-1"), call);
    const { feed } = feedOf(node, { historyId: node.store.historyId, revision: 1 });
    expect(await take(feed, 1)).toEqual(["hello@1"]);

    node.clock.advance(1_000);
    // c's own write, reaching b from c: c holds it.
    expect(await node.merger.merge(await writtenOn("node-c", "from-c"), "node-c")).toBe("applied");
    // a's write, reaching b through c: c holds it too.
    expect(await node.merger.merge(await writtenOn("node-a", "a-via-c"), "node-c")).toBe("applied");
    // a's write, reaching b from a: c may not have it (a chain a-b-c), so b relays it.
    expect(await node.merger.merge(await writtenOn("node-a", "a-direct"), "node-a")).toBe(
      "applied",
    );
    await node.registry.register(declaredService("local-2"), call);
    expect(await take(feed, 2)).toEqual(["put a-direct@4", "put local-2@5"]);

    // Nothing else to send: the peer is told, after a batch of its own changes, how far it got.
    const next = take(feed, 1);
    node.clock.advance(1_000);
    await node.merger.merge(await writtenOn("node-c", "from-c-2"), "node-c");
    expect(await next).toEqual(["keepalive@6"]);
  });

  it("sends a snapshot whole, the peer's own entries included (a peer that restarted empty needs them)", async () => {
    const node = createServingNode();
    await node.merger.merge(await writtenOn("node-c", "from-c"), "node-c");
    await node.registry.register(declaredService("local"), call);
    const { feed } = feedOf(node);
    expect(await take(feed, 4)).toEqual([
      "hello@2 snapshot",
      "put from-c@1",
      "put local@2",
      "end@2",
    ]);
  });

  it("relays a change the peer originated no more once a newer one from elsewhere replaced it", async () => {
    const node = createServingNode();
    const fromC = await writtenOn("node-c", "shared");
    await node.merger.merge(fromC, "node-c");
    const { feed } = feedOf(node, { historyId: node.store.historyId, revision: 1 });
    expect(await take(feed, 1)).toEqual(["hello@1"]);
    node.clock.advance(60_000);
    // b's own newer write of the same name goes to c.
    await node.registry.register(declaredService("shared"), call);
    expect(await take(feed, 1)).toEqual(["put shared@2"]);
  });

  it("sends a hello, every entry and tombstone in revision order, the end marker, then live changes", async () => {
    const node = createServingNode();
    await fiveChanges(node);
    const { feed } = feedOf(node);
    const hello = await feed.next();
    expect(hello.value).toEqual({
      kind: "hello",
      nodeId: "node-b",
      historyId: node.store.historyId,
      revision: 5,
      snapshot: true,
    });
    expect(await take(feed, 4)).toEqual(["delete a@3", "put c@4", "put b@5", "end@5"]);

    const next = take(feed, 1);
    await node.registry.register(declaredService("d"), call);
    expect(await next).toEqual(["put d@6"]);
  });

  it("carries the entries and tombstones as stored, stamps included", async () => {
    const node = createServingNode();
    await fiveChanges(node);
    const { feed } = feedOf(node);
    const messages: ReplicationMessage[] = [];
    for (let i = 0; i < 5; i++) {
      const result = await feed.next();
      if (!result.done) messages.push(result.value);
    }
    const changes = messages.flatMap((m) => (m.kind === "change" ? [m.change] : []));
    expect(changes).toEqual([
      { type: "delete", revision: 3, tombstone: node.store.tombstone("a") },
      { type: "put", revision: 4, entry: node.store.get("c") },
      { type: "put", revision: 5, entry: node.store.get("b") },
    ]);
  });

  it("resumes a cursor of the same history with only the later changes, without a snapshot", async () => {
    const node = createServingNode();
    await fiveChanges(node);
    const { feed } = feedOf(node, { historyId: node.store.historyId, revision: 3 });
    expect(await take(feed, 3)).toEqual(["hello@5", "put c@4", "put b@5"]);
    const next = take(feed, 1);
    await node.registry.register(declaredService("d"), call);
    expect(await next).toEqual(["put d@6"]);
  });

  it("resumes a caught-up cursor with nothing but live changes", async () => {
    const node = createServingNode();
    await fiveChanges(node);
    const { feed } = feedOf(node, { historyId: node.store.historyId, revision: 5 });
    expect(await take(feed, 1)).toEqual(["hello@5"]);
    const next = take(feed, 1);
    await node.registry.deregister("c", call);
    expect(await next).toEqual(["delete c@6"]);
  });

  it("coalesces the backlog of a resume to each name's latest change", async () => {
    const node = createServingNode();
    await fiveChanges(node);
    const { feed } = feedOf(node, { historyId: node.store.historyId, revision: 0 });
    // b@2 is stood for by b@5, a@1 by its delete @3.
    expect(await take(feed, 4)).toEqual(["hello@5", "delete a@3", "put c@4", "put b@5"]);
  });

  it("sends a snapshot for a cursor of another history", async () => {
    const node = createServingNode();
    await fiveChanges(node);
    const { feed } = feedOf(node, { historyId: "a-history-long-gone", revision: 3 });
    expect(await take(feed, 5)).toEqual([
      "hello@5 snapshot",
      "delete a@3",
      "put c@4",
      "put b@5",
      "end@5",
    ]);
  });

  it("sends a snapshot for a cursor from the future (the node restarted empty)", async () => {
    const node = createServingNode();
    await fiveChanges(node);
    const { feed } = feedOf(node, { historyId: node.store.historyId, revision: 99 });
    expect(await take(feed, 1)).toEqual(["hello@5 snapshot"]);
  });

  it("sends a snapshot when the change log no longer covers the cursor", async () => {
    const node = createServingNode(2);
    for (const name of ["a", "b", "c", "d", "e", "f"]) {
      await node.registry.register(declaredService(name), call);
    }
    const compacted = node.store.compactedRevision;
    expect(compacted).toBeGreaterThan(1);

    const behind = feedOf(node, { historyId: node.store.historyId, revision: compacted - 1 });
    expect(await take(behind.feed, 1)).toEqual(["hello@6 snapshot"]);

    const covered = feedOf(node, { historyId: node.store.historyId, revision: compacted });
    const [hello] = await take(covered.feed, 1);
    expect(hello).toBe("hello@6");
  });

  it("coalesces changes that piled up while the consumer was busy, keeping the cursor's revision", async () => {
    const node = createServingNode();
    const { feed } = feedOf(node);
    expect(await take(feed, 2)).toEqual(["hello@0 snapshot", "end@0"]);
    await node.registry.register(declaredService("a"), call); // 1
    await node.registry.register(declaredService("b"), call); // 2
    await node.registry.register(declaredService("a", { version: "2" }), call); // 3
    await node.registry.deregister("b", call); // 4
    await node.registry.register(declaredService("c"), call); // 5
    const result = await feed.next();
    expect(result.value).toMatchObject({ kind: "change", change: { entry: { version: "2" } } });
    expect(await take(feed, 2)).toEqual(["delete b@4", "put c@5"]);

    // Nothing of the backlog comes again: the feed's cursor moved to its last revision.
    const next = take(feed, 1);
    await node.registry.register(declaredService("d"), call);
    expect(await next).toEqual(["put d@6"]);
  });

  it("coalesces within a batch of batchSize changes only, and the last change always goes out", async () => {
    const node = createServingNode();
    const { feed } = feedOf(node, {}, { batchSize: 2 });
    await take(feed, 2);
    await node.registry.register(declaredService("a"), call); // 1
    await node.registry.register(declaredService("a", { version: "2" }), call); // 2
    await node.registry.register(declaredService("b"), call); // 3
    await node.registry.register(declaredService("a", { version: "3" }), call); // 4
    expect(await take(feed, 3)).toEqual(["put a@2", "put b@3", "put a@4"]);
  });

  it("sends a keepalive with the current revision after keepaliveMs without a message", async () => {
    const node = createServingNode();
    await node.registry.register(declaredService("a"), call);
    const { feed } = feedOf(
      node,
      { historyId: node.store.historyId, revision: 1 },
      {
        keepaliveMs: 20,
      },
    );
    await take(feed, 1);
    const keepalive = await feed.next();
    expect(keepalive.value).toEqual({
      kind: "keepalive",
      revision: 1,
      timestamp: node.clock.now(),
    });
    // A change goes out as soon as it is made, not at the next keepalive.
    const next = feed.next();
    await node.registry.register(declaredService("b"), call);
    expect((await next).value).toMatchObject({ kind: "change", change: { revision: 2 } });
  });

  it("cuts a consumer that falls maxQueue changes behind with RESOURCE_EXHAUSTED, naming where to resume", async () => {
    const node = createServingNode();
    const { feed } = feedOf(node, {}, { maxQueue: 3 });
    expect(await take(feed, 2)).toEqual(["hello@0 snapshot", "end@0"]);
    for (const name of ["a", "b", "c", "d", "e"]) {
      await node.registry.register(declaredService(name), call);
    }
    // Five changes behind, more than the three it may lag: cut at its place, before reading on.
    const error = await feed.next().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DomainError);
    expect(error).toMatchObject({ kind: "resource_exhausted" });
    expect((error as DomainError).message).toBe(
      "the peer fell behind by more than 3 changes: resume from revision 0",
    );
    expect((await feed.next()).done).toBe(true);
    expect(node.subscriptions()).toBe(0);

    // Resuming from that revision loses nothing.
    const resumed = feedOf(node, { historyId: node.store.historyId, revision: 0 });
    expect(await take(resumed.feed, 6)).toEqual([
      "hello@5",
      "put a@1",
      "put b@2",
      "put c@3",
      "put d@4",
      "put e@5",
    ]);
  });

  it("ends when its signal aborts, letting go of its subscription and its keepalive timer", async () => {
    const refedTimeouts = () =>
      process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const baseline = refedTimeouts();
    const node = createServingNode();
    const { feed, controller } = feedOf(node);
    await take(feed, 2);
    expect(node.subscriptions()).toBe(1);
    const pending = feed.next();
    await new Promise((resolve) => setImmediate(resolve));
    expect(refedTimeouts()).toBe(baseline + 1); // the keepalive wait
    controller.abort();
    expect((await pending).done).toBe(true);
    expect(node.subscriptions()).toBe(0);
    expect(refedTimeouts()).toBe(baseline);
  });

  it("lets go of its subscription when the consumer stops reading", async () => {
    const node = createServingNode();
    const { feed } = feedOf(node);
    await take(feed, 2);
    await feed.return(undefined);
    expect(node.subscriptions()).toBe(0);
  });
});

describe("replicationFeed to a peer that accepts batches", () => {
  const batched = (node: ServingNode, from: { historyId?: string; revision?: number } = {}) =>
    feedOf(node, { ...from, acceptsBatches: true }, { maxBatchChanges: 2 });

  it("sends a snapshot in batches of at most maxBatchChanges, in revision order", async () => {
    const node = createServingNode();
    for (const name of ["a", "b", "c", "d", "e"]) {
      await node.registry.register(declaredService(name), call);
    }
    const { feed } = batched(node);
    expect(await take(feed, 5)).toEqual([
      "hello@5 snapshot",
      "batch[put a@1, put b@2]",
      "batch[put c@3, put d@4]",
      "put e@5",
      "end@5",
    ]);
  });

  it("sends the same changes as to a peer that takes none, only fewer messages", async () => {
    const node = createServingNode();
    await fiveChanges(node);
    const single = feedOf(node, {}, { maxBatchChanges: 2 });
    const batches = batched(node);
    const changesIn = (messages: ReplicationMessage[]) =>
      messages.flatMap((m) =>
        m.kind === "batch" ? m.changes : m.kind === "change" ? [m.change] : [],
      );
    const singleMessages = await messagesUntilEnd(single.feed);
    const batchMessages = await messagesUntilEnd(batches.feed);
    expect(singleMessages.some((m) => m.kind === "batch")).toBe(false);
    expect(changesIn(batchMessages)).toEqual(changesIn(singleMessages));
    expect(batchMessages.length).toBeLessThan(singleMessages.length);
  });

  it("keeps the peer's own changes and those learned from it out of a resumed backlog's batches, and tells it how far it got", async () => {
    const node = createServingNode();
    await node.registry.register(declaredService("local-1"), call); // 1
    node.clock.advance(1_000);
    await node.merger.merge(await writtenOn("node-c", "from-c"), "node-c"); // 2
    await node.merger.merge(await writtenOn("node-a", "a-via-c"), "node-c"); // 3
    await node.merger.merge(await writtenOn("node-a", "a-direct"), "node-a"); // 4
    await node.registry.register(declaredService("local-2"), call); // 5
    await node.registry.register(declaredService("local-3"), call); // 6
    const { feed } = batched(node, { historyId: node.store.historyId, revision: 0 });
    expect(await take(feed, 3)).toEqual([
      "hello@6",
      "batch[put local-1@1, put a-direct@4]",
      "batch[put local-2@5, put local-3@6]",
    ]);

    // A burst of the peer's own changes and one of ours: ours alone goes, and then nothing.
    node.clock.advance(1_000);
    await node.merger.merge(await writtenOn("node-c", "from-c-2"), "node-c"); // 7
    await node.registry.register(declaredService("local-4"), call); // 8
    await node.merger.merge(await writtenOn("node-c", "from-c-3"), "node-c"); // 9
    expect(await take(feed, 1)).toEqual(["put local-4@8"]);
    // Nothing else to send: after the changes passed over, the peer is told how far it got.
    const next = take(feed, 1);
    node.clock.advance(1_000);
    await node.merger.merge(await writtenOn("node-c", "from-c-4"), "node-c"); // 10
    expect(await next).toEqual(["keepalive@10"]);
  });

  it("sends a lone live change as a change, and changes that piled up as a batch", async () => {
    const node = createServingNode();
    const { feed } = batched(node);
    expect(await take(feed, 2)).toEqual(["hello@0 snapshot", "end@0"]);
    const next = take(feed, 1);
    await node.registry.register(declaredService("a"), call);
    expect(await next).toEqual(["put a@1"]);
    await node.registry.register(declaredService("b"), call);
    await node.registry.register(declaredService("c"), call);
    await node.registry.deregister("a", call);
    expect(await take(feed, 2)).toEqual(["batch[put b@2, put c@3]", "delete a@4"]);
  });
});

/** The feed's messages up to and including the snapshot's end. */
async function messagesUntilEnd(
  feed: AsyncGenerator<ReplicationMessage>,
): Promise<ReplicationMessage[]> {
  const messages: ReplicationMessage[] = [];
  for await (const message of feed) {
    messages.push(message);
    if (message.kind === "snapshot_end") return messages;
  }
  throw new Error("the feed ended before the snapshot's end");
}

describe("batchesOf", () => {
  const put = changeOf;
  const runs = (changes: RegistryChange[], limits: { changes: number; bytes: number }) =>
    [...batchesOf(changes, { maxBatchChanges: limits.changes, maxBatchBytes: limits.bytes })].map(
      (batch) => batch.map((change) => change.revision),
    );

  it("cuts runs of at most maxBatchChanges, in order, the last one shorter", () => {
    const changes = [1, 2, 3, 4, 5, 6, 7].map((r) => put(`s${r}`, r));
    expect(runs(changes, { changes: 3, bytes: 1 << 30 })).toEqual([[1, 2, 3], [4, 5, 6], [7]]);
    expect(runs(changes, { changes: 7, bytes: 1 << 30 })).toEqual([[1, 2, 3, 4, 5, 6, 7]]);
    expect(runs([], { changes: 3, bytes: 1 << 30 })).toEqual([]);
  });

  it("cuts runs of at most maxBatchBytes as changeWeight counts them, a heavier change alone", () => {
    const small = [1, 2, 3, 4].map((r) => put(`s${r}`, r));
    const weight = changeWeight(small[0] as RegistryChange);
    // Room for two small changes, not three.
    expect(runs(small, { changes: 100, bytes: 3 * weight - 1 })).toEqual([
      [1, 2],
      [3, 4],
    ]);
    const heavy = put("heavy", 3, { blob: "x".repeat(500) });
    const mixed = [small[0], small[1], heavy, small[3]] as RegistryChange[];
    expect(runs(mixed, { changes: 100, bytes: 2 * weight })).toEqual([[1, 2], [3], [4]]);
  });

  it("keeps a snapshot of typical entries within both default bounds", () => {
    const changes = Array.from({ length: 2_000 }, (_, i) =>
      put(`service-${i}`, i + 1, { zone: "eu-west-1", team: "payments" }),
    );
    const batches = [...batchesOf(changes, { maxBatchChanges, maxBatchBytes })];
    expect(batches.flat()).toEqual(changes);
    for (const batch of batches) {
      expect(batch.length).toBeLessThanOrEqual(maxBatchChanges);
      expect(batch.reduce((sum, change) => sum + changeWeight(change), 0)).toBeLessThanOrEqual(
        maxBatchBytes,
      );
    }
  });
});

/** A put of `name` at `revision`, stamped by node-b. */
function changeOf(
  name: string,
  revision: number,
  metadata: Record<string, string> = {},
): RegistryChange {
  return {
    type: "put",
    revision,
    entry: {
      name,
      baseUrl: "",
      openapiUrl: "",
      healthUrl: "",
      endpoints: [],
      metadata,
      tags: [],
      version: "",
      ttlSeconds: 0,
      status: "UNKNOWN",
      registeredAt: 0,
      lastHeartbeat: 0,
      updatedAt: 0,
      leaseExpiresAt: 0,
      origin: "node-b",
      hlc: BigInt(revision),
      revision,
    },
  };
}

describe("coalesce", () => {
  const put = (name: string, revision: number) => changeOf(name, revision);
  const del = (name: string, revision: number): RegistryChange => ({
    type: "delete",
    revision,
    tombstone: { name, revision, deletedAt: 0, origin: "node-b", hlc: BigInt(revision) },
  });

  it("keeps each name's latest change, in revision order", () => {
    const changes = [put("a", 1), put("b", 2), del("a", 3), put("c", 4), put("b", 5)];
    expect(coalesce(changes).map((c) => c.revision)).toEqual([3, 4, 5]);
    expect(coalesce(changes)[0]).toBe(changes[2]);
  });

  it("always keeps the last change, and changes nothing without repeats", () => {
    const changes = [put("a", 1), put("b", 2), put("c", 3)];
    expect(coalesce(changes)).toEqual(changes);
    expect(coalesce([put("a", 1), put("a", 2)]).map((c) => c.revision)).toEqual([2]);
    expect(coalesce([])).toEqual([]);
  });
});
