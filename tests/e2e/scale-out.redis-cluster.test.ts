import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DeadLetters } from "../../src/dlq/dead-letters.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { type RedisCluster, startRedisCluster } from "../support/redis-cluster.js";
import {
  expectStatus,
  type Json,
  registration,
  rest,
  until,
  untilStatus,
} from "../support/rest.js";

// Two orchestrators configured with REDIS_CLUSTER_NODES on a 3-master Redis Cluster, sharing one
// key prefix: what one writes (registry, events, sagas, DLQ) the other reads. The same guarantees
// on one shared Redis are proven by the *.redis.test.ts suites (registry-two-nodes,
// events-redis, sagas-redis, dlq-processes, workflow-runs); this one shows the cluster wiring:
// both connections (commands, subscriber) and the blocking reader work on a cluster.

let cluster: RedisCluster | undefined;
const nodes: RunningOrchestrator[] = [];
const queues: DeadLetters[] = [];

beforeAll(async () => {
  cluster = await startRedisCluster();
  const env = (nodeId: string) => ({
    REDIS_CLUSTER_NODES: cluster?.nodes.join(",") ?? "",
    REDIS_KEY_PREFIX: `scale-out:${randomUUID()}:`,
    NODE_ID: nodeId,
    // No probes: every write here is one the test made.
    HEALTH_CHECK_INTERVAL_MS: "3600000",
  });
  const shared = env("");
  for (const nodeId of ["node-a", "node-b"]) {
    nodes.push(
      await startOrchestrator({
        env: { ...shared, NODE_ID: nodeId },
        deps: { withDeadLetters: (queue) => queues.push(queue) },
      }),
    );
  }
});
afterAll(async () => {
  for (const node of nodes) await node.close();
  await cluster?.stop();
});

const both = () => nodes as [RunningOrchestrator, RunningOrchestrator];

describe("two orchestrators on one Redis Cluster", () => {
  it("become ready: commands, subscriber and the blocking event reader all serve", async () => {
    for (const node of both()) await untilStatus(node.url, "/ready", 200);
  });

  it("serve on B the registry write made on A, and on A the delete made on B", async () => {
    const [a, b] = both();
    const entry = await expectStatus(
      rest(a.url, "POST", "/registry/register", registration("on-cluster")),
      200,
    );
    // B learns of it through the change notification (pub/sub on the cluster) or a catch-up.
    const onB = await until("B serves A's write", async () => {
      const reply = await rest(b.url, "GET", "/registry/on-cluster");
      return reply.status === 200 ? reply.body : undefined;
    });
    expect(onB).toEqual(entry.service);
    await expectStatus(rest(b.url, "DELETE", "/registry/on-cluster"), 200);
    await until("A forgets it", async () =>
      (await rest(a.url, "GET", "/registry/on-cluster")).status === 404 ? true : undefined,
    );
  });

  it("show on B the events A stored, and a saga A created", async () => {
    const [a, b] = both();
    await expectStatus(rest(a.url, "POST", "/registry/register", registration("evented")), 200);
    const events = await until("B reads A's registry event", async () => {
      const page = await expectStatus(
        rest(b.url, "GET", "/infrastructure/events/history?limit=1000"),
        200,
      );
      const found = (page.events as Json[]).filter((e) => e.subject === "evented");
      return found.length > 0 ? found : undefined;
    });
    expect(events.map((e) => [e.type, e.source])).toEqual([
      ["registry.service.registered", "node-a"],
    ]);

    const sagaId = `saga-${randomUUID()}`;
    await a.app.sagas.create({ sagaId, name: "ingestion", steps: [{ name: "one" }] });
    const saga = await expectStatus(rest(b.url, "GET", `/infrastructure/saga/${sagaId}`), 200);
    expect(saga.status).toBe("SAGA_STATUS_PENDING");
  });

  it("list on B the dead letter A added", async () => {
    const [, b] = both();
    const dlqId = await (queues[0] as DeadLetters).add({
      eventType: "test.cluster",
      payload: { n: 1 },
      failureReason: "refused",
    });
    const reply = await expectStatus(rest(b.url, "GET", "/infrastructure/dlq"), 200);
    expect((reply.entries as Json[]).map((e) => e.dlq_id)).toContain(dlqId);
    const stats = await expectStatus(rest(b.url, "GET", "/infrastructure/dlq/stats"), 200);
    expect(stats.total_events).toBeGreaterThanOrEqual(1);
  });
});
