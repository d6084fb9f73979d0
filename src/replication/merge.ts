import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import type { EventLog } from "../events/event-log.js";
import type { EntryWrite, RegistryChange, RegistryEntry, Tombstone } from "../registry/model.js";
import type { RegistryStore } from "../registry/registry-store.js";
import type { HybridLogicalClock } from "./hybrid-logical-clock.js";
import { compareStamps, type Stamp } from "./stamp.js";

/** What merging one replicated change did to this node's registry. */
export type MergeOutcome = "applied" | "ignored";

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
  constructor(
    private readonly deps: {
      readonly store: RegistryStore;
      readonly hlc: HybridLogicalClock;
      readonly clock: Clock;
      readonly events: EventLog;
      readonly nodeId: string;
    },
    private readonly maxAttempts = 8,
  ) {}

  /**
   * Merges one change (its revision is the origin stream's, not ours).
   * @throws DomainError "unavailable" when the store cannot take the write.
   */
  async merge(change: RegistryChange): Promise<MergeOutcome> {
    const remote: Stamp = change.type === "put" ? change.entry : change.tombstone;
    const name = change.type === "put" ? change.entry.name : change.tombstone.name;
    this.deps.hlc.observe(remote.hlc);
    const { store } = this.deps;
    for (let attempt = 1; ; attempt++) {
      const live = store.get(name);
      const local: Stamp | undefined = live ?? store.tombstone(name);
      if (local !== undefined && compareStamps(remote, local) <= 0) {
        if (local.origin !== remote.origin && compareStamps(remote, local) < 0) {
          this.conflict(name, local, remote);
        }
        return "ignored";
      }
      try {
        if (change.type === "put") await store.put(merged(change.entry, live), live?.revision ?? 0);
        else await store.remove(tombstoneWrite(change.tombstone), live?.revision ?? 0);
        return "applied";
      } catch (error) {
        if (!(error instanceof DomainError) || error.kind !== "conflict") throw error;
        if (attempt >= this.maxAttempts) throw error;
        await store.sync();
      }
    }
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
  return {
    name: remote.name,
    baseUrl: remote.baseUrl,
    openapiUrl: remote.openapiUrl,
    healthUrl: remote.healthUrl,
    endpoints: remote.endpoints,
    metadata: remote.metadata,
    tags: remote.tags,
    version: remote.version,
    ttlSeconds: remote.ttlSeconds,
    status: local && local.status !== "DOWN" ? local.status : "UNKNOWN",
    registeredAt: remote.registeredAt,
    lastHeartbeat: remote.lastHeartbeat,
    updatedAt: remote.updatedAt,
    leaseExpiresAt: remote.leaseExpiresAt,
    origin: remote.origin,
    hlc: remote.hlc,
  };
}

function tombstoneWrite(tombstone: Tombstone) {
  return {
    name: tombstone.name,
    deletedAt: tombstone.deletedAt,
    origin: tombstone.origin,
    hlc: tombstone.hlc,
  };
}
