import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Redis } from "ioredis";
import { pino } from "pino";
import { createRedisClient } from "../../src/redis/redis-client.js";
import { untilReady } from "../../src/redis/redis-connection.js";
import { freePort } from "./process.js";

/** What {@link startRedisServer} takes. */
export interface StartRedisServerOptions {
  /**
   * Keep data across `kill()` and `restart()`: append-only file, fsync'd on every write, in the
   * server's own temporary directory. Default false: nothing is written to disk.
   */
  persistent?: boolean;
  /** How long to wait for the server to answer PING, per start. Default 30000 ms. */
  readyTimeoutMs?: number;
  /**
   * More arguments for `redis-server`, asked again at each attempt (a retry after a port clash
   * may need other ports in them, e.g. a cluster bus port).
   */
  extraArgs?: () => Promise<readonly string[]>;
}

/** A throwaway `redis-server` on 127.0.0.1. */
export interface RedisServer {
  readonly port: number;
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  /** Kills the server with SIGKILL (no chance to save or say goodbye) and waits for the exit. */
  kill(): Promise<void>;
  /**
   * Freezes the server (SIGSTOP): connections stay open, commands sent meanwhile wait in its
   * sockets and run when it is resumed, as with a Redis that hangs rather than dies.
   */
  pause(): void;
  /** Resumes a paused server (SIGCONT). */
  resume(): void;
  /**
   * Starts the server again on the same port and directory (killing it first if it runs) and
   * waits until it answers PING; a persistent server has reloaded its data by then.
   * @throws Error when it does not come up (e.g. the port was taken meanwhile).
   */
  restart(): Promise<void>;
  /** Kills the server and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

// Servers of this process, killed if it exits without stopping them (a crashed test run), so that
// no redis-server outlives the suite on a shared machine.
const running = new Set<ChildProcess>();
let exitHookInstalled = false;
const exitedOf = new WeakMap<ChildProcess, Promise<void>>();

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const child of running) child.kill("SIGKILL");
  });
}

/**
 * Starts `redis-server` (from PATH) on a free loopback port and waits until it answers PING.
 * Retries with another port, up to five times, when the chosen port was taken before the server
 * could bind it. Never touches the shared Redis on 6379.
 *
 * @throws Error when no server comes up (with the server's output).
 */
export async function startRedisServer(
  options: StartRedisServerOptions = {},
): Promise<RedisServer> {
  installExitHook();
  const dir = await mkdtemp(join(tmpdir(), "orchestrator-redis-"));
  const readyTimeoutMs = options.readyTimeoutMs ?? 30_000;
  try {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const args = [
        ...serverArgs(port, dir, options.persistent ?? false),
        ...((await options.extraArgs?.()) ?? []),
      ];
      let child = spawnServer(args);
      const outcome = await untilServing(child, port, readyTimeoutMs);
      if (outcome !== "serving") {
        await killProcess(child.process);
        if (attempt < 5 && child.output().includes("Address already in use")) continue;
        throw new Error(`redis-server did not come up (${outcome}):\n${child.output()}`);
      }
      let stopped = false;
      const server: RedisServer = {
        port,
        url: `redis://127.0.0.1:${port}`,
        kill: () => killProcess(child.process),
        pause: () => signal(child.process, "SIGSTOP"),
        resume: () => signal(child.process, "SIGCONT"),
        async restart() {
          await killProcess(child.process);
          child = spawnServer(args);
          const again = await untilServing(child, port, readyTimeoutMs);
          if (again !== "serving") {
            await killProcess(child.process);
            throw new Error(`redis-server did not come back (${again}):\n${child.output()}`);
          }
        },
        async stop() {
          if (stopped) return;
          stopped = true;
          await killProcess(child.process);
          await rm(dir, { recursive: true, force: true });
        },
      };
      return server;
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * An ioredis client configured as the app configures its own (`createRedisClient`): no offline
 * queue, one retry per request, reconnection with capped backoff, so that commands fail fast while
 * the server is down. It connects at once; see {@link untilRedisReady}. Close it with
 * `closeRedisClient`. Logs nowhere unless `logger` is given.
 */
export function createTestRedisClient(url: string, logger = pino({ level: "silent" })): Redis {
  return createRedisClient({ url, port: Number(new URL(url).port) }, logger);
}

/**
 * Resolves once `client` is ready for commands.
 * @throws Error when it is not within `timeoutMs` (default 30000 ms) or its connection ended.
 */
export function untilRedisReady(client: Redis, timeoutMs = 30_000): Promise<void> {
  return untilReady(client, timeoutMs);
}

function serverArgs(port: number, dir: string, persistent: boolean): string[] {
  const durability = persistent
    ? ["--appendonly", "yes", "--appendfsync", "always"]
    : ["--appendonly", "no"];
  return [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    ...durability,
    "--dir",
    dir,
    "--daemonize",
    "no",
    "--loglevel",
    "warning",
  ];
}

interface SpawnedServer {
  readonly process: ChildProcess;
  readonly exited: Promise<void>;
  /** The last output of the server (its log goes to stdout), for error messages. */
  output(): string;
}

function spawnServer(args: string[]): SpawnedServer {
  const child = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  let output = "";
  const keep = (chunk: string) => {
    output = (output + chunk).slice(-8_000);
  };
  child.stdout?.setEncoding("utf8").on("data", keep);
  child.stderr?.setEncoding("utf8").on("data", keep);
  const exited = new Promise<void>((resolve) => {
    child.once("close", () => resolve());
    child.once("error", (error) => {
      keep(String(error));
      resolve();
    });
  }).then(() => {
    running.delete(child);
  });
  exitedOf.set(child, exited);
  return { process: child, exited, output: () => output };
}

function signal(child: ChildProcess, name: "SIGSTOP" | "SIGCONT"): void {
  if (child.exitCode !== null || child.signalCode !== null || !child.kill(name)) {
    throw new Error(`redis-server is not running: cannot send ${name}`);
  }
}

async function killProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  await exitedOf.get(child);
}

/**
 * Polls the port until this very server answers PING (its INFO names the child's pid, so that
 * another process that took the port is not mistaken for it) and has loaded its data.
 */
async function untilServing(
  server: SpawnedServer,
  port: number,
  timeoutMs: number,
): Promise<"serving" | "exited" | "timeout"> {
  let exited = false;
  void server.exited.then(() => {
    exited = true;
  });
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited) return "exited";
    const answer = await ask(port, "INFO server\r\nPING\r\n", "+PONG\r\n", 2_000);
    const pid = /process_id:(\d+)/.exec(answer)?.[1];
    if (answer.includes("+PONG\r\n") && pid === String(server.process.pid) && !exited) {
      return "serving";
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return exited ? "exited" : "timeout";
}

/**
 * Sends raw RESP `request` and collects the answer until it contains `until`, an error line
 * (e.g. LOADING), the connection ends, or `timeoutMs` passes; "" when nobody listens.
 */
function ask(port: number, request: string, until: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    let answer = "";
    const socket = connect({ host: "127.0.0.1", port });
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(request));
    socket.on("data", (chunk: string) => {
      answer += chunk;
      if (answer.includes(until) || /(^|\r\n)-/.test(answer)) finish();
    });
    socket.on("error", finish);
    socket.on("close", finish);
  });
}

/**
 * A connection subscribed to `channel` that pushes every message, parsed as JSON, into
 * `heard` (the channel is server-wide: every message since the subscription). Close it with
 * `closeRedisClient`.
 */
export async function subscribeToChannel(
  url: string,
  channel: string,
  heard: Record<string, unknown>[],
): Promise<Redis> {
  const subscriber = createTestRedisClient(url);
  await untilRedisReady(subscriber);
  subscriber.on("message", (from: string, message: string) => {
    if (from === channel) heard.push(JSON.parse(message) as Record<string, unknown>);
  });
  await subscriber.subscribe(channel);
  return subscriber;
}
