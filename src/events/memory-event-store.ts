import { BoundedLog } from "../changes/bounded-log.js";
import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import {
  type EventClearSelection,
  type EventPage,
  type EventQuery,
  type EventRetention,
  type EventStore,
  eventStoreDefaults,
} from "./event-store.js";
import {
  compareEventIds,
  type EventId,
  eventWeight,
  firstEventId,
  formatEventId,
  matchesFilter,
  nextEventId,
  type OrchestratorEvent,
  parseEventId,
} from "./model.js";

/** How the memory store keeps events. */
export interface MemoryEventStoreOptions {
  /** Count and age retention. Default 100,000 events, 7 days. */
  readonly retention?: Partial<EventRetention>;
  /** Bytes of events kept at most (see `eventWeight`); the oldest go first. Default 32 MiB. */
  readonly maxBytes?: number;
  /** Events one read examines at most. Default 10,000. */
  readonly maxScan?: number;
}

/** The memory store keeps at most 32 MiB of events (as `eventWeight` counts them). */
export const memoryEventStoreDefaults = Object.freeze({ maxBytes: 32 * 1024 * 1024 });

/** An event with its parsed id, so that reads compare numbers rather than parse strings. */
interface Held {
  readonly event: OrchestratorEvent;
  readonly id: EventId;
}

/** Events handed to a follower at once. */
const followBatch = 1_000;

/**
 * The embedded default: events live in this process, bounded in count, bytes and age (exactly),
 * and are gone when it stops. Ids are generated as Redis Streams would: the event's time (or the
 * last id's, if later) and a sequence within that millisecond; they never go back, not even after
 * a clear.
 * @throws RangeError when a bound is not a positive integer.
 */
export function createMemoryEventStore(
  deps: { readonly clock: Clock },
  options: MemoryEventStoreOptions = {},
): EventStore {
  const retention = { ...eventStoreDefaults.retention, ...options.retention };
  const maxScan = options.maxScan ?? eventStoreDefaults.maxScan;
  const log = new BoundedLog<Held>(
    {
      maxItems: retention.maxEvents,
      maxBytes: options.maxBytes ?? memoryEventStoreDefaults.maxBytes,
    },
    (held) => eventWeight(held.event),
  );
  let last: EventId = { ms: 0, seq: 0 };
  // Each producer's last stored batch sequence (kept for the life of the store: a producer is a
  // process life, and a memory store does not outlive its process).
  const producers = new Map<string, number>();
  const waiting = new Set<() => void>();

  const ageCutoff = (): number =>
    retention.maxAgeMs > 0 ? deps.clock.now() - retention.maxAgeMs : Number.NEGATIVE_INFINITY;

  /** The first position whose event satisfies `after` (monotone over positions), or the length. */
  const firstWhere = (after: (held: Held) => boolean): number => {
    let low = 0;
    let high = log.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (after(log.at(middle) as Held)) high = middle;
      else low = middle + 1;
    }
    return low;
  };

  /** The first position after `id` and at or after `since`. */
  const startOf = (id: EventId | undefined, since: number): number =>
    Math.max(
      id === undefined ? 0 : firstWhere((held) => compareEventIds(held.id, id) > 0),
      firstWhere((held) => held.id.ms >= since),
    );

  const wake = () => {
    for (const resolve of [...waiting]) resolve();
  };

  const appended = (signal: AbortSignal): Promise<void> =>
    new Promise((resolve) => {
      const done = () => {
        waiting.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      waiting.add(done);
      signal.addEventListener("abort", done);
    });

  const rebuild = (kept: readonly Held[]) => {
    log.clear();
    for (const held of kept) log.push(held);
  };

  return {
    open: async () => {},
    close: async () => wake(),

    async append(drafts, key) {
      if (key !== undefined) {
        if ((producers.get(key.producer) ?? -1) >= key.sequence) return [];
        producers.set(key.producer, key.sequence);
      }
      const stored: OrchestratorEvent[] = [];
      for (const draft of drafts) {
        last = nextEventId(last, draft.timestamp);
        // Field by field: spreading the draft is a large part of an append's cost.
        const event: OrchestratorEvent = {
          id: formatEventId(last),
          type: draft.type,
          subject: draft.subject,
          correlationId: draft.correlationId,
          traceId: draft.traceId,
          source: draft.source,
          timestamp: draft.timestamp,
          payload: draft.payload,
        };
        log.push({ event, id: last });
        stored.push(event);
      }
      if (stored.length > 0) wake();
      return stored;
    },

    async read(query: EventQuery): Promise<EventPage> {
      const after = query.after ? parseEventId(query.after, "cursor") : undefined;
      const since = Math.max(query.since ?? Number.NEGATIVE_INFINITY, ageCutoff());
      const until = query.until ?? Number.POSITIVE_INFINITY;
      const events: OrchestratorEvent[] = [];
      let index = startOf(after, since);
      let scanned = 0;
      let lastSeen: Held | undefined;
      for (; index < log.length; index++) {
        if (events.length >= query.limit || scanned >= maxScan) break;
        const held = log.at(index) as Held;
        if (held.id.ms >= until) return { events, next: "" };
        scanned++;
        lastSeen = held;
        if (matchesFilter(query, held.event, held.id.ms)) events.push(held.event);
      }
      const more = index < log.length && (log.at(index) as Held).id.ms < until;
      return { events, next: more && lastSeen ? lastSeen.event.id : "" };
    },

    async readIds(ids) {
      const cutoff = ageCutoff();
      const found: Held[] = [];
      for (const text of new Set(ids)) {
        const id = parseEventId(text, "event_ids");
        const held = log.at(firstWhere((h) => compareEventIds(h.id, id) >= 0));
        if (held && compareEventIds(held.id, id) === 0 && held.id.ms >= cutoff) found.push(held);
      }
      return found.sort((a, b) => compareEventIds(a.id, b.id)).map((held) => held.event);
    },

    lastId: async () => (last.ms === 0 && last.seq === 0 ? firstEventId : formatEventId(last)),

    async clear(selection: EventClearSelection) {
      if (selection.all) {
        const count = log.length;
        log.clear();
        return count;
      }
      const { type, correlationId, before } = selection;
      if (!type && !correlationId && before === undefined) throw selectionRequired();
      const kept: Held[] = [];
      let removed = 0;
      for (const held of log.slice(0)) {
        const selected =
          (!type || held.event.type === type) &&
          (!correlationId || held.event.correlationId === correlationId) &&
          (before === undefined || held.id.ms < before);
        if (selected) removed++;
        else kept.push(held);
      }
      if (removed > 0) rebuild(kept);
      return removed;
    },

    async trim() {
      const cutoff = ageCutoff();
      return log.dropOldest(firstWhere((held) => held.id.ms >= cutoff)).length;
    },

    async *follow(afterId, signal) {
      let after = parseEventId(afterId || firstEventId, "after_id");
      while (!signal.aborted) {
        const start = startOf(after, Number.NEGATIVE_INFINITY);
        const batch = log.slice(start, start + followBatch);
        const newest = batch.at(-1);
        if (newest === undefined) {
          await appended(signal);
          continue;
        }
        after = newest.id;
        yield batch.map((held) => held.event);
      }
    },
  };
}

/** The error for a clear that selects nothing in particular. */
export function selectionRequired(): DomainError {
  return new DomainError(
    "invalid",
    "all: a filter (event_type, correlation_id, before) or all: true is required",
  );
}
