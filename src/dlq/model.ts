import type { JsonObject } from "@bufbuild/protobuf";

/**
 * Where a dead-lettered entry is in its life: PENDING_RETRY (waiting for its next automatic
 * retry) → RETRYING (claimed by one retry) → RESOLVED (it succeeded), or back to PENDING_RETRY
 * (it failed, attempts are left), or DEAD (it failed its last automatic attempt: retried only by
 * hand, DEAD → RETRYING). RESOLVED is final.
 */
export const dlqStates = ["PENDING_RETRY", "RETRYING", "DEAD", "RESOLVED"] as const;

/** One of {@link dlqStates}. */
export type DlqState = (typeof dlqStates)[number];

/** The states a claim may take an entry from. */
export type ClaimableState = "PENDING_RETRY" | "DEAD";

/** One dead-lettered entry, as stored. Times are Unix milliseconds; 0 means "not set". */
export interface DlqEntry {
  /** Ordered by the time it was added (see {@link newDlqId}). */
  readonly dlqId: string;
  /** The stored event it concerns; "" when none. */
  readonly eventId: string;
  /** What retrying it means is chosen by this type ("event.delivery", "workflow.step"). */
  readonly eventType: string;
  readonly payload: JsonObject;
  /** Why it failed last, at most {@link maxFailureReasonLength} characters. */
  readonly failureReason: string;
  /** The service whose call failed; "" when none. */
  readonly serviceName: string;
  readonly correlationId: string;
  /** Retries started so far (automatic and by hand); counted when a retry claims the entry. */
  readonly attempts: number;
  /** Automatic retries before it is DEAD. */
  readonly maxAttempts: number;
  /** When its next automatic retry is due; 0 unless PENDING_RETRY. */
  readonly nextRetryAt: number;
  readonly state: DlqState;
  readonly firstFailedAt: number;
  readonly lastFailedAt: number;
  /** When a retry succeeded; 0 unless RESOLVED. */
  readonly resolvedAt: number;
  /** When the claim of the retry running it expires; 0 unless RETRYING. */
  readonly claimExpiresAt: number;
}

/** What a store is given to add an entry: PENDING_RETRY, or DEAD when `maxAttempts` is 0. */
export interface NewDlqEntry {
  readonly dlqId: string;
  readonly eventId: string;
  readonly eventType: string;
  readonly payload: JsonObject;
  readonly failureReason: string;
  readonly serviceName: string;
  readonly correlationId: string;
  readonly maxAttempts: number;
  /** When its first retry is due (ignored when it starts DEAD). */
  readonly nextRetryAt: number;
  /** When it failed: its first and last failure. */
  readonly failedAt: number;
}

/** What selecting and classifying an entry needs, without its payload. */
export interface DlqRef {
  readonly dlqId: string;
  readonly eventType: string;
  readonly serviceName: string;
  readonly state: DlqState;
}

/** Which entries a listing or a selection takes; every given condition must hold. */
export interface DlqQuery {
  /** Any of these states; empty or absent: every state. */
  readonly states?: readonly DlqState[];
  /** "" or absent: every type. */
  readonly eventType?: string;
  /** "" or absent: every service. */
  readonly serviceName?: string;
}

/** One page of a walk through the entries in id order (oldest added first). */
export interface DlqPageRequest {
  /** Entries after this id; "" from the first. */
  readonly after: string;
  /** Matching entries returned at most. */
  readonly limit: number;
  /** For listings: the page ends once its payloads reach this many bytes (at least one entry). */
  readonly maxBytes?: number;
}

/**
 * A page. Each call examines a bounded number of entries (the store's scan limit), so a page may
 * hold fewer matches than asked, even none, while `next` says where to go on.
 */
export interface DlqPage<T> {
  readonly items: readonly T[];
  /** The id to continue after; "" when nothing follows. */
  readonly next: string;
}

/** What a claim asks for. */
export interface DlqClaimRequest {
  /** Identifies this claim: completing or failing the entry needs it. */
  readonly token: string;
  /** Unix ms; the claim expires at `expiresAt`, after which the entry may be retried again. */
  readonly now: number;
  readonly expiresAt: number;
  /** The states an entry may be claimed from. */
  readonly from: readonly ClaimableState[];
  /** When given: only PENDING_RETRY entries due by then (an automatic retry). */
  readonly dueBy?: number;
}

/** What a claim did to one entry. */
export type ClaimResult =
  | { readonly dlqId: string; readonly outcome: "claimed"; readonly entry: DlqEntry }
  /** Its state did not allow the claim (already claimed, resolved, not due, not wanted). */
  | { readonly dlqId: string; readonly outcome: "refused"; readonly state: DlqState }
  | { readonly dlqId: string; readonly outcome: "missing" };

/** A failed retry, to record. */
export interface DlqFailure {
  readonly dlqId: string;
  readonly reason: string;
  /** When the next automatic retry is due, if attempts are left (else the entry is DEAD). */
  readonly nextRetryAt: number;
}

