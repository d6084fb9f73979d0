import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import type { DlqStore, DlqStoreLimits } from "../../src/dlq/dlq-store.js";
import {
  type ClaimResult,
  type DlqClaimRequest,
  type DlqEntry,
  type DlqQuery,
  dlqEntryWeight,
  type NewDlqEntry,
  newDlqId,
} from "../../src/dlq/model.js";
import { failureOf } from "./registry-store.contract.js";

/** How a DLQ store implementation is brought up for the contract suite. */
export interface DlqStoreHarness {
  /** A new, empty store of its own (for Redis: a fresh key prefix), opened. */
  create(limits?: Partial<DlqStoreLimits>): Promise<DlqStore>;
  /** A second store over the same data, as another process would open it. */
  twin?(store: DlqStore): Promise<DlqStore>;
  /** The same data opened anew after `store` was closed: a restart. */
  reopen?(store: DlqStore): Promise<DlqStore>;
  /** Releases everything created since the last cleanup. */
  cleanup(): Promise<void>;
}

const t0 = Date.UTC(2026, 10, 26, 12, 0, 0);
let sequence = 0;

/** A new entry, added at `t0 + offsetMs` (its id sorts by that time), due a second later. */
export function newDlqEntry(
  overrides: Partial<NewDlqEntry> & { offsetMs?: number } = {},
): NewDlqEntry {
  const { offsetMs = sequence++, ...fields } = overrides;
  const failedAt = t0 + offsetMs;
  return {
    dlqId: newDlqId(failedAt, randomUUID()),
    eventId: "1764158400000-0",
    eventType: "event.delivery",
    payload: { channel: "orders", attempt: { n: 1, ok: false }, note: 'é ✓ "quoted" \\ /' },
    failureReason: "connection refused",
    serviceName: "billing",
    correlationId: "corr-1",
    maxAttempts: 3,
    nextRetryAt: failedAt + 1_000,
    failedAt,
    ...fields,
  };
}

const manual = (token = randomUUID()): DlqClaimRequest => ({
  token,
  now: t0 + 10_000,
  expiresAt: t0 + 70_000,
  from: ["PENDING_RETRY", "DEAD"],
});

function claimed(results: readonly ClaimResult[]): DlqEntry[] {
  return results.flatMap((r) => (r.outcome === "claimed" ? [r.entry] : []));
}

/** Every entry `query` matches, following the pages to the end. */
async function walk(store: DlqStore, query: DlqQuery, limit: number): Promise<DlqEntry[]> {
  const all: DlqEntry[] = [];
  let after = "";
  for (let pages = 0; pages < 10_000; pages++) {
    const page = await store.list(query, { after, limit });
    expect(page.items.length).toBeLessThanOrEqual(limit);
    all.push(...page.items);
    if (page.next === "") return all;
    after = page.next;
  }
  throw new Error("the pages never ended");
}

