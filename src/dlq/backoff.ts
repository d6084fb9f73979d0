/** How long to wait before each retry: exponential, capped, with full jitter. */
export interface BackoffPolicy {
  /** The ceiling of the first wait, in milliseconds; it doubles with every attempt made. */
  readonly baseMs: number;
  /** The ceiling never grows past this, in milliseconds. */
  readonly capMs: number;
}

/**
 * The wait before the next retry of an entry that has had `attempts` retries so far (0 before its
 * first): a whole number of milliseconds drawn uniformly from [0, min(capMs, baseMs × 2^attempts)),
 * the "full jitter" of exponential backoff, which spreads the retries of entries that failed
 * together so that they do not come back together.
 * @param random a source of numbers in [0, 1), such as `Math.random`.
 */
export function retryDelay(attempts: number, policy: BackoffPolicy, random: () => number): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** Math.max(0, attempts));
  // Clamped: a source that returns 1 (or more) must not reach the ceiling.
  return Math.floor(Math.min(Math.max(random(), 0), 1 - Number.EPSILON) * ceiling);
}