/** What completing or failing a claimed entry did. */
export type TransitionResult =
  | { readonly dlqId: string; readonly outcome: "done"; readonly state: DlqState }
  /** The claim is no longer this one's (it expired and another took it) or the entry is gone. */
  | { readonly dlqId: string; readonly outcome: "lost" };

/** An entry whose claim expired, as the expiry left it. */
export interface ExpiredClaim {
  readonly dlqId: string;
  readonly eventType: string;
  readonly correlationId: string;
  readonly attempts: number;
  /** PENDING_RETRY (due at once) or DEAD (no attempts left). */
  readonly state: DlqState;
}

/** Counts kept by the store with every transition: stored data, read without a scan. */
export interface DlqStats {
  readonly pendingRetry: number;
  readonly retrying: number;
  readonly dead: number;
  readonly resolved: number;
  /** Retries started so far (claims), automatic and by hand. */
  readonly retried: number;
  /** Unresolved entries by event type, and by service (entries without a service not counted). */
  readonly byType: Readonly<Record<string, number>>;
  readonly byService: Readonly<Record<string, number>>;
  /** The first failure of the oldest unresolved entry; 0 when there is none. */
  readonly oldestFailedAt: number;
  /** Entries held, every state, and their bytes (see {@link dlqEntryWeight}). */
  readonly entries: number;
  readonly bytes: number;
}

/** Longest failure reason kept; a longer one is cut. */
export const maxFailureReasonLength = 1_024;

// Bytes counted per entry beside its body: its record (state, times, counters, a failure reason of
// up to 1,024 characters) and the indexes that name it.
const recordOverhead = 1_536;

/**
 * The bytes an entry is counted for by the store's bound: its body as JSON (payload and strings)
 * plus a fixed 1,536 for its record and indexes. Fixed for the entry's life, so that a transition
 * never changes what the store holds in the bound's terms.
 */
export function dlqEntryWeight(entry: NewDlqEntry): number {
  return Buffer.byteLength(dlqBodyJson(entry)) + recordOverhead;
}

/** The parts of an entry that never change, as JSON: what both stores weigh, Redis stores. */
export function dlqBodyJson(entry: NewDlqEntry): string {
  return JSON.stringify({
    eventId: entry.eventId,
    eventType: entry.eventType,
    payload: entry.payload,
    serviceName: entry.serviceName,
    correlationId: entry.correlationId,
  });
}

const idPattern = /^\d{13}-[0-9a-f]{16}$/;

/**
 * An entry id: the time in Unix ms (13 digits), a dash and 16 hex digits (from `uuid`), so that
 * ids sort by the time their entries were added and listings (oldest failure first) walk an index
 * in id order.
 */
export function newDlqId(now: number, uuid: string): string {
  const time = Math.max(0, Math.min(Math.floor(now), 9_999_999_999_999));
  return `${String(time).padStart(13, "0")}-${uuid.replace(/-/g, "").slice(0, 16)}`;
}

/**
 * Ids in the order they are made, also within one millisecond and if the clock steps back: the
 * first 4 hex digits after the time count within the millisecond, the other 12 are random (as in
 * UUIDv7's monotonic counter). Ids made by other processes in the same millisecond interleave.
 */
export function dlqIdSequence(uuid: () => string): (now: number) => string {
  let lastMs = 0;
  let counter = 0;
  return (now) => {
    let ms = Math.floor(now);
    if (ms > lastMs) {
      counter = 0;
    } else {
      ms = lastMs;
      counter++;
      if (counter > 0xffff) {
        ms++;
        counter = 0;
      }
    }
    lastMs = ms;
    return newDlqId(ms, `${counter.toString(16).padStart(4, "0")}${uuid().replace(/-/g, "")}`);
  };
}

/** Whether `id` has the shape {@link newDlqId} gives. */
export function isDlqId(id: string): boolean {
  return idPattern.test(id);
}

/** The entry as `add` stores it: PENDING_RETRY due at `nextRetryAt`, or DEAD with no attempts. */
export function initialEntry(input: NewDlqEntry): DlqEntry {
  const dead = input.maxAttempts <= 0;
  return {
    dlqId: input.dlqId,
    eventId: input.eventId,
    eventType: input.eventType,
    payload: input.payload,
    failureReason: input.failureReason,
    serviceName: input.serviceName,
    correlationId: input.correlationId,
    attempts: 0,
    maxAttempts: Math.max(0, input.maxAttempts),
    nextRetryAt: dead ? 0 : input.nextRetryAt,
    state: dead ? "DEAD" : "PENDING_RETRY",
    firstFailedAt: input.failedAt,
    lastFailedAt: input.failedAt,
    resolvedAt: 0,
    claimExpiresAt: 0,
  };
}

/**
 * The narrowest index a store walks for `query`: one state's, the unresolved entries' (several
 * states, RESOLVED not among them), or every entry's.
 */
export function indexNameFor(query: DlqQuery): DlqState | "open" | "all" {
  const states = new Set(query.states ?? []);
  if (states.size === 0 || states.size === dlqStates.length) return "all";
  if (states.size === 1) return [...states][0] as DlqState;
  return states.has("RESOLVED") ? "all" : "open";
}
