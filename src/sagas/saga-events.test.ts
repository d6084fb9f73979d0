import { describe, expect, it } from "vitest";
import { createManualClock } from "../../tests/support/manual-clock.js";
import { createRecordingEventLog } from "../../tests/support/recording-event-log.js";
import { createMemorySagaStore } from "./memory-saga-store.js";
import { sagaStatuses } from "./model.js";
import { withSagaEvents } from "./saga-events.js";
import { sagaEventOf, sagaRules } from "./saga-machine.js";

function setUp() {
  const clock = createManualClock();
  const log = createRecordingEventLog({ clock, source: "node-a" });
  const store = withSagaEvents(createMemorySagaStore({ clock }), log);
  return { clock, log, store };
}

describe("withSagaEvents", () => {
  it("gives every transition to one status the same event", () => {
    for (const status of sagaStatuses) {
      const events = new Set(sagaRules.filter((r) => r.to === status).map((r) => r.effects.event));
      expect(events.size, status).toBeLessThanOrEqual(1);
    }
    expect(sagaStatuses.map(sagaEventOf)).toEqual([
      undefined,
      "saga.started",
      "saga.completed",
      "saga.failed",
      undefined,
      "saga.compensated",
      "saga.aborted",
    ]);
  });

  it("emits saga.started, then saga.compensated with the duration, once each", async () => {
    const { clock, log, store } = setUp();
    await store.create({
      sagaId: "s1",
      name: "ingestion",
      runId: "run-1",
      correlationId: "corr-1",
      steps: [{ name: "a" }],
    });
    await store.transition("s1", { expectedVersion: 1, to: "RUNNING" });
    await store.transitionStep("s1", 0, { expectedVersion: 1, to: "RUNNING" });
    await store.transitionStep("s1", 0, { expectedVersion: 2, to: "FAILED", error: "boom" });
    await store.transition("s1", {
      expectedVersion: 4,
      to: "COMPENSATING",
      error: "step a failed",
    });
    clock.advance(2_500);
    await store.transition("s1", { expectedVersion: 5, to: "COMPENSATED" });
    // A refused transition emits nothing.
    await expect(store.transition("s1", { expectedVersion: 6, to: "RUNNING" })).rejects.toThrow();
    expect(log.recent().map((e) => [e.type, e.subject, e.correlationId, e.payload])).toEqual([
      [
        "saga.started",
        "s1",
        "corr-1",
        { saga_id: "s1", name: "ingestion", run_id: "run-1", status: "RUNNING", version: 2 },
      ],
      [
        "saga.compensated",
        "s1",
        "corr-1",
        {
          saga_id: "s1",
          name: "ingestion",
          run_id: "run-1",
          status: "COMPENSATED",
          version: 6,
          duration_ms: 2_500,
          error: "step a failed",
        },
      ],
    ]);
  });

  it("emits saga.completed, saga.failed and saga.aborted, with errors cut to 256 characters", async () => {
    const { log, store } = setUp();
    for (const id of ["c", "f", "a"]) {
      await store.create({ sagaId: id, name: "n", steps: [{ name: "x" }] });
      await store.transition(id, { expectedVersion: 1, to: "RUNNING" });
    }
    await store.transitionStep("c", 0, { expectedVersion: 1, to: "RUNNING" });
    await store.transitionStep("c", 0, { expectedVersion: 2, to: "COMPLETED" });
    await store.transition("c", { expectedVersion: 4, to: "COMPLETED" });
    await store.transition("f", { expectedVersion: 2, to: "FAILED", error: "e".repeat(1_000) });
    await store.transition("a", { expectedVersion: 2, to: "ABORTED" });
    const finished = log.recent().slice(3);
    expect(finished.map((e) => [e.type, e.subject])).toEqual([
      ["saga.completed", "c"],
      ["saga.failed", "f"],
      ["saga.aborted", "a"],
    ]);
    expect(finished[1]?.payload.error).toBe("e".repeat(256));
  });
});
