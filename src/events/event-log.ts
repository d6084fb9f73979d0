import type { JsonObject } from "@bufbuild/protobuf";
import { BoundedLog } from "../changes/bounded-log.js";
import type { Clock } from "../clock.js";
import type { IdSource } from "../ids.js";

/** One event, as every capability emits them and operators read them. */
export interface OrchestratorEvent {
  readonly id: string;
  /** For example "registry.service.registered", "findings.created". */
  readonly type: string;
  /** What the event is about: a service name, a run id. */
  readonly subject: string;
  readonly correlationId: string;
  readonly traceId: string;
  /** The node that emitted it. */
  readonly source: string;
  /** Unix milliseconds. */
  readonly timestamp: number;
  readonly payload: JsonObject;
}

/** What an emitter supplies; the log adds the id, source and time. */
export type NewEvent = Pick<OrchestratorEvent, "type" | "subject" | "payload"> &
  Partial<Pick<OrchestratorEvent, "correlationId" | "traceId">>;

/**
 * The one place events go. Capabilities append; subscribers (the Redis publisher, event watchers,
 * later the durable history) are told synchronously, in order. A subscriber that throws is
 * isolated: it never breaks the emitter nor the other subscribers.
 */
export interface EventLog {
  append(event: NewEvent): OrchestratorEvent;
  subscribe(listener: (event: OrchestratorEvent) => void): () => void;
  /** The latest events this process appended, oldest first (at most `limit`). */
  recent(limit?: number): OrchestratorEvent[];
}

export interface MemoryEventLogOptions {
  /** Events kept for `recent`. Default 10,000. */
  capacity?: number;
  /** Bytes of events (see {@link eventWeight}) kept for `recent`. Default 8 MiB. */
  maxBytes?: number;
  /** Told of a subscriber that threw. Default: ignore. */
  onSubscriberError?: (error: unknown) => void;
}

/**
 * The in-memory event log: the latest events, bounded in count and in bytes (the oldest go
 * first), and synchronous subscribers.
 * @throws RangeError when a bound is not a positive integer.
 */
export function createMemoryEventLog(
  deps: { clock: Clock; ids: IdSource; source: string },
  options: MemoryEventLogOptions = {},
): EventLog {
  const capacity = options.capacity ?? 10_000;
  const ring = new BoundedLog<OrchestratorEvent>(
    { maxItems: capacity, maxBytes: options.maxBytes ?? 8 * 1024 * 1024 },
    eventWeight,
  );
  const listeners = new Set<(event: OrchestratorEvent) => void>();
  return {
    append(input) {
      const event: OrchestratorEvent = Object.freeze({
        id: deps.ids.uuid(),
        type: input.type,
        subject: input.subject,
        correlationId: input.correlationId ?? "",
        traceId: input.traceId ?? "",
        source: deps.source,
        timestamp: deps.clock.now(),
        payload: input.payload,
      });
      ring.push(event);
      for (const listener of [...listeners]) {
        try {
          listener(event);
        } catch (error) {
          options.onSubscriberError?.(error);
        }
      }
      return event;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    recent(limit = capacity) {
      return ring.slice(Math.max(0, ring.length - limit));
    },
  };
}

// The event object, its id, time and fields beside the payload's JSON.
const eventOverhead = 256;

/**
 * The bytes an event is counted for by the log's bound: its strings and its payload as JSON.
 * Payloads are built by the orchestrator's own modules from bounded inputs, so serialising one
 * to weigh it is cheap.
 */
export function eventWeight(event: OrchestratorEvent): number {
  return (
    eventOverhead +
    event.type.length +
    event.subject.length +
    event.correlationId.length +
    event.traceId.length +
    event.source.length +
    JSON.stringify(event.payload).length
  );
}

/** The event as JSON for other services: the proto's field names (snake_case), ISO time. */
export function eventJson(event: OrchestratorEvent): JsonObject {
  return {
    id: event.id,
    type: event.type,
    subject: event.subject,
    correlation_id: event.correlationId,
    trace_id: event.traceId,
    source: event.source,
    timestamp: new Date(event.timestamp).toISOString(),
    payload: event.payload,
  };
}
