// bench:boot — how long an orchestrator takes from spawn to "orchestrator listening" (issue 10,
// catch-up: a new node must converge on 10,000 entries within 1 s of its spawn, and loading its
// modules was most of its start).
//
//   npm run bench:boot [-- --starts 10 --builds bundle,compiled,bundle-no-maps]
//
// Each build is started `--starts` times, the builds alternating start by start so that a change
// in the machine's load falls on all of them alike: the production bundle as `npm start` runs it
// (`node --enable-source-maps dist/bundle/main.js`), the tsc output it replaced
// (`dist/src/main.js`, same flag), and the bundle without source maps (what the flag costs). Each
// start runs in the checkout (it reads config/app.yaml, as `npm start` does) on a free loopback
// port with the memory store; the time is taken when the log line reaches the bench, the CPU time
// of the process (user + system, /proc) at that moment, then the process is stopped with SIGTERM.
// The load average is read before and after. Prints a table, writes bench/results/boot-<date>.json.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { processCpuMicros } from "./process-cpu.js";
import { fmt, median, parseLogLine, stop, track, writeResults } from "./support.js";

const { values: args } = parseArgs({
  options: {
    starts: { type: "string", default: "10" },
    builds: { type: "string", default: "bundle,compiled,bundle-no-maps" },
  },
});
const starts = Number(args.starts);

const checkout = new URL("../../", import.meta.url).pathname;
const builds: Record<string, readonly string[]> = {
  bundle: ["--enable-source-maps", "dist/bundle/main.js"],
  compiled: ["--enable-source-maps", "dist/src/main.js"],
  "bundle-no-maps": ["dist/bundle/main.js"],
};
const chosen = (args.builds ?? "").split(",").filter((name) => name !== "");
for (const name of chosen) {
  if (!(name in builds)) throw new Error(`unknown build ${name}: one of ${Object.keys(builds)}`);
}

interface Start {
  readonly listeningMs: number;
  readonly cpuMs: number;
}

/** Spawns one build and resolves when its "orchestrator listening" line arrives. */
async function startOnce(argv: readonly string[]): Promise<Start> {
  const spawnedAt = performance.now();
  const child = spawn(process.execPath, argv, {
    cwd: checkout,
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", REDIS_URL: "" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const pid = track(child);
  try {
    return await new Promise<Start>((resolve, reject) => {
      child.once("exit", (code) => reject(new Error(`${argv.join(" ")} exited (${code})`)));
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
        if (parseLogLine(line)?.msg !== "orchestrator listening") return;
        const listeningMs = performance.now() - spawnedAt;
        resolve({ listeningMs, cpuMs: processCpuMicros(pid) / 1000 });
      });
    });
  } finally {
    await stop(child);
  }
}

const loadBefore = readFileSync("/proc/loadavg", "utf8").trim();
const results = new Map<string, Start[]>(chosen.map((name) => [name, []]));
for (let round = 0; round < starts; round++) {
  for (const name of chosen) {
    results.get(name)?.push(await startOnce(builds[name] ?? []));
  }
}
const loadAfter = readFileSync("/proc/loadavg", "utf8").trim();

const rows = chosen.map((name) => {
  const runs = results.get(name) ?? [];
  const ms = runs.map((r) => r.listeningMs);
  const cpu = runs.map((r) => r.cpuMs);
  return {
    build: name,
    command: `node ${builds[name]?.join(" ")}`,
    starts: runs.length,
    medianMs: median(ms),
    worstMs: Math.max(...ms),
    bestMs: Math.min(...ms),
    medianCpuMs: median(cpu),
    worstCpuMs: Math.max(...cpu),
    listeningMs: ms,
    cpuMs: cpu,
  };
});

process.stdout.write(`load average before: ${loadBefore}\nload average after:  ${loadAfter}\n\n`);
process.stdout.write(
  "| build | starts | spawn → listening ms, median | worst | best | CPU ms at listening, median | worst |\n|---|---:|---:|---:|---:|---:|---:|\n",
);
for (const row of rows) {
  process.stdout.write(
    `| ${row.build} | ${row.starts} | ${fmt(row.medianMs, 0)} | ${fmt(row.worstMs, 0)} | ${fmt(row.bestMs, 0)} | ${fmt(row.medianCpuMs, 0)} | ${fmt(row.worstCpuMs, 0)} |\n`,
  );
}
const file = writeResults("boot", {
  date: new Date().toISOString(),
  node: process.version,
  loadBefore,
  loadAfter,
  rows,
});
process.stdout.write(`\nwrote ${file}\n`);
