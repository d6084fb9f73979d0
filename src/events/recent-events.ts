import { setTimeout as delay } from "node:timers/promises";
import type { Logger } from "pino";
import { BoundedLog, type BoundedLogLimits } from "../changes/bounded-log.js";
import type { ChangeSource } from "../changes/change-queue.js";
import type { EventSubscribers } from "./event-log.js";
import type { EventStore } from "./event-store.js";
import { eventWeight, firstEventId, type OrchestratorEvent } from "./model.js";

/**
 * The events this process has followed from the store, the newest ones, bounded in count and in
 * bytes: what watchers read through the change queue. Positions are local to the process: the
 * n-th event followed is at position n (0 before any).
 */
export class RecentEvents implements ChangeSource<OrchestratorEvent> {
  private readonly log: BoundedLog<OrchestratorEvent>;
  private readonly listeners = new Set<() => void>();
  private count = 0;
  private newest = firstEventId;
  private started = false;
  private readonly waiters = new Set<() => void>();

  /** @throws RangeError when a limit is not a positive integer. */
  constructor(readonly limits: BoundedLogLimits) {
    this.log = new BoundedLog<OrchestratorEvent>(limits, eventWeight);
  }

  get position(): number {
    return this.count;
  }

  /**
   * The id of the newest event at `position`: every event up to it is in the store, every later
   * one will come here, after `position`. "0-0" before the follower started at an id.
   */
  get lastId(): string {
    return this.newest;
  }

  /** Whether the follower has said where it starts. */
  get ready(): boolean {
    return this.started;
  }

  /** Resolves once the follower has said where it starts, or `signal` aborted. */
  whenReady(signal: AbortSignal): Promise<void> {
    if (this.started || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.waiters.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      this.waiters.add(done);
      signal.addEventListener("abort", done);
    });
  }

  /** Where the follower starts: the store's last id when it began following. */
  startAt(id: string): void {
    this.newest = id;
    this.started = true;
    for (const done of [...this.waiters]) done();
  }

  /** Adds events the follower read, in id order, and wakes the readers. */
  push(events: readonly OrchestratorEvent[]): void {
    for (const event of events) {
      this.log.push(event);
      this.count++;
      this.newest = event.id;
    }
    if (events.length > 0) for (const listener of [...this.listeners]) listener();
  }

  changesSince(
    position: number,
    limit = Number.POSITIVE_INFINITY,
  ): readonly OrchestratorEvent[] | undefined {
    const oldest = this.count - this.log.length;
    if (position < oldest || position > this.count) return undefined;
    const from = position - oldest;
    return this.log.slice(from, from + Math.min(limit, this.log.length - from));
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/**
 * Follows the store into `recent` and the subscribers, from the store's last id at start, until
 * `signal` aborts: every event stored by any process, once, in id order. Reading the start id is
 * retried (the store may be unreachable at start); `follow` itself waits out outages.
 */
export async function followStore(
  store: EventStore,
  recent: RecentEvents,
  subscribers: EventSubscribers,
  signal: AbortSignal,
  logger?: Logger,
): Promise<void> {
  let from: string | undefined;
  for (let attempt = 1; from === undefined; attempt++) {
    if (signal.aborted) return;
    try {
      from = await store.lastId();
    } catch (error) {
      // A Redis connection still opening at start fails the first tries at once: only a store
      // still unreachable after a few (about 1.5 s) is worth a warning.
      if (attempt === 4) logger?.warn({ err: error }, "event store not followed yet; retrying");
      else if (attempt < 4) logger?.debug({ err: error }, "event store not followed yet; retrying");
      await delay(Math.min(5_000, 100 * 2 ** Math.min(attempt, 6)), undefined, { signal }).catch(
        () => undefined,
      );
    }
  }
  recent.startAt(from);
  for await (const batch of store.follow(from, signal)) {
    recent.push(batch);
    for (const event of batch) subscribers.deliver(event);
  }
}
