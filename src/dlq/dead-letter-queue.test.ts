import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createManualClock, type ManualClock } from "../../tests/support/manual-clock.js";
import {
  createRecordingEventLog,
  type RecordingEventLog,
} from "../../tests/support/recording-event-log.js";
import { seededRandom } from "../../tests/support/seeded-random.js";
import { randomIds } from "../ids.js";
import { retryDelay } from "./backoff.js";
import {
  createDeadLetterQueue,
  type DeadLetterQueue,
  type DeadLetterQueueOptions,
} from "./dead-letter-queue.js";
import type { DeadLetterHandler, DeadLetterInput } from "./dead-letters.js";
import type { DlqStore } from "./dlq-store.js";
import { createMemoryDlqStore } from "./memory-dlq-store.js";

interface Harness {
  readonly queue: DeadLetterQueue;
  readonly store: DlqStore;
  readonly clock: ManualClock;
  readonly events: RecordingEventLog;
}

const queues: DeadLetterQueue[] = [];
afterEach(async () => {
  await Promise.all(queues.splice(0).map((q) => q.stop()));
});

function harness(
  options: Partial<DeadLetterQueueOptions> = {},
  random: () => number = seededRandom(1),
): Harness {
  const clock = createManualClock();
  const store = createMemoryDlqStore();
  const events = createRecordingEventLog({ clock, source: "node-test" });
  const queue = createDeadLetterQueue({ store, clock, ids: randomIds, events, random }, options);
  queues.push(queue);
  return { queue, store, clock, events };
}

function input(overrides: Partial<DeadLetterInput> = {}): DeadLetterInput {
  return {
    eventType: "event.delivery",
    payload: { channel: "orders" },
    failureReason: "connection refused",
    serviceName: "billing",
    correlationId: "corr-7",
    ...overrides,
  };
}

function typesOf(events: RecordingEventLog): string[] {
  return events.recent().map((e) => e.type);
}

/** A handler whose calls wait until the test lets them go. */
function gatedHandler() {
  const calls: string[] = [];
  let open: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const handler: DeadLetterHandler = async (entry) => {
    calls.push(entry.dlqId);
    await gate;
  };
  return { handler, calls, open: () => open() };
}

