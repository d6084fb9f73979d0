import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/** The repository root, where `src/main.ts` lives. */
export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

const mainScript = join(repoRoot, "src", "main.ts");
// `node --import tsx` resolves "tsx" from the working directory; the node runs in a directory of
// its own, so the loader is named by its absolute URL instead.
const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;

/** How a process ended: its exit code, or the signal that killed it. */
export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** What {@link startOrchestratorProcess} and {@link runOrchestratorProcess} take. */
export interface OrchestratorProcessOptions {
  /**
   * Environment of the process, merged over `{ HOST: "127.0.0.1", PORT: <a free port> }` and the
   * few variables Node needs (`PATH`, `HOME`, `TMPDIR`). Nothing else is inherited from the test
   * process, so that a variable set on the machine cannot change the node's configuration.
   */
  env?: Record<string, string>;
  /**
   * Working directory. Default: a new empty temporary directory (removed when the process has
   * exited), so that the repository's `config/app.yaml` is not read.
   */
  cwd?: string;
  /** How long to wait for `GET /health` to answer 200 (or for the exit). Default 60000 ms. */
  timeoutMs?: number;
  /** Flags for node itself, before the script (`--max-old-space-size=128`). Default none. */
  nodeArgs?: readonly string[];
  /**
   * The script run instead of `src/main.ts`, by absolute path: one that builds the app as main.ts
   * does with test parts added (e.g. `tests/support/dlq-node.ts`), or the production bundle
   * (`dist/bundle/main.js`), which runs as `npm start` runs it: without the TypeScript loader
   * unless a module of `imports` needs it. Default `src/main.ts`.
   */
  script?: string;
  /**
   * Modules evaluated before the script (`node --import`), by absolute path, e.g.
   * `tests/support/loads-recorder.mjs`. Default none.
   */
  imports?: readonly string[];
}

/** A running `src/main.ts` (or the script of {@link OrchestratorProcessOptions.script}). */
export interface OrchestratorProcess {
  readonly child: ChildProcess;
  readonly port: number;
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** Everything written to standard output so far. */
  stdout(): string;
  /** Everything written to standard error so far. */
  stderr(): string;
  /** Resolves when the process has exited (and its output streams have closed). */
  readonly exited: Promise<ExitStatus>;
  /**
   * Sends `signal` (default SIGTERM) and waits for the exit. If the process is still alive after
   * `timeoutMs` (default 30000 ms) it is killed with SIGKILL, and the status says so.
   * Idempotent once the process has exited.
   */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<ExitStatus>;
}

/** A finished process and its output. */
export interface FinishedProcess extends ExitStatus {
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Picks a port that is free now: binds a server to port 0 on 127.0.0.1, reads the port and
 * closes the server. Another process may take it before it is used; callers retry on EADDRINUSE.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("no port was assigned"))));
    });
  });
}

/**
 * Starts `node --import tsx src/main.ts` (the code `npm start` bundles) on a free loopback port and
 * waits until `GET /health` answers 200. Retries with another port, up to three times, when the
 * chosen port was taken in the meantime.
 *
 * @throws Error when the process exits before it is healthy (with its stderr), or when it is not
 *   healthy within `timeoutMs` (the process is then killed).
 */
export async function startOrchestratorProcess(
  options: OrchestratorProcessOptions = {},
): Promise<OrchestratorProcess> {
  for (let attempt = 1; ; attempt++) {
    const node = await spawnOrchestrator(options, await freePort());
    const outcome = await untilHealthy(node, options.env?.LOG_LEVEL, options.timeoutMs ?? 60_000);
    if (outcome === "healthy") return node;
    if (outcome === "timeout") {
      await node.stop("SIGKILL");
      throw new Error(`the orchestrator was not healthy in time; stderr:\n${node.stderr()}`);
    }
    const status = await node.exited;
    if (attempt < 3 && node.stderr().includes("EADDRINUSE")) continue;
    throw new Error(
      `the orchestrator exited before it was healthy (code ${status.code}, signal ${status.signal}); stderr:\n${node.stderr()}`,
    );
  }
}

