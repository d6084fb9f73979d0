import { randomFillSync, randomUUID } from "node:crypto";

/** Where identifiers come from, so that tests can make them predictable. */
export interface IdSource {
  /** A random UUID (v4), for correlation ids, run ids and event ids. */
  uuid(): string;
  /** 32 lowercase hex characters, never all zero: a W3C trace id. */
  traceId(): string;
  /** 16 lowercase hex characters, never all zero: a W3C span id. */
  spanId(): string;
}

// Random bytes drawn 4 KiB at a time: a span id costs a slice of a buffer, not a system call.
const pool = Buffer.allocUnsafe(4096);
let offset = pool.length;

function randomHex(bytes: number): string {
  for (;;) {
    if (offset + bytes > pool.length) {
      randomFillSync(pool);
      offset = 0;
    }
    const start = offset;
    offset += bytes;
    // W3C forbids all-zero ids; the odds are 2^-64 at worst, but the rule is the rule.
    for (let i = start; i < offset; i++) {
      if (pool[i] !== 0) return pool.toString("hex", start, offset);
    }
  }
}

/**
 * The string, flattened in place. Node builds a UUID by concatenating 36 pieces, and V8 keeps
 * such a string as a tree of about 475 bytes until something reads a character of it: an id
 * that is kept (in a span, an event, a run) would cost nine times its size.
 */
function flat(text: string): string {
  text.charCodeAt(0);
  return text;
}

/** Cryptographically random ids. */
export const randomIds: IdSource = Object.freeze({
  uuid: () => flat(randomUUID()),
  traceId: () => randomHex(16),
  spanId: () => randomHex(8),
});
