import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import type { EventLog } from "../events/event-log.js";
import type { IdSource } from "../ids.js";
import { type BackoffPolicy, retryDelay } from "./backoff.js";
import type { DeadLetterHandler, DeadLetterInput, DeadLetters } from "./dead-letters.js";
import type { DlqStore } from "./dlq-store.js";
import {
  type ClaimableState,
  type DlqEntry,
  type DlqQuery,
  type DlqRef,
  type DlqState,
  type DlqStats,
  dlqIdSequence,
  isDlqId,
  maxFailureReasonLength,
} from "./model.js";
import { createRetrySlots, type RetrySlots } from "./retry-slots.js";

/** How the queue retries and what it accepts. */
export interface DeadLetterQueueOptions {
  /** Ceiling of the first wait before a retry, doubling per attempt. Default 1,000 ms. */
  readonly baseDelayMs: number;
  /** The wait's ceiling never grows past this. Default 300,000 ms (5 min). */
  readonly maxDelayMs: number;
  /** Automatic retries of an entry that does not say, before it is DEAD. Default 5. */
  readonly maxAttempts: number;
  /** Retries running at once on this node, automatic and by hand together. Default 32. */
  readonly concurrency: number;
  /**
   * How long one retry may run before it counts as failed (its handler's signal aborts). A claim
   * lasts twice this: only a node that died or hung leaves one to expire. Default 30,000 ms.
   */
  readonly retryTimeoutMs: number;
  /** How often due entries and expired claims are looked for. Default 1,000 ms. */
  readonly pollIntervalMs: number;
  /** Largest payload of an entry, as JSON. Default 65,536 bytes. */
  readonly maxPayloadBytes: number;
  /** How long a RESOLVED entry is kept. Default 86,400,000 ms (a day). */
  readonly resolvedRetentionMs: number;
  /** How long `stop()` waits for running retries before it aborts them. Default 10,000 ms. */
  readonly stopTimeoutMs: number;
}

export const deadLetterQueueDefaults: Readonly<DeadLetterQueueOptions> = Object.freeze({
  baseDelayMs: 1_000,
  maxDelayMs: 300_000,
  maxAttempts: 5,
  concurrency: 32,
  retryTimeoutMs: 30_000,
  pollIntervalMs: 1_000,
  maxPayloadBytes: 65_536,
  resolvedRetentionMs: 86_400_000,
  stopTimeoutMs: 10_000,
});

/** What the queue is built on. */
export interface DeadLetterQueueDeps {
  readonly store: DlqStore;
  readonly clock: Clock;
  /** Entry ids and claim tokens come from its `uuid()`. */
  readonly ids: IdSource;
  /** Where `dlq.entry.added`, `dlq.entry.dead` and `dlq.entry.resolved` go. */
  readonly events: EventLog;
  /** Where failures of the background work are reported. Default: nowhere. */
  readonly logger?: Logger;
  /** Numbers in [0, 1) for the backoff's jitter. Default `Math.random`. */
  readonly random?: () => number;
}

/** Which entries a retry by hand takes: the ids given, or those the filter selects. */
export interface DlqRetrySelection {
  /** These entries (each considered once); empty: the filter below. */
  readonly dlqIds?: readonly string[];
  readonly eventType?: string;
  readonly serviceName?: string;
  /** PENDING_RETRY, DEAD or both (empty or absent: both). */
  readonly states?: readonly ClaimableState[];
  /** Entries the filter selects at most. Default 100. */
  readonly limit?: number;
}

/** What a retry by hand did to one entry. */
export interface DlqRetryResult {
  readonly dlqId: string;
  /**
   * "resolved"; "failed" (it stays, with its next retry or DEAD); "skipped" (not claimed: unknown,
   * already claimed or resolved, or no handler for its type on this node; `error` says which).
   */
  readonly outcome: "resolved" | "failed" | "skipped";
  /** Its state afterwards, when known. */
  readonly state?: DlqState;
  readonly error: string;
}

/** What a retry by hand did. */
export interface DlqRetryReport {
  /** Entries selected. */
  readonly total: number;
  /** Entries claimed and run. */
  readonly retried: number;
  /** Of those, the ones that failed again. */
  readonly failed: number;
  readonly results: readonly DlqRetryResult[];
}

/** One page of a listing. */
export interface DlqListing {
  readonly entries: readonly DlqEntry[];
  /** Pass back to continue; "" when nothing follows. */
  readonly nextPageToken: string;
}

