import { setMaxListeners } from "node:events";
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
const notRunInTime = "not run: its claim would have expired before the retry could finish";

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
  // Entries a retry by hand claims in one call: four slots' worth, so that claims and writes are a
  // few round trips per hundred entries, and a claim need not last long to cover its batch.
  const batchSize = 4 * settings.concurrency;
  const inFlight = new Set<Promise<void>>();
  // Aborted by stop(): wakes the scheduler, and (after the grace) the running retries.
  const stopping = new AbortController();
  const aborting = new AbortController();
  // Every running retry listens on it: as many listeners as retry slots is normal, not a leak.
  setMaxListeners(0, aborting.signal);
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
    const controller = new AbortController();
    let cutShort: (reason: Error) => void = () => {};
    const aborted = new Promise<never>((_, reject) => {
      cutShort = (reason) => {
        controller.abort(reason);
        reject(reason);
      };
    });
    const timer = setTimeout(
      () => cutShort(new Error(`the retry did not finish within ${settings.retryTimeoutMs} ms`)),
      settings.retryTimeoutMs,
    );
    const onStop = () => cutShort(new Error("the retry was cut short: the node is stopping"));
    if (aborting.signal.aborted) onStop();
    else aborting.signal.addEventListener("abort", onStop, { once: true });
    try {
      await Promise.race([
        Promise.resolve().then(() =>
          handler({
            dlqId: entry.dlqId,
            eventType: entry.eventType,
            payload: entry.payload,
            eventId: entry.eventId,
            attempts: entry.attempts,
            signal: controller.signal,
          }),
        ),
        aborted,
      ]);
      return undefined;
    } catch (error) {
      return failureReason(error);
    } finally {
      clearTimeout(timer);
      aborting.signal.removeEventListener("abort", onStop);
    }
  };

  /**
   * Records what the retries of one claim came to, in one write for the successes and one for the
   * failures; each entry's result for a report. When a write fails, the retries ran but their
   * outcome is not stored: the claim will expire and they run again.
   */
  const settle = async (
    token: string,
    outcomes: readonly { entry: DlqEntry; error: string | undefined }[],
  ): Promise<DlqRetryResult[]> => {
    const now = clock.now();
    const succeeded = outcomes.filter((o) => o.error === undefined).map((o) => o.entry);
    const failed = outcomes.flatMap(({ entry, error }) =>
      error === undefined
        ? []
        : [{ entry, reason: error, nextRetryAt: now + retryDelay(entry.attempts, policy, random) }],
    );
    const write = <T>(what: Promise<T>) =>
      what.then(
        (value) => ({ value, error: undefined }),
        (error: unknown) => {
          logger?.warn({ err: error }, "dlq retry outcomes not stored");
          return { value: undefined, error: messageOf(error) };
        },
      );
    const [completed, recorded] = await Promise.all([
      write(
        store.complete(
          token,
          succeeded.map((e) => e.dlqId),
          now,
        ),
      ),
      write(
        store.fail(
          token,
          failed.map((f) => ({
            dlqId: f.entry.dlqId,
            reason: f.reason,
            nextRetryAt: f.nextRetryAt,
          })),
          now,
        ),
      ),
    ]);
    const results: DlqRetryResult[] = [];
    succeeded.forEach((entry, i) => {
      const done = completed.value?.[i];
      if (completed.error !== undefined)
        results.push(unstored(entry.dlqId, "succeeded", completed.error));
      else if (done?.outcome !== "done") results.push(lostClaim(entry.dlqId, "resolved"));
      else {
        emit("dlq.entry.resolved", entry);
        results.push({ dlqId: entry.dlqId, outcome: "resolved", state: "RESOLVED", error: "" });
      }
    });
    failed.forEach(({ entry, reason }, i) => {
      const done = recorded.value?.[i];
      if (recorded.error !== undefined)
        results.push(unstored(entry.dlqId, "failed", recorded.error));
      else if (done?.outcome !== "done") results.push(lostClaim(entry.dlqId, "failed"));
      else {
        if (done.state === "DEAD")
          emit("dlq.entry.dead", entry, { failure_reason: cut(reason, 256) });
        results.push({ dlqId: entry.dlqId, outcome: "failed", state: done.state, error: reason });
      }
    });
    return results;
  };

  /**
   * Runs the entries of one claim, each in a retry slot (held already, or waited for), then records
   * their outcomes together. An entry whose claim would expire before its retry could time out is
   * not run (another node may take it then): it fails, to be retried.
   */
  const runClaim = (
    claim: { token: string; expiresAt: number },
    entries: readonly DlqEntry[],
    slotsHeld: boolean,
  ): { handled: Promise<unknown>; results: Promise<DlqRetryResult[]> } => {
    const handled = Promise.all(
      entries.map(async (entry) => {
        if (!slotsHeld) await slots.takeSome(1);
        try {
          const late = clock.now() + settings.retryTimeoutMs > claim.expiresAt;
          return { entry, error: late ? notRunInTime : await runHandler(entry) };
        } finally {
          slots.release(1);
        }
      }),
    );
    const results = handled.then((outcomes) => settle(claim.token, outcomes));
    const tracked = results.then(
      () => undefined,
      () => undefined,
    );
    inFlight.add(tracked);
    void tracked.finally(() => inFlight.delete(tracked));
    return { handled, results };
  };

  /** Claims `dlqIds`: the entries claimed, and a result for each of the others. */
  const claimBatch = async (
    dlqIds: readonly string[],
    claim: { token: string; now: number; expiresAt: number },
    from: readonly ClaimableState[],
    dueBy?: number,
  ): Promise<{ entries: DlqEntry[]; refused: DlqRetryResult[] }> => {
    const claims = await store.claim(dlqIds, {
      ...claim,
      from,
      ...(dueBy === undefined ? {} : { dueBy }),
    });
    const entries: DlqEntry[] = [];
    const refused: DlqRetryResult[] = [];
    for (const result of claims) {
      if (result.outcome === "claimed") entries.push(result.entry);
      else if (result.outcome === "missing") refused.push(skipped(result.dlqId, "no such entry"));
      else refused.push(skipped(result.dlqId, refusal(result.state), result.state));
    }
    return { entries, refused };
  };

  /**
   * Retries `refs` by hand, `batchSize` claimed at a time: each batch is claimed in one call, its
   * retries run in the shared slots, and its outcomes are written while the next batch is claimed.
   * A batch's claim lasts long enough for its retries to wait for slots and run.
   */
  const retryByHand = async (refs: readonly DlqRef[]): Promise<DlqRetryResult[]> => {
    const written: Promise<DlqRetryResult[]>[] = [];
    for (let next = 0; next < refs.length; next += batchSize) {
      const batch = refs.slice(next, next + batchSize);
      const now = clock.now();
      const rounds = Math.ceil(batch.length / settings.concurrency) + 1;
      const claim = { token: ids.uuid(), now, expiresAt: now + rounds * settings.retryTimeoutMs };
      let claimed: Awaited<ReturnType<typeof claimBatch>>;
      try {
        claimed = await claimBatch(
          batch.map((ref) => ref.dlqId),
          claim,
          ["PENDING_RETRY", "DEAD"],
        );
      } catch (error) {
        const why = `not claimed: ${messageOf(error)}`;
        written.push(Promise.resolve(batch.map((ref) => skipped(ref.dlqId, why, ref.state))));
        continue;
      }
      const { handled, results } = runClaim(claim, claimed.entries, false);
      written.push(results.then((ran) => [...ran, ...claimed.refused]));
      await handled;
    }
    return (await Promise.all(written)).flat();
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
   * @returns how many were asked for, found due and claimed, and when their retries are done.
   */
  const pass = async (): Promise<{
    asked: number;
    found: number;
    claimed: number;
    done: Promise<unknown>;
  }> => {
    const now = clock.now();
    await maintain(now);
    const free = slots.take(settings.concurrency);
    const idle = { asked: free, found: 0, claimed: 0, done: Promise.resolve() };
    if (free === 0 || handlers.size === 0) {
      slots.release(free);
      return idle;
    }
    let entries: DlqEntry[];
    let found: number;
    const claim = { token: ids.uuid(), now, expiresAt: now + 2 * settings.retryTimeoutMs };
    try {
      const due = await store.due([...handlers.keys()], now, free);
      found = due.length;
      ({ entries } = await claimBatch(due, claim, ["PENDING_RETRY"], now));
    } catch (error) {
      slots.release(free);
      throw error;
    }
    // The slots of the entries claimed are theirs until their retries end.
    slots.release(free - entries.length);
    if (entries.length === 0) return { ...idle, found };
    const { results } = runClaim(claim, entries, true);
    return { asked: free, found, claimed: entries.length, done: results };
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
        const { asked, found } = await pass();
        failing = false;
        // As many were due as asked for: more may be; go on as soon as a slot is free.
        busy = asked > 0 && found === asked;
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
      const { claimed, done } = await pass();
      await done;
      return claimed;
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
      for (const result of await retryByHand(runnable)) {
        results.set(result.dlqId, Promise.resolve(result));
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

function unstored(dlqId: string, how: "succeeded" | "failed", error: string): DlqRetryResult {
  return {
    dlqId,
    outcome: "failed",
    state: "RETRYING",
    error: `the retry ${how}, but its outcome could not be stored (${error}): it runs again once its claim expires`,
  };
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
