/**
 * The retries a node runs at once, automatic and by hand together: a pool of slots taken before
 * an entry is claimed and given back when its outcome is recorded, so that a claim's retry starts
 * at once and the number in flight never passes the limit.
 */
export interface RetrySlots {
  /** Takes up to `max` free slots now, none while callers wait for some; returns how many. */
  take(max: number): number;
  /** Waits until a slot is free (first come, first served), then takes up to `max`. */
  takeSome(max: number): Promise<number>;
  /** Gives `count` slots back. */
  release(count: number): void;
  /** Resolves once a slot is free, or `signal` aborts. */
  untilFree(signal: AbortSignal): Promise<void>;
  /** Slots taken now. */
  readonly active: number;
}

/**
 * A pool of `limit` slots.
 * @throws RangeError when `limit` is not a positive integer.
 */
export function createRetrySlots(limit: number): RetrySlots {
  if (!Number.isInteger(limit) || limit < 1) {
    throw new RangeError(`limit must be a positive integer, not ${limit}`);
  }
  let free = limit;
  const waiting: { max: number; grant: (count: number) => void }[] = [];
  const watchers = new Set<() => void>();

  const handOut = () => {
    while (free > 0 && waiting.length > 0) {
      const next = waiting.shift() as (typeof waiting)[number];
      const count = Math.min(next.max, free);
      free -= count;
      next.grant(count);
    }
    if (free > 0) for (const watcher of [...watchers]) watcher();
  };

  return {
    take(max) {
      if (waiting.length > 0 || max <= 0) return 0;
      const count = Math.min(max, free);
      free -= count;
      return count;
    },
    takeSome(max) {
      if (max <= 0) return Promise.resolve(0);
      return new Promise((grant) => {
        waiting.push({ max, grant });
        handOut();
      });
    },
    release(count) {
      if (count <= 0) return;
      free = Math.min(limit, free + count);
      handOut();
    },
    untilFree(signal) {
      if (free > 0 || signal.aborted) return Promise.resolve();
      return new Promise((resolve) => {
        const done = () => {
          watchers.delete(done);
          signal.removeEventListener("abort", done);
          resolve();
        };
        watchers.add(done);
        signal.addEventListener("abort", done, { once: true });
      });
    },
    get active() {
      return limit - free;
    },
  };
}
