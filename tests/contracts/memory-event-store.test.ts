import { describe, expect, it } from "vitest";
import { createMemoryEventStore } from "../../src/events/memory-event-store.js";
import { eventWeight } from "../../src/events/model.js";
import { createManualClock } from "../support/manual-clock.js";
import { draft, eventStoreContract, readAll } from "./event-store.contract.js";

eventStoreContract("memory", {
  create: async ({ clock, retention, maxScan }) => {
    const store = createMemoryEventStore(
      { clock },
      { ...(retention ? { retention } : {}), ...(maxScan ? { maxScan } : {}) },
    );
    await store.open();
    return store;
  },
  countSlack: 0,
  cleanup: async () => {},
});

describe("memory event store", () => {
  it("keeps the newest events within its bytes, whatever their payloads weigh", async () => {
    const start = Date.UTC(2026, 10, 26);
    const heavy = (i: number) =>
      draft(start + i, { subject: `s${i}`, payload: { blob: "x".repeat(10_000) } });
    const weight = eventWeight(heavy(0));
    const store = createMemoryEventStore(
      { clock: createManualClock(start) },
      { maxBytes: 3 * weight + 10 },
    );
    for (let i = 0; i < 10; i++) await store.append([heavy(i)]);
    expect((await readAll(store)).map((e) => e.subject)).toEqual(["s7", "s8", "s9"]);
  });
});
