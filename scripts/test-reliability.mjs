#!/usr/bin/env node
// npm run test:reliability: runs the reliability suites (tests/reliability) in their full form,
// then prints one table of what they did and writes it as JSON to
// bench/results/reliability-<date>.json. Arguments are passed to vitest (a file filter, say).
// `npm test` runs the same suites in their short form (RELIABILITY_PROFILE unset).
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const print = (text) => process.stdout.write(`${text}\n`);
const reportDir = mkdtempSync(join(tmpdir(), "reliability-"));
const started = Date.now();
const vitest = spawnSync("npx", ["vitest", "run", "tests/reliability", ...process.argv.slice(2)], {
  stdio: "inherit",
  env: { ...process.env, RELIABILITY_PROFILE: "full", RELIABILITY_REPORT_DIR: reportDir },
});
const records = readdirSync(reportDir)
  .filter((file) => file.endsWith(".jsonl"))
  .flatMap((file) => readFileSync(join(reportDir, file), "utf8").split("\n"))
  .filter((line) => line !== "")
  .map((line) => JSON.parse(line))
  .sort((a, b) => `${a.suite} ${a.name}`.localeCompare(`${b.suite} ${b.name}`));
rmSync(reportDir, { recursive: true, force: true });

const mib = (bytes) => (bytes === undefined ? "" : `${(bytes / 1048576).toFixed(1)} MiB`);
const text = (value) => (value === undefined ? "" : String(value));
const columns = [
  ["suite", (r) => r.suite],
  ["case", (r) => r.name],
  ["faults", (r) => text(r.faults)],
  ["inputs", (r) => text(r.inputs)],
  ["requests", (r) => text(r.requests)],
  ["errors", (r) => text(r.errors)],
  [
    "memory growth",
    (r) =>
      r.memoryGrowthBytes === undefined
        ? ""
        : `${mib(r.memoryGrowthBytes)} ${r.memoryMeasure ?? ""}`.trim(),
  ],
  ["fd growth", (r) => text(r.fdGrowth)],
  ["note", (r) => text(r.note)],
];
const rows = records.map((record) => columns.map(([, cell]) => cell(record)));
const sum = (key) => records.reduce((total, r) => total + (r[key] ?? 0), 0);
rows.push([
  "total",
  `${records.length} cases`,
  text(sum("faults")),
  text(sum("inputs")),
  text(sum("requests")),
  text(sum("errors")),
  "",
  "",
  "",
]);
const widths = columns.map(([title], i) =>
  Math.max(title.length, ...rows.map((row) => row[i].length)),
);
const line = (cells) =>
  cells
    .map((cell, i) => cell.padEnd(widths[i]))
    .join("  ")
    .trimEnd();
print(
  `\nReliability suites (full profile), ${((Date.now() - started) / 1000).toFixed(0)} s, vitest exit ${vitest.status}`,
);
print(line(columns.map(([title]) => title)));
print(line(widths.map((w) => "-".repeat(w))));
for (const row of rows) print(line(row));

mkdirSync("bench/results", { recursive: true });
const out = join(
  "bench/results",
  `reliability-${new Date().toISOString().replace(/[:.]/g, "-")}.json`,
);
writeFileSync(out, `${JSON.stringify({ vitestExit: vitest.status, records }, null, 2)}\n`);
print(`\nwrote ${out}`);
process.exit(vitest.status ?? 1);
