import { createRequire } from "node:module";
import { DomainError } from "../errors/domain-error.js";
import { type DlqStore, type DlqStoreLimits, dlqStoreDefaults } from "./dlq-store.js";
import {
  type ClaimResult,
  type DlqEntry,
  type DlqPage,
  type DlqPageRequest,
  type DlqQuery,
  type DlqRef,
  type DlqState,
  type DlqStats,
  dlqEntryWeight,
  dlqStates,
  type ExpiredClaim,
  indexNameFor,
  initialEntry,
  type NewDlqEntry,
  type TransitionResult,
} from "./model.js";

// sorted-btree is CommonJS, its class the `default` of its exports: required as Node loads it, so
// that every loader (Node, tsx, vitest) sees the same module object.
const { default: BTree } = createRequire(import.meta.url)(
  "sorted-btree",
) as typeof import("sorted-btree");
type Index = InstanceType<typeof BTree<string, string>>;

interface Held {
  entry: DlqEntry;
  readonly weight: number;
  /** The token of the claim holding it; "" unless RETRYING. */
  token: string;
  /** The state it was claimed from; "" unless RETRYING. */
  claimedFrom: DlqState | "";
}

/**
 * The DLQ in this process: lost when it stops. Indexes are B+ trees (ids in order per state, due
 * times per type, claim expiries, resolution times), so that every operation costs O(log n) and
 * a page costs what it examines, also at `maxEntries`.
 * @throws RangeError when a limit is not a positive integer.
 */
