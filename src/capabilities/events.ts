import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { AppConfig } from "../config/index.js";
import { createMemoryEventLog, type EventLog } from "../events/event-log.js";
import { publishEventsToRedis } from "../events/redis-event-publisher.js";
import type { IdSource } from "../ids.js";
import type { Capability } from "./capability.js";

/** The events capability, and the log every other capability emits its events into. */
export interface EventsCapability extends Capability {
  readonly log: EventLog;
}

/**
 * The one place events go: a bounded in-memory log of recent events, published on Redis pub/sub
 * (`orchestrator.events`, `findings.created`) when Redis is configured.
 */
export function createEventsCapability(deps: {
  readonly config: AppConfig;
  readonly clock: Clock;
  readonly ids: IdSource;
  readonly logger: Logger;
  /** The node id, as every event's source. */
  readonly source: string;
  readonly redis: Redis | undefined;
}): EventsCapability {
  const { config, logger, redis } = deps;
  const log = createMemoryEventLog(
    { clock: deps.clock, ids: deps.ids, source: deps.source },
    {
      capacity: config.events.logSize,
      maxBytes: config.events.logBytes,
      onSubscriberError: (error) => logger.warn({ err: error }, "event subscriber failed"),
    },
  );
  // Published from the start: events emitted while the other capabilities start are not lost.
  const stopPublishing = redis ? publishEventsToRedis(log, redis, logger) : undefined;
  return {
    names: ["events"],
    services: [],
    readiness: [],
    log,
    start: async () => {},
    stop: async () => stopPublishing?.(),
  };
}
