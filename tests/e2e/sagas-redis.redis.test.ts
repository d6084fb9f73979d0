import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import { type SagaStatus, sagaStatuses } from "../../src/sagas/model.js";
import { createRedisSagaStore } from "../../src/sagas/redis-saga-store.js";
import type { SagaStore } from "../../src/sagas/saga-store.js";
import { startOrchestrator } from "../support/orchestrator.js";
import { repoRoot, startOrchestratorProcess } from "../support/process.js";
import {
  createTestRedisClient,
  type RedisServer,
  startRedisServer,
  untilRedisReady,
} from "../support/redis-server.js";
import { expectStatus, rest, until } from "../support/rest.js";

// Sagas shared through one throwaway redis-server by separate processes: two processes racing
// to move the same steps (exactly one wins each), and a writer killed mid-run with Redis and the
// orchestrator killed too (SIGKILL), after which a new orchestrator serves every acknowledged
// state and counts that agree with the stored sagas. The racing and writing processes are
// tests/support/saga-process.ts, using the Redis saga store directly as a workflow engine would;
// the orchestrators are real `src/main.ts` processes.

const script = join(repoRoot, "tests", "support", "saga-process.ts");
const tsxLoader = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface SagaProcess {
  readonly child: ChildProcess;
  /** Every line it printed so far, parsed. */
  readonly lines: unknown[];
  readonly exited: Promise<number | null>;
  stderr(): string;
}

function startSagaProcess(env: Record<string, string>): SagaProcess {
  const child = spawn(process.execPath, ["--import", tsxLoader, script], {
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  const lines: unknown[] = [];
  let pending = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    pending += chunk;
    const complete = pending.split("\n");
    pending = complete.pop() ?? "";
    for (const line of complete) if (line !== "") lines.push(JSON.parse(line));
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.once("close", resolve));
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    return exited;
  });
  return { child, lines, exited, stderr: () => stderr };
}

async function startServer(persistent: boolean): Promise<RedisServer> {
  const server = await startRedisServer({ persistent });
  cleanups.push(() => server.stop());
  return server;
}

async function openStore(url: string, prefix: string): Promise<SagaStore> {
  const redis: Redis = createTestRedisClient(url);
  const store = createRedisSagaStore({ redis }, { keyPrefix: prefix });
  cleanups.push(async () => {
    await store.close();
    await closeRedisClient(redis);
  });
  await store.open();
  return store;
}

describe("sagas on Redis, across processes", () => {
  it("lets exactly one of two processes move each step, racing for 100 steps in turn", {
    timeout: 120_000,
  }, async () => {
    const server = await startServer(false);
    const prefix = `sagas-race:${randomUUID()}:`;
    const store = await openStore(server.url, prefix);
    const steps = Array.from({ length: 100 }, (_, i) => ({ name: `source-${i}` }));
    await store.create({ sagaId: "fan-out", name: "ingestion", steps });
    await store.transition("fan-out", { expectedVersion: 1, to: "RUNNING" });
    for (let i = 0; i < steps.length; i++) {
      await store.transitionStep("fan-out", i, { expectedVersion: 1, to: "RUNNING" });
    }
    const before = await store.get("fan-out");

    // Taking each step over (RUNNING → RUNNING, where only the step's version stands between
    // the two), then completing it.
    for (const to of ["RUNNING", "COMPLETED"]) {
      const [a, b] = await race({
        REDIS_URL: server.url,
        SAGA_PREFIX: prefix,
        SAGA_MODE: "race",
        SAGA_ID: "fan-out",
        SAGA_TO: to,
      });
      for (let i = 0; i < steps.length; i++) {
        expect([a?.[i], b?.[i]].sort(), `${to}: step ${i}`).toEqual(["conflict", "won"]);
      }
    }
    const after = await store.get("fan-out");
    expect(after?.steps.map((s) => [s.status, s.attempts, s.version])).toEqual(
      steps.map(() => ["COMPLETED", 2, 4]),
    );
    expect(after?.version).toBe((before?.version ?? 0) + 200);
  });

  it("keeps every acknowledged saga state, and counts that agree, through SIGKILLs of everything", {
    timeout: 180_000,
  }, async () => {
    const server = await startServer(true);
    const prefix = `sagas-durable:${randomUUID()}:`;
    const nodeEnv = { REDIS_URL: server.url, REDIS_KEY_PREFIX: prefix, LOG_LEVEL: "warn" };
    const first = await startOrchestratorProcess({ env: nodeEnv });
    cleanups.push(() => first.stop("SIGKILL"));

    const writer = startSagaProcess({
      REDIS_URL: server.url,
      SAGA_PREFIX: prefix,
      SAGA_MODE: "write",
    });
    await until(
      "the writer has acknowledged 150 writes",
      async () => (writer.lines.length >= 150 ? true : undefined),
      { describe: writer.stderr },
    );
    // The node serves what the writer wrote meanwhile.
    const seen = writer.lines[0] as { sagaId: string };
    await expectStatus(rest(first.url, "GET", `/infrastructure/saga/${seen.sagaId}`), 200);

    // Everything dies at once, with writes in flight.
    writer.child.kill("SIGKILL");
    await Promise.all([writer.exited, first.stop("SIGKILL"), server.kill()]);
    const acknowledged = new Map<string, { status: string; version: number }>();
    for (const line of writer.lines as { sagaId: string; status: string; version: number }[]) {
      acknowledged.set(line.sagaId, line);
    }
    expect(acknowledged.size).toBeGreaterThan(10);

    await server.restart();
    const second = await startOrchestratorProcess({ env: nodeEnv });
    cleanups.push(() => second.stop());
    for (const [sagaId, last] of acknowledged) {
      const saga = await expectStatus(
        rest(second.url, "GET", `/infrastructure/saga/${sagaId}`),
        200,
        `GET saga ${sagaId}`,
      );
      // A write in flight at the kill may have landed after its last acknowledgement: never
      // behind it, and at the acknowledged version, in the acknowledged state.
      expect(Number(saga.version), sagaId).toBeGreaterThanOrEqual(last.version);
      if (Number(saga.version) === last.version) {
        expect(saga.status, sagaId).toBe(`SAGA_STATUS_${last.status}`);
      }
    }

    // The counts the scripts kept equal the sagas stored, status by status.
    const stats = await expectStatus(rest(second.url, "GET", "/infrastructure/saga/stats"), 200);
    const store = await openStore(server.url, prefix);
    const stored: Record<string, number> = {};
    for (const status of sagaStatuses) stored[status] = await countListed(store, status);
    expect(stats.by_status).toEqual(stored);
    expect(stats.total_sagas).toBe(Object.values(stored).reduce((sum, n) => sum + n, 0));
    expect(stats.total_sagas).toBeGreaterThanOrEqual(acknowledged.size);
  });
});

