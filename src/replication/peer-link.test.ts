import pino, { type Logger } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  createReplicaNode,
  declaredService,
  type ReplicaNode,
} from "../../tests/support/replica-node.js";
import { DomainError } from "../errors/domain-error.js";
import type { RegistryChange } from "../registry/model.js";
import { changesInBuckets, digestOf } from "./anti-entropy.js";
import { PeerCallError, PeerLink, type PeerLinkOptions, type PeerTransport } from "./peer-link.js";
import { type ReplicationMessage, replicationFeed } from "./replication-feed.js";

const logger = pino({ level: "silent" });
const call = { correlationId: "", traceId: "" };
const peerUrl = "http://node-b.peers.test:7000";

type ReplicateRequest = Parameters<PeerTransport["replicate"]>[0];
type Hello = Extract<ReplicationMessage, { kind: "hello" }>;

/**
 * The one stand-in of these tests: a PeerTransport that reaches the peer without a network. Its
 * replication stream is the peer node's real `replicationFeed` over the peer's real store, and its
 * anti-entropy calls go to the peer's real store and merger, as PeerService does over gRPC. It
 * records what the link asked for and the hellos it got, and can fail, end its streams (a peer
 * that drains) or hold a snapshot's end marker, as a network would. Like the gRPC transport, it
 * takes batches (of two changes at most here, so that a few changes make several).
 */
interface InProcessTransport extends PeerTransport {
  /** The node served; replace it to play a peer that restarted. */
  serving: ReplicaNode;
  /** When set, `replicate` fails with it. */
  failure: Error | undefined;
  /**
   * When set, the peer stops answering without closing anything, as a process under SIGSTOP: an
   * open stream sends nothing more, and a new one is accepted but never answered.
   */
  frozen: boolean;
  /** When set, awaited before a snapshot's end marker; resolving false cuts the stream there. */
  beforeSnapshotEnd: (() => Promise<boolean>) | undefined;
  readonly requests: ReplicateRequest[];
  readonly hellos: Hello[];
  /** The number of changes in each batch sent, in order. */
  readonly batches: number[];
  readonly closes: () => number;
  /** Ends every open stream cleanly. */
  endStreams(): void;
}

function inProcessTransport(
  peer: ReplicaNode,
  options: { keepaliveMs?: number } = {},
): InProcessTransport {
  const open = new Set<AbortController>();
  let closes = 0;
  const transport: InProcessTransport = {
    serving: peer,
    failure: undefined,
    frozen: false,
    beforeSnapshotEnd: undefined,
    requests: [],
    hellos: [],
    batches: [],
    closes: () => closes,
    async *replicate(request, signal) {
      transport.requests.push(request);
      if (transport.failure) throw transport.failure;
      if (transport.frozen) await hangUntilAborted(signal);
      const ended = new AbortController();
      open.add(ended);
      const node = transport.serving;
      try {
        const feed = replicationFeed(
          { store: node.store, clock: node.clock, nodeId: node.nodeId },
          {
            peerNodeId: request.nodeId,
            fromHistoryId: request.fromHistoryId,
            fromRevision: request.fromRevision,
            acceptsBatches: true,
            signal: AbortSignal.any([signal, ended.signal]),
          },
          { keepaliveMs: options.keepaliveMs ?? 1_000, maxBatchChanges: 2 },
        );
        for await (const message of feed) {
          if (message.kind === "hello") transport.hellos.push(message);
          if (message.kind === "batch") transport.batches.push(message.changes.length);
          if (transport.frozen) await hangUntilAborted(signal);
          const hold = transport.beforeSnapshotEnd;
          if (message.kind === "snapshot_end" && hold && !(await hold())) return;
          yield message;
        }
      } finally {
        open.delete(ended);
      }
    },
    async getDigest(bucketCount) {
      const node = transport.serving;
      return { nodeId: node.nodeId, bucketHashes: digestOf(node.store, bucketCount) };
    },
    async getEntries(buckets, bucketCount) {
      return changesInBuckets(transport.serving.store, buckets, bucketCount);
    },
    async pushEntries(_nodeId, changes) {
      let applied = 0;
      for (const change of changes) {
        if ((await transport.serving.merger.merge(change)) === "applied") applied++;
      }
      return applied;
    },
    endStreams() {
      for (const stream of open) stream.abort();
    },
    close() {
      closes++;
    },
  };
  return transport;
}