describe("DeadLetterQueue: automatic retries", () => {
  it("retries with full-jitter backoff, and leaves an entry DEAD after its last attempt", async () => {
    const base = 1_000;
    const cap = 8_000;
    const random = seededRandom(99);
    const replay = seededRandom(99);
    const { queue, store, clock, events } = harness(
      { baseDelayMs: base, maxDelayMs: cap, maxAttempts: 5 },
      random,
    );
    const attempts: number[] = [];
    queue.handle("event.delivery", async (entry) => {
      attempts.push(entry.attempts);
      throw new Error(`HTTP 503 on attempt ${entry.attempts}`);
    });
    const added = clock.now();
    const dlqId = await queue.add(input());
    let entry = await store.get(dlqId);
    // The first wait is drawn like every other: from [0, base).
    expect(entry?.nextRetryAt).toBe(added + retryDelay(0, { baseMs: base, capMs: cap }, replay));
    for (let attempt = 1; attempt <= 5; attempt++) {
      const due = entry?.nextRetryAt ?? 0;
      clock.set(due - 1);
      expect(await queue.runDue()).toBe(0);
      clock.set(due);
      expect(await queue.runDue()).toBe(1);
      entry = await store.get(dlqId);
      expect(entry).toMatchObject({
        attempts: attempt,
        failureReason: `HTTP 503 on attempt ${attempt}`,
        lastFailedAt: due,
      });
      if (attempt < 5) {
        const wait = (entry?.nextRetryAt ?? 0) - due;
        expect(entry?.state).toBe("PENDING_RETRY");
        // The same draw the seeded source gives, within [0, min(cap, base × 2^attempt)).
        expect(wait).toBe(retryDelay(attempt, { baseMs: base, capMs: cap }, replay));
        expect(wait).toBeLessThan(Math.min(cap, base * 2 ** attempt));
      }
    }
    expect(entry).toMatchObject({ state: "DEAD", attempts: 5, nextRetryAt: 0 });
    expect(attempts).toEqual([1, 2, 3, 4, 5]);
    clock.advance(3_600_000);
    expect(await queue.runDue()).toBe(0);
    expect(typesOf(events)).toEqual(["dlq.entry.added", "dlq.entry.dead"]);
    expect(events.recent().at(-1)).toMatchObject({
      subject: dlqId,
      correlationId: "corr-7",
      payload: {
        dlq_id: dlqId,
        event_type: "event.delivery",
        attempts: 5,
        failure_reason: "HTTP 503 on attempt 5",
      },
    });
    expect(await queue.stats()).toMatchObject({ dead: 1, retried: 5, pendingRetry: 0 });
  });

  it("spreads the retries of entries that failed together, never past the cap", async () => {
    const { queue, store, clock } = harness(
      { baseDelayMs: 1_000, maxDelayMs: 4_000, maxAttempts: 10 },
      seededRandom(5),
    );
    queue.handle("event.delivery", async () => {
      throw new Error("down");
    });
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push(await queue.add(input()));
    // Six rounds: the ceiling (1 s × 2^attempts) has long reached the 4 s cap.
    for (let round = 0; round < 6; round++) {
      clock.advance(4_000);
      await queue.runDue();
    }
    const entries = await Promise.all(ids.map((id) => store.get(id)));
    const waits = entries.map((e) => (e?.nextRetryAt ?? 0) - (e?.lastFailedAt ?? 0));
    expect(entries.every((e) => e?.state === "PENDING_RETRY" && e.attempts === 6)).toBe(true);
    expect(waits.every((w) => w >= 0 && w < 4_000)).toBe(true);
    expect(new Set(waits).size).toBeGreaterThan(10);
  });

  it("leaves entries of a type without a handler in place, and runs them once one is given", async () => {
    const { queue, store, clock } = harness({ baseDelayMs: 10 });
    const dlqId = await queue.add(input({ eventType: "workflow.step" }));
    clock.advance(60_000);
    expect(await queue.runDue()).toBe(0);
    expect((await store.get(dlqId))?.state).toBe("PENDING_RETRY");
    const ran: string[] = [];
    queue.handle("workflow.step", async (entry) => {
      ran.push(entry.dlqId);
    });
    expect(await queue.runDue()).toBe(1);
    expect(ran).toEqual([dlqId]);
    expect((await store.get(dlqId))?.state).toBe("RESOLVED");
  });

  it("runs at most `concurrency` retries at once, automatic and by hand together", async () => {
    const { queue, clock } = harness({ concurrency: 2, baseDelayMs: 1 });
    const gated = gatedHandler();
    queue.handle("event.delivery", gated.handler);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await queue.add(input()));
    clock.advance(10);
    const automatic = queue.runDue();
    await vi.waitFor(() => expect(gated.calls).toHaveLength(2));
    const byHand = queue.retry({ dlqIds: ids });
    await delay(50);
    // Every slot is taken: the retry by hand waits for one.
    expect(gated.calls).toHaveLength(2);
    gated.open();
    expect(await automatic).toBe(2);
    const report = await byHand;
    expect(gated.calls).toHaveLength(5);
    expect(report.retried).toBe(3);
    expect(report.results.filter((r) => r.outcome === "skipped")).toHaveLength(2);
    expect(report.results.filter((r) => r.outcome === "resolved")).toHaveLength(3);
  });

  it("fails a retry that outlives its timeout, aborting the handler's signal", async () => {
    const { queue, store, clock } = harness({ retryTimeoutMs: 100, baseDelayMs: 1 });
    let signal: AbortSignal | undefined;
    queue.handle("event.delivery", (entry) => {
      signal = entry.signal;
      return new Promise(() => {});
    });
    const dlqId = await queue.add(input());
    clock.advance(10);
    expect(await queue.runDue()).toBe(1);
    expect(signal?.aborted).toBe(true);
    expect(await store.get(dlqId)).toMatchObject({
      state: "PENDING_RETRY",
      attempts: 1,
      failureReason: "the retry did not finish within 100 ms",
    });
  });

  it("takes back an entry whose claimer died, once its claim has expired", async () => {
    const { queue, store, clock, events } = harness({ retryTimeoutMs: 1_000, baseDelayMs: 1 });
    const ran: number[] = [];
    queue.handle("event.delivery", async (entry) => {
      ran.push(entry.attempts);
    });
    const last = await queue.add(input({ maxAttempts: 1 }));
    const retryable = await queue.add(input());
    // Another node claimed both, and died.
    await store.claim([last, retryable], {
      token: randomUUID(),
      now: clock.now(),
      expiresAt: clock.now() + 2_000,
      from: ["PENDING_RETRY"],
    });
    clock.advance(1_999);
    expect(await queue.runDue()).toBe(0);
    clock.advance(1);
    expect(await queue.runDue()).toBe(1);
    expect(ran).toEqual([2]);
    expect(await store.get(retryable)).toMatchObject({ state: "RESOLVED", attempts: 2 });
    expect(await store.get(last)).toMatchObject({
      state: "DEAD",
      attempts: 1,
      failureReason: expect.stringContaining("claim expired"),
    });
    expect(typesOf(events).filter((t) => t === "dlq.entry.dead")).toHaveLength(1);
  });

  it("forgets resolved entries once their retention has passed", async () => {
    const { queue, store, clock } = harness({ resolvedRetentionMs: 3_600_000, baseDelayMs: 1 });
    queue.handle("event.delivery", async () => {});
    const dlqId = await queue.add(input());
    clock.advance(10);
    await queue.runDue();
    expect((await store.get(dlqId))?.state).toBe("RESOLVED");
    clock.advance(3_600_000);
    await queue.runDue();
    expect((await store.get(dlqId))?.state).toBe("RESOLVED");
    clock.advance(60_000);
    await queue.runDue();
    expect(await store.get(dlqId)).toBeUndefined();
  });

  it("retries on its own once started, and stop() waits for running retries", async () => {
    const { queue, store } = harness({ pollIntervalMs: 20, baseDelayMs: 1 });
    const gated = gatedHandler();
    queue.handle("event.delivery", gated.handler);
    // A base of 1 ms: the first wait is 0, the entry is due at once on the manual clock.
    const dlqId = await queue.add(input());
    queue.start();
    await vi.waitFor(() => expect(gated.calls).toEqual([dlqId]), { timeout: 10_000 });
    let stopped = false;
    const stopping = queue.stop().then(() => {
      stopped = true;
    });
    await delay(50);
    expect(stopped).toBe(false);
    gated.open();
    await stopping;
    expect((await store.get(dlqId))?.state).toBe("RESOLVED");
  });

  it("cuts retries short when stop() has waited long enough", async () => {
    const { queue, store, clock } = harness({ stopTimeoutMs: 50, baseDelayMs: 1 });
    let signal: AbortSignal | undefined;
    queue.handle("event.delivery", (entry) => {
      signal = entry.signal;
      return new Promise(() => {});
    });
    const dlqId = await queue.add(input());
    clock.advance(10);
    const running = queue.runDue();
    await vi.waitFor(() => expect(signal).toBeDefined());
    await queue.stop();
    expect(signal?.aborted).toBe(true);
    await running;
    expect(await store.get(dlqId)).toMatchObject({
      state: "PENDING_RETRY",
      failureReason: "the retry was cut short: the node is stopping",
    });
  });
});

