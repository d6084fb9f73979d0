import { describe, expect, it } from "vitest";
import { createLimiter } from "./limiter.js";

describe("createLimiter", () => {
  it("runs at most `limit` tasks at once across callers, in the order they came", async () => {
    const limiter = createLimiter(2);
    const started: number[] = [];
    const finish: (() => void)[] = [];
    let peak = 0;
    const tasks = Array.from({ length: 5 }, (_, i) =>
      limiter.run(async () => {
        started.push(i);
        peak = Math.max(peak, limiter.active);
        await new Promise<void>((resolve) => finish.push(resolve));
        return i;
      }),
    );
    await new Promise((resolve) => setImmediate(resolve));
    expect(started).toEqual([0, 1]);
    while (started.length < 5 || finish.length > 0) {
      finish.shift()?.();
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await Promise.all(tasks)).toEqual([0, 1, 2, 3, 4]);
    expect(started).toEqual([0, 1, 2, 3, 4]);
    expect(peak).toBe(2);
    expect(limiter.active).toBe(0);
  });

  it("frees the slot of a task that fails, and passes its failure on", async () => {
    const limiter = createLimiter(1);
    await expect(limiter.run(() => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    expect(await limiter.run(async () => "next")).toBe("next");
    expect(limiter.active).toBe(0);
    expect(() => createLimiter(0)).toThrow(RangeError);
  });
});
