// The replay delivery and the real dead-letter queue together, linked as app.ts links them: a
// replay whose channel fails is dead-lettered, and retrying the entry delivers the event again.
import { describe, expect, it } from "vitest";
import { createManualClock } from "../../tests/support/manual-clock.js";
import { createRecordingEventLog } from "../../tests/support/recording-event-log.js";
import { createDeadLetterQueue } from "../dlq/dead-letter-queue.js";
import { createDeadLettersLink } from "../dlq/dead-letters.js";
import { createMemoryDlqStore } from "../dlq/memory-dlq-store.js";
import { randomIds } from "../ids.js";
import { createReplayDelivery, deliveryDeadLetterType } from "./event-delivery.js";
import { EventSubscribers } from "./event-log.js";
import { createMemoryEventStore } from "./memory-event-store.js";
import { defaultEventChannels } from "./redis-event-scripts.js";

describe("a failed replay delivery in the dead-letter queue", () => {
  it("is recorded as event.delivery and delivered once its retry runs", async () => {
    const clock = createManualClock(Date.UTC(2026, 11, 6));
    const store = createMemoryEventStore({ clock });
    const [event] = await store.append([
      {
        type: "findings.created",
        subject: "billing",
        correlationId: "corr-9",
        traceId: "",
        source: "node-a",
        timestamp: clock.now(),
        payload: { type: "api_drift_candidate", count: 1 },
      },
    ]);
    if (event === undefined) throw new Error("no event stored");
    let down = true;
    const published: string[] = [];
    const link = createDeadLettersLink();
    const delivery = createReplayDelivery({
      store,
      subscribers: new EventSubscribers(),
      // A channel that fails while `down`: what Redis pub/sub does while it is unreachable.
      publisher: {
        async publish(channel) {
          if (down) throw new Error("the connection is closed");
          published.push(channel);
        },
      },
      channels: defaultEventChannels,
      deadLetters: link.deadLetters,
    });
    link.deadLetters.handle(deliveryDeadLetterType, delivery.retry);
    const queue = createDeadLetterQueue({
      store: createMemoryDlqStore(),
      clock,
      ids: randomIds,
      events: createRecordingEventLog({ clock, source: "node-a" }),
      random: () => 0.5,
    });
    link.bind(queue);

    await delivery.replay(event);
    const listed = await queue.list({}, "", 10);
    expect(listed.entries.map((e) => [e.eventType, e.eventId, e.state])).toEqual([
      [deliveryDeadLetterType, event.id, "PENDING_RETRY"],
      [deliveryDeadLetterType, event.id, "PENDING_RETRY"],
    ]);
    expect(published).toEqual([]);

    down = false;
    const report = await queue.retry({});
    expect(report).toMatchObject({ total: 2, retried: 2, failed: 0 });
    expect(published.sort()).toEqual(["findings.created", "orchestrator.events"]);
    expect((await queue.stats()).resolved).toBe(2);
    await queue.stop();
  });
});
