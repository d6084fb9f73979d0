import { type Clock, systemClock } from "../clock.js";
import { type IdSource, randomIds } from "../ids.js";
import { emptyCounts, type Saga, type SagaStatus, type SagaStep, sagaStatuses } from "./model.js";
import { checkSagaTransition, checkStepTransition } from "./saga-machine.js";
import {
  applyStepRule,
  boundedSagaError,
  checkLease,
  checkVersion,
  draftSaga,
  draftStepChange,
  durationOf,
  finishedKey,
  leaseHeld,
  leaseLost,
  leaseOfFinished,
  listingKey,
  noSuchStep,
  outputNotTaken,
  pageOf,
  pageTokenAfter,
  type SagaStoreLimits,
  sagaChanged,
  sagaExists,
  sagaNotFound,
  sagaStoreLimits,
  sagaTooLarge,
  stepChanged,
  stepWeight,
  storeFull,
  summaryOf,
  utf8Bytes,
} from "./saga-records.js";
import type { LeaseProof, SagaStore } from "./saga-store.js";
import { SortedKeys } from "./sorted-keys.js";

/** What the memory saga store works with. */
export interface MemorySagaStoreDeps {
  /** Times of creation and transitions, and the retention cutoff. Default: `systemClock`. */
  readonly clock?: Clock;
  /** Where a saga's id comes from when the caller gives none. Default: `randomIds`. */
  readonly ids?: IdSource;
}

/** A stored saga and what it counts for. */
interface Held {
  readonly saga: Saga;
  readonly weight: number;
}

/**
 * Sagas in this process: the default store, lost when the process ends. Applies the same table,
 * bounds and retention as the Redis store, each method at once and atomically (nothing awaits
 * between its check and its change).
 * @throws RangeError when a bound is not a positive integer (see {@link sagaStoreLimits}).
 */