/** The store contract every DLQ store implementation must pass. */
export function dlqStoreContract(name: string, harness: DlqStoreHarness): void {
  describe(`DlqStore contract (${name})`, () => {
    afterEach(() => harness.cleanup());

    it("adds an entry PENDING_RETRY, or DEAD when it has no attempts, and reads it back", async () => {
      const store = await harness.create();
      const input = newDlqEntry();
      const added = await store.add(input);
      const expected: DlqEntry = {
        dlqId: input.dlqId,
        eventId: input.eventId,
        eventType: "event.delivery",
        payload: input.payload,
        failureReason: "connection refused",
        serviceName: "billing",
        correlationId: "corr-1",
        attempts: 0,
        maxAttempts: 3,
        nextRetryAt: input.nextRetryAt,
        state: "PENDING_RETRY",
        firstFailedAt: input.failedAt,
        lastFailedAt: input.failedAt,
        resolvedAt: 0,
        claimExpiresAt: 0,
      };
      expect(added).toEqual(expected);
      expect(await store.get(input.dlqId)).toEqual(expected);

      const dead = newDlqEntry({ maxAttempts: 0, serviceName: "" });
      expect(await store.add(dead)).toMatchObject({ state: "DEAD", nextRetryAt: 0 });
      expect(await store.get(dead.dlqId)).toMatchObject({ state: "DEAD", nextRetryAt: 0 });
      expect(await store.get(newDlqId(t0, randomUUID()))).toBeUndefined();
      expect(await store.refs([dead.dlqId, "nope", input.dlqId])).toEqual([
        { dlqId: dead.dlqId, eventType: "event.delivery", serviceName: "", state: "DEAD" },
        undefined,
        {
          dlqId: input.dlqId,
          eventType: "event.delivery",
          serviceName: "billing",
          state: "PENDING_RETRY",
        },
      ]);
    });

    it("refuses an id already used", async () => {
      const store = await harness.create();
      const input = newDlqEntry();
      await store.add(input);
      expect((await failureOf(store.add({ ...input, eventType: "other" }))).kind).toBe(
        "already_exists",
      );
      expect((await store.get(input.dlqId))?.eventType).toBe("event.delivery");
    });

    it("claims PENDING_RETRY and DEAD entries once, counting an attempt, and refuses a second claim", async () => {
      const store = await harness.create();
      const pending = await store.add(newDlqEntry());
      const dead = await store.add(newDlqEntry({ maxAttempts: 0 }));
      const first = manual();
      const results = await store.claim([pending.dlqId, dead.dlqId], first);
      expect(results.map((r) => r.outcome)).toEqual(["claimed", "claimed"]);
      for (const entry of claimed(results)) {
        expect(entry).toMatchObject({
          state: "RETRYING",
          attempts: 1,
          nextRetryAt: 0,
          claimExpiresAt: first.expiresAt,
        });
        expect(await store.get(entry.dlqId)).toEqual(entry);
      }
      expect(claimed(results)[0]?.payload).toEqual(pending.payload);
      const again = await store.claim([pending.dlqId, dead.dlqId], manual());
      expect(again).toEqual([
        { dlqId: pending.dlqId, outcome: "refused", state: "RETRYING" },
        { dlqId: dead.dlqId, outcome: "refused", state: "RETRYING" },
      ]);
      const stats = await store.stats();
      expect(stats).toMatchObject({ pendingRetry: 0, retrying: 2, dead: 0, retried: 2 });
    });

    it("claims for an automatic retry only PENDING_RETRY entries already due", async () => {
      const store = await harness.create();
      const entry = await store.add(newDlqEntry());
      const dead = await store.add(newDlqEntry({ maxAttempts: 0 }));
      const auto = (dueBy: number): DlqClaimRequest => ({ ...manual(), dueBy });
      expect(await store.claim([entry.dlqId, dead.dlqId], auto(entry.nextRetryAt - 1))).toEqual([
        { dlqId: entry.dlqId, outcome: "refused", state: "PENDING_RETRY" },
        { dlqId: dead.dlqId, outcome: "refused", state: "DEAD" },
      ]);
      const results = await store.claim([entry.dlqId], auto(entry.nextRetryAt));
      expect(results[0]?.outcome).toBe("claimed");
      // Only the states asked for are taken.
      const other = await store.add(newDlqEntry());
      expect(await store.claim([other.dlqId], { ...manual(), from: ["DEAD"] })).toEqual([
        { dlqId: other.dlqId, outcome: "refused", state: "PENDING_RETRY" },
      ]);
      expect(await store.claim([newDlqId(t0, randomUUID())], manual())).toMatchObject([
        { outcome: "missing" },
      ]);
    });

    it("resolves a claimed entry with its own token only, and never moves it again", async () => {
      const store = await harness.create();
      const entry = await store.add(newDlqEntry());
      const claim = manual();
      await store.claim([entry.dlqId], claim);
      expect(await store.complete("someone-else", [entry.dlqId], t0 + 20_000)).toEqual([
        { dlqId: entry.dlqId, outcome: "lost" },
      ]);
      expect(await store.fail("someone-else", [failure(entry.dlqId)], t0 + 20_000)).toEqual([
        { dlqId: entry.dlqId, outcome: "lost" },
      ]);
      expect((await store.get(entry.dlqId))?.state).toBe("RETRYING");
      expect(await store.complete(claim.token, [entry.dlqId], t0 + 20_000)).toEqual([
        { dlqId: entry.dlqId, outcome: "done", state: "RESOLVED" },
      ]);
      expect(await store.get(entry.dlqId)).toMatchObject({
        state: "RESOLVED",
        resolvedAt: t0 + 20_000,
        claimExpiresAt: 0,
        attempts: 1,
      });
      // Final: no second completion, no failure, no claim of any kind.
      expect(await store.complete(claim.token, [entry.dlqId], t0 + 30_000)).toEqual([
        { dlqId: entry.dlqId, outcome: "lost" },
      ]);
      expect(await store.fail(claim.token, [failure(entry.dlqId)], t0 + 30_000)).toEqual([
        { dlqId: entry.dlqId, outcome: "lost" },
      ]);
      expect(await store.claim([entry.dlqId], manual())).toEqual([
        { dlqId: entry.dlqId, outcome: "refused", state: "RESOLVED" },
      ]);
      expect(await store.complete(claim.token, ["unknown"], t0)).toEqual([
        { dlqId: "unknown", outcome: "lost" },
      ]);
    });

    it("puts a failed retry back with its next retry, and DEAD after its last attempt", async () => {
      const store = await harness.create();
      const entry = await store.add(newDlqEntry({ maxAttempts: 2 }));
      let claim = manual();
      await store.claim([entry.dlqId], claim);
      expect(
        await store.fail(
          claim.token,
          [failure(entry.dlqId, 'HTTP 503 — «indisponible» / é "x"', t0 + 50_000)],
          t0 + 40_000,
        ),
      ).toEqual([{ dlqId: entry.dlqId, outcome: "done", state: "PENDING_RETRY" }]);
      expect(await store.get(entry.dlqId)).toMatchObject({
        state: "PENDING_RETRY",
        attempts: 1,
        nextRetryAt: t0 + 50_000,
        failureReason: 'HTTP 503 — «indisponible» / é "x"',
        lastFailedAt: t0 + 40_000,
        firstFailedAt: entry.firstFailedAt,
        claimExpiresAt: 0,
      });
      claim = manual();
      await store.claim([entry.dlqId], claim);
      expect(
        await store.fail(claim.token, [failure(entry.dlqId, "HTTP 500")], t0 + 60_000),
      ).toEqual([{ dlqId: entry.dlqId, outcome: "done", state: "DEAD" }]);
      expect(await store.get(entry.dlqId)).toMatchObject({
        state: "DEAD",
        attempts: 2,
        nextRetryAt: 0,
        failureReason: "HTTP 500",
      });
      // A DEAD entry is retried by hand; failing again leaves it DEAD, one attempt more.
      claim = manual();
      expect((await store.claim([entry.dlqId], claim))[0]?.outcome).toBe("claimed");
      await store.fail(claim.token, [failure(entry.dlqId, "still down")], t0 + 70_000);
      expect(await store.get(entry.dlqId)).toMatchObject({ state: "DEAD", attempts: 3 });
      expect(await store.stats()).toMatchObject({ dead: 1, retrying: 0, retried: 3 });
    });

    it("names the due entries of the types asked for, earliest first, and no others", async () => {
      const store = await harness.create();
      const a = await store.add(newDlqEntry({ nextRetryAt: t0 + 3_000 }));
      const b = await store.add(
        newDlqEntry({ nextRetryAt: t0 + 1_000, eventType: "workflow.step" }),
      );
      const c = await store.add(newDlqEntry({ nextRetryAt: t0 + 2_000 }));
      await store.add(newDlqEntry({ nextRetryAt: t0 + 9_000 }));
      await store.add(newDlqEntry({ nextRetryAt: t0 + 1_500, eventType: "unhandled" }));
      await store.add(newDlqEntry({ maxAttempts: 0 }));
      const types = ["event.delivery", "workflow.step"];
      expect(await store.due(types, t0 + 5_000, 10)).toEqual([b.dlqId, c.dlqId, a.dlqId]);
      expect(await store.due(types, t0 + 5_000, 2)).toEqual([b.dlqId, c.dlqId]);
      expect(await store.due(["event.delivery"], t0 + 2_000, 10)).toEqual([c.dlqId]);
      expect(await store.due([], t0 + 5_000, 10)).toEqual([]);
      // A claimed entry is not due; a failed one is due again at its new time.
      const claim = manual();
      await store.claim([c.dlqId], claim);
      expect(await store.due(types, t0 + 5_000, 10)).toEqual([b.dlqId, a.dlqId]);
      await store.fail(claim.token, [failure(c.dlqId, "again", t0 + 4_000)], t0 + 3_500);
      expect(await store.due(types, t0 + 5_000, 10)).toEqual([b.dlqId, a.dlqId, c.dlqId]);
    });

    it("ends expired claims: due again at once, or DEAD when its attempts are used up", async () => {
      const store = await harness.create();
      const retryable = await store.add(newDlqEntry({ maxAttempts: 3 }));
      const last = await store.add(newDlqEntry({ maxAttempts: 1 }));
      const claim = { ...manual(), expiresAt: t0 + 30_000 };
      await store.claim([retryable.dlqId, last.dlqId], claim);
      expect(await store.expireClaims(t0 + 29_999, 10, "expired")).toEqual([]);
      const expired = await store.expireClaims(t0 + 30_000, 10, "the retry did not finish");
      expect(expired).toEqual([
        {
          dlqId: retryable.dlqId,
          eventType: "event.delivery",
          correlationId: "corr-1",
          attempts: 1,
          state: "PENDING_RETRY",
        },
        {
          dlqId: last.dlqId,
          eventType: "event.delivery",
          correlationId: "corr-1",
          attempts: 1,
          state: "DEAD",
        },
      ]);
      expect(await store.get(retryable.dlqId)).toMatchObject({
        state: "PENDING_RETRY",
        nextRetryAt: t0 + 30_000,
        failureReason: "the retry did not finish",
        lastFailedAt: t0 + 30_000,
        claimExpiresAt: 0,
      });
      expect(await store.due(["event.delivery"], t0 + 30_000, 10)).toEqual([retryable.dlqId]);
      // The claimer that died cannot complete what is no longer its claim.
      expect(await store.complete(claim.token, [retryable.dlqId], t0 + 31_000)).toEqual([
        { dlqId: retryable.dlqId, outcome: "lost" },
      ]);
      expect(await store.expireClaims(t0 + 99_000, 10, "again")).toEqual([]);
      expect(await store.stats()).toMatchObject({ pendingRetry: 1, dead: 1, retrying: 0 });
    });

    it("runs a retry by hand of a DEAD entry once more when its claim expires", async () => {
      const store = await harness.create();
      const dead = await store.add(newDlqEntry({ maxAttempts: 0 }));
      const claim = { ...manual(), expiresAt: t0 + 30_000 };
      await store.claim([dead.dlqId], claim);
      expect(await store.expireClaims(t0 + 30_000, 10, "expired")).toMatchObject([
        { dlqId: dead.dlqId, state: "PENDING_RETRY", attempts: 1 },
      ]);
      expect(await store.due(["event.delivery"], t0 + 30_000, 10)).toEqual([dead.dlqId]);
      // That automatic run is its last: an expiry of its claim leaves it DEAD.
      const auto = { ...manual(), expiresAt: t0 + 60_000, dueBy: t0 + 30_000 };
      expect((await store.claim([dead.dlqId], auto))[0]?.outcome).toBe("claimed");
      expect(await store.expireClaims(t0 + 60_000, 10, "expired again")).toMatchObject([
        { dlqId: dead.dlqId, state: "DEAD", attempts: 2 },
      ]);
    });

    it("forgets resolved entries past their retention, oldest resolution first", async () => {
      const store = await harness.create();
      const entries = [];
      for (let i = 0; i < 4; i++) entries.push(await store.add(newDlqEntry()));
      const claim = manual();
      await store.claim(
        entries.map((e) => e.dlqId),
        claim,
      );
      for (const [i, entry] of entries.slice(0, 3).entries()) {
        await store.complete(claim.token, [entry.dlqId], t0 + 100_000 + i * 1_000);
      }
      expect(await store.purgeResolved(t0 + 101_000, 10)).toBe(1);
      expect(await store.get(entries[0]?.dlqId as string)).toBeUndefined();
      expect(await store.purgeResolved(t0 + 200_000, 1)).toBe(1);
      expect(await store.get(entries[1]?.dlqId as string)).toBeUndefined();
      expect((await store.get(entries[2]?.dlqId as string))?.state).toBe("RESOLVED");
      // Unresolved entries are never purged.
      expect(await store.purgeResolved(t0 + 999_000, 10)).toBe(1);
      expect((await store.get(entries[3]?.dlqId as string))?.state).toBe("RETRYING");
      const stats = await store.stats();
      expect(stats).toMatchObject({ resolved: 0, retrying: 1, entries: 1 });
      expect(stats.bytes).toBe(
        dlqEntryWeight({ ...newDlqEntry(), dlqId: entries[3]?.dlqId as string }),
      );
    });

    it("lists entries oldest first, filtered, page by page, each exactly once", async () => {
      const store = await harness.create({ scanLimit: 3 });
      const added: DlqEntry[] = [];
      for (let i = 0; i < 17; i++) {
        added.push(
          await store.add(
            newDlqEntry({
              offsetMs: 1_000 + i,
              eventType: i % 2 === 0 ? "event.delivery" : "workflow.step",
              serviceName: i % 3 === 0 ? "github-agent" : "billing",
              maxAttempts: i % 4 === 0 ? 0 : 3,
            }),
          ),
        );
      }
      const ids = (entries: readonly DlqEntry[]) => entries.map((e) => e.dlqId);
      expect(ids(await walk(store, {}, 4))).toEqual(ids(added));
      expect(ids(await walk(store, {}, 1_000))).toEqual(ids(added));
      const dead = added.filter((e) => e.state === "DEAD");
      expect(ids(await walk(store, { states: ["DEAD"] }, 2))).toEqual(ids(dead));
      const steps = added.filter(
        (e) => e.eventType === "workflow.step" && e.serviceName === "billing",
      );
      expect(
        ids(await walk(store, { eventType: "workflow.step", serviceName: "billing" }, 2)),
      ).toEqual(ids(steps));
      const open = added.filter((e) => e.serviceName === "github-agent");
      expect(
        ids(
          await walk(store, { states: ["PENDING_RETRY", "DEAD"], serviceName: "github-agent" }, 5),
        ),
      ).toEqual(ids(open));
      // A call examines at most the scan limit: a page may be short, and says where to go on.
      const first = await store.list({ eventType: "workflow.step" }, { after: "", limit: 10 });
      expect(first.items.length).toBeLessThanOrEqual(3);
      expect(first.next).not.toBe("");
      // Pages end once their payloads reach maxBytes, with one entry at least.
      const small = await store.list({}, { after: "", limit: 10, maxBytes: 1 });
      expect(ids(small.items)).toEqual([added[0]?.dlqId]);
      // The selection names the same entries without payloads.
      const selected = await store.select({ states: ["DEAD"] }, { after: "", limit: 100 });
      expect(selected.items.map((r) => r.dlqId)).toEqual(ids(dead.slice(0, selected.items.length)));
      expect(selected.items[0]).toEqual({
        dlqId: dead[0]?.dlqId,
        eventType: dead[0]?.eventType,
        serviceName: dead[0]?.serviceName,
        state: "DEAD",
      });
      // Nothing after the last entry.
      expect(await store.list({}, { after: added[16]?.dlqId as string, limit: 10 })).toEqual({
        items: [],
        next: "",
      });
    });

    it("counts by state, type and service from what it holds, as transitions happen", async () => {
      const store = await harness.create();
      expect(await store.stats()).toEqual({
        pendingRetry: 0,
        retrying: 0,
        dead: 0,
        resolved: 0,
        retried: 0,
        byType: {},
        byService: {},
        oldestFailedAt: 0,
        entries: 0,
        bytes: 0,
      });
      const inputs = [
        newDlqEntry({ offsetMs: 100 }),
        newDlqEntry({ offsetMs: 200, eventType: "workflow.step", serviceName: "" }),
        newDlqEntry({ offsetMs: 300, maxAttempts: 0 }),
        newDlqEntry({ offsetMs: 400, serviceName: "jira-agent" }),
      ];
      for (const input of inputs) await store.add(input);
      const [first, second, third] = inputs as [NewDlqEntry, NewDlqEntry, NewDlqEntry];
      const claim = manual();
      await store.claim([first.dlqId, second.dlqId], claim);
      await store.complete(claim.token, [first.dlqId], t0 + 50_000);
      expect(await store.stats()).toEqual({
        pendingRetry: 1,
        retrying: 1,
        dead: 1,
        resolved: 1,
        retried: 2,
        byType: { "event.delivery": 2, "workflow.step": 1 },
        byService: { billing: 1, "jira-agent": 1 },
        // The oldest unresolved: the first is resolved.
        oldestFailedAt: second.failedAt,
        entries: 4,
        bytes: inputs.reduce((sum, input) => sum + dlqEntryWeight(input), 0),
      });
      await store.complete(claim.token, [second.dlqId], t0 + 60_000);
      const later = await store.stats();
      expect(later.byType).toEqual({ "event.delivery": 2 });
      expect(later.oldestFailedAt).toBe(third.failedAt);
    });

    it("makes room by forgetting the oldest resolved entries, and refuses when only unresolved ones are left", async () => {
      const store = await harness.create({ maxEntries: 3 });
      const a = await store.add(newDlqEntry());
      const b = await store.add(newDlqEntry());
      await store.add(newDlqEntry());
      const full = await failureOf(store.add(newDlqEntry()));
      expect(full.kind).toBe("resource_exhausted");
      expect(full.message).toMatch(/full/);
      const claim = manual();
      await store.claim([a.dlqId, b.dlqId], claim);
      // b resolved first: it goes first.
      await store.complete(claim.token, [b.dlqId], t0 + 1_000);
      await store.complete(claim.token, [a.dlqId], t0 + 2_000);
      const d = await store.add(newDlqEntry());
      expect(await store.get(b.dlqId)).toBeUndefined();
      expect((await store.get(a.dlqId))?.state).toBe("RESOLVED");
      expect((await store.get(d.dlqId))?.state).toBe("PENDING_RETRY");
      expect((await store.stats()).entries).toBe(3);

      const weight = dlqEntryWeight(newDlqEntry());
      const bounded = await harness.create({ maxBytes: weight * 2 + 10 });
      await bounded.add(newDlqEntry());
      await bounded.add(newDlqEntry());
      expect((await failureOf(bounded.add(newDlqEntry()))).kind).toBe("resource_exhausted");
      expect((await bounded.stats()).bytes).toBe(weight * 2);
    });

    it("lets exactly one of many simultaneous claims of an entry win", async () => {
      const store = await harness.create();
      const other = harness.twin ? await harness.twin(store) : store;
      const ids: string[] = [];
      for (let i = 0; i < 50; i++)
        ids.push((await store.add(newDlqEntry({ maxAttempts: 0 }))).dlqId);
      const claims = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          (i % 2 === 0 ? store : other).claim(i % 3 === 0 ? [...ids].reverse() : ids, manual()),
        ),
      );
      const winners = claims.flatMap((results) => claimed(results).map((e) => e.dlqId));
      expect(winners.sort()).toEqual([...ids].sort());
      expect((await store.stats()).retried).toBe(50);
    });

    if (harness.reopen) {
      const reopen = harness.reopen;
      it("gives every entry back in its state after a restart", async () => {
        const store = await harness.create();
        const pending = await store.add(newDlqEntry());
        const dead = await store.add(newDlqEntry({ maxAttempts: 0 }));
        const retrying = await store.add(newDlqEntry());
        const resolved = await store.add(newDlqEntry());
        const claim = manual();
        await store.claim([retrying.dlqId, resolved.dlqId], claim);
        await store.complete(claim.token, [resolved.dlqId], t0 + 5_000);
        const before = await Promise.all(
          [pending, dead, retrying, resolved].map((e) => store.get(e.dlqId)),
        );
        const stats = await store.stats();
        await store.close();
        const again = await reopen(store);
        expect(
          await Promise.all([pending, dead, retrying, resolved].map((e) => again.get(e.dlqId))),
        ).toEqual(before);
        expect(await again.stats()).toEqual(stats);
        // The claim still holds after the restart, and expires as it would have.
        expect(await again.complete(claim.token, [retrying.dlqId], t0 + 6_000)).toEqual([
          { dlqId: retrying.dlqId, outcome: "done", state: "RESOLVED" },
        ]);
      });
    }
  });
}

function failure(dlqId: string, reason = "failed", nextRetryAt = t0 + 90_000) {
  return { dlqId, reason, nextRetryAt };
}
