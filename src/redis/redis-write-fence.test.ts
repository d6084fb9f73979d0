import { EventEmitter } from "node:events";
import type { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { systemClock } from "../clock.js";
import { createRedisWriteFence, RedisWriteError } from "./redis-write-fence.js";

// Redis' clock in these tests: this process' monotonic clock plus a day and a bit.
const offsetMs = 86_400_000 + 12_345;

/** Enough of an ioredis client for the fence: a status, TIME, and the ready event. */
function fakeRedis(status = "ready"): Redis & { timeCalls: number } {
  const emitter = new EventEmitter();
  return Object.assign(emitter, {
    status,
    timeCalls: 0,
    async time() {
      this.timeCalls++;
      const now = systemClock.monotonic() + offsetMs;
      return [Math.floor(now / 1000), Math.floor((now % 1000) * 1000)];
    },
  }) as unknown as Redis & { timeCalls: number };
}

async function failureOf(promise: Promise<unknown>): Promise<RedisWriteError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(RedisWriteError);
  return error as RedisWriteError;
}

const never = () => new Promise<never>(() => {});

describe("createRedisWriteFence", () => {
  it("gives a write a deadline on Redis' clock, before the moment it gives the write up", async () => {
    const fence = createRedisWriteFence({ redis: fakeRedis() }, { writeTimeoutMs: 300 });
    let deadline = 0;
    const sentAt = systemClock.monotonic();
    const failure = await failureOf(
      fence.send((d) => {
        deadline = d;
        return never();
      }),
    );
    const failedAt = systemClock.monotonic();
    expect(failure.outcome).toBe("unknown");
    expect(failure.deadlineMs).toBe(deadline);
    // On Redis' clock, ahead of the send, and at least the margin (100 ms) before the give-up.
    expect(deadline).toBeGreaterThan(sentAt + offsetMs);
    expect(deadline).toBeLessThanOrEqual(failedAt + offsetMs - 100);
    // Given up no sooner than the write timeout.
    expect(failedAt - sentAt).toBeGreaterThanOrEqual(300);
  });

  it("answers a write lost with its connection only once its deadline has passed", async () => {
    const fence = createRedisWriteFence({ redis: fakeRedis() }, { writeTimeoutMs: 300 });
    const sentAt = systemClock.monotonic();
    const failure = await failureOf(
      fence.send(() => Promise.reject(new Error("Connection is closed."))),
    );
    expect(failure.outcome).toBe("unknown");
    expect(systemClock.monotonic() - sentAt).toBeGreaterThanOrEqual(300);
    expect((failure.cause as Error).message).toBe("Connection is closed.");
  });

  it("says 'not_sent' at once for a write the connection refused to send", async () => {
    const fence = createRedisWriteFence({ redis: fakeRedis() }, { writeTimeoutMs: 60_000 });
    const refused = new Error("Stream isn't writeable and enableOfflineQueue options is false");
    const failure = await failureOf(fence.send(() => Promise.reject(refused)));
    expect(failure.outcome).toBe("not_sent");
    expect(failure.cause).toBe(refused);
  });

  it("sends nothing while the connection is not ready", async () => {
    const redis = fakeRedis("reconnecting");
    const fence = createRedisWriteFence({ redis });
    let called = false;
    const failure = await failureOf(
      fence.send(async () => {
        called = true;
      }),
    );
    expect(failure.outcome).toBe("not_sent");
    expect(called).toBe(false);
    expect(redis.timeCalls).toBe(0);
  });

  it("passes a reply, and a reply error, through as they come", async () => {
    const fence = createRedisWriteFence({ redis: fakeRedis() });
    expect(await fence.send(async () => "OK")).toBe("OK");
    const busy = Object.assign(new Error("BUSY Redis is busy running a script"), {
      name: "ReplyError",
    });
    await expect(fence.send(() => Promise.reject(busy))).rejects.toBe(busy);
  });

  it("measures the offset when started and again at every reconnection", async () => {
    const redis = fakeRedis();
    const fence = createRedisWriteFence({ redis });
    fence.start();
    await fence.send(async () => "OK");
    expect(redis.timeCalls).toBe(1);
    redis.emit("ready");
    await fence.send(async () => "OK");
    expect(redis.timeCalls).toBe(2);
    fence.stop();
    expect(redis.listenerCount("ready")).toBe(0);
  });

  it("refuses options that leave a write no time", () => {
    const redis = fakeRedis();
    expect(() => createRedisWriteFence({ redis }, { writeTimeoutMs: 0 })).toThrow(RangeError);
    expect(() => createRedisWriteFence({ redis }, { writeTimeoutMs: 100, marginMs: 100 })).toThrow(
      RangeError,
    );
  });
});