/** What a stream to a frozen peer does: nothing, until the caller gives up on it. */
function hangUntilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_resolve, reject) => {
    const fail = () => reject(new PeerCallError("unavailable", "the call was cancelled"));
    if (signal.aborted) fail();
    else signal.addEventListener("abort", fail, { once: true });
  });
}

const links: PeerLink[] = [];
afterEach(async () => {
  await Promise.all(links.splice(0).map((link) => link.stop()));
  vi.useRealTimers();
});

function linkFrom(
  node: ReplicaNode,
  transport: PeerTransport,
  options: Partial<PeerLinkOptions> = {},
  random?: () => number,
  linkLogger: Logger = logger,
): PeerLink {
  const link = new PeerLink(
    peerUrl,
    {
      transport,
      store: node.store,
      merger: node.merger,
      clock: node.clock,
      events: node.events,
      logger: linkLogger,
      nodeId: node.nodeId,
      incarnationId: `${node.nodeId}-incarnation`,
      ...(random ? { random } : {}),
    },
    { initialBackoffMs: 10, maxBackoffMs: 40, ...options },
  );
  links.push(link);
  return link;
}

const eventsOf = (node: ReplicaNode, type: string) =>
  node.events.recent().filter((e) => e.type === type);
const waitFor = <T>(check: () => T) => vi.waitFor(check, { timeout: 10_000, interval: 5 });

