import { DomainError } from "../errors/domain-error.js";

/** Status of a registered service as this orchestrator last saw it. */
export type ServiceStatus = "UNKNOWN" | "HEALTHY" | "UNHEALTHY" | "DOWN";

/** What a service declares about itself when it registers; a registration replaces all of it. */
export interface DeclaredService {
  readonly name: string;
  readonly baseUrl: string;
  /** "" when the service publishes no OpenAPI document. */
  readonly openapiUrl: string;
  /** Defaults to `{baseUrl}/health`. */
  readonly healthUrl: string;
  readonly endpoints: readonly string[];
  readonly metadata: Readonly<Record<string, string>>;
  readonly tags: readonly string[];
  readonly version: string;
  /** Lease length in seconds; 0 means the entry never expires. */
  readonly ttlSeconds: number;
}

/**
 * One registry entry as stored: what the service declared, what the orchestrator learned (its
 * status), when things happened (Unix milliseconds from the injected clock), and the stamps
 * replication needs: the node that made the last change and its hybrid logical clock reading.
 */
export interface RegistryEntry extends DeclaredService {
  readonly status: ServiceStatus;
  readonly registeredAt: number;
  readonly lastHeartbeat: number;
  readonly updatedAt: number;
  /** When the lease runs out; 0 when the entry has no lease. */
  readonly leaseExpiresAt: number;
  readonly origin: string;
  readonly hlc: bigint;
  /** The store's global revision at the entry's last change; assigned by the store. */
  readonly revision: number;
}

/** What is left of a deregistered entry, kept for a while so that the delete can replicate. */
export interface Tombstone {
  readonly name: string;
  readonly revision: number;
  readonly deletedAt: number;
  readonly origin: string;
  readonly hlc: bigint;
}

/** One change of the registry, as the change log and watchers see it. */
export type RegistryChange =
  | { readonly type: "put"; readonly revision: number; readonly entry: RegistryEntry }
  | { readonly type: "delete"; readonly revision: number; readonly tombstone: Tombstone };

/** The name of the entry a change is about. */
export function nameOf(change: RegistryChange): string {
  return change.type === "put" ? change.entry.name : change.tombstone.name;
}

/** An entry as written, before the store assigns its revision. */
export type EntryWrite = Omit<RegistryEntry, "revision">;

/** A tombstone as written, before the store assigns its revision. */
export type TombstoneWrite = Omit<Tombstone, "revision">;

/**
 * The baseline of a service's OpenAPI document: what the last poll that changed it saw. Bounded
 * by `OPENAPI_MAX_BASELINE_BYTES`, whatever the size of the document.
 */
export interface OpenApiBaseline {
  /** sha256 (hex) of the canonical document. */
  readonly hash: string;
  /** Operations in the document. */
  readonly operationCount: number;
  /**
   * The contract of every operation, compressed: opaque bytes, written and read only by the
   * OpenAPI analysis (in its worker thread), so that the event loop only moves them.
   */
  readonly summary: Uint8Array;
  readonly recordedAt: number;
}

/** Bytes all stored baselines may take together, unless a store is told otherwise: 64 MiB. */
export const defaultBaselinesMaxBytes = 64 * 1024 * 1024;

/** The bytes a stored baseline is counted for by the bound on all baselines. */
export function baselineWeight(baseline: OpenApiBaseline): number {
  // The summary and a header of about this size, as the Redis store writes them.
  return baseline.summary.length + baseline.hash.length + 64;
}

/** The refusal of a baseline that would take the stored baselines past their bound. */
export function baselinesFull(maxBytes: number): DomainError {
  return new DomainError(
    "resource_exhausted",
    `the stored OpenAPI baselines would exceed ${maxBytes} bytes (OPENAPI_BASELINES_MAX_BYTES); the previous baseline is kept`,
  );
}

/** Where replication from a peer had got to: its history and the last revision applied. */
export interface ReplicationCursor {
  readonly historyId: string;
  readonly revision: number;
}

