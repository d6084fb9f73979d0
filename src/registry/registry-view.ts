import type { RegistryChange, RegistryEntry, Tombstone } from "./model.js";

/**
 * The registry as this process knows it: live entries, tombstones, and a bounded log of the
 * latest changes, with listeners told of every change in revision order. Both stores keep their
 * state in one; the Redis store feeds it from Redis.
 */
export class RegistryView {
  private readonly live = new Map<string, RegistryEntry>();
  private readonly dead = new Map<string, Tombstone>();
  private readonly log: RegistryChange[] = [];
  private readonly listeners = new Set<(change: RegistryChange) => void>();
  private current = 0;
  private compacted = 0;

  /** @param logSize how many changes the log keeps, at least, for watchers that resume. */
  constructor(private readonly logSize: number) {}

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
      this.live.set(change.entry.name, change.entry);
      this.dead.delete(change.entry.name);
    } else {
      this.live.delete(change.tombstone.name);
      this.dead.set(change.tombstone.name, change.tombstone);
    }
    this.current = change.revision;
    this.log.push(change);
    // Trimmed in batches (the log holds between logSize and twice that many changes): dropping
    // one change per write would shift the whole array on every write.
    if (this.log.length >= 2 * this.logSize) {
      const dropped = this.log.splice(0, this.log.length - this.logSize);
      this.compacted = dropped[dropped.length - 1]?.revision ?? this.compacted;
    }
    for (const listener of [...this.listeners]) listener(change);
    return true;
  }

  /**
   * Replaces the whole state with a snapshot at `revision` (a restart, or a gap the log cannot
   * fill). Listeners are told of what changed between the old state and the snapshot as changes
   * at the snapshot's revision, so that watchers stay correct; the log restarts empty.
   */
  reset(revision: number, entries: Iterable<RegistryEntry>, tombstones: Iterable<Tombstone>): void {
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
    for (const [name, entry] of next) this.live.set(name, entry);
    this.current = revision;
    this.compacted = revision;
    this.log.length = 0;
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

  /** Forgets tombstones deleted before `deletedBefore`; returns how many. */
  dropTombstones(deletedBefore: number): number {
    let dropped = 0;
    for (const [name, tombstone] of this.dead) {
      if (tombstone.deletedAt < deletedBefore) {
        this.dead.delete(name);
        dropped++;
      }
    }
    return dropped;
  }

  changesSince(revision: number): readonly RegistryChange[] | undefined {
    // A revision from the future (a node restarted empty, a store that lost data) is not a
    // resume point: the caller needs a snapshot.
    if (revision > this.current) return undefined;
    if (revision === this.current) return [];
    if (revision < this.compacted) return undefined;
    // Revisions in the log are contiguous, so the position follows from the revision.
    const first = this.log[0]?.revision ?? this.current + 1;
    return this.log.slice(revision + 1 - first);
  }

  onChange(listener: (change: RegistryChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
