// bench:workflows, resume phase — the issue's figure (issue 9, "Figures", third bullet): "Resume:
// after SIGKILL with 1,000 runs in flight on Redis, every run finishes, each step's side effect
// counted once by the downstream stub."
//
// What runs, all on loopback: a throwaway redis-server (never the shared one on 6379); a
// downstream stand-in, this file run with `--resume-stand-in` in a child process; and two
// orchestrators run as `npm start` runs them (the bundle, dist/bundle/main.js) from a temp dir whose
// `config/app.yaml` defines the one workflow, both on that Redis under one random key prefix:
//
//   bench_resume: step `first` (POST consistency-engine /first), then, group 1, step `second`
//   (POST consistency-engine /slow, timeout 60 s, 3 attempts).
//
// The stand-in applies a call's side effect on receipt, before it answers (the worst case for
// duplicates), once per Idempotency-Key. /first answers `{}` at once; /slow answers at once for a
// key already applied and otherwise holds the response for good. So node A, given `runs` runs (64
// starts in flight), leaves every run with `first` COMPLETED and `second` RUNNING, its call held
// at the stand-in; A is then SIGKILLed and node B (same store, another NODE_ID) starts. B's resume
// scan takes each run over once its lease has expired and calls `second` again with the same key,
// which the stand-in answers at once, applying nothing.
//
// Timed from the kill: to B's first take-over call reaching the stand-in (the lease wait; it
// includes B's start and the scan cadence), and to the saga counts on B (GET
// /infrastructure/saga/stats, polled every 20 ms) showing every run finished; runs/s after
// take-over = runs ÷ (first take-over call → all finished). Under the table: B's start, the
// take-over calls grouped in waves (B's scans come a lease apart: the runs whose lease had not
// expired when a scan read them wait for the next), and what each node logged at warn or above.
// Checked: every run SUCCEEDED (GET /workflows/history), each `<run_id>:first` called and
// applied exactly once, each `<run_id>:second` applied exactly once, no other key or call, and no
// (run, step) whose side effect was applied twice under two keys.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { Agent, createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  type BenchRedisServer,
  count,
  fmt,
  freePorts,
  orchestratorArgv,
  startBenchRedisServer,
  startWorkflowRun,
  stop,
  stopBenchRedisServer,
  track,
} from "./support.js";

/** Options of {@link runResumeBenchmark}. */
export interface ResumeOptions {
  /** Runs in flight when node A is killed (`--resume-runs`). Default: 1,000. */
  runs: number;
  /** Starts (POST /workflows/run) in flight on node A. Default: 64. */
  concurrency: number;
  /** How long after the kill every run must have finished, in ms. Default: 120,000. */
  deadlineMs: number;
}

/** The defaults {@link runResumeBenchmark} merges its options over. */
export const resumeDefaults: Readonly<ResumeOptions> = Object.freeze({
  runs: 1_000,
  concurrency: 64,
  deadlineMs: 120_000,
});

// The take-over waits one lease: B may take a run only once A's lease on it has expired (A renews
// it every third of the lease, so up to a lease after the kill), and B's resume scans come at its
// start and then a lease apart. 3 s keeps that a few seconds, not the default 15 s lease's 15–30.
const leaseMs = 3_000;
// Every run must be executing (its step 2 in flight) when A dies, none waiting for one of the
// default 256 slots.
const maxRunningAtLeast = 2_000;
const workflowName = "bench_resume";

const workflowYaml = `workflows:
  - name: ${workflowName}
    description: Resume bench - one quick step, then one the stand-in holds until a take-over.
    steps:
      - {name: first, target: consistency-engine, action: POST /first}
      - name: second
        target: consistency-engine
        action: POST /slow
        group: 1
        timeout_ms: 60000
        max_attempts: 3
`;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// The stand-in downstream (child process).

/** What the stand-in saw of one Idempotency-Key. */
interface KeySeen {
  calls: number;
  applied: boolean;
}

/** Everything the stand-in saw since it started. */
interface ResumeStandInStats {
  readonly keys: Record<string, KeySeen>;
  /**
   * Side effects applied per `<run_id>:<step>` of the call's body, whatever its key: above 1 is
   * a duplicate that a new key for the same step would cause.
   */
  readonly appliedPerStep: Record<string, number>;
  readonly firstCalls: number;
  readonly slowCalls: number;
  /** /slow calls held now (their connection still open), and ever held. */
  readonly held: number;
  readonly heldTotal: number;
  /** Calls to another path, or without an Idempotency-Key. */
  readonly other: number;
  /** Wall time (ms) of each /slow call answered at once (its key applied before): take-overs. */
  readonly repeatsAt: number[];
}

