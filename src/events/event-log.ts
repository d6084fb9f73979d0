import type { JsonObject } from "@bufbuild/protobuf";
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
  /** Told of a subscriber that threw. Default: ignore. */
  onSubscriberError?: (error: unknown) => void;
}

/** The in-memory event log: a bounded ring of recent events and synchronous subscribers. */
export function createMemoryEventLog(
  deps: { clock: Clock; ids: IdSource; source: string },
  options: MemoryEventLogOptions = {},
): EventLog {
  const capacity = options.capacity ?? 10_000;
  const ring: OrchestratorEvent[] = [];
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
      // Trimmed in batches: dropping one event per append would shift the whole array each time.
      if (ring.length >= 2 * capacity) ring.splice(0, ring.length - capacity);
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
      return ring.slice(Math.max(0, ring.length - Math.min(limit, capacity)));
    },
  };
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
