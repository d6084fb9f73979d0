import { randomUUID } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { DlqState, InfrastructureService } from "../../gen/orchestrator/v1/infrastructure_pb.js";
import { createGrpcJsClient } from "../../src/clients/grpc-js-client.js";
import { systemClock } from "../../src/clock.js";
import { createDeadLetterQueue, type DeadLetterQueue } from "../../src/dlq/dead-letter-queue.js";
import { createRedisDlqStore } from "../../src/dlq/redis-dlq-store.js";
import { randomIds } from "../../src/ids.js";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import { dlqNodeScript } from "../support/dlq-node.js";
import { type OrchestratorProcess, startOrchestratorProcess } from "../support/process.js";
import { createRecordingEventLog } from "../support/recording-event-log.js";
import {
  createTestRedisClient,
  type RedisServer,
  startRedisServer,
  untilRedisReady,
} from "../support/redis-server.js";
import { type Json, rest, until } from "../support/rest.js";

// Real orchestrator processes (tests/support/dlq-node.ts: the app as main.ts builds it, with a
// "test.http" dead-letter handler that POSTs each run to a sink in this test process) on one
// throwaway redis-server. The sink sees every run of every node: "ran exactly once" is counted
// from outside the nodes.

interface SinkRun {
  readonly dlq_id: string;
  readonly attempts: number;
  readonly pid: number;
}

/** Where the nodes' handlers report their runs: answers 200, or holds requests while `hold`. */
interface Sink {
  readonly url: string;
  readonly runs: SinkRun[];
  hold: boolean;
  close(): Promise<void>;
}

