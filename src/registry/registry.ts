import type { JsonObject } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import type { EventLog, NewEvent } from "../events/event-log.js";
import type { HybridLogicalClock } from "../replication/hybrid-logical-clock.js";
import { checkDeclaredSize } from "./entry-limits.js";
import {
  type DeclaredService,
  type EntryWrite,
  patchEntry,
  type RegistryEntry,
  type ServiceStatus,
  sameList,
  sameMap,
  sharingUnchanged,
  type Tombstone,
  type TombstoneWrite,
} from "./model.js";
import type { RegistryStore } from "./registry-store.js";

/** Who asked: carried into the events a change emits. */
export interface CallInfo {
  readonly correlationId: string;
  readonly traceId: string;
}

export interface RegistryOptions {
  /** How long an entry whose lease ran out stays DOWN before it is removed. Default 30 s. */
  leaseGraceMs: number;
  /** How long tombstones are kept. Default 1 hour. */
  tombstoneRetentionMs: number;
  /**
   * Tombstones kept at most: beyond them, the oldest are forgotten at the next sweep, before
   * their retention ends. Default 100,000.
   */
  maxTombstones: number;
  /** How often leases and tombstones are swept. Default 1 s. */
  sweepIntervalMs: number;
  /** Attempts of a compare-and-set write before it gives up with a conflict. Default 8. */
  maxAttempts: number;
  /** Names no service may take, each with the reason. Default: none. */
  reservedNames: ReadonlyMap<string, string>;
}

const defaults: RegistryOptions = Object.freeze({
  leaseGraceMs: 30_000,
  tombstoneRetentionMs: 3_600_000,
  maxTombstones: 100_000,
  sweepIntervalMs: 1_000,
  maxAttempts: 8,
  reservedNames: new Map<string, string>(),
});

/** A page of entries, sorted by name. */
export interface RegistryPage {
  readonly entries: readonly RegistryEntry[];
  /** Opaque; empty when this is the last page. */
  readonly nextPageToken: string;
  readonly revision: number;
  /** Entries matching the filters on all pages together (the page token aside). */
  readonly totalSize: number;
}

/** Filters and pagination of a listing. */
export interface RegistryQuery {
  readonly tag?: string;
  readonly status?: ServiceStatus;
  readonly namePrefix?: string;
  /** 0: every matching entry. */
  readonly pageSize?: number;
  readonly pageToken?: string;
}

/**
 * A registration this node took: the entry as written, and the one it replaced (undefined for a
 * new entry).
 */
export interface Registration {
  readonly entry: RegistryEntry;
  readonly previous: RegistryEntry | undefined;
}

/** The event a write reports; its payload gets the change's `service` and `revision`. */
interface ChangeEvent {
  readonly type: string;
  readonly call: CallInfo;
  readonly payload: JsonObject;
}

/**
 * What a write decides for the entry it read: write it, remove it (each with the event it
 * reports, if any), or leave it as it is.
 */
type Decision<T> =
  | {
      readonly put: EntryWrite;
      readonly event: ChangeEvent | undefined;
      readonly then: (entry: RegistryEntry) => T;
    }
  | {
      readonly remove: TombstoneWrite;
      readonly event: ChangeEvent | undefined;
      readonly then: (tombstone: Tombstone) => T;
    }
  | { readonly keep: T };

/**
 * The service registry: registrations with leases, heartbeats, deregistration with tombstones,
 * health status learned by probing, and an event for every change that matters to operators
 * (stored in the same transaction as the change when the store can, see `recordsEvents`; emitted
 * right after it otherwise).
 * Every write is a compare-and-set on the entry it read, retried on a conflict, so that writers in
 * this process, a sweeper and other orchestrators sharing the store never lose an update.
 */
export class Registry {
  private readonly options: RegistryOptions;
  private sweeper: NodeJS.Timeout | undefined;
  private sweeping = false;
  private readonly registrations = new Set<(registration: Registration) => void>();

  constructor(
    private readonly deps: {
      readonly store: RegistryStore;
      readonly clock: Clock;
      readonly hlc: HybridLogicalClock;
      readonly events: EventLog;
      readonly nodeId: string;
      readonly logger: Logger;
    },
    options: Partial<RegistryOptions> = {},
  ) {
    this.options = { ...defaults, ...options };
  }

  /** Starts sweeping leases and tombstones. */
  start(): void {
    this.sweeper ??= setInterval(() => void this.sweep(), this.options.sweepIntervalMs);
    this.sweeper.unref();
  }

