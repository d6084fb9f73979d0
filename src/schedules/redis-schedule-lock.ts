import type { Redis } from "ioredis";
import { redisStoreErrors } from "../redis/redis-store-errors.js";
import type { ScheduleLock } from "./schedule-lock.js";

/**
 * Claims on the shared Redis: one key per firing, set only if absent (`SET NX PX`), so that of
 * the orchestrators sharing the Redis exactly one runs each firing. The key expires by itself
 * after `ttlMs`; it names the firing's time, so a later firing never finds it.
 */
export function createRedisScheduleLock(deps: {
  readonly redis: Redis;
  readonly keyPrefix: string;
}): ScheduleLock {
  const errors = redisStoreErrors({ store: "schedule lock", record: "firing" });
  return {
    async claim(job, firingMs, holder, ttlMs) {
      const key = `${deps.keyPrefix}schedule:${job}:${firingMs}`;
      // A claim sent whose answer is lost counts as not claimed (the firing may then run
      // nowhere): never twice is the promise; a missed firing is logged by the scheduler.
      const reply = await errors.unfencedWrite(deps.redis, () =>
        deps.redis.set(key, holder, "PX", ttlMs, "NX"),
      );
      return reply === "OK";
    },
  };
}
