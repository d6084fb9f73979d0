import { describe, expect, it } from "vitest";
import { createManualClock } from "../../tests/support/manual-clock.js";
import type { DeadLetterHandler, DeadLetterInput, DeadLetters } from "../dlq/dead-letters.js";
import { createReplayDelivery, deliveryDeadLetterType } from "./event-delivery.js";
import { EventSubscribers } from "./event-log.js";
import { createMemoryEventStore } from "./memory-event-store.js";
import type { OrchestratorEvent } from "./model.js";
import { defaultEventChannels } from "./redis-event-scripts.js";

// The dead-letter queue is another worker's capability: a small in-test fake of the DeadLetters
// interface stands in for it here (it records entries and keeps the handlers it is given).
function fakeDeadLetters() {
  const added: DeadLetterInput[] = [];
  const handlers = new Map<string, DeadLetterHandler>();
  const deadLetters: DeadLetters = {
    async add(input) {
      added.push(input);
      return `dlq-${added.length}`;
    },
    handle(eventType, handler) {
      if (handlers.has(eventType)) throw new Error(`${eventType} has a handler`);
      handlers.set(eventType, handler);
    },
  };
  return { deadLetters, added, handlers };
}

/** A publisher that fails on the channels in `down` (while they are in it), else records. */
function fakePublisher(down: Set<string>) {
  const published: [string, unknown][] = [];
  return {
    published,
    publisher: {
      async publish(channel: string, message: string) {
        if (down.has(channel)) throw new Error(`${channel} unreachable`);
        published.push([channel, JSON.parse(message)]);
      },
    },
  };
}

async function setup(down = new Set<string>()) {
  const start = Date.UTC(2026, 10, 26);
  const store = createMemoryEventStore({ clock: createManualClock(start) });
  const [finding, other] = (await store.append([
    {
      type: "findings.created",
      subject: "billing",
      correlationId: "corr-1",
      traceId: "",
      source: "node-a",
      timestamp: start,
      payload: { type: "api_drift_candidate", count: 2 },
    },
    {
      type: "registry.service.registered",
      subject: "billing",
      correlationId: "corr-2",
      traceId: "",
      source: "node-a",
      timestamp: start + 1,
      payload: { service: "billing" },
    },
  ])) as [OrchestratorEvent, OrchestratorEvent];
  const subscribers = new EventSubscribers();
  const delivered: OrchestratorEvent[] = [];
  subscribers.subscribe((event) => delivered.push(event));
  const { publisher, published } = fakePublisher(down);
  const dlq = fakeDeadLetters();
  const delivery = createReplayDelivery({
    store,
    subscribers,
    publisher,
    channels: defaultEventChannels,
    deadLetters: dlq.deadLetters,
  });
  dlq.deadLetters.handle(deliveryDeadLetterType, delivery.retry);
  return { store, finding, other, delivery, delivered, published, dlq };
}

describe("replay delivery", () => {
  it("delivers a stored event again, marked replay_of, to subscribers and its channels", async () => {
    const { finding, delivery, delivered, published } = await setup();
    await delivery.replay(finding);
    expect(delivered).toEqual([{ ...finding, replayOf: finding.id }]);
    expect(published).toEqual([
      [
        "orchestrator.events",
        {
          id: finding.id,
          type: "findings.created",
          subject: "billing",
          correlation_id: "corr-1",
          trace_id: "",
          source: "node-a",
          timestamp: new Date(finding.timestamp).toISOString(),
          payload: { type: "api_drift_candidate", count: 2 },
          replay_of: finding.id,
        },
      ],
      ["findings.created", { type: "api_drift_candidate", count: 2, replay_of: finding.id }],
    ]);
  });

  it("records a failed publish in the dead-letter queue, whose retry delivers the stored event", async () => {
    const down = new Set(["findings.created"]);
    const { finding, delivery, published, dlq } = await setup(down);
    await delivery.replay(finding);
    expect(published.map(([channel]) => channel)).toEqual(["orchestrator.events"]);
    expect(dlq.added).toEqual([
      {
        eventType: "event.delivery",
        payload: { event_id: finding.id, channel: "findings.created" },
        failureReason: "publishing on findings.created failed: findings.created unreachable",
        eventId: finding.id,
        correlationId: "corr-1",
      },
    ]);
    const retry = dlq.handlers.get("event.delivery");
    if (retry === undefined) throw new Error("no handler registered");
    const entry = {
      dlqId: "dlq-1",
      eventType: "event.delivery",
      payload: { event_id: finding.id, channel: "findings.created" },
      eventId: finding.id,
      attempts: 1,
      signal: new AbortController().signal,
    };
    await expect(retry(entry)).rejects.toThrow("unreachable");
    down.clear();
    await retry(entry);
    expect(published.at(-1)).toEqual([
      "findings.created",
      { type: "api_drift_candidate", count: 2, replay_of: finding.id },
    ]);
  });

  it("fails the retry of an event that is no longer stored, and of an entry it cannot read", async () => {
    const { store, finding, dlq } = await setup();
    await store.clear({ all: true });
    const retry = dlq.handlers.get("event.delivery") as DeadLetterHandler;
    const entry = {
      dlqId: "d",
      eventType: "event.delivery",
      eventId: finding.id,
      attempts: 1,
      signal: new AbortController().signal,
    };
    await expect(
      retry({ ...entry, payload: { event_id: finding.id, channel: "orchestrator.events" } }),
    ).rejects.toThrow("no longer stored");
    await expect(retry({ ...entry, payload: { channel: 5 } })).rejects.toThrow("event_id");
  });

  it("counts a delivery it could not record when there is no dead-letter queue", async () => {
    const store = createMemoryEventStore({ clock: createManualClock(1) });
    const [event] = await store.append([
      {
        type: "t",
        subject: "",
        correlationId: "",
        traceId: "",
        source: "",
        timestamp: 5,
        payload: {},
      },
    ]);
    let lost = 0;
    const delivery = createReplayDelivery({
      store,
      subscribers: new EventSubscribers(),
      publisher: fakePublisher(new Set(["orchestrator.events"])).publisher,
      channels: defaultEventChannels,
      onLost: () => lost++,
    });
    await delivery.replay(event as OrchestratorEvent);
    expect(lost).toBe(1);
  });
});
