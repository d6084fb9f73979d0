import { describe, expect, it, vi } from "vitest";
import { createManualClock } from "../../tests/support/manual-clock.js";
import { DomainError } from "../errors/domain-error.js";
import { EventSubscribers } from "./event-log.js";
import { type EventWatchItem, watchEvents } from "./event-watch.js";
import { createMemoryEventStore } from "./memory-event-store.js";
import type { EventDraft, OrchestratorEvent } from "./model.js";
import { followStore, RecentEvents } from "./recent-events.js";

const start = Date.UTC(2026, 10, 26);
const draft = (i: number, subject = `s${i}`): EventDraft => ({
  type: i % 2 === 0 ? "even" : "odd",
  subject,
  correlationId: "",
  traceId: "",
  source: "node-a",
  timestamp: start + i,
  payload: { i },
});

function setup(logSize = 10_000) {
  const store = createMemoryEventStore({ clock: createManualClock(start) });
  const recent = new RecentEvents({ maxItems: logSize, maxBytes: 64 * 1024 * 1024 });
  const controller = new AbortController();
  const following = followStore(store, recent, new EventSubscribers(), controller.signal);
  return { store, recent, controller, following };
}

/** Reads `watch` until `count` events came; the first item is where it started. */
async function take(watch: AsyncGenerator<EventWatchItem>, count: number) {
  const first = await watch.next();
  const events: OrchestratorEvent[] = [];
  while (events.length < count) {
    const item = await watch.next();
    if (item.done) throw new Error("the watch ended");
    if ("event" in item.value) events.push(item.value.event);
  }
  return { started: first.value, events };
}

describe("watchEvents", () => {
  it("gives the stored events after an id, then live ones, without a gap or a repeat at the seam", async () => {
    const { store, recent, controller, following } = setup();
    const before = await store.append(Array.from({ length: 1_200 }, (_, i) => draft(i)));
    await vi.waitFor(() => expect(recent.lastId).toBe(before.at(-1)?.id));
    const after = before[99]?.id ?? "";
    const watch = watchEvents(store, recent, {
      filter: {},
      afterId: after,
      maxLag: 10_000,
      signal: controller.signal,
    });
    // More events come while the watcher pages through the stored ones.
    const reading = take(watch, 1_100 + 300);
    for (let i = 1_200; i < 1_500; i += 50) {
      await store.append(Array.from({ length: 50 }, (_, j) => draft(i + j)));
    }
    const { started, events } = await reading;
    expect(started).toEqual({ startedAfter: after });
    const all = (await store.read({ limit: 10_000 })).events;
    expect(events.map((e) => e.id)).toEqual(all.slice(100).map((e) => e.id));
    controller.abort();
    await following;
  });

  it("filters by type and subject, live and stored alike", async () => {
    const { store, recent, controller } = setup();
    await store.append([draft(0), draft(1, "x"), draft(2, "x")]);
    const watch = watchEvents(store, recent, {
      filter: { types: ["even"], subject: "x" },
      afterId: "0-0",
      maxLag: 100,
      signal: controller.signal,
    });
    const reading = take(watch, 2);
    await store.append([draft(3, "x"), draft(4, "y"), draft(6, "x")]);
    const { events } = await reading;
    expect(events.map((e) => e.payload.i)).toEqual([2, 6]);
    controller.abort();
  });

  it("cuts off a watcher that fell behind the recent log, naming the id to resume after", async () => {
    const { store, recent, controller } = setup(10);
    const watch = watchEvents(store, recent, {
      filter: {},
      afterId: "",
      maxLag: 10,
      signal: controller.signal,
    });
    expect((await watch.next()).value).toEqual({ startedAfter: "0-0" });
    const [first] = await store.append([draft(0)]);
    expect((await watch.next()).value).toEqual({ event: first });
    // The watcher reads nothing while 50 more events come: more than the log keeps.
    await store.append(Array.from({ length: 50 }, (_, i) => draft(i + 1)));
    await vi.waitFor(() => expect(recent.position).toBe(51));
    const failure = await watch.next().then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(DomainError);
    expect((failure as DomainError).kind).toBe("resource_exhausted");
    expect((failure as DomainError).message).toContain(`watch again with after_id ${first?.id}`);
    controller.abort();
  });
});