describe("DeadLetterQueue: retries by hand", () => {
  it("retries the entries named, each once, and says what happened to each", async () => {
    const { queue, store, clock, events } = harness();
    queue.handle("event.delivery", async (entry) => {
      if (entry.payload.fail === true) throw new Error("still failing");
    });
    const ok = await queue.add(input({ maxAttempts: 0 }));
    const bad = await queue.add(input({ maxAttempts: 0, payload: { fail: true } }));
    const pending = await queue.add(input());
    const orphan = await queue.add(input({ eventType: "no.handler", maxAttempts: 0 }));
    const unknown = "0000000000000-0000000000000000";
    const report = await queue.retry({ dlqIds: [ok, bad, pending, orphan, unknown, ok] });
    expect(report).toMatchObject({ total: 5, retried: 3, failed: 1 });
    expect(report.results).toEqual([
      { dlqId: ok, outcome: "resolved", state: "RESOLVED", error: "" },
      { dlqId: bad, outcome: "failed", state: "DEAD", error: "still failing" },
      { dlqId: pending, outcome: "resolved", state: "RESOLVED", error: "" },
      {
        dlqId: orphan,
        outcome: "skipped",
        state: "DEAD",
        error: "no handler for event type no.handler on this node: left as it was",
      },
      { dlqId: unknown, outcome: "skipped", error: "no such entry" },
    ]);
    expect(await store.get(orphan)).toMatchObject({ state: "DEAD", attempts: 0 });
    // Resolved or claimed entries are skipped, saying why.
    const again = await queue.retry({ dlqIds: [ok] });
    expect(again.results).toEqual([
      { dlqId: ok, outcome: "skipped", state: "RESOLVED", error: "already resolved" },
    ]);
    expect(typesOf(events).filter((t) => t === "dlq.entry.resolved")).toHaveLength(2);
    expect(clock.now()).toBeGreaterThan(0);
  });

  it("claims in batches, and does not start a retry its claim would not cover", async () => {
    const { queue, store, clock } = harness({ concurrency: 1, retryTimeoutMs: 60_000 });
    const gated = gatedHandler();
    queue.handle("event.delivery", gated.handler);
    const first = await queue.add(input({ maxAttempts: 0 }));
    const second = await queue.add(input({ maxAttempts: 0 }));
    const retrying = queue.retry({ dlqIds: [first, second] });
    await vi.waitFor(() => expect(gated.calls).toEqual([first]));
    // One claim for both, long enough for both to wait for the one slot and run: 3 × 60 s.
    expect(await store.get(second)).toMatchObject({
      state: "RETRYING",
      claimExpiresAt: clock.now() + 180_000,
    });
    // The first retry holds the slot until the second could no longer finish within the claim.
    clock.advance(120_001);
    gated.open();
    const report = await retrying;
    expect(gated.calls).toEqual([first]);
    expect(report.results).toEqual([
      { dlqId: first, outcome: "resolved", state: "RESOLVED", error: "" },
      {
        dlqId: second,
        outcome: "failed",
        state: "DEAD",
        error: "not run: its claim would have expired before the retry could finish",
      },
    ]);
  });

  it("selects by state, type and service, up to the limit, oldest first", async () => {
    const { queue } = harness();
    queue.handle("event.delivery", async () => {});
    queue.handle("workflow.step", async () => {});
    const dead: string[] = [];
    for (let i = 0; i < 6; i++) dead.push(await queue.add(input({ maxAttempts: 0 })));
    const steps: string[] = [];
    for (let i = 0; i < 3; i++) {
      steps.push(await queue.add(input({ eventType: "workflow.step", serviceName: "jira-agent" })));
    }
    const first = await queue.retry({ states: ["DEAD"], limit: 4 });
    expect(first.results.map((r) => r.dlqId)).toEqual(dead.slice(0, 4));
    const byService = await queue.retry({ serviceName: "jira-agent" });
    expect(byService.results.map((r) => r.dlqId)).toEqual(steps);
    const rest = await queue.retry({ eventType: "event.delivery" });
    expect(rest.results.map((r) => r.dlqId)).toEqual(dead.slice(4));
    expect(await queue.retry({})).toEqual({ total: 0, retried: 0, failed: 0, results: [] });
  });
});