function answerJson(response: ServerResponse, value: unknown): void {
  const text = JSON.stringify(value);
  response.writeHead(200, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  response.end(text);
}

function readBody(
  request: IncomingMessage,
  then: (body: { run_id?: string; step?: string }) => void,
) {
  const chunks: Buffer[] = [];
  request.on("data", (chunk: Buffer) => chunks.push(chunk));
  request.on("end", () => {
    try {
      then(
        JSON.parse(Buffer.concat(chunks).toString("utf8")) as { run_id?: string; step?: string },
      );
    } catch {
      then({});
    }
  });
}

function runResumeStandIn(): void {
  const keys = new Map<string, KeySeen>();
  const appliedPerStep = new Map<string, number>();
  const held = new Set<ServerResponse>();
  const tally = { firstCalls: 0, slowCalls: 0, heldTotal: 0, other: 0 };
  const repeatsAt: number[] = [];

  /** Counts the call; applies its side effect unless its key was applied before (then true). */
  const receive = (key: string, body: { run_id?: string; step?: string }): boolean => {
    const seen = keys.get(key) ?? { calls: 0, applied: false };
    seen.calls++;
    keys.set(key, seen);
    if (seen.applied) return true;
    seen.applied = true;
    const step = `${body.run_id ?? "?"}:${body.step ?? "?"}`;
    appliedPerStep.set(step, (appliedPerStep.get(step) ?? 0) + 1);
    return false;
  };

  const slow = (response: ServerResponse, appliedBefore: boolean) => {
    tally.slowCalls++;
    if (appliedBefore) {
      repeatsAt.push(Date.now());
      return answerJson(response, {});
    }
    // Never answered: the node that made the call is killed while it waits.
    held.add(response);
    tally.heldTotal++;
    response.once("close", () => held.delete(response));
  };

  const stats = (): ResumeStandInStats => ({
    keys: Object.fromEntries(keys),
    appliedPerStep: Object.fromEntries(appliedPerStep),
    ...tally,
    held: held.size,
    repeatsAt,
  });

  const server = createServer({ keepAliveTimeout: 60_000 }, (request, response) => {
    const path = request.url;
    if (request.method === "GET" && (path === "/held" || path === "/stats")) {
      request.resume();
      return answerJson(response, path === "/held" ? { held: held.size } : stats());
    }
    const key = request.headers["idempotency-key"];
    if (request.method !== "POST" || (path !== "/first" && path !== "/slow") || !key) {
      tally.other++;
      request.resume();
      response.writeHead(404).end();
      return;
    }
    readBody(request, (body) => {
      const appliedBefore = receive(String(key), body);
      if (path === "/slow") return slow(response, appliedBefore);
      tally.firstCalls++;
      answerJson(response, {});
    });
  });
  server.listen(0, "127.0.0.1", () => {
    const address = server.address();
    const port = typeof address === "object" && address !== null ? address.port : 0;
    process.stdout.write(`${JSON.stringify({ ready: port })}\n`);
  });
  // Held responses would keep a graceful close waiting for ever.
  process.on("SIGTERM", () => process.exit(0));
}

/** The stand-in as the bench sees it. */
interface ResumeStandIn {
  readonly url: string;
  /** /slow calls held now. */
  held(): Promise<number>;
  stats(): Promise<ResumeStandInStats>;
  close(): Promise<void>;
}

async function startResumeStandIn(): Promise<ResumeStandIn> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "--resume-stand-in"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  track(child);
  const port = await new Promise<number>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the resume stand-in exited (${code})`)));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once("line", (line) =>
      resolve((JSON.parse(line) as { ready: number }).ready),
    );
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    held: async () => ((await getJson(`${url}/held`)) as { held: number }).held,
    stats: async () => (await getJson(`${url}/stats`)) as ResumeStandInStats,
    close: () => stop(child),
  };
}

async function getJson(url: string): Promise<unknown> {
  const response = await fetch(url);
  if (!response.ok) {
    throw new Error(`GET ${url} answered ${response.status}: ${await response.text()}`);
  }
  return response.json();
}

// ---------------------------------------------------------------------------------------------
// The orchestrators (child processes).

/**
 * The warnings and errors a node logged (LOG_LEVEL=warn), counted by message (with its error's
 * message, if any). Its start has some: the bench's own GET /ready polls draw "not ready" lines
 * while the store loads.
 */
type NodeLog = Map<string, number>;

/** A log line's message, with its error's message if it has one. */
function messageOf(line: string): string {
  try {
    const parsed = JSON.parse(line) as { msg?: string; err?: { message?: string } };
    const error = parsed.err?.message;
    return `${parsed.msg ?? "?"}${error ? `: ${error.slice(0, 200)}` : ""}`;
  } catch {
    return line.slice(0, 200);
  }
}

function logged(log: NodeLog): string {
  if (log.size === 0) return "none";
  return [...log].map(([message, n]) => `${message} ×${n}`).join(", ");
}

interface ResumeNode {
  readonly child: ChildProcess;
  readonly url: string;
  readonly log: NodeLog;
}

/**
 * Spawns the orchestrator as `npm start` runs it (the bundle) in `dir` (so it reads
 * dir/config/app.yaml) on a free port and
 * adds it to `nodes` (whatever happens next, the caller stops it), then waits for GET /ready.
 */
async function startNode(
  nodeId: string,
  dir: string,
  env: Record<string, string>,
  nodes: ResumeNode[],
): Promise<ResumeNode> {
  const [port = 0] = await freePorts(1);
  const childEnv: NodeJS.ProcessEnv = {
    ...process.env,
    ...env,
    NODE_ID: nodeId,
    HOST: "127.0.0.1",
    PORT: `${port}`,
    LOG_LEVEL: "warn",
  };
  // The node must read the temp dir's config/app.yaml, not a file named by the caller's env.
  delete childEnv.APP_CONFIG_PATH;
  const child = spawn(process.execPath, orchestratorArgv, {
    cwd: dir,
    env: childEnv,
    stdio: ["ignore", "pipe", "inherit"],
  });
  track(child);
  const log: NodeLog = new Map();
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
    const message = messageOf(line);
    log.set(message, (log.get(message) ?? 0) + 1);
  });
  const node = { child, url: `http://127.0.0.1:${port}`, log };
  nodes.push(node);
  await untilReady(node, nodeId);
  return node;
}

