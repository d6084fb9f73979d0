import { randomUUID } from "node:crypto";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { lineReader } from "../support/line-reader.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import {
  type OrchestratorProcess,
  runOrchestratorProcess,
  startOrchestratorProcess,
} from "../support/process.js";
import { type RedisServer, startRedisServer } from "../support/redis-server.js";
import {
  h2NeverSent,
  type RegisterWriters,
  startH2cWriters,
  startHttp1Writers,
  type WriteOutcome,
} from "../support/register-writers.js";
import { listRegistry, until } from "../support/rest.js";

// Graceful shutdown, in process (app.close()) and as the operator sees it (signals to
// `src/main.ts`).

function statusOf(line: string | undefined): unknown {
  expect(line).toBeDefined();
  return (JSON.parse(line ?? "") as { status?: unknown }).status;
}

/** A promise and the function that resolves it. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve = () => {};
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** GET over a connection of its own (no pooling), with status and body. */
function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { agent: false }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => {
        body += chunk;
      });
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
      response.on("error", reject);
    });
    request.on("error", reject);
  });
}

/** Resolves with the error code of a TCP connection attempt, or "connected". */
function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve("connected");
    });
    socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"));
  });
}

interface ReadyBody {
  readonly ready: boolean;
  readonly checks: readonly { name: string; ok: boolean; detail: string }[];
  readonly code?: string;
}

describe("shutdown in process", () => {
  let node: RunningOrchestrator | undefined;
  let release: (() => void) | undefined;
  afterEach(async () => {
    release?.();
    await node?.close();
    node = undefined;
  });

  /**
   * Starts a node whose readiness waits for a check the test releases, holds a GET /ready in
   * flight, and starts closing the node while it is.
   */
  async function readyInFlightDuringClose() {
    const probed = deferred();
    const held = deferred();
    release = held.resolve;
    node = await startOrchestrator({
      // Long enough that only the call finishing, never the grace period, lets close() resolve.
      env: { SHUTDOWN_TIMEOUT_MS: "600000" },
      deps: {
        readinessChecks: [
          {
            name: "held",
            probe: async () => {
              probed.resolve();
              await held.promise;
              return undefined;
            },
          },
        ],
      },
    });
    const inFlight = get(`${node.url}/ready`);
    await probed.promise;
    let closed = false;
    const closing = node.app.close().then(() => {
      closed = true;
    });
    return { running: node, inFlight, closing, isClosed: () => closed, release: held.resolve };
  }

  it("lets a call in flight finish, refuses new connections meanwhile, then resolves", async () => {
    const { running, inFlight, closing, isClosed, release } = await readyInFlightDuringClose();
    expect(running.app.status.draining).toBe(true);
    expect(await tryConnect(running.port)).toBe("ECONNREFUSED");
    // The held call keeps close() from finishing (the grace period is ten minutes).
    expect(isClosed()).toBe(false);

    release();
    const reply = await inFlight;
    expect([200, 503]).toContain(reply.status);
    const body = JSON.parse(reply.body) as ReadyBody;
    expect(body.ready).toBe(reply.status === 200);
    expect(body.checks).toContainEqual({ name: "held", ok: true, detail: "" });
    expect(body.checks.map((c) => c.name)).toContain("serving");
    await closing;
    expect(isClosed()).toBe(true);
    expect(running.logs.some((line) => line.includes('"msg":"shut down"'))).toBe(true);
  });

  // Known defect (see the report): the "serving" check is probed when the Ready call starts, so a
  // call that started before draining began answers 200 ready:true even though the answer is sent
  // while the node drains. Flip to `it` once Ready re-reads the serving state before answering.
  it("an in-flight Ready answered while draining says 503, serving failing", async () => {
    const { inFlight, closing, release } = await readyInFlightDuringClose();
    release();
    const reply = await inFlight;
    await closing;
    expect(reply.status).toBe(503);
    const body = JSON.parse(reply.body) as ReadyBody;
    expect(body.code).toBe("unavailable");
    expect(body.ready).toBe(false);
    expect(body.checks).toContainEqual({
      name: "serving",
      ok: false,
      detail: "the node is shutting down",
    });
  });
});