export function createMemoryDlqStore(options: Partial<DlqStoreLimits> = {}): DlqStore {
  const limits = checkedLimits(options);
  const records = new Map<string, Held>();
  const all: Index = new BTree();
  const open: Index = new BTree();
  const byState = Object.fromEntries(dlqStates.map((s) => [s, new BTree()])) as Record<
    DlqState,
    Index
  >;
  // Keyed "<time>|<id>" (time zero-padded), valued by id.
  const due = new Map<string, Index>();
  const claims: Index = new BTree();
  const resolvedAt: Index = new BTree();
  const counts: Record<DlqState, number> = {
    PENDING_RETRY: 0,
    RETRYING: 0,
    DEAD: 0,
    RESOLVED: 0,
  };
  const byType = new Map<string, number>();
  const byService = new Map<string, number>();
  let retried = 0;
  let bytes = 0;

  const dueOf = (type: string): Index => {
    let index = due.get(type);
    if (index === undefined) {
      index = new BTree();
      due.set(type, index);
    }
    return index;
  };

  const countOpen = (entry: DlqEntry, delta: number) => {
    bump(byType, entry.eventType, delta);
    if (entry.serviceName !== "") bump(byService, entry.serviceName, delta);
  };

  // Every index and count follows the entry's state: `leave` before it changes, `enter` after.
  const leave = (entry: DlqEntry) => {
    byState[entry.state].delete(entry.dlqId);
    counts[entry.state]--;
    if (entry.state === "PENDING_RETRY") {
      const index = dueOf(entry.eventType);
      index.delete(timeKey(entry.nextRetryAt, entry.dlqId));
      if (index.size === 0) due.delete(entry.eventType);
    } else if (entry.state === "RETRYING") {
      claims.delete(timeKey(entry.claimExpiresAt, entry.dlqId));
    } else if (entry.state === "RESOLVED") {
      resolvedAt.delete(timeKey(entry.resolvedAt, entry.dlqId));
    }
  };
  const enter = (entry: DlqEntry) => {
    byState[entry.state].set(entry.dlqId, entry.dlqId);
    counts[entry.state]++;
    if (entry.state === "PENDING_RETRY") {
      dueOf(entry.eventType).set(timeKey(entry.nextRetryAt, entry.dlqId), entry.dlqId);
    } else if (entry.state === "RETRYING") {
      claims.set(timeKey(entry.claimExpiresAt, entry.dlqId), entry.dlqId);
    } else if (entry.state === "RESOLVED") {
      resolvedAt.set(timeKey(entry.resolvedAt, entry.dlqId), entry.dlqId);
      open.delete(entry.dlqId);
      countOpen(entry, -1);
    }
  };
  const transition = (held: Held, next: DlqEntry, token: string) => {
    leave(held.entry);
    held.claimedFrom = next.state === "RETRYING" ? held.entry.state : "";
    held.entry = Object.freeze(next);
    held.token = token;
    enter(held.entry);
  };

  const forget = (dlqId: string) => {
    const held = records.get(dlqId);
    if (held === undefined) return;
    leave(held.entry);
    if (held.entry.state !== "RESOLVED") {
      open.delete(dlqId);
      countOpen(held.entry, -1);
    }
    all.delete(dlqId);
    records.delete(dlqId);
    bytes -= held.weight;
  };

  /** Forgets the oldest resolved entries until `weight` more fits; false if it cannot. */
  const makeRoom = (weight: number): boolean => {
    while (records.size + 1 > limits.maxEntries || bytes + weight > limits.maxBytes) {
      const oldest = resolvedAt.minKey();
      if (oldest === undefined) return false;
      forget(resolvedAt.get(oldest) as string);
    }
    return true;
  };

  const scan = <T>(
    query: DlqQuery,
    page: DlqPageRequest,
    take: (held: Held) => T,
    weigh: (held: Held) => number,
  ): DlqPage<T> => {
    const index = indexFor(query, { all, open, byState });
    const items: T[] = [];
    let examined = 0;
    let taken = 0;
    let last = "";
    for (const id of index.keys(page.after === "" ? undefined : page.after)) {
      if (id === page.after) continue;
      if (examined >= limits.scanLimit) break;
      examined++;
      last = id;
      const held = records.get(id);
      if (held === undefined || !matches(held.entry, query)) continue;
      items.push(take(held));
      taken += weigh(held);
      if (items.length >= page.limit || taken >= (page.maxBytes ?? Number.POSITIVE_INFINITY)) {
        break;
      }
    }
    const next = last !== "" && index.nextHigherKey(last) !== undefined ? last : "";
    return { items, next };
  };

  return {
    open: async () => {},
    close: async () => {},

    async add(input: NewDlqEntry): Promise<DlqEntry> {
      if (records.has(input.dlqId)) {
        throw new DomainError("already_exists", `dlq entry ${input.dlqId} exists already`);
      }
      const weight = dlqEntryWeight(input);
      if (!makeRoom(weight)) throw full(records.size + 1 > limits.maxEntries);
      // The payload is copied, as a Redis store would: the caller may change its object later.
      const entry = Object.freeze({
        ...initialEntry(input),
        payload: structuredClone(input.payload),
      });
      records.set(entry.dlqId, { entry, weight, token: "", claimedFrom: "" });
      all.set(entry.dlqId, entry.dlqId);
      open.set(entry.dlqId, entry.dlqId);
      countOpen(entry, 1);
      enter(entry);
      bytes += weight;
      return entry;
    },

    get: async (dlqId) => records.get(dlqId)?.entry,

    refs: async (dlqIds) =>
      dlqIds.map((id) => {
        const held = records.get(id);
        return held === undefined ? undefined : refOf(held.entry);
      }),

    list: async (query, page) =>
      scan(
        query,
        page,
        (held) => held.entry,
        (held) => held.weight,
      ),

    select: async (query, page) =>
      scan(
        query,
        page,
        (held) => refOf(held.entry),
        () => 0,
      ),

    async claim(dlqIds, request): Promise<ClaimResult[]> {
      return dlqIds.map((dlqId): ClaimResult => {
        const held = records.get(dlqId);
        if (held === undefined) return { dlqId, outcome: "missing" };
        const { entry } = held;
        const allowed = (request.from as readonly DlqState[]).includes(entry.state);
        const dueNow =
          request.dueBy === undefined ||
          (entry.state === "PENDING_RETRY" && entry.nextRetryAt <= request.dueBy);
        if (!allowed || !dueNow) return { dlqId, outcome: "refused", state: entry.state };
        transition(
          held,
          {
            ...entry,
            state: "RETRYING",
            attempts: entry.attempts + 1,
            nextRetryAt: 0,
            claimExpiresAt: request.expiresAt,
          },
          request.token,
        );
        retried++;
        return { dlqId, outcome: "claimed", entry: held.entry };
      });
    },

    async complete(token, dlqIds, now): Promise<TransitionResult[]> {
      return dlqIds.map((dlqId): TransitionResult => {
        const held = records.get(dlqId);
        if (held === undefined || held.entry.state !== "RETRYING" || held.token !== token) {
          return { dlqId, outcome: "lost" };
        }
        transition(
          held,
          { ...held.entry, state: "RESOLVED", resolvedAt: now, claimExpiresAt: 0 },
          "",
        );
        return { dlqId, outcome: "done", state: "RESOLVED" };
      });
    },

    async fail(token, failures, now): Promise<TransitionResult[]> {
      return failures.map(({ dlqId, reason, nextRetryAt }): TransitionResult => {
        const held = records.get(dlqId);
        if (held === undefined || held.entry.state !== "RETRYING" || held.token !== token) {
          return { dlqId, outcome: "lost" };
        }
        const next = afterFailure(held.entry, reason, now, nextRetryAt, false);
        transition(held, next, "");
        return { dlqId, outcome: "done", state: next.state };
      });
    },

    async due(eventTypes, now, limit): Promise<string[]> {
      const found: string[] = [];
      for (const type of new Set(eventTypes)) {
        let taken = 0;
        for (const key of due.get(type)?.keys() ?? []) {
          if (taken >= limit || timeOf(key) > now) break;
          found.push(key);
          taken++;
        }
      }
      // Earliest due first across types: the keys sort by time, then id.
      return found
        .sort()
        .slice(0, limit)
        .map((key) => key.slice(17));
    },

    async expireClaims(now, limit, reason): Promise<ExpiredClaim[]> {
      const expired: ExpiredClaim[] = [];
      for (const [key, id] of claims.entries()) {
        if (expired.length >= limit || timeOf(key) > now) break;
        const held = records.get(id) as Held;
        const next = afterFailure(held.entry, reason, now, now, held.claimedFrom === "DEAD");
        expired.push({
          dlqId: id,
          eventType: next.eventType,
          correlationId: next.correlationId,
          attempts: next.attempts,
          state: next.state,
        });
      }
      // Applied after the walk: a transition changes the tree being walked.
      for (const { dlqId } of expired) {
        const held = records.get(dlqId) as Held;
        const owed = held.claimedFrom === "DEAD";
        transition(held, afterFailure(held.entry, reason, now, now, owed), "");
      }
      return expired;
    },

    async purgeResolved(before, limit): Promise<number> {
      const old: string[] = [];
      for (const [key, id] of resolvedAt.entries()) {
        if (old.length >= limit || timeOf(key) >= before) break;
        old.push(id);
      }
      for (const id of old) forget(id);
      return old.length;
    },

    async stats(): Promise<DlqStats> {
      const oldest = open.minKey();
      return {
        pendingRetry: counts.PENDING_RETRY,
        retrying: counts.RETRYING,
        dead: counts.DEAD,
        resolved: counts.RESOLVED,
        retried,
        byType: Object.fromEntries(byType),
        byService: Object.fromEntries(byService),
        oldestFailedAt: oldest === undefined ? 0 : (records.get(oldest)?.entry.firstFailedAt ?? 0),
        entries: records.size,
        bytes,
      };
    },
  };
}