/** The dead-letter queue: what capabilities record failures in, and what operators drive. */
export interface DeadLetterQueue extends DeadLetters {
  /** Starts the retry scheduler. Idempotent. */
  start(): void;
  /**
   * Stops the scheduler, waits up to `stopTimeoutMs` for running retries, then aborts their
   * signals (a retry cut short counts as failed, or stays claimed until its claim expires if
   * that cannot be recorded). Idempotent.
   */
  stop(): Promise<void>;
  /**
   * One pass of the scheduler now, awaited to the end: ends expired claims, forgets resolved
   * entries past their retention, claims the due entries of handled types (as many as there are
   * free retry slots) and runs them. What the scheduler does every `pollIntervalMs`.
   * @returns the retries run.
   */
  runDue(): Promise<number>;
  /**
   * Retries entries now, each claimed once even when other nodes retry the same ones.
   * @throws DomainError as the store's methods when selecting fails; later store failures are
   *   reported per entry.
   */
  retry(selection: DlqRetrySelection): Promise<DlqRetryReport>;
  /**
   * Entries in the order they were added, a page at a time (`pageSize` 1 to 1,000, 0 means 100;
   * a page also ends at 4 MiB of payloads).
   * @throws DomainError "invalid" for a page token this queue did not issue.
   */
  list(query: DlqQuery, pageToken: string, pageSize: number): Promise<DlqListing>;
  /** The counts, from the store. */
  stats(): Promise<DlqStats>;
}

/** Bytes of payloads a listing page holds at most (with one entry at least). */
export const listPageBytes = 4 * 1024 * 1024;
/** Entries whose claims are ended, and resolved entries forgotten, per pass at most. */
const maintenanceBatch = 500;
/** Resolved entries are purged this often at most. */
const purgeIntervalMs = 60_000;
/** How long `stop()` waits for aborted retries to record their failure. */
const abortGraceMs = 2_000;
const expiredReason =
  "the retry did not finish before its claim expired (its node stopped or hung)";

/**
 * The queue over `deps.store`. Automatic retries: every `pollIntervalMs` (and at once while more
 * are due and retry slots are free) it claims due PENDING_RETRY entries of the types it has
 * handlers for and runs them, `concurrency` at most; a failed retry waits `retryDelay` (full
 * jitter, from `random`) before the next, and an entry is DEAD once its attempts reach its
 * `maxAttempts`. Retries by hand share the same slots.
 * @throws RangeError when an option is out of range.
 */
