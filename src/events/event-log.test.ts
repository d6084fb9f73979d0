import { describe, expect, it } from "vitest";
import { createManualClock } from "../../tests/support/manual-clock.js";
import { randomIds } from "../ids.js";
import { createMemoryEventLog, eventWeight } from "./event-log.js";

const deps = () => ({ clock: createManualClock(), ids: randomIds, source: "node-a" });

describe("memory event log", () => {
  it("keeps the latest events within its count, oldest first", () => {
    const log = createMemoryEventLog(deps(), { capacity: 3 });
    for (let i = 0; i < 5; i++) log.append({ type: "t", subject: `s${i}`, payload: {} });
    expect(log.recent().map((e) => e.subject)).toEqual(["s2", "s3", "s4"]);
    expect(log.recent(2).map((e) => e.subject)).toEqual(["s3", "s4"]);
  });

  it("keeps the latest events within its bytes, whatever their payloads weigh", () => {
    const log = createMemoryEventLog(deps(), { capacity: 10_000, maxBytes: 100_000 });
    const blob = "x".repeat(10_000);
    for (let i = 0; i < 50; i++) log.append({ type: "t", subject: `s${i}`, payload: { blob } });
    const kept = log.recent();
    const bytes = kept.reduce((sum, event) => sum + eventWeight(event), 0);
    expect(bytes).toBeLessThanOrEqual(100_000);
    // One more of the same weight would not have fitted.
    const [oldest] = kept;
    expect(oldest).toBeDefined();
    if (oldest) expect(bytes + eventWeight(oldest)).toBeGreaterThan(100_000);
    expect(kept.at(-1)?.subject).toBe("s49");
    expect(kept.length).toBeLessThan(10);
  });
});
