import { Redis } from "ioredis";
import type { Logger } from "pino";
import type { ReadinessCheck } from "../system/readiness.js";

/** Where Redis is, as configuration gives it. */
export interface RedisConnectionOptions {
  readonly host?: string | undefined;
  readonly port: number;
  /** redis:// or rediss:// URL; wins over host and port. */
  readonly url?: string | undefined;
  readonly password?: string | undefined;
}

/** How long a command may wait for its reply before ioredis fails it. */
export const redisCommandTimeoutMs = 5_000;

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
  const client = options.url
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

/**
 * Waits until `client` is ready: commands sent before would fail at once (no offline queue).
 * @throws Error when it is not ready within `timeoutMs`, or its connection ends first.
 */
export function untilReady(client: Redis, timeoutMs: number): Promise<void> {
  if (client.status === "ready") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const finish = (error?: Error) => {
      clearTimeout(timer);
      client.off("ready", onReady);
      client.off("end", onEnd);
      if (error) reject(error);
      else resolve();
    };
    const onReady = () => finish();
    const onEnd = () => finish(new Error("the connection has ended"));
    const timer = setTimeout(
      () => finish(new Error("the connection was not ready in time")),
      timeoutMs,
    );
    client.on("ready", onReady);
    client.on("end", onEnd);
  });
}