  stop(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  /**
   * Calls `listener` after every registration this node takes (not for entries written by another
   * process sharing the store, nor merged from peers), once it is stored. Returns the function
   * that unsubscribes.
   */
  onRegistered(listener: (registration: Registration) => void): () => void {
    this.registrations.add(listener);
    return () => this.registrations.delete(listener);
  }

  /** Live entries. */
  get size(): number {
    return this.deps.store.size;
  }

  get(name: string): RegistryEntry | undefined {
    return this.deps.store.get(name);
  }

  /**
   * Registers a service, or replaces what an existing one declared, keeping what the orchestrator
   * learned (its health status) and when it first registered. A registration is proof of life: it
   * renews the lease, and an entry that was DOWN comes back as UNKNOWN until probed.
   * @throws DomainError "invalid" (a reserved name, over the registration size limit),
   *   "resource_exhausted" (the registry is full), "unavailable" (the store did not take the
   *   write), "timeout" (the store did not answer in time: the write may have happened, so it is
   *   not retried), "conflict" (too many concurrent writers).
   */
  async register(
    declared: DeclaredService,
    call: CallInfo,
  ): Promise<{ entry: RegistryEntry; created: boolean }> {
    const reserved = this.options.reservedNames.get(declared.name);
    if (reserved !== undefined) {
      throw new DomainError("invalid", `the name ${declared.name} is reserved: ${reserved}`);
    }
    checkDeclaredSize(declared);
    // The entry the winning attempt replaced (each retry after a conflict reads it again).
    let previous: RegistryEntry | undefined;
    const registered = await this.mutate(declared.name, (current) => {
      previous = current;
      const now = this.deps.clock.now();
      const write = sharingUnchanged(current, {
        name: declared.name,
        baseUrl: declared.baseUrl,
        openapiUrl: declared.openapiUrl,
        healthUrl: declared.healthUrl || `${declared.baseUrl.replace(/\/+$/, "")}/health`,
        endpoints: declared.endpoints,
        metadata: declared.metadata,
        tags: declared.tags,
        version: declared.version,
        ttlSeconds: declared.ttlSeconds,
        status: current && current.status !== "DOWN" ? current.status : "UNKNOWN",
        registeredAt: current?.registeredAt ?? now,
        lastHeartbeat: now,
        updatedAt: now,
        leaseExpiresAt: leaseEnd(now, declared.ttlSeconds),
        origin: this.deps.nodeId,
        hlc: this.deps.hlc.now(),
      });
      // A service that registers again with the same declaration (many do so periodically,
      // as a heartbeat) renews its lease without an event: events say what changed.
      const changed =
        current === undefined || current.status === "DOWN" || !sameDeclaration(current, write);
      const event = changed
        ? changeEvent("registry.service.registered", call, {
            created: current === undefined,
            base_url: write.baseUrl,
            version: write.version,
          })
        : undefined;
      return writeEntry(write, event, (entry) => ({ entry, created: current === undefined }));
    });
    for (const listener of [...this.registrations]) {
      listener({ entry: registered.entry, previous });
    }
    return registered;
  }

  /**
   * Removes a service, leaving a tombstone.
   * @throws DomainError "not_found" when it is not registered.
   */
  async deregister(name: string, call: CallInfo): Promise<Tombstone> {
    return this.mutate(
      name,
      (current) => {
        if (current === undefined) throw notRegistered(name);
        const event = changeEvent("registry.service.deregistered", call, {});
        return removeEntry(this.tombstoneOf(name), event, (tombstone) => tombstone);
      },
      confirmAbsence,
    );
  }

  /**
   * Renews a service's lease. An entry that was DOWN comes back as UNKNOWN until probed.
   * @throws DomainError "not_found" when it is not registered.
   */
  async heartbeat(name: string, call: CallInfo): Promise<RegistryEntry> {
    return this.mutate(
      name,
      (current) => {
        if (current === undefined) throw notRegistered(name);
        const now = this.deps.clock.now();
        const revived = current.status === "DOWN";
        return writeEntry(
          patchEntry(current, {
            status: revived ? "UNKNOWN" : current.status,
            lastHeartbeat: now,
            updatedAt: now,
            leaseExpiresAt: leaseEnd(now, current.ttlSeconds),
            origin: this.deps.nodeId,
            hlc: this.deps.hlc.now(),
          }),
          revived ? changeEvent("registry.service.revived", call, {}) : undefined,
          (entry) => entry,
        );
      },
      confirmAbsence,
    );
  }

  /**
   * Records a health status this node learned by probing. Status is learned, not declared: it
   * leaves the replication stamp alone. An entry that is DOWN (no lease) stays DOWN.
   */
  async setHealth(
    name: string,
    status: "HEALTHY" | "UNHEALTHY",
    detail: JsonObject,
  ): Promise<RegistryEntry | undefined> {
    return this.mutate<RegistryEntry | undefined>(name, (current) => {
      if (current === undefined || current.status === status || current.status === "DOWN") {
        return { keep: current };
      }
      return writeEntry(
        patchEntry(current, { status, updatedAt: this.deps.clock.now() }),
        changeEvent("registry.service.health_changed", noCall, {
          from: current.status,
          to: status,
          ...detail,
        }),
        (entry) => entry,
      );
    });
  }

  /** Lists entries sorted by name, filtered, a page at a time. */
  list(query: RegistryQuery = {}): RegistryPage {
    const { store } = this.deps;
    const revision = store.revision;
    const after = query.pageToken ? decodePageToken(query.pageToken) : "";
    const matching: RegistryEntry[] = [];
    let totalSize = 0;
    for (const entry of store.entries()) {
      if (query.namePrefix && !entry.name.startsWith(query.namePrefix)) continue;
      if (query.status && entry.status !== query.status) continue;
      if (query.tag && !entry.tags.includes(query.tag)) continue;
      totalSize++;
      if (after && entry.name <= after) continue;
      matching.push(entry);
    }
    matching.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const size = query.pageSize ?? 0;
    if (size <= 0 || matching.length <= size) {
      return { entries: matching, nextPageToken: "", revision, totalSize };
    }
    const page = matching.slice(0, size);
    const last = page[page.length - 1] as RegistryEntry;
    return { entries: page, nextPageToken: encodePageToken(last.name), revision, totalSize };
  }

  /**
   * Turns entries whose lease ran out DOWN, removes those DOWN for longer than the grace period,
   * and forgets tombstones older than their retention, or beyond the newest `maxTombstones`.
   * Failures (the store unreachable) are logged; the next sweep retries.
   */
  async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      const now = this.deps.clock.now();
      const { leaseGraceMs, tombstoneRetentionMs } = this.options;
      for (const entry of [...this.deps.store.entries()]) {
        if (entry.leaseExpiresAt === 0 || entry.leaseExpiresAt > now) continue;
        if (entry.status !== "DOWN") await this.expire(entry.name, now);
        else if (entry.leaseExpiresAt + leaseGraceMs <= now)
          await this.removeExpired(entry.name, now);
      }
      const { store } = this.deps;
      const beyondCap = store.tombstoneCutoff(this.options.maxTombstones) ?? 0;
      await store.purgeTombstones(Math.max(now - tombstoneRetentionMs, beyondCap));
    } catch (error) {
      this.deps.logger.warn({ err: error }, "registry sweep failed; retrying at the next one");
    } finally {
      this.sweeping = false;
    }
  }

  private async expire(name: string, now: number): Promise<void> {
    await this.mutate(name, (current) => {
      // Renewed meanwhile (here or by another node): nothing to expire.
      if (!current || current.status === "DOWN" || current.leaseExpiresAt > now) {
        return { keep: undefined };
      }
      const event = changeEvent("registry.service.expired", noCall, {
        lease_expires_at: new Date(current.leaseExpiresAt).toISOString(),
      });
      return writeEntry(patchEntry(current, { status: "DOWN", updatedAt: now }), event, () => {});
    });
  }

  private async removeExpired(name: string, now: number): Promise<void> {
    await this.mutate(name, (current) => {
      if (current?.status !== "DOWN" || current.leaseExpiresAt + this.options.leaseGraceMs > now) {
        return { keep: undefined };
      }
      // The tombstone keeps the expired entry's own stamp: every node expires an entry on its own
      // clock, and a renewal made anywhere (a newer stamp) must win over this removal when the
      // two meet, rather than the removal deleting a live service everywhere.
      const tombstone: TombstoneWrite = {
        name,
        deletedAt: now,
        origin: current.origin,
        hlc: current.hlc,
      };
      const event = changeEvent("registry.service.removed", noCall, { reason: "lease expired" });
      return removeEntry(tombstone, event, () => {});
    });
  }

  private tombstoneOf(name: string): TombstoneWrite {
    return {
      name,
      deletedAt: this.deps.clock.now(),
      origin: this.deps.nodeId,
      hlc: this.deps.hlc.now(),
    };
  }

  /**
   * Reads, decides, writes; on a conflict brings the view up to date and decides again. Any other
   * failure ends it: a write whose outcome is unknown ("timeout") must not be made twice, and if
   * it did land, the view learns of it as of any other change.
   */
  private async mutate<T>(
    name: string,
    decide: (current: RegistryEntry | undefined) => Decision<T>,
    options: { confirmAbsence?: boolean } = {},
  ): Promise<T> {
    const { store } = this.deps;
    let synced = false;
    for (let attempt = 1; ; attempt++) {
      const current = store.get(name);
      if (current === undefined && options.confirmAbsence && !synced) {
        // This view may not have caught up with a write another orchestrator just made: look
        // once more before deciding that the entry does not exist (a false "not registered").
        synced = true;
        await store.sync();
        continue;
      }
      const decision = decide(current);
      try {
        if ("keep" in decision) return decision.keep;
        const expected = current?.revision ?? 0;
        const event = decision.event && this.eventOf(name, decision.event);
        // Stored with the change when the store can, so that a change it acknowledged always has
        // its event; otherwise emitted right after the write.
        const recorded = store.recordsEvents ? event && this.deps.events.draft(event) : undefined;
        const change =
          "put" in decision
            ? await store.put(decision.put, expected, recorded)
            : await store.remove(decision.remove, expected, recorded);
        if (event && !store.recordsEvents) {
          this.deps.events.append({
            ...event,
            payload: payloadWithRevision(event.payload, change.revision),
          });
        }
        return "put" in decision
          ? decision.then(change as RegistryEntry)
          : decision.then(change as Tombstone);
      } catch (error) {
        if (!(error instanceof DomainError) || error.kind !== "conflict") throw error;
        if (attempt >= this.options.maxAttempts) {
          throw new DomainError("conflict", `${name} is being changed concurrently; try again`);
        }
        await store.sync();
        synced = true;
      }
    }
  }

  /** The event of a change to `name`, without its revision (which the write gives it). */
  private eventOf(name: string, event: ChangeEvent): NewEvent {
    return {
      type: event.type,
      subject: name,
      correlationId: event.call.correlationId,
      traceId: event.call.traceId,
      payload: { service: name, ...event.payload },
    };
  }
}