describe("shutdown under keep-alive load", () => {
  let redis: RedisServer | undefined;
  let node: RunningOrchestrator | undefined;
  let release: (() => void) | undefined;
  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterEach(async () => {
    release?.();
    await node?.close();
    node = undefined;
  });
  afterAll(async () => {
    await redis?.stop();
  });

  /** A node on the throwaway Redis under a prefix of its own, so its writes outlive it. */
  function redisEnv(): Record<string, string> {
    if (redis === undefined) throw new Error("redis-server did not start");
    return { REDIS_URL: redis.url, REDIS_KEY_PREFIX: `shutdown:${randomUUID()}:` };
  }

  /** The names in the registry kept under `env`'s prefix, read by a fresh node after the close. */
  async function storedNames(env: Record<string, string>): Promise<Set<string>> {
    const reader = await startOrchestrator({ env });
    try {
      return new Set((await listRegistry(reader.url)).services.map((s) => s.name));
    } finally {
      await reader.close();
    }
  }

  /**
   * Starts the writers against a node on Redis, lets them get going, closes the node under their
   * load and waits for them to stop; returns what they saw and what the store kept.
   */
  async function closeUnderLoad(start: (running: RunningOrchestrator) => RegisterWriters) {
    const env = { ...redisEnv(), SHUTDOWN_TIMEOUT_MS: "60000" };
    node = await startOrchestrator({ env });
    const running = node;
    const writers = start(running);
    await until("the writers get going", async () =>
      writers.acknowledged() >= 200 ? true : undefined,
    );
    writers.markDraining();
    const answeredBefore = writers.outcomes.map((own) => own.length);
    await running.app.close();
    await writers.done;
    const stored = await storedNames(env);
    return { writers, answeredBefore, stored };
  }

  /** Every 2xx is in the store, nothing refused is, and nothing failed but as `allowed`. */
  function expectNothingLostOrHalfDone(
    outcomes: readonly WriteOutcome[],
    stored: ReadonlySet<string>,
    allowed: readonly string[],
  ): void {
    for (const outcome of outcomes) {
      if (outcome.error !== undefined) {
        expect(allowed, `${outcome.name} failed`).toContain(outcome.error);
        expect(stored.has(outcome.name), `${outcome.name} failed yet was applied`).toBe(false);
      } else {
        expect([200, 503], `${outcome.name} answered`).toContain(outcome.status);
        const applied = outcome.status === 200;
        expect(stored.has(outcome.name), `${outcome.name} answered ${outcome.status}`).toBe(
          applied,
        );
      }
    }
  }

  it("HTTP/1.1: every request a keep-alive writer sent is answered (the last with Connection: close) or refused a connection, and every 2xx is stored", {
    timeout: 120_000,
  }, async () => {
    const { writers, answeredBefore, stored } = await closeUnderLoad((running) =>
      startHttp1Writers(running.port, 8),
    );
    const outcomes = writers.outcomes.flat();
    expectNothingLostOrHalfDone(outcomes, stored, ["ECONNREFUSED"]);
    writers.outcomes.forEach((own, writer) => {
      // Each writer stopped at a connection refused by the closed port, after a last answer
      // that told it not to reuse its connection.
      expect(own.at(-1)?.error, `writer ${writer}`).toBe("ECONNREFUSED");
      expect(own.at(-2)?.connection, `writer ${writer}`).toBe("close");
      expect(own.length, `writer ${writer} kept writing while the node drained`).toBeGreaterThan(
        answeredBefore[writer] ?? 0,
      );
    });
  });

  it("h2c: every connection gets a GOAWAY before it closes, streams in flight finish, and every 2xx is stored", {
    timeout: 120_000,
  }, async () => {
    const { writers, stored } = await closeUnderLoad((running) => startH2cWriters(running.url, 8));
    // A stream refused with REFUSED_STREAM, or not opened on a closing connection, never reached
    // the service: the client may send it elsewhere.
    expectNothingLostOrHalfDone(writers.outcomes.flat(), stored, ["ECONNREFUSED", ...h2NeverSent]);
    for (const own of writers.outcomes) expect(own.at(-1)?.error).toBe("ECONNREFUSED");
    const draining = writers.sessions.filter((session) => session.openWhenDraining);
    expect(draining).toHaveLength(8);
    for (const { events } of draining) {
      // Node sends a second GOAWAY as the connection ends; the first is what counts.
      expect(events[0]).toBe("goaway");
      expect(events.at(-1)).toBe("close");
    }
  });

  it("h2c: a stream in flight when the node starts draining gets its answer after the GOAWAY", async () => {
    const probed = deferred();
    const held = deferred();
    release = held.resolve;
    node = await startOrchestrator({
      env: { SHUTDOWN_TIMEOUT_MS: "600000" },
      deps: {
        readinessChecks: [
          {
            name: "held",
            probe: async () => {
              probed.resolve();
              await held.promise;
              return undefined;
            },
          },
        ],
      },
    });
    const session = http2.connect(node.url);
    const events: string[] = [];
    session.on("goaway", () => events.push("goaway"));
    session.on("error", (error) => events.push(`error ${String(error)}`));
    const closed = new Promise<void>((resolve) =>
      session.once("close", () => {
        events.push("close");
        resolve();
      }),
    );
    const stream = session.request({ ":path": "/ready" });
    let body = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      body += chunk;
    });
    const answered = new Promise<number>((resolve, reject) => {
      let status = 0;
      stream.on("response", (headers) => {
        status = Number(headers[":status"]);
      });
      stream.on("end", () => {
        events.push("answered");
        resolve(status);
      });
      stream.on("error", reject);
    });
    await probed.promise;
    const closing = node.app.close();
    await until("the GOAWAY arrives", async () => (events.includes("goaway") ? true : undefined));
    held.resolve();
    expect([200, 503]).toContain(await answered);
    expect((JSON.parse(body) as ReadyBody).checks).toContainEqual({
      name: "held",
      ok: true,
      detail: "",
    });
    await closed;
    await closing;
    // Node sends a second GOAWAY as the connection ends; the first is what counts.
    const firstGoaway = events.indexOf("goaway");
    expect(events.filter((event, i) => event !== "goaway" || i === firstGoaway)).toEqual([
      "goaway",
      "answered",
      "close",
    ]);
  });
});

