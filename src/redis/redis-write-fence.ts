import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { type Clock, systemClock } from "../clock.js";
import { redisCommandTimeoutMs } from "./redis-connection.js";

/**
 * How a fenced write failed without an answer from Redis:
 * - "not_sent": it never left this process (not connected, or the clock offset could not be
 *   measured), so it did not happen and can be retried anywhere;
 * - "unknown": it was sent and no answer came by the time it was given up (Redis frozen, the
 *   connection lost with the write in flight). It happened if Redis ran it before `deadlineMs`,
 *   and it cannot happen after: by the time this error is thrown, that deadline has passed on
 *   Redis' own clock.
 */
export class RedisWriteError extends Error {
  override readonly name = "RedisWriteError";

  constructor(
    readonly outcome: "not_sent" | "unknown",
    /** The write's deadline on Redis' clock, Unix ms; 0 when it never got one. */
    readonly deadlineMs: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * Gives each write an absolute deadline on Redis' clock, for a script to check against
 * `redis.call('TIME')` before it changes anything, and gives the write up only once that deadline
 * has passed there. So an answer of failure is final: a write held by a frozen Redis, or re-sent
 * by ioredis after a reconnection, finds its deadline gone and changes nothing.
 */
export interface RedisWriteFence {
  /** Measures the clock offset now and at every reconnection. Idempotent. */
  start(): void;
  /** Stops following the connection (removes its listener). Idempotent. */
  stop(): void;
  /**
   * Runs `write`, giving it the deadline (Redis' clock, Unix ms) it must carry to its script.
   * Resolves with the reply when it comes in time.
   * @throws RedisWriteError "not_sent" at once when the write was not sent; "unknown" when no
   *   reply came in time (thrown when the deadline has passed on Redis' clock, never before).
   *   A reply error from Redis (e.g. `BUSY`) is rethrown as is: Redis answered.
   */
  send<T>(write: (deadlineMs: number) => Promise<T>): Promise<T>;
}

/** What a write fence is built on. */
export interface RedisWriteFenceDeps {
  /** The connection writes go over, configured without an offline queue (`createRedisClient`). */
  readonly redis: Redis;
  /** This process' clock; only `monotonic()` is used. Default: `systemClock`. */
  readonly clock?: Clock;
  /** Where failed background measurements are reported (debug). Default: nowhere. */
  readonly logger?: Logger;
}

/** How a write fence times writes. */
export interface RedisWriteFenceOptions {
  /**
   * How long after it is sent a write is given up. Keep it at most the connection's command
   * timeout, so that this fence, not ioredis, decides when. Default 5,000 ms.
   */
  readonly writeTimeoutMs: number;
  /**
   * Kept between a write's deadline (on Redis' clock) and the moment it is given up, on top of
   * the measured uncertainty of the clock offset. Default 100 ms.
   */
  readonly marginMs: number;
  /**
   * How often the clock offset is measured again (in the background, when a write needs it); the
   * most certain measurement, its drift allowance included, is the one used. Default 10,000 ms.
   */
  readonly resyncIntervalMs: number;
  /**
   * How fast the two clocks may drift apart, in parts per million: the uncertainty of a
   * measurement grows by this with its age. Default 1,000 (0.1%; NTP keeps clocks within 500).
   */
  readonly maxDriftPpm: number;
}

export const redisWriteFenceDefaults: Readonly<RedisWriteFenceOptions> = Object.freeze({
  writeTimeoutMs: redisCommandTimeoutMs,
  marginMs: 100,
  resyncIntervalMs: 10_000,
  maxDriftPpm: 1_000,
});

/** Redis' clock minus this process' monotonic clock, as one TIME round trip saw it. */
interface OffsetSample {
  readonly offsetMs: number;
  /** Half the round trip (the true offset is within this of `offsetMs`), plus rounding. */
  readonly uncertaintyMs: number;
  /** When it was taken, on the monotonic clock. */
  readonly takenAt: number;
}

/**
 * A fence for writes over `deps.redis`. The offset between Redis' clock and this process'
 * monotonic clock is measured with TIME (round trip included in its uncertainty) when the
 * connection becomes ready and again every `resyncIntervalMs` while writes need it; a write's
 * deadline is its give-up moment on Redis' clock, less the uncertainty (grown by the drift
 * allowance since the measurement) and `marginMs`. Skew between the two wall clocks therefore does not matter; the
 * fence assumes only that Redis' clock is not stepped back by more than the margin meanwhile.
 *
 * @throws RangeError when an option is not a positive number, or `marginMs` leaves no time.
 */
export function createRedisWriteFence(
  deps: RedisWriteFenceDeps,
  options: Partial<RedisWriteFenceOptions> = {},
): RedisWriteFence {
  const { redis, clock = systemClock, logger } = deps;
  const settings = Object.freeze({ ...redisWriteFenceDefaults, ...options });
  for (const [name, value] of Object.entries(settings)) {
    if (!(value > 0)) throw new RangeError(`${name} must be a positive number, not ${value}`);
  }
  if (settings.marginMs >= settings.writeTimeoutMs) {
    throw new RangeError("marginMs must be less than writeTimeoutMs");
  }
  let best: OffsetSample | undefined;
  // A reconnection may reach another server (a failover): measurements from before it are void.
  let generation = 0;
  let measuring: Promise<void> | undefined;
  // When the last measurement started: a sample kept because later ones were less certain must
  // not make every write measure again.
  let measuredAt = Number.NEGATIVE_INFINITY;
  let started = false;

  const uncertaintyAt = (sample: OffsetSample, at: number): number =>
    sample.uncertaintyMs + ((at - sample.takenAt) * settings.maxDriftPpm) / 1e6;

  const measureOnce = async (): Promise<void> => {
    const from = generation;
    const before = clock.monotonic();
    const [seconds, micros] = (await redis.time()).map(Number);
    const after = clock.monotonic();
    const redisMs = (seconds ?? Number.NaN) * 1000 + (micros ?? Number.NaN) / 1000;
    if (!Number.isFinite(redisMs)) throw new Error("unexpected reply to TIME");
    // Redis read its clock somewhere between `before` and `after`; 1 ms more covers rounding.
    const sample = {
      offsetMs: redisMs - (before + after) / 2,
      uncertaintyMs: (after - before) / 2 + 1,
      takenAt: after,
    };
    if (from !== generation) return;
    if (best === undefined || sample.uncertaintyMs < uncertaintyAt(best, after)) best = sample;
  };

  const measure = (): Promise<void> => {
    if (measuring !== undefined) return measuring;
    measuredAt = clock.monotonic();
    const run = measureOnce().finally(() => {
      if (measuring === run) measuring = undefined;
    });
    measuring = run;
    return run;
  };

  const inBackground = () => {
    measure().catch((error: unknown) => {
      logger?.debug({ err: { message: String(error) } }, "redis clock offset not measured");
    });
  };

  const onReady = () => {
    generation++;
    best = undefined;
    measuring = undefined;
    inBackground();
  };

  /** The best measurement, taken now when there is none. */
  const sample = async (): Promise<OffsetSample> => {
    if (best === undefined) {
      try {
        await measure();
      } catch (error) {
        throw notSent("the clock offset could not be measured", error);
      }
    }
    const current = best;
    if (current === undefined) throw notSent("the connection changed while measuring", undefined);
    if (clock.monotonic() - measuredAt > settings.resyncIntervalMs) inBackground();
    return current;
  };

  return {
    start() {
      if (started) return;
      started = true;
      redis.on("ready", onReady);
      if (redis.status === "ready") inBackground();
    },
    stop() {
      if (!started) return;
      started = false;
      redis.off("ready", onReady);
    },
    async send(write) {
      if (redis.status !== "ready") throw notSent(`the connection is ${redis.status}`, undefined);
      const offset = await sample();
      const giveUpAt = clock.monotonic() + settings.writeTimeoutMs;
      const deadlineMs = Math.floor(
        giveUpAt + offset.offsetMs - uncertaintyAt(offset, giveUpAt) - settings.marginMs,
      );
      return answer(write(deadlineMs), giveUpAt, deadlineMs, clock);
    },
  };
}

/**
 * The reply, or a failure that is final: an error proving the write was not sent at once, any
 * other loss of the write only at `giveUpAt` (when its deadline has passed on Redis' clock).
 */
function answer<T>(
  reply: Promise<T>,
  giveUpAt: number,
  deadlineMs: number,
  clock: Clock,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let lost: unknown;
    const giveUp = () => {
      // A timer may fire a little early (Node arms it from the loop's cached time): wait it out.
      const left = giveUpAt - clock.monotonic();
      if (left > 0) {
        timer = setTimeout(giveUp, Math.ceil(left));
        timer.unref();
        return;
      }
      reject(
        new RedisWriteError("unknown", deadlineMs, "no reply before the write's deadline", {
          cause: lost,
        }),
      );
    };
    reply.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        if (isReplyError(error)) {
          clearTimeout(timer);
          reject(error);
        } else if (wasNotSent(error)) {
          clearTimeout(timer);
          reject(notSent("the connection could not take the write", error));
        } else {
          // Timed out, or the connection went with the write in flight: ioredis may still send
          // it again after reconnecting. The deadline decides; the answer waits for it.
          lost = error;
        }
      },
    );
    giveUp();
  });
}

function notSent(message: string, cause: unknown): RedisWriteError {
  return new RedisWriteError("not_sent", 0, message, { cause });
}

/** Redis answered, with an error: the command reached it. */
export function isReplyError(error: unknown): error is Error {
  return error instanceof Error && error.name === "ReplyError";
}

/**
 * ioredis refuses a command this way, before writing it, when the connection is not ready and
 * there is no offline queue (`createRedisClient`): the one failure that proves it was not sent.
 */
export function wasNotSent(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith("Stream isn't writeable");
}
