import type { JsonObject } from "@bufbuild/protobuf";
import { DomainError } from "../errors/domain-error.js";

/**
 * What a capability gives the dead-letter queue when something fails that should be retried: an
 * event it could not deliver, a workflow step whose call failed.
 */
export interface DeadLetterInput {
  /** What retrying means is chosen by this type: "event.delivery", "workflow.step", ... */
  readonly eventType: string;
  /** What the handler of the type needs to retry it (bounded by the queue's size limits). */
  readonly payload: JsonObject;
  /** Why it failed, safe to show an operator (no secrets, no stack). */
  readonly failureReason: string;
  /** The stored event it concerns, if any. */
  readonly eventId?: string;
  /** The service whose call failed, if any. */
  readonly serviceName?: string;
  readonly correlationId?: string;
  /** Automatic attempts before the entry is DEAD; the queue's default when absent. */
  readonly maxAttempts?: number;
}

/**
 * Retries one entry. Resolving means the retry succeeded (the entry is RESOLVED); throwing means
 * it failed again (the entry gets its next retry, or is DEAD after its last attempt), with the
 * error's message, bounded, as the new failure reason. A retry that has not settled when its
 * `signal` aborts (its time is up, or the node is stopping) counts as failed; the handler should
 * stop its work then (pass the signal to its outbound calls).
 */
export type DeadLetterHandler = (entry: {
  readonly dlqId: string;
  readonly eventType: string;
  readonly payload: JsonObject;
  readonly eventId: string;
  readonly attempts: number;
  /** Aborted when the retry's time is up (`DLQ_RETRY_TIMEOUT_MS`) or the node stops. */
  readonly signal: AbortSignal;
}) => Promise<void>;

/**
 * The dead-letter queue as other capabilities use it: they record failures in it, and say what
 * retrying an entry of their types means. Its own capability (src/capabilities/dlq.ts) runs the
 * automatic retries and serves the operators' routes.
 */
export interface DeadLetters {
  /**
   * Records a failure, PENDING_RETRY with its first retry scheduled.
   * @returns the new entry's id.
   * @throws DomainError "invalid" (a payload over the size limit), "unavailable" / "timeout"
   *   (the store), "resource_exhausted" (the queue is full).
   */
  add(input: DeadLetterInput): Promise<string>;
  /**
   * Says what retrying entries of `eventType` means. Entries of a type without a handler stay
   * where they are, and a retry of one says so.
   * @throws Error when the type already has a handler.
   */
  handle(eventType: string, handler: DeadLetterHandler): void;
}

/**
 * Dead letters for a capability built before the queue (the events capability: the queue emits
 * its own events into the event log, so the log comes first). Handlers registered before `bind`
 * are handed to the queue when it is bound; an `add` before then fails as "unavailable".
 */
export function createDeadLettersLink(): {
  readonly deadLetters: DeadLetters;
  bind(queue: DeadLetters): void;
} {
  let queue: DeadLetters | undefined;
  const early = new Map<string, DeadLetterHandler>();
  return {
    deadLetters: {
      add: (input) =>
        queue
          ? queue.add(input)
          : Promise.reject(new DomainError("unavailable", "the dead-letter queue is not ready")),
      handle(eventType, handler) {
        if (queue) queue.handle(eventType, handler);
        else if (early.has(eventType)) throw new Error(`${eventType} already has a handler`);
        else early.set(eventType, handler);
      },
    },
    bind(bound) {
      if (queue) throw new Error("the dead-letter queue is bound already");
      queue = bound;
      for (const [eventType, handler] of early) bound.handle(eventType, handler);
      early.clear();
    },
  };
}
