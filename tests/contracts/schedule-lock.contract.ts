import { describe, expect, it } from "vitest";
import type { ScheduleLock } from "../../src/schedules/schedule-lock.js";
import { until } from "../support/rest.js";

/** How a lock implementation is brought up for the contract suite. */
export interface ScheduleLockHarness {
  /** A new lock over data of its own (for Redis: a fresh key prefix). */
  create(): Promise<ScheduleLock>;
  /** A second lock over the same data, as another orchestrator would open it. */
  twin(lock: ScheduleLock): Promise<ScheduleLock>;
}

/** The contract every ScheduleLock keeps: each (job, firing) is claimed once while its claim lives. */
export function scheduleLockContract(name: string, harness: ScheduleLockHarness): void {
  describe(`ScheduleLock contract: ${name}`, () => {
    it("gives a firing to its first claimant only, whoever asks again", async () => {
      const lock = await harness.create();
      const other = await harness.twin(lock);
      expect(await lock.claim("recalc", 1_000, "node-a", 60_000)).toBe(true);
      expect(await lock.claim("recalc", 1_000, "node-a", 60_000)).toBe(false);
      expect(await other.claim("recalc", 1_000, "node-b", 60_000)).toBe(false);
    });

    it("keeps firings and jobs apart", async () => {
      const lock = await harness.create();
      expect(await lock.claim("recalc", 1_000, "a", 60_000)).toBe(true);
      expect(await lock.claim("recalc", 2_000, "a", 60_000)).toBe(true);
      expect(await lock.claim("notify", 1_000, "a", 60_000)).toBe(true);
    });

    it("lets a firing be claimed again once its claim expired", async () => {
      const lock = await harness.create();
      expect(await lock.claim("recalc", 5_000, "a", 50)).toBe(true);
      // No timing assertion: the claim comes back some time after 50 ms.
      await until("the claim expired", async () =>
        (await lock.claim("recalc", 5_000, "b", 50)) ? true : undefined,
      );
    });

    it("gives each of many concurrent claims of one firing to exactly one claimant", async () => {
      const lock = await harness.create();
      const other = await harness.twin(lock);
      const claims = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          (i % 2 === 0 ? lock : other).claim("race", 9_000, `node-${i}`, 60_000),
        ),
      );
      expect(claims.filter(Boolean)).toHaveLength(1);
    });
  });
}
