/**
 * Claims of scheduled firings, so that a job scheduled on several orchestrators runs once per
 * firing: the node that claims `(job, firing)` first runs it; the others see it taken.
 *
 * Implementations: in memory (one process: every firing is its own) and Redis (`SET NX PX` on the
 * shared Redis); both pass tests/contracts/schedule-lock.contract.ts.
 */
export interface ScheduleLock {
  /**
   * Claims the firing at `firingMs` (Unix ms) of `job` for `holder`, for `ttlMs`.
   * @returns true when this call claimed it; false when it was already claimed (by anyone).
   * @throws DomainError "unavailable" when the store cannot be reached (the firing is skipped).
   */
  claim(job: string, firingMs: number, holder: string, ttlMs: number): Promise<boolean>;
}

/** What a {@link createMemoryScheduleLock} needs. */
export interface MemoryScheduleLockDeps {
  /** Unix ms now. Default `Date.now`. */
  readonly now?: () => number;
}

/**
 * Claims kept in this process: right for a node alone (memory store). Expired claims are
 * dropped as new ones are made, so the map holds at most the claims of the last `ttlMs`.
 */
export function createMemoryScheduleLock(deps: MemoryScheduleLockDeps = {}): ScheduleLock {
  const now = deps.now ?? Date.now;
  // Insertion order is expiry order for one ttl; a sweep from the front stops at the first live.
  const claims = new Map<string, number>();
  return {
    async claim(job, firingMs, _holder, ttlMs) {
      const at = now();
      for (const [key, expiresAt] of claims) {
        if (expiresAt > at) break;
        claims.delete(key);
      }
      const key = `${job}\n${firingMs}`;
      const held = claims.get(key);
      if (held !== undefined && held > at) return false;
      claims.delete(key);
      claims.set(key, at + ttlMs);
      return true;
    },
  };
}
