import { describe, expect, it } from "vitest";
import { createManualClock } from "../../tests/support/manual-clock.js";
import { DomainError } from "../errors/domain-error.js";
import { createEventOutbox } from "./event-outbox.js";
import type { EventStore } from "./event-store.js";
import { createMemoryEventStore } from "./memory-event-store.js";
import type { EventDraft } from "./model.js";

const start = Date.UTC(2026, 10, 26);
const draft = (i: number): EventDraft => ({
  type: "t",
  subject: `s${i}`,
  correlationId: "",
  traceId: "",
  source: "node-a",
  timestamp: start + i,
  payload: { i },
});

async function storedSubjects(store: EventStore): Promise<string[]> {
  return (await store.read({ limit: 10_000 })).events.map((e) => e.subject);
}

/** A memory store whose appends fail as `failures` says, one entry per call, then succeed. */
function flakyStore(failures: ("lost-reply" | "unavailable")[]) {
  const store = createMemoryEventStore({ clock: createManualClock(start) });
  let calls = 0;
  const flaky: EventStore = {
    ...store,
    async append(events, key) {
      calls++;
      const failure = failures.shift();
      if (failure === "unavailable") throw new DomainError("unavailable", "down");
      const stored = await store.append(events, key);
      if (failure === "lost-reply") throw new DomainError("timeout", "no answer");
      return stored;
    },
  };
  return { store: flaky, calls: () => calls };
}

const fast = { retryMinMs: 1, retryMaxMs: 5 };

describe("event outbox", () => {
  it("stores every event pushed, in order, in batches, once started", async () => {
    const { store, calls } = flakyStore([]);
    const outbox = createEventOutbox({ store, producer: "p" }, { batchSize: 100 });
    for (let i = 0; i < 250; i++) outbox.push(draft(i));
    await new Promise((resolve) => setImmediate(resolve));
    expect(await storedSubjects(store)).toEqual([]);
    outbox.start();
    expect(await outbox.flush(10_000)).toBe(true);
    expect(await storedSubjects(store)).toEqual(Array.from({ length: 250 }, (_, i) => `s${i}`));
    expect(calls()).toBe(3);
    expect(outbox.stats()).toMatchObject({ pending: 0, stored: 250, dropped: 0 });
  });

  it("retries a failed append, and stores a batch once even when an attempt landed unanswered", async () => {
    const { store } = flakyStore(["lost-reply", "unavailable", "unavailable"]);
    const outbox = createEventOutbox({ store, producer: "p" }, { ...fast, batchSize: 3 });
    outbox.start();
    for (let i = 0; i < 7; i++) outbox.push(draft(i));
    expect(await outbox.flush(10_000)).toBe(true);
    expect(await storedSubjects(store)).toEqual(["s0", "s1", "s2", "s3", "s4", "s5", "s6"]);
    expect(outbox.stats()).toMatchObject({ failedAppends: 3, pending: 0 });
  });

  it("drops the oldest events when full, counts and reports them", async () => {
    const { store } = flakyStore([]);
    const reported: number[] = [];
    const outbox = createEventOutbox(
      { store, producer: "p", onDrop: (count) => reported.push(count) },
      { maxEvents: 10 },
    );
    for (let i = 0; i < 25; i++) outbox.push(draft(i));
    expect(outbox.stats()).toMatchObject({ pending: 10, dropped: 15 });
    expect(reported.reduce((a, b) => a + b, 0)).toBe(15);
    outbox.start();
    expect(await outbox.flush(10_000)).toBe(true);
    expect(await storedSubjects(store)).toEqual(Array.from({ length: 10 }, (_, i) => `s${i + 15}`));
  });

  it("says when a flush ran out of time, and keeps the events while the store is down", async () => {
    const { store } = flakyStore(Array.from({ length: 1_000 }, () => "unavailable" as const));
    const outbox = createEventOutbox({ store, producer: "p" }, fast);
    outbox.start();
    outbox.push(draft(1));
    expect(await outbox.flush(50)).toBe(false);
    expect(outbox.stats().pending).toBe(1);
    outbox.stop();
    expect(await outbox.flush(10_000)).toBe(false);
  });
});