describe("PeerLink between two in-process nodes", () => {
  it("takes the peer's snapshot, then follows its changes live", async () => {
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    await b.registry.register(declaredService("early"), call);
    const transport = inProcessTransport(b);
    const link = linkFrom(a, transport);
    link.start();
    await waitFor(() => expect(link.status().state).toBe("LIVE"));
    expect(a.store.get("early")).toMatchObject({ origin: "node-b", status: "UNKNOWN" });
    expect(eventsOf(a, "replication.peer.connected")[0]?.payload).toEqual({
      url: peerUrl,
      node_id: "node-b",
      snapshot: true,
    });
    expect(eventsOf(a, "replication.snapshot_applied")).toHaveLength(1);
    expect(transport.requests[0]).toEqual({
      nodeId: "node-a",
      incarnationId: "node-a-incarnation",
      fromHistoryId: "",
      fromRevision: 0,
    });

    const { entry } = await b.registry.register(declaredService("late"), call);
    await waitFor(() => expect(a.store.get("late")).toBeDefined());
    expect(a.store.get("late")).toMatchObject({ origin: "node-b", hlc: entry.hlc });
    await b.registry.deregister("early", call);
    await waitFor(() => expect(a.store.get("early")).toBeUndefined());
    expect(a.store.tombstone("early")?.origin).toBe("node-b");

    expect(link.status()).toMatchObject({
      url: peerUrl,
      nodeId: "node-b",
      state: "LIVE",
      historyId: b.store.historyId,
      appliedRevision: b.store.revision,
      lagChanges: 0,
      lagMs: 0,
      lastError: "",
      reconnects: 0,
      appliedChanges: 3,
      lastContact: a.clock.now(),
    });
  });

  it("merges a batch change by change: counts changes, not messages, and moves to the last one", async () => {
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    for (const name of ["s1", "s2", "s3", "s4", "s5"]) {
      await b.registry.register(declaredService(name), call);
    }
    // One of them is a's already, as new as b's: received, not applied.
    await a.merger.merge(b.store.changesSince(2)?.[0] as RegistryChange);
    const transport = inProcessTransport(b);
    const link = linkFrom(a, transport);
    link.start();
    await waitFor(() => expect(link.status().state).toBe("LIVE"));
    expect(transport.batches).toEqual([2, 2]); // and s5 alone
    expect(link.status()).toMatchObject({ receivedChanges: 5, appliedChanges: 4 });
    expect([...a.store.entries()].map((e) => e.name).sort()).toEqual([
      "s1",
      "s2",
      "s3",
      "s4",
      "s5",
    ]);

    // Changes made while the link is away come back as a backlog of batches.
    await link.stop();
    for (const name of ["t1", "t2", "t3"]) await b.registry.register(declaredService(name), call);
    await b.registry.deregister("s1", call);
    const again = linkFrom(a, transport);
    again.start();
    await waitFor(() => expect(again.status().appliedRevision).toBe(9));
    expect(transport.batches).toEqual([2, 2, 2, 2]);
    expect(again.status()).toMatchObject({ state: "LIVE", receivedChanges: 4, appliedChanges: 4 });
    expect(a.store.get("s1")).toBeUndefined();
    expect(a.store.get("t3")).toBeDefined();
    expect(await a.store.getCursor(peerUrl)).toBeDefined();
    await again.stop();
    expect(await a.store.getCursor(peerUrl)).toEqual({ historyId: b.store.historyId, revision: 9 });
  });

  it("persists its cursor at most every cursorFlushMs while changes stream in, and on stop", async () => {
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    await b.registry.register(declaredService("one"), call);
    const link = linkFrom(a, inProcessTransport(b), { cursorFlushMs: 200 });
    link.start();
    await waitFor(() => expect(link.status().state).toBe("LIVE"));
    const cursor = { historyId: b.store.historyId, revision: 1 };
    expect(await a.store.getCursor(peerUrl)).toEqual(cursor);

    await b.registry.register(declaredService("two"), call);
    await waitFor(() => expect(link.status().appliedRevision).toBe(2));
    expect(await a.store.getCursor(peerUrl)).toEqual(cursor); // flushed less than 200 ms ago

    a.clock.advance(200);
    await b.registry.register(declaredService("three"), call);
    await waitFor(async () =>
      expect(await a.store.getCursor(peerUrl)).toEqual({ ...cursor, revision: 3 }),
    );

    await b.registry.register(declaredService("four"), call);
    await waitFor(() => expect(link.status().appliedRevision).toBe(4));
    await link.stop();
    expect(await a.store.getCursor(peerUrl)).toEqual({ ...cursor, revision: 4 });
  });

  it("resumes from the persisted cursor without a snapshot after the link is stopped and started anew", async () => {
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    const transport = inProcessTransport(b);
    await b.registry.register(declaredService("one"), call);
    const first = linkFrom(a, transport);
    first.start();
    await waitFor(() => expect(first.status().state).toBe("LIVE"));
    await b.registry.register(declaredService("two"), call);
    await waitFor(() => expect(a.store.get("two")).toBeDefined());
    await first.stop();
    expect(transport.closes()).toBe(1);

    await b.registry.register(declaredService("while-down"), call);
    const second = linkFrom(a, transport);
    second.start();
    await waitFor(() => expect(a.store.get("while-down")).toBeDefined());
    expect(second.status().state).toBe("LIVE");
    expect(transport.requests[1]).toMatchObject({
      fromHistoryId: b.store.historyId,
      fromRevision: 2,
    });
    expect(transport.hellos.map((h) => h.snapshot)).toEqual([true, false]);
    expect(eventsOf(a, "replication.snapshot_applied")).toHaveLength(1);
    expect(eventsOf(a, "replication.peer.connected").map((e) => e.payload.snapshot)).toEqual([
      true,
      false,
    ]);
  });

  it("reconnects when the peer ends the stream, and resumes from its cursor", async () => {
    const { a, link, transport } = await peerEndsTheStream();
    expect(a.store.get("two")).toBeDefined();
    expect(transport.requests[1]).toMatchObject({
      fromHistoryId: transport.serving.store.historyId,
      fromRevision: 1,
    });
    expect(transport.hellos.map((h) => h.snapshot)).toEqual([true, false]);
    expect(link.status()).toMatchObject({ state: "LIVE", reconnects: 1, lastError: "" });
    expect(eventsOf(a, "replication.peer.disconnected")).toHaveLength(1);
    expect(eventsOf(a, "replication.snapshot_applied")).toHaveLength(1);
  });

  // A stream the peer ends is reported as such, in last_error and in the disconnected event.
  it("says the peer closed the stream when it did", async () => {
    const { a } = await peerEndsTheStream();
    expect(eventsOf(a, "replication.peer.disconnected")[0]?.payload).toEqual({
      url: peerUrl,
      node_id: "node-b",
      error: "the peer closed the stream",
    });
  });

  it("asks for a snapshot when its cursor belongs to another history of the peer", async () => {
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    await b.registry.register(declaredService("one"), call);
    await a.store.putCursor(peerUrl, { historyId: "a-history-long-gone", revision: 7 });
    const transport = inProcessTransport(b);
    const link = linkFrom(a, transport);
    link.start();
    await waitFor(() => expect(link.status().state).toBe("LIVE"));
    expect(transport.requests[0]).toMatchObject({
      fromHistoryId: "a-history-long-gone",
      fromRevision: 7,
    });
    expect(transport.hellos[0]?.snapshot).toBe(true);
    expect(a.store.get("one")).toBeDefined();
    expect(link.status().appliedRevision).toBe(1);
    expect(await a.store.getCursor(peerUrl)).toEqual({ historyId: b.store.historyId, revision: 1 });
  });

  it("is SYNCING during a snapshot and moves its cursor only at the end: a snapshot cut short starts over", async () => {
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    await b.registry.register(declaredService("one"), call);
    await b.registry.register(declaredService("two"), call);
    const transport = inProcessTransport(b);
    let release: (deliver: boolean) => void = () => {};
    transport.beforeSnapshotEnd = () =>
      new Promise<boolean>((resolve) => {
        release = resolve;
      });
    const link = linkFrom(a, transport);
    link.start();
    await waitFor(() => expect(a.store.get("two")).toBeDefined());
    expect(link.status()).toMatchObject({
      state: "SYNCING",
      nodeId: "node-b",
      appliedRevision: 0,
      lagChanges: 2,
    });
    expect(await a.store.getCursor(peerUrl)).toBeUndefined();

    release(false); // the stream breaks before the end marker
    await waitFor(() => expect(transport.requests).toHaveLength(2));
    expect(transport.requests[1]).toMatchObject({ fromHistoryId: "", fromRevision: 0 });
    // The second snapshot may already be held at its end marker (then `release` is its own), or
    // not yet (then it is no longer held at all): either way it now ends.
    transport.beforeSnapshotEnd = undefined;
    release(true);
    await waitFor(() => expect(link.status().state).toBe("LIVE"));
    expect(link.status()).toMatchObject({ appliedRevision: 2, lagChanges: 0 });
    expect(await a.store.getCursor(peerUrl)).toEqual({ historyId: b.store.historyId, revision: 2 });
  });

  it("follows a peer that restarted with a new history through a new snapshot", async () => {
    const { a, b2, link, transport } = await peerRestartedWithNewHistory();
    expect(transport.hellos.map((h) => h.snapshot)).toEqual([true, true]);
    expect(transport.requests[1]).toMatchObject({ fromRevision: 5 });
    expect(a.store.get("after-restart")).toBeDefined();
    expect(link.status()).toMatchObject({
      state: "LIVE",
      historyId: b2.store.historyId,
      appliedRevision: 1,
    });
    await link.stop();
    expect(await a.store.getCursor(peerUrl)).toEqual({
      historyId: b2.store.historyId,
      revision: 1,
    });
  });

  // After a peer restarts with a new history, lag is measured against the new history only.
  it("reports no lag once caught up with a peer that restarted with a new history", async () => {
    const { a, link } = await peerRestartedWithNewHistory();
    a.clock.advance(5_000);
    expect(link.status()).toMatchObject({ lagChanges: 0, lagMs: 0 });
  });

  it("follows the peer after it went silent for silenceTimeoutMs, resuming from its cursor", async () => {
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    await b.registry.register(declaredService("one"), call);
    // The peer's keepalives are far apart: the link hears nothing for longer than it tolerates.
    const transport = inProcessTransport(b, { keepaliveMs: 60_000 });
    const link = linkFrom(a, transport, { silenceTimeoutMs: 50 });
    link.start();
    await waitFor(() => expect(transport.requests.length).toBeGreaterThanOrEqual(2));
    expect(transport.requests[1]).toMatchObject({
      fromHistoryId: b.store.historyId,
      fromRevision: 1,
    });
    expect(transport.hellos[1]?.snapshot).toBe(false);
  });
});

