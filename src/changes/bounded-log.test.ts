import { describe, expect, it } from "vitest";
import { BoundedLog } from "./bounded-log.js";

const bytesOf = (text: string) => text.length;

describe("BoundedLog", () => {
  it("keeps the newest items within the count, oldest first, and returns what it drops", () => {
    const log = new BoundedLog<string>({ maxItems: 3, maxBytes: 1_000 }, bytesOf);
    expect(log.push("a")).toEqual([]);
    log.push("b");
    log.push("c");
    expect(log.push("d")).toEqual(["a"]);
    expect(log.slice(0)).toEqual(["b", "c", "d"]);
    expect(log.first()).toBe("b");
    expect(log.at(2)).toBe("d");
    expect(log.at(3)).toBeUndefined();
    expect(log.length).toBe(3);
    expect(log.bytes).toBe(3);
  });

  it("keeps the newest items within the bytes, and always the newest one", () => {
    const log = new BoundedLog<string>({ maxItems: 100, maxBytes: 10 }, bytesOf);
    log.push("aaaa");
    log.push("bbbb");
    expect(log.push("cccc")).toEqual(["aaaa"]);
    expect(log.bytes).toBe(8);
    // Alone over the bound, the newest stays: the log never forgets what just happened.
    expect(log.push("x".repeat(50))).toEqual(["bbbb", "cccc"]);
    expect(log.slice(0)).toEqual(["x".repeat(50)]);
    expect(log.bytes).toBe(50);
  });

  it("slices by position from the oldest kept, clamped to what it holds", () => {
    const log = new BoundedLog<number>({ maxItems: 5, maxBytes: 1_000 }, () => 1);
    for (let i = 1; i <= 8; i++) log.push(i);
    expect(log.slice(0)).toEqual([4, 5, 6, 7, 8]);
    expect(log.slice(1, 3)).toEqual([5, 6]);
    expect(log.slice(3, 99)).toEqual([7, 8]);
    expect(log.slice(-2, 1)).toEqual([4]);
  });

  it("stays exact over many pushes, through its compactions", () => {
    const log = new BoundedLog<number>({ maxItems: 1_000, maxBytes: 5_000 }, (n) => (n % 7) + 1);
    let expected: number[] = [];
    for (let i = 0; i < 20_000; i++) {
      log.push(i);
      expected.push(i);
      let bytes = expected.reduce((sum, n) => sum + (n % 7) + 1, 0);
      while (expected.length > 1 && (expected.length > 1_000 || bytes > 5_000)) {
        bytes -= ((expected[0] as number) % 7) + 1;
        expected = expected.slice(1);
      }
      if (i % 997 === 0) {
        expect(log.slice(0)).toEqual(expected);
        expect(log.bytes).toBe(bytes);
      }
    }
    expect(log.length).toBe(expected.length);
  });

  it("drops the oldest items on demand, keeping its bytes exact", () => {
    const log = new BoundedLog<string>({ maxItems: 10, maxBytes: 1_000 }, bytesOf);
    for (const item of ["a", "bb", "ccc", "dddd"]) log.push(item);
    expect(log.dropOldest(2)).toEqual(["a", "bb"]);
    expect(log.slice(0)).toEqual(["ccc", "dddd"]);
    expect(log.bytes).toBe(7);
    expect(log.dropOldest(0)).toEqual([]);
    expect(log.dropOldest(5)).toEqual(["ccc", "dddd"]);
    expect(log.length).toBe(0);
    expect(log.bytes).toBe(0);
    log.push("e");
    expect(log.slice(0)).toEqual(["e"]);
  });

  it("forgets everything on clear, and refuses limits that are not positive integers", () => {
    const log = new BoundedLog<string>({ maxItems: 3, maxBytes: 10 }, bytesOf);
    log.push("a");
    log.clear();
    expect(log.length).toBe(0);
    expect(log.bytes).toBe(0);
    expect(log.first()).toBeUndefined();
    expect(() => new BoundedLog({ maxItems: 0, maxBytes: 10 }, bytesOf)).toThrow(RangeError);
    expect(() => new BoundedLog({ maxItems: 1, maxBytes: 1.5 }, bytesOf)).toThrow(RangeError);
  });
});
