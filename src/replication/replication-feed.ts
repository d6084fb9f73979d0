import { queueChanges } from "../changes/change-queue.js";
import type { Clock } from "../clock.js";
import { changeWeight } from "../registry/entry-limits.js";
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
  /**
   * Several changes in revision order, each as it would go alone (only to a peer that accepts
   * batches); as this node sends them, never empty and within `maxBatchChanges` and
   * `maxBatchBytes`.
   */
  | { readonly kind: "batch"; readonly changes: readonly RegistryChange[] }
  | { readonly kind: "snapshot_end"; readonly revision: number }
  /**
   * Sent when the stream is idle (a dead link then shows), and when changes were passed over as
   * the peer's own: every change up to `revision` the peer needs has been sent, so it may move
   * its cursor there.
   */
  | { readonly kind: "keepalive"; readonly revision: number; readonly timestamp: number };

/** The messages that carry changes. */
type ChangesMessage = Extract<ReplicationMessage, { readonly kind: "change" | "batch" }>;

export interface ReplicationFeedRequest {
  /** The peer's node id: changes it originated, or that this node learned from it, are not sent. */
  readonly peerNodeId: string;
  /** The serving node's history the caller's cursor belongs to; "" asks for a snapshot. */
  readonly fromHistoryId: string;
  /** The last revision of that history the caller applied. */
  readonly fromRevision: number;
  /**
   * The peer merges `batch` messages; without it (a node of an earlier version) every change goes
   * as its own `change`. Default false.
   */
  readonly acceptsBatches?: boolean;
  readonly signal: AbortSignal;
}

export interface ReplicationFeedOptions {
  /** Changes a slow peer may fall behind by before its stream is cut (it then resumes). */
  maxQueue: number;
  /** A keepalive goes out after this long without a message, so that a dead link shows. */
  keepaliveMs: number;
  /** Changes read from the log in one go at most; within one, only a name's latest is sent. */
  batchSize: number;
  /** Changes in one `batch` message at most. Default {@link maxBatchChanges}. */
  maxBatchChanges: number;
  /**
   * Bytes of changes in one `batch` message at most, as the change log weighs them
   * (`changeWeight`); a single change heavier than this still goes, alone. Default
   * {@link maxBatchBytes}.
   */
  maxBatchBytes: number;
  /**
   * After changes passed over as the peer's own, a keepalive tells the peer how far the stream
   * got, at most this often (it moves the peer's cursor and lag). Default: 200 ms.
   */
  progressMs: number;
}

/**
 * Changes per batch message. Measured on a 10,000-entry catch-up (bench:replication, see the
 * README's figures): from one change per frame to batches of 64, the new node's time from
 * listening to caught up fell from a median of 644 to 476 ms; batches of 512 (463 ms) and 2,048
 * (499 ms) did no better, and a larger batch makes the receiver hold more decoded at once. 512 is
 * also an eighth of what a receiver accepts
 * (`maxReceivedBatchChanges`), which leaves later versions room.
 */
export const maxBatchChanges = 512;

/**
 * Bytes per batch message, as `changeWeight` counts them: declared strings plus 512 per entry,
 * about twice the encoding of a typical entry (a fleet-like entry of the bench weighs 771 and
 * encodes in 382 bytes), and little more than it for a large one. So 512 typical entries fit
 * (about 395 KiB of weight, 200 KiB encoded), and a batch of large entries (kilobytes of metadata)
 * is cut at about 512 KiB: half the peer's 1 MiB HTTP/2 window, and an eighth of the 4 MiB a grpc-js
 * receiver takes by default.
 */
export const maxBatchBytes = 512 * 1024;

const defaults: ReplicationFeedOptions = Object.freeze({
  maxQueue: 10_000,
  keepaliveMs: 2_000,
  batchSize: 1_000,
  maxBatchChanges,
  maxBatchBytes,
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
 * Batches: to a peer that accepts them, changes ready at once (the snapshot, a resumed backlog,
 * what piled up while the peer was slow) go in `batch` messages of at most `maxBatchChanges` and
 * `maxBatchBytes`, in revision order; a lone change goes as `change`. Batches are yielded one at
 * a time, at the consumer's pace, as single changes are.
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
    const batching = request.acceptsBatches === true ? settings : undefined;
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
      for (const message of messagesOf(except(coalesce(resumable), theirs), batching)) {
        yield message;
        told = lastRevisionOf(message);
      }
      sent = resumable.at(-1)?.revision ?? sent;
    } else {
      yield* messagesOf(snapshot, batching);
      yield { kind: "snapshot_end", revision: sent };
      told = sent;
    }
    while (!request.signal.aborted) {
      const pending = changes.after(sent, settings.batchSize);
      if (pending.length > 0) {
        for (const message of messagesOf(except(coalesce(pending), theirs), batching)) {
          yield message;
          told = lastRevisionOf(message);
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

/** How many changes, and how many bytes of them (`changeWeight`), one batch holds at most. */
export type BatchLimits = Pick<ReplicationFeedOptions, "maxBatchChanges" | "maxBatchBytes">;

/**
 * `changes` as the messages that carry them, in order: each alone when `batching` is undefined
 * (the peer takes no batches), else in batches within its limits. A batch of one goes as a lone
 * `change`: that message is built and encoded once for every peer's stream, where a batch is
 * built for one stream.
 */
function* messagesOf(
  changes: Iterable<RegistryChange>,
  batching: BatchLimits | undefined,
): Generator<ChangesMessage> {
  if (batching === undefined) {
    for (const change of changes) yield { kind: "change", change };
    return;
  }
  for (const batch of batchesOf(changes, batching)) {
    const [only] = batch;
    yield batch.length === 1 && only !== undefined
      ? { kind: "change", change: only }
      : { kind: "batch", changes: batch };
  }
}

/**
 * `changes` cut, in order, into runs of at most `maxBatchChanges` changes and `maxBatchBytes`
 * bytes; a change heavier than `maxBatchBytes` forms a run of its own. Lazy: a run is cut only
 * once the next change is read (the caller's filter then runs as late as it did for single
 * changes), and never empty.
 */
export function* batchesOf(
  changes: Iterable<RegistryChange>,
  limits: BatchLimits,
): Generator<RegistryChange[]> {
  let batch: RegistryChange[] = [];
  let bytes = 0;
  for (const change of changes) {
    const weight = changeWeight(change);
    const full = batch.length >= limits.maxBatchChanges || bytes + weight > limits.maxBatchBytes;
    if (batch.length > 0 && full) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(change);
    bytes += weight;
  }
  if (batch.length > 0) yield batch;
}

/** `changes` without those `skipped` says to pass over, read as they are asked for. */
function* except(
  changes: Iterable<RegistryChange>,
  skipped: (change: RegistryChange) => boolean,
): Generator<RegistryChange> {
  for (const change of changes) if (!skipped(change)) yield change;
}

/** The revision of the last change a `change` or `batch` message carries. */
function lastRevisionOf(message: ChangesMessage): number {
  return message.kind === "change"
    ? message.change.revision
    : (message.changes.at(-1)?.revision ?? 0);
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