/** A is LIVE with B; B ends the stream (it drains), writes "two"; A reconnects and gets it. */
async function peerEndsTheStream() {
  const a = createReplicaNode("node-a");
  const b = createReplicaNode("node-b");
  await b.registry.register(declaredService("one"), call);
  const transport = inProcessTransport(b);
  const link = linkFrom(a, transport);
  link.start();
  await waitFor(() => expect(link.status().state).toBe("LIVE"));
  transport.endStreams();
  await b.registry.register(declaredService("two"), call);
  await waitFor(() => expect(a.store.get("two")).toBeDefined());
  await waitFor(() => expect(link.status().state).toBe("LIVE"));
  return { a, link, transport };
}

/** A is LIVE at revision 5 of B; B restarts empty (a new history), writes one entry, A follows. */
async function peerRestartedWithNewHistory() {
  const a = createReplicaNode("node-a");
  const b = createReplicaNode("node-b");
  for (const name of ["s1", "s2", "s3", "s4", "s5"]) {
    await b.registry.register(declaredService(name), call);
  }
  const transport = inProcessTransport(b);
  const link = linkFrom(a, transport);
  link.start();
  await waitFor(() => expect(link.status()).toMatchObject({ state: "LIVE", appliedRevision: 5 }));
  expect(link.status().lagChanges).toBe(0);

  const b2 = createReplicaNode("node-b");
  await b2.registry.register(declaredService("after-restart"), call);
  transport.serving = b2;
  transport.endStreams();
  await waitFor(() => expect(transport.hellos).toHaveLength(2));
  await waitFor(() => expect(link.status().state).toBe("LIVE"));
  return { a, b2, link, transport };
}

