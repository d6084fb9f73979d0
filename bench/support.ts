// What every benchmark needs: child processes that never outlive the bench, free ports, a throwaway
// redis-server, compiled orchestrators, their log lines, percentiles, the etcd anchor sentence,
// and the results file.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { type Agent, request as httpRequest } from "node:http";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const children = new Set<ChildProcess>();
// A crash of the bench must not leave a redis-server or an orchestrator behind.
process.once("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** Registers a child to be killed if the bench exits; returns its pid. */
export function track(child: ChildProcess): number {
  children.add(child);
  child.once("exit", () => children.delete(child));
  if (child.pid === undefined) throw new Error("the child process has no pid");
  return child.pid;
}

/** Stops a child with SIGTERM, then SIGKILL if it is still there after `timeoutMs`. */
export async function stop(child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  await exited;
  clearTimeout(timer);
}

/** `count` distinct free loopback ports (bound together, then released). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Server>((resolve, reject) => {
          const server = createServer();
          server.once("error", reject);
          server.listen(0, "127.0.0.1", () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((server) => {
    const address = server.address();
    return typeof address === "object" && address !== null ? address.port : 0;
  });
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

/** One JSON log line of the orchestrator, or undefined for anything else. */
export function parseLogLine(line: string): { msg?: string; port?: number } | undefined {
  try {
    return JSON.parse(line) as { msg?: string; port?: number };
  } catch {
    return undefined;
  }
}

/** The value at percentile `p` (0–100) of sorted values. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

/**
 * The "Measured here on …" sentence of the team's shared/bench/README.md, if it can be read: up
 * to its first full stop, its line breaks made spaces. The shared folder sits beside the checkout
 * (../shared), or beside the folder of worktrees it is in (../../shared).
 */
export function readAnchorSentence(): string | undefined {
  // Compiled into dist/bench/: the checkout is two levels up.
  for (const up of ["../../../", "../../../../"]) {
    const readme = new URL(`${up}shared/bench/README.md`, import.meta.url);
    if (!existsSync(readme)) continue;
    const text = readFileSync(readme, "utf8");
    const sentence = /^Measured here on [\s\S]*?\.(?=\s|$)/m.exec(text)?.[0];
    return sentence?.replace(/\s*\n\s*/g, " ");
  }
  return undefined;
}

/** Writes `results` to bench/results/<name>-<time>.json in the source tree; returns the path. */
export function writeResults(name: string, results: Record<string, unknown>): string {
  const resultsDir = new URL("../../bench/results/", import.meta.url);
  mkdirSync(resultsDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const file = new URL(`${name}-${stamp}.json`, resultsDir);
  writeFileSync(file, JSON.stringify(results, null, 2));
  return file.pathname;
}

/** One sample of a Prometheus text exposition. */
export interface MetricSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/**
 * Every sample GET `baseUrl`/metrics answers (an orchestrator's, or an etcd member's).
 * @throws Error when it does not answer 200.
 */
export async function scrapeMetrics(baseUrl: string): Promise<MetricSample[]> {
  const response = await fetch(`${baseUrl}/metrics`);
  const text = await response.text();
  if (response.status !== 200) throw new Error(`GET /metrics answered ${response.status}: ${text}`);
  const samples: MetricSample[] = [];
  for (const line of text.split("\n")) {
    const sample = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (sample?.[1] === undefined) continue;
    const labels: Record<string, string> = {};
    for (const [, label, value] of (sample[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      if (label !== undefined && value !== undefined) labels[label] = value;
    }
    samples.push({ name: sample[1], labels, value: Number(sample[3]) });
  }
  return samples;
}

export const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "–");
export const count = (n: number) => Math.round(n).toLocaleString("en-US");

/** What {@link closedLoop} saw: the calls made, over how long, and each call's latency. */
export interface LoopResult {
  readonly calls: number;
  readonly seconds: number;
  readonly latenciesMs: number[];
}

/**
 * Keeps `concurrency` calls in flight for `durationSeconds`: each worker starts its next call when
 * the previous one answers, so the rate is what the server sustains at that depth.
 */
export async function closedLoop(
  call: () => Promise<unknown>,
  durationSeconds: number,
  concurrency: number,
): Promise<LoopResult> {
  const latenciesMs: number[] = [];
  const started = performance.now();
  const deadline = started + durationSeconds * 1000;
  let calls = 0;
  const worker = async () => {
    while (performance.now() < deadline) {
      const t0 = performance.now();
      await call();
      latenciesMs.push(performance.now() - t0);
      calls++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { calls, seconds: (performance.now() - started) / 1000, latenciesMs };
}

/** A child process whose CPU time is read from /proc. */
export interface Measured {
  readonly child: ChildProcess;
  readonly pid: number;
}

/** A throwaway redis-server on a free loopback port, with nothing written to disk. */
export interface BenchRedisServer extends Measured {
  readonly url: string;
  readonly port: number;
  /** Its working directory; {@link stopBenchRedisServer} removes it. */
  readonly dir: string;
}

/**
 * Starts `redis-server` on a free loopback port (never the shared one on 6379), retrying with
 * another port when the chosen one was taken meanwhile.
 * @throws Error with the server's output when it does not come up.
 */
export async function startBenchRedisServer(
  extraArgs: () => Promise<readonly string[]> = async () => [],
): Promise<BenchRedisServer> {
  const dir = mkdtempSync(join(tmpdir(), "bench-redis-"));
  for (let attempt = 1; ; attempt++) {
    const [port = 0] = await freePorts(1);
    const child = spawn(
      "redis-server",
      [
        ...["--port", `${port}`, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        ...(await extraArgs()),
      ],
      { cwd: dir, stdio: ["ignore", "pipe", "pipe"] },
    );
    const pid = track(child);
    const output: string[] = [];
    const ready = await new Promise<boolean>((resolve) => {
      child.once("exit", () => resolve(false));
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
        output.push(line);
        if (line.includes("Ready to accept connections")) resolve(true);
      });
      child.stderr?.on("data", (chunk: Buffer) => output.push(chunk.toString()));
    });
    if (ready) return { child, pid, port, url: `redis://127.0.0.1:${port}`, dir };
    await stop(child);
    if (attempt >= 5 || !output.join("\n").includes("Address already in use")) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`redis-server did not come up:\n${output.join("\n")}`);
    }
  }
}

/** Stops a server of {@link startBenchRedisServer} and removes its directory. */
export async function stopBenchRedisServer(redis: BenchRedisServer): Promise<void> {
  await stop(redis.child);
  rmSync(redis.dir, { recursive: true, force: true });
}

/**
 * Starts a Redis Cluster of `masters` masters without replicas on free loopback ports (each
 * node's bus port free too, its nodes.conf in its own directory), joined with
 * `redis-cli --cluster create`; resolves once every node says `cluster_state:ok`. Stop each of
 * its servers with {@link stopBenchRedisServer}.
 * @throws Error when the cluster does not form within 60 s.
 */
export async function startBenchRedisCluster(masters = 3): Promise<BenchRedisServer[]> {
  const servers: BenchRedisServer[] = [];
  try {
    for (let i = 0; i < masters; i++) {
      servers.push(
        await startBenchRedisServer(async () => [
          ...["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
          ...["--cluster-port", `${(await freePorts(1))[0] ?? 0}`],
        ]),
      );
    }
    const nodes = servers.map((server) => `127.0.0.1:${server.port}`);
    const create = spawnSync(
      "redis-cli",
      ["--cluster", "create", ...nodes, "--cluster-replicas", "0", "--cluster-yes"],
      { encoding: "utf8", timeout: 60_000 },
    );
    if (create.status !== 0)
      throw new Error(`redis-cli --cluster create failed:\n${create.stdout}`);
    const deadline = Date.now() + 60_000;
    const ok = (server: BenchRedisServer) =>
      spawnSync("redis-cli", ["-p", `${server.port}`, "cluster", "info"], {
        encoding: "utf8",
        timeout: 10_000,
      }).stdout.includes("cluster_state:ok");
    while (!servers.every(ok)) {
      if (Date.now() > deadline) throw new Error("the Redis Cluster did not form in 60 s");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return servers;
  } catch (error) {
    await Promise.all(servers.map((server) => stopBenchRedisServer(server)));
    throw error;
  }
}

/**
 * The orchestrator as `npm start` runs it: node's flags and the production bundle,
 * dist/bundle/main.js (built by `npm run build`, which every bench script runs first).
 */
export const orchestratorArgv: readonly string[] = [
  "--enable-source-maps",
  new URL("../bundle/main.js", import.meta.url).pathname,
];

/** An orchestrator started by {@link startBenchOrchestrator}. */
export interface BenchOrchestrator extends Measured {
  readonly port: number;
}

/**
 * Starts the orchestrator exactly as `npm start` runs it ({@link orchestratorArgv}), on a free
 * loopback port, on the memory store unless `env` names a Redis, and waits for the "orchestrator
 * listening" log line, then for GET /ready (the store has loaded its state). `nodeArgs` go to node
 * before the script (flags, a preload).
 * @throws Error when it exits first or is not ready within 30 s.
 */
export async function startBenchOrchestrator(
  label: string,
  env: Record<string, string>,
  nodeArgs: readonly string[] = [],
): Promise<BenchOrchestrator> {
  const child = spawn(process.execPath, [...nodeArgs, ...orchestratorArgv], {
    env: {
      ...process.env,
      PORT: "0",
      HOST: "127.0.0.1",
      LOG_LEVEL: "info",
      APP_CONFIG_PATH: new URL("../../config/app.yaml", import.meta.url).pathname,
      REDIS_URL: "",
      REDIS_HOST: "",
      ...env,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const pid = track(child);
  let exitedEarly: ((code: number | null) => void) | undefined;
  const port = await new Promise<number>((resolve, reject) => {
    exitedEarly = (code) => reject(new Error(`the ${label} orchestrator exited (${code})`));
    child.once("exit", exitedEarly);
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const parsed = parseLogLine(line);
      if (parsed?.msg === "orchestrator listening" && parsed.port !== undefined) {
        resolve(parsed.port);
      }
    });
  });
  if (exitedEarly) child.off("exit", exitedEarly);
  await untilReady(port);
  return { child, pid, port };
}

async function untilReady(port: number, timeoutMs = 30_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const response = await fetch(`http://127.0.0.1:${port}/ready`).catch(() => undefined);
    await response?.arrayBuffer();
    if (response?.ok) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`the orchestrator on port ${port} was not ready in ${timeoutMs} ms`);
}

/**
 * POST /workflows/run with `body` (JSON text) on a bare node:http keep-alive agent (cheaper than
 * fetch in the process it shares with an orchestrator); resolves with the run id.
 */
export function startWorkflowRun(baseUrl: string, agent: Agent, body: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(
      `${baseUrl}/workflows/run`,
      {
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          const runId = (JSON.parse(text) as { run_id?: string }).run_id;
          if (response.statusCode === 200 && runId !== undefined) resolve(runId);
          else reject(new Error(`POST /workflows/run answered ${response.statusCode}: ${text}`));
        });
      },
    );
    request.on("error", reject);
    request.end(body);
  });
}
