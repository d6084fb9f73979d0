import { Counter, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { createManualClock } from "../../tests/support/manual-clock.js";
import type { EventLog, NewEvent } from "../events/event-log.js";
import { createDenialRecorder } from "./auth-denials.js";

function setup() {
  const appended: NewEvent[] = [];
  const events = { append: (event: NewEvent) => appended.push(event) } as unknown as EventLog;
  const registry = new Registry();
  const failures = new Counter({
    name: "f",
    help: "f",
    labelNames: ["reason", "method"] as const,
    registers: [registry],
  });
  const clock = createManualClock();
  const record = createDenialRecorder({ events, failures, clock }, { maxEventsPerSecond: 3 });
  return { appended, failures, clock, record };
}

describe("createDenialRecorder", () => {
  it("records at most N events a second, counts every refusal, and says how many it left out", async () => {
    const { appended, failures, clock, record } = setup();
    for (let i = 0; i < 10; i++) record({ what: "ClearEvents", reason: "unknown_token" });
    expect(appended).toHaveLength(3);
    clock.advance(1000);
    record({ what: "ClearEvents", reason: "wrong_role", role: "viewer", clientAddress: "::1" });
    expect(appended).toHaveLength(4);
    expect(appended[3]).toEqual({
      type: "auth.denied",
      subject: "ClearEvents",
      payload: {
        method: "ClearEvents",
        reason: "wrong_role",
        role: "viewer",
        client_address: "::1",
        suppressed: 7,
      },
    });
    const counted = (await failures.get()).values;
    expect(counted).toContainEqual(
      expect.objectContaining({
        labels: { reason: "unknown_token", method: "ClearEvents" },
        value: 10,
      }),
    );
  });
});
