import { randomBytes, randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  RegistryService,
  ServiceStatus,
  WatchEventType,
  type WatchServicesResponse,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { createGrpcJsClient } from "../../src/clients/grpc-js-client.js";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import {
  createTestRedisClient,
  type RedisServer,
  startRedisServer,
  untilRedisReady,
} from "../support/redis-server.js";

// Leases on a real node with the Redis store: an entry that stops renewing turns DOWN at the next
// sweep (every second), is removed LEASE_GRACE_MS later, and every step is an event on Redis and
// a change on the watch stream. Heartbeats keep an entry alive, and revive one that is DOWN.

type JsonRecord = Record<string, unknown>;

const waitLong = { timeout: 15_000, interval: 50 };

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

let redisServer: RedisServer | undefined;
beforeAll(async () => {
  redisServer = await startRedisServer();
});
afterAll(async () => {
  await redisServer?.stop();
});

/** A node on the Redis store, with its id, and the events it publishes on Redis. */
async function startNode(leaseGraceMs: number) {
  if (redisServer === undefined) throw new Error("redis-server not started");
  const subscriber = createTestRedisClient(redisServer.url);
  cleanups.push(() => closeRedisClient(subscriber));
  await untilRedisReady(subscriber);
  const published: JsonRecord[] = [];
  subscriber.on("message", (_channel: string, message: string) => {
    published.push(JSON.parse(message) as JsonRecord);
  });
  await subscriber.subscribe("orchestrator.events");

  const nodeId = `node-leases-${randomBytes(4).toString("hex")}`;
  const node = await startOrchestrator({
    env: {
      REDIS_URL: redisServer.url,
      REDIS_KEY_PREFIX: `leases-e2e:${randomUUID()}:`,
      NODE_ID: nodeId,
      LEASE_GRACE_MS: String(leaseGraceMs),
      HEALTH_CHECK_INTERVAL_MS: "3600000",
    },
  });
  cleanups.push(() => node.close());
  /** This node's events about `subject`, oldest first. */
  const eventsOf = (subject: string) =>
    published.filter((e) => e.source === nodeId && e.subject === subject);
  return { node, eventsOf };
}

async function call(
  node: RunningOrchestrator,
  method: string,
  path: string,
  body?: JsonRecord,
): Promise<{ status: number; body: JsonRecord }> {
  const response = await fetch(`${node.url}${path}`, {
    method,
    ...(body === undefined
      ? {}
      : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json()) as JsonRecord };
}

async function register(node: RunningOrchestrator, name: string, ttlSeconds: number) {
  const reply = await call(node, "POST", "/registry/register", {
    name,
    base_url: `http://${name}.internal`,
    ttl_seconds: ttlSeconds,
  });
  expect(reply.status).toBe(200);
  return reply.body.service as JsonRecord;
}

const statusOf = async (node: RunningOrchestrator, name: string) =>
  (await call(node, "GET", `/registry/${name}`)).body.status;

describe("leases", () => {
  it("an entry whose lease runs out turns DOWN, then is removed after the grace period", async () => {
    const { node, eventsOf } = await startNode(500);
    const client = createGrpcJsClient(RegistryService, node.address);
    cleanups.push(() => client.close());
    const controller = new AbortController();
    const watched: WatchServicesResponse[] = [];
    const watching = (async () => {
      for await (const message of client.watchServices({}, { signal: controller.signal })) {
        watched.push(message);
      }
    })().catch(() => {});
    cleanups.push(() => {
      controller.abort();
      return watching;
    });
    await vi.waitFor(() => expect(watched.length).toBeGreaterThan(0), waitLong);

    const entry = await register(node, "ephemeral", 1);
    const leaseExpiresAt = Date.parse(String(entry.lease_expires_at));
    expect(leaseExpiresAt).toBe(Date.parse(String(entry.updated_at)) + 1_000);

    // The watch sees every step, in order, however fast they come.
    const changes = () =>
      watched
        .filter((m) => m.service?.name === "ephemeral")
        .map((m) => [m.type, m.type === WatchEventType.DELETE ? undefined : m.service?.status]);
    await vi.waitFor(
      () =>
        expect(changes()).toEqual([
          [WatchEventType.PUT, ServiceStatus.UNKNOWN],
          [WatchEventType.PUT, ServiceStatus.DOWN],
          [WatchEventType.DELETE, undefined],
        ]),
      waitLong,
    );
    const gone = await call(node, "GET", "/registry/ephemeral");
    expect(gone.status).toBe(404);
    expect(gone.body.code).toBe("not_found");
    expect((await call(node, "GET", "/registry")).body.count).toBe(0);
    expect((await call(node, "POST", "/registry/ephemeral/heartbeat", {})).status).toBe(404);

    await vi.waitFor(
      () =>
        expect(eventsOf("ephemeral").map((e) => e.type)).toEqual([
          "registry.service.registered",
          "registry.service.expired",
          "registry.service.removed",
        ]),
      waitLong,
    );
    const [, expired, removed] = eventsOf("ephemeral");
    expect(expired).toMatchObject({
      type: "registry.service.expired",
      subject: "ephemeral",
      payload: {
        service: "ephemeral",
        lease_expires_at: new Date(leaseExpiresAt).toISOString(),
      },
    });
    expect(removed).toMatchObject({
      type: "registry.service.removed",
      payload: { service: "ephemeral", reason: "lease expired" },
    });
    // Not a moment early, by the node's own clock: DOWN after the lease, removed after the grace.
    expect(Date.parse(String(expired?.timestamp))).toBeGreaterThanOrEqual(leaseExpiresAt);
    expect(Date.parse(String(removed?.timestamp))).toBeGreaterThanOrEqual(leaseExpiresAt + 500);
  });

  it("heartbeats keep an entry alive while one that does not renew expires", async () => {
    const { node, eventsOf } = await startNode(500);
    // Two-second leases and a heartbeat every 300 ms leave room for a loaded machine.
    await register(node, "steady", 2);
    await register(node, "lapsed", 2);
    const started = Date.now();
    const beats: JsonRecord[] = [];
    while (
      Date.now() - started < 2_500 ||
      !eventsOf("lapsed").some((e) => e.type === "registry.service.expired")
    ) {
      const beat = await call(node, "POST", "/registry/steady/heartbeat", {});
      expect(beat.status).toBe(200);
      beats.push(beat.body);
      expect(Date.now() - started, "the control entry never expired").toBeLessThan(15_000);
      await delay(300);
    }
    expect(beats.length).toBeGreaterThan(1);
    expect(beats.at(-1)).toMatchObject({ status: "ok", name: "steady" });
    const steady = await call(node, "GET", "/registry/steady");
    expect(steady.body.status).toBe("SERVICE_STATUS_UNKNOWN");
    expect(steady.body.lease_expires_at).toBe(beats.at(-1)?.lease_expires_at);
    expect(eventsOf("steady").map((e) => e.type)).toEqual(["registry.service.registered"]);
  });

  it("a heartbeat after DOWN, before removal, revives the entry as UNKNOWN", async () => {
    // A long grace period: the entry stays DOWN until the test acts on it.
    const { node, eventsOf } = await startNode(60_000);
    await register(node, "sleepy", 1);
    await register(node, "dozy", 1);
    await vi.waitFor(async () => {
      expect(await statusOf(node, "sleepy")).toBe("SERVICE_STATUS_DOWN");
      expect(await statusOf(node, "dozy")).toBe("SERVICE_STATUS_DOWN");
    }, waitLong);
    const down = await call(node, "GET", "/registry?status=SERVICE_STATUS_DOWN");
    expect((down.body.services as JsonRecord[]).map((s) => s.name)).toEqual(["dozy", "sleepy"]);
    const system = await call(node, "GET", "/health/system");
    expect(system.body).toMatchObject({
      total_count: 2,
      healthy_count: 0,
      services: { sleepy: { status: "down" }, dozy: { status: "down" } },
    });

    const beat = await call(node, "POST", "/registry/sleepy/heartbeat", {});
    expect(beat.status).toBe(200);
    expect(beat.body.status).toBe("ok");
    const revived = await call(node, "GET", "/registry/sleepy");
    expect(revived.body.status).toBe("SERVICE_STATUS_UNKNOWN");
    expect(revived.body.lease_expires_at).toBe(beat.body.lease_expires_at);
    await vi.waitFor(
      () =>
        expect(eventsOf("sleepy").map((e) => e.type)).toEqual([
          "registry.service.registered",
          "registry.service.expired",
          "registry.service.revived",
        ]),
      waitLong,
    );

    // A registration is proof of life too.
    const again = await register(node, "dozy", 0);
    expect(again.status).toBe("SERVICE_STATUS_UNKNOWN");
    expect(again.lease_expires_at).toBeUndefined();
    expect(await statusOf(node, "dozy")).toBe("SERVICE_STATUS_UNKNOWN");
  });
});