describe("DeadLetterQueue: what it accepts", () => {
  it("refuses a payload over its size limit, and bad fields, before storing anything", async () => {
    const { queue } = harness({ maxPayloadBytes: 1_024 });
    const big = { blob: "x".repeat(1_100) };
    const refusals = [
      input({ payload: big }),
      input({ eventType: "" }),
      input({ serviceName: "s".repeat(101) }),
      input({ maxAttempts: -1 }),
    ];
    for (const refused of refusals) {
      await expect(queue.add(refused)).rejects.toMatchObject({ kind: "invalid" });
    }
    await expect(queue.add(input({ payload: big }))).rejects.toThrow(/payload is 1111 bytes/);
    expect((await queue.stats()).entries).toBe(0);
  });

  it("adds an entry without attempts as DEAD, and cuts a long failure reason", async () => {
    const { queue, store, events } = harness();
    const dlqId = await queue.add(input({ maxAttempts: 0, failureReason: "r".repeat(5_000) }));
    const entry = await store.get(dlqId);
    expect(entry?.state).toBe("DEAD");
    expect(entry?.failureReason).toHaveLength(1_024);
    expect(typesOf(events)).toEqual(["dlq.entry.added", "dlq.entry.dead"]);
  });

  it("refuses a second handler for a type", () => {
    const { queue } = harness();
    queue.handle("event.delivery", async () => {});
    expect(() => queue.handle("event.delivery", async () => {})).toThrow(/already has a handler/);
  });

  it("pages a listing with tokens it issued, and refuses others", async () => {
    const { queue } = harness();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await queue.add(input()));
    const first = await queue.list({}, "", 2);
    expect(first.entries.map((e) => e.dlqId)).toEqual(ids.slice(0, 2));
    const second = await queue.list({}, first.nextPageToken, 2);
    expect(second.entries.map((e) => e.dlqId)).toEqual(ids.slice(2, 4));
    const third = await queue.list({}, second.nextPageToken, 2);
    expect(third).toMatchObject({ nextPageToken: "" });
    expect(third.entries.map((e) => e.dlqId)).toEqual(ids.slice(4));
    await expect(queue.list({}, "bm90LWEtdG9rZW4", 2)).rejects.toMatchObject({
      kind: "invalid",
      message: "page_token is not a token this server issued",
    });
  });
});
