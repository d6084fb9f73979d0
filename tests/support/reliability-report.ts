import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

/**
 * How long and how hard the reliability suites run. `short` is what `npm test` (and so CI) runs;
 * `full` is what `npm run test:reliability` runs. Each suite scales its durations and counts by it.
 */
export type ReliabilityProfile = "short" | "full";

/** The profile of this run: `RELIABILITY_PROFILE=full` for the long form, else short. */
export function reliabilityProfile(): ReliabilityProfile {
  return process.env.RELIABILITY_PROFILE === "full" ? "full" : "short";
}

/** Picks the short or the full figure of a setting, by {@link reliabilityProfile}. */
export function byProfile<T>(short: T, full: T): T {
  return reliabilityProfile() === "full" ? full : short;
}

/** One row of the `npm run test:reliability` table: what one suite (or one case of it) did. */
export interface ReliabilityRecord {
  /** `faults`, `hostile-input` or `soak`. */
  readonly suite: string;
  /** The case, e.g. `redis killed under write load`. */
  readonly name: string;
  /** Faults injected and survived (a kill, a stop, a hanging downstream...). */
  readonly faults?: number;
  /** Generated inputs tried (property-based cases). */
  readonly inputs?: number;
  /** Requests the orchestrator answered during the case. */
  readonly requests?: number;
  /** Errors the case counted against the orchestrator (a test that passes reports 0). */
  readonly errors?: number;
  /** Growth of resident memory (or heap, as `memoryMeasure` says) from start to end, in bytes. */
  readonly memoryGrowthBytes?: number;
  /** What `memoryGrowthBytes` measured: `rss` or `heapUsed`. */
  readonly memoryMeasure?: string;
  /** Growth of open file descriptors from start to end. */
  readonly fdGrowth?: number;
  /** Anything worth a column of its own, short. */
  readonly note?: string;
}

/**
 * Records a row for the table. Rows go to `RELIABILITY_REPORT_DIR` (set by
 * `scripts/test-reliability.mjs`) as JSON lines; when it is unset (a plain `npm test`) nothing is
 * written, so the suites run the same either way.
 */
export function recordReliability(record: ReliabilityRecord): void {
  const dir = process.env.RELIABILITY_REPORT_DIR;
  if (dir === undefined || dir === "") return;
  mkdirSync(dir, { recursive: true });
  appendFileSync(join(dir, `records-${process.pid}.jsonl`), `${JSON.stringify(record)}\n`);
}