async function untilReady(node: ResumeNode, nodeId: string, timeoutMs = 30_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (node.child.exitCode !== null) {
      throw new Error(
        `node ${nodeId} exited (${node.child.exitCode}); it logged: ${logged(node.log)}`,
      );
    }
    const response = await fetch(`${node.url}/ready`).catch(() => undefined);
    await response?.arrayBuffer();
    if (response?.ok) return;
    await sleep(50);
  }
  throw new Error(`node ${nodeId} was not ready within ${timeoutMs} ms`);
}

/** SIGKILL, and resolves once the process is gone. */
function kill(child: ChildProcess): Promise<void> {
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGKILL");
  return exited;
}

// ---------------------------------------------------------------------------------------------
// The measured steps.

const runBody = JSON.stringify({ workflow: workflowName });

/** POST /workflows/run through `agent`; resolves with the run id. */
function startRun(url: string, agent: Agent): Promise<string> {
  return startWorkflowRun(url, agent, runBody);
}

/** Starts `runs` runs, `concurrency` in flight, on a keep-alive node:http agent as bench 1 does. */
async function startRuns(url: string, runs: number, concurrency: number): Promise<string[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const runIds: string[] = [];
  try {
    const worker = async () => {
      while (runIds.length < runs) {
        const slot = runIds.push("") - 1;
        runIds[slot] = await startRun(url, agent);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    agent.destroy();
  }
  return runIds;
}

/** Waits until the stand-in holds `runs` /slow calls: every run in flight at step 2. */
async function untilHeld(standIn: ResumeStandIn, runs: number, timeoutMs = 60_000) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const held = await standIn.held();
    if (held >= runs) return held;
    if (performance.now() > deadline) {
      throw new Error(
        `resume: node A had only ${held} of ${runs} runs at step 2 (a /slow call held by the stand-in) ${timeoutMs / 1000} s after the last start`,
      );
    }
    await sleep(50);
  }
}

/** GET /infrastructure/saga/stats as REST JSON answers it (64-bit integers may be strings). */
interface SagaStats {
  readonly by_status: Record<string, number | string>;
}

async function finishedRuns(url: string): Promise<number> {
  const { by_status: by } = (await getJson(`${url}/infrastructure/saga/stats`)) as SagaStats;
  return ["COMPLETED", "FAILED", "COMPENSATED", "ABORTED"].reduce(
    (sum, status) => sum + Number(by[status] ?? 0),
    0,
  );
}

