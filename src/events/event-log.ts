import type { JsonObject } from "@bufbuild/protobuf";
import type { Clock } from "../clock.js";
import { type EventDraft, jsonSize, type NewEvent, type OrchestratorEvent } from "./model.js";

export type { NewEvent, OrchestratorEvent } from "./model.js";

/** Told of every stored event (and of replayed deliveries, which carry `replayOf`). */
export type EventListener = (event: OrchestratorEvent) => void;

/**
 * The one place events go, as capabilities see it. `append` is synchronous and never throws:
 * the event is on its way to the store (see `EventOutbox`), and its id comes from there.
 * Subscribers are fed from the store: every event stored by any process sharing it, once, in id
 * order, and replays.
 */
export interface EventLog {
  append(event: NewEvent): void;
  /**
   * The event as a store takes it (source, time, bounded payload), without queueing it: for a
   * store that records it atomically with the change it reports (see `RegistryStore.put`).
   */
  draft(event: NewEvent): EventDraft;
  /** Returns the function that unsubscribes. */
  subscribe(listener: EventListener): () => void;
}

/**
 * The subscribers of a process. A subscriber that throws is isolated: it never breaks the
 * delivery to the others, nor whoever delivers.
 */
export class EventSubscribers {
  private readonly listeners = new Set<EventListener>();

  constructor(private readonly onError: (error: unknown) => void = () => {}) {}

  subscribe(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  deliver(event: OrchestratorEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (error) {
        this.onError(error);
      }
    }
  }
}

/** What an emitted event becomes before it is queued. */
export interface EventEmission {
  readonly clock: Clock;
  /** The node id, every event's source. */
  readonly source: string;
  /** Bytes a payload may take as JSON; a larger one is replaced (see {@link boundPayload}). */
  readonly maxPayloadBytes: number;
  /** Told of each payload replaced, with the event's type and the payload's size. */
  readonly onTruncated?: (type: string, bytes: number) => void;
}

/** Makes an emitted event a draft: its source, its time, its payload within bounds. */
export function draftOf(event: NewEvent, emission: EventEmission): EventDraft {
  return {
    type: event.type,
    subject: event.subject,
    correlationId: event.correlationId ?? "",
    traceId: event.traceId ?? "",
    source: emission.source,
    timestamp: emission.clock.now(),
    payload: boundPayload(event, emission),
  };
}

/**
 * The payload, or, when its JSON takes more than `maxPayloadBytes`, `{truncated: true,
 * payload_bytes: <its size>}` in its place: the event itself (type, subject, ids, time) is kept,
 * since emitting never fails, and the loss is reported to `onTruncated`.
 */
export function boundPayload(event: NewEvent, emission: EventEmission): JsonObject {
  // A UTF-16 unit is at most 3 bytes of UTF-8, and the estimate never less than the JSON's
  // length: most payloads are known to be within the limit without serialising them.
  if (jsonSize(event.payload, 6) * 3 <= emission.maxPayloadBytes) return event.payload;
  const bytes = Buffer.byteLength(JSON.stringify(event.payload));
  if (bytes <= emission.maxPayloadBytes) return event.payload;
  emission.onTruncated?.(event.type, bytes);
  return { truncated: true, payload_bytes: bytes };
}

/** The log capabilities emit into: drafts go to `queue`; subscribers are `subscribers`. */
export function createEventLog(
  emission: EventEmission,
  queue: { push(draft: EventDraft): void },
  subscribers: EventSubscribers,
): EventLog {
  return {
    append: (event) => queue.push(draftOf(event, emission)),
    draft: (event) => draftOf(event, emission),
    subscribe: (listener) => subscribers.subscribe(listener),
  };
}
