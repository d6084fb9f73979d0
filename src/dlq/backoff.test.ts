import { describe, expect, it } from "vitest";
import { seededRandom } from "../../tests/support/seeded-random.js";
import { retryDelay } from "./backoff.js";

describe("retryDelay (exponential backoff with full jitter)", () => {
  const policy = { baseMs: 1_000, capMs: 60_000 };

  it("draws each wait from [0, min(cap, base × 2^attempts)), spread over the whole range", () => {
    const random = seededRandom(42);
    for (let attempts = 0; attempts <= 10; attempts++) {
      const ceiling = Math.min(60_000, 1_000 * 2 ** attempts);
      const waits = Array.from({ length: 2_000 }, () => retryDelay(attempts, policy, random));
      const outside = waits.filter((w) => !Number.isInteger(w) || w < 0 || w >= ceiling);
      expect(outside).toEqual([]);
      // Full jitter: the low and the high end of the range are both reached, not a band near the
      // ceiling (equal jitter) nor the ceiling itself (no jitter).
      expect(Math.min(...waits)).toBeLessThan(ceiling * 0.01);
      expect(Math.max(...waits)).toBeGreaterThan(ceiling * 0.99);
      const mean = waits.reduce((sum, w) => sum + w, 0) / waits.length;
      expect(mean).toBeGreaterThan(ceiling * 0.45);
      expect(mean).toBeLessThan(ceiling * 0.55);
    }
  });

  it("is the same sequence for the same seed", () => {
    const a = seededRandom(7);
    const b = seededRandom(7);
    const waits = (random: () => number) =>
      Array.from({ length: 20 }, (_, i) => retryDelay(i % 8, policy, random));
    expect(waits(a)).toEqual(waits(b));
  });

  it("stops growing at the cap, however many attempts were made", () => {
    for (const attempts of [6, 7, 20, 1_000]) {
      expect(retryDelay(attempts, policy, () => 0.999_999)).toBe(59_999);
      expect(retryDelay(attempts, policy, () => 0.5)).toBe(30_000);
    }
    expect(retryDelay(0, policy, () => 0.5)).toBe(500);
    expect(retryDelay(3, policy, () => 0.5)).toBe(4_000);
  });

  it("never reaches the ceiling, even from a source that returns 1", () => {
    expect(retryDelay(2, policy, () => 1)).toBe(3_999);
    expect(retryDelay(2, policy, () => -0.5)).toBe(0);
  });
});