/** Polls node B's saga counts until `runs` finished or `deadline` (wall ms) passed. */
async function untilFinished(url: string, runs: number, deadline: number) {
  for (;;) {
    const finished = await finishedRuns(url);
    const at = Date.now();
    if (finished >= runs || at > deadline) return { finished, at };
    await sleep(20);
  }
}

/** Each run's status, from every page of GET /workflows/history. */
async function runStatuses(url: string): Promise<Map<string, string>> {
  const statuses = new Map<string, string>();
  let pageToken = "";
  do {
    const page = (await getJson(
      `${url}/workflows/history?workflow=${workflowName}&page_size=1000&page_token=${encodeURIComponent(pageToken)}`,
    )) as { items?: { run_id: string; status: string }[]; next_page_token?: string };
    for (const run of page.items ?? []) statuses.set(run.run_id, run.status);
    pageToken = page.next_page_token ?? "";
  } while (pageToken !== "");
  return statuses;
}

// ---------------------------------------------------------------------------------------------
// The checks and the figures.

/** Take-over calls close together: what one resume scan of node B took, in s after the kill. */
interface TakeOverWave {
  readonly fromS: number;
  readonly toS: number;
  readonly runs: number;
}

/**
 * Groups the take-over calls into waves: B's scans come a lease period apart, so a gap of a
 * sixth of it between two calls starts a new wave.
 */
function wavesOf(repeatsAt: readonly number[], killedAt: number): TakeOverWave[] {
  const waves: { from: number; to: number; runs: number }[] = [];
  for (const at of [...repeatsAt].sort((x, y) => x - y)) {
    const last = waves.at(-1);
    if (last !== undefined && at - last.to < leaseMs / 6) {
      last.to = at;
      last.runs++;
    } else waves.push({ from: at, to: at, runs: 1 });
  }
  return waves.map((w) => ({
    fromS: (w.from - killedAt) / 1000,
    toS: (w.to - killedAt) / 1000,
    runs: w.runs,
  }));
}

/** What the stand-in and the history say, judged run by run. */
interface ResumeChecks {
  /** Runs whose `first` key was called and applied exactly once. */
  readonly firstOnce: number;
  /** Runs whose `second` key was applied (once: a key applies at most once). */
  readonly secondApplied: number;
  readonly stepOneCalls: number;
  readonly stepTwoCalls: number;
  readonly sideEffects: number;
  /** Side effects applied beyond one per (run, step). */
  readonly duplicates: number;
  /** Keys that are no run's `first` or `second`, plus calls elsewhere or without a key. */
  readonly unexpected: number;
  readonly succeeded: number;
  readonly byStatus: Record<string, number>;
}

function judge(
  runIds: readonly string[],
  seen: ResumeStandInStats,
  statuses: Map<string, string>,
): ResumeChecks {
  const expected = new Set(runIds.flatMap((id) => [`${id}:first`, `${id}:second`]));
  const byStatus: Record<string, number> = {};
  for (const status of statuses.values()) byStatus[status] = (byStatus[status] ?? 0) + 1;
  return {
    firstOnce: runIds.filter((id) => {
      const key = seen.keys[`${id}:first`];
      return key?.calls === 1 && key.applied;
    }).length,
    secondApplied: runIds.filter((id) => seen.keys[`${id}:second`]?.applied === true).length,
    stepOneCalls: seen.firstCalls,
    stepTwoCalls: seen.slowCalls,
    sideEffects: Object.values(seen.keys).filter((key) => key.applied).length,
    duplicates: Object.values(seen.appliedPerStep).reduce((sum, n) => sum + Math.max(0, n - 1), 0),
    unexpected: Object.keys(seen.keys).filter((key) => !expected.has(key)).length + seen.other,
    succeeded: runIds.filter((id) => statuses.get(id) === "RUN_STATUS_SUCCEEDED").length,
    byStatus,
  };
}

/** The phase's figures and checks, as kept in the results JSON under `resume`. */
export interface ResumeRow extends ResumeChecks {
  readonly runs: number;
  readonly inFlightAtKill: number;
  /** Kill → every run finished, in s; NaN when they did not within the deadline. */
  readonly killToFinishedS: number;
  readonly finishedByDeadline: number;
  /** Kill → node B answering GET /ready. */
  readonly killToReadyS: number;
  /** Kill → B's first take-over call reaching the stand-in. */
  readonly leaseWaitS: number;
  readonly waves: TakeOverWave[];
  readonly runsPerSecondAfterTakeOver: number;
  /** What node A (until the kill) and node B logged at warn or above: count by message. */
  readonly nodeLogs: { readonly a: Record<string, number>; readonly b: Record<string, number> };
  readonly load: number;
  readonly passed: boolean;
}

