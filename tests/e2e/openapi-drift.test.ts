import { randomBytes, randomUUID } from "node:crypto";
import { readdirSync } from "node:fs";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import { type FakeService, startFakeService } from "../support/fake-service.js";
import { largeOpenApiDocument } from "../support/large-openapi.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { type OrchestratorProcess, startOrchestratorProcess } from "../support/process.js";
import {
  createTestRedisClient,
  type RedisServer,
  startRedisServer,
  untilRedisReady,
} from "../support/redis-server.js";

// POST /registry/poll-openapi against fake services on loopback: baselines, drift, findings
// published on Redis, and every way fetching a document can go wrong.

type JsonRecord = Record<string, unknown>;

const waitLong = { timeout: 15_000, interval: 50 };

/** Every poll answer of this file, checked at the end for addresses and stack traces. */
const everyAnswer: string[] = [];

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
  for (const answer of everyAnswer) {
    expect(answer).not.toContain("127.0.0.1");
    expect(answer).not.toMatch(/\n\s+at |\.ts:\d+/);
  }
});

async function startNode(env: Record<string, string> = {}): Promise<RunningOrchestrator> {
  if (redisServer === undefined) throw new Error("redis-server not started");
  const node = await startOrchestrator({
    env: {
      REDIS_URL: redisServer.url,
      REDIS_KEY_PREFIX: `drift-e2e:${randomUUID()}:`,
      HEALTH_CHECK_INTERVAL_MS: "3600000",
      ...env,
    },
  });
  cleanups.push(() => node.close());
  return node;
}

async function startFake(): Promise<FakeService> {
  const fake = await startFakeService();
  cleanups.push(() => fake.close());
  return fake;
}

async function register(
  node: { readonly url: string },
  name: string,
  fake: FakeService | undefined,
): Promise<void> {
  const response = await fetch(`${node.url}/registry/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      name,
      base_url: fake?.url ?? `http://${name}.internal`,
      ...(fake ? { openapi_url: fake.openapiUrl } : {}),
    }),
  });
  expect(response.status, await response.text()).toBe(200);
}

interface PollAnswer {
  readonly status: number;
  readonly results: JsonRecord[];
  readonly text: string;
}

