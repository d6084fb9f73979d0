import { DomainError } from "../errors/domain-error.js";
import type { DeclaredService, RegistryChange, RegistryEntry, Tombstone } from "./model.js";

/**
 * What one registration may declare. The per-field limits are those of a real registry (Consul
 * caps service metadata at 64 pairs, keys of 128 and values of 512 characters); the API declares
 * the same ones as field rules on RegisterServiceRequest (a test keeps the two in step), and
 * replicated entries are held to them here. `declaredBytes` bounds the whole: every field at its
 * limit would be over 100 KB, which is not a service registration.
 */
export const entryLimits = Object.freeze({
  nameLength: 100,
  urlLength: 2048,
  endpoints: 100,
  endpointLength: 512,
  metadataPairs: 64,
  metadataKeyLength: 128,
  metadataValueLength: 512,
  tags: 32,
  tagLength: 64,
  versionLength: 64,
  ttlSeconds: 86_400,
  /** UTF-8 bytes of every declared string together (name, URLs, endpoints, metadata, tags, version). */
  declaredBytes: 16_384,
});

/** The UTF-8 bytes of every string a service declares. */
export function declaredBytes(service: DeclaredService): number {
  let bytes =
    Buffer.byteLength(service.name) +
    Buffer.byteLength(service.baseUrl) +
    Buffer.byteLength(service.openapiUrl) +
    Buffer.byteLength(service.healthUrl) +
    Buffer.byteLength(service.version);
  for (const endpoint of service.endpoints) bytes += Buffer.byteLength(endpoint);
  for (const tag of service.tags) bytes += Buffer.byteLength(tag);
  for (const key in service.metadata) {
    bytes += Buffer.byteLength(key) + Buffer.byteLength(service.metadata[key] ?? "");
  }
  return bytes;
}

/**
 * Refuses a registration heavier than {@link entryLimits}.declaredBytes: the field rules bound
 * each field, this bounds their sum.
 * @throws DomainError "invalid".
 */
export function checkDeclaredSize(service: DeclaredService): void {
  const bytes = declaredBytes(service);
  if (bytes > entryLimits.declaredBytes) {
    throw new DomainError(
      "invalid",
      `the registration declares ${bytes} bytes; at most ${entryLimits.declaredBytes} bytes of name, URLs, endpoints, metadata, tags and version are accepted`,
    );
  }
}

/**
 * Why a declaration (a peer's replicated entry, say) breaks the limits a registration is held to;
 * undefined when it does not. The name is the caller's to check.
 */
export function problemWithDeclaration(service: DeclaredService): string | undefined {
  const limits = entryLimits;
  if (!isHttpUrl(service.baseUrl)) return "the base_url is not an http(s) URL";
  if (service.healthUrl !== "" && !isHttpUrl(service.healthUrl)) return "the health_url is invalid";
  if (service.openapiUrl !== "" && !isHttpUrl(service.openapiUrl))
    return "the openapi_url is invalid";
  if (service.endpoints.length > limits.endpoints || service.tags.length > limits.tags) {
    return "too many endpoints or tags";
  }
  if (service.endpoints.some((endpoint) => tooLong(endpoint, limits.endpointLength))) {
    return "an endpoint is too long";
  }
  if (service.tags.some((tag) => tag.length === 0 || tooLong(tag, limits.tagLength))) {
    return "a tag is empty or too long";
  }
  const keys = Object.keys(service.metadata);
  if (keys.length > limits.metadataPairs) return "too much metadata";
  for (const key of keys) {
    const value = service.metadata[key] ?? "";
    if (key.length === 0 || tooLong(key, limits.metadataKeyLength)) {
      return "a metadata key is empty or too long";
    }
    if (tooLong(value, limits.metadataValueLength)) return "a metadata value is too long";
  }
  if (tooLong(service.version, limits.versionLength)) return "the version is too long";
  if (service.ttlSeconds > limits.ttlSeconds) return "the ttl is out of range";
  if (declaredBytes(service) > limits.declaredBytes) return "the entry is too large";
  return undefined;
}

/** Longer than `max` Unicode code points, as the field rules count. */
function tooLong(text: string, max: number): boolean {
  // UTF-16 units are never fewer than code points: count those only when the quick test fails.
  if (text.length <= max) return false;
  let points = 0;
  for (const _ of text) if (++points > max) return true;
  return false;
}

function isHttpUrl(text: string): boolean {
  if (text.length > entryLimits.urlLength) return false;
  // The common case, checked without building a URL (half the cost; a snapshot from a peer checks
  // two per entry): text that starts with the scheme as written here has that scheme once parsed,
  // and an http(s) URL that parses has a host (WHATWG: a special URL without one fails).
  if (text.startsWith("http://") || text.startsWith("https://")) return URL.canParse(text);
  try {
    const url = new URL(text);
    return (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "";
  } catch {
    return false;
  }
}

// What an entry or tombstone holds beyond its declared strings: the object, its times and stamps,
// and the API message built from it. An estimate: the bounds it serves are stated in bytes of it.
const entryOverhead = 512;
const tombstoneOverhead = 128;

/** The bytes a live entry is counted for by the registry's and the change log's bounds. */
export function entryWeight(entry: RegistryEntry): number {
  return declaredBytes(entry) + entry.origin.length + entryOverhead;
}

/** The bytes a tombstone is counted for. */
export function tombstoneWeight(tombstone: Tombstone): number {
  return tombstone.name.length + tombstone.origin.length + tombstoneOverhead;
}

/** The bytes a change is counted for in the change log. */
export function changeWeight(change: RegistryChange): number {
  return change.type === "put" ? entryWeight(change.entry) : tombstoneWeight(change.tombstone);
}
