import { DomainError } from "../errors/domain-error.js";
import { isReplyError, RedisWriteError, wasNotSent } from "./redis-write-fence.js";

/** A store's Redis round trips, with their failures in the domain's words. */
export interface RedisStoreCalls {
  /**
   * Runs one round trip. A "read" (changes nothing, or nothing that matters when repeated) fails
   * with "unavailable" however it failed; a "write" fails with "unavailable" only when it provably
   * was not applied, and with "timeout" when it was sent and may still be applied.
   */
  command<T>(send: () => Promise<T>, effect?: "read" | "write"): Promise<T>;
  /** What a Redis failure means to the caller (see {@link RedisStoreCalls.command}). */
  storeError(error: unknown, effect?: "read" | "write"): DomainError;
  /** The store's "unavailable" error. */
  unavailable(cause: unknown): DomainError;
  /** The store's "internal" error for a record it cannot read. */
  unreadable(cause: unknown): DomainError;
}

// Redis answers these while it cannot serve (loading its data, a busy script, a replica, memory
// full): the write can be retried later, like one refused for a broken connection.
const transientReplies =
  /^(LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|OOM|CLUSTERDOWN|NOREPLICAS)\b/;

/**
 * The error mapping every Redis store shares, with messages naming the store ("the dead-letter
 * store is unavailable"). Messages are written for the caller; Redis' own errors stay in `cause`.
 * A fenced write that got no answer (`RedisWriteError` "unknown") is "timeout" naming the deadline
 * after which it cannot be applied; one never sent is "unavailable".
 */
export function redisStoreCalls(storeName: string): RedisStoreCalls {
  const unavailable = (cause: unknown) =>
    new DomainError("unavailable", `the ${storeName} is unavailable`, { cause });
  // DEADLINE_EXCEEDED rather than UNKNOWN: gRPC documents it as the code a state-changing call
  // may return although it completed.
  const outcomeUnknown = (deadlineMs: number, cause: unknown) =>
    new DomainError(
      "timeout",
      `the ${storeName} did not answer in time: the write may have been applied before ${new Date(deadlineMs).toISOString()} and will not be applied after it`,
      { cause },
    );
  const storeError = (error: unknown, effect: "read" | "write" = "read"): DomainError => {
    if (error instanceof DomainError) return error;
    if (error instanceof RedisWriteError) {
      return error.outcome === "unknown"
        ? outcomeUnknown(error.deadlineMs, error)
        : unavailable(error);
    }
    if (isReplyError(error)) {
      if (transientReplies.test(error.message)) return unavailable(error);
      return new DomainError("internal", `the ${storeName} refused the command`, { cause: error });
    }
    // Everything else ioredis throws is about the connection; only "not writeable" proves a
    // write unsent.
    if (effect === "write" && !wasNotSent(error)) {
      return new DomainError(
        "timeout",
        `the ${storeName} did not answer in time: the write may still be applied`,
        { cause: error },
      );
    }
    return unavailable(error);
  };
  return {
    async command(send, effect = "read") {
      try {
        return await send();
      } catch (error) {
        throw storeError(error, effect);
      }
    },
    storeError,
    unavailable,
    unreadable: (cause) =>
      new DomainError("internal", `the ${storeName} holds a record it cannot read`, { cause }),
  };
}