/**
 * `payload` with the change's revision added. Not `{ ...payload, revision }`: on Node 20, V8 gives
 * each object a spread with an added key builds a hidden class of its own, and these payloads stay
 * in the event store (1,000 writes/s made 1,000 hidden classes a second for the GC to keep).
 */
function payloadWithRevision(payload: JsonObject, revision: number): JsonObject {
  return Object.assign({}, payload, { revision });
}

function changeEvent(type: string, call: CallInfo, payload: JsonObject): ChangeEvent {
  return { type, call, payload };
}

function writeEntry<T>(
  put: EntryWrite,
  event: ChangeEvent | undefined,
  then: (entry: RegistryEntry) => T,
): Decision<T> {
  return { put, event, then };
}

function removeEntry<T>(
  remove: TombstoneWrite,
  event: ChangeEvent | undefined,
  then: (tombstone: Tombstone) => T,
): Decision<T> {
  return { remove, event, then };
}

// Deregister and heartbeat answer "not registered" only after checking the backing store.
const confirmAbsence = Object.freeze({ confirmAbsence: true });

const noCall: CallInfo = Object.freeze({ correlationId: "", traceId: "" });

function sameDeclaration(a: DeclaredService, b: DeclaredService): boolean {
  return (
    a.baseUrl === b.baseUrl &&
    a.openapiUrl === b.openapiUrl &&
    a.healthUrl === b.healthUrl &&
    a.version === b.version &&
    a.ttlSeconds === b.ttlSeconds &&
    sameList(a.endpoints, b.endpoints) &&
    sameList(a.tags, b.tags) &&
    sameMap(a.metadata, b.metadata)
  );
}

function leaseEnd(now: number, ttlSeconds: number): number {
  return ttlSeconds > 0 ? now + ttlSeconds * 1000 : 0;
}

function notRegistered(name: string): DomainError {
  return new DomainError("not_found", `service ${name} is not registered`);
}

function encodePageToken(name: string): string {
  return Buffer.from(name, "utf8").toString("base64url");
}

function decodePageToken(token: string): string {
  const name = Buffer.from(token, "base64url").toString("utf8");
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(name)) {
    throw new DomainError("invalid", "page_token is not a token this server issued");
  }
  return name;
}
