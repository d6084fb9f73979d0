import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { InfrastructureService } from "../../gen/orchestrator/v1/infrastructure_pb.js";
import type { Clock } from "../clock.js";
import type { AppConfig } from "../config/index.js";
import { createDeadLetterQueue } from "../dlq/dead-letter-queue.js";
import type { DeadLetters } from "../dlq/dead-letters.js";
import type { DlqStore } from "../dlq/dlq-store.js";
import { createMemoryDlqStore } from "../dlq/memory-dlq-store.js";
import { createRedisDlqStore } from "../dlq/redis-dlq-store.js";
import type { EventLog } from "../events/event-log.js";
import type { IdSource } from "../ids.js";
import { createDlqService } from "../services/dlq-service.js";
import { type Capability, servicePart } from "./capability.js";

/** The DLQ capability, and the queue other capabilities record their failures in. */
export interface DlqCapability extends Capability {
  /** Give it to a capability whose failures should be retried (events, workflow steps). */
  readonly deadLetters: DeadLetters;
}

/** What {@link createDlqCapability} is built from. */
export interface DlqCapabilityDeps {
  readonly config: AppConfig;
  readonly clock: Clock;
  readonly ids: IdSource;
  readonly logger: Logger;
  /** Where `dlq.entry.*` events go. */
  readonly events: EventLog;
  /** The node's command connection, when Redis is configured: the store is then shared there. */
  readonly redis: Redis | undefined;
  /** Numbers in [0, 1) for the backoff's jitter. Default `Math.random`. */
  readonly random?: () => number;
}

/**
 * The dead-letter queue: its store (on the node's Redis connection when configured, else in this
 * process), the automatic retries (started with the node, stopped before its store), and the
 * operators' InfrastructureService methods GetDlqStats, ListDlqEntries and RetryDlq.
 */
export function createDlqCapability(deps: DlqCapabilityDeps): DlqCapability {
  const { config, clock, ids, logger, events } = deps;
  const settings = config.dlq;
  const store = createDlqStore(deps);
  const queue = createDeadLetterQueue(
    {
      store,
      clock,
      ids,
      events,
      logger,
      ...(deps.random ? { random: deps.random } : {}),
    },
    {
      baseDelayMs: settings.baseDelayMs,
      maxDelayMs: settings.maxDelayMs,
      maxAttempts: settings.maxAttempts,
      concurrency: settings.concurrency,
      retryTimeoutMs: settings.retryTimeoutMs,
      pollIntervalMs: settings.pollIntervalMs,
      maxPayloadBytes: settings.maxPayloadBytes,
      resolvedRetentionMs: settings.resolvedRetentionMs,
      // Bounded by the node's own shutdown budget: a retry never holds a shutdown longer.
      stopTimeoutMs: Math.max(1, config.shutdownTimeoutMs),
    },
  );
  let started = false;
  return {
    names: ["dlq"],
    services: [servicePart(InfrastructureService, createDlqService(queue))],
    readiness: [
      {
        name: "dlq",
        probe: () => (started ? undefined : "the dead-letter queue has not started yet"),
      },
    ],
    deadLetters: queue,
    async start() {
      await store.open();
      queue.start();
      started = true;
    },
    async stop() {
      started = false;
      await queue.stop();
      await store.close();
    },
  };
}

function createDlqStore(deps: DlqCapabilityDeps): DlqStore {
  const { config, redis, logger, clock } = deps;
  const limits = { maxEntries: config.dlq.maxEntries, maxBytes: config.dlq.maxBytes };
  if (redis === undefined || config.redis === undefined) return createMemoryDlqStore(limits);
  return createRedisDlqStore(
    { redis, logger, clock },
    { keyPrefix: config.redis.keyPrefix, ...limits },
  );
}
