import type { ChangeSource } from "../changes/change-queue.js";
import type { EventDraft } from "../events/model.js";
import type {
  EntryWrite,
  OpenApiBaseline,
  RegistryChange,
  RegistryEntry,
  ReplicationCursor,
  Tombstone,
  TombstoneWrite,
} from "./model.js";

/**
 * Where registry entries live. Reads are served from memory, always, so that they keep working
 * while a backing store is unreachable; writes go through to the backing store (if any) and are
 * acknowledged only once durable there. Every write takes the next global revision, atomically,
 * and is guarded by the revision the writer last saw (compare-and-set), so that concurrent
 * writers, in this process or another one sharing the backing store, never lose an update.
 *
 * Implementations: the in-memory store (the default) and the Redis store. Both pass
 * tests/contracts/registry-store.contract.ts.
 */
export interface RegistryStore {
  /** Loads the stored state and starts following changes made by other processes. */
  open(): Promise<void>;
  /** Stops following changes; the backing connection is the caller's to close. */
  close(): Promise<void>;

  /** The latest revision this process has applied. */
  readonly revision: number;
  /** The oldest revision the change log still holds changes after (0 until it drops any). */
  readonly compactedRevision: number;
  /** Live entries. */
  readonly size: number;
  /** Bytes of the live entries, as `entryWeight` counts them. */
  readonly bytes: number;
  get(name: string): RegistryEntry | undefined;
  /** Live entries, in no particular order. */
  entries(): Iterable<RegistryEntry>;
  tombstone(name: string): Tombstone | undefined;
  tombstones(): Iterable<Tombstone>;

  /**
   * Whether `put` and `remove` store the event they are given atomically with the change (in the
   * same transaction of the backing store), so that a change acknowledged has its event stored.
   * When false they ignore it, and the caller emits the event after the write.
   */
  readonly recordsEvents: boolean;

  /**
   * Writes `entry` under its name if the stored entry's revision is still `expectedRevision`
   * (0: no live entry, tombstoned or never seen), replacing any tombstone.
   * @throws DomainError "conflict" when the stored entry changed meanwhile (call `sync()` and
   *   decide again); "unavailable" when the write did not happen (the backing store could not
   *   take it); "timeout" when the backing store did not answer in time and the write may have
   *   happened (its message says until when): never retry it as if it had not;
   *   "resource_exhausted" when the write would take the registry past its bounds in entries or
   *   bytes (a write that does not grow it always passes).
   * @param event the change's event, stored with it when `recordsEvents` (its payload gets the
   *   change's `revision`).
   */
  put(entry: EntryWrite, expectedRevision: number, event?: EventDraft): Promise<RegistryEntry>;

  /**
   * Removes the live entry `name` if its revision is still `expectedRevision`, leaving `tombstone`.
   * With `expectedRevision` 0 (no live entry) it records or replaces the tombstone alone: a
   * replicated delete of an entry this node never had must still block older writes that arrive
   * later by another path.
   * @throws DomainError "conflict", "unavailable" or "timeout", as put.
   * @param event as put's.
   */
  remove(
    tombstone: TombstoneWrite,
    expectedRevision: number,
    event?: EventDraft,
  ): Promise<Tombstone>;

  /**
   * Forgets tombstones deleted before `deletedBefore` (Unix ms). Not a change: no revision. Every
   * process sharing the backing store forgets them too (it is told, not sent a change).
   * @returns how many were forgotten.
   */
  purgeTombstones(deletedBefore: number): Promise<number>;

  /** Brings the in-memory view up to date with the backing store (after a conflict, say). */
  sync(): Promise<void>;

  /**
   * The changes after `revision`, in revision order (the first `limit` of them, when given), when
   * the change log still holds all of them; undefined when it has dropped some (the caller then
   * needs a snapshot). The log is bounded in changes and in bytes.
   */
  changesSince(revision: number, limit?: number): readonly RegistryChange[] | undefined;

  /**
   * The `deletedBefore` for {@link purgeTombstones} that forgets the oldest tombstones beyond the
   * newest `max`; undefined when there are no more than `max`.
   */
  tombstoneCutoff(max: number): number | undefined;

  /**
   * Calls `listener` synchronously for every change applied to the view, local or from another
   * process, in revision order. Returns the function that unsubscribes.
   */
  onChange(listener: (change: RegistryChange) => void): () => void;

  /**
   * Identifies this store's history of revisions: it changes only when the revisions start over
   * (a memory store at every start; a Redis store never, unless its data is lost). A peer's
   * replication cursor is valid only against the history it was taken from.
   */
  readonly historyId: string;

  /**
   * The node id stored with the data, or `candidate`, stored now, when there is none: a node keeps
   * its id across restarts for as long as its data lives.
   * @throws DomainError "unavailable".
   */
  ensureNodeId(candidate: string): Promise<string>;

  /** Where replication from `peer` (its URL) had got to; undefined before the first change. */
  getCursor(peer: string): Promise<ReplicationCursor | undefined>;
  /** @throws DomainError "unavailable" (not written), "timeout" (may still be written). */
  putCursor(peer: string, cursor: ReplicationCursor): Promise<void>;

  /**
   * The OpenAPI baseline learned for `name`, kept apart from the entry; undefined when there is
   * none, or none this version can read.
   * @throws DomainError "unavailable".
   */
  getBaseline(name: string): Promise<OpenApiBaseline | undefined>;
  /**
   * Records the baseline of `name` while it has a live entry, atomically with that check, so that
   * a poll ending after the service was removed cannot leave a baseline behind.
   * @returns false, storing nothing, when `name` has no live entry.
   * @throws DomainError "unavailable" when the backing store cannot take the write; "timeout"
   *   when it did not answer in time (the baseline may still be recorded).
   */
  putBaseline(name: string, baseline: OpenApiBaseline): Promise<boolean>;
  /**
   * Forgets the baseline of `name`, if any (its entry was removed).
   * @throws DomainError "unavailable", or "timeout" (it may still be forgotten).
   */
  deleteBaseline(name: string): Promise<void>;
  /**
   * Forgets every baseline whose name has no live entry, atomically with that check (leftovers of
   * a removal whose `deleteBaseline` failed, or of an older version).
   * @returns how many were forgotten.
   * @throws DomainError "unavailable", or "timeout".
   */
  purgeBaselines(): Promise<number>;
}

/** The store's change log as the shared change queue reads it: positions are revisions. */
export function changeSourceOf(
  store: Pick<RegistryStore, "revision" | "changesSince" | "onChange">,
): ChangeSource<RegistryChange> {
  return {
    get position() {
      return store.revision;
    },
    changesSince: (revision, limit) => store.changesSince(revision, limit),
    onChange: (listener) => store.onChange(() => listener()),
  };
}
