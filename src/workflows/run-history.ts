import { DomainError } from "../errors/domain-error.js";
import { type Saga, type SagaStatus, sagaStatuses } from "../sagas/model.js";
import type { SagaStore } from "../sagas/saga-store.js";

/** Which runs a history page takes; every given condition must hold. */
export interface RunHistoryQuery {
  /** The saga statuses to walk, in this order; empty: every status. */
  readonly statuses: readonly SagaStatus[];
  /** "" for every workflow. */
  readonly workflow: string;
  /** "" for every correlation id. */
  readonly correlationId: string;
  /** Unix ms; runs created at or after it. 0 for all. */
  readonly since: number;
  /** 1 to 1,000. */
  readonly pageSize: number;
  /** The previous page's `nextPageToken`; "" for the first. */
  readonly pageToken: string;
}

/** A page of runs; `nextPageToken` is "" at the end. */
export interface RunHistoryPage {
  readonly runs: readonly Saga[];
  readonly nextPageToken: string;
}

/** Sagas one page examines at most, so that a filter matching little costs a bounded call. */
export const historyScanLimit = 2_000;

interface Cursor {
  /** Index into the query's statuses. */
  readonly s: number;
  /** The store's token within that status. */
  readonly t: string;
}

/**
 * A page of workflow runs from the saga store: the sagas of each status in turn (oldest created
 * first within a status, as the store lists them), filtered. One call examines at most
 * {@link historyScanLimit} sagas, so a page may hold fewer runs than asked while its token says
 * where to go on.
 * @throws DomainError "invalid" naming `page_token` for a token not from this listing.
 */
export async function runHistory(
  store: SagaStore,
  query: RunHistoryQuery,
): Promise<RunHistoryPage> {
  const statuses = query.statuses.length === 0 ? sagaStatuses : query.statuses;
  let cursor = parseCursor(query.pageToken, statuses.length);
  const runs: Saga[] = [];
  let examined = 0;
  while (cursor.s < statuses.length && runs.length < query.pageSize) {
    if (examined >= historyScanLimit) break;
    const status = statuses[cursor.s] as SagaStatus;
    // Exactly what is still wanted: a store page is then consumed whole, and its token is exact.
    const want = Math.min(query.pageSize - runs.length, historyScanLimit - examined);
    const page = await store.list({ status, pageSize: want, pageToken: cursor.t });
    examined += page.sagas.length;
    for (const summary of page.sagas) {
      if (!matches(summary, query)) continue;
      const saga = await store.get(summary.sagaId);
      if (saga !== undefined) runs.push(saga);
    }
    cursor =
      page.nextPageToken === ""
        ? { s: cursor.s + 1, t: "" }
        : { s: cursor.s, t: page.nextPageToken };
  }
  const done = cursor.s >= statuses.length;
  return { runs, nextPageToken: done ? "" : encodeCursor(cursor) };
}

function matches(saga: Omit<Saga, "steps">, query: RunHistoryQuery): boolean {
  return (
    saga.runId !== "" &&
    (query.workflow === "" || saga.name === query.workflow) &&
    (query.correlationId === "" || saga.correlationId === query.correlationId) &&
    saga.createdAt >= query.since
  );
}

function encodeCursor(cursor: Cursor): string {
  return Buffer.from(JSON.stringify(cursor)).toString("base64url");
}

function parseCursor(token: string, statusCount: number): Cursor {
  if (token === "") return { s: 0, t: "" };
  try {
    const parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as Partial<Cursor>;
    if (
      Number.isSafeInteger(parsed.s) &&
      (parsed.s as number) >= 0 &&
      (parsed.s as number) < statusCount &&
      typeof parsed.t === "string"
    ) {
      return { s: parsed.s as number, t: parsed.t };
    }
  } catch {
    // Refused below, as every malformed token is.
  }
  throw new DomainError("invalid", "page_token: not a token of this listing");
}
