import type { JsonObject } from "@bufbuild/protobuf";

/** Where a saga is; the transitions between them are in `saga-machine.ts`. */
export const sagaStatuses = [
  "PENDING",
  "RUNNING",
  "COMPLETED",
  "FAILED",
  "COMPENSATING",
  "COMPENSATED",
  "ABORTED",
] as const;

export type SagaStatus = (typeof sagaStatuses)[number];

/** Where one step of a saga is; the transitions between them are in `saga-machine.ts`. */
export const sagaStepStatuses = [
  "PENDING",
  "RUNNING",
  "COMPLETED",
  "FAILED",
  "COMPENSATING",
  "COMPENSATED",
  "SKIPPED",
] as const;

export type SagaStepStatus = (typeof sagaStepStatuses)[number];

/** One step of a saga, as stored. Times are Unix milliseconds; `undefined` when not reached. */
export interface SagaStep {
  /** Its position in the saga, from 0: how transitions name it. */
  readonly index: number;
  readonly name: string;
  /** What it does and what undoes it, for operators ("POST github-agent /ingest"). */
  readonly action: string;
  readonly compensation: string;
  /** Steps with the same group run in parallel; groups run in order (never decreasing). */
  readonly group: number;
  readonly status: SagaStepStatus;
  /** Times its action was started. */
  readonly attempts: number;
  /** The last failure, or "" (cut to {@link maxErrorLength} characters). */
  readonly error: string;
  /** When its latest attempt started. */
  readonly startedAt: number | undefined;
  /** When its latest attempt ended (completed or failed). */
  readonly finishedAt: number | undefined;
  readonly compensatedAt: number | undefined;
  readonly output: JsonObject | undefined;
  /** 1 at creation, +1 with each of its transitions: the compare-and-set token of the step. */
  readonly version: number;
}

/** A saga: ordered steps, each with its compensation, and where they are. */
export interface Saga {
  readonly sagaId: string;
  /** What it runs, e.g. the workflow "ingestion". */
  readonly name: string;
  /** The workflow run it belongs to, or "". */
  readonly runId: string;
  readonly correlationId: string;
  readonly status: SagaStatus;
  readonly steps: readonly SagaStep[];
  readonly createdAt: number;
  readonly updatedAt: number;
  /** When it reached COMPLETED, FAILED, COMPENSATED or ABORTED. */
  readonly finishedAt: number | undefined;
  readonly error: string;
  /**
   * 1 at creation, +1 with every change of the saga or of any of its steps: the compare-and-set
   * token of a saga transition.
   */
  readonly version: number;
  /**
   * What its runner needs to take it over on another node (for a workflow run: sources, scope,
   * trace), set at creation and never changed; `undefined` when none was given.
   */
  readonly context: JsonObject | undefined;
  /** Who may move it, when a runner took its lease; `undefined` while nobody ever did. */
  readonly lease: SagaLease | undefined;
}

/**
 * The right to run a saga: only its holder's transitions (carrying holder and token) pass.
 * Taking it over (expired, or forced by a cancel) bumps the token, so that the previous holder's
 * next transition is refused: a fencing token. Lease changes do not bump the saga's version.
 */
export interface SagaLease {
  /** The node holding it. */
  readonly holder: string;
  /** 1 for the first lease, +1 with every take-over. */
  readonly token: number;
  /** Unix ms, on the store's clock; after it, another node may take it over. */
  readonly expiresAt: number;
}

/** A saga without its steps, as a listing returns it. */
export type SagaSummary = Omit<Saga, "steps"> & { readonly stepCount: number };

/** A step as the caller declares it when creating a saga. */
export interface NewSagaStep {
  /** 1–128 characters, unique within the saga. */
  readonly name: string;
  /** At most 512 characters. Default "". */
  readonly action?: string;
  /** At most 512 characters. Default "". */
  readonly compensation?: string;
  /** 0 to 2^31−1, never less than the previous step's. Default 0. */
  readonly group?: number;
}

/** A saga as the caller declares it: it starts PENDING, every step PENDING. */
export interface NewSaga {
  /** 1–128 of `[A-Za-z0-9._:-]`. Default: a new UUID. */
  readonly sagaId?: string;
  /** 1–128 characters. */
  readonly name: string;
  /** At most 128 characters. Default "". */
  readonly runId?: string;
  /** At most 128 characters. Default "". */
  readonly correlationId?: string;
  readonly steps: readonly NewSagaStep[];
  /** At most `maxContextBytes` as JSON. Default: none. */
  readonly context?: JsonObject;
  /**
   * A lease taken in the same write (token 1), for the node that creates the saga to execute it
   * without a separate take. Default: none.
   */
  readonly lease?: { readonly holder: string; readonly ttlMs: number };
}

/** How many stored sagas are in each status, and how long the finished ones took. */
export interface SagaCounts {
  readonly byStatus: Readonly<Record<SagaStatus, number>>;
  /** Sum over the stored finished sagas of finishedAt − createdAt, in milliseconds. */
  readonly finishedDurationMs: number;
}

/** A page of a listing. */
export interface SagaPage {
  readonly sagas: readonly SagaSummary[];
  /** Opaque; "" when this is the last page. */
  readonly nextPageToken: string;
}

/** The longest error text kept for a saga or a step; longer ones are cut, ending with "…". */
export const maxErrorLength = 1_024;

/** `error` cut to {@link maxErrorLength} characters. */
export function boundedError(error: string): string {
  if (error.length <= maxErrorLength) return error;
  // Never split a surrogate pair: the stored text must stay valid UTF-16.
  let cut = maxErrorLength - 1;
  const last = error.charCodeAt(cut - 1);
  if (last >= 0xd800 && last <= 0xdbff) cut--;
  return `${error.slice(0, cut)}…`;
}

/** Counts with every status at zero. */
export function emptyCounts(): Record<SagaStatus, number> {
  const counts = {} as Record<SagaStatus, number>;
  for (const status of sagaStatuses) counts[status] = 0;
  return counts;
}

/** What GetSagaStats answers, computed from the counts of stored sagas. */
export interface SagaStats {
  readonly totalSagas: number;
  /** PENDING, RUNNING and COMPENSATING ones. */
  readonly running: number;
  readonly completed: number;
  readonly failed: number;
  readonly compensated: number;
  readonly aborted: number;
  /** Completed over finished; 0 when none finished. */
  readonly successRate: number;
  /** Mean of finishedAt − createdAt over the finished ones; 0 when none finished. */
  readonly avgDurationMs: number;
  readonly byStatus: Readonly<Record<SagaStatus, number>>;
}

/** The stats of the stored sagas, from their counts. */
export function sagaStats(counts: SagaCounts): SagaStats {
  const s = counts.byStatus;
  const finished = s.COMPLETED + s.FAILED + s.COMPENSATED + s.ABORTED;
  return {
    totalSagas: sagaStatuses.reduce((sum, status) => sum + s[status], 0),
    running: s.PENDING + s.RUNNING + s.COMPENSATING,
    completed: s.COMPLETED,
    failed: s.FAILED,
    compensated: s.COMPENSATED,
    aborted: s.ABORTED,
    successRate: finished === 0 ? 0 : s.COMPLETED / finished,
    avgDurationMs: finished === 0 ? 0 : counts.finishedDurationMs / finished,
    byStatus: { ...s },
  };
}
