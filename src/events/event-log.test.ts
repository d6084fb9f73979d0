import { describe, expect, it } from "vitest";
import { createManualClock } from "../../tests/support/manual-clock.js";
import { createEventLog, EventSubscribers } from "./event-log.js";
import type { EventDraft } from "./model.js";

describe("event log", () => {
  const setup = (maxPayloadBytes: number) => {
    const queued: EventDraft[] = [];
    const truncated: [string, number][] = [];
    const log = createEventLog(
      {
        clock: createManualClock(Date.UTC(2026, 10, 26)),
        source: "node-a",
        maxPayloadBytes,
        onTruncated: (type, bytes) => truncated.push([type, bytes]),
      },
      { push: (draft) => queued.push(draft) },
      new EventSubscribers(),
    );
    return { log, queued, truncated };
  };

  it("queues an emitted event with its source and time, synchronously", () => {
    const { log, queued } = setup(1_000);
    log.append({ type: "a.b", subject: "s", correlationId: "c", payload: { x: 1 } });
    expect(queued).toEqual([
      {
        type: "a.b",
        subject: "s",
        correlationId: "c",
        traceId: "",
        source: "node-a",
        timestamp: Date.UTC(2026, 10, 26),
        payload: { x: 1 },
      },
    ]);
  });

  it("replaces a payload over the limit (counted in UTF-8 bytes) and reports it", () => {
    const { log, queued, truncated } = setup(300);
    log.append({ type: "small", subject: "s", payload: { text: "é".repeat(100) } });
    // 150 characters, but 300 bytes of "é" alone: over the limit once the JSON around it counts.
    log.append({ type: "multibyte", subject: "s", payload: { text: "é".repeat(150) } });
    log.append({ type: "large", subject: "s", payload: { text: "x".repeat(1_000) } });
    expect(queued.map((e) => e.payload)).toEqual([
      { text: "é".repeat(100) },
      { truncated: true, payload_bytes: 311 },
      { truncated: true, payload_bytes: 1_011 },
    ]);
    expect(queued.map((e) => e.type)).toEqual(["small", "multibyte", "large"]);
    expect(truncated).toEqual([
      ["multibyte", 311],
      ["large", 1_011],
    ]);
  });

  it("isolates a subscriber that throws", () => {
    const errors: unknown[] = [];
    const subscribers = new EventSubscribers((error) => errors.push(error));
    const seen: string[] = [];
    subscribers.subscribe(() => {
      throw new Error("boom");
    });
    const unsubscribe = subscribers.subscribe((event) => seen.push(event.id));
    const event = {
      id: "1-0",
      type: "t",
      subject: "",
      correlationId: "",
      traceId: "",
      source: "",
      timestamp: 1,
      payload: {},
    };
    subscribers.deliver(event);
    unsubscribe();
    subscribers.deliver({ ...event, id: "2-0" });
    expect(seen).toEqual(["1-0"]);
    expect(errors).toHaveLength(2);
  });
});