function passed(row: Omit<ResumeRow, "passed">): boolean {
  return (
    row.finishedByDeadline >= row.runs &&
    row.inFlightAtKill === row.runs &&
    row.firstOnce === row.runs &&
    row.stepOneCalls === row.runs &&
    row.secondApplied === row.runs &&
    row.sideEffects === 2 * row.runs &&
    row.duplicates === 0 &&
    row.unexpected === 0 &&
    row.succeeded === row.runs
  );
}

/** A count, followed by "NO" when it is not what was expected. */
const shown = (value: number, ok: boolean) => (ok ? count(value) : `${count(value)} NO`);

/** The table's one row, cell by cell; a failed check says "NO". */
function cellsOf(r: ResumeRow, deadlineMs: number): string[] {
  const allFinished = r.finishedByDeadline >= r.runs;
  const statuses = Object.entries(r.byStatus).map(([status, n]) => `${status} ${n}`);
  return [
    count(r.runs),
    shown(r.inFlightAtKill, r.inFlightAtKill === r.runs),
    allFinished
      ? fmt(r.killToFinishedS, 2)
      : `NO (${count(r.finishedByDeadline)} in ${deadlineMs / 1000} s)`,
    fmt(r.leaseWaitS, 2),
    allFinished ? count(r.runsPerSecondAfterTakeOver) : "–",
    shown(r.stepOneCalls, r.stepOneCalls === r.runs && r.firstOnce === r.runs),
    count(r.stepTwoCalls),
    shown(r.sideEffects, r.sideEffects === 2 * r.runs && r.secondApplied === r.runs),
    shown(r.duplicates, r.duplicates === 0),
    shown(r.unexpected, r.unexpected === 0),
    r.succeeded === r.runs ? "yes" : `NO (${statuses.join(", ") || "none listed"})`,
  ];
}

/** What else explains the row: B's start, the take-over waves, what the nodes logged. */
function detailsOf(r: ResumeRow): string {
  const waves = r.waves.map((w) => `${fmt(w.fromS, 2)}–${fmt(w.toS, 2)}: ${count(w.runs)}`);
  return [
    `Node B ready ${fmt(r.killToReadyS, 2)} s after the kill`,
    `take-over calls in waves (s after the kill: runs) ${waves.join(", ") || "none"}`,
    `logged at warn or above: A ${logged(new Map(Object.entries(r.nodeLogs.a)))}; B ${logged(new Map(Object.entries(r.nodeLogs.b)))}`,
    `load ${fmt(r.load, 1)}.`,
  ].join("; ");
}

function tableOf(r: ResumeRow, deadlineMs: number): string[] {
  const lines = [
    `Resume after SIGKILL (Redis, two-step runs, WORKFLOW_LEASE_MS=${leaseMs}): node A killed with every run's step 2 in flight, node B takes over`,
    "",
    "| runs | in flight at kill | kill → all finished (s) | of which lease wait (s) | runs/s after take-over | step-1 calls (expect = runs) | step-2 calls | side effects applied (expect 2 × runs) | duplicates applied (expect 0) | other keys or calls (expect 0) | all SUCCEEDED |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    `| ${cellsOf(r, deadlineMs).join(" | ")} |`,
    "",
    detailsOf(r),
  ];
  if (r.finishedByDeadline < r.runs) {
    lines.push(
      `resume FAILED: only ${count(r.finishedByDeadline)} of ${count(r.runs)} runs finished within ${deadlineMs / 1000} s of the kill.`,
    );
  }
  if (r.firstOnce !== r.runs || r.secondApplied !== r.runs) {
    lines.push(
      `resume FAILED: ${count(r.firstOnce)} runs had step 1 called and applied exactly once, ${count(r.secondApplied)} had step 2 applied (expected ${count(r.runs)} each).`,
    );
  }
  return lines;
}

