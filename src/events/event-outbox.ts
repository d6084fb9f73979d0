import type { Logger } from "pino";
import { BoundedLog } from "../changes/bounded-log.js";
import type { EventStore } from "./event-store.js";
import { type EventDraft, eventWeight } from "./model.js";

/** How much the outbox holds and how it drains. */
export interface EventOutboxOptions {
  /** Events waiting at most; beyond, the oldest are dropped (and counted). Default 10,000. */
  readonly maxEvents: number;
  /** Bytes of waiting events at most (see `eventWeight`); beyond, as above. Default 8 MiB. */
  readonly maxBytes: number;
  /** Events appended in one round trip at most. Default 256. */
  readonly batchSize: number;
  /** First wait before retrying a failed append, doubled up to `retryMaxMs`. Default 100 ms. */
  readonly retryMinMs: number;
  /** Longest wait between retries. Default 5,000 ms. */
  readonly retryMaxMs: number;
}

/** 10,000 events or 8 MiB waiting; batches of 256; retries from 100 ms, doubling up to 5 s. */
export const eventOutboxDefaults: Readonly<EventOutboxOptions> = Object.freeze({
  maxEvents: 10_000,
  maxBytes: 8 * 1024 * 1024,
  batchSize: 256,
  retryMinMs: 100,
  retryMaxMs: 5_000,
});

/** What the outbox has done so far. */
export interface EventOutboxStats {
  /** Events waiting (the batch being appended included). */
  readonly pending: number;
  /** Events dropped because the outbox was full. */
  readonly dropped: number;
  /** Events this outbox has stored. */
  readonly stored: number;
  /** Appends that failed (each is retried). */
  readonly failedAppends: number;
}

/**
 * Events between their emitter and the store. `push` is synchronous and never throws, so that an
 * emitter (a registry write that already happened) is never failed nor slowed by the store; a
 * drainer appends the waiting events to the store in order, a batch per round trip, and retries a
 * failed batch with backoff until it is stored (each batch carries this producer's sequence, so
 * that a batch whose first attempt did land is not stored twice). While the store cannot take
 * them, events wait, bounded in count and in bytes: when full, the oldest are dropped, counted in
 * `stats().dropped` and reported to `onDrop`, never silently. What waits is lost if the process
 * dies.
 */
export interface EventOutbox {
  /** Queues an event for the store. */
  push(event: EventDraft): void;
  /** Starts draining (events pushed before wait until then). */
  start(): void;
  /**
   * Resolves true once every event pushed so far has been stored, false when `timeoutMs` passed
   * first (or the outbox was stopped).
   */
  flush(timeoutMs: number): Promise<boolean>;
  /** Stops draining: what still waits stays (and is lost with the process). */
  stop(): void;
  stats(): EventOutboxStats;
}

/** What the outbox works with. */
export interface EventOutboxDeps {
  readonly store: EventStore;
  /** This process life's id: the producer of its batches. */
  readonly producer: string;
  readonly logger?: Logger;
  /** Told how many events were dropped, each time some are. */
  readonly onDrop?: (count: number) => void;
}

interface Waiting {
  readonly draft: EventDraft;
  /** This producer's count of events pushed, up to this one. */
  readonly sequence: number;
}

/**
 * Creates an outbox draining into `deps.store`.
 * @throws RangeError when a bound is not a positive integer.
 */
export function createEventOutbox(
  deps: EventOutboxDeps,
  options: Partial<EventOutboxOptions> = {},
): EventOutbox {
  const settings = Object.freeze({ ...eventOutboxDefaults, ...options });
  const { store, producer, logger } = deps;
  const waiting = new BoundedLog<Waiting>(
    { maxItems: settings.maxEvents, maxBytes: settings.maxBytes },
    (item) => eventWeight(item.draft),
  );
  let sequence = 0;
  let inFlight: readonly Waiting[] = [];
  let started = false;
  let stopped = false;
  let draining = false;
  let scheduled = false;
  let dropped = 0;
  let droppedSinceReport = 0;
  let stored = 0;
  let failedAppends = 0;
  let wakeRetry: (() => void) | undefined;
  // Those waiting in `flush`: told true when everything is stored, false when stopped.
  const flushing = new Set<(done: boolean) => void>();

  const isIdle = () => waiting.length === 0 && inFlight.length === 0;

  const schedule = () => {
    if (!started || stopped || draining || scheduled) return;
    scheduled = true;
    // Everything pushed in the same tick goes in one batch.
    setImmediate(() => {
      scheduled = false;
      void drain();
    });
  };

  const backoff = (failures: number): Promise<void> =>
    new Promise((resolve) => {
      const ms = Math.min(settings.retryMaxMs, settings.retryMinMs * 2 ** (failures - 1));
      const timer = setTimeout(done, ms * (0.5 + Math.random() / 2));
      function done() {
        clearTimeout(timer);
        wakeRetry = undefined;
        resolve();
      }
      wakeRetry = done;
    });

  const appendInFlight = async (): Promise<void> => {
    let failures = 0;
    while (!stopped) {
      const last = inFlight.at(-1) as Waiting;
      try {
        await store.append(
          inFlight.map((item) => item.draft),
          { producer, sequence: last.sequence },
        );
        if (failures > 0) logger?.info({ failures }, "events stored again");
        stored += inFlight.length;
        inFlight = [];
        return;
      } catch (error) {
        failedAppends++;
        if (failures++ === 0) {
          logger?.warn({ err: error, pending: waiting.length }, "events not stored yet; retrying");
        }
        await backoff(failures);
      }
    }
  };

  const drain = async (): Promise<void> => {
    if (draining) return;
    draining = true;
    try {
      while (!stopped) {
        if (inFlight.length === 0) inFlight = waiting.dropOldest(settings.batchSize);
        if (inFlight.length === 0) break;
        await appendInFlight();
      }
    } finally {
      draining = false;
      if (droppedSinceReport > 0) {
        logger?.warn({ dropped: droppedSinceReport }, "event outbox was full: events dropped");
        droppedSinceReport = 0;
      }
      if (isIdle()) for (const settle of [...flushing]) settle(true);
      else schedule();
    }
  };

  return {
    push(draft) {
      sequence++;
      const lost = waiting.push({ draft, sequence });
      if (lost.length > 0) {
        if (droppedSinceReport === 0) {
          logger?.warn(
            { limit: settings.maxEvents, bytes: settings.maxBytes },
            "event outbox full: dropping the oldest events",
          );
        }
        dropped += lost.length;
        droppedSinceReport += lost.length;
        deps.onDrop?.(lost.length);
      }
      schedule();
    },
    start() {
      if (started) return;
      started = true;
      schedule();
    },
    flush(timeoutMs) {
      if (isIdle()) return Promise.resolve(true);
      if (stopped) return Promise.resolve(false);
      return new Promise((resolve) => {
        const settle = (done: boolean) => {
          clearTimeout(timer);
          flushing.delete(settle);
          resolve(done);
        };
        const timer = setTimeout(() => settle(false), timeoutMs);
        flushing.add(settle);
        // A batch waiting out a backoff is tried again now: the caller is waiting.
        wakeRetry?.();
      });
    },
    stop() {
      stopped = true;
      wakeRetry?.();
      for (const settle of [...flushing]) settle(false);
    },
    stats: () => ({
      pending: waiting.length + inFlight.length,
      dropped,
      stored,
      failedAppends,
    }),
  };
}
