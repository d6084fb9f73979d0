import { DomainError } from "../errors/domain-error.js";
import { isReplyError, RedisWriteError, wasNotSent } from "./redis-write-fence.js";

/** How a store on Redis names itself in its errors. */
export interface RedisStoreNames {
  /** "the registry store", "the event store". */
  readonly store: string;
  /**
   * What a caller does to learn the outcome of a fenced write that went unanswered, e.g. "read
   * the entry to learn the outcome". Default: nothing is said.
   */
  readonly learnOutcome?: string;
}

// Redis answers these while it cannot serve (loading its data, a busy script, a replica, memory
// full): the command can be retried later, like one refused for a broken connection.
const transientReplies =
  /^(LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|OOM|CLUSTERDOWN|NOREPLICAS)\b/;

/**
 * Turns what a Redis round trip threw into the domain's words, honestly about the outcome:
 * - "unavailable" when nothing happened: a read failed (safe to retry), a write was not sent (no
 *   connection) or ran after its fence's deadline, or Redis refused it for a passing reason;
 * - "timeout" when a write was sent and not answered: it may still apply (a fenced write: only
 *   before the deadline its message names);
 * - "internal" when Redis refused the command for good (a script error, a wrong type).
 */
export function redisStoreError(
  error: unknown,
  names: RedisStoreNames,
  effect: "read" | "write" = "read",
): DomainError {
  if (error instanceof DomainError) return error;
  if (error instanceof RedisWriteError) {
    return error.outcome === "unknown"
      ? outcomeUnknown(error.deadlineMs, names, error)
      : unavailable(names, error);
  }
  if (isReplyError(error)) {
    if (transientReplies.test(error.message)) return unavailable(names, error);
    return new DomainError("internal", `${names.store} refused the command`, { cause: error });
  }
  // Everything else ioredis throws is about the connection: closed, not writeable (no offline
  // queue), retries exhausted, aborted, timed out. Only "not writeable" proves a write unsent.
  if (effect === "write" && !wasNotSent(error)) {
    return new DomainError(
      "timeout",
      `${names.store} did not answer in time: the write may still be applied`,
      { cause: error },
    );
  }
  return unavailable(names, error);
}

/** Runs one Redis round trip, turning its failure into the domain's words (see above). */
export async function redisCommand<T>(
  send: () => Promise<T>,
  names: RedisStoreNames,
  effect: "read" | "write" = "read",
): Promise<T> {
  try {
    return await send();
  } catch (error) {
    throw redisStoreError(error, names, effect);
  }
}

function unavailable(names: RedisStoreNames, cause: unknown): DomainError {
  return new DomainError("unavailable", `${names.store} is unavailable`, { cause });
}

// DEADLINE_EXCEEDED rather than UNKNOWN, also when the connection was lost with the write in
// flight: the outcome is decided by the deadline either way, and gRPC documents this code as the
// one a state-changing call may return although it completed. UNKNOWN would read as a fault (500).
function outcomeUnknown(deadlineMs: number, names: RedisStoreNames, cause: unknown): DomainError {
  const deadline = new Date(deadlineMs).toISOString();
  const hint = names.learnOutcome ? `; ${names.learnOutcome}` : "";
  return new DomainError(
    "timeout",
    `${names.store} did not answer in time: the write may have been applied before ${deadline} and will not be applied after it${hint}`,
    { cause },
  );
}
