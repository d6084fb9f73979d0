import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { RegistryService } from "../../gen/orchestrator/v1/registry_pb.js";
import { createGrpcJsClient } from "../../src/clients/grpc-js-client.js";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import {
  createTestRedisClient,
  type RedisServer,
  startRedisServer,
  untilRedisReady,
} from "../support/redis-server.js";
import {
  expectStatus,
  type Json,
  openWatch,
  patience,
  type Reply,
  register,
  registration,
  rest,
  type ServiceJson,
  untilStatus,
} from "../support/rest.js";

// The registry on Redis, as its users meet it: a real node (in-process) on a throwaway
// redis-server, called over REST and gRPC on loopback. A restart of the node, or of Redis, loses
// nothing; while Redis is down writes are refused (503 / UNAVAILABLE, never a false success),
// reads serve the last known state, and everything recovers by itself.

interface ListJson {
  readonly services: ServiceJson[];
  readonly count: number;
  readonly next_page_token: string;
  readonly revision: string;
}

async function list(base: string): Promise<ListJson> {
  return (await expectStatus(rest(base, "GET", "/registry"), 200)) as unknown as ListJson;
}

async function pollOpenApi(base: string, name: string): Promise<Json> {
  const body = await expectStatus(
    rest(base, "POST", "/registry/poll-openapi", { names: [name] }),
    200,
  );
  const results = body.results as Json[];
  expect(results).toHaveLength(1);
  return results[0] as Json;
}

/** A refusal because the store is unavailable: 503 with the gateway's error body. */
async function expectUnavailable(reply: Promise<Reply>): Promise<void> {
  const body = await expectStatus(reply, 503);
  expect(body.code).toBe("unavailable");
  expect(body.message).toBe("the registry store is unavailable");
}

/** The node's configuration: Redis, a prefix of its own, and no health probes (they write). */
function nodeEnv(redis: RedisServer, prefix: string, nodeId: string): Record<string, string> {
  return {
    REDIS_URL: redis.url,
    REDIS_KEY_PREFIX: prefix,
    NODE_ID: nodeId,
    HEALTH_CHECK_INTERVAL_MS: "3600000",
    LOG_LEVEL: "warn",
  };
}

const newPrefix = () => `test-${randomUUID()}:`;