async function poll(
  node: { readonly url: string },
  body: JsonRecord = {},
  headers: Record<string, string> = {},
): Promise<PollAnswer> {
  const response = await fetch(`${node.url}/registry/poll-openapi`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  everyAnswer.push(text);
  const parsed = JSON.parse(text) as JsonRecord;
  const results = Array.isArray(parsed.results) ? (parsed.results as JsonRecord[]) : [];
  return { status: response.status, results, text };
}

/** The one result of `service` in an answer. */
function resultOf(answer: PollAnswer, service: string): JsonRecord {
  const found = answer.results.filter((r) => r.service === service);
  expect(found, answer.text).toHaveLength(1);
  return found[0] as JsonRecord;
}

/** A connection of the test's own to the throwaway Redis. */
async function redisClient() {
  if (redisServer === undefined) throw new Error("redis-server not started");
  const client = createTestRedisClient(redisServer.url);
  cleanups.push(() => closeRedisClient(client));
  await untilRedisReady(client);
  return client;
}

/** Bytes of each service's baseline in Redis (0: none). */
async function baselineBytes(prefix: string, names: readonly string[]): Promise<number[]> {
  const client = await redisClient();
  return Promise.all(names.map((name) => client.hstrlen(`${prefix}{registry}:baselines`, name)));
}

/** Subscribes to Redis channels; messages arrive parsed, with their channel. */
async function subscribe(...channels: string[]) {
  if (redisServer === undefined) throw new Error("redis-server not started");
  const subscriber = createTestRedisClient(redisServer.url);
  cleanups.push(() => closeRedisClient(subscriber));
  await untilRedisReady(subscriber);
  const received: { channel: string; message: JsonRecord }[] = [];
  subscriber.on("message", (channel: string, message: string) => {
    received.push({ channel, message: JSON.parse(message) as JsonRecord });
  });
  await subscriber.subscribe(...channels);
  return received;
}

const itemSchema = {
  type: "object",
  required: ["id"],
  properties: { id: { type: "string" }, name: { type: "string" } },
};

/** An OpenAPI 3 document of an item service; `changes` edits a copy. */
function itemsDocument(description = "Items"): JsonRecord {
  return {
    openapi: "3.0.3",
    info: { title: "items", version: "1.0.0", description },
    paths: {
      "/items": {
        get: {
          parameters: [
            { name: "limit", in: "query", required: false, schema: { type: "integer" } },
          ],
          responses: {
            "200": {
              description: "ok",
              content: { "application/json": { schema: { type: "array", items: itemSchema } } },
            },
          },
        },
        post: {
          requestBody: {
            required: true,
            content: { "application/json": { schema: itemSchema } },
          },
          responses: { "201": { description: "created" } },
        },
      },
      "/items/{id}": {
        parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
        get: {
          responses: {
            "200": { description: "ok", content: { "application/json": { schema: itemSchema } } },
          },
        },
        delete: { responses: { "204": { description: "deleted" } } },
      },
    },
  };
}

/** The items document without DELETE /items/{id}, with a required query parameter on GET /items
 * and a new POST /orders. */
function driftedDocument(): JsonRecord {
  const document = itemsDocument();
  const paths = document.paths as Record<string, Record<string, JsonRecord>>;
  const item = paths["/items/{id}"] as Record<string, JsonRecord>;
  delete item.delete;
  const list = paths["/items"]?.get as JsonRecord;
  list.parameters = [
    ...(list.parameters as JsonRecord[]),
    { name: "tenant", in: "query", required: true, schema: { type: "string" } },
  ];
  paths["/orders"] = { post: { responses: { "202": { description: "accepted" } } } };
  return document;
}

describe("drift of a service's OpenAPI document", () => {
  it("the first poll records a baseline; an unchanged contract is not drift", async () => {
    const node = await startNode();
    const fake = await startFake();
    fake.serveDocument(itemsDocument());
    await register(node, "catalog", fake);

    const correlationId = `poll-${randomUUID()}`;
    const traceId = randomBytes(16).toString("hex");
    const first = await poll(
      node,
      {},
      {
        "x-correlation-id": correlationId,
        traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01`,
      },
    );
    expect(first.status, first.text).toBe(200);
    expect(first.results).toEqual([
      { service: "catalog", changed: false, baseline: true, hash: expect.any(String), error: "" },
    ]);
    const hash = String(resultOf(first, "catalog").hash);
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
    // The fetch carried the poll's correlation id and trace.
    const fetched = fake.requests.filter((r) => r.path === "/openapi.json");
    expect(fetched).toHaveLength(1);
    expect(fetched[0]?.headers["x-correlation-id"]).toBe(correlationId);
    expect(String(fetched[0]?.headers.traceparent)).toMatch(new RegExp(`^00-${traceId}-`));

    const again = await poll(node);
    expect(resultOf(again, "catalog")).toEqual({
      service: "catalog",
      changed: false,
      baseline: false,
      hash,
      error: "",
    });

    // Prose is not contract: a new hash, but no drift.
    fake.serveDocument(itemsDocument("Items, now with a longer description"));
    const reworded = resultOf(await poll(node), "catalog");
    expect(reworded).toMatchObject({ changed: false, baseline: false, error: "" });
    expect(reworded.hash).not.toBe(hash);
    expect(reworded.diff).toBeUndefined();

    // The same document as YAML is the same contract.
    fake.setOpenApi({
      kind: "document",
      contentType: "application/yaml",
      body: [
        "openapi: 3.0.3",
        "info: {title: items, version: 1.0.0, description: 'Items, now with a longer description'}",
        `paths: ${JSON.stringify((itemsDocument() as { paths: unknown }).paths)}`,
      ].join("\n"),
    });
    expect(resultOf(await poll(node), "catalog")).toMatchObject({
      changed: false,
      hash: reworded.hash,
      error: "",
    });
  });

  it("a removed operation and a new required parameter are breaking drift, published as a finding", async () => {
    const received = await subscribe("findings.created", "orchestrator.events");
    const node = await startNode();
    const fake = await startFake();
    fake.serveDocument(itemsDocument());
    const service = `catalog-${randomBytes(3).toString("hex")}`;
    await register(node, service, fake);
    expect(resultOf(await poll(node), service).baseline).toBe(true);

    fake.serveDocument(driftedDocument());
    const correlationId = `drift-${randomUUID()}`;
    const drifted = await poll(node, {}, { "x-correlation-id": correlationId });
    const result = resultOf(drifted, service);
    expect(result).toMatchObject({ service, changed: true, baseline: false, error: "" });
    expect(result.diff).toEqual({
      added: ["POST /orders"],
      removed: ["DELETE /items/{id}"],
      changed: ["GET /items"],
      breaking: true,
      added_count: 1,
      removed_count: 1,
      changed_count: 1,
    });

    // Only this service's findings: the channels carry every event of the node.
    const findings = () =>
      received.filter((r) => r.channel === "findings.created" && r.message.service === service);
    const findingEvents = () =>
      received.filter(
        (r) =>
          r.channel === "orchestrator.events" &&
          r.message.type === "findings.created" &&
          r.message.subject === service,
      );
    await vi.waitFor(() => {
      expect(findings()).toHaveLength(1);
      expect(findingEvents()).toHaveLength(1);
    }, waitLong);
    const finding = findings()[0]?.message;
    expect(finding).toEqual({
      type: "api_drift_candidate",
      service,
      correlation_id: correlationId,
      count: 3,
      severity_counts: { high: 1, medium: 1, low: 1 },
      breaking: true,
      hash: result.hash,
    });
    expect(findingEvents()[0]?.message).toMatchObject({
      type: "findings.created",
      subject: service,
      correlation_id: correlationId,
      payload: finding,
    });
    // The registration was published too, but nothing else was drift (the probe a registration
    // sets off may have published a health change meanwhile: not drift either).
    expect(
      received
        .filter((r) => r.channel === "orchestrator.events")
        .map((r) => r.message.type)
        .filter((type) => type !== "registry.service.health_changed"),
    ).toEqual(["registry.service.registered", "findings.created"]);

    // The baseline follows the document: polling it again finds nothing new.
    expect(resultOf(await poll(node), service)).toMatchObject({ changed: false });

    // Only an operation added: drift, but nothing a client of the old contract would notice.
    const grown = driftedDocument();
    (grown.paths as JsonRecord)["/orders/{id}"] = {
      get: { responses: { "200": { description: "ok" } } },
    };
    fake.serveDocument(grown);
    expect(resultOf(await poll(node), service)).toMatchObject({
      changed: true,
      diff: {
        added: ["GET /orders/{id}"],
        removed: [],
        changed: [],
        breaking: false,
        added_count: 1,
        removed_count: 0,
        changed_count: 0,
      },
    });
    await vi.waitFor(() => expect(findings()).toHaveLength(2), waitLong);
    expect(findings()[1]?.message).toMatchObject({
      count: 1,
      severity_counts: { high: 0, medium: 0, low: 1 },
      breaking: false,
    });
  });
});

describe("which services a poll covers", () => {
  it("all services with an openapi_url, or only those named; unknown names are errors", async () => {
    const node = await startNode();
    const [a, b] = await Promise.all([startFake(), startFake()]);
    a.serveDocument(itemsDocument());
    b.serveDocument(itemsDocument("B"));
    await register(node, "svc-a", a);
    await register(node, "svc-b", b);
    await register(node, "svc-plain", undefined);

    const all = await poll(node);
    expect(all.results.map((r) => r.service).sort()).toEqual(["svc-a", "svc-b"]);
    for (const result of all.results) expect(result).toMatchObject({ baseline: true, error: "" });

    const named = await poll(node, { names: ["svc-b", "svc-b"] });
    expect(named.results).toEqual([
      { service: "svc-b", changed: false, baseline: false, hash: expect.any(String), error: "" },
    ]);
    expect(a.requests.filter((r) => r.path === "/openapi.json")).toHaveLength(1);

    const mixed = await poll(node, { names: ["ghost", "svc-a", "svc-plain"] });
    expect(mixed.status).toBe(200);
    expect(resultOf(mixed, "ghost")).toEqual({
      service: "ghost",
      changed: false,
      baseline: false,
      hash: "",
      error: "not registered",
    });
    expect(resultOf(mixed, "svc-plain")).toMatchObject({
      changed: false,
      hash: "",
      error: "no openapi_url registered",
    });
    expect(resultOf(mixed, "svc-a")).toMatchObject({ changed: false, error: "" });

    const invalid = await poll(node, { names: ["x".repeat(101)] });
    expect(invalid.status).toBe(400);
    expect(invalid.text).toContain("names[0]: must be at most 100 characters");
  });
});

describe("documents that cannot be polled", () => {
  it("a document that never comes times out, and the poll still answers", async () => {
    const node = await startNode({ OUTBOUND_TIMEOUT_MS: "500" });
    const [hanging, fine] = await Promise.all([startFake(), startFake()]);
    hanging.setOpenApi({ kind: "hang" });
    fine.serveDocument(itemsDocument());
    await register(node, "hanging", hanging);
    await register(node, "fine", fine);

    const answer = await poll(node);
    expect(answer.status, answer.text).toBe(200);
    expect(resultOf(answer, "hanging")).toMatchObject({
      changed: false,
      baseline: false,
      hash: "",
      error: "timed out after 500 ms",
    });
    expect(resultOf(answer, "fine")).toMatchObject({ baseline: true, error: "" });
  });

  it("a 50 MB document is refused by size, the transfer is cut, and the node stays responsive", async () => {
    const node = await startNode({ OPENAPI_MAX_BYTES: "65536" });
    const [chunked, declared] = await Promise.all([startFake(), startFake()]);
    const bytes = 50 * 1024 * 1024;
    chunked.setOpenApi({ kind: "huge", bytes });
    declared.setOpenApi({ kind: "huge", bytes, declareLength: true });
    await register(node, "chunked", chunked);
    await register(node, "declared", declared);

    const polling = poll(node);
    // The node answers other calls while the poll runs.
    const health = await fetch(`${node.url}/health`);
    expect(health.status).toBe(200);
    const answer = await polling;
    expect(answer.status, answer.text).toBe(200);
    for (const service of ["chunked", "declared"]) {
      expect(resultOf(answer, service)).toMatchObject({
        changed: false,
        hash: "",
        error: "response larger than 65536 bytes",
      });
    }
    // The node hung up rather than reading on: neither fake got to send the whole document.
    await vi.waitFor(() => {
      for (const fake of [chunked, declared]) {
        expect(fake.hugeTransfers).toHaveLength(1);
        expect(fake.hugeTransfers[0]).toMatchObject({ closed: true, completed: false });
      }
    }, waitLong);
    expect(chunked.hugeTransfers[0]?.sent).toBeLessThan(bytes);
    const registered = await fetch(`${node.url}/registry/register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "after", base_url: "http://after.internal" }),
    });
    expect(registered.status).toBe(200);
  });

  it("malformed documents, error statuses and unreachable services are errors with safe messages", async () => {
    const node = await startNode();
    const cases: { service: string; serve: (fake: FakeService) => void; error: string }[] = [
      {
        service: "not-json-nor-yaml",
        serve: (f) =>
          f.setOpenApi({ kind: "document", contentType: "text/plain", body: "{{{ :: ]] ::" }),
        error: "OpenAPI document is neither JSON nor YAML",
      },
      {
        service: "broken-json",
        serve: (f) => f.setOpenApi({ kind: "document", body: '{"openapi": "3.0.0", "paths": {' }),
        error: "OpenAPI document is not valid JSON",
      },
      {
        service: "plain-text",
        serve: (f) =>
          f.setOpenApi({ kind: "document", contentType: "text/plain", body: "hello world" }),
        error: "OpenAPI document is not an object",
      },
      {
        service: "no-paths",
        serve: (f) => f.serveDocument({ openapi: "3.0.3", info: { title: "x", version: "1" } }),
        error: "OpenAPI document has no paths object",
      },
      {
        service: "not-openapi",
        serve: (f) => f.serveDocument({ paths: {} }),
        error: "not an OpenAPI 3.x or Swagger 2.0 document",
      },
      {
        service: "not-utf8",
        serve: (f) =>
          f.setOpenApi({ kind: "document", body: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]) }),
        error: "OpenAPI document is not UTF-8 text",
      },
      {
        service: "server-error",
        serve: (f) =>
          f.setOpenApi({ kind: "document", status: 500, body: "Error at /srv/app.js:12" }),
        error: "HTTP 500",
      },
    ];
    for (const { service, serve } of cases) {
      const fake = await startFake();
      serve(fake);
      await register(node, service, fake);
    }
    const gone = await startFakeService();
    await register(node, "unreachable", gone);
    await gone.close();

    const answer = await poll(node);
    expect(answer.status, answer.text).toBe(200);
    for (const { service, error } of [
      ...cases,
      { service: "unreachable", error: "connection refused" },
    ]) {
      const result = resultOf(answer, service);
      expect(result).toMatchObject({ changed: false, baseline: false, hash: "" });
      expect(String(result.error), service).toContain(error);
    }
  });
});

