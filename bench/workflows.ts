// bench:workflows — the workflow figures (issue 9, "Figures"): one-step runs started and
// finished per second (memory ≥ 1,000/s, Redis ≥ 500/s, none lost) and the orchestration
// overhead per step, run time minus the downstream's own time (memory p50 ≤ 1 ms, p99 ≤ 5 ms;
// Redis p50 ≤ 3 ms), beside a same-run baseline: the one HTTP call a step makes, made directly.
//
// What runs: an orchestrator app built in this process by createApp (compiled, as `npm start`
// runs it: this file runs from dist/), serving on loopback, on the memory store and then on a
// throwaway redis-server started here (never the shared one on 6379). Its only workflow (the
// `workflows` test hook) is one step, `POST consistency-engine /noop`, one attempt, no undoing;
// CONSISTENCY_ENGINE_URL points at a no-op stand-in: this same file run with `--stand-in` in a
// child process (its own core), a bare node:http server that reads the body, counts the run's
// step and answers `{}`, timing its own handler. The app is given a clock with sub-millisecond
// wall time, so the memory store's saga timestamps are exact; the Redis store keeps whole
// milliseconds, so its figures are ±1 ms.
//
// 1. Throughput: `--runs` POST /workflows/run over loopback HTTP, `--concurrency` in flight, then
//    wait until the saga store counts them all finished; runs/s = runs ÷ (first POST → last
//    finished). Checked: every run SUCCEEDED (its saga COMPLETED) and the stand-in saw each run's
//    step exactly once and nothing else.
// 2. Overhead per step: saga finishedAt − createdAt − the stand-in's handler time, p50 and p99,
//    measured alone (`--sequential` runs one at a time) and under the throughput load.
// 3. Baseline: the same POST to the stand-in made directly with the node's outbound client
//    (same body and headers), one at a time and `--concurrency` in flight; ratios to it.
// 4. Resume (bench/workflows-resume.ts): `--resume-runs` two-step runs on a compiled node on
//    Redis, SIGKILLed with every run's second step in flight; a second node takes them over.
//    Checked: every run SUCCEEDED and each step's side effect was applied once downstream; a
//    failed check makes the bench exit non-zero. `--resume-runs 0` skips it.
//
//   npm run bench:workflows [-- --runs 5000 --sequential 500 --concurrency 64 --resume-runs 1000]
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { Agent, createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { type App, createApp } from "../src/app.js";
import type { Clock } from "../src/clock.js";
import { loadConfig } from "../src/config/index.js";
import { createHttpClient } from "../src/http-client/http-client.js";
import type { WorkflowDefinition } from "../src/workflows/definitions.js";
import { processCpuMicros } from "./process-cpu.js";
import {
  type BenchRedisServer,
  closedLoop,
  count,
  fmt,
  percentile,
  startBenchRedisServer,
  startWorkflowRun,
  stop,
  stopBenchRedisServer,
  track,
  writeResults,
} from "./support.js";
import { runResumeBenchmark } from "./workflows-resume.js";

/** The one-step workflow the bench runs: one call, one attempt, nothing to undo. */
const noopWorkflow: WorkflowDefinition = {
  name: "bench_noop",
  description: "One call to the no-op stand-in.",
  sources: [],
  steps: [
    {
      name: "noop",
      target: "consistency-engine",
      action: { method: "POST", path: "/noop" },
      group: 0,
      perSource: false,
      timeoutMs: 30_000,
      maxAttempts: 1,
    },
  ],
};

/** Wall time with the sub-millisecond part kept, so saga timestamps time a step exactly. */
const preciseClock: Clock = Object.freeze({
  now: () => performance.timeOrigin + performance.now(),
  monotonic: () => performance.now(),
});

// ---------------------------------------------------------------------------------------------
// The stand-in (child process): as cheap as node:http allows.

/** What the stand-in saw since its last reset: calls per run id and its handler time for each. */
interface StandInStats {
  readonly calls: Record<string, number>;
  readonly handlerMs: Record<string, number>;
  readonly other: number;
}

function runStandIn(): void {
  let calls = new Map<string, number>();
  let handlerMs = new Map<string, number>();
  let other = 0;
  const noop = (request: IncomingMessage, response: ServerResponse, started: number) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { run_id?: string };
      const runId = body.run_id ?? "";
      response.writeHead(200, { "content-type": "application/json", "content-length": "2" });
      response.end("{}");
      calls.set(runId, (calls.get(runId) ?? 0) + 1);
      handlerMs.set(runId, performance.now() - started);
    });
  };
  const server = createServer({ keepAliveTimeout: 60_000 }, (request, response) => {
    const started = performance.now();
    if (request.method === "POST" && request.url === "/noop")
      return noop(request, response, started);
    request.resume();
    if (request.url === "/stats") {
      const stats: StandInStats = {
        calls: Object.fromEntries(calls),
        handlerMs: Object.fromEntries(handlerMs),
        other,
      };
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify(stats));
      if (request.method === "POST") {
        calls = new Map();
        handlerMs = new Map();
        other = 0;
      }
      return;
    }
    other++;
    response.writeHead(404).end();
  });
  server.listen(0, "127.0.0.1", () => {
    const address = server.address();
    const port = typeof address === "object" && address !== null ? address.port : 0;
    process.stdout.write(`${JSON.stringify({ ready: port })}\n`);
  });
  process.on("SIGTERM", () => process.exit(0));
}

