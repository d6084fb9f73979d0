import { randomUUID } from "node:crypto";

/** Where identifiers come from, so that tests can make them predictable. */
export interface IdSource {
  /** A random UUID (v4), for correlation ids, run ids and event ids. */
  uuid(): string;
  /** 32 lowercase hex characters, never all zero: a W3C trace id. */
  traceId(): string;
  /** 16 lowercase hex characters, never all zero: a W3C span id. */
  spanId(): string;
}

/**
 * Random ids from `crypto.randomUUID`, which draws from a cached entropy pool and so costs far less
 * per call than `randomBytes` on the request path. A v4 UUID keeps 122 random bits: plenty for a
 * trace id, and its version nibble makes it never all zero.
 */
export const randomIds: IdSource = Object.freeze({
  uuid: () => randomUUID(),
  traceId: () => hex32(randomUUID()),
  spanId: () => hex32(randomUUID()).slice(16),
});

function hex32(uuid: string): string {
  return (
    uuid.slice(0, 8) + uuid.slice(9, 13) + uuid.slice(14, 18) + uuid.slice(19, 23) + uuid.slice(24)
  );
}
