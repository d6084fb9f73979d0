import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { byProfile, recordReliability } from "../support/reliability-report.js";

describe("reliability report", () => {
  const saved = { ...process.env };
  afterEach(() => {
    process.env.RELIABILITY_REPORT_DIR = saved.RELIABILITY_REPORT_DIR;
    process.env.RELIABILITY_PROFILE = saved.RELIABILITY_PROFILE;
    if (saved.RELIABILITY_REPORT_DIR === undefined) delete process.env.RELIABILITY_REPORT_DIR;
    if (saved.RELIABILITY_PROFILE === undefined) delete process.env.RELIABILITY_PROFILE;
  });

  it("writes records as JSON lines to RELIABILITY_REPORT_DIR, and nothing without it", () => {
    const dir = mkdtempSync(join(tmpdir(), "reliability-report-"));
    try {
      delete process.env.RELIABILITY_REPORT_DIR;
      recordReliability({ suite: "soak", name: "ignored" });
      expect(readdirSync(dir)).toEqual([]);
      process.env.RELIABILITY_REPORT_DIR = dir;
      recordReliability({ suite: "soak", name: "kept", requests: 3, errors: 0 });
      const lines = readdirSync(dir).flatMap((file) =>
        readFileSync(join(dir, file), "utf8").trim().split("\n"),
      );
      expect(lines.map((line) => JSON.parse(line))).toEqual([
        { suite: "soak", name: "kept", requests: 3, errors: 0 },
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("picks the short figure unless RELIABILITY_PROFILE is full", () => {
    delete process.env.RELIABILITY_PROFILE;
    expect(byProfile(1, 2)).toBe(1);
    process.env.RELIABILITY_PROFILE = "full";
    expect(byProfile(1, 2)).toBe(2);
  });
});
