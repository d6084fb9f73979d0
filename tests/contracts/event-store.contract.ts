import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DomainError } from "../../src/errors/domain-error.js";
import type { EventRetention, EventStore } from "../../src/events/event-store.js";
import { type EventDraft, type OrchestratorEvent, parseEventId } from "../../src/events/model.js";
import { createManualClock, type ManualClock } from "../support/manual-clock.js";

/** What a store is created with for one test. */
export interface EventStoreSetup {
  readonly clock: ManualClock;
  readonly retention?: Partial<EventRetention>;
  readonly maxScan?: number;
}

/** How an implementation is brought up for the contract suite. */
export interface EventStoreHarness {
  /** A new, empty store of its own (for Redis: a fresh key prefix), opened. */
  create(setup: EventStoreSetup): Promise<EventStore>;
  /** A second store over the same data, as another process would open it. */
  twin?(store: EventStore, setup: EventStoreSetup): Promise<EventStore>;
  /**
   * Events a store may keep beyond `retention.maxEvents`: 0 for an exact trim; Redis trims
   * whole stream nodes (`MAXLEN ~`), up to 100 entries each.
   */
  readonly countSlack: number;
  /** Releases everything created since the last cleanup. */
  cleanup(): Promise<void>;
}

const start = Date.UTC(2026, 10, 26, 12, 0, 0);

/** An event emitted at `timestamp`; fields may be overridden. */
export function draft(timestamp: number, overrides: Partial<EventDraft> = {}): EventDraft {
  return {
    type: "registry.service.registered",
    subject: "billing",
    correlationId: "corr-1",
    traceId: "0af7651916cd43dd8448eb211c80319c",
    source: "node-a",
    timestamp,
    payload: { service: "billing", revision: 3, nested: { list: [1, "two", null, true] } },
    ...overrides,
  };
}

/** Every event a query selects, read a page at a time (`limit` each), checking the cursors. */
export async function readAll(
  store: EventStore,
  query: Omit<Parameters<EventStore["read"]>[0], "limit" | "after"> = {},
  limit = 1_000,
): Promise<OrchestratorEvent[]> {
  const all: OrchestratorEvent[] = [];
  let after = "";
  for (let pages = 0; pages < 10_000; pages++) {
    const page = await store.read({ ...query, after, limit });
    expect(page.events.length).toBeLessThanOrEqual(limit);
    all.push(...page.events);
    if (page.next === "") return all;
    expect(parseEventId(page.next).ms).toBeGreaterThanOrEqual(0);
    after = page.next;
  }
  throw new Error("the cursor never ended");
}

/** The DomainError `promise` rejects with (the test fails if it resolves or rejects otherwise). */
async function failureOf(promise: Promise<unknown>): Promise<DomainError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DomainError);
  return error as DomainError;
}

const ids = (events: readonly OrchestratorEvent[]) => events.map((e) => e.id);
const subjects = (events: readonly OrchestratorEvent[]) => events.map((e) => e.subject);

/** Collects what `follow` yields until `count` events came (or fails after a generous wait). */
async function followUntil(
  store: EventStore,
  afterId: string,
  count: number,
  whileFollowing: () => Promise<void> = async () => {},
): Promise<OrchestratorEvent[]> {
  const controller = new AbortController();
  const seen: OrchestratorEvent[] = [];
  const timer = setTimeout(() => controller.abort(), 20_000);
  const following = (async () => {
    for await (const batch of store.follow(afterId, controller.signal)) {
      seen.push(...batch);
      if (seen.length >= count) break;
    }
  })();
  await whileFollowing();
  await following;
  clearTimeout(timer);
  controller.abort();
  return seen;
}