describe("shutdown of the process (src/main.ts)", () => {
  let running: OrchestratorProcess | undefined;
  afterEach(async () => {
    await running?.stop("SIGKILL");
    running = undefined;
  });

  function logMessages(stdout: string): string[] {
    return stdout
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => (JSON.parse(line) as { msg?: string }).msg ?? "");
  }

  it("SIGTERM: the watch stream gets NOT_SERVING and ends, the process logs 'shut down' and exits 0", async () => {
    running = await startOrchestratorProcess();
    const response = await fetch(`${running.url}/health/watch`);
    expect(response.status).toBe(200);
    const lines = lineReader((response.body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]());
    expect(statusOf(await lines.next())).toBe("SERVING_STATUS_SERVING");

    const exit = running.stop("SIGTERM");
    expect(statusOf(await lines.next())).toBe("SERVING_STATUS_NOT_SERVING");
    expect(await lines.next()).toBeUndefined();
    expect(await exit).toEqual({ code: 0, signal: null });
    const messages = logMessages(running.stdout());
    expect(messages).toContain("signal received");
    expect(messages).toContain("shut down");
    expect(running.stdout()).toContain('"signal":"SIGTERM"');
  });

  it("SIGINT: the process shuts down and exits 0", async () => {
    running = await startOrchestratorProcess();
    expect(await running.stop("SIGINT")).toEqual({ code: 0, signal: null });
    expect(logMessages(running.stdout())).toContain("shut down");
    expect(running.stdout()).toContain('"signal":"SIGINT"');
  });

  it("an invalid configuration (PORT=abc) exits 1 with one stderr line naming PORT", async () => {
    const finished = await runOrchestratorProcess({ env: { PORT: "abc" } });
    expect(finished.code).toBe(1);
    const lines = finished.stderr.trimEnd().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("PORT");
    expect(lines[0]).toContain("abc");
    expect(finished.stderr).not.toContain("    at ");
    expect(finished.stdout).toBe("");
  });
});
