import { queueChanges } from "../changes/change-queue.js";
import type { Clock } from "../clock.js";
import { nameOf, type RegistryChange } from "../registry/model.js";
import { changeSourceOf, type RegistryStore } from "../registry/registry-store.js";

/** What a replication stream carries, in order: a hello, then changes (snapshot or log), live. */
export type ReplicationMessage =
  | {
      readonly kind: "hello";
      readonly nodeId: string;
      readonly historyId: string;
      /** The serving node's revision when the stream started. */
      readonly revision: number;
      /** A snapshot follows (the cursor could not be served from the change log). */
      readonly snapshot: boolean;
    }
  /** One change; its revision is the serving node's. */
  | { readonly kind: "change"; readonly change: RegistryChange }
  | { readonly kind: "snapshot_end"; readonly revision: number }
  /**
   * Sent when the stream is idle (a dead link then shows), and when changes were passed over as
   * the peer's own: every change up to `revision` the peer needs has been sent, so it may move
   * its cursor there.
   */
  | { readonly kind: "keepalive"; readonly revision: number; readonly timestamp: number };

export interface ReplicationFeedRequest {
  /** The peer's node id: changes it originated, or that this node learned from it, are not sent. */
  readonly peerNodeId: string;
  /** The serving node's history the caller's cursor belongs to; "" asks for a snapshot. */
  readonly fromHistoryId: string;
  /** The last revision of that history the caller applied. */
  readonly fromRevision: number;
  readonly signal: AbortSignal;
}

export interface ReplicationFeedOptions {
  /** Changes a slow peer may fall behind by before its stream is cut (it then resumes). */
  maxQueue: number;
  /** A keepalive goes out after this long without a message, so that a dead link shows. */
  keepaliveMs: number;
  /** Changes sent in one go at most; within one, only a name's latest change is sent. */
  batchSize: number;
  /**
   * After changes passed over as the peer's own, a keepalive tells the peer how far the stream
   * got, at most this often (it moves the peer's cursor and lag). Default: 200 ms.
   */
  progressMs: number;
}

const defaults: ReplicationFeedOptions = Object.freeze({
  maxQueue: 10_000,
  keepaliveMs: 2_000,
  batchSize: 1_000,
  progressMs: 200,
});

/** What the feed reads: the store, and who each merged change was learned from. */
export interface ReplicationFeedDeps {
  readonly store: RegistryStore;
  readonly clock: Clock;
  readonly nodeId: string;
  /** The peer a change was merged from, when this node learned it from a peer (the merger knows). */
  readonly learnedFrom?: (change: RegistryChange) => string | undefined;
}

/**
 * The replication stream a peer pulls from this node: a hello saying whether a snapshot follows,
 * then either every live entry and tombstone (a snapshot, ended by `snapshot_end`) or the changes
 * after the caller's cursor, and then every change as it happens, in revision order. The feed reads
 * the store's bounded change log at the peer's pace and keeps only its place in it. Changes that
 * pile up while the peer is slow are coalesced (a name's latest change stands for the ones before
 * it: heartbeats of a busy fleet do not flood the stream); a peer that falls `maxQueue` changes
 * behind, or behind what the log holds, is cut off with RESOURCE_EXHAUSTED and resumes from its
 * cursor (with a snapshot when the log cannot serve it). Subscribing and reading the
 * snapshot or log happen in one synchronous step, so no change falls between them.
 *
 * No echoes: a change the peer originated, or one this node merged from that peer, is not sent
 * back (the peer holds it, or something newer); a keepalive then carries the stream's progress.
 * So in a full mesh a write crosses each directed link at most once, and a chain still relays it
 * (B sends A's writes on to C). A snapshot is sent whole: a peer that lost its state (a restart
 * on the memory store) gets its own entries back from it.
 */
export async function* replicationFeed(
  deps: ReplicationFeedDeps,
  request: ReplicationFeedRequest,
  options: Partial<ReplicationFeedOptions> = {},
): AsyncGenerator<ReplicationMessage> {
  const { store, clock } = deps;
  const settings = { ...defaults, ...options };
  const changes = queueChanges(changeSourceOf(store), {
    maxLag: settings.maxQueue,
    reader: "the peer",
    resume: "resume from revision",
    signal: request.signal,
  });
  try {
    const resumable =
      request.fromHistoryId === store.historyId && request.fromHistoryId !== ""
        ? store.changesSince(request.fromRevision)
        : undefined;
    let sent = resumable ? request.fromRevision : store.revision;
    // The revision the peer last heard of (a change or a keepalive), and when.
    let told = sent;
    let toldAt = clock.now();
    const theirs = (change: RegistryChange): boolean => {
      const origin = change.type === "put" ? change.entry.origin : change.tombstone.origin;
      return origin === request.peerNodeId || deps.learnedFrom?.(change) === request.peerNodeId;
    };
    // Read now, in the same synchronous step as the subscription: nothing falls between them.
    const snapshot = resumable ? [] : snapshotOf(store);
    yield {
      kind: "hello",
      nodeId: deps.nodeId,
      historyId: store.historyId,
      revision: store.revision,
      snapshot: resumable === undefined,
    };
    if (resumable) {
      for (const change of coalesce(resumable)) {
        if (theirs(change)) continue;
        yield { kind: "change", change };
        told = change.revision;
      }
      sent = resumable.at(-1)?.revision ?? sent;
    } else {
      for (const change of snapshot) yield { kind: "change", change };
      yield { kind: "snapshot_end", revision: sent };
      told = sent;
    }
    while (!request.signal.aborted) {
      const pending = changes.after(sent, settings.batchSize);
      if (pending.length > 0) {
        for (const change of coalesce(pending)) {
          if (theirs(change)) continue;
          yield { kind: "change", change };
          told = change.revision;
          toldAt = clock.now();
        }
        sent = pending.at(-1)?.revision ?? sent;
        if (told < sent && clock.now() - toldAt >= settings.progressMs) {
          yield { kind: "keepalive", revision: sent, timestamp: clock.now() };
          told = sent;
          toldAt = clock.now();
        }
        continue;
      }
      const woken = await changes.changed(sent, settings.keepaliveMs);
      if (!woken && !request.signal.aborted) {
        // `sent`, not the store's revision: changes after it may not have been read yet.
        yield { kind: "keepalive", revision: sent, timestamp: clock.now() };
        told = sent;
        toldAt = clock.now();
      }
    }
  } finally {
    changes.close();
  }
}

/** Every live entry and tombstone, as changes at their own revisions, oldest first. */
function snapshotOf(store: RegistryStore): RegistryChange[] {
  const changes: RegistryChange[] = [];
  for (const entry of store.entries())
    changes.push({ type: "put", revision: entry.revision, entry });
  for (const tombstone of store.tombstones()) {
    changes.push({ type: "delete", revision: tombstone.revision, tombstone });
  }
  return changes.sort((a, b) => a.revision - b.revision);
}

/** Each name's latest change only, in revision order (the last change always survives). */
export function coalesce(changes: readonly RegistryChange[]): RegistryChange[] {
  const latest = new Map<string, RegistryChange>();
  for (const change of changes) {
    const name = nameOf(change);
    latest.delete(name); // re-inserted at the end: the map's order is revision order
    latest.set(name, change);
  }
  return [...latest.values()];
}
