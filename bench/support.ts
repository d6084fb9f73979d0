// What every benchmark needs: child processes that never outlive the bench, free ports, the
// orchestrator's log lines, percentiles, the etcd anchor sentence, and the results file.
import type { ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";

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

/** The "Measured here on …" sentence of ../shared/bench/README.md, if it can be read. */
export function readAnchorSentence(): string | undefined {
  // Compiled into dist/bench/: the shared folder is three levels up.
  const readme = new URL("../../../shared/bench/README.md", import.meta.url);
  try {
    return /^Measured here on [^\n]*$/m.exec(readFileSync(readme, "utf8"))?.[0];
  } catch {
    return undefined;
  }
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