/**
 * Runs `src/main.ts` until it exits by itself (e.g. on an invalid configuration) and returns its
 * exit status and output. Killed with SIGKILL if it has not exited within `timeoutMs`
 * (default 60000 ms).
 */
export async function runOrchestratorProcess(
  options: OrchestratorProcessOptions = {},
): Promise<FinishedProcess> {
  const node = await spawnOrchestrator(options, await freePort());
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), options.timeoutMs ?? 60_000);
  });
  const first = await Promise.race([node.exited, timedOut]);
  clearTimeout(timer);
  const status = first === "timeout" ? await node.stop("SIGKILL") : first;
  return { ...status, stdout: node.stdout(), stderr: node.stderr() };
}

async function spawnOrchestrator(
  options: OrchestratorProcessOptions,
  port: number,
): Promise<OrchestratorProcess> {
  const ownDir = options.cwd === undefined;
  const cwd = options.cwd ?? (await mkdtemp(join(tmpdir(), "orchestrator-process-")));
  const script = options.script ?? mainScript;
  const imports = options.imports ?? [];
  const typescript = [script, ...imports].some((file) => file.endsWith(".ts"));
  const args = [
    ...(options.nodeArgs ?? []),
    ...(typescript ? ["--import", tsxLoader] : []),
    ...imports.flatMap((file) => ["--import", pathToFileURL(file).href]),
    script,
  ];
  const child = spawn(process.execPath, args, {
    cwd,
    env: { ...baseEnv(), HOST: "127.0.0.1", PORT: String(port), ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<ExitStatus>((resolve) => {
    // "close" comes after "exit" once stdout and stderr are drained: the output is complete.
    child.once("close", (code, signal) => resolve({ code, signal }));
    child.once("error", () => resolve({ code: null, signal: null }));
  }).then(async (status) => {
    if (ownDir) await rm(cwd, { recursive: true, force: true });
    return status;
  });
  // A caller that sets PORT itself (even to something invalid) decides; the free port is unused.
  const given = options.env?.PORT;
  const listening = given !== undefined && /^\d+$/.test(given) ? Number(given) : port;
  return {
    child,
    port: listening,
    url: `http://127.0.0.1:${listening}`,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    stop: (signal = "SIGTERM", timeoutMs = 30_000) => stopProcess(child, exited, signal, timeoutMs),
  };
}

async function stopProcess(
  child: ChildProcess,
  exited: Promise<ExitStatus>,
  signal: NodeJS.Signals,
  timeoutMs: number,
): Promise<ExitStatus> {
  if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  const first = await Promise.race([exited, timedOut]);
  clearTimeout(timer);
  if (first !== "timeout") return first;
  child.kill("SIGKILL");
  return exited;
}

/**
 * Polls `GET /health` until it answers 200, the process exits, or time runs out. When the log
 * level lets the "orchestrator listening" line through, that line (naming our port) must have
 * been written first, so that another server that took the port in the meantime is not mistaken
 * for this one.
 */
async function untilHealthy(
  node: OrchestratorProcess,
  logLevel: string | undefined,
  timeoutMs: number,
): Promise<"healthy" | "exited" | "timeout"> {
  let exited = false;
  void node.exited.then(() => {
    exited = true;
  });
  const logsListening = !["warn", "error", "fatal", "silent"].includes(
    logLevel?.toLowerCase() ?? "",
  );
  const listening = () =>
    !logsListening ||
    node
      .stdout()
      .split("\n")
      .some(
        (line) =>
          line.includes('"orchestrator listening"') && line.includes(`"port":${node.port},`),
      );
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited) return "exited";
    if (listening()) {
      try {
        const response = await fetch(`${node.url}/health`, { signal: AbortSignal.timeout(5_000) });
        await response.arrayBuffer();
        if (response.status === 200 && !exited) return "healthy";
      } catch {
        // Not answering yet.
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return exited ? "exited" : "timeout";
}

function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of ["PATH", "HOME", "TMPDIR", "SYSTEMROOT"]) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}