async function startSink(delayMs = 0): Promise<Sink> {
  const held: http.ServerResponse[] = [];
  const sink: Sink = {
    url: "",
    runs: [],
    hold: false,
    close: async () => {},
  };
  const server = http.createServer((request, response) => {
    let body = "";
    request.setEncoding("utf8");
    request.on("data", (chunk: string) => {
      body += chunk;
    });
    request.on("end", () => {
      sink.runs.push(JSON.parse(body) as SinkRun);
      if (sink.hold) {
        held.push(response);
        return;
      }
      setTimeout(() => response.end("ok"), delayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(sink, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const response of held) response.destroy();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  });
}

/** A queue of this test process on the same Redis and prefix, to add entries as a node would. */
function seedingQueue(redis: Redis, prefix: string): DeadLetterQueue {
  const store = createRedisDlqStore({ redis }, { keyPrefix: prefix });
  return createDeadLetterQueue(
    {
      store,
      clock: systemClock,
      ids: randomIds,
      events: createRecordingEventLog({ clock: systemClock, source: "test" }),
      // The latest draw: PENDING_RETRY entries added here are due in an hour, not during the test.
      random: () => 0.99,
    },
    { baseDelayMs: 3_600_000, maxDelayMs: 3_600_000 },
  );
}

async function seed(queue: DeadLetterQueue, count: number, maxAttempts = 0): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    ids.push(
      await queue.add({
        eventType: "test.http",
        payload: { index: i, note: "seeded by the test" },
        failureReason: "the sink was down",
        serviceName: i % 2 === 0 ? "billing" : "jira-agent",
        correlationId: `corr-${i}`,
        maxAttempts,
      }),
    );
  }
  return ids;
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startNode(env: Record<string, string>): Promise<OrchestratorProcess> {
  const node = await startOrchestratorProcess({
    script: dlqNodeScript,
    env: { LOG_LEVEL: "warn", ...env },
  });
  cleanups.push(() => node.stop("SIGKILL"));
  return node;
}

async function listAll(node: OrchestratorProcess): Promise<Json[]> {
  const entries: Json[] = [];
  let token = "";
  do {
    const reply = await rest(
      node.url,
      "GET",
      `/infrastructure/dlq?page_size=1000${token ? `&page_token=${token}` : ""}`,
    );
    expect(reply.status, reply.text).toBe(200);
    entries.push(...(reply.body.entries as Json[]));
    token = String(reply.body.next_page_token);
  } while (token !== "");
  return entries;
}

describe("DLQ across orchestrator processes on one Redis", () => {
  it("runs each of 200 DEAD entries exactly once when two nodes retry them all at once", {
    timeout: 180_000,
  }, async () => {
    const server: RedisServer = await startRedisServer();
    cleanups.push(() => server.stop());
    const sink = await startSink(2);
    cleanups.push(() => sink.close());
    const prefix = `dlq-race:${randomUUID()}:`;
    const redis = createTestRedisClient(server.url);
    cleanups.push(() => closeRedisClient(redis));
    await untilRedisReady(redis);
    const ids = await seed(seedingQueue(redis, prefix), 200);

    const env = { REDIS_URL: server.url, REDIS_KEY_PREFIX: prefix, DLQ_TEST_SINK_URL: sink.url };
    const [a, b] = await Promise.all([startNode(env), startNode(env)]);
    const grpc = createGrpcJsClient(InfrastructureService, `127.0.0.1:${b.port}`);
    cleanups.push(async () => grpc.close());

    // A names every id over REST; B selects them by filter over gRPC; both at once.
    const [byIds, byFilter] = await Promise.all([
      rest(a.url, "POST", "/infrastructure/dlq/retry", { dlq_ids: ids }),
      grpc.retryDlq({ eventType: "test.http", state: DlqState.DEAD, limit: 1_000 }),
    ]);
    expect(byIds.status, byIds.text).toBe(200);

    // Every entry's handler ran exactly once, on one node or the other.
    const ran = sink.runs.map((run) => run.dlq_id);
    expect(ran).toHaveLength(200);
    expect(new Set(ran)).toEqual(new Set(ids));
    expect(sink.runs.every((run) => run.attempts === 1)).toBe(true);

    // Each node reports what it ran; together, each entry once.
    const resolvedByA = (byIds.body.results as Json[])
      .filter((r) => r.outcome === "resolved")
      .map((r) => r.dlq_id);
    const resolvedByB = byFilter.results
      .filter((r) => r.outcome === "resolved")
      .map((r) => r.dlqId);
    expect([...resolvedByA, ...resolvedByB].sort()).toEqual([...ids].sort());
    expect(Number(byIds.body.retried_events) + byFilter.retriedEvents).toBe(200);
    for (const skipped of (byIds.body.results as Json[]).filter((r) => r.outcome === "skipped")) {
      expect(String(skipped.error)).toMatch(/claimed by another retry|already resolved/);
    }

    const stats = await rest(a.url, "GET", "/infrastructure/dlq/stats");
    expect(stats.body).toMatchObject({
      total_events: 0,
      dead_events: 0,
      resolved: 200,
      retried_events: 200,
    });
  });

  it("gives entries back in their states after SIGKILL and restart, and retries an orphaned claim once it expires", {
    timeout: 240_000,
  }, async () => {
    const server: RedisServer = await startRedisServer({ persistent: true });
    cleanups.push(() => server.stop());
    const sink = await startSink();
    cleanups.push(() => sink.close());
    const prefix = `dlq-restart:${randomUUID()}:`;
    const redis = createTestRedisClient(server.url);
    cleanups.push(() => closeRedisClient(redis));
    await untilRedisReady(redis);
    const seeding = seedingQueue(redis, prefix);
    const dead = await seed(seeding, 4);
    const pending = await seed(seeding, 2, 3);
    // The claim of a retry lasts twice the retry's timeout: 30 s here.
    const env = {
      REDIS_URL: server.url,
      REDIS_KEY_PREFIX: prefix,
      DLQ_TEST_SINK_URL: sink.url,
      DLQ_RETRY_TIMEOUT_MS: "15000",
    };
    const first = await startNode(env);

    // One resolved, one left RETRYING by a node that dies while its retry runs.
    const resolved = await rest(first.url, "POST", "/infrastructure/dlq/retry", {
      dlq_ids: [dead[0]],
    });
    expect((resolved.body.results as Json[])[0]?.outcome).toBe("resolved");
    sink.hold = true;
    const orphan = dead[1] as string;
    void rest(first.url, "POST", "/infrastructure/dlq/retry", { dlq_ids: [orphan] }).catch(
      () => undefined,
    );
    await until("the orphaned retry reaches the sink", async () =>
      sink.runs.some((run) => run.dlq_id === orphan) ? true : undefined,
    );
    const before = await listAll(first);
    expect(before.find((e) => e.dlq_id === orphan)).toMatchObject({
      state: "DLQ_STATE_RETRYING",
      attempts: 1,
    });
    await first.stop("SIGKILL");
    // Redis dies too, and comes back from its append-only file.
    await server.kill();
    await server.restart();
    sink.hold = false;

    const second = await startNode(env);
    const after = await listAll(second);
    // Every entry is back, in its state, field for field, the orphaned claim included (its
    // claim has not expired yet).
    expect(after).toEqual(before);
    expect(after.map((e) => e.state)).toEqual([
      "DLQ_STATE_RESOLVED",
      "DLQ_STATE_RETRYING",
      "DLQ_STATE_DEAD",
      "DLQ_STATE_DEAD",
      "DLQ_STATE_PENDING_RETRY",
      "DLQ_STATE_PENDING_RETRY",
    ]);
    expect(after.map((e) => e.dlq_id)).toEqual([...dead, ...pending]);

    // Once the claim expires, the new node takes the entry back and retries it: once more.
    let seen: Json | undefined;
    const retried = await until(
      "the orphaned entry is retried after its claim expired",
      async () => {
        const entry = (await listAll(second)).find((e) => e.dlq_id === orphan);
        seen = entry;
        return entry?.state === "DLQ_STATE_RESOLVED" ? entry : undefined;
      },
      {
        timeoutMs: 120_000,
        describe: () => `${JSON.stringify(seen)}\n${second.stdout().slice(-3000)}`,
      },
    );
    expect(retried.attempts).toBe(2);
    const runs = sink.runs.filter((run) => run.dlq_id === orphan);
    expect(runs.map((run) => run.attempts)).toEqual([1, 2]);
    expect(runs[1]?.pid).toBe(second.child.pid);
    const stats = await rest(second.url, "GET", "/infrastructure/dlq/stats");
    expect(stats.body).toMatchObject({
      resolved: 2,
      dead_events: 2,
      pending_retry: 2,
      retrying: 0,
      retried_events: 3,
    });
  });
});
