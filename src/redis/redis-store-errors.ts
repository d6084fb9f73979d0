import type { Redis } from "ioredis";
import { DomainError } from "../errors/domain-error.js";
import { isReplyError, RedisWriteError, wasNotSent } from "./redis-write-fence.js";

/** How a store over Redis names itself and its records in the errors it throws. */
export interface RedisStoreWords {
  /** E.g. "the registry store". */
  readonly store: string;
  /** What a caller reads to learn a write's outcome, e.g. "the entry". */
  readonly record: string;
}

/** The one mapping of what ioredis throws to the domain's errors, in a store's own words. */
export interface RedisStoreErrors {
  /**
   * Runs one Redis round trip, turning its failure into the domain's words. A "read" changes
   * nothing that matters, so it is "unavailable" however it failed: retrying is safe. A "write"
   * that was sent and not answered is "timeout": it may still be applied.
   */
  command<T>(send: () => Promise<T>, effect?: "read" | "write"): Promise<T>;
  /**
   * A write without a fence (harmless if applied twice or late): refused at once, "unavailable",
   * when the connection is not ready; otherwise as `command(send, "write")`.
   */
  unfencedWrite<T>(redis: Redis, send: () => Promise<T>): Promise<T>;
  /** The DomainError of a failed round trip (see `command`). */
  storeError(error: unknown, effect?: "read" | "write"): DomainError;
  /** "internal": the store holds a record this code cannot read, or replied unexpectedly. */
  unreadable(cause: unknown): DomainError;
}

// Redis answers these while it cannot serve (loading its data, a busy script, a replica, memory
// full): the write can be retried later, like one refused for a broken connection.
const transientReplies =
  /^(LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|OOM|CLUSTERDOWN|NOREPLICAS)\b/;

/**
 * The error mapping of a store over Redis. Messages are written for callers (no host, port or
 * Redis wording); the ioredis error stays as the `cause`, for logs.
 *
 * - A fenced write (`RedisWriteError`) is "timeout" when its outcome is unknown (naming the
 *   deadline after which it cannot be applied), "unavailable" when it was not sent.
 * - A reply error is "unavailable" when Redis is only busy or loading, "internal" otherwise.
 * - Any other failure is about the connection: "unavailable", except for a write that may have
 *   been sent ("timeout": it may still be applied).
 */
export function redisStoreErrors(words: RedisStoreWords): RedisStoreErrors {
  const unavailable = (cause: unknown) =>
    new DomainError("unavailable", `${words.store} is unavailable`, { cause });

  // DEADLINE_EXCEEDED rather than UNKNOWN, also when the connection was lost with the write in
  // flight: the outcome is decided by the deadline either way, and gRPC documents this code as
  // the one a state-changing call may return although it completed. UNKNOWN would read as a
  // fault (500).
  const outcomeUnknown = (deadlineMs: number, cause: unknown) => {
    const deadline = new Date(deadlineMs).toISOString();
    return new DomainError(
      "timeout",
      `${words.store} did not answer in time: the write may have been applied before ${deadline} and will not be applied after it; read ${words.record} to learn the outcome`,
      { cause },
    );
  };

  const storeError = (error: unknown, effect: "read" | "write" = "read"): DomainError => {
    if (error instanceof DomainError) return error;
    if (error instanceof RedisWriteError) {
      return error.outcome === "unknown"
        ? outcomeUnknown(error.deadlineMs, error)
        : unavailable(error);
    }
    if (isReplyError(error)) {
      if (transientReplies.test(error.message)) return unavailable(error);
      return new DomainError("internal", `${words.store} refused the command`, { cause: error });
    }
    // Everything else ioredis throws is about the connection: closed, not writeable (no offline
    // queue), retries exhausted, aborted, timed out. Only "not writeable" proves a write unsent.
    if (effect === "write" && !wasNotSent(error)) {
      return new DomainError(
        "timeout",
        `${words.store} did not answer in time: the write may still be applied`,
        { cause: error },
      );
    }
    return unavailable(error);
  };

  const command = async <T>(
    send: () => Promise<T>,
    effect: "read" | "write" = "read",
  ): Promise<T> => {
    try {
      return await send();
    } catch (error) {
      throw storeError(error, effect);
    }
  };

  return {
    command,
    storeError,
    unfencedWrite(redis, send) {
      if (redis.status !== "ready") {
        return Promise.reject(storeError(new Error(`the connection is ${redis.status}`)));
      }
      return command(send, "write");
    },
    unreadable: (cause) =>
      new DomainError("internal", `${words.store} holds a record it cannot read`, { cause }),
  };
}
