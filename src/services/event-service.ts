import { type Timestamp, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { InfrastructureService } from "../../gen/orchestrator/v1/infrastructure_pb.js";
import { checkTimeRange, clearEvents, replayEvents } from "../events/event-admin.js";
import type { ReplayDelivery } from "../events/event-delivery.js";
import type { EventLog } from "../events/event-log.js";
import type { EventStore } from "../events/event-store.js";
import { watchEvents } from "../events/event-watch.js";
import type { OrchestratorEvent } from "../events/model.js";
import type { RecentEvents } from "../events/recent-events.js";
import { callMetaOf } from "../interceptors/call-meta.js";

/** What the events' RPCs work with. */
export interface EventServiceDeps {
  readonly store: EventStore;
  readonly recent: RecentEvents;
  readonly log: EventLog;
  readonly delivery: ReplayDelivery;
  /** Events a watcher may fall behind by before it is cut off. */
  readonly watchMaxLag: number;
}

/** The page size and replay count when the request says 0. */
const defaultLimit = 100;

/** The events' part of InfrastructureService: history, replay, clear, watch. */
export function createEventService(
  deps: EventServiceDeps,
): Pick<
  ServiceImpl<typeof InfrastructureService>,
  "getEventHistory" | "replayEvents" | "clearEvents" | "watchEvents"
> {
  const { store } = deps;
  return {
    async getEventHistory(request) {
      const filter = {
        types: request.eventTypes,
        subject: request.subject,
        correlationId: request.correlationId,
        ...timeRange(request.since, request.until),
      };
      checkTimeRange(filter);
      const page = await store.read({
        ...filter,
        after: request.cursor,
        limit: request.limit || defaultLimit,
      });
      return {
        events: page.events.map(eventMessage),
        count: page.events.length,
        nextCursor: page.next,
      };
    },

    async replayEvents(request) {
      const replayed = await replayEvents(
        { store, delivery: deps.delivery },
        {
          ids: request.eventIds,
          types: request.eventTypes,
          correlationId: request.correlationId,
          ...timeRange(request.since, request.until),
          limit: request.limit || defaultLimit,
        },
        request.dryRun,
      );
      return {
        replayedEvents: replayed.map(eventMessage),
        count: replayed.length,
        dryRun: request.dryRun,
      };
    },

    async clearEvents(request, context) {
      const meta = callMetaOf(context);
      const cleared = await clearEvents(
        { store, log: deps.log },
        {
          type: request.eventType,
          correlationId: request.correlationId,
          ...(request.before ? { before: timestampMs(request.before) } : {}),
          all: request.all,
        },
        { correlationId: meta.correlationId, traceId: meta.traceId },
      );
      return { clearedCount: cleared };
    },

    async *watchEvents(request, context) {
      const events = watchEvents(store, deps.recent, {
        filter: {
          types: request.eventTypes,
          subject: request.subject,
          correlationId: request.correlationId,
        },
        afterId: request.afterId,
        maxLag: deps.watchMaxLag,
        signal: context.signal,
      });
      for await (const item of events) {
        yield "event" in item
          ? { kind: { case: "event" as const, value: eventMessage(item.event) } }
          : { kind: { case: "startedAfter" as const, value: item.startedAfter } };
      }
    },
  };
}

function timeRange(since: Timestamp | undefined, until: Timestamp | undefined) {
  return {
    ...(since ? { since: timestampMs(since) } : {}),
    ...(until ? { until: timestampMs(until) } : {}),
  };
}

/** An event as the API shows it. */
export function eventMessage(event: OrchestratorEvent) {
  return {
    id: event.id,
    type: event.type,
    subject: event.subject,
    correlationId: event.correlationId,
    traceId: event.traceId,
    source: event.source,
    timestamp: timestampFromMs(event.timestamp),
    payload: event.payload,
    replayOf: event.replayOf ?? "",
  };
}