describe("sagas on a node with Redis", () => {
  it("stores the node's sagas in Redis and publishes their events on orchestrator.events", async () => {
    const server = await startServer(false);
    const prefix = `sagas-events:${randomUUID()}:`;
    const subscriber = createTestRedisClient(server.url);
    cleanups.push(() => closeRedisClient(subscriber));
    const published: { type: string; subject: string; payload: Record<string, unknown> }[] = [];
    subscriber.on("message", (_channel: string, message: string) => {
      published.push(JSON.parse(message));
    });
    await untilRedisReady(subscriber);
    await subscriber.subscribe("orchestrator.events");
    const node = await startOrchestrator({
      env: { REDIS_URL: server.url, REDIS_KEY_PREFIX: prefix },
    });
    cleanups.push(() => node.close());

    const sagas = node.app.sagas;
    await sagas.create({ sagaId: "evented", name: "ingestion", steps: [{ name: "a" }] });
    await sagas.transition("evented", { expectedVersion: 1, to: "RUNNING" });
    await sagas.transitionStep("evented", 0, { expectedVersion: 1, to: "RUNNING" });
    await sagas.transitionStep("evented", 0, { expectedVersion: 2, to: "COMPLETED" });
    await sagas.transition("evented", { expectedVersion: 4, to: "COMPLETED" });

    // In Redis: another process's store reads it.
    const other = await openStore(server.url, prefix);
    expect((await other.get("evented"))?.status).toBe("COMPLETED");
    const body = await expectStatus(rest(node.url, "GET", "/infrastructure/saga/evented"), 200);
    expect(body.status).toBe("SAGA_STATUS_COMPLETED");
    const sagaEvents = await until("both saga events are published", async () => {
      const found = published.filter((e) => e.type.startsWith("saga."));
      return found.length >= 2 ? found : undefined;
    });
    expect(sagaEvents.map((e) => [e.type, e.subject, e.payload.status, e.payload.version])).toEqual(
      [
        ["saga.started", "evented", "RUNNING", 2],
        ["saga.completed", "evented", "COMPLETED", 5],
      ],
    );
  });
});

describe("sagas while Redis is down", () => {
  it("answers 503 for the saga routes, never 500, and serves again when Redis is back", {
    timeout: 90_000,
  }, async () => {
    const server = await startServer(true);
    const prefix = `sagas-down:${randomUUID()}:`;
    const store = await openStore(server.url, prefix);
    await store.create({ sagaId: "kept", name: "n", steps: [{ name: "a" }] });
    await server.kill();
    const node = await startOrchestrator({
      env: { REDIS_URL: server.url, REDIS_KEY_PREFIX: prefix },
    });
    cleanups.push(() => node.close());
    for (const path of ["/infrastructure/saga/kept", "/infrastructure/saga/stats"]) {
      const reply = await rest(node.url, "GET", path);
      expect(reply.status, reply.text).toBe(503);
      expect(reply.body).toMatchObject({
        code: "unavailable",
        message: "the saga store is unavailable",
      });
    }
    await server.restart();
    const kept = await until("the saga is served again", async () => {
      const reply = await rest(node.url, "GET", "/infrastructure/saga/kept");
      return reply.status === 200 ? reply.body : undefined;
    });
    expect(kept.status).toBe("SAGA_STATUS_PENDING");
  });
});

/** Two racing processes, started together: each one's outcome per step. */
async function race(env: Record<string, string>): Promise<string[][]> {
  const racers = [startSagaProcess(env), startSagaProcess(env)];
  for (const racer of racers) {
    await until(
      "the racer has read the saga",
      async () => {
        if (racer.child.exitCode !== null) throw new Error(`the racer exited: ${racer.stderr()}`);
        return racer.lines.includes("ready") ? true : undefined;
      },
      { describe: racer.stderr },
    );
  }
  for (const racer of racers) racer.child.stdin?.write("go\n");
  expect(await Promise.all(racers.map((r) => r.exited))).toEqual([0, 0]);
  return racers.map(
    (r) => (r.lines.find((l) => typeof l === "object") as { outcomes: string[] }).outcomes,
  );
}

async function countListed(store: SagaStore, status: SagaStatus): Promise<number> {
  let count = 0;
  let pageToken = "";
  do {
    const page = await store.list({ status, pageSize: 1_000, pageToken });
    count += page.sagas.length;
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return count;
}