describe("large documents (issue 7, item 2)", () => {
  /** A node in a process of its own, so that its event loop runs nothing but the node. */
  async function startNodeProcess(
    prefix: string,
    env: Record<string, string>,
  ): Promise<OrchestratorProcess> {
    if (redisServer === undefined) throw new Error("redis-server not started");
    const node = await startOrchestratorProcess({
      env: {
        REDIS_URL: redisServer.url,
        REDIS_KEY_PREFIX: prefix,
        HEALTH_CHECK_INTERVAL_MS: "3600000",
        LOG_LEVEL: "warn",
        ...env,
      },
    });
    cleanups.push(() => node.stop());
    return node;
  }

  /**
   * The node's event-loop delay since the previous call, in ms: its /metrics reports
   * `monitorEventLoopDelay` (prom-client's, sampled every 10 ms), and every scrape resets it.
   */
  async function eventLoopDelay(node: { url: string }) {
    const text = await (await fetch(`${node.url}/metrics`)).text();
    const gauge = (name: string) => {
      const match = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
      expect(match, name).not.toBeNull();
      return Number(match?.[1]) * 1000;
    };
    return {
      maxMs: gauge("nodejs_eventloop_lag_max_seconds"),
      p99Ms: gauge("nodejs_eventloop_lag_p99_seconds"),
    };
  }

  /** Polls every service while GET /health is probed, paced; both outcomes. */
  async function pollWhileProbing(node: { url: string }) {
    let polling = true;
    const health: (number | string)[] = [];
    const probing = (async () => {
      while (polling) {
        try {
          const response = await fetch(`${node.url}/health`);
          await response.arrayBuffer();
          health.push(response.status);
        } catch (error) {
          health.push(String(error));
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    const answer = await poll(node).finally(() => {
      polling = false;
    });
    const probesDuringPoll = health.length;
    await probing;
    return { answer, health, probesDuringPoll };
  }

  it("four 5 MB documents of 85,000 operations are polled and diffed without stalling the event loop", async () => {
    const prefix = `drift-e2e:${randomUUID()}:`;
    const node = await startNodeProcess(prefix, {
      // These documents go the whole way (parse, summary, diff, baseline) rather than being
      // refused by the bound on operations; a long fetch budget keeps a loaded machine from
      // turning the fetches into timeouts.
      OPENAPI_MAX_OPERATIONS: "100000",
      OUTBOUND_TIMEOUT_MS: "120000",
    });
    const names = ["bulk-a", "bulk-b", "bulk-c", "bulk-d"];
    const fakes = await Promise.all(names.map(() => startFake()));
    const serveAll = (text: string) => {
      const body = Buffer.from(text);
      for (const fake of fakes) fake.setOpenApi({ kind: "document", body });
    };
    const document = largeOpenApiDocument();
    expect(Buffer.byteLength(document)).toBeGreaterThan(5_000_000);
    expect(Buffer.byteLength(document)).toBeLessThan(5 * 1024 * 1024);
    for (const [index, name] of names.entries()) await register(node, name, fakes[index]);
    // A first poll of a small document starts the analysis worker, outside the measured window:
    // run from TypeScript sources, it loads them through tsx, a second of CPU on a loaded machine.
    fakes[0]?.serveDocument(itemsDocument());
    expect(resultOf(await poll(node, { names: ["bulk-a"] }), "bulk-a").baseline).toBe(true);
    serveAll(document);
    const drifted = Buffer.from(largeOpenApiDocument({ drift: 1 }));

    await eventLoopDelay(node); // starts the window
    const first = await pollWhileProbing(node);
    for (const fake of fakes) fake.setOpenApi({ kind: "document", body: drifted });
    const second = await pollWhileProbing(node);
    const delay = await eventLoopDelay(node);

    expect(resultOf(first.answer, "bulk-a")).toMatchObject({ changed: true, error: "" });
    for (const name of names.slice(1)) {
      expect(resultOf(first.answer, name)).toMatchObject({ baseline: true, error: "" });
    }
    for (const name of names) {
      expect(resultOf(second.answer, name)).toMatchObject({
        changed: true,
        error: "",
        diff: {
          added: ["GET /inventory/v1/items21250"],
          removed: ["GET /inventory/v1/items0"],
          changed: [],
          breaking: true,
        },
      });
    }
    // /health answered all along, and while each poll was still running.
    for (const { health, probesDuringPoll } of [first, second]) {
      expect(probesDuringPoll).toBeGreaterThan(0);
      expect(new Set(health)).toEqual(new Set([200]));
    }
    // Before the parse and the diff left the event loop, each document stalled it for 1.6 s or
    // more: p99 and max were both over a second. Now the loop only moves bytes. The bounds are
    // set to tell that regression apart, not to time the loop: on a 2-core machine shared with
    // other test runs (load 12-15), the p99 of a healthy run was seen at 57-78 ms, and an idle
    // process sees rare scheduling gaps of 100-300 ms on its own. The p99 is held to 250 ms and
    // the maximum to under one document's stall.
    expect(delay.p99Ms).toBeLessThan(250);
    expect(delay.maxMs).toBeLessThan(1000);

    // Each baseline is the compressed summary, about 105 KB here, under the default cap of
    // OPENAPI_MAX_BASELINE_BYTES (1 MiB); the whole summary was stored as JSON before, 6.8 MB.
    const bytes = await baselineBytes(prefix, names);
    for (const stored of bytes) {
      expect(stored).toBeGreaterThan(0);
      expect(stored).toBeLessThanOrEqual(1024 * 1024);
    }
  }, 240_000);
});

describe("bounded baselines (issue 7, item 2)", () => {
  it("a document over a bound is refused and keeps the previous baseline; a removed service's baseline goes", async () => {
    const prefix = `drift-e2e:${randomUUID()}:`;
    const baselinesKey = `${prefix}{registry}:baselines`;
    const node = await startNode({
      REDIS_KEY_PREFIX: prefix,
      OPENAPI_MAX_OPERATIONS: "5000",
      OPENAPI_MAX_BASELINE_BYTES: "4096",
    });
    const redis = await redisClient();
    const [small, many, legacy] = await Promise.all([startFake(), startFake(), startFake()]);
    small.serveDocument(itemsDocument());
    many.setOpenApi({ kind: "document", body: largeOpenApiDocument({ operations: 5001 }) });
    legacy.serveDocument(itemsDocument());
    await register(node, "small", small);
    await register(node, "many", many);
    await register(node, "legacy", legacy);
    // A baseline as an earlier version stored it: whole JSON, which this one no longer reads.
    await redis.hset(
      baselinesKey,
      "legacy",
      '{"hash":"h","operations":{"GET /x":"{}"},"recordedAt":1}',
    );

    const first = await poll(node);
    const recorded = resultOf(first, "small");
    expect(recorded).toMatchObject({ baseline: true, error: "" });
    expect(resultOf(first, "many")).toEqual({
      service: "many",
      changed: false,
      baseline: false,
      hash: "",
      error: "OpenAPI document has 5001 operations, more than 5000",
    });
    expect(await redis.hexists(baselinesKey, "many")).toBe(0);
    expect(resultOf(first, "legacy")).toMatchObject({ baseline: true, error: "" });
    const kept = await redis.hgetBuffer(baselinesKey, "small");
    expect(kept?.length).toBeLessThanOrEqual(4096);

    // 5,000 operations: within the bound on operations, but a summary over 4,096 bytes.
    small.setOpenApi({ kind: "document", body: largeOpenApiDocument({ operations: 5000 }) });
    const grown = resultOf(await poll(node, { names: ["small"] }), "small");
    expect(grown).toMatchObject({ changed: false, baseline: false, hash: "" });
    expect(String(grown.error)).toMatch(/^OpenAPI baseline would take \d+ bytes, more than 4096$/);
    expect(await redis.hgetBuffer(baselinesKey, "small")).toEqual(kept);
    // The previous baseline still stands: its document is no drift.
    small.serveDocument(itemsDocument());
    expect(resultOf(await poll(node, { names: ["small"] }), "small")).toEqual({
      service: "small",
      changed: false,
      baseline: false,
      hash: recorded.hash,
      error: "",
    });

    const deregistered = await fetch(`${node.url}/registry/small`, { method: "DELETE" });
    expect(deregistered.status, await deregistered.text()).toBe(200);
    await vi.waitFor(
      async () => expect(await redis.hexists(baselinesKey, "small")).toBe(0),
      waitLong,
    );
    expect(await redis.hexists(baselinesKey, "legacy")).toBe(1);
  });

  it("app.close() stops the analysis worker", async () => {
    const node = await startNode();
    const fake = await startFake();
    fake.serveDocument(itemsDocument());
    await register(node, "svc", fake);
    const idle = threadCount();
    expect(resultOf(await poll(node), "svc")).toMatchObject({ baseline: true, error: "" });
    const polling = threadCount();
    expect(polling).toBeGreaterThan(idle);

    await node.close();
    // Left running, the worker would idle on for its idle timeout (30 s).
    await vi.waitFor(() => expect(threadCount()).toBeLessThan(polling), { timeout: 10_000 });
  });
});

/** Threads of this process, the analysis worker's among them. */
function threadCount(): number {
  return readdirSync("/proc/self/task").length;
}