/** The stand-in as the bench sees it. */
interface StandIn {
  readonly url: string;
  readonly pid: number;
  /** Its figures since the last call, which resets them. */
  take(): Promise<StandInStats>;
  close(): Promise<void>;
}

async function startStandIn(): Promise<StandIn> {
  const script = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [script, "--stand-in"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const pid = track(child);
  const port = await new Promise<number>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the stand-in exited (${code})`)));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once("line", (line) =>
      resolve((JSON.parse(line) as { ready: number }).ready),
    );
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    pid,
    async take() {
      const response = await fetch(`${url}/stats`, { method: "POST" });
      return (await response.json()) as StandInStats;
    },
    close: () => stop(child),
  };
}

// ---------------------------------------------------------------------------------------------
// The orchestrator and the measured phases.

interface BenchNode {
  readonly app: App;
  readonly url: string;
  close(): Promise<void>;
}

async function startNode(standInUrl: string, redisUrl: string | undefined): Promise<BenchNode> {
  const dir = mkdtempSync(join(tmpdir(), "bench-workflows-"));
  const { config, effective } = loadConfig({
    env: {
      HOST: "127.0.0.1",
      PORT: "0",
      LOG_LEVEL: "warn",
      CONSISTENCY_ENGINE_URL: standInUrl,
      ...(redisUrl
        ? { REDIS_URL: redisUrl, REDIS_KEY_PREFIX: `bench-wf-${randomBytes(4).toString("hex")}:` }
        : {}),
    },
    cwd: dir,
    secretsDir: join(dir, "secrets"),
  });
  const app = await createApp(config, effective, {
    logDestination: { write: () => true },
    clock: preciseClock,
    workflows: [noopWorkflow],
  });
  const { port } = await app.listen();
  return {
    app,
    url: `http://127.0.0.1:${port}`,
    async close() {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// The bench's own client is a bare node:http keep-alive agent, cheaper than fetch: it shares the
// process with the orchestrator, and what it spends is not the orchestrator's.
const agent = new Agent({ keepAlive: true, maxSockets: 256 });
const runBody = JSON.stringify({ workflow: noopWorkflow.name });

/** POST /workflows/run; resolves with the run id. */
function startRun(node: BenchNode): Promise<string> {
  return startWorkflowRun(node.url, agent, runBody);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until the saga store counts `total` finished sagas (any end status). */
async function untilFinished(node: BenchNode, total: number, timeoutMs = 300_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const { byStatus } = await node.app.sagas.counts();
    const finished = byStatus.COMPLETED + byStatus.FAILED + byStatus.COMPENSATED + byStatus.ABORTED;
    if (finished >= total) return;
    if (performance.now() > deadline) throw new Error(`${finished}/${total} runs finished`);
    await sleep(2);
  }
}

/** Each run's overhead (ms) and whether every run succeeded with its step seen exactly once. */
interface Checked {
  readonly overheadMs: number[];
  readonly succeeded: number;
  readonly stepsOnce: boolean;
}

async function check(node: BenchNode, runIds: readonly string[], seen: StandInStats) {
  const overheadMs: number[] = [];
  let succeeded = 0;
  for (const runId of runIds) {
    const saga = await node.app.sagas.get(runId);
    if (saga?.status !== "COMPLETED" || saga.finishedAt === undefined) continue;
    succeeded++;
    overheadMs.push(saga.finishedAt - saga.createdAt - (seen.handlerMs[runId] ?? 0));
  }
  const stepsOnce =
    seen.other === 0 &&
    Object.keys(seen.calls).length === runIds.length &&
    runIds.every((runId) => seen.calls[runId] === 1);
  overheadMs.sort((a, b) => a - b);
  return { overheadMs, succeeded, stepsOnce } satisfies Checked;
}

/** One store's figures. */
interface StoreRow {
  readonly store: "memory" | "redis";
  readonly runs: number;
  readonly runsPerSecond: number;
  readonly succeeded: number;
  readonly stepsOnce: boolean;
  readonly aloneP50Ms: number;
  readonly aloneP99Ms: number;
  readonly loadedP50Ms: number;
  readonly loadedP99Ms: number;
  readonly standInP50Ms: number;
  /** CPU per run: this process (orchestrator and client), the stand-in, redis-server; µs. */
  readonly benchCpuMicros: number;
  readonly standInCpuMicros: number;
  readonly redisCpuMicros: number | null;
  readonly load: number;
}

async function measureStore(
  store: "memory" | "redis",
  standIn: StandIn,
  redis: BenchRedisServer | undefined,
  runs: number,
  sequential: number,
  concurrency: number,
): Promise<StoreRow> {
  const node = await startNode(standIn.url, redis?.url);
  try {
    // Warm-up: connections, JIT; not counted.
    for (let i = 0; i < 200; i++) await startRun(node);
    await untilFinished(node, 200);
    await standIn.take();

    // Overhead alone: one run at a time.
    const alone: string[] = [];
    for (let i = 0; i < sequential; i++) {
      const runId = await startRun(node);
      alone.push(runId);
      await untilFinished(node, 200 + i + 1);
    }
    const aloneChecked = await check(node, alone, await standIn.take());

    // Throughput: `runs` starts, `concurrency` in flight, until every one has finished.
    const before = 200 + sequential;
    const loaded: string[] = [];
    const cpu = process.cpuUsage();
    const standInCpu = processCpuMicros(standIn.pid);
    const redisCpu = redis ? processCpuMicros(redis.pid) : 0;
    const started = performance.now();
    let next = 0;
    const worker = async () => {
      while (next < runs) {
        next++;
        loaded.push(await startRun(node));
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    await untilFinished(node, before + runs);
    const seconds = (performance.now() - started) / 1000;
    const used = process.cpuUsage(cpu);
    const perRun = (micros: number) => micros / runs;
    const seen = await standIn.take();
    const loadedChecked = await check(node, loaded, seen);
    const handler = Object.values(seen.handlerMs).sort((a, b) => a - b);
    return {
      store,
      runs,
      runsPerSecond: runs / seconds,
      succeeded: loadedChecked.succeeded + aloneChecked.succeeded,
      stepsOnce: loadedChecked.stepsOnce && aloneChecked.stepsOnce,
      aloneP50Ms: percentile(aloneChecked.overheadMs, 50),
      aloneP99Ms: percentile(aloneChecked.overheadMs, 99),
      loadedP50Ms: percentile(loadedChecked.overheadMs, 50),
      loadedP99Ms: percentile(loadedChecked.overheadMs, 99),
      standInP50Ms: percentile(handler, 50),
      benchCpuMicros: perRun(used.user + used.system),
      standInCpuMicros: perRun(processCpuMicros(standIn.pid) - standInCpu),
      redisCpuMicros: redis ? perRun(processCpuMicros(redis.pid) - redisCpu) : null,
      load: loadavg()[0] ?? 0,
    };
  } finally {
    await node.close();
  }
}

/** The baseline: the step's HTTP call made directly with the node's outbound client. */
interface Baseline {
  readonly aloneP50Ms: number;
  readonly aloneP99Ms: number;
  readonly callsPerSecond: number;
  readonly loadedP50Ms: number;
  /** CPU of this process (the client) per call, in µs, over the calls in flight. */
  readonly cpuMicros: number;
}

async function measureBaseline(
  standIn: StandIn,
  sequential: number,
  concurrency: number,
  seconds: number,
): Promise<Baseline> {
  const http = createHttpClient({ timeoutMs: 30_000 });
  let n = 0;
  const call = () => {
    const runId = `run-baseline-${n++}`;
    return http.request({
      method: "POST",
      url: `${standIn.url}/noop`,
      json: { run_id: runId, step: "noop", scope: {}, correlation_id: runId },
      call: { correlationId: runId },
      idempotencyKey: `${runId}:noop`,
      timeoutMs: 30_000,
    });
  };
  for (let i = 0; i < 200; i++) await call();
  const alone: number[] = [];
  for (let i = 0; i < sequential; i++) {
    const t0 = performance.now();
    await call();
    alone.push(performance.now() - t0);
  }
  alone.sort((a, b) => a - b);
  const cpu = process.cpuUsage();
  const loop = await closedLoop(call, seconds, concurrency);
  const used = process.cpuUsage(cpu);
  const loaded = [...loop.latenciesMs].sort((a, b) => a - b);
  await standIn.take();
  return {
    aloneP50Ms: percentile(alone, 50),
    aloneP99Ms: percentile(alone, 99),
    callsPerSecond: loop.calls / loop.seconds,
    loadedP50Ms: percentile(loaded, 50),
    cpuMicros: (used.user + used.system) / loop.calls,
  };
}

/**
 * Runs every phase on both stores, then the resume phase unless `resumeRuns` is 0; returns the
 * printable lines, the JSON to keep and whether the resume phase's checks passed (true when
 * skipped).
 */
export async function runWorkflowBenchmarks(options: {
  runs: number;
  redisRuns: number;
  sequential: number;
  concurrency: number;
  resumeRuns: number;
}): Promise<{ lines: string[]; json: Record<string, unknown>; passed: boolean }> {
  const standIn = await startStandIn();
  const redis = await startBenchRedisServer();
  const rows: StoreRow[] = [];
  let baseline: Baseline;
  try {
    process.stderr.write("workflows: baseline (direct calls)\n");
    baseline = await measureBaseline(standIn, options.sequential, options.concurrency, 3);
    process.stderr.write("workflows: memory store\n");
    rows.push(
      await measureStore(
        "memory",
        standIn,
        undefined,
        options.runs,
        options.sequential,
        options.concurrency,
      ),
    );
    process.stderr.write("workflows: redis store\n");
    rows.push(
      await measureStore(
        "redis",
        standIn,
        redis,
        options.redisRuns,
        options.sequential,
        options.concurrency,
      ),
    );
  } finally {
    await standIn.close();
    await stopBenchRedisServer(redis);
  }
  const targets = {
    memory: { runsPerSecond: 1_000, p50Ms: 1, p99Ms: 5 },
    redis: { runsPerSecond: 500, p50Ms: 3, p99Ms: Number.POSITIVE_INFINITY },
  };
  const verdict = (row: StoreRow) => {
    const t = targets[row.store];
    const met = (ok: boolean) => (ok ? "met" : "MISSED");
    return [
      `runs/s ${met(row.runsPerSecond >= t.runsPerSecond && row.stepsOnce && row.succeeded === row.runs + options.sequential)}`,
      `p50 ${met(row.aloneP50Ms <= t.p50Ms)}`,
      ...(Number.isFinite(t.p99Ms) ? [`p99 ${met(row.aloneP99Ms <= t.p99Ms)}`] : []),
    ].join(", ");
  };
  const lines = [
    `Workflow runs (one step, loopback no-op stand-in), ${options.concurrency} starts in flight`,
    "",
    "| store | runs | runs/s | all SUCCEEDED, step seen once | overhead alone p50 / p99 ms | overhead under load p50 / p99 ms | stand-in handler p50 ms | CPU µs/run: bench / stand-in / redis | load | targets (overhead alone) |",
    "|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ...rows.map(
      (r) =>
        `| ${r.store} | ${count(r.runs)} | ${count(r.runsPerSecond)} | ${r.stepsOnce && r.succeeded === r.runs + options.sequential ? "yes" : "NO"} | ${fmt(r.aloneP50Ms, 2)} / ${fmt(r.aloneP99Ms, 2)} | ${fmt(r.loadedP50Ms, 1)} / ${fmt(r.loadedP99Ms, 1)} | ${fmt(r.standInP50Ms, 3)} | ${count(r.benchCpuMicros)} / ${count(r.standInCpuMicros)} / ${r.redisCpuMicros === null ? "–" : count(r.redisCpuMicros)} | ${fmt(r.load, 1)} | ${verdict(r)} |`,
    ),
    "",
    "Baseline: the step's POST to the stand-in made directly with the outbound client",
    "",
    `| direct call alone p50 / p99 ms | direct calls/s (${options.concurrency} in flight) | client CPU µs/call | run overhead alone ÷ direct call (p50): memory / redis | runs/s ÷ direct calls/s: memory / redis |`,
    "|---:|---:|---:|---:|---:|",
    `| ${fmt(baseline.aloneP50Ms, 2)} / ${fmt(baseline.aloneP99Ms, 2)} | ${count(baseline.callsPerSecond)} | ${count(baseline.cpuMicros)} | ${rows.map((r) => fmt(r.aloneP50Ms / baseline.aloneP50Ms, 1)).join(" / ")} | ${rows.map((r) => fmt(r.runsPerSecond / baseline.callsPerSecond, 2)).join(" / ")} |`,
  ];
  const json = {
    bench: "workflows",
    date: new Date().toISOString(),
    node: process.version,
    options,
    how: "app built in the bench process (compiled), POST /workflows/run over loopback HTTP, one-step workflow calling a node:http no-op stand-in in a child process; overhead = saga finishedAt − createdAt − stand-in handler time",
    targets,
    rows,
    baseline,
  };
  if (options.resumeRuns <= 0) return { lines, json, passed: true };
  const resume = await runResumeBenchmark({
    runs: options.resumeRuns,
    concurrency: options.concurrency,
  });
  lines.push("", ...resume.lines);
  return { lines, json: { ...json, resume: resume.json }, passed: resume.passed };
}

function isMain(): boolean {
  return process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
}

if (isMain() && process.argv.includes("--stand-in")) {
  runStandIn();
} else if (isMain()) {
  const { values } = parseArgs({
    options: {
      runs: { type: "string", default: "5000" },
      "redis-runs": { type: "string", default: "3000" },
      sequential: { type: "string", default: "500" },
      concurrency: { type: "string", default: "64" },
      "resume-runs": { type: "string", default: "1000" },
    },
  });
  runWorkflowBenchmarks({
    runs: Number(values.runs),
    redisRuns: Number(values["redis-runs"]),
    sequential: Number(values.sequential),
    concurrency: Number(values.concurrency),
    resumeRuns: Number(values["resume-runs"]),
  }).then(
    ({ lines, json, passed }) => {
      process.stdout.write(`${lines.join("\n")}\n`);
      process.stdout.write(`written ${writeResults("workflows", json)}\n`);
      if (!passed) process.stderr.write("workflows: a resume check failed (NO above)\n");
      process.exit(passed ? 0 : 1);
    },
    (error: unknown) => {
      process.stderr.write(
        `${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
      process.exit(1);
    },
  );
}
