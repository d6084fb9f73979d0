import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import type { EventLog } from "../events/event-log.js";
import { problemWithDeclaration } from "../registry/entry-limits.js";
import {
  type EntryWrite,
  nameOf,
  patchEntry,
  type RegistryChange,
  type RegistryEntry,
  sharingUnchanged,
} from "../registry/model.js";
import type { RegistryStore } from "../registry/registry-store.js";
import { HybridLogicalClock } from "./hybrid-logical-clock.js";
import { compareStamps, type Stamp } from "./stamp.js";

/** What merging one replicated change did to this node's registry. */
export type MergeOutcome = "applied" | "ignored" | "rejected";

// Stamps are 64-bit on the wire; beyond 2^63 a node's own next stamp would not fit.
const maxStamp = (1n << 63n) - 1n;
// A peer's clock may run ahead of ours, but not by more than this: a stamp from far in the future
// would pin every later local write behind it.
const maxClockSkewMs = 60 * 60 * 1000;
const validName = /^[a-z0-9][a-z0-9._-]{0,99}$/;

/**
 * Merges changes made on other nodes into this node's registry, last-writer-wins on
 * (hybrid logical clock, origin node): a change is written only when it is newer than what this
 * node holds for the name, live or tombstone, and it keeps its own stamp. Merging is therefore
 * idempotent and commutative, and a node re-emits a change (through its own change log) only when
 * its state changed, which ends forwarding loops in any topology.
 *
 * Health status is learned by each node on its own: a merged entry keeps the status this node
 * had for it (or starts UNKNOWN), whatever the origin saw.
 */
export class ReplicationMerger {
  /**
   * For each name, the stamp of the change last merged and the peer it came from, so that the
   * replication feed does not send it back to that peer. Bounded: the oldest goes beyond
   * `maxLearned` (a forgotten one costs only an echo, ignored by the peer).
   */
  private readonly learned = new Map<string, { readonly hlc: bigint; readonly via: string }>();

  constructor(
    private readonly deps: {
      readonly store: RegistryStore;
      readonly hlc: HybridLogicalClock;
      readonly clock: Clock;
      readonly events: EventLog;
      readonly nodeId: string;
      /** Names no service may take (a registration could not), each with the reason. */
      readonly reservedNames?: ReadonlyMap<string, string>;
    },
    private readonly maxAttempts = 8,
    private readonly maxLearned = 100_000,
  ) {}

  /** The peer this node merged `change` from, if the store's change for its name is that one. */
  learnedFrom(change: RegistryChange): string | undefined {
    const stamp = change.type === "put" ? change.entry : change.tombstone;
    const learned = this.learned.get(nameOf(change));
    return learned !== undefined && learned.hlc === stamp.hlc ? learned.via : undefined;
  }

  /**
   * Merges one change (its revision is the origin stream's, not ours); `via` is the node id of
   * the peer it came from, when it came on that peer's stream.
   * @throws DomainError "unavailable" when the store cannot take the write; "timeout" when it may
   *   have (the link then resumes from its cursor, and merging the change again is harmless).
   */
  async merge(change: RegistryChange, via?: string): Promise<MergeOutcome> {
    const remote: Stamp = change.type === "put" ? change.entry : change.tombstone;
    const name = nameOf(change);
    const problem = this.problemWith(change, remote, name);
    if (problem !== undefined) {
      // A peer's change is held to the rules a client's registration is: it must not corrupt
      // this registry, nor spread further from it.
      this.rejected(name, remote, problem);
      return "rejected";
    }
    this.deps.hlc.observe(remote.hlc);
    const { store } = this.deps;
    for (let attempt = 1; ; attempt++) {
      const live = store.get(name);
      const local: Stamp | undefined = live ?? store.tombstone(name);
      if (local !== undefined) {
        const order = compareStamps(remote, local);
        if (order < 0 && local.origin !== remote.origin) this.conflict(name, local, remote);
        if (order <= 0) return "ignored";
      }
      // Noted before the write: the write wakes the replication feeds, which ask at once. A
      // write that then fails leaves a note for a stamp the store does not hold: never matched.
      if (via !== undefined && via !== "") this.remember(name, remote.hlc, via);
      try {
        // A tombstone is written as it came: the store replaces its revision (the origin's).
        if (change.type === "put") await store.put(merged(change.entry, live), live?.revision ?? 0);
        else await store.remove(change.tombstone, live?.revision ?? 0);
        return "applied";
      } catch (error) {
        if (error instanceof DomainError && error.kind === "resource_exhausted") {
          // This registry is full: the change is refused here, as a registration would be, and
          // the stream goes on (anti-entropy brings it once there is room).
          this.rejected(name, remote, "this registry is full");
          return "rejected";
        }
        if (!(error instanceof DomainError) || error.kind !== "conflict") throw error;
        if (attempt >= this.maxAttempts) throw error;
        await store.sync();
      }
    }
  }

  private remember(name: string, hlc: bigint, via: string): void {
    this.learned.delete(name); // re-inserted last: the map's order is the eviction order
    this.learned.set(name, { hlc, via });
    if (this.learned.size > this.maxLearned) {
      const oldest = this.learned.keys().next();
      if (!oldest.done) this.learned.delete(oldest.value);
    }
  }

  private problemWith(change: RegistryChange, remote: Stamp, name: string): string | undefined {
    if (!validName.test(name)) return "the name breaks the registry's naming rules";
    const reserved = this.deps.reservedNames?.get(name);
    if (reserved !== undefined) return `the name is reserved: ${reserved}`;
    if (remote.origin === "" || remote.origin.length > 128) return "the origin node id is invalid";
    if (remote.hlc <= 0n || remote.hlc > maxStamp) return "the clock stamp is out of range";
    const limit = HybridLogicalClock.fromMillis(this.deps.clock.now() + maxClockSkewMs);
    if (remote.hlc > limit) return "the clock stamp is too far in the future";
    if (change.type === "put") return problemWithDeclaration(change.entry);
    return undefined;
  }

  private rejected(name: string, remote: Stamp, reason: string): void {
    this.deps.events.append({
      type: "replication.change_rejected",
      subject: name.slice(0, 100),
      payload: { origin: remote.origin.slice(0, 128), reason },
    });
  }

  private conflict(name: string, winner: Stamp, loser: Stamp): void {
    this.deps.events.append({
      type: "replication.conflict_resolved",
      subject: name,
      payload: {
        service: name,
        winner_origin: winner.origin,
        winner_hlc: winner.hlc.toString(),
        loser_origin: loser.origin,
        loser_hlc: loser.hlc.toString(),
      },
    });
  }
}

function merged(remote: RegistryEntry, local: RegistryEntry | undefined): EntryWrite {
  const status = local && local.status !== "DOWN" ? local.status : "UNKNOWN";
  return sharingUnchanged(local, patchEntry(remote, { status }));
}
