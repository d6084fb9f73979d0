// Loads the Redis driver (ioredis: some 50 modules): import this module only when Redis is
// configured (the app does so dynamically). What the stores need of an open connection is in
// redis-connection.ts, which loads no driver.
import { Cluster, Redis } from "ioredis";
import type { Logger } from "pino";
import type { ReadinessCheck } from "../system/readiness.js";
import { redisCommandTimeoutMs } from "./redis-connection.js";

/** Where Redis is, as configuration gives it. */
export interface RedisConnectionOptions {
  readonly host?: string | undefined;
  readonly port: number;
  /** redis:// or rediss:// URL; wins over host and port. */
  readonly url?: string | undefined;
  /** `host:port` seeds of a Redis Cluster; wins over url, host and port. */
  readonly clusterNodes?: readonly string[] | undefined;
  readonly password?: string | undefined;
}

/**
 * Connects to Redis for durable state and events. Commands fail fast while Redis is unreachable
 * (no offline queue), so that a write is refused with UNAVAILABLE rather than queued to land at
 * some later time; the client reconnects by itself with capped backoff. A command in flight when
 * the connection drops is sent again after reconnecting (ioredis' default): writes whose outcome
 * matters carry a deadline (`createRedisWriteFence`) so that such a late copy changes nothing.
 */
export function createRedisClient(options: RedisConnectionOptions, logger: Logger): Redis {
  const common = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 5_000,
    // A Redis that freezes rather than dies must not hang commands. Registry writes are given up
    // by their own fence (src/redis/redis-write-fence.ts), at most this long after they are sent.
    commandTimeout: redisCommandTimeoutMs,
    // Commands issued in the same tick (a registry write and its event) share one socket write.
    enableAutoPipelining: true,
    retryStrategy: (attempt: number) => Math.min(attempt * 200, 2_000),
    ...(options.password ? { password: options.password } : {}),
  };
  const client =
    options.clusterNodes && options.clusterNodes.length > 0
      ? createClusterClient(options.clusterNodes, common)
      : options.url
        ? new Redis(options.url, common)
        : new Redis({ ...common, host: options.host ?? "127.0.0.1", port: options.port });
  let reported = false;
  client.on("error", (error: Error) => {
    // One line per outage, not one per reconnect attempt.
    if (!reported) logger.warn({ err: { message: error.message } }, "redis unreachable");
    reported = true;
  });
  client.on("ready", () => {
    if (reported) logger.info("redis reachable again");
    reported = false;
  });
  return client;
}

type ClientOptions = {
  readonly enableOfflineQueue: boolean;
  readonly enableAutoPipelining: boolean;
  readonly retryStrategy: (attempt: number) => number;
} & Record<string, unknown>;

/**
 * A Redis Cluster client with the same behaviour: the per-node options go to every node's
 * connection, the queue, pipelining and retry rules to the cluster. The stores are typed against
 * `Redis`: `Cluster` has the same commands, scripts (`defineCommand`), events, `status`,
 * `duplicate`, pub/sub and `quit`, which is all they use, and it routes each command and script
 * by its keys (every store keeps a script's keys in one slot: src/redis/redis-keys.ts).
 */
function createClusterClient(seeds: readonly string[], options: ClientOptions): Redis {
  const { enableOfflineQueue, enableAutoPipelining, retryStrategy, ...perNode } = options;
  const cluster = new Cluster(
    seeds.map((seed) => {
      const colon = seed.lastIndexOf(":");
      return { host: seed.slice(0, colon), port: Number(seed.slice(colon + 1)) };
    }),
    {
      enableOfflineQueue,
      enableAutoPipelining,
      clusterRetryStrategy: retryStrategy,
      redisOptions: perNode,
    },
  );
  return cluster as unknown as Redis;
}

/** Readiness follows Redis: a PING must succeed. */
export function redisReadinessCheck(client: Redis): ReadinessCheck {
  return {
    name: "redis",
    probe: async () => {
      if (client.status !== "ready") return `redis is ${client.status}`;
      try {
        await client.ping();
        return undefined;
      } catch {
        return "redis does not answer";
      }
    },
  };
}

/** Closes the connection politely (QUIT), or drops it if Redis does not answer in time. */
export async function closeRedisClient(client: Redis, timeoutMs = 2_000): Promise<void> {
  if (client.status === "end") return;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, timeoutMs);
  });
  try {
    await Promise.race([client.quit().then(() => undefined), timeout]);
  } catch {
    // not connected: nothing to say goodbye to
  } finally {
    clearTimeout(timer);
    client.disconnect();
  }
}