/** The behaviour every EventStore must have. */
export function eventStoreContract(name: string, harness: EventStoreHarness): void {
  describe(`EventStore contract: ${name}`, () => {
    let clock: ManualClock = createManualClock(start);
    const create = (setup: Omit<EventStoreSetup, "clock"> = {}) =>
      harness.create({ clock, ...setup });

    // Each test gets its own clock; the store's retention reads it.
    beforeEach(() => {
      clock = createManualClock(start);
    });
    afterEach(() => harness.cleanup());

    it("gives ordered ids: the event's time and a sequence within the millisecond", async () => {
      const store = await create();
      expect(await store.lastId()).toBe("0-0");
      const stored = await store.append([draft(start), draft(start), draft(start + 5)]);
      expect(ids(stored)).toEqual([`${start}-0`, `${start}-1`, `${start + 5}-0`]);
      expect(stored[0]).toEqual({ ...draft(start), id: `${start}-0` });
      // An event emitted "earlier" than the last id (another clock, a wait in the outbox) is
      // stored after it, never before: ids never go back.
      const late = await store.append([draft(start + 1, { subject: "late" })]);
      expect(ids(late)).toEqual([`${start + 5}-1`]);
      expect(late[0]?.timestamp).toBe(start + 1);
      expect(await store.lastId()).toBe(`${start + 5}-1`);
      expect(ids(await readAll(store))).toEqual([...ids(stored), ...ids(late)]);
    });

    it("reads back exactly what was stored, oldest first, a page at a time", async () => {
      const store = await create();
      const drafts = Array.from({ length: 25 }, (_, i) =>
        draft(start + i, { subject: `s${i}`, payload: { i, text: "ünïcødé ✓", deep: { a: [i] } } }),
      );
      const stored = await store.append(drafts);
      expect(await readAll(store)).toEqual(stored);
      expect(await readAll(store, {}, 7)).toEqual(stored);
      const first = await store.read({ limit: 10 });
      expect(first.events).toEqual(stored.slice(0, 10));
      expect(first.next).toBe(stored[9]?.id);
      const second = await store.read({ after: first.next, limit: 10 });
      expect(second.events).toEqual(stored.slice(10, 20));
      const last = await store.read({ after: second.next, limit: 10 });
      expect(last.events).toEqual(stored.slice(20));
      expect(last.next).toBe("");
      // A page that ends with the last event says there is no more.
      expect((await store.read({ after: stored[14]?.id ?? "", limit: 10 })).next).toBe("");
      expect(await store.read({ after: stored[24]?.id ?? "", limit: 10 })).toEqual({
        events: [],
        next: "",
      });
    });

    it("filters by types, subject, correlation id and time, combined", async () => {
      const store = await create();
      await store.append([
        draft(start, { type: "a", subject: "x", correlationId: "c1" }),
        draft(start + 10, { type: "b", subject: "x", correlationId: "c2" }),
        draft(start + 20, { type: "c", subject: "y", correlationId: "c1" }),
        draft(start + 30, { type: "a", subject: "y", correlationId: "c2" }),
        draft(start + 40, { type: "b", subject: "x", correlationId: "c1" }),
      ]);
      const times = (events: OrchestratorEvent[]) => events.map((e) => e.timestamp - start);
      expect(times(await readAll(store, { types: ["a"] }))).toEqual([0, 30]);
      expect(times(await readAll(store, { types: ["a", "c"] }))).toEqual([0, 20, 30]);
      expect(times(await readAll(store, { subject: "x" }))).toEqual([0, 10, 40]);
      expect(times(await readAll(store, { correlationId: "c1" }))).toEqual([0, 20, 40]);
      // since is inclusive, until exclusive.
      expect(times(await readAll(store, { since: start + 10 }))).toEqual([10, 20, 30, 40]);
      expect(times(await readAll(store, { until: start + 30 }))).toEqual([0, 10, 20]);
      expect(times(await readAll(store, { since: start + 10, until: start + 40 }))).toEqual([
        10, 20, 30,
      ]);
      expect(
        times(await readAll(store, { types: ["b", "c"], subject: "x", correlationId: "c1" })),
      ).toEqual([40]);
      expect(await readAll(store, { types: ["none"] })).toEqual([]);
      expect(await readAll(store, { since: start + 50 })).toEqual([]);
      expect(await readAll(store, { since: start + 20, until: start + 20 })).toEqual([]);
    });

    it("examines at most its scan bound per read, and its cursor goes on from there", async () => {
      const store = await create({ maxScan: 10 });
      const drafts = Array.from({ length: 35 }, (_, i) => draft(start + i, { subject: `s${i}` }));
      drafts[33] = draft(start + 33, { subject: "needle" });
      const stored = await store.append(drafts);
      const first = await store.read({ subject: "needle", limit: 5 });
      expect(first.events).toEqual([]);
      expect(first.next).toBe(stored[9]?.id);
      expect(subjects(await readAll(store, { subject: "needle" }, 5))).toEqual(["needle"]);
      // Pages without a filter are not cut short by the bound when limit is within it.
      expect((await store.read({ limit: 10 })).events).toHaveLength(10);
    });

    it("keeps the newest events within the count retention", async () => {
      const maxEvents = 10;
      const store = await create({ retention: { maxEvents } });
      const total = maxEvents + harness.countSlack + 250;
      const all: OrchestratorEvent[] = [];
      for (let i = 0; i < total; i += 50) {
        const batch = Array.from({ length: Math.min(50, total - i) }, (_, j) =>
          draft(start + i + j, { subject: `s${i + j}` }),
        );
        all.push(...(await store.append(batch)));
      }
      const kept = await readAll(store);
      expect(kept.length).toBeGreaterThanOrEqual(maxEvents);
      expect(kept.length).toBeLessThanOrEqual(maxEvents + harness.countSlack);
      // What is kept is the newest, in order, without a gap.
      expect(kept).toEqual(all.slice(all.length - kept.length));
    });

    it("keeps events within the age retention: reads hide older ones, trim removes them", async () => {
      const maxAgeMs = 60_000;
      const store = await create({ retention: { maxAgeMs } });
      await store.append([
        draft(start, { subject: "old" }),
        draft(start + 30_000, { subject: "middle" }),
        draft(start + 50_000, { subject: "new" }),
      ]);
      clock.set(start + 50_000);
      expect(subjects(await readAll(store))).toEqual(["old", "middle", "new"]);
      expect(await store.trim()).toBe(0);
      // "old" is now more than a minute old: gone from reads at once, and trimmed.
      clock.set(start + 60_001);
      expect(subjects(await readAll(store))).toEqual(["middle", "new"]);
      const [oldId] = ids(await readAll(store, {}, 1));
      expect(oldId).toBe(`${start + 30_000}-0`);
      expect(await store.readIds([`${start}-0`])).toEqual([]);
      expect(await store.trim()).toBe(1);
      expect(subjects(await readAll(store))).toEqual(["middle", "new"]);
      clock.set(start + 200_000);
      expect(await readAll(store)).toEqual([]);
      expect(await store.trim()).toBe(2);
      // Ids go on from the last one, whatever was trimmed.
      const [next] = await store.append([draft(start + 1)]);
      expect(next?.id).toBe(`${start + 50_000}-1`);
    });

    it("clears what a filter selects, or everything, and refuses a clear without a filter", async () => {
      const store = await create();
      await store.append([
        draft(start, { type: "a", correlationId: "c1" }),
        draft(start + 10, { type: "b", correlationId: "c1" }),
        draft(start + 20, { type: "a", correlationId: "c2" }),
        draft(start + 30, { type: "b", correlationId: "c2" }),
        draft(start + 40, { type: "a", correlationId: "c1" }),
        draft(start + 50, { type: "c", correlationId: "c3" }),
      ]);
      const times = async () => (await readAll(store)).map((e) => e.timestamp - start);
      expect((await failureOf(store.clear({}))).kind).toBe("invalid");
      expect(await store.clear({ type: "a", correlationId: "c1" })).toBe(2);
      expect(await times()).toEqual([10, 20, 30, 50]);
      expect(await store.clear({ before: start + 25 })).toBe(2);
      expect(await times()).toEqual([30, 50]);
      expect(await store.clear({ type: "c", before: start + 50 })).toBe(0);
      expect(await store.clear({ correlationId: "c3" })).toBe(1);
      expect(await times()).toEqual([30]);
      await store.append([draft(start + 60)]);
      expect(await store.clear({ all: true })).toBe(2);
      expect(await readAll(store)).toEqual([]);
      // Ids never go back after a clear: a cursor taken before it stays meaningful.
      const [after] = await store.append([draft(start)]);
      expect(after?.id).toBe(`${start + 60}-1`);
    });

    it("reads events by id, in id order, skipping unknown ones", async () => {
      const store = await create();
      const stored = await store.append([draft(start), draft(start + 1), draft(start + 2)]);
      const [a, , c] = ids(stored) as [string, string, string];
      expect(ids(await store.readIds([c, "1-0", a, a]))).toEqual([a, c]);
      expect(await store.readIds([])).toEqual([]);
    });

    it("stores a batch once under its key, however often it is appended", async () => {
      const store = await create();
      const key = { producer: "incarnation-1", sequence: 2 };
      const batch = [draft(start), draft(start + 1)];
      expect(await store.append(batch, key)).toHaveLength(2);
      expect(await store.append(batch, key)).toEqual([]);
      expect(
        await store.append([draft(start + 2)], { producer: "incarnation-1", sequence: 1 }),
      ).toEqual([]);
      expect(await store.append([draft(start + 3)], { ...key, sequence: 3 })).toHaveLength(1);
      expect(
        await store.append([draft(start + 4)], { producer: "other", sequence: 1 }),
      ).toHaveLength(1);
      expect(await readAll(store)).toHaveLength(4);
    });

    it("refuses a cursor that is not an event id", async () => {
      const store = await create();
      const failure = await failureOf(store.read({ after: "99999999999999999999-0", limit: 1 }));
      expect(failure.kind).toBe("invalid");
      expect(failure.message).toContain("cursor");
      expect((await failureOf(store.read({ after: "abc", limit: 1 }))).kind).toBe("invalid");
    });

    it("follows from after a given id: the stored events first, then each as appended", async () => {
      const store = await create();
      const before = await store.append([draft(start), draft(start + 1), draft(start + 2)]);
      const seen = await followUntil(store, before[0]?.id ?? "", 3, async () => {
        await store.append([draft(start + 3, { subject: "live" })]);
      });
      expect(subjects(seen)).toEqual(["billing", "billing", "live"]);
      expect(ids(seen)).toEqual([...ids(before.slice(1)), `${start + 3}-0`]);
      // From the start: everything, in order.
      const all = await followUntil(store, "0-0", 4);
      expect(ids(all)).toEqual(ids(await readAll(store)));
    });

    if (harness.twin) {
      const twinOf = harness.twin.bind(harness);
      it("shares events with another process: its appends are read and followed here", async () => {
        const store = await create();
        const twin = await twinOf(store, { clock });
        const mine = await store.append([draft(start, { source: "a" })]);
        const theirs = await twin.append([draft(start, { source: "b" })]);
        // One sequence of ids, whoever appended.
        expect(ids(theirs)).toEqual([`${start}-1`]);
        expect(ids(await readAll(twin))).toEqual([...ids(mine), ...ids(theirs)]);
        const seen = await followUntil(store, mine[0]?.id ?? "", 2, async () => {
          await twin.append([draft(start + 1, { source: "b", subject: "live" })]);
        });
        expect(seen.map((e) => [e.source, e.subject])).toEqual([
          ["b", "billing"],
          ["b", "live"],
        ]);
      });
    }
  });
}
