import { BoundedLog } from "../changes/bounded-log.js";
import { DomainError } from "../errors/domain-error.js";
import { forgetDerived } from "./derived.js";
import { changeWeight, entryWeight } from "./entry-limits.js";
import type { EntryWrite, RegistryChange, RegistryEntry, Tombstone } from "./model.js";

/** How much a {@link RegistryView} holds. */
export interface RegistryViewLimits {
  /** Changes the log keeps for watchers and peers that resume. Default 10,000. */
  readonly changeLogSize: number;
  /** Bytes of changes (see `changeWeight`) the log keeps. Default 32 MiB. */
  readonly changeLogBytes: number;
  /** Live entries a write may bring the registry to. Default 100,000. */
  readonly maxEntries: number;
  /** Bytes of live entries (see `entryWeight`) a write may bring the registry to. Default 64 MiB. */
  readonly maxBytes: number;
}

/** The defaults {@link RegistryView} merges its limits over. */
export const registryViewDefaults: Readonly<RegistryViewLimits> = Object.freeze({
  changeLogSize: 10_000,
  changeLogBytes: 32 * 1024 * 1024,
  maxEntries: 100_000,
  maxBytes: 64 * 1024 * 1024,
});

/**
 * The registry as this process knows it: live entries, tombstones, and a log of the latest
 * changes bounded in count and in bytes, with listeners told of every change in revision order.
 * Both stores keep their state in one; the Redis store feeds it from Redis.
 */
export class RegistryView {
  private readonly live = new Map<string, RegistryEntry>();
  private readonly dead = new Map<string, Tombstone>();
  private readonly log: BoundedLog<RegistryChange>;
  private readonly listeners = new Set<(change: RegistryChange) => void>();
  private readonly limits: RegistryViewLimits;
  private current = 0;
  private compacted = 0;
  private liveBytes = 0;

  /** @throws RangeError when a limit is not a positive integer. */
  constructor(limits: Partial<RegistryViewLimits> = {}) {
    this.limits = { ...registryViewDefaults, ...limits };
    this.log = new BoundedLog(
      { maxItems: this.limits.changeLogSize, maxBytes: this.limits.changeLogBytes },
      changeWeight,
    );
    for (const key of ["maxEntries", "maxBytes"] as const) {
      const value = this.limits[key];
      if (!Number.isInteger(value) || value < 1) {
        throw new RangeError(`${key} must be a positive integer, not ${value}`);
      }
    }
  }

  get revision(): number {
    return this.current;
  }

  /** Changes up to this revision are no longer in the log. */
  get compactedRevision(): number {
    return this.compacted;
  }

  get size(): number {
    return this.live.size;
  }

  /** Bytes of the live entries, as `entryWeight` counts them. */
  get bytes(): number {
    return this.liveBytes;
  }

  /** Bytes of the changes the log holds, as `changeWeight` counts them. */
  get changeLogBytes(): number {
    return this.log.bytes;
  }

  /**
   * Refuses a write that would take the registry past its bounds: a new entry beyond
   * `maxEntries`, or a write that grows the live entries beyond `maxBytes`. A write that does not
   * grow the registry (a heartbeat, a status, a smaller declaration) always passes, so that a full
   * registry keeps working and can be emptied.
   * @throws DomainError "resource_exhausted".
   */
  checkCapacity(write: EntryWrite): void {
    const current = this.live.get(write.name);
    const added = entryWeight(write as RegistryEntry) - (current ? entryWeight(current) : 0);
    if (current === undefined && this.live.size >= this.limits.maxEntries) {
      throw new DomainError(
        "resource_exhausted",
        `the registry is full: it holds ${this.live.size} entries (REGISTRY_MAX_ENTRIES); deregister services or raise the limit`,
      );
    }
    if (added > 0 && this.liveBytes + added > this.limits.maxBytes) {
      throw new DomainError(
        "resource_exhausted",
        `the registry is full: its entries hold ${this.liveBytes} of ${this.limits.maxBytes} bytes (REGISTRY_MAX_BYTES); deregister services or raise the limit`,
      );
    }
  }

  get(name: string): RegistryEntry | undefined {
    return this.live.get(name);
  }

  entries(): Iterable<RegistryEntry> {
    return this.live.values();
  }

  tombstone(name: string): Tombstone | undefined {
    return this.dead.get(name);
  }

  tombstones(): Iterable<Tombstone> {
    return this.dead.values();
  }

  /**
   * Applies the change that follows the current revision. A change at or below it is already
   * applied and ignored (so that a write's own echo is harmless).
   * @returns false when the change leaves a gap: the caller must fetch what is missing first.
   */
  apply(change: RegistryChange): boolean {
    if (change.revision <= this.current) return true;
    if (change.revision !== this.current + 1) return false;
    if (change.type === "put") {
      this.setLive(change.entry);
      this.deleteDead(change.entry.name);
    } else {
      this.deleteLive(change.tombstone.name);
      // Re-inserted, so that the map's order stays the order of deletion.
      this.deleteDead(change.tombstone.name);
      this.dead.set(change.tombstone.name, change.tombstone);
    }
    this.current = change.revision;
    const dropped = this.log.push(change);
    this.compacted = dropped.at(-1)?.revision ?? this.compacted;
    for (const listener of [...this.listeners]) listener(change);
    return true;
  }

