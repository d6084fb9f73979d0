import type { Redis } from "ioredis";

/** How long a command may wait for its reply before ioredis fails it (`createRedisClient`). */
export const redisCommandTimeoutMs = 5_000;

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
