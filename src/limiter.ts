/** Runs tasks with at most a fixed number running at once, across all of its callers. */
export interface Limiter {
  /** Runs `task` once fewer than `limit` tasks run, first come first served; settles as it does. */
  run<T>(task: () => Promise<T>): Promise<T>;
  /** Tasks running now. */
  readonly active: number;
}

/**
 * A limiter shared by every caller: unlike {@link forEachLimited}, whose bound holds within one
 * call, this one holds across concurrent calls (two polls at once still fetch `limit` documents
 * at most, so what they hold in memory is bounded whatever clients ask).
 * @throws RangeError when `limit` is not a positive integer.
 */
export function createLimiter(limit: number): Limiter {
  if (!Number.isInteger(limit) || limit < 1) {
    throw new RangeError(`limit must be a positive integer, not ${limit}`);
  }
  let active = 0;
  const waiting: (() => void)[] = [];
  return {
    async run(task) {
      if (active >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
      else active++;
      try {
        return await task();
      } finally {
        // The slot passes straight to the next caller, if any, so `active` never overshoots.
        const next = waiting.shift();
        if (next) next();
        else active--;
      }
    },
    get active() {
      return active;
    },
  };
}
