import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DeadLetters } from "../../src/dlq/dead-letters.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { type RedisServer, startRedisServer } from "../support/redis-server.js";
import { type Json, rest, until } from "../support/rest.js";

// The DLQ capability on the node's own Redis connection: entries added by a capability of one
// node are seen and retried by another node on the same prefix, automatic retries run on their
// own, and a Redis that is down makes the routes answer 503, never 500, until it is back.

let server: RedisServer;
const nodes: RunningOrchestrator[] = [];
const queues: DeadLetters[] = [];
const runs: string[] = [];

beforeAll(async () => {
  server = await startRedisServer();
  const env = {
    REDIS_URL: server.url,
    REDIS_KEY_PREFIX: `dlq-e2e:${randomUUID()}:`,
    DLQ_RETRY_BASE_DELAY_MS: "50",
    DLQ_POLL_INTERVAL_MS: "50",
  };
  for (let i = 0; i < 2; i++) {
    nodes.push(
      await startOrchestrator({
        env,
        deps: {
          withDeadLetters(queue) {
            queues.push(queue);
            queue.handle("test.flaky", async (entry) => {
              runs.push(entry.dlqId);
              // Fails its first attempt, succeeds its second: one automatic retry after another.
              if (entry.attempts < 2) throw new Error(`attempt ${entry.attempts} failed`);
            });
          },
        },
      }),
    );
  }
});
afterAll(async () => {
  for (const node of nodes) await node.close();
  await server?.stop();
});

describe("DLQ on Redis, in process", () => {
  it("retries on its own with backoff until an entry resolves, once per attempt across nodes", async () => {
    const [first, second] = nodes as [RunningOrchestrator, RunningOrchestrator];
    const dlqId = await (queues[0] as DeadLetters).add({
      eventType: "test.flaky",
      payload: { n: 1 },
      failureReason: "refused",
    });
    const resolved = await until("the entry is resolved by the automatic retries", async () => {
      const reply = await rest(second.url, "GET", "/infrastructure/dlq?state=DLQ_STATE_RESOLVED");
      return (reply.body.entries as Json[] | undefined)?.find((e) => e.dlq_id === dlqId);
    });
    expect(resolved).toMatchObject({ attempts: 2, failure_reason: "attempt 1 failed" });
    // Two attempts, two runs: each attempt claimed by one node only.
    expect(runs.filter((id) => id === dlqId)).toHaveLength(2);
    const stats = await rest(first.url, "GET", "/infrastructure/dlq/stats");
    expect(stats.body).toMatchObject({ resolved: 1, retried_events: 2, total_events: 0 });
  });

  it("answers 503 while Redis is down, and serves again once it is back", {
    timeout: 60_000,
  }, async () => {
    const node = nodes[0] as RunningOrchestrator;
    await server.kill();
    try {
      for (const [method, path, body] of [
        ["GET", "/infrastructure/dlq/stats", undefined],
        ["GET", "/infrastructure/dlq", undefined],
        ["POST", "/infrastructure/dlq/retry", {}],
      ] as const) {
        const reply = await rest(node.url, method, path, body);
        expect(reply.status, reply.text).toBe(503);
        expect(reply.body).toMatchObject({
          code: "unavailable",
          message: "the dead-letter store is unavailable",
        });
      }
      await expect(
        (queues[0] as DeadLetters).add({
          eventType: "test.flaky",
          payload: {},
          failureReason: "x",
        }),
      ).rejects.toMatchObject({ kind: "unavailable" });
    } finally {
      await server.restart();
    }
    await until("the stats answer again", async () => {
      const reply = await rest(node.url, "GET", "/infrastructure/dlq/stats");
      return reply.status === 200 ? reply : undefined;
    });
  });
});
