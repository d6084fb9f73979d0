import type { JsonObject } from "@bufbuild/protobuf";
import type {
  NewSaga,
  Saga,
  SagaCounts,
  SagaLease,
  SagaPage,
  SagaStatus,
  SagaStep,
  SagaStepStatus,
  SagaSummary,
} from "./model.js";

/** A saga transition: a compare-and-set on the saga's version. */
export interface SagaTransition {
  /** The saga's version the caller decided on. */
  readonly expectedVersion: number;
  readonly to: SagaStatus;
  /** Replaces the saga's error (cut to 1,024 characters); absent: kept. */
  readonly error?: string;
  /** When given, the move passes only while the saga's lease is this one (fencing). */
  readonly lease?: LeaseProof;
}

/** The lease a runner believes it holds; its transitions carry it. */
export interface LeaseProof {
  readonly holder: string;
  readonly token: number;
}

/** How a lease is taken. */
export interface LeaseRequest {
  /** The node taking it: 1–128 characters. */
  readonly holder: string;
  /** How long it lasts from now, in ms (1 ms to 1 h). */
  readonly ttlMs: number;
  /** Take it even while another holds it (a cancel): the holder is fenced out. Default false. */
  readonly force?: boolean;
}

/** A step transition: a compare-and-set on the step's own version. */
export interface StepTransition {
  /** The step's version the caller decided on. */
  readonly expectedVersion: number;
  readonly to: SagaStepStatus;
  /** Replaces the step's error (cut to 1,024 characters); absent: kept, or cleared by the rule. */
  readonly error?: string;
  /** The step's output, where the rule takes one (to COMPLETED or FAILED); absent: kept. */
  readonly output?: JsonObject;
  /** When given, the move passes only while the saga's lease is this one (fencing). */
  readonly lease?: LeaseProof;
}

/** What a step transition returns: the step as it now is, and its saga without its steps. */
export interface StepTransitionResult {
  readonly saga: SagaSummary;
  readonly step: SagaStep;
}

/** A listing of the sagas in one status, oldest created first. */
export interface SagaListQuery {
  readonly status: SagaStatus;
  /** 1 to 1,000. Default 100. */
  readonly pageSize?: number;
  /** The previous page's `nextPageToken`; "" or absent: the first page. */
  readonly pageToken?: string;
}

/**
 * Where sagas live: created with their steps, moved only along the table of `saga-machine.ts`,
 * every move a compare-and-set so that two processes sharing the store can never both make it.
 * Finished sagas are kept `retentionMs` and at most `maxFinished` of them; the store holds at most
 * `maxBytes` (the oldest finished sagas make room for new ones; when running sagas alone fill it,
 * writes that grow it are refused). Counts by status are kept by the same atomic writes.
 *
 * Implementations: the in-memory store (the default) and the Redis store; both pass
 * tests/contracts/saga-store.contract.ts.
 *
 * Every method may throw DomainError "unavailable" (the backing store could not be reached; a
 * write did not happen) or "timeout" (a write was sent and not answered in time: it happened if
 * the store ran it before the deadline the message names, never after; read the saga to learn).
 */
export interface SagaStore {
  /** Readies the store (the Redis store waits for its connection). */
  open(): Promise<void>;
  /** Stops it; the backing connection is the caller's to close. */
  close(): Promise<void>;

  /**
   * Stores a new saga, PENDING, every step PENDING, at version 1 (each step too).
   * @throws DomainError "invalid" (a field out of its bounds, named; a reserved id; a saga over
   *   `maxSagaBytes`), "already_exists" (the id is taken), "resource_exhausted" (running sagas
   *   fill `maxBytes`).
   */
  create(saga: NewSaga): Promise<Saga>;

  /** The saga, or `undefined` when there is none with that id. */
  get(sagaId: string): Promise<Saga | undefined>;

  /**
   * Moves the saga along the table, if its version is still `expectedVersion`.
   * @returns the saga as it now is.
   * @throws DomainError "not_found", "conflict" (the saga changed meanwhile: read it and decide
   *   again), "failed_precondition" (the table has no such move, or a step is not in a status it
   *   allows: the message names the states; or the lease given is lost, see {@link leaseLost}).
   */
  transition(sagaId: string, change: SagaTransition): Promise<Saga>;

  /**
   * Moves step `stepIndex` along the table, if the step's version is still `expectedVersion`.
   * @throws DomainError "not_found", "invalid" (no such step; output where the rule takes none,
   *   or over `maxOutputBytes`; the saga would go over `maxSagaBytes`), "conflict" (the step
   *   changed meanwhile), "failed_precondition" (no such move, or not while the saga is in its
   *   status), "resource_exhausted" (running sagas fill `maxBytes`).
   */
  transitionStep(
    sagaId: string,
    stepIndex: number,
    change: StepTransition,
  ): Promise<StepTransitionResult>;

  /**
   * Takes the saga's lease: when nobody holds it, when it expired, or with `force`; the token
   * goes up by one (fencing out the previous holder). Its version does not change.
   * @returns the lease taken.
   * @throws DomainError "not_found", "invalid" (holder or ttl out of bounds), "conflict" (another
   *   holder's lease has not expired), "failed_precondition" (the saga is finished).
   */
  takeLease(sagaId: string, request: LeaseRequest): Promise<SagaLease>;

  /**
   * Extends the lease `proof` names to now + `ttlMs`, if it is still the saga's (expired or not:
   * nobody took it over meanwhile).
   * @returns the lease as it now is.
   * @throws DomainError "not_found", "invalid", "failed_precondition" (the lease is lost: another
   *   holder took it over, or the saga is finished).
   */
  renewLease(sagaId: string, proof: LeaseProof, ttlMs: number): Promise<SagaLease>;

  /**
   * A page of the sagas in one status (the running ones, to take over), oldest created first.
   * @throws DomainError "invalid" (a page size out of 1..1000, a page token not from this API).
   */
  list(query: SagaListQuery): Promise<SagaPage>;

  /** How many sagas are stored in each status, and how long the finished ones took. */
  counts(): Promise<SagaCounts>;

  /**
   * Forgets the finished sagas that finished more than `retentionMs` ago.
   * @returns how many were forgotten.
   */
  sweep(): Promise<number>;
}