/** A loopback server publishing one OpenAPI document at /openapi.json. */
async function startOpenApiServer(): Promise<{ url: string; server: Server }> {
  const document = {
    openapi: "3.0.3",
    info: { title: "payments", version: "1.0.0" },
    paths: {
      "/payments": {
        get: { responses: { "200": { description: "the payments" } } },
        post: { responses: { "201": { description: "created" } } },
      },
    },
  };
  const server = createServer((request, response) => {
    if (request.url !== "/openapi.json") {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": "application/json" });
    response.end(JSON.stringify(document));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, server };
}

describe("registry on Redis", () => {
  // Everything a test started, stopped after it whatever happened.
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function redisServer(): Promise<RedisServer> {
    const server = await startRedisServer({ persistent: true });
    cleanups.push(() => server.stop());
    return server;
  }

  async function openApiServer(): Promise<string> {
    const { url, server } = await startOpenApiServer();
    cleanups.push(async () => {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    });
    return url;
  }

  async function node(env: Record<string, string>): Promise<RunningOrchestrator> {
    const running = await startOrchestrator({ env });
    cleanups.push(() => running.close());
    // The store loads in the background: ready means it has.
    await untilStatus(running.url, "/ready", 200);
    return running;
  }

  it("gives a restarted node, and a restarted redis-server, back everything", {
    timeout: 60_000,
  }, async () => {
    const redis = await redisServer();
    const openapiUrl = await openApiServer();
    const prefix = newPrefix();

    // --- First node: every kind of write. ---
    const first = await node(nodeEnv(redis, prefix, "node-1"));
    const alpha = await register(
      first.url,
      registration("alpha", {
        openapi_url: `${openapiUrl}/openapi.json`,
        health_url: "http://127.0.0.1:9/alpha/healthz",
        endpoints: ["/payments", "/payments/{id}"],
        metadata: { team: "payments", 'quote"and\\slash': "é ✓" },
        tags: ["core", "pci"],
        version: "1.4.2",
      }),
    );
    expect(alpha.revision).toBe("1");
    await register(first.url, registration("beta", { tags: ["edge"], ttl_seconds: 86_400 }));
    await register(first.url, registration("gamma", { metadata: { owner: "ops" } }));
    await register(first.url, registration("delta", { version: "0.1.0" }));
    const removed = await expectStatus(rest(first.url, "DELETE", "/registry/gamma"), 200);
    expect(removed).toEqual({ status: "deregistered", name: "gamma", revision: "5" });
    await expectStatus(rest(first.url, "POST", "/registry/beta/heartbeat", {}), 200);
    const recorded = await pollOpenApi(first.url, "alpha");
    expect(recorded).toMatchObject({ service: "alpha", baseline: true, changed: false, error: "" });
    expect(recorded.hash).toMatch(/^[0-9a-f]{64}$/);

    const written = await list(first.url);
    expect(written.revision).toBe("6");
    expect(written.services.map((s) => [s.name, s.revision])).toEqual([
      ["alpha", "1"],
      ["beta", "6"],
      ["delta", "4"],
    ]);
    expect(written.services.every((s) => s.origin_node_id === "node-1")).toBe(true);
    await first.close();

    // --- A new node on the same Redis and prefix: the same registry, to the last field. ---
    const second = await node(nodeEnv(redis, prefix, "node-2"));
    expect(await list(second.url)).toEqual(written);
    await expectStatus(rest(second.url, "GET", "/registry/gamma"), 404);
    // The baseline came back: the same document is neither a first baseline nor a change.
    expect(await pollOpenApi(second.url, "alpha")).toEqual({ ...recorded, baseline: false });
    const epsilon = await register(second.url, registration("epsilon"));
    expect(epsilon.revision).toBe("7");
    expect(epsilon.origin_node_id).toBe("node-2");
    const beforeRedisRestart = await list(second.url);
    await second.close();

    // --- Redis killed (SIGKILL) and restarted from its append-only file. ---
    await redis.restart();
    const third = await node(nodeEnv(redis, prefix, "node-3"));
    expect(await list(third.url)).toEqual(beforeRedisRestart);
    expect(await pollOpenApi(third.url, "alpha")).toEqual({ ...recorded, baseline: false });
    // The tombstone is not served by any RPC yet (it is what replicates a delete, issue 4): it is
    // read where the store documents it keeps it.
    const raw = createTestRedisClient(redis.url);
    try {
      await untilRedisReady(raw);
      const stored = await raw.hget(`${prefix}{registry}:tombstones`, "gamma");
      expect(stored).not.toBeNull();
      expect(JSON.parse(stored ?? "null")).toMatchObject({
        name: "gamma",
        revision: 5,
        origin: "node-1",
      });
    } finally {
      await closeRedisClient(raw);
    }

    // Revisions continue where they were; the deregistered name can be registered again.
    const gamma = await register(third.url, registration("gamma", { version: "2.0.0" }));
    expect(gamma.revision).toBe("8");
    const served = await expectStatus(rest(third.url, "GET", "/registry/gamma"), 200);
    expect(served).toEqual(gamma);
    const final = await list(third.url);
    expect(final.revision).toBe("8");
    expect(final.services.map((s) => s.name)).toEqual([
      "alpha",
      "beta",
      "delta",
      "epsilon",
      "gamma",
    ]);
  });

  it("refuses writes while Redis is down, serves the last known state, and recovers by itself", {
    timeout: 60_000,
  }, async () => {
    const redis = await redisServer();
    const prefix = newPrefix();
    const running = await node(nodeEnv(redis, prefix, "node-1"));
    const { url } = running;
    const openapiUrl = await openApiServer();
    await register(url, registration("steady", { version: "1", tags: ["keep"] }));
    await register(url, registration("other", { openapi_url: `${openapiUrl}/openapi.json` }));
    const steady = await expectStatus(rest(url, "GET", "/registry/steady"), 200);
    const before = await list(url);
    expect(before.revision).toBe("2");
    const watch = openWatch(url);
    cleanups.push(async () => watch.close());
    expect((await watch.next()).service?.name).toBe("other");
    expect((await watch.next()).service?.name).toBe("steady");
    expect(await watch.next()).toMatchObject({
      type: "WATCH_EVENT_TYPE_SNAPSHOT_END",
      revision: "2",
    });

    await redis.kill();

    // Writes: refused, whatever the protocol, never acknowledged.
    await expectUnavailable(rest(url, "POST", "/registry/register", registration("lost")));
    await expectUnavailable(
      rest(url, "POST", "/registry/register", registration("steady", { version: "2" })),
    );
    await expectUnavailable(rest(url, "DELETE", "/registry/other"));
    await expectUnavailable(rest(url, "POST", "/registry/steady/heartbeat", {}));
    const client = createGrpcJsClient(RegistryService, running.address);
    try {
      const refused = await client
        .registerService({ name: "lost-grpc", baseUrl: "http://127.0.0.1:9/lost-grpc" })
        .then(
          () => undefined,
          (error: unknown) => error as grpc.ServiceError,
        );
      expect(refused).toBeDefined();
      expect(grpc.status[refused?.code ?? grpc.status.OK]).toBe("UNAVAILABLE");
      // From the store, not from the transport: the node itself answered.
      expect(refused?.details).toBe("the registry store is unavailable");
    } finally {
      client.close();
    }
    // A first baseline cannot be recorded: the poll says so rather than report one.
    expect(await pollOpenApi(url, "other")).toEqual({
      service: "other",
      changed: false,
      baseline: false,
      hash: "",
      error: "baseline store unavailable",
    });

    // Reads: the last known state.
    expect(await list(url)).toEqual(before);
    expect(await expectStatus(rest(url, "GET", "/registry/steady"), 200)).toEqual(steady);

    // Readiness: not ready, and it says why.
    const notReady = await untilStatus(url, "/ready", 503);
    expect(notReady.code).toBe("unavailable");
    expect(notReady.message).toMatch(/redis/);
    expect(notReady.ready).toBe(false);
    expect(notReady.checks).toContainEqual(expect.objectContaining({ name: "redis", ok: false }));

    await redis.restart();

    await untilStatus(url, "/ready", 200);
    let back: ServiceJson | undefined;
    const deadline = Date.now() + patience;
    while (back === undefined) {
      const reply = await rest(url, "POST", "/registry/register", registration("back"));
      if (reply.status === 200) back = (reply.body as { service: ServiceJson }).service;
      else if (reply.status !== 503 || Date.now() > deadline) expect.fail(reply.text);
      else await delay(100);
    }
    // The refused writes took no revision, and none is reused.
    expect(back.revision).toBe("3");
    const after = await list(url);
    expect(after.revision).toBe("3");
    // None of the refused writes happened: the old entries are as they were, nothing else came.
    expect(after.services).toEqual([back, ...before.services]);
    await expectStatus(rest(url, "GET", "/registry/lost"), 404);
    await expectStatus(rest(url, "GET", "/registry/lost-grpc"), 404);
    expect(await pollOpenApi(url, "other")).toMatchObject({ baseline: true, changed: false });

    // The watch opened before the outage goes on, with nothing but the write that happened.
    expect(await watch.next()).toMatchObject({
      type: "WATCH_EVENT_TYPE_PUT",
      revision: "3",
      service: back,
    });

    // The node hears of other processes' writes again (it subscribed again by itself).
    const twin = await node(nodeEnv(redis, prefix, "node-2"));
    const fromTwin = await register(twin.url, registration("from-twin"));
    expect(fromTwin.revision).toBe("4");
    expect(await untilStatus(url, "/registry/from-twin", 200)).toEqual(fromTwin);
    expect(await watch.next()).toMatchObject({ type: "WATCH_EVENT_TYPE_PUT", service: fromTwin });

    // And writes of every kind work again, continuing the revisions.
    await expectStatus(rest(url, "POST", "/registry/steady/heartbeat", {}), 200);
    const removed = await expectStatus(rest(url, "DELETE", "/registry/other"), 200);
    expect(removed.revision).toBe("6");
  });

  it("answers 504 for writes a frozen Redis holds, and never applies them once it resumes", {
    timeout: 90_000,
  }, async () => {
    const redis = await redisServer();
    const prefix = newPrefix();
    const { url } = await node(nodeEnv(redis, prefix, "node-1"));
    const kept = await register(url, registration("kept"));
    const before = await list(url);
    expect(before.revision).toBe("1");
    const raw = createTestRedisClient(redis.url);
    cleanups.push(() => closeRedisClient(raw));
    await untilRedisReady(raw);

    // SIGSTOP: the node's connection stays open, its commands wait in Redis' socket.
    redis.pause();
    let paused = true;
    cleanups.push(async () => {
      if (paused) redis.resume();
    });
    const started = Date.now();
    const replies = await Promise.all([
      rest(url, "POST", "/registry/register", registration("late")),
      rest(url, "DELETE", "/registry/kept"),
      rest(url, "POST", "/registry/kept/heartbeat", {}),
    ]);
    // Bounded by the write deadline (5 s), not by how long Redis stays frozen.
    expect(Date.now() - started).toBeLessThan(25_000);
    const deadlines = replies.map((reply) => {
      expect(reply.status, reply.text).toBe(504);
      expect(reply.body.code).toBe("deadline_exceeded");
      const said =
        /the write may have been applied before (\S+) and will not be applied after it/.exec(
          String(reply.body.message),
        );
      expect(said, reply.text).not.toBeNull();
      return Date.parse(said?.[1] ?? "");
    });

    redis.resume();
    paused = false;
    // Everything the node's connection held has run by the time a later command on that same
    // connection is answered: this write follows the three refused ones in its socket.
    const after = await register(url, registration("after"));
    expect(await raw.ping()).toBe("PONG");
    // The deadlines named in the answers are behind Redis' own clock by now.
    const [seconds, micros] = (await raw.time()).map(Number) as [number, number];
    for (const deadline of deadlines) expect(deadline).toBeLessThan(seconds * 1000 + micros / 1000);

    // None of the three happened: read Redis itself...
    expect(await raw.get(`${prefix}{registry}:revision`)).toBe("2");
    expect(await raw.hkeys(`${prefix}{registry}:entries`)).toEqual(
      expect.arrayContaining(["kept", "after"]),
    );
    expect(await raw.hlen(`${prefix}{registry}:entries`)).toBe(2);
    expect(await raw.hexists(`${prefix}{registry}:tombstones`, "kept")).toBe(0);
    expect(await raw.llen(`${prefix}{registry}:changes`)).toBe(2);
    // ...and the API: the refused writes took no revision, "kept" is as it was.
    expect(after.revision).toBe("2");
    await expectStatus(rest(url, "GET", "/registry/late"), 404);
    expect(await expectStatus(rest(url, "GET", "/registry/kept"), 200)).toEqual(kept);
    expect((await list(url)).revision).toBe("2");

    // A Redis that is gone (connection refused) still gets 503: nothing was sent.
    await redis.kill();
    await expectUnavailable(rest(url, "POST", "/registry/register", registration("refused")));
  });

  it("starts serving while Redis is down, not ready, and loads the registry when it returns", {
    timeout: 60_000,
  }, async () => {
    const redis = await redisServer();
    const prefix = newPrefix();
    const first = await node(nodeEnv(redis, prefix, "node-1"));
    await register(first.url, registration("kept", { tags: ["durable"] }));
    const stored = await list(first.url);
    await first.close();
    await redis.kill();

    // The first attempt to load waits for Redis (up to 10 s) before the port opens.
    const running = await startOrchestrator({ env: nodeEnv(redis, prefix, "node-2") });
    cleanups.push(() => running.close());
    const { url } = running;
    const notReady = await expectStatus(rest(url, "GET", "/ready"), 503);
    expect(notReady.checks).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ name: "redis", ok: false }),
        expect.objectContaining({ name: "registry", ok: false }),
      ]),
    );
    await expectUnavailable(rest(url, "POST", "/registry/register", registration("early")));

    await redis.restart();
    await untilStatus(url, "/ready", 200);
    expect(await list(url)).toEqual(stored);
    const next = await register(url, registration("later"));
    expect(next.revision).toBe("2");
  });
});