function checkedLimits(options: Partial<DlqStoreLimits>): DlqStoreLimits {
  const limits = { ...dlqStoreDefaults, ...options };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value < 1) {
      throw new RangeError(`${name} must be a positive integer, not ${value}`);
    }
  }
  return limits;
}

/**
 * The entry after a failed retry (or an expired claim): its next retry, or DEAD once its attempts
 * are used up, unless a retry is `owed` (a retry by hand of a DEAD entry whose node died: it is
 * run once more, automatically).
 */
function afterFailure(
  entry: DlqEntry,
  reason: string,
  now: number,
  nextRetryAt: number,
  owed: boolean,
): DlqEntry {
  const dead = entry.attempts >= entry.maxAttempts && !owed;
  return {
    ...entry,
    state: dead ? "DEAD" : "PENDING_RETRY",
    nextRetryAt: dead ? 0 : nextRetryAt,
    failureReason: reason,
    lastFailedAt: now,
    claimExpiresAt: 0,
  };
}

function refOf(entry: DlqEntry): DlqRef {
  return {
    dlqId: entry.dlqId,
    eventType: entry.eventType,
    serviceName: entry.serviceName,
    state: entry.state,
  };
}

function indexFor(
  query: DlqQuery,
  indexes: { all: Index; open: Index; byState: Record<DlqState, Index> },
): Index {
  const name = indexNameFor(query);
  if (name === "all") return indexes.all;
  if (name === "open") return indexes.open;
  return indexes.byState[name];
}

function matches(entry: DlqEntry, query: DlqQuery): boolean {
  const states = query.states ?? [];
  return (
    (states.length === 0 || states.includes(entry.state)) &&
    (!query.eventType || entry.eventType === query.eventType) &&
    (!query.serviceName || entry.serviceName === query.serviceName)
  );
}

function full(byCount: boolean): DomainError {
  return new DomainError(
    "resource_exhausted",
    byCount
      ? "the dead-letter queue is full (entries): resolve or retry entries first"
      : "the dead-letter queue is full (bytes): resolve or retry entries first",
  );
}

function bump(counts: Map<string, number>, key: string, delta: number): void {
  const next = (counts.get(key) ?? 0) + delta;
  if (next > 0) counts.set(key, next);
  else counts.delete(key);
}

/** "<time, 16 digits>|<id>": sorts by time, then id. */
function timeKey(time: number, dlqId: string): string {
  return `${String(Math.max(0, time)).padStart(16, "0")}|${dlqId}`;
}

function timeOf(key: string): number {
  return Number(key.slice(0, 16));
}
