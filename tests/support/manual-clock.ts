import type { Clock } from "../../src/clock.js";

/** A clock that moves only when a test says so. */
export interface ManualClock extends Clock {
  advance(ms: number): void;
  set(now: number): void;
}

export function createManualClock(start = Date.UTC(2026, 10, 26, 12, 0, 0)): ManualClock {
  let now = start;
  let monotonic = 0;
  return {
    now: () => now,
    monotonic: () => monotonic,
    advance(ms) {
      now += ms;
      monotonic += ms;
    },
    set(value) {
      monotonic += Math.max(0, value - now);
      now = value;
    },
  };
}