describe("PeerLink failures", () => {
  it("shows UNAUTHENTICATED when the peer refuses our credentials, and stops from its backoff", async () => {
    const a = createReplicaNode("node-a");
    const transport = inProcessTransport(createReplicaNode("node-b"));
    transport.failure = new PeerCallError("unauthenticated", "UNAUTHENTICATED: bad peer token");
    // A long backoff: the state is observed during it, and stop() must cut it short.
    const link = linkFrom(a, transport, { initialBackoffMs: 60_000, maxBackoffMs: 60_000 });
    link.start();
    await waitFor(() => expect(link.status().state).toBe("UNAUTHENTICATED"));
    expect(link.status()).toMatchObject({
      lastError: "UNAUTHENTICATED: bad peer token",
      reconnects: 1,
      nodeId: "",
    });
    expect(transport.requests).toHaveLength(1);
    expect(eventsOf(a, "replication.peer.disconnected")).toEqual([]);
    await link.stop();
    expect(transport.closes()).toBe(1);
  });

  it("backs off with the transport's error while the peer is unreachable, then goes LIVE", async () => {
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    await b.registry.register(declaredService("one"), call);
    const transport = inProcessTransport(b);
    transport.failure = new PeerCallError("unavailable", "the peer is unreachable");
    const link = linkFrom(a, transport);
    link.start();
    await waitFor(() =>
      expect(link.status()).toMatchObject({
        state: "BACKOFF",
        lastError: "the peer is unreachable",
      }),
    );
    await waitFor(() => expect(link.status().reconnects).toBeGreaterThanOrEqual(3));

    transport.failure = undefined;
    await waitFor(() => expect(link.status().state).toBe("LIVE"));
    expect(link.status().lastError).toBe("");
    expect(a.store.get("one")).toBeDefined();
  });

  it("never shows a raw error: one that is not the transport's nor the domain's is 'replication failed'", async () => {
    const a = createReplicaNode("node-a");
    const transport = inProcessTransport(createReplicaNode("node-b"));
    transport.failure = new Error("connect ECONNREFUSED 10.0.3.7:7000");
    const link = linkFrom(a, transport);
    link.start();
    await waitFor(() => expect(link.status().lastError).toBe("replication failed"));

    transport.failure = new DomainError("unavailable", "the registry store is unavailable");
    await waitFor(() => expect(link.status().lastError).toBe("the registry store is unavailable"));
  });

  it("refuses to replicate with itself: never LIVE, with last_error 'the peer is this node'", async () => {
    const a = createReplicaNode("node-a");
    await a.registry.register(declaredService("mine"), call);
    const revision = a.store.revision;
    // The configured peer URL reaches this very node: its stream is A's own feed.
    const transport = inProcessTransport(a);
    const link = linkFrom(a, transport);
    link.start();
    await waitFor(() => expect(link.status().lastError).toBe("the peer is this node"));
    await waitFor(() => expect(transport.hellos.length).toBeGreaterThanOrEqual(2));
    expect(transport.hellos.every((h) => h.nodeId === "node-a")).toBe(true);
    expect(link.status().state).not.toBe("LIVE");
    expect(link.status()).toMatchObject({ nodeId: "", appliedChanges: 0, appliedRevision: 0 });
    expect(eventsOf(a, "replication.peer.connected")).toEqual([]);
    expect(a.store.revision).toBe(revision);
    expect(await a.store.getCursor(peerUrl)).toBeUndefined();
  });
});