/** What node A and node B run with, but for NODE_ID and PORT. */
function sharedEnv(
  redis: BenchRedisServer,
  standInUrl: string,
  runs: number,
): Record<string, string> {
  return {
    REDIS_URL: redis.url,
    REDIS_HOST: "",
    REDIS_KEY_PREFIX: `bench-resume-${randomBytes(4).toString("hex")}:`,
    CONSISTENCY_ENGINE_URL: standInUrl,
    WORKFLOW_MAX_RUNNING: `${Math.max(maxRunningAtLeast, runs)}`,
    WORKFLOW_LEASE_MS: `${leaseMs}`,
  };
}

/** Kills A with every run at step 2, starts B, and measures the take-over until the deadline. */
async function killAndTakeOver(
  settings: ResumeOptions,
  dir: string,
  env: Record<string, string>,
  standIn: ResumeStandIn,
  nodes: ResumeNode[],
): Promise<Omit<ResumeRow, "passed">> {
  const a = await startNode("bench-a", dir, env, nodes);
  process.stderr.write(`workflows: resume, ${settings.runs} runs on node A\n`);
  const runIds = await startRuns(a.url, settings.runs, settings.concurrency);
  const inFlightAtKill = await untilHeld(standIn, settings.runs);
  const killedAt = Date.now();
  await kill(a.child);
  process.stderr.write("workflows: resume, node A killed, node B taking over\n");
  const b = await startNode("bench-b", dir, env, nodes);
  const readyAt = Date.now();
  const done = await untilFinished(b.url, settings.runs, killedAt + settings.deadlineMs);
  const seen = await standIn.stats();
  const checks = judge(runIds, seen, await runStatuses(b.url));
  const firstRepeatAt = Math.min(...seen.repeatsAt);
  const allDone = done.finished >= settings.runs;
  return {
    runs: settings.runs,
    inFlightAtKill,
    ...checks,
    killToFinishedS: allDone ? (done.at - killedAt) / 1000 : Number.NaN,
    finishedByDeadline: done.finished,
    killToReadyS: (readyAt - killedAt) / 1000,
    leaseWaitS: (firstRepeatAt - killedAt) / 1000,
    waves: wavesOf(seen.repeatsAt, killedAt),
    runsPerSecondAfterTakeOver: allDone
      ? settings.runs / ((done.at - firstRepeatAt) / 1000)
      : Number.NaN,
    nodeLogs: { a: Object.fromEntries(a.log), b: Object.fromEntries(b.log) },
    load: loadavg()[0] ?? 0,
  };
}

/**
 * The resume phase: `runs` two-step runs on node A (Redis), A SIGKILLed with every run's second
 * step in flight, node B taking them over; see the top of this file. Every child process and
 * temp dir is removed, also on failure. A check that fails (a run not finished within the
 * deadline, a step's side effect applied twice, a run not SUCCEEDED) is `passed: false` and a
 * "NO" in the table, not an exception.
 * @throws Error when something is not there to measure: redis-server, the stand-in or a node
 *   not coming up, a start refused, or node A not reaching step 2 with every run within 60 s.
 */
export async function runResumeBenchmark(
  options: Partial<ResumeOptions> = {},
): Promise<{ lines: string[]; json: ResumeRow & { how: string }; passed: boolean }> {
  const settings: ResumeOptions = { ...resumeDefaults, ...options };
  const dir = mkdtempSync(join(tmpdir(), "bench-resume-"));
  mkdirSync(join(dir, "config"));
  writeFileSync(join(dir, "config", "app.yaml"), workflowYaml);
  const nodes: ResumeNode[] = [];
  let redis: BenchRedisServer | undefined;
  let standIn: ResumeStandIn | undefined;
  try {
    redis = await startBenchRedisServer();
    standIn = await startResumeStandIn();
    const measured = await killAndTakeOver(
      settings,
      dir,
      sharedEnv(redis, standIn.url, settings.runs),
      standIn,
      nodes,
    );
    const row: ResumeRow = { ...measured, passed: passed(measured) };
    return {
      lines: tableOf(row, settings.deadlineMs),
      json: {
        how: "two orchestrators run as npm start runs them (dist/bundle/main.js) on one throwaway redis-server; node A SIGKILLed with every run's step 2 held by a node:http stand-in that applies each Idempotency-Key once; node B takes over; times from the kill (wall clock)",
        ...row,
      },
      passed: row.passed,
    };
  } finally {
    for (const node of nodes) await stop(node.child);
    await standIn?.close();
    if (redis) await stopBenchRedisServer(redis);
    rmSync(dir, { recursive: true, force: true });
  }
}

function isMain(): boolean {
  return process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
}

if (isMain() && process.argv.includes("--resume-stand-in")) runResumeStandIn();