/**
 * The entry a write becomes once the store gives it its revision. Entries are built field by
 * field, here and in {@link patchEntry}: V8 copies wide objects through `{...spread, more}` two
 * orders of magnitude slower, and one construction site keeps every entry the same shape.
 */
export function withRevision(write: EntryWrite, revision: number): RegistryEntry {
  return {
    name: write.name,
    baseUrl: write.baseUrl,
    openapiUrl: write.openapiUrl,
    healthUrl: write.healthUrl,
    endpoints: write.endpoints,
    metadata: write.metadata,
    tags: write.tags,
    version: write.version,
    ttlSeconds: write.ttlSeconds,
    status: write.status,
    registeredAt: write.registeredAt,
    lastHeartbeat: write.lastHeartbeat,
    updatedAt: write.updatedAt,
    leaseExpiresAt: write.leaseExpiresAt,
    origin: write.origin,
    hlc: write.hlc,
    revision,
  };
}

/** The write that changes `entry` by `patch` (fields absent from the patch are kept). */
export function patchEntry(entry: EntryWrite, patch: Partial<EntryWrite>): EntryWrite {
  return {
    name: patch.name ?? entry.name,
    baseUrl: patch.baseUrl ?? entry.baseUrl,
    openapiUrl: patch.openapiUrl ?? entry.openapiUrl,
    healthUrl: patch.healthUrl ?? entry.healthUrl,
    endpoints: patch.endpoints ?? entry.endpoints,
    metadata: patch.metadata ?? entry.metadata,
    tags: patch.tags ?? entry.tags,
    version: patch.version ?? entry.version,
    ttlSeconds: patch.ttlSeconds ?? entry.ttlSeconds,
    status: patch.status ?? entry.status,
    registeredAt: patch.registeredAt ?? entry.registeredAt,
    lastHeartbeat: patch.lastHeartbeat ?? entry.lastHeartbeat,
    updatedAt: patch.updatedAt ?? entry.updatedAt,
    leaseExpiresAt: patch.leaseExpiresAt ?? entry.leaseExpiresAt,
    origin: patch.origin ?? entry.origin,
    hlc: patch.hlc ?? entry.hlc,
  };
}

/**
 * `write` with each declared string, list and map that equals `current`'s taken from `current`.
 * The change log keeps every version of an entry for a while, and a heartbeat that repeats its
 * declaration (or a peer's copy of it) would otherwise keep one more copy of each; the copies just
 * decoded from the request die young instead (a heap snapshot after 11,000 registrations of 1,000
 * names: 2,294 → 1,525 bytes retained per write).
 */
export function sharingUnchanged(
  current: DeclaredService | undefined,
  write: EntryWrite,
): EntryWrite {
  if (current === undefined) return write;
  return patchEntry(write, {
    name: current.name,
    baseUrl: kept(current.baseUrl, write.baseUrl),
    openapiUrl: kept(current.openapiUrl, write.openapiUrl),
    healthUrl: kept(current.healthUrl, write.healthUrl),
    endpoints: sameList(current.endpoints, write.endpoints) ? current.endpoints : write.endpoints,
    metadata: sameMap(current.metadata, write.metadata) ? current.metadata : write.metadata,
    tags: sameList(current.tags, write.tags) ? current.tags : write.tags,
    version: kept(current.version, write.version),
  });
}

/** `current` when it is the same text as `fresh`, else `fresh`. */
function kept(current: string, fresh: string): string {
  return current === fresh ? current : fresh;
}

// Both start with `a === b`: once a write shares what it repeats, the comparisons that follow
// (sameDeclaration, a later heartbeat) find the same objects and stop there.
export function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  return a.length === b.length && a.every((value, i) => value === b[i]);
}

export function sameMap(
  a: Readonly<Record<string, string>>,
  b: Readonly<Record<string, string>>,
): boolean {
  if (a === b) return true;
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => a[key] === b[key]);
}
