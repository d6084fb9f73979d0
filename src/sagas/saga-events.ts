import type { JsonObject } from "@bufbuild/protobuf";
import type { EventLog } from "../events/event-log.js";
import type { Saga } from "./model.js";
import { sagaEventOf } from "./saga-machine.js";
import { durationOf } from "./saga-records.js";
import type { SagaStore } from "./saga-store.js";

// An event carries the start of a saga's error only: events stay small, the saga holds it whole.
const eventErrorLength = 256;

/**
 * `store`, emitting into `events` the event the table gives each saga transition this process
 * makes (`saga.started`, `saga.completed`, `saga.failed`, `saga.compensated`, `saga.aborted`),
 * once the store has acknowledged it: since a transition is a compare-and-set, exactly one
 * process emits each. A transition whose outcome is unknown ("timeout") emits nothing, even if
 * it was applied.
 */
export function withSagaEvents(store: SagaStore, events: EventLog): SagaStore {
  return {
    open: () => store.open(),
    close: () => store.close(),
    create: (saga) => store.create(saga),
    get: (sagaId) => store.get(sagaId),
    async transition(sagaId, change) {
      const saga = await store.transition(sagaId, change);
      const type = sagaEventOf(saga.status);
      if (type !== undefined) {
        events.append({
          type,
          subject: saga.sagaId,
          correlationId: saga.correlationId,
          payload: eventPayload(saga),
        });
      }
      return saga;
    },
    transitionStep: (sagaId, stepIndex, change) => store.transitionStep(sagaId, stepIndex, change),
    takeLease: (sagaId, request) => store.takeLease(sagaId, request),
    renewLease: (sagaId, proof, ttlMs) => store.renewLease(sagaId, proof, ttlMs),
    list: (query) => store.list(query),
    counts: () => store.counts(),
    sweep: () => store.sweep(),
  };
}

function eventPayload(saga: Saga): JsonObject {
  return {
    saga_id: saga.sagaId,
    name: saga.name,
    run_id: saga.runId,
    status: saga.status,
    version: saga.version,
    ...(saga.finishedAt === undefined ? {} : { duration_ms: durationOf(saga) }),
    ...(saga.error === "" ? {} : { error: saga.error.slice(0, eventErrorLength) }),
  };
}