  private setLive(entry: RegistryEntry): void {
    const previous = this.live.get(entry.name);
    if (previous !== undefined) {
      this.liveBytes -= entryWeight(previous);
      forgetDerived(previous);
    }
    this.live.set(entry.name, entry);
    this.liveBytes += entryWeight(entry);
  }

  private deleteDead(name: string): void {
    const previous = this.dead.get(name);
    if (previous === undefined) return;
    forgetDerived(previous);
    this.dead.delete(name);
  }

  private deleteLive(name: string): void {
    const previous = this.live.get(name);
    if (previous === undefined) return;
    this.liveBytes -= entryWeight(previous);
    forgetDerived(previous);
    this.live.delete(name);
  }

  /**
   * Replaces the whole state with a snapshot at `revision` (a restart, or a gap the log cannot
   * fill). Listeners are told of what changed between the old state and the snapshot as changes
   * at the snapshot's revision, so that watchers stay correct. The log restarts with `log`: the
   * latest changes up to the snapshot, oldest first, as the backing store's log holds them (kept
   * within this log's bounds); it restarts empty when `log` is not contiguous up to `revision`.
   */
  reset(
    revision: number,
    entries: Iterable<RegistryEntry>,
    tombstones: Iterable<Tombstone>,
    log: readonly RegistryChange[] = [],
  ): void {
    const next = new Map<string, RegistryEntry>();
    for (const entry of entries) next.set(entry.name, entry);
    const differences: RegistryChange[] = [];
    for (const [name, entry] of next) {
      if (this.live.get(name)?.revision !== entry.revision) {
        differences.push({ type: "put", revision: entry.revision, entry });
      }
    }
    this.dead.clear();
    for (const tombstone of tombstones) this.dead.set(tombstone.name, tombstone);
    for (const name of this.live.keys()) {
      if (next.has(name)) continue;
      const tombstone = this.dead.get(name) ?? {
        name,
        revision,
        deletedAt: 0,
        origin: "",
        hlc: 0n,
      };
      differences.push({ type: "delete", revision: tombstone.revision, tombstone });
    }
    this.live.clear();
    this.liveBytes = 0;
    for (const entry of next.values()) this.setLive(entry);
    this.current = revision;
    this.compacted = revision;
    this.log.clear();
    if (leadsUpTo(log, revision)) {
      for (const change of log) this.log.push(change);
      this.compacted = (this.log.first()?.revision ?? revision + 1) - 1;
    }
    differences.sort((a, b) => a.revision - b.revision);
    for (const change of differences) for (const listener of [...this.listeners]) listener(change);
  }

  /** Whether some tombstone was deleted before `deletedBefore`. */
  hasTombstoneBefore(deletedBefore: number): boolean {
    for (const tombstone of this.dead.values()) {
      if (tombstone.deletedAt < deletedBefore) return true;
    }
    return false;
  }

  /**
   * The cut-off (a `deletedBefore` for {@link dropTombstones}) that forgets the oldest tombstones
   * beyond the newest `max`; undefined when there are no more than `max`.
   */
  tombstoneCutoff(max: number): number | undefined {
    const excess = this.dead.size - max;
    if (excess <= 0) return undefined;
    const times = Float64Array.from(this.dead.values(), (tombstone) => tombstone.deletedAt).sort();
    return (times[excess - 1] as number) + 1;
  }

  /**
   * Forgets tombstones deleted before `deletedBefore`, of revision `upToRevision` or below (a purge
   * made in a backing store at that revision knew of no later one); returns how many.
   */
  dropTombstones(deletedBefore: number, upToRevision = Number.POSITIVE_INFINITY): number {
    let dropped = 0;
    for (const [name, tombstone] of this.dead) {
      if (tombstone.deletedAt < deletedBefore && tombstone.revision <= upToRevision) {
        this.dead.delete(name);
        dropped++;
      }
    }
    return dropped;
  }

  /**
   * The changes after `revision` (at most `limit` of them, the oldest first), or undefined when
   * the log no longer holds them all, or when `revision` is ahead of this view.
   */
  changesSince(revision: number, limit = Number.POSITIVE_INFINITY): RegistryChange[] | undefined {
    // A revision from the future (a node restarted empty, a store that lost data) is not a
    // resume point: the caller needs a snapshot.
    if (revision > this.current) return undefined;
    if (revision === this.current) return [];
    if (revision < this.compacted) return undefined;
    // Revisions in the log are contiguous, so the position follows from the revision.
    const first = this.log.first()?.revision ?? this.current + 1;
    const start = revision + 1 - first;
    return this.log.slice(start, Math.min(this.log.length, start + limit));
  }

  onChange(listener: (change: RegistryChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/** Whether `log` is changes of consecutive revisions, the last at `revision` (none: false). */
function leadsUpTo(log: readonly RegistryChange[], revision: number): boolean {
  const first = log[0]?.revision;
  if (first === undefined || log.at(-1)?.revision !== revision) return false;
  return log.every((change, i) => change.revision === first + i);
}
