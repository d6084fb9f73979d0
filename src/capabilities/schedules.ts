import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { AppConfig } from "../config/index.js";
import { createRedisScheduleLock } from "../schedules/redis-schedule-lock.js";
import { createMemoryScheduleLock } from "../schedules/schedule-lock.js";
import { createScheduler, type ScheduledJob, type ScheduleStatus } from "../schedules/scheduler.js";
import type { Capability } from "./capability.js";

/** The scheduled jobs capability, and what `/info` shows of it. */
export interface SchedulesCapability extends Capability {
  status(): ScheduleStatus[];
}

/**
 * Jobs on a schedule (`SCHEDULED_JOBS`): each firing claimed on the node's Redis when configured
 * (so that it runs on one orchestrator of those sharing it), else in this process. Serves no RPC;
 * `/info` lists the schedules.
 * @throws Error when a schedule names a job `jobs` does not have: the node does not start.
 */
export function createSchedulesCapability(deps: {
  readonly config: AppConfig;
  readonly nodeId: string;
  readonly logger: Logger;
  readonly redis: Redis | undefined;
  /** The jobs a schedule may name. */
  readonly jobs: ReadonlyMap<string, ScheduledJob>;
}): SchedulesCapability {
  const { config } = deps;
  const lock =
    deps.redis === undefined
      ? createMemoryScheduleLock()
      : createRedisScheduleLock({ redis: deps.redis, keyPrefix: config.redis?.keyPrefix ?? "" });
  const scheduler = createScheduler({
    schedules: config.schedules,
    jobs: deps.jobs,
    lock,
    holder: deps.nodeId,
    logger: deps.logger,
  });
  return {
    names: config.schedules.length > 0 ? ["scheduled-jobs"] : [],
    services: [],
    readiness: [],
    status: () => scheduler.status(),
    async start() {
      scheduler.start();
    },
    async stop() {
      await scheduler.stop();
    },
  };
}
