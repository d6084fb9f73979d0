import type {
  ClaimResult,
  DlqClaimRequest,
  DlqEntry,
  DlqFailure,
  DlqPage,
  DlqPageRequest,
  DlqQuery,
  DlqRef,
  DlqStats,
  ExpiredClaim,
  NewDlqEntry,
  TransitionResult,
} from "./model.js";

/** The bounds every DLQ store holds, whatever is added. */
export interface DlqStoreLimits {
  /** Entries held at most, every state. Default 100,000. */
  readonly maxEntries: number;
  /** Bytes of entries held at most (see `dlqEntryWeight`). Default 64 MiB. */
  readonly maxBytes: number;
  /** Entries one listing or selection call examines at most. Default 2,000. */
  readonly scanLimit: number;
}

export const dlqStoreDefaults: Readonly<DlqStoreLimits> = Object.freeze({
  maxEntries: 100_000,
  maxBytes: 64 * 1024 * 1024,
  scanLimit: 2_000,
});

/**
 * Where dead-lettered entries live, in the domain's terms. Every transition is atomic and checks
 * the state it starts from, so that several queues (several orchestrators on one Redis) sharing
 * a store never run one claim twice: PENDING_RETRY or DEAD → RETRYING by {@link claim} (one
 * claimer wins, with a token and an expiry), RETRYING → RESOLVED by {@link complete},
 * RETRYING → PENDING_RETRY or DEAD by {@link fail} (both need the claim's token) or by
 * {@link expireClaims} (a claimer that died). Times are given by the caller, from its clock.
 *
 * Every method may throw DomainError "unavailable" (the store cannot be reached; a write was not
 * applied), "timeout" (a write was sent and not answered in time: it may have been applied) or
 * "internal" (the store holds something it cannot read).
 */
export interface DlqStore {
  /** Prepares the store (Redis: follows the connection's clock for write deadlines). */
  open(): Promise<void>;
  /** Releases what `open` took; the caller's connections stay open. */
  close(): Promise<void>;
  /**
   * Adds an entry: PENDING_RETRY due at `nextRetryAt`, or DEAD when `maxAttempts` is 0. When
   * the store is full (entries or bytes), the oldest RESOLVED entries are forgotten first.
   * @throws DomainError "resource_exhausted" when it is still full (of unresolved entries), or
   *   "already_exists" for an id already used.
   */
  add(entry: NewDlqEntry): Promise<DlqEntry>;
  /** The entry, or undefined. */
  get(dlqId: string): Promise<DlqEntry | undefined>;
  /** Each id's state, type and service (undefined for an unknown id), in the order given. */
  refs(dlqIds: readonly string[]): Promise<(DlqRef | undefined)[]>;
  /** Entries matching `query`, in id order (oldest added first), a bounded page at a time. */
  list(query: DlqQuery, page: DlqPageRequest): Promise<DlqPage<DlqEntry>>;
  /** As {@link list}, without payloads: for choosing what to retry. */
  select(query: DlqQuery, page: DlqPageRequest): Promise<DlqPage<DlqRef>>;
  /**
   * Claims each entry for one retry: moves it to RETRYING with the request's token and expiry and
   * counts an attempt, if its state is one of `request.from` (and it is due, with `dueBy`).
   * Of any number of claims of one entry at once, exactly one succeeds.
   */
  claim(dlqIds: readonly string[], request: DlqClaimRequest): Promise<ClaimResult[]>;
  /** RETRYING (under `token`) → RESOLVED at `now`. */
  complete(token: string, dlqIds: readonly string[], now: number): Promise<TransitionResult[]>;
  /**
   * RETRYING (under `token`) → PENDING_RETRY due at the failure's `nextRetryAt`, or DEAD once
   * its attempts reach its `maxAttempts`; records the reason and `now` as the last failure.
   */
  fail(token: string, failures: readonly DlqFailure[], now: number): Promise<TransitionResult[]>;
  /**
   * Ids of PENDING_RETRY entries of these types due by `now`, earliest due first, at most `limit`.
   * Entries of other types are not looked at: an entry whose type has no handler waits in place.
   */
  due(eventTypes: readonly string[], now: number, limit: number): Promise<string[]>;
  /**
   * Ends claims that expired by `now` (their retry's process died or hung): each entry goes back
   * to PENDING_RETRY due at once, or DEAD when its attempts are used up, with `reason`. An entry
   * claimed from DEAD (a retry by hand) always goes back to PENDING_RETRY: the retry asked for is
   * run once more, automatically. At most `limit` per call.
   */
  expireClaims(now: number, limit: number, reason: string): Promise<ExpiredClaim[]>;
  /** Forgets RESOLVED entries resolved before `before`, at most `limit`; returns how many. */
  purgeResolved(before: number, limit: number): Promise<number>;
  /** The counts, as kept with every transition. */
  stats(): Promise<DlqStats>;
}
