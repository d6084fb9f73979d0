import { type ChangeQueue, queueChanges } from "../changes/change-queue.js";
import { DomainError } from "../errors/domain-error.js";
import type { EventStore } from "./event-store.js";
import {
  compareEventIds,
  type EventFilter,
  type EventId,
  formatEventId,
  matchesFilter,
  type OrchestratorEvent,
  parseEventId,
} from "./model.js";
import type { RecentEvents } from "./recent-events.js";

/** What a watcher asks for. */
export interface EventWatchRequest {
  /** Types, subject, correlation id (times are not watch filters). */
  readonly filter: Pick<EventFilter, "types" | "subject" | "correlationId">;
  /** Resume after this id (the stored events after it first); "": from now. */
  readonly afterId: string;
  /** Events the watcher may fall behind by before it is cut off. */
  readonly maxLag: number;
  readonly signal: AbortSignal;
}

/** What a watch yields: first where it starts, then each event. */
export type EventWatchItem =
  | {
      /** The id the watch follows from: every event after it is delivered. */
      readonly startedAfter: string;
    }
  | { readonly event: OrchestratorEvent };

/** Stored events read from the store per round trip while catching up. */
const catchUpPage = 500;
/** Events taken from the recent log at once; the lag check runs again before the next batch. */
const liveBatch = 256;

/**
 * Watches events: first where it starts (`startedAfter`: `afterId`, or the newest event this
 * node has followed), then, with an `afterId`, the stored events after it, paged from the store, then
 * every event as this process follows it from the store, without a gap or a repeat at the seam.
 * The seam is the recent log's newest id when the watch starts (taken in the same synchronous
 * step as its position): the store holds every event up to it, and the recent log will hold every
 * later one after that position. The watcher reads the one recent log at its own pace and holds
 * only its place; one that falls behind what the log holds, or by more than `maxLag`, is cut with
 * RESOURCE_EXHAUSTED naming the id to resume after (the last event it was shown or passed over).
 * A resume from an id older than the store retains starts at the oldest retained. Ends when
 * `signal` aborts.
 * @throws DomainError "invalid" when `afterId` is not an event id; "resource_exhausted" as above;
 *   what the store throws while catching up.
 */
export async function* watchEvents(
  store: EventStore,
  recent: RecentEvents,
  request: EventWatchRequest,
): AsyncGenerator<EventWatchItem> {
  const after = request.afterId ? parseEventId(request.afterId, "after_id") : undefined;
  await recent.whenReady(request.signal);
  const changes = queueChanges(recent, {
    maxLag: request.maxLag,
    reader: "the watcher",
    resume: "position",
    signal: request.signal,
  });
  let position = recent.position;
  const seam = parseEventId(recent.lastId);
  // The last id shown or passed over: nothing at or before it is delivered again, and a watcher
  // cut off resumes after it.
  let passed = after ?? seam;
  try {
    yield { startedAfter: formatEventId(passed) };
    if (after !== undefined && compareEventIds(after, seam) < 0) {
      let cursor = formatEventId(after);
      catchingUp: while (!request.signal.aborted) {
        const page = await store.read({ ...request.filter, after: cursor, limit: catchUpPage });
        for (const event of page.events) {
          const id = parseEventId(event.id);
          if (compareEventIds(id, seam) > 0) break catchingUp;
          passed = id;
          yield { event };
        }
        if (page.next === "" || compareEventIds(parseEventId(page.next), seam) >= 0) break;
        cursor = page.next;
        passed = parseEventId(cursor);
      }
      passed = seam;
    }
    while (!request.signal.aborted) {
      const batch = nextBatch(changes, position, passed);
      if (batch.length === 0) {
        await changes.changed(position);
        continue;
      }
      for (const event of batch) {
        position++;
        const id = parseEventId(event.id);
        if (compareEventIds(id, passed) <= 0) continue;
        passed = id;
        if (matchesFilter(request.filter, event, id.ms)) yield { event };
        if (request.signal.aborted) return;
      }
    }
  } finally {
    changes.close();
  }
}

/** The next events of the recent log, or the cut-off error naming the id to resume after. */
function nextBatch(
  changes: ChangeQueue<OrchestratorEvent>,
  position: number,
  passed: EventId,
): readonly OrchestratorEvent[] {
  try {
    return changes.after(position, liveBatch);
  } catch (error) {
    if (!(error instanceof DomainError) || error.kind !== "resource_exhausted") throw error;
    throw new DomainError(
      "resource_exhausted",
      `the watcher fell behind what this node keeps: watch again with after_id ${formatEventId(passed)}`,
    );
  }
}
