import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { InfrastructureService } from "../../gen/orchestrator/v1/infrastructure_pb.js";
import type { Clock } from "../clock.js";
import type { AppConfig } from "../config/index.js";
import type { DeadLetters } from "../dlq/dead-letters.js";
import {
  createReplayDelivery,
  deliveryDeadLetterType,
  redisChannelPublisher,
} from "../events/event-delivery.js";
import { createEventLog, type EventLog, EventSubscribers } from "../events/event-log.js";
import { createEventOutbox } from "../events/event-outbox.js";
import type { EventStore } from "../events/event-store.js";
import { createMemoryEventStore } from "../events/memory-event-store.js";
import { followStore, RecentEvents } from "../events/recent-events.js";
import { defaultEventChannels } from "../events/redis-event-scripts.js";
import { createRedisEventStore } from "../events/redis-event-store.js";
import type { EventSample } from "../observability/metrics.js";
import { createEventService } from "../services/event-service.js";
import { type Capability, servicePart } from "./capability.js";

/** The events capability, and the log every other capability emits its events into. */
export interface EventsCapability extends Capability {
  readonly log: EventLog;
  /** What the event metrics show. */
  stats(): EventSample;
}

/** What {@link createEventsCapability} is built from. */
export interface EventsCapabilityDeps {
  readonly config: AppConfig;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The node id, as every event's source. */
  readonly source: string;
  /** This process life's id: the producer of its appends (a retried batch is stored once). */
  readonly incarnationId: string;
  /** The node's Redis connection for commands, when Redis is configured. */
  readonly redis: Redis | undefined;
  /** Where failed deliveries go to be retried. Absent: they are logged and counted only. */
  readonly deadLetters?: DeadLetters;
}

/** How often the age retention is enforced (reads hide older events meanwhile). */
const retentionIntervalMs = 10_000;

/**
 * The event store and everything around it: the log capabilities emit into (synchronously, into
 * a bounded outbox drained to the store), the store (in memory, or a Redis stream shared by every
 * node on the same Redis and prefix, publishing each stored event on `orchestrator.events`), the
 * follower that feeds this node's recent events, watchers and subscribers from the store, the
 * age retention, replays (with failed deliveries in the dead-letter queue) and the events' RPCs
 * (history, replay, clear, watch). With Redis, the follower blocks on a connection of its own
 * (`XREAD BLOCK`), duplicated from the commands connection and closed at stop.
 */
export function createEventsCapability(deps: EventsCapabilityDeps): EventsCapability {
  const { config, clock, logger } = deps;
  const settings = config.events;
  const retention = {
    maxEvents: settings.retentionMaxEvents,
    maxAgeMs: settings.retentionMaxAgeMs,
  };
  const blocking = deps.redis ? blockingConnection(deps.redis, logger) : undefined;
  const store: EventStore =
    deps.redis && blocking
      ? createRedisEventStore(
          { redis: deps.redis, blocking, clock, logger },
          { keyPrefix: config.redis?.keyPrefix ?? "", retention },
        )
      : createMemoryEventStore({ clock }, { retention, maxBytes: settings.storeMaxBytes });
  const counters = { truncated: 0, lostDeliveries: 0 };
  const outbox = createEventOutbox(
    { store, producer: deps.incarnationId, logger },
    { maxEvents: settings.outboxSize, maxBytes: settings.outboxBytes },
  );
  const subscribers = new EventSubscribers((error) =>
    logger.warn({ err: error }, "event subscriber failed"),
  );
  const log = createEventLog(
    {
      clock,
      source: deps.source,
      maxPayloadBytes: settings.maxPayloadBytes,
      onTruncated: (type, bytes) => {
        counters.truncated++;
        logger.warn(
          { type, payload_bytes: bytes, limit: settings.maxPayloadBytes },
          "event payload over the limit: stored as truncated",
        );
      },
    },
    outbox,
    subscribers,
  );
  const recent = new RecentEvents({ maxItems: settings.logSize, maxBytes: settings.logBytes });
  const delivery = createReplayDelivery({
    store,
    subscribers,
    ...(deps.redis ? { publisher: redisChannelPublisher(deps.redis) } : {}),
    channels: defaultEventChannels,
    ...(deps.deadLetters ? { deadLetters: deps.deadLetters } : {}),
    logger,
    onLost: () => counters.lostDeliveries++,
  });
  deps.deadLetters?.handle(deliveryDeadLetterType, delivery.retry);

  const following = new AbortController();
  let follower: Promise<void> | undefined;
  let retentionTimer: NodeJS.Timeout | undefined;
  const enforceAge = () => {
    store.trim().catch((error: unknown) => {
      logger.debug({ err: error }, "event retention not enforced; retrying at the next round");
    });
  };

  return {
    names: ["events"],
    services: [
      servicePart(
        InfrastructureService,
        createEventService({ store, recent, log, delivery, watchMaxLag: settings.logSize }),
      ),
    ],
    readiness: [
      {
        name: "events",
        probe: () => (recent.ready ? undefined : "the event store is not followed yet"),
      },
    ],
    log,
    // Nothing here waits for Redis: the outbox keeps events until the store takes them, and the
    // follower starts once it can read where to start.
    async start() {
      outbox.start();
      follower ??= followStore(store, recent, subscribers, following.signal, logger).catch(
        (error: unknown) => logger.error({ err: error }, "event follower stopped"),
      );
      if (retention.maxAgeMs > 0 && retentionTimer === undefined) {
        retentionTimer = setInterval(enforceAge, retentionIntervalMs);
        retentionTimer.unref();
      }
    },
    // Called after the other capabilities stopped: their last events are in the outbox.
    async stop() {
      if (!(await outbox.flush(config.shutdownTimeoutMs))) {
        logger.error(
          { pending: outbox.stats().pending },
          "events not stored by the end of the shutdown: lost",
        );
      }
      outbox.stop();
      following.abort();
      clearInterval(retentionTimer);
      await follower;
      await store.close();
      blocking?.disconnect();
    },
    stats: () => ({ ...outbox.stats(), ...counters }),
  };
}

/** A connection of the follower's own, for XREAD BLOCK (it serves nothing else meanwhile). */
function blockingConnection(commands: Redis, logger: Logger): Redis {
  const blocking = commands.duplicate();
  // Outages are reported by the follower, once each; ioredis needs a listener not to print them.
  blocking.on("error", (error: Error) => logger.debug({ err: error }, "event follower connection"));
  return blocking;
}