export function createMemorySagaStore(
  deps: MemorySagaStoreDeps = {},
  options: Partial<SagaStoreLimits> = {},
): SagaStore {
  const { clock = systemClock, ids = randomIds } = deps;
  const limits = sagaStoreLimits(options);
  const sagas = new Map<string, Held>();
  const listings = new Map<SagaStatus, SortedKeys>(
    sagaStatuses.map((status) => [status, new SortedKeys()]),
  );
  // Finished sagas by finish time: the order retention forgets them in.
  const finished = new SortedKeys();
  const counts = emptyCounts();
  let finishedDurationMs = 0;
  let bytes = 0;

  const listing = (status: SagaStatus): SortedKeys => listings.get(status) as SortedKeys;

  const forget = (sagaId: string): void => {
    const held = sagas.get(sagaId);
    if (held === undefined) return;
    const { saga } = held;
    sagas.delete(sagaId);
    listing(saga.status).delete(listingKey(saga.createdAt, sagaId));
    counts[saga.status]--;
    bytes -= held.weight;
    if (saga.finishedAt !== undefined) {
      finished.delete(finishedKey(saga.finishedAt, sagaId));
      finishedDurationMs -= durationOf(saga);
    }
  };

  /** The oldest finished saga other than `keep`, if any. */
  const oldestFinished = (keep: string): string | undefined => {
    for (const key of finished.after("", 2)) {
      const sagaId = key.slice(key.indexOf("|") + 1);
      if (sagaId !== keep) return sagaId;
    }
    return undefined;
  };

  // The oldest finished sagas make room for `extra` more bytes; running ones are never dropped.
  const makeRoom = (extra: number, keep: string): void => {
    if (extra <= 0) return;
    while (bytes + extra > limits.maxBytes) {
      const oldest = oldestFinished(keep);
      if (oldest === undefined) throw storeFull(limits.maxBytes);
      forget(oldest);
    }
  };

  const store = (next: Held, previous: Held | undefined): void => {
    const { saga } = next;
    if (previous !== undefined) {
      const before = previous.saga;
      listing(before.status).delete(listingKey(before.createdAt, before.sagaId));
      counts[before.status]--;
      bytes -= previous.weight;
    }
    sagas.set(saga.sagaId, next);
    listing(saga.status).add(listingKey(saga.createdAt, saga.sagaId));
    counts[saga.status]++;
    bytes += next.weight;
    if (saga.finishedAt !== undefined && previous?.saga.finishedAt === undefined) {
      finished.add(finishedKey(saga.finishedAt, saga.sagaId));
      finishedDurationMs += durationOf(saga);
      while (finished.size > limits.maxFinished) {
        const oldest = oldestFinished(saga.sagaId);
        if (oldest === undefined) break;
        forget(oldest);
      }
    }
  };

  /** @throws leaseLost unless `proof` (when given) names the saga's lease. */
  const checkProof = (saga: Saga, proof: LeaseProof | undefined): void => {
    if (proof === undefined) return;
    const lease = saga.lease;
    if (lease === undefined || lease.token !== proof.token || lease.holder !== proof.holder) {
      throw leaseLost(saga.sagaId, lease?.token ?? 0);
    }
  };

  /** Replaces the saga's lease; nothing else changes (not even its version). */
  const setLease = (held: Held, lease: Saga["lease"]): void => {
    const next: Saga = {
      ...held.saga,
      lease: lease === undefined ? undefined : Object.freeze(lease),
    };
    sagas.set(next.sagaId, { saga: freezeSaga(next), weight: held.weight });
  };

  return {
    open: async () => {},
    close: async () => {},

    async create(input) {
      const draft = draftSaga(input, limits, clock.now(), ids);
      const { saga } = draft;
      if (sagas.has(saga.sagaId)) throw sagaExists(saga.sagaId);
      makeRoom(draft.weight, saga.sagaId);
      store({ saga: freezeSaga(saga), weight: draft.weight }, undefined);
      return saga;
    },

    async get(sagaId) {
      return sagas.get(sagaId)?.saga;
    },

    async transition(sagaId, change) {
      checkVersion(change.expectedVersion);
      const error = boundedSagaError(change.error);
      const held = sagas.get(sagaId);
      if (held === undefined) throw sagaNotFound(sagaId);
      const { saga } = held;
      checkProof(saga, change.lease);
      if (saga.version !== change.expectedVersion) throw sagaChanged(sagaId, saga.version);
      const rule = checkSagaTransition(saga.status, change.to, saga.steps);
      const nextError = error ?? saga.error;
      const weight = held.weight + utf8Bytes(nextError) - utf8Bytes(saga.error);
      if (weight > limits.maxSagaBytes) throw sagaTooLarge(weight, limits.maxSagaBytes);
      makeRoom(weight - held.weight, sagaId);
      const now = clock.now();
      const next: Saga = {
        ...saga,
        status: change.to,
        error: nextError,
        steps: rule.effects.finish ? saga.steps.map(skipIfPending) : saga.steps,
        updatedAt: now,
        finishedAt: rule.effects.finish ? now : saga.finishedAt,
        version: saga.version + 1,
      };
      store({ saga: freezeSaga(next), weight }, held);
      return next;
    },

    async transitionStep(sagaId, stepIndex, change) {
      const draft = draftStepChange(change, limits);
      const held = sagas.get(sagaId);
      if (held === undefined) throw sagaNotFound(sagaId);
      const { saga } = held;
      const step = Number.isInteger(stepIndex) ? saga.steps[stepIndex] : undefined;
      if (step === undefined) throw noSuchStep(sagaId, stepIndex);
      checkProof(saga, change.lease);
      if (step.version !== change.expectedVersion) {
        throw stepChanged(sagaId, step.name, step.version);
      }
      const rule = checkStepTransition(step.name, step.status, change.to, saga.status);
      if (draft.output !== undefined && !rule.effects.output) throw outputNotTaken(rule);
      const now = clock.now();
      const moved = applyStepRule(step, rule, draft, now);
      const weight = held.weight + stepWeight(moved) - stepWeight(step);
      if (weight > limits.maxSagaBytes) throw sagaTooLarge(weight, limits.maxSagaBytes);
      makeRoom(weight - held.weight, sagaId);
      const steps = saga.steps.map((s) => (s.index === stepIndex ? moved : s));
      const next: Saga = { ...saga, steps, updatedAt: now, version: saga.version + 1 };
      store({ saga: freezeSaga(next), weight }, held);
      return { saga: summaryOf(next), step: moved };
    },

    async takeLease(sagaId, request) {
      checkLease(request.holder, request.ttlMs);
      const held = sagas.get(sagaId);
      if (held === undefined) throw sagaNotFound(sagaId);
      const { saga } = held;
      if (saga.finishedAt !== undefined) throw leaseOfFinished(sagaId, saga.status);
      const now = clock.now();
      const current = saga.lease;
      if (current !== undefined && current.expiresAt > now && request.force !== true) {
        throw leaseHeld(sagaId);
      }
      const lease = {
        holder: request.holder,
        token: (current?.token ?? 0) + 1,
        expiresAt: Math.floor(now + request.ttlMs),
      };
      setLease(held, lease);
      return lease;
    },

    async renewLease(sagaId, proof, ttlMs) {
      checkLease(proof.holder, ttlMs);
      const held = sagas.get(sagaId);
      if (held === undefined) throw sagaNotFound(sagaId);
      const { saga } = held;
      checkProof(saga, proof);
      if (saga.finishedAt !== undefined) throw leaseOfFinished(sagaId, saga.status);
      const lease = {
        holder: proof.holder,
        token: proof.token,
        expiresAt: Math.floor(clock.now() + ttlMs),
      };
      setLease(held, lease);
      return lease;
    },

    async list(query) {
      const { pageSize, after } = pageOf(query);
      const keys = listing(query.status).after(after, pageSize + 1);
      const page = keys.slice(0, pageSize);
      const sagasOnPage = page.map((key) => {
        const held = sagas.get(key.slice(key.indexOf("|") + 1)) as Held;
        return summaryOf(held.saga);
      });
      const last = page[page.length - 1];
      return {
        sagas: sagasOnPage,
        nextPageToken: keys.length > pageSize && last !== undefined ? pageTokenAfter(last) : "",
      };
    },

    async counts() {
      return { byStatus: { ...counts }, finishedDurationMs };
    },

    async sweep() {
      const cutoff = finishedKey(clock.now() - limits.retentionMs, "");
      let forgotten = 0;
      for (;;) {
        const oldest = finished.first();
        if (oldest === undefined || oldest >= cutoff) return forgotten;
        forget(oldest.slice(oldest.indexOf("|") + 1));
        forgotten++;
      }
    },
  };
}

function skipIfPending(step: SagaStep): SagaStep {
  return step.status === "PENDING"
    ? { ...step, status: "SKIPPED", version: step.version + 1 }
    : step;
}

// Stored sagas are shared with every reader: frozen, so that none can change another's copy.
function freezeSaga(saga: Saga): Saga {
  for (const step of saga.steps) Object.freeze(step);
  Object.freeze(saga.steps);
  return Object.freeze(saga);
}