export function createDeadLetterQueue(
  deps: DeadLetterQueueDeps,
  options: Partial<DeadLetterQueueOptions> = {},
): DeadLetterQueue {
  const settings = checkedOptions(options);
  const { store, clock, ids, events, logger } = deps;
  const random = deps.random ?? Math.random;
  const policy: BackoffPolicy = { baseMs: settings.baseDelayMs, capMs: settings.maxDelayMs };
  const nextId = dlqIdSequence(() => ids.uuid());
  const handlers = new Map<string, DeadLetterHandler>();
  const slots: RetrySlots = createRetrySlots(settings.concurrency);
  const inFlight = new Set<Promise<void>>();
  // Aborted by stop(): wakes the scheduler, and (after the grace) the running retries.
  const stopping = new AbortController();
  const aborting = new AbortController();
  let loop: Promise<void> | undefined;
  let lastPurge = Number.NEGATIVE_INFINITY;
  let failing = false;

  const emit = (
    type: "dlq.entry.added" | "dlq.entry.dead" | "dlq.entry.resolved",
    entry: { dlqId: string; eventType: string; correlationId: string; attempts: number },
    extra: Record<string, string | number> = {},
  ) => {
    events.append({
      type,
      subject: entry.dlqId,
      correlationId: entry.correlationId,
      payload: {
        dlq_id: entry.dlqId,
        event_type: entry.eventType,
        attempts: entry.attempts,
        ...extra,
      },
    });
  };

  /** Runs the entry's handler, bounded in time; the failure reason, or undefined on success. */
  const runHandler = async (entry: DlqEntry): Promise<string | undefined> => {
    const handler = handlers.get(entry.eventType);
    if (handler === undefined) return `no handler for event type ${entry.eventType}`;
    const timeout = AbortSignal.timeout(settings.retryTimeoutMs);
    const signal = AbortSignal.any([timeout, aborting.signal]);
    const aborted = new Promise<never>((_, reject) => {
      const onAbort = () =>
        reject(
          new Error(
            timeout.aborted
              ? `the retry did not finish within ${settings.retryTimeoutMs} ms`
              : "the retry was cut short: the node is stopping",
          ),
        );
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
    aborted.catch(() => {});
    try {
      await Promise.race([
        Promise.resolve().then(() =>
          handler({
            dlqId: entry.dlqId,
            eventType: entry.eventType,
            payload: entry.payload,
            eventId: entry.eventId,
            attempts: entry.attempts,
            signal,
          }),
        ),
        aborted,
      ]);
      return undefined;
    } catch (error) {
      return failureReason(error);
    }
  };

  /** Records what the retry of a claimed entry came to; its result for a report. */
  const settle = async (
    token: string,
    entry: DlqEntry,
    error: string | undefined,
  ): Promise<DlqRetryResult> => {
    const now = clock.now();
    const { dlqId } = entry;
    try {
      if (error === undefined) {
        const [done] = await store.complete(token, [dlqId], now);
        if (done?.outcome !== "done") return lostClaim(dlqId, "resolved");
        emit("dlq.entry.resolved", entry);
        return { dlqId, outcome: "resolved", state: "RESOLVED", error: "" };
      }
      const nextRetryAt = now + retryDelay(entry.attempts, policy, random);
      const [done] = await store.fail(token, [{ dlqId, reason: error, nextRetryAt }], now);
      if (done?.outcome !== "done") return lostClaim(dlqId, "failed");
      if (done.state === "DEAD") emit("dlq.entry.dead", entry, { failure_reason: cut(error, 256) });
      return { dlqId, outcome: "failed", state: done.state, error };
    } catch (failure) {
      // The retry ran; its outcome could not be stored. The claim will expire and run it again.
      logger?.warn({ err: failure, dlq_id: dlqId }, "dlq retry outcome not stored");
      return {
        dlqId,
        outcome: "failed",
        state: "RETRYING",
        error: `the retry ${error === undefined ? "succeeded" : "failed"}, but its outcome could not be stored (${messageOf(failure)}): it runs again once its claim expires`,
      };
    }
  };

  /** Runs one claimed entry and records its outcome, holding one slot until then. */
  const retryOne = (token: string, entry: DlqEntry): Promise<DlqRetryResult> => {
    const run = runHandler(entry)
      .then((error) => settle(token, entry, error))
      .finally(() => slots.release(1));
    const tracked = run.then(
      () => undefined,
      () => undefined,
    );
    inFlight.add(tracked);
    void tracked.finally(() => inFlight.delete(tracked));
    return run;
  };

  /**
   * Claims `refs` (whose slots the caller holds, one each) and runs the claimed ones; a slot is
   * given back as each finishes, at once for those not claimed.
   */
  const claimAndRun = async (
    refs: readonly DlqRef[],
    from: readonly ClaimableState[],
    dueBy?: number,
  ): Promise<Promise<DlqRetryResult>[]> => {
    const token = ids.uuid();
    const now = clock.now();
    let claims: Awaited<ReturnType<DlqStore["claim"]>>;
    try {
      claims = await store.claim(
        refs.map((r) => r.dlqId),
        {
          token,
          now,
          expiresAt: now + 2 * settings.retryTimeoutMs,
          from,
          ...(dueBy === undefined ? {} : { dueBy }),
        },
      );
    } catch (error) {
      slots.release(refs.length);
      throw error;
    }
    return claims.map((claim) => {
      if (claim.outcome === "claimed") return retryOne(token, claim.entry);
      slots.release(1);
      return Promise.resolve(
        claim.outcome === "missing"
          ? skipped(claim.dlqId, "no such entry")
          : skipped(claim.dlqId, refusal(claim.state), claim.state),
      );
    });
  };

  /** Ends expired claims, and forgets resolved entries past retention (once a minute). */
  const maintain = async (now: number) => {
    for (const expired of await store.expireClaims(now, maintenanceBatch, expiredReason)) {
      if (expired.state === "DEAD") {
        emit("dlq.entry.dead", expired, { failure_reason: expiredReason });
      }
    }
    if (now - lastPurge >= purgeIntervalMs) {
      lastPurge = now;
      await store.purgeResolved(now - settings.resolvedRetentionMs, maintenanceBatch);
    }
  };

  /**
   * One pass: maintenance, then as many due entries as there are free slots, claimed and started.
   * @returns how many were started, how many were asked for, and their results.
   */
  const pass = async () => {
    const now = clock.now();
    await maintain(now);
    const free = slots.take(settings.concurrency);
    if (free === 0 || handlers.size === 0) {
      slots.release(free);
      return { asked: free, started: [] as Promise<DlqRetryResult>[] };
    }
    let due: string[];
    try {
      due = await store.due([...handlers.keys()], now, free);
    } catch (error) {
      slots.release(free);
      throw error;
    }
    slots.release(free - due.length);
    if (due.length === 0) return { asked: free, started: [] };
    const refs = due.map((dlqId) => ({
      dlqId,
      eventType: "",
      serviceName: "",
      state: "PENDING_RETRY" as const,
    }));
    return { asked: free, started: await claimAndRun(refs, ["PENDING_RETRY"], now) };
  };

  const report = (error: unknown) => {
    // One warning per outage, not one per poll.
    if (!failing) logger?.warn({ err: error }, "dlq retry scheduler failed; trying again");
    failing = true;
  };

  const schedule = async () => {
    const { signal } = stopping;
    while (!signal.aborted) {
      let busy = false;
      try {
        const { asked, started } = await pass();
        failing = false;
        // Everything asked for was due: more may be; go on as soon as a slot is free.
        busy = asked > 0 && started.length === asked;
      } catch (error) {
        report(error);
      }
      if (busy) await slots.untilFree(signal);
      else await sleep(settings.pollIntervalMs, signal);
    }
  };

  const selectRefs = async (
    selection: DlqRetrySelection,
  ): Promise<{ refs: DlqRef[]; unknown: string[] }> => {
    if (selection.dlqIds !== undefined && selection.dlqIds.length > 0) {
      const wanted = [...new Set(selection.dlqIds)];
      const found = await store.refs(wanted);
      return {
        refs: found.filter((ref): ref is DlqRef => ref !== undefined),
        unknown: wanted.filter((_, i) => found[i] === undefined),
      };
    }
    const limit = selection.limit || 100;
    const states = selection.states?.length
      ? selection.states
      : (["PENDING_RETRY", "DEAD"] as const);
    const query: DlqQuery = {
      states,
      eventType: selection.eventType ?? "",
      serviceName: selection.serviceName ?? "",
    };
    const refs: DlqRef[] = [];
    let after = "";
    do {
      const page = await store.select(query, { after, limit: limit - refs.length });
      refs.push(...page.items);
      after = page.next;
    } while (after !== "" && refs.length < limit);
    return { refs, unknown: [] };
  };

  return {
    async add(input: DeadLetterInput): Promise<string> {
      const entry = checkedInput(input, settings);
      const now = clock.now();
      const dlqId = nextId(now);
      const added = await store.add({
        ...entry,
        dlqId,
        failedAt: now,
        nextRetryAt: now + retryDelay(0, policy, random),
      });
      emit("dlq.entry.added", added, {
        state: added.state,
        service_name: added.serviceName,
        max_attempts: added.maxAttempts,
      });
      if (added.state === "DEAD") {
        emit("dlq.entry.dead", added, { failure_reason: cut(added.failureReason, 256) });
      }
      return dlqId;
    },

    handle(eventType, handler) {
      if (eventType === "" || eventType.length > 128) {
        throw new Error("an event type is 1 to 128 characters");
      }
      if (handlers.has(eventType)) throw new Error(`${eventType} already has a handler`);
      handlers.set(eventType, handler);
    },

    start() {
      if (loop !== undefined || stopping.signal.aborted) return;
      loop = schedule();
    },

    async stop() {
      if (stopping.signal.aborted) return;
      stopping.abort();
      await loop;
      await settledWithin([...inFlight], settings.stopTimeoutMs);
      aborting.abort();
      await settledWithin([...inFlight], abortGraceMs);
    },

    async runDue() {
      const { started } = await pass();
      await Promise.all(started);
      return started.length;
    },

    async retry(selection) {
      const { refs, unknown } = await selectRefs(selection);
      const results = new Map<string, Promise<DlqRetryResult>>();
      for (const dlqId of unknown)
        results.set(dlqId, Promise.resolve(skipped(dlqId, "no such entry")));
      const runnable: DlqRef[] = [];
      for (const ref of refs) {
        if (ref.state !== "PENDING_RETRY" && ref.state !== "DEAD") {
          results.set(
            ref.dlqId,
            Promise.resolve(skipped(ref.dlqId, refusal(ref.state), ref.state)),
          );
        } else if (!handlers.has(ref.eventType)) {
          const why = `no handler for event type ${ref.eventType} on this node: left as it was`;
          results.set(ref.dlqId, Promise.resolve(skipped(ref.dlqId, why, ref.state)));
        } else {
          runnable.push(ref);
        }
      }
      // Claimed a slot's worth at a time, so that a claim starts its retry at once and its expiry
      // (twice the retry timeout) is never spent waiting for a slot.
      for (let next = 0; next < runnable.length; ) {
        const taken = await slots.takeSome(runnable.length - next);
        const chunk = runnable.slice(next, next + taken);
        next += taken;
        const started = claimAndRun(chunk, ["PENDING_RETRY", "DEAD"]).catch((error: unknown) =>
          chunk.map((ref) =>
            Promise.resolve(skipped(ref.dlqId, `not claimed: ${messageOf(error)}`, ref.state)),
          ),
        );
        chunk.forEach((ref, i) => {
          results.set(
            ref.dlqId,
            started.then((all) => all[i] as Promise<DlqRetryResult>),
          );
        });
      }
      const settled = await Promise.all(results.values());
      const order = new Map(
        (selection.dlqIds?.length ? [...new Set(selection.dlqIds)] : refs.map((r) => r.dlqId)).map(
          (id, i) => [id, i],
        ),
      );
      settled.sort((a, b) => (order.get(a.dlqId) ?? 0) - (order.get(b.dlqId) ?? 0));
      const ran = settled.filter((r) => r.outcome !== "skipped");
      return {
        total: order.size,
        retried: ran.length,
        failed: ran.filter((r) => r.outcome === "failed").length,
        results: settled,
      };
    },

    async list(query, pageToken, pageSize) {
      const after = pageToken === "" ? "" : decodePageToken(pageToken);
      const page = await store.list(query, {
        after,
        limit: pageSize || 100,
        maxBytes: listPageBytes,
      });
      return {
        entries: page.items,
        nextPageToken: page.next === "" ? "" : Buffer.from(page.next).toString("base64url"),
      };
    },

    stats: () => store.stats(),
  };
}

function checkedOptions(options: Partial<DeadLetterQueueOptions>): DeadLetterQueueOptions {
  const settings = { ...deadLetterQueueDefaults, ...options };
  for (const [name, value] of Object.entries(settings)) {
    const min = name === "maxAttempts" || name === "resolvedRetentionMs" ? 0 : 1;
    if (!Number.isSafeInteger(value) || value < min) {
      throw new RangeError(`${name} must be an integer of at least ${min}, not ${value}`);
    }
  }
  return Object.freeze(settings);
}

/** The input as stored, checked against the queue's bounds. */
function checkedInput(input: DeadLetterInput, settings: DeadLetterQueueOptions) {
  const invalid = (message: string) => new DomainError("invalid", `dead letter: ${message}`);
  if (input.eventType === "" || input.eventType.length > 128) {
    throw invalid("event_type must be 1 to 128 characters");
  }
  for (const [field, value, max] of [
    ["event_id", input.eventId ?? "", 128],
    ["service_name", input.serviceName ?? "", 100],
    ["correlation_id", input.correlationId ?? "", 128],
  ] as const) {
    if (value.length > max) throw invalid(`${field} must be at most ${max} characters`);
  }
  const maxAttempts = input.maxAttempts ?? settings.maxAttempts;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 0 || maxAttempts > 100) {
    throw invalid("max_attempts must be an integer from 0 to 100");
  }
  const payloadBytes = Buffer.byteLength(JSON.stringify(input.payload));
  if (payloadBytes > settings.maxPayloadBytes) {
    throw invalid(`payload is ${payloadBytes} bytes as JSON; at most ${settings.maxPayloadBytes}`);
  }
  return {
    eventId: input.eventId ?? "",
    eventType: input.eventType,
    payload: input.payload,
    failureReason: cut(input.failureReason, maxFailureReasonLength),
    serviceName: input.serviceName ?? "",
    correlationId: input.correlationId ?? "",
    maxAttempts,
  };
}

function decodePageToken(token: string): string {
  const id = Buffer.from(token, "base64url").toString("utf8");
  if (!isDlqId(id))
    throw new DomainError("invalid", "page_token is not a token this server issued");
  return id;
}

function skipped(dlqId: string, error: string, state?: DlqState): DlqRetryResult {
  return { dlqId, outcome: "skipped", ...(state ? { state } : {}), error };
}

function lostClaim(dlqId: string, outcome: "resolved" | "failed"): DlqRetryResult {
  return {
    dlqId,
    outcome: "failed",
    error: `the retry ${outcome === "resolved" ? "succeeded" : "failed"}, but its claim had expired: another retry may have run it`,
  };
}

function refusal(state: DlqState): string {
  if (state === "RETRYING") return "claimed by another retry";
  if (state === "RESOLVED") return "already resolved";
  return `not retryable from ${state}`;
}

function failureReason(error: unknown): string {
  const message = messageOf(error).trim();
  return cut(message === "" ? "the retry failed" : message, maxFailureReasonLength);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref();
    signal.addEventListener("abort", done, { once: true });
  });
}

async function settledWithin(promises: readonly Promise<unknown>[], ms: number): Promise<void> {
  if (promises.length === 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.allSettled(promises),
    new Promise((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]);
  clearTimeout(timer);
}
