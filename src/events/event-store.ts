import type { EventDraft, EventFilter, OrchestratorEvent } from "./model.js";

/**
 * Identifies an appended batch, so that appending it again after an unknown outcome (a timeout,
 * a connection lost with the batch in flight) stores it once: a producer's sequences only grow,
 * and a batch whose `sequence` is not above the producer's last stored one is skipped.
 */
export interface AppendKey {
  /** One per producing process life (its incarnation id). */
  readonly producer: string;
  /** The sequence number of the batch's last event, in the producer's own count. */
  readonly sequence: number;
}

/** A page of a read. */
export interface EventQuery extends EventFilter {
  /** Only events after this id (exclusive); absent or "": from the oldest retained. */
  readonly after?: string;
  /** Events in the page at most (1 or more). */
  readonly limit: number;
}

/** What a read returns. */
export interface EventPage {
  /** Matching events, oldest first. */
  readonly events: readonly OrchestratorEvent[];
  /**
   * The id to pass as `after` for the next page: the last event examined, which may be past the
   * last one returned when the read stopped at its scan bound; "" when there are no more.
   */
  readonly next: string;
}

/** What `clear` removes: events that match every given filter, or all of them. */
export type EventClearSelection =
  | { readonly all: true }
  | {
      readonly all?: false;
      readonly type?: string;
      readonly correlationId?: string;
      /** Only events stored before this time (Unix ms, the id's time). */
      readonly before?: number;
    };

/** How long events are kept: whichever bound is reached first. */
export interface EventRetention {
  /** Events kept at most (Redis: at least this many, trimmed by whole stream nodes). */
  readonly maxEvents: number;
  /** Events older than this (by their id's time) are removed, in ms; 0: no age limit. */
  readonly maxAgeMs: number;
}

/**
 * Defaults of both stores: 100,000 events kept for 7 days; a read examines at most 10,000 events.
 */
export const eventStoreDefaults = Object.freeze({
  retention: Object.freeze({ maxEvents: 100_000, maxAgeMs: 7 * 24 * 3_600_000 }),
  maxScan: 10_000,
});

/**
 * Where events are kept: ordered by id ("<unix ms>-<seq>", the same shape in every
 * implementation, so that a cursor means the same thing everywhere), retained by count and by age,
 * read a page at a time with filters, and followed as they are appended.
 *
 * Implementations: the in-memory store (the default) and the Redis Streams store. Both pass
 * tests/contracts/event-store.contract.ts.
 *
 * Methods of a store on a remote backend throw DomainError "unavailable" (not reachable: nothing
 * happened), "timeout" (sent and not answered: a write may still apply) and "internal" (it holds
 * a record this code cannot read).
 */
export interface EventStore {
  /** Gets ready (connections up). */
  open(): Promise<void>;
  /** Stops following; connections are the caller's to close. */
  close(): Promise<void>;

  /**
   * Stores `events` in order, each with the next id (see `nextEventId`), and enforces the count
   * retention. With `key`, a batch already stored under it is skipped.
   * @returns the events stored now, with their ids (empty when the batch was skipped).
   */
  append(events: readonly EventDraft[], key?: AppendKey): Promise<readonly OrchestratorEvent[]>;

  /**
   * The matching events after `query.after`, oldest first, at most `query.limit`, examining at
   * most the store's scan bound of events (then `next` says where to go on). Events older than
   * the age retention are never returned, even before `trim` removes them.
   * @throws DomainError "invalid" when `after` is not an event id.
   */
  read(query: EventQuery): Promise<EventPage>;

  /** The stored events with these ids (those that exist), in id order. */
  readIds(ids: readonly string[]): Promise<readonly OrchestratorEvent[]>;

  /** The id of the last event ever stored ("0-0" before any), cleared or not. */
  lastId(): Promise<string>;

  /**
   * Removes the selected events.
   * @returns how many were removed.
   * @throws DomainError "invalid" when the selection has no filter and is not `all`.
   */
  clear(selection: EventClearSelection): Promise<number>;

  /**
   * Removes the events older than the age retention now (appends enforce the count retention).
   * @returns how many were removed.
   */
  trim(): Promise<number>;

  /**
   * The events after `afterId`, in id order, a batch at a time: those stored already first, then
   * each as it is appended (by any process sharing the store), until `signal` aborts. Never
   * throws for an unreachable backend: it waits and goes on from where it was.
   */
  follow(afterId: string, signal: AbortSignal): AsyncIterable<readonly OrchestratorEvent[]>;
}
