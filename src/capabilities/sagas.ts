import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { InfrastructureService } from "../../gen/orchestrator/v1/infrastructure_pb.js";
import type { Clock } from "../clock.js";
import type { AppConfig } from "../config/index.js";
import type { EventLog } from "../events/event-log.js";
import type { ShadowedValue } from "../gateway/http-bindings.js";
import type { IdSource } from "../ids.js";
import { createMemorySagaStore } from "../sagas/memory-saga-store.js";
import { createRedisSagaStore } from "../sagas/redis-saga-store.js";
import { withSagaEvents } from "../sagas/saga-events.js";
import type { SagaStoreLimits } from "../sagas/saga-records.js";
import type { SagaStore } from "../sagas/saga-store.js";
import { createSagaService } from "../services/saga-service.js";
import { type Capability, servicePart } from "./capability.js";

/** What the sagas capability gives the others: the store the workflow engine runs its sagas in. */
export interface SagasCapability extends Capability {
  /**
   * The saga store, emitting `saga.*` events for the transitions this node makes. Usable once
   * the capability has started (the Redis store may still be opening: calls then fail with
   * "unavailable" until it is).
   */
  readonly store: SagaStore;
}

/** What {@link createSagasCapability} is built from. */
export interface SagasCapabilityDeps {
  readonly config: AppConfig;
  readonly clock: Clock;
  readonly ids: IdSource;
  readonly logger: Logger;
  readonly events: EventLog;
  /** The node's command connection when Redis is configured: sagas live there, else in memory. */
  readonly redis: Redis | undefined;
  /** Path-variable values other routes take: `{saga_id}` ones are reserved saga ids. */
  readonly shadowedValues: readonly ShadowedValue[];
}

/** How often retention looks for expired finished sagas, at most and at least. */
const sweepEveryMs = { most: 60_000, least: 1_000 };
/** How long a failed open waits before the next attempt (Redis down at start). */
const reopenAfterMs = 1_000;

/**
 * The saga store (memory, or the node's Redis) and InfrastructureService's saga methods:
 * GetSaga (NOT_FOUND for an unknown id) and GetSagaStats. Finished sagas are forgotten after
 * SAGA_RETENTION_MS, looked for every tenth of it (between 1 s and 60 s). The node does not wait
 * for the store to open (Redis down at start): its calls answer "unavailable" meanwhile.
 */
export function createSagasCapability(deps: SagasCapabilityDeps): SagasCapability {
  const { logger } = deps;
  const raw = createSagaStore(deps);
  const store = withSagaEvents(raw, deps.events);
  const sweepMs = Math.min(
    sweepEveryMs.most,
    Math.max(sweepEveryMs.least, Math.floor(deps.config.sagas.retentionMs / 10)),
  );

  let stopped = false;
  let reopen: NodeJS.Timeout | undefined;
  let sweeper: NodeJS.Timeout | undefined;
  let sweeping: Promise<void> | undefined;
  let sweepFailing = false;

  const sweep = async (): Promise<void> => {
    try {
      const forgotten = await store.sweep();
      if (forgotten > 0) logger.debug({ forgotten }, "finished sagas forgotten");
      if (sweepFailing) logger.info("saga retention works again");
      sweepFailing = false;
    } catch (error) {
      // Once per outage: the next sweeps retry quietly.
      if (!sweepFailing) logger.warn({ err: error }, "saga retention failed; retrying");
      sweepFailing = true;
    }
  };

  const open = async (): Promise<void> => {
    try {
      await store.open();
      // Stopped while it was opening: undo what opening started.
      if (stopped) return await store.close();
      sweeper = setInterval(() => {
        // One sweep at a time: a slow one is not queued behind.
        sweeping ??= sweep().finally(() => {
          sweeping = undefined;
        });
      }, sweepMs);
      sweeper.unref();
    } catch (error) {
      if (stopped) return;
      logger.warn({ err: error }, "saga store not open yet; retrying");
      reopen = setTimeout(() => void open(), reopenAfterMs);
      reopen.unref();
    }
  };

  return {
    names: ["sagas"],
    services: [servicePart(InfrastructureService, createSagaService({ store }))],
    // None of its own: the saga store loads nothing, and what it needs (Redis answering) is the
    // node's own "redis" check.
    readiness: [],
    store,
    // Not awaited: with Redis down at start the node listens at once (not ready), and the store's
    // calls answer "unavailable" until Redis is back.
    start: async () => {
      void open();
    },
    async stop() {
      stopped = true;
      clearTimeout(reopen);
      clearInterval(sweeper);
      await sweeping;
      await store.close();
    },
  };
}

/** The saga store: in Redis when the node has a connection, else in this process. */
function createSagaStore(deps: SagasCapabilityDeps): SagaStore {
  const { config, clock, ids, logger, redis } = deps;
  const limits: Partial<SagaStoreLimits> = {
    ...config.sagas,
    reservedIds: reservedSagaIds(deps.shadowedValues),
  };
  if (redis === undefined) return createMemorySagaStore({ clock, ids }, limits);
  return createRedisSagaStore(
    { redis, clock, ids, logger },
    { keyPrefix: config.redis?.keyPrefix ?? "", ...limits },
  );
}

/** The ids no saga may take, with the reason: the values its `{saga_id}` route loses. */
function reservedSagaIds(shadowed: readonly ShadowedValue[]): ReadonlyMap<string, string> {
  const reserved = new Map<string, string>();
  for (const { method, fieldPath, value, reason } of shadowed) {
    if (method.parent.typeName !== InfrastructureService.typeName) continue;
    if (fieldPath.length === 1 && fieldPath[0]?.name === "saga_id") reserved.set(value, reason);
  }
  return reserved;
}