describe("PeerLink timers (fake timers: every setTimeout of the link and the feed is counted)", () => {
  const useFakeTimers = () =>
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });

  /** How many streams a link opens in `ms` while every attempt fails the way `failure` makes it. */
  async function attemptsWithin(
    ms: number,
    transport: InProcessTransport,
    random: () => number,
  ): Promise<number> {
    const link = linkFrom(
      createReplicaNode("node-a"),
      transport,
      { initialBackoffMs: 100, maxBackoffMs: 100_000 },
      random,
    );
    link.start();
    await vi.advanceTimersByTimeAsync(ms);
    const attempts = transport.requests.length;
    await link.stop();
    return attempts;
  }

  it("doubles its backoff per failure, with the injected random choosing within [base/2, base]", async () => {
    useFakeTimers();
    const failing = () => {
      const transport = inProcessTransport(createReplicaNode("node-b"));
      transport.failure = new PeerCallError("unavailable", "the peer is unreachable");
      return transport;
    };
    // random 1: waits of 100, 200, 400, 800: attempts at 0, 100, 300, 700, 1500.
    expect(await attemptsWithin(1_000, failing(), () => 1)).toBe(4);
    expect(await attemptsWithin(1_500, failing(), () => 1)).toBe(5);
    // random 0: half of those: attempts at 0, 50, 150, 350, 750, 1550.
    expect(await attemptsWithin(1_000, failing(), () => 0)).toBe(5);
  });

  it("caps its backoff at maxBackoffMs", async () => {
    useFakeTimers();
    const transport = inProcessTransport(createReplicaNode("node-b"));
    transport.failure = new PeerCallError("unavailable", "the peer is unreachable");
    const link = linkFrom(
      createReplicaNode("node-a"),
      transport,
      { initialBackoffMs: 100, maxBackoffMs: 250 },
      () => 1,
    );
    link.start();
    // Attempts at 0, 100, 300, 550, 800, 1050.
    await vi.advanceTimersByTimeAsync(1_100);
    expect(transport.requests).toHaveLength(6);
    expect(link.status().state).toBe("BACKOFF");
  });

  // A peer URL that reaches this node backs off like any failing peer (no connected/disconnected churn).
  it("backs off from a peer that is this node as from any failing peer", async () => {
    useFakeTimers();
    const a = createReplicaNode("node-a");
    const self = inProcessTransport(a);
    expect(await attemptsWithin(1_000, self, () => 1)).toBe(4);
  });

  it("keeps a peer that sends keepalives, and drops one silent for silenceTimeoutMs", async () => {
    useFakeTimers();
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    const chatty = inProcessTransport(b, { keepaliveMs: 1_000 });
    const kept = linkFrom(a, chatty, { silenceTimeoutMs: 3_000 });
    kept.start();
    await vi.advanceTimersByTimeAsync(20_000);
    expect(chatty.requests).toHaveLength(1);
    expect(kept.status().state).toBe("LIVE");
    await kept.stop();

    const silent = inProcessTransport(b, { keepaliveMs: 60_000 });
    const dropped = linkFrom(createReplicaNode("node-a"), silent, { silenceTimeoutMs: 3_000 });
    dropped.start();
    await vi.advanceTimersByTimeAsync(2_999);
    expect(silent.requests).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1 + 40);
    expect(silent.requests).toHaveLength(2);
  });

  /** Moves the fake timers and the node's manual clock together, `step` ms at a time. */
  async function elapse(node: ReplicaNode, ms: number, step = 100): Promise<void> {
    for (let passed = 0; passed < ms; passed += step) {
      node.clock.advance(step);
      await vi.advanceTimersByTimeAsync(step);
    }
  }

  // Contact means a message received: an attempt that fails, or hangs, is no contact.
  it("shows no last contact for a peer it never heard from, however many attempts it made", async () => {
    useFakeTimers();
    const a = createReplicaNode("node-a");
    const transport = inProcessTransport(createReplicaNode("node-b"));
    transport.failure = new PeerCallError("unavailable", "the peer is unreachable");
    const link = linkFrom(a, transport);
    link.start();
    await elapse(a, 1_000);
    expect(transport.requests.length).toBeGreaterThanOrEqual(5);
    expect(link.status()).toMatchObject({ lastContact: 0, nodeId: "", state: "BACKOFF" });
  });

  it("keeps the time of a frozen peer's last message while it tries again and again, then moves on once the peer answers", async () => {
    useFakeTimers();
    const a = createReplicaNode("node-a");
    const transport = inProcessTransport(createReplicaNode("node-b"), { keepaliveMs: 1_000 });
    const link = linkFrom(a, transport, { silenceTimeoutMs: 3_000 });
    link.start();
    await elapse(a, 100);
    expect(link.status().state).toBe("LIVE");
    const hello = link.status().lastContact;
    expect(hello).toBeGreaterThan(0);
    await elapse(a, 2_500);
    // Keepalives move it while the peer talks.
    const last = link.status().lastContact;
    expect(last).toBeGreaterThan(hello);

    // SIGSTOP: the open stream goes quiet, and every new one is accepted and never answered.
    transport.frozen = true;
    await elapse(a, 20_000);
    expect(transport.requests.length).toBeGreaterThanOrEqual(4);
    expect(link.status().state).not.toBe("LIVE");
    expect(link.status().lastError).toBe("the peer went silent");
    expect(link.status().lastContact).toBe(last);

    transport.frozen = false;
    await elapse(a, 10_000);
    expect(link.status().state).toBe("LIVE");
    expect(link.status().lastContact).toBeGreaterThan(last);
  });

  it("logs losing a peer once at warn and regaining it once at info, not once per attempt", async () => {
    useFakeTimers();
    const lines: string[] = [];
    const captured = pino({ level: "debug" }, { write: (line: string) => lines.push(line) });
    /** Every record at info or above: what an operator sees at the default level. */
    const seen = () =>
      lines
        .map(
          (line) => JSON.parse(line) as { level: number; msg: string; peer?: string; err?: string },
        )
        .filter((record) => record.level >= 30)
        .map(({ level, msg, peer, err }) => ({ level, msg, peer, err }));
    const lost = (err: string) => ({
      level: 40,
      msg: "replication peer unreachable",
      peer: peerUrl,
      err,
    });
    const regained = {
      level: 30,
      msg: "replication peer reachable",
      peer: peerUrl,
      err: undefined,
    };

    const a = createReplicaNode("node-a");
    const transport = inProcessTransport(createReplicaNode("node-b"), { keepaliveMs: 1_000 });
    transport.failure = new PeerCallError("unavailable", "the peer is unreachable");
    const link = linkFrom(a, transport, { silenceTimeoutMs: 3_000 }, undefined, captured);
    link.start();
    await elapse(a, 2_000);
    expect(transport.requests.length).toBeGreaterThanOrEqual(5);
    expect(seen()).toEqual([lost("the peer is unreachable")]);

    transport.failure = undefined;
    await elapse(a, 1_000);
    expect(link.status().state).toBe("LIVE");
    expect(seen()).toEqual([lost("the peer is unreachable"), regained]);

    transport.frozen = true;
    await elapse(a, 20_000);
    expect(transport.requests.length).toBeGreaterThanOrEqual(6);
    transport.frozen = false;
    await elapse(a, 10_000);
    expect(link.status().state).toBe("LIVE");
    expect(seen()).toEqual([
      lost("the peer is unreachable"),
      regained,
      lost("the peer went silent"),
      regained,
    ]);
    // Every attempt is still there for whoever turns on debug.
    expect(lines.length).toBeGreaterThan(seen().length + 5);
  });

  it("leaves no timer behind once stopped, whether LIVE or in backoff", async () => {
    useFakeTimers();
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    await b.registry.register(declaredService("one"), call);
    const live = linkFrom(a, inProcessTransport(b));
    live.start();
    await vi.advanceTimersByTimeAsync(10);
    expect(live.status().state).toBe("LIVE");
    expect(vi.getTimerCount()).toBeGreaterThan(0); // the silence timer and the feed's keepalive
    await live.stop();
    expect(vi.getTimerCount()).toBe(0);

    const failing = inProcessTransport(b);
    failing.failure = new PeerCallError("unavailable", "the peer is unreachable");
    const backingOff = linkFrom(createReplicaNode("node-a"), failing);
    backingOff.start();
    await vi.advanceTimersByTimeAsync(1);
    expect(backingOff.status().state).toBe("BACKOFF");
    expect(vi.getTimerCount()).toBe(1);
    await backingOff.stop();
    expect(vi.getTimerCount()).toBe(0);
  });
});
