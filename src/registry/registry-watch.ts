import { queueChanges } from "../changes/change-queue.js";
import { nameOf, type RegistryChange, type RegistryEntry, type Tombstone } from "./model.js";
import { changeSourceOf, type RegistryStore } from "./registry-store.js";

/** One event of a registry watch. */
export type WatchEvent =
  | {
      readonly type: "put";
      readonly revision: number;
      readonly entry: RegistryEntry;
      /** Part of the initial snapshot. */
      readonly snapshot: boolean;
      /** The snapshot replaces a resume the change log could no longer serve. */
      readonly compacted: boolean;
    }
  | {
      readonly type: "delete";
      readonly revision: number;
      readonly tombstone: Tombstone;
      readonly snapshot: false;
      readonly compacted: false;
    }
  | {
      readonly type: "snapshot_end";
      readonly revision: number;
      readonly snapshot: true;
      readonly compacted: boolean;
    };

export interface WatchRequest {
  /** Resume after this revision; 0 starts with a snapshot. */
  readonly startRevision: number;
  /** Only entries whose name starts with this. */
  readonly namePrefix: string;
  /** Changes the watcher may fall behind by before it is cut off. */
  readonly maxQueue: number;
  readonly signal: AbortSignal;
}

/**
 * Watches the registry: the current entries (then a snapshot-end marker) and every change after,
 * or, from a revision the change log still covers, only the changes after it. Subscribing and
 * reading the snapshot happen in the same synchronous step, so no change falls between them.
 * The watcher reads the store's bounded change log at its own pace and keeps nothing but its
 * place: one that falls `maxQueue` changes behind, or behind what the log still holds, is cut off
 * with RESOURCE_EXHAUSTED naming the revision to resume from. Ends when `signal` aborts.
 */
export async function* watchRegistry(
  store: RegistryStore,
  request: WatchRequest,
): AsyncGenerator<WatchEvent> {
  const matches = (name: string) => name.startsWith(request.namePrefix);
  const changes = queueChanges(changeSourceOf(store), {
    maxLag: request.maxQueue,
    reader: "the watcher",
    resume: "watch again from revision",
    signal: request.signal,
  });
  try {
    let delivered: number;
    const resumed =
      request.startRevision > 0 ? store.changesSince(request.startRevision) : undefined;
    if (resumed !== undefined) {
      delivered = request.startRevision;
      for (const change of resumed) {
        delivered = change.revision;
        if (matches(nameOf(change))) yield fromChange(change);
      }
    } else {
      const compacted = request.startRevision > 0;
      delivered = store.revision;
      const snapshot = [...store.entries()].filter((e) => matches(e.name));
      snapshot.sort((a, b) => (a.name < b.name ? -1 : 1));
      for (const entry of snapshot) {
        yield { type: "put", revision: entry.revision, entry, snapshot: true, compacted };
      }
      yield { type: "snapshot_end", revision: delivered, snapshot: true, compacted };
    }
    while (!request.signal.aborted) {
      const batch = changes.after(delivered, watchBatch);
      if (batch.length === 0) {
        await changes.changed(delivered);
        continue;
      }
      for (const change of batch) {
        delivered = change.revision;
        if (matches(nameOf(change))) yield fromChange(change);
        if (request.signal.aborted) return;
      }
    }
  } finally {
    changes.close();
  }
}

/** Changes taken from the log at once; the lag check runs again before the next batch. */
const watchBatch = 256;

function fromChange(change: RegistryChange): WatchEvent {
  return change.type === "put"
    ? {
        type: "put",
        revision: change.revision,
        entry: change.entry,
        snapshot: false,
        compacted: false,
      }
    : {
        type: "delete",
        revision: change.revision,
        tombstone: change.tombstone,
        snapshot: false,
        compacted: false,
      };
}
