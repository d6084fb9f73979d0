import type { JsonObject } from "@bufbuild/protobuf";
import { DomainError } from "../errors/domain-error.js";

/** One event, as every capability emits them and operators read them. */
export interface OrchestratorEvent {
  /**
   * "<unix ms>-<sequence>", as Redis Streams numbers entries, in both stores: ordered, a later
   * stored event has a greater id. The ms part is the event's time in the store (see
   * {@link nextEventId}).
   */
  readonly id: string;
  /** For example "registry.service.registered", "findings.created". */
  readonly type: string;
  /** What the event is about: a service name, a run id. */
  readonly subject: string;
  readonly correlationId: string;
  readonly traceId: string;
  /** The node that emitted it. */
  readonly source: string;
  /** When it was emitted, Unix milliseconds. */
  readonly timestamp: number;
  readonly payload: JsonObject;
  /** Set on a replayed delivery (never stored): the id of the stored event it repeats. */
  readonly replayOf?: string;
}

/** What an emitter supplies; the log adds the source and the time, the store the id. */
export type NewEvent = Pick<OrchestratorEvent, "type" | "subject" | "payload"> &
  Partial<Pick<OrchestratorEvent, "correlationId" | "traceId">>;

/** An event ready for the store: everything but its id. */
export type EventDraft = Omit<OrchestratorEvent, "id" | "replayOf">;

/** Which stored events a read, a replay or a watch selects; every given filter must match. */
export interface EventFilter {
  /** Any of these types; empty or absent: every type. */
  readonly types?: readonly string[];
  readonly subject?: string;
  readonly correlationId?: string;
  /** Only events stored at or after this time (Unix ms, the id's time). */
  readonly since?: number;
  /** Only events stored before this time (Unix ms, the id's time). */
  readonly until?: number;
}

/** A parsed event id. */
export interface EventId {
  readonly ms: number;
  readonly seq: number;
}

/** The id before every event: a cursor that starts at the beginning. */
export const firstEventId = "0-0";

/**
 * Parses "<ms>-<seq>".
 * @throws DomainError "invalid" naming `field` when it is not an id this store can issue (each
 *   part a decimal integer no larger than 2^53 - 1).
 */
export function parseEventId(id: string, field = "id"): EventId {
  const match = /^(\d{1,20})-(\d{1,20})$/.exec(id);
  const ms = Number(match?.[1]);
  const seq = Number(match?.[2]);
  if (!match || !Number.isSafeInteger(ms) || !Number.isSafeInteger(seq)) {
    throw new DomainError("invalid", `${field}: ${quote(id)} is not an event id`);
  }
  return { ms, seq };
}

/** The canonical spelling of an id (no leading zeros), as the stores write it. */
export function formatEventId(id: EventId): string {
  return `${id.ms}-${id.seq}`;
}

/** Negative when `a` comes before `b`, 0 when equal, positive after. */
export function compareEventIds(a: EventId, b: EventId): number {
  return a.ms - b.ms || a.seq - b.seq;
}

/**
 * The id of the next event stored after `last`: its ms part is the event's own time, or the last
 * id's when that is later (another node's clock ran ahead, or the event waited in the outbox), so
 * that ids never go back and an id's time is never before the event's timestamp.
 */
export function nextEventId(last: EventId, timestamp: number): EventId {
  const ms = Math.max(Math.floor(timestamp), last.ms);
  return ms === last.ms ? { ms, seq: last.seq + 1 } : { ms, seq: 0 };
}

/** Whether `event` (with its parsed id) passes every filter given. */
export function matchesFilter(
  filter: EventFilter,
  event: OrchestratorEvent,
  idMs: number,
): boolean {
  if (filter.types !== undefined && filter.types.length > 0 && !filter.types.includes(event.type)) {
    return false;
  }
  if (filter.subject && event.subject !== filter.subject) return false;
  if (filter.correlationId && event.correlationId !== filter.correlationId) return false;
  if (filter.since !== undefined && idMs < filter.since) return false;
  if (filter.until !== undefined && idMs >= filter.until) return false;
  return true;
}

// The event object, its id, time and fields beside the payload's JSON.
const eventOverhead = 256;

/**
 * The size of `value` as JSON, estimated by walking it rather than serialising it (an event is
 * weighed by the outbox and by the memory store, and serialising its payload each time was most
 * of the cost of an append): strings count their length times `perChar` plus quotes, numbers 24
 * characters at most. With `perChar` 1 it is about the JSON's length; with 6 (the longest escape,
 * \u0000) it is never less than it.
 */
export function jsonSize(value: unknown, perChar = 1): number {
  switch (typeof value) {
    case "string":
      return value.length * perChar + 2;
    case "number":
      return perChar === 1 ? 8 : 24;
    case "boolean":
      return 5;
    case "object": {
      if (value === null) return 4;
      let size = 2;
      if (Array.isArray(value)) {
        for (const item of value) size += jsonSize(item, perChar) + 1;
        return size;
      }
      for (const key in value) {
        size +=
          key.length * perChar + 4 + jsonSize((value as Record<string, unknown>)[key], perChar);
      }
      return size;
    }
    default:
      return 0;
  }
}

/**
 * The bytes an event is counted for by the bounds on events held: its strings and about its
 * payload's JSON size ({@link jsonSize}), plus 256.
 */
export function eventWeight(event: EventDraft): number {
  return (
    eventOverhead +
    event.type.length +
    event.subject.length +
    event.correlationId.length +
    event.traceId.length +
    event.source.length +
    jsonSize(event.payload)
  );
}

/**
 * The event as JSON for other services and for the Redis stream: the proto's field names
 * (snake_case), ISO time; `replay_of` only on a replayed delivery.
 */
export function eventJson(event: OrchestratorEvent): JsonObject {
  return {
    id: event.id,
    ...eventBodyJson(event),
    ...(event.replayOf === undefined ? {} : { replay_of: event.replayOf }),
  };
}

/** {@link eventJson} without the id, which the store assigns. */
export function eventBodyJson(event: EventDraft): JsonObject {
  return {
    type: event.type,
    subject: event.subject,
    correlation_id: event.correlationId,
    trace_id: event.traceId,
    source: event.source,
    timestamp: new Date(event.timestamp).toISOString(),
    payload: event.payload,
  };
}

/**
 * Reads back what {@link eventBodyJson} wrote.
 * @throws DomainError "internal" when `body` is not such a record.
 */
export function eventFromBody(id: string, body: string): OrchestratorEvent {
  let stored: Record<string, unknown>;
  try {
    stored = JSON.parse(body) as Record<string, unknown>;
  } catch (error) {
    throw unreadable(error);
  }
  const timestamp = Date.parse(String(stored?.timestamp));
  const payload = stored?.payload;
  if (
    typeof stored?.type !== "string" ||
    !Number.isFinite(timestamp) ||
    typeof payload !== "object" ||
    payload === null ||
    Array.isArray(payload)
  ) {
    throw unreadable(new Error("not an event"));
  }
  return {
    id,
    type: stored.type,
    subject: String(stored.subject ?? ""),
    correlationId: String(stored.correlation_id ?? ""),
    traceId: String(stored.trace_id ?? ""),
    source: String(stored.source ?? ""),
    timestamp,
    payload: payload as JsonObject,
  };
}

function unreadable(cause: unknown): DomainError {
  return new DomainError("internal", "the event store holds a record it cannot read", { cause });
}

function quote(text: string): string {
  return JSON.stringify(text.length > 64 ? `${text.slice(0, 63)}…` : text);
}
