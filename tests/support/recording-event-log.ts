import type { Clock } from "../../src/clock.js";
import { draftOf, type EventLog, EventSubscribers } from "../../src/events/event-log.js";
import {
  type EventId,
  formatEventId,
  nextEventId,
  type OrchestratorEvent,
} from "../../src/events/model.js";

/** An event log that keeps, in this process, every event appended to it: for unit tests. */
export interface RecordingEventLog extends EventLog {
  /** Every event appended so far, oldest first, with ids as a store would give them. */
  recent(): OrchestratorEvent[];
}

/**
 * The event log of a unit test: `append` stores at once (no outbox, no store) and tells the
 * subscribers synchronously, so that a test reads what a module emitted right after it did.
 */
export function createRecordingEventLog(deps: {
  readonly clock: Clock;
  readonly source: string;
}): RecordingEventLog {
  const events: OrchestratorEvent[] = [];
  const subscribers = new EventSubscribers();
  let last: EventId = { ms: 0, seq: 0 };
  const emission = { clock: deps.clock, source: deps.source, maxPayloadBytes: 1024 * 1024 };
  return {
    append(event) {
      const draft = draftOf(event, emission);
      last = nextEventId(last, draft.timestamp);
      const stored: OrchestratorEvent = { ...draft, id: formatEventId(last) };
      events.push(stored);
      subscribers.deliver(stored);
    },
    draft: (event) => draftOf(event, emission),
    subscribe: (listener) => subscribers.subscribe(listener),
    recent: () => [...events],
  };
}
