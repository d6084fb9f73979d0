import { DomainError } from "../errors/domain-error.js";
import type { ReplayDelivery } from "./event-delivery.js";
import type { EventLog } from "./event-log.js";
import type { EventClearSelection, EventStore } from "./event-store.js";
import { type EventFilter, matchesFilter, type OrchestratorEvent, parseEventId } from "./model.js";

/** What a replay selects: these ids (if any), and the events that match every filter. */
export interface ReplaySelection extends EventFilter {
  readonly ids: readonly string[];
  /** Events replayed at most. */
  readonly limit: number;
}

/** Who asked, carried into the events an operation emits. */
export interface EventCall {
  readonly correlationId: string;
  readonly traceId: string;
}

/**
 * Refuses a time range that selects nothing by construction.
 * @throws DomainError "invalid" naming `until` when it is not after `since`.
 */
export function checkTimeRange(filter: Pick<EventFilter, "since" | "until">): void {
  const { since, until } = filter;
  if (since !== undefined && until !== undefined && until <= since) {
    throw new DomainError("invalid", "until: must be after since");
  }
}

/**
 * The stored events a replay selects, in their original (id) order: with ids, those of them that
 * match the filters; without, the first `limit` matching events, read a page at a time.
 */
export async function selectForReplay(
  store: EventStore,
  selection: ReplaySelection,
): Promise<OrchestratorEvent[]> {
  checkTimeRange(selection);
  if (selection.ids.length > 0) {
    const found = await store.readIds(selection.ids);
    return found
      .filter((event) => matchesFilter(selection, event, parseEventId(event.id).ms))
      .slice(0, selection.limit);
  }
  const selected: OrchestratorEvent[] = [];
  let after = "";
  do {
    const page = await store.read({
      ...selection,
      after,
      limit: selection.limit - selected.length,
    });
    selected.push(...page.events);
    after = page.next;
  } while (after !== "" && selected.length < selection.limit);
  return selected;
}

/**
 * Delivers the selected events again, one after the other in their original order (each marked
 * as a replay of itself; nothing new is stored), or, on a dry run, only says which.
 * @returns the stored events selected.
 */
export async function replayEvents(
  deps: { readonly store: EventStore; readonly delivery: ReplayDelivery },
  selection: ReplaySelection,
  dryRun: boolean,
): Promise<OrchestratorEvent[]> {
  const selected = await selectForReplay(deps.store, selection);
  if (!dryRun) for (const event of selected) await deps.delivery.replay(event);
  return selected;
}

/**
 * Removes the selected stored events, then records that it did: an `events.cleared` event with
 * the filter and the count (stored after the clear, so never cleared by it).
 * @returns how many events were removed.
 * @throws DomainError "invalid" when the selection has no filter and is not `all`, or combines
 *   `all` with a filter.
 */
export async function clearEvents(
  deps: { readonly store: EventStore; readonly log: EventLog },
  request: { type: string; correlationId: string; before?: number; all: boolean },
  call: EventCall,
): Promise<number> {
  const { type, correlationId, before, all } = request;
  const filtered = type !== "" || correlationId !== "" || before !== undefined;
  if (all && filtered) {
    throw new DomainError(
      "invalid",
      "all: cannot be combined with event_type, correlation_id or before",
    );
  }
  const selection: EventClearSelection = all
    ? { all: true }
    : {
        ...(type ? { type } : {}),
        ...(correlationId ? { correlationId } : {}),
        ...(before === undefined ? {} : { before }),
      };
  const cleared = await deps.store.clear(selection);
  deps.log.append({
    type: "events.cleared",
    subject: "events",
    correlationId: call.correlationId,
    traceId: call.traceId,
    payload: {
      filter: {
        event_type: type,
        correlation_id: correlationId,
        before: before === undefined ? "" : new Date(before).toISOString(),
        all,
      },
      cleared_count: cleared,
    },
  });
  return cleared;
}
