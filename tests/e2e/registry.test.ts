import { randomBytes, randomUUID } from "node:crypto";
import { type JsonObject, toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { status as grpcStatus, type ServiceError } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  ListServicesResponseSchema,
  RegistryService,
  type ServiceEntry,
  ServiceEntrySchema,
  ServiceStatus,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { createGrpcJsClient, type GrpcJsClient } from "../../src/clients/grpc-js-client.js";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import { type FakeService, startFakeService } from "../support/fake-service.js";
import { type LoopbackServer, startLoopbackServer } from "../support/loopback-server.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import {
  createTestRedisClient,
  type RedisServer,
  startRedisServer,
  untilRedisReady,
} from "../support/redis-server.js";

// The registry as its clients meet it: a real node on loopback, REST over HTTP/1.1 and gRPC over
// grpc-js, fake downstream services for health probes, and a throwaway redis-server for the Redis
// store and the events published on it.

type JsonRecord = Record<string, unknown>;

interface Reply {
  readonly status: number;
  readonly body: JsonRecord;
  readonly text: string;
}

const waitLong = { timeout: 15_000, interval: 50 };
const jsonOptions = { useProtoFieldName: true, alwaysEmitImplicit: true } as const;
// No probe during a test unless the test asks for one: statuses stay as registered.
const noProbes = { HEALTH_CHECK_INTERVAL_MS: "3600000" };

async function rest(
  node: RunningOrchestrator,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const response = await fetch(`${node.url}${path}`, {
    method,
    headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  expect(parsed, `${method} ${path} answered ${response.status}: ${text}`).toBeTypeOf("object");
  return { status: response.status, body: parsed as JsonRecord, text };
}

function record(value: unknown): JsonRecord {
  expect(value).toBeTypeOf("object");
  expect(value).not.toBeNull();
  return value as JsonRecord;
}

function records(value: unknown): JsonRecord[] {
  expect(Array.isArray(value)).toBe(true);
  return (value as unknown[]).map(record);
}

function namesOf(list: Reply): string[] {
  return records(list.body.services).map((s) => String(s.name));
}

/** Every key of every object in `value`, recursively (map keys excluded: `metadata` is data). */
function keysOf(value: unknown, into: string[] = []): string[] {
  if (Array.isArray(value)) {
    for (const item of value) keysOf(item, into);
  } else if (typeof value === "object" && value !== null) {
    for (const [key, child] of Object.entries(value)) {
      into.push(key);
      if (key !== "metadata") keysOf(child, into);
    }
  }
  return into;
}

/** A grpc-js failure: its status code and message. */
async function grpcFailure(call: Promise<unknown>): Promise<ServiceError> {
  const error: unknown = await call.then(
    () => undefined,
    (failure: unknown) => failure,
  );
  expect(error, "the call succeeded").toBeInstanceOf(Error);
  return error as ServiceError;
}

/** What the tests open, closed after each test, newest first. */
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startNode(env: Record<string, string> = {}): Promise<RunningOrchestrator> {
  const node = await startOrchestrator({ env });
  cleanups.push(() => node.close());
  return node;
}

async function startFake(): Promise<FakeService> {
  const fake = await startFakeService();
  cleanups.push(() => fake.close());
  return fake;
}

function grpcClientOf(node: RunningOrchestrator): GrpcJsClient<typeof RegistryService> {
  const client = createGrpcJsClient(RegistryService, node.address);
  cleanups.push(() => client.close());
  return client;
}

let redisServer: RedisServer | undefined;
beforeAll(async () => {
  redisServer = await startRedisServer();
});
afterAll(async () => {
  await redisServer?.stop();
});

function redisEnv(): Record<string, string> {
  if (redisServer === undefined) throw new Error("redis-server not started");
  return { REDIS_URL: redisServer.url, REDIS_KEY_PREFIX: `registry-e2e:${randomUUID()}:` };
}

const stores = [
  { store: "memory", env: (): Record<string, string> => ({}) },
  { store: "redis", env: redisEnv },
] as const;

describe.each(stores)("registry on the $store store", ({ env: storeEnv }) => {
  const nodeId = "node-registry-e2e";
  const start = (env: Record<string, string> = {}) =>
    startNode({ NODE_ID: nodeId, ...storeEnv(), ...env });

  it("register answers {status, count, service} in snake_case, with the defaults filled in", async () => {
    const node = await start(noProbes);
    const first = await rest(node, "POST", "/registry/register", {
      name: "billing",
      base_url: "http://billing.internal:8080/api/",
    });
    expect(first.status, first.text).toBe(200);
    expect(Object.keys(first.body).sort()).toEqual(["count", "service", "status"]);
    expect(first.body.status).toBe("registered");
    expect(first.body.count).toBe(1);
    const service = record(first.body.service);
    expect(Object.keys(service).sort()).toEqual(
      [
        "base_url",
        "endpoints",
        "health_url",
        "hlc",
        "metadata",
        "name",
        "openapi_url",
        "origin_node_id",
        "registered_at",
        "last_heartbeat",
        "revision",
        "status",
        "tags",
        "ttl_seconds",
        "updated_at",
        "version",
      ].sort(),
    );
    expect(service).toMatchObject({
      name: "billing",
      base_url: "http://billing.internal:8080/api/",
      openapi_url: "",
      health_url: "http://billing.internal:8080/api/health",
      endpoints: [],
      metadata: {},
      tags: [],
      version: "",
      ttl_seconds: 0,
      status: "SERVICE_STATUS_UNKNOWN",
      revision: "1",
      origin_node_id: nodeId,
    });
    expect(service.hlc).toMatch(/^[1-9]\d*$/);
    const registeredAt = Date.parse(String(service.registered_at));
    expect(Number.isNaN(registeredAt)).toBe(false);
    expect(service.last_heartbeat).toBe(service.registered_at);
    expect(service.updated_at).toBe(service.registered_at);

    const second = await rest(node, "POST", "/registry/register", {
      name: "ledger",
      base_url: "https://ledger.internal",
      openapi_url: "https://ledger.internal/openapi.json",
      health_url: "https://ledger.internal/healthz",
      endpoints: ["/entries", "/accounts"],
      metadata: { team: "finance", tier: "1" },
      tags: ["finance", "core", "finance"],
      version: "2.3.1",
      ttl_seconds: 30,
    });
    expect(second.status, second.text).toBe(200);
    expect(second.body.count).toBe(2);
    const ledger = record(second.body.service);
    expect(ledger).toMatchObject({
      name: "ledger",
      openapi_url: "https://ledger.internal/openapi.json",
      health_url: "https://ledger.internal/healthz",
      endpoints: ["/entries", "/accounts"],
      metadata: { team: "finance", tier: "1" },
      tags: ["finance", "core"],
      version: "2.3.1",
      ttl_seconds: 30,
      revision: "2",
    });
    // The lease runs from the registration: exactly ttl_seconds after it.
    expect(Date.parse(String(ledger.lease_expires_at))).toBe(
      Date.parse(String(ledger.updated_at)) + 30_000,
    );
    for (const key of keysOf([first.body, second.body])) expect(key).toMatch(/^[a-z][a-z0-9_]*$/);
  });

  it("an upsert keeps registered_at and the learned status, bumps the revision, replaces the declaration", async () => {
    const node = await start({ HEALTH_CHECK_INTERVAL_MS: "200" });
    const fake = await startFake();
    const registered = await rest(node, "POST", "/registry/register", {
      name: "catalog",
      base_url: fake.url,
      tags: ["a", "b"],
      metadata: { owner: "shop" },
      version: "1.0.0",
    });
    expect(registered.status, registered.text).toBe(200);
    const before = record(registered.body.service);
    await vi.waitFor(async () => {
      const entry = await rest(node, "GET", "/registry/catalog");
      expect(entry.body.status).toBe("SERVICE_STATUS_HEALTHY");
    }, waitLong);
    const healthy = (await rest(node, "GET", "/registry/catalog")).body;

    const again = await rest(node, "POST", "/registry/register", {
      name: "catalog",
      base_url: fake.url,
      tags: ["c"],
      version: "1.1.0",
      ttl_seconds: 60,
    });
    expect(again.status, again.text).toBe(200);
    expect(again.body.count).toBe(1);
    const after = record(again.body.service);
    expect(after).toMatchObject({
      status: "SERVICE_STATUS_HEALTHY",
      registered_at: before.registered_at,
      tags: ["c"],
      metadata: {},
      version: "1.1.0",
      ttl_seconds: 60,
    });
    expect(BigInt(String(after.revision))).toBeGreaterThan(BigInt(String(healthy.revision)));
    expect(Date.parse(String(after.lease_expires_at))).toBe(
      Date.parse(String(after.updated_at)) + 60_000,
    );
    expect((await rest(node, "GET", "/registry/catalog")).body).toEqual(after);
  });

  it("GET /registry/{name} answers the entry itself, or 404 not_found", async () => {
    const node = await start(noProbes);
    const registered = await rest(node, "POST", "/registry/register", {
      name: "search.v2",
      base_url: "http://search.internal",
    });
    const entry = await rest(node, "GET", "/registry/search.v2");
    expect(entry.status, entry.text).toBe(200);
    expect(entry.body).toEqual(registered.body.service);

    const missing = await rest(node, "GET", "/registry/ghost");
    expect(missing.status).toBe(404);
    expect(missing.body).toEqual({
      code: "not_found",
      message: "service ghost is not registered",
      details: [],
    });
  });

  it("lists with tag, status and name-prefix filters, a page at a time", async () => {
    const node = await start({ HEALTH_CHECK_INTERVAL_MS: "200" });
    const [up, down] = await Promise.all([startFake(), startFake()]);
    down.setHealth("unhealthy");
    const fleet = [
      { name: "alpha-1", base_url: up.url, tags: ["blue"] },
      { name: "alpha-2", base_url: down.url, tags: ["blue", "green"] },
      { name: "alpha-3", base_url: up.url, tags: ["green"] },
      { name: "beta-1", base_url: down.url, tags: ["blue"] },
      { name: "gamma", base_url: up.url },
    ];
    // Registered out of order: listings are sorted by name whatever the order of writes.
    for (const service of [...fleet].reverse()) {
      expect((await rest(node, "POST", "/registry/register", service)).status).toBe(200);
    }
    const statusOf = (name: string) =>
      fleet.find((s) => s.name === name)?.base_url === up.url
        ? "SERVICE_STATUS_HEALTHY"
        : "SERVICE_STATUS_UNHEALTHY";
    await vi.waitFor(async () => {
      const all = records((await rest(node, "GET", "/registry")).body.services);
      expect(all.map((s) => s.status)).toEqual(all.map((s) => statusOf(String(s.name))));
    }, waitLong);

    const all = await rest(node, "GET", "/registry");
    expect(all.status).toBe(200);
    expect(namesOf(all)).toEqual(["alpha-1", "alpha-2", "alpha-3", "beta-1", "gamma"]);
    expect(all.body.count).toBe(5);
    expect(all.body.total_size).toBe(5);
    expect(all.body.next_page_token).toBe("");
    const entryRevisions = records(all.body.services).map((s) => BigInt(String(s.revision)));
    for (const revision of entryRevisions) {
      expect(BigInt(String(all.body.revision))).toBeGreaterThanOrEqual(revision);
    }

    const expectNames = async (query: string, names: string[]) => {
      const page = await rest(node, "GET", `/registry?${query}`);
      expect(page.status, page.text).toBe(200);
      expect(namesOf(page), query).toEqual(names);
      expect(page.body.count).toBe(names.length);
      expect(page.body.total_size).toBe(names.length);
      expect(page.body.next_page_token).toBe("");
    };
    await expectNames("tag=blue", ["alpha-1", "alpha-2", "beta-1"]);
    await expectNames("status=SERVICE_STATUS_HEALTHY", ["alpha-1", "alpha-3", "gamma"]);
    await expectNames("status=SERVICE_STATUS_UNHEALTHY", ["alpha-2", "beta-1"]);
    await expectNames("status=SERVICE_STATUS_DOWN", []);
    await expectNames("name_prefix=alpha-", ["alpha-1", "alpha-2", "alpha-3"]);
    await expectNames("tag=green&status=SERVICE_STATUS_HEALTHY", ["alpha-3"]);
    await expectNames("tag=purple", []);

    const pages: { names: string[]; count: unknown; total: unknown; token: string }[] = [];
    let token = "";
    do {
      const page = await rest(
        node,
        "GET",
        `/registry?page_size=2${token ? `&page_token=${encodeURIComponent(token)}` : ""}`,
      );
      expect(page.status, page.text).toBe(200);
      token = String(page.body.next_page_token);
      pages.push({
        names: namesOf(page),
        count: page.body.count,
        total: page.body.total_size,
        token,
      });
    } while (token !== "" && pages.length < 10);
    expect(pages.map((p) => p.names)).toEqual([
      ["alpha-1", "alpha-2"],
      ["alpha-3", "beta-1"],
      ["gamma"],
    ]);
    expect(pages.map((p) => p.count)).toEqual([2, 2, 1]);
    // count is the page's; total_size every page's, on each page.
    expect(pages.map((p) => p.total)).toEqual([5, 5, 5]);

    const bluePage = await rest(node, "GET", "/registry?tag=blue&page_size=2");
    expect(namesOf(bluePage)).toEqual(["alpha-1", "alpha-2"]);
    expect(bluePage.body).toMatchObject({ count: 2, total_size: 3 });
    const blueRest = await rest(
      node,
      "GET",
      `/registry?tag=blue&page_size=2&page_token=${encodeURIComponent(String(bluePage.body.next_page_token))}`,
    );
    expect(namesOf(blueRest)).toEqual(["beta-1"]);
    expect(blueRest.body).toMatchObject({ count: 1, total_size: 3, next_page_token: "" });

    // The listing's revision is the store's: the next write takes the one after it (or later).
    const listed = BigInt(String((await rest(node, "GET", "/registry")).body.revision));
    const written = await rest(node, "POST", "/registry/register", {
      name: "delta",
      base_url: up.url,
    });
    expect(BigInt(String(record(written.body.service).revision))).toBeGreaterThan(listed);
  });

  it("DELETE answers deregistered, then the entry is gone; a second DELETE is 404", async () => {
    const node = await start(noProbes);
    await rest(node, "POST", "/registry/register", { name: "keep", base_url: "http://keep" });
    const registered = await rest(node, "POST", "/registry/register", {
      name: "drop",
      base_url: "http://drop",
    });
    const removed = await rest(node, "DELETE", "/registry/drop");
    expect(removed.status, removed.text).toBe(200);
    expect(removed.body).toMatchObject({ status: "deregistered", name: "drop" });
    expect(BigInt(String(removed.body.revision))).toBeGreaterThan(
      BigInt(String(record(registered.body.service).revision)),
    );
    expect((await rest(node, "GET", "/registry/drop")).status).toBe(404);
    const again = await rest(node, "DELETE", "/registry/drop");
    expect(again.status).toBe(404);
    expect(again.body.code).toBe("not_found");
    const list = await rest(node, "GET", "/registry");
    expect(namesOf(list)).toEqual(["keep"]);
    expect(list.body.revision).toBe(removed.body.revision);

    // The name can be registered again, as a new entry.
    const back = await rest(node, "POST", "/registry/register", {
      name: "drop",
      base_url: "http://drop",
    });
    expect(back.status).toBe(200);
    expect(back.body.count).toBe(2);
  });

  it("heartbeat renews the lease and answers {status: ok, lease_expires_at}; unknown is 404", async () => {
    const node = await start(noProbes);
    const registered = await rest(node, "POST", "/registry/register", {
      name: "pulse",
      base_url: "http://pulse",
      ttl_seconds: 120,
    });
    const lease = Date.parse(String(record(registered.body.service).lease_expires_at));
    const beat = await rest(node, "POST", "/registry/pulse/heartbeat", {});
    expect(beat.status, beat.text).toBe(200);
    expect(Object.keys(beat.body).sort()).toEqual(["lease_expires_at", "name", "status"]);
    expect(beat.body).toMatchObject({ status: "ok", name: "pulse" });
    const renewed = Date.parse(String(beat.body.lease_expires_at));
    expect(renewed).toBeGreaterThanOrEqual(lease);
    const entry = await rest(node, "GET", "/registry/pulse");
    expect(entry.body.lease_expires_at).toBe(beat.body.lease_expires_at);
    expect(Date.parse(String(entry.body.last_heartbeat))).toBe(renewed - 120_000);

    // No lease, nothing to renew: the heartbeat still succeeds, without a lease time.
    await rest(node, "POST", "/registry/register", { name: "forever", base_url: "http://f" });
    const leaseless = await rest(node, "POST", "/registry/forever/heartbeat", {});
    expect(leaseless.status).toBe(200);
    expect(leaseless.body).toEqual({ status: "ok", name: "forever" });

    const unknown = await rest(node, "POST", "/registry/ghost/heartbeat", {});
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe("not_found");
    expect(unknown.body.message).toContain("ghost");
  });

  it("gRPC (grpc-js) and REST agree on every operation", async () => {
    const node = await start(noProbes);
    const grpc = grpcClientOf(node);
    const registered = await grpc.registerService({
      name: "orders",
      baseUrl: "http://orders.internal/",
      tags: ["shop"],
      metadata: { owner: "team-a" },
      ttlSeconds: 45,
    });
    expect(registered.status).toBe("registered");
    expect(registered.count).toBe(1);
    expect(registered.service?.status).toBe(ServiceStatus.UNKNOWN);
    expect(registered.service?.healthUrl).toBe("http://orders.internal/health");
    expect(registered.service?.revision).toBe(1n);
    const viaRest = await rest(node, "POST", "/registry/register", {
      name: "payments",
      base_url: "http://payments.internal",
      tags: ["shop"],
    });

    const entryJson = (entry: ServiceEntry | undefined) =>
      entry === undefined ? undefined : toJson(ServiceEntrySchema, entry, jsonOptions);
    const orders = await grpc.getService({ name: "orders" });
    expect(entryJson(orders.service)).toEqual(entryJson(registered.service));
    expect(entryJson(orders.service)).toEqual((await rest(node, "GET", "/registry/orders")).body);
    const payments = await grpc.getService({ name: "payments" });
    expect(entryJson(payments.service)).toEqual(viaRest.body.service);

    const grpcList = await grpc.listServices({ tag: "shop", pageSize: 1 });
    const restList = await rest(node, "GET", "/registry?tag=shop&page_size=1");
    expect(toJson(ListServicesResponseSchema, grpcList, jsonOptions)).toEqual(restList.body);
    expect(grpcList.services.map((s) => s.name)).toEqual(["orders"]);
    expect([grpcList.count, grpcList.totalSize]).toEqual([1, 2]);
    expect(restList.body).toMatchObject({ count: 1, total_size: 2 });
    const grpcNext = await grpc.listServices({
      tag: "shop",
      pageSize: 1,
      pageToken: grpcList.nextPageToken,
    });
    expect(grpcNext.services.map((s) => s.name)).toEqual(["payments"]);
    expect([grpcNext.count, grpcNext.totalSize, grpcNext.nextPageToken]).toEqual([1, 2, ""]);
    const grpcNone = await grpc.listServices({ tag: "absent" });
    expect([grpcNone.count, grpcNone.totalSize]).toEqual([0, 0]);

    const beat = await grpc.heartbeat({ name: "orders" });
    expect(beat.status).toBe("ok");
    const afterBeat = await rest(node, "GET", "/registry/orders");
    expect(beat.leaseExpiresAt).toBeDefined();
    expect(afterBeat.body.lease_expires_at).toBe(
      beat.leaseExpiresAt && timestampDate(beat.leaseExpiresAt).toISOString(),
    );

    const removed = await grpc.deregisterService({ name: "orders" });
    expect(removed.status).toBe("deregistered");
    expect(removed.name).toBe("orders");
    expect((await rest(node, "GET", "/registry")).body.revision).toBe(String(removed.revision));
    expect((await rest(node, "GET", "/registry/orders")).status).toBe(404);

    for (const failing of [
      grpc.getService({ name: "orders" }),
      grpc.deregisterService({ name: "orders" }),
      grpc.heartbeat({ name: "orders" }),
    ]) {
      const error = await grpcFailure(failing);
      expect(error.code).toBe(grpcStatus.NOT_FOUND);
      expect(error.details).toBe("service orders is not registered");
    }
    const invalid = await grpcFailure(
      grpc.registerService({ name: "Orders", baseUrl: "ftp://orders.internal" }),
    );
    expect(invalid.code).toBe(grpcStatus.INVALID_ARGUMENT);
    expect(invalid.details).toContain("name: must match");
    expect(invalid.details).toContain("base_url: must be an absolute http or https URL");
    expect(namesOf(await rest(node, "GET", "/registry"))).toEqual(["payments"]);
  });
});

describe("bad input: refused with a message naming the field, and nothing stored changes", () => {
  let node: RunningOrchestrator;
  let grpc: GrpcJsClient<typeof RegistryService>;
  beforeAll(async () => {
    node = await startOrchestrator({ env: noProbes });
    grpc = createGrpcJsClient(RegistryService, node.address);
    const seeded = await rest(node, "POST", "/registry/register", {
      name: "billing",
      base_url: "http://billing.internal",
      ttl_seconds: 300,
    });
    expect(seeded.status).toBe(200);
  });
  afterAll(async () => {
    grpc.close();
    await node.close();
  });

  const register = (body: JsonObject) => ({ method: "POST", path: "/registry/register", body });
  const valid = { name: "valid-name", base_url: "http://valid.internal" };
  const many = (count: number, of: (i: number) => string) =>
    Array.from({ length: count }, (_, i) => of(i));

  const cases: {
    what: string;
    method: string;
    path: string;
    body?: JsonObject;
    status: number;
    message: string;
    /** Never in the answer (a secret in the request). */
    hidden?: string;
  }[] = [
    {
      what: "uppercase name",
      ...register({ ...valid, name: "Billing" }),
      status: 400,
      message: "name: must match",
    },
    {
      what: "name with spaces",
      ...register({ ...valid, name: "bill ing" }),
      status: 400,
      message: "name: must match",
    },
    {
      what: "101-character name",
      ...register({ ...valid, name: "a".repeat(101) }),
      status: 400,
      message: "name: must be at most 100 characters",
    },
    {
      what: "name with a leading dash",
      ...register({ ...valid, name: "-billing" }),
      status: 400,
      message: "name: must match",
    },
    {
      what: "missing name",
      ...register({ base_url: valid.base_url }),
      status: 400,
      message: "name: is required",
    },
    {
      what: "ftp base_url",
      ...register({ ...valid, base_url: "ftp://files.internal" }),
      status: 400,
      message: "base_url: must be an absolute http or https URL",
    },
    {
      what: "base_url without a scheme",
      ...register({ ...valid, base_url: "billing.internal/api" }),
      status: 400,
      message: "base_url: must be an absolute http or https URL",
    },
    {
      what: "credentials in base_url",
      ...register({ ...valid, base_url: "http://admin:hunter2secret@billing.internal" }),
      status: 400,
      message: "base_url: must be an absolute http or https URL",
      hidden: "hunter2secret",
    },
    {
      what: "credentials in openapi_url",
      ...register({
        ...valid,
        openapi_url: "https://user:pw-s3cr3t@billing.internal/openapi.json",
      }),
      status: 400,
      message: "openapi_url: must be an absolute http or https URL",
      hidden: "pw-s3cr3t",
    },
    {
      what: "ftp health_url",
      ...register({ ...valid, health_url: "ftp://billing.internal/health" }),
      status: 400,
      message: "health_url: must be an absolute http or https URL",
    },
    {
      what: "65 metadata entries",
      ...register({
        ...valid,
        metadata: Object.fromEntries(many(65, (i) => `key${i}`).map((k) => [k, "v"])),
      }),
      status: 400,
      message: "metadata: must have at most 64 items",
    },
    {
      what: "a 513-character metadata value",
      ...register({ ...valid, metadata: { owner: "x".repeat(513) } }),
      status: 400,
      message: 'metadata["owner"]: must be at most 512 characters',
    },
    {
      what: "33 tags",
      ...register({ ...valid, tags: many(33, (i) => `t${i}`) }),
      status: 400,
      message: "tags: must have at most 32 items",
    },
    {
      what: "a tag with a space",
      ...register({ ...valid, tags: ["ok", "not ok"] }),
      status: 400,
      message: "tags[1]: must match",
    },
    {
      what: "ttl over 86400",
      ...register({ ...valid, ttl_seconds: 86401 }),
      status: 400,
      message: "ttl_seconds: must be ≤ 86400",
    },
    {
      what: "a field that does not exist",
      ...register({ ...valid, colour: "blue" }),
      status: 400,
      message: "colour",
    },
    {
      what: "heartbeat of an unknown service",
      method: "POST",
      path: "/registry/ghost/heartbeat",
      body: {},
      status: 404,
      message: "service ghost is not registered",
    },
    {
      what: "get of an unknown service",
      method: "GET",
      path: "/registry/ghost",
      status: 404,
      message: "service ghost is not registered",
    },
    {
      what: "delete of an unknown service",
      method: "DELETE",
      path: "/registry/ghost",
      status: 404,
      message: "service ghost is not registered",
    },
    {
      what: "page_size 5000",
      method: "GET",
      path: "/registry?page_size=5000",
      status: 400,
      message: "page_size: must be ≤ 1000",
    },
    {
      what: "negative page_size",
      method: "GET",
      path: "/registry?page_size=-1",
      status: 400,
      message: "page_size: must be ≥ 0",
    },
    {
      what: "a garbage page_token",
      method: "GET",
      path: "/registry?page_token=%25%25garbage%25%25",
      status: 400,
      message: "page_token",
    },
    {
      what: "an unknown status filter",
      method: "GET",
      path: "/registry?status=SERVICE_STATUS_SLEEPY",
      status: 400,
      // Names the enum and the value, not the query parameter: see the report.
      message: 'status: "SERVICE_STATUS_SLEEPY" is not a value of orchestrator.v1.ServiceStatus',
    },
  ];

  it.each(cases)("$what → $status", async ({ method, path, body, status, message, hidden }) => {
    const before = await rest(node, "GET", "/registry");
    const reply = await rest(node, method, path, body);
    expect(reply.status, reply.text).toBe(status);
    expect(reply.body.code).toBe(status === 404 ? "not_found" : "invalid_argument");
    expect(String(reply.body.message)).toContain(message);
    expect(reply.text).not.toMatch(/\n\s+at /);
    if (hidden !== undefined) expect(reply.text).not.toContain(hidden);
    expect(await rest(node, "GET", "/registry")).toEqual(before);
  });

  // A status number the enum does not define is refused, not read as UNKNOWN.
  it("a status filter with an undefined enum number is refused, or matches nothing", async () => {
    const reply = await rest(node, "GET", "/registry?status=7");
    if (reply.status === 200) expect(namesOf(reply)).toEqual([]);
    else expect(reply.status).toBe(400);
  });

  it("the same requests over gRPC fail with INVALID_ARGUMENT naming the field", async () => {
    const before = await rest(node, "GET", "/registry");
    const checks: [Promise<unknown>, string][] = [
      [grpc.registerService({ name: "Billing", baseUrl: "http://b" }), "name: must match"],
      [
        grpc.registerService({ name: "a".repeat(101), baseUrl: "http://b" }),
        "name: must be at most 100",
      ],
      [grpc.registerService({ name: "b", baseUrl: "http://u:p@b" }), "base_url:"],
      [grpc.registerService({ name: "b", baseUrl: "http://b", ttlSeconds: 86401 }), "ttl_seconds:"],
      [
        grpc.registerService({
          name: "b",
          baseUrl: "http://b",
          tags: many(33, (i) => `t${i}`),
        }),
        "tags:",
      ],
      [grpc.listServices({ pageSize: 5000 }), "page_size:"],
      [grpc.listServices({ pageToken: "%%garbage%%" }), "page_token"],
    ];
    for (const [call, message] of checks) {
      const error = await grpcFailure(call);
      expect(error.code).toBe(grpcStatus.INVALID_ARGUMENT);
      expect(error.details).toContain(message);
    }
    expect(await rest(node, "GET", "/registry")).toEqual(before);
  });
});

describe("GET /health/system follows the probes", () => {
  it("reports every registered service, healthy, then unhealthy with the probe's error", async () => {
    const node = await startNode({ HEALTH_CHECK_INTERVAL_MS: "200" });
    const [first, second] = await Promise.all([startFake(), startFake()]);
    const empty = await rest(node, "GET", "/health/system");
    expect(empty.body).toMatchObject({ total_count: 0, healthy_count: 0, services: {} });

    for (const [name, fake] of [
      ["first", first],
      ["second", second],
    ] as const) {
      const reply = await rest(node, "POST", "/registry/register", { name, base_url: fake.url });
      expect(reply.status).toBe(200);
    }
    const systemHealth = async () => {
      const reply = await rest(node, "GET", "/health/system");
      expect(reply.status, reply.text).toBe(200);
      return reply.body;
    };
    const serviceOf = (body: JsonRecord, name: string) => record(record(body.services)[name]);

    await vi.waitFor(async () => {
      const body = await systemHealth();
      expect(body).toMatchObject({
        overall_status: "healthy",
        overall_healthy: true,
        healthy_count: 2,
        total_count: 2,
      });
    }, waitLong);
    const healthy = await systemHealth();
    expect(serviceOf(healthy, "first")).toMatchObject({ status: "healthy", error: "" });
    expect(serviceOf(healthy, "first").latency_ms).toBeTypeOf("number");
    expect(Number.isNaN(Date.parse(String(serviceOf(healthy, "first").checked_at)))).toBe(false);

    second.setHealth("unhealthy");
    await vi.waitFor(async () => {
      const body = await systemHealth();
      expect(serviceOf(body, "second")).toMatchObject({ status: "unhealthy", error: "HTTP 503" });
      expect(body).toMatchObject({
        overall_status: "degraded",
        overall_healthy: false,
        healthy_count: 1,
        total_count: 2,
      });
    }, waitLong);
    expect((await rest(node, "GET", "/registry/second")).body.status).toBe(
      "SERVICE_STATUS_UNHEALTHY",
    );

    first.setHealth("unhealthy");
    await vi.waitFor(async () => {
      const body = await systemHealth();
      expect(body).toMatchObject({ overall_status: "unhealthy", healthy_count: 0 });
    }, waitLong);

    second.setHealth("healthy");
    await vi.waitFor(async () => {
      const body = await systemHealth();
      expect(serviceOf(body, "second")).toMatchObject({ status: "healthy", error: "" });
      expect(body).toMatchObject({ overall_status: "degraded", healthy_count: 1 });
    }, waitLong);
  });

  it("a probe that outlasts HEALTH_CHECK_TIMEOUT_MS counts as a failure", async () => {
    const node = await startNode({
      HEALTH_CHECK_INTERVAL_MS: "200",
      HEALTH_CHECK_TIMEOUT_MS: "300",
      HEALTH_CHECK_FAILURE_THRESHOLD: "1",
    });
    const fake = await startFake();
    await rest(node, "POST", "/registry/register", { name: "sluggish", base_url: fake.url });
    await vi.waitFor(async () => {
      expect((await rest(node, "GET", "/registry/sluggish")).body.status).toBe(
        "SERVICE_STATUS_HEALTHY",
      );
    }, waitLong);
    fake.setHealth("slow");
    await vi.waitFor(async () => {
      const body = (await rest(node, "GET", "/health/system")).body;
      expect(record(record(body.services).sluggish)).toMatchObject({
        status: "unhealthy",
        error: "timed out after 300 ms",
      });
    }, waitLong);
    const body = await rest(node, "GET", "/health/system");
    expect(body.text).not.toContain("127.0.0.1");
  });
});

describe("a new registration is probed at once, not at the next round", () => {
  // The longest interval there is: the round at start finds nothing, the next is an hour away, so
  // whatever status an entry gets here comes from the probe its registration set off.
  const hourly = { HEALTH_CHECK_INTERVAL_MS: "3600000" };

  async function healthEndpoint(status: number): Promise<LoopbackServer> {
    const server = await startLoopbackServer((_request, response) => {
      response.statusCode = status;
      response.end(status === 200 ? "ok" : "failing");
    });
    cleanups.push(() => server.close());
    return server;
  }

  const statusOf = async (node: RunningOrchestrator, name: string) =>
    (await rest(node, "GET", `/registry/${name}`)).body.status;

  it("a health URL answering 200 makes the entry HEALTHY", async () => {
    const node = await startNode(hourly);
    const up = await healthEndpoint(200);
    const reply = await rest(node, "POST", "/registry/register", {
      name: "fresh",
      base_url: "http://127.0.0.1:9",
      health_url: `${up.url}/healthz`,
    });
    expect(reply.status, reply.text).toBe(200);
    expect(record(reply.body.service).status).toBe("SERVICE_STATUS_UNKNOWN");
    await vi.waitFor(
      async () => expect(await statusOf(node, "fresh")).toBe("SERVICE_STATUS_HEALTHY"),
      waitLong,
    );
    expect(up.requests.map((request) => request.url)).toEqual(["/healthz"]);
  });

  it("one answering 500 is a failure at once: UNHEALTHY at a threshold of 1, else still UNKNOWN", async () => {
    const failing = await healthEndpoint(500);
    const strict = await startNode({ ...hourly, HEALTH_CHECK_FAILURE_THRESHOLD: "1" });
    await rest(strict, "POST", "/registry/register", { name: "broken", base_url: failing.url });
    await vi.waitFor(
      async () => expect(await statusOf(strict, "broken")).toBe("SERVICE_STATUS_UNHEALTHY"),
      waitLong,
    );

    // The default threshold (3 failures in a row): one probe is not enough to say UNHEALTHY, but
    // it has happened, and /health/system shows its error.
    const lenient = await startNode(hourly);
    await rest(lenient, "POST", "/registry/register", { name: "broken", base_url: failing.url });
    await vi.waitFor(async () => {
      const body = (await rest(lenient, "GET", "/health/system")).body;
      expect(record(record(body.services).broken)).toMatchObject({
        status: "unknown",
        error: "HTTP 500",
      });
    }, waitLong);
    expect(await statusOf(lenient, "broken")).toBe("SERVICE_STATUS_UNKNOWN");
  });

  it("a re-registration with a new health URL is probed at once; the same one is not", async () => {
    const node = await startNode({ ...hourly, HEALTH_CHECK_FAILURE_THRESHOLD: "1" });
    const [up, failing] = await Promise.all([healthEndpoint(200), healthEndpoint(500)]);
    const service = { name: "moving", base_url: "http://127.0.0.1:9" };
    await rest(node, "POST", "/registry/register", { ...service, health_url: failing.url });
    await vi.waitFor(
      async () => expect(await statusOf(node, "moving")).toBe("SERVICE_STATUS_UNHEALTHY"),
      waitLong,
    );
    // The same declaration again (a periodic re-registration): no probe.
    await rest(node, "POST", "/registry/register", { ...service, health_url: failing.url });
    await rest(node, "POST", "/registry/register", { ...service, health_url: up.url });
    await vi.waitFor(
      async () => expect(await statusOf(node, "moving")).toBe("SERVICE_STATUS_HEALTHY"),
      waitLong,
    );
    expect(failing.requests).toHaveLength(1);
    expect(up.requests).toHaveLength(1);
  });
});

describe("events on Redis (orchestrator.events)", () => {
  it("registrations carry the caller's correlation id and trace id; health changes are published", async () => {
    if (redisServer === undefined) throw new Error("redis-server not started");
    const subscriber = createTestRedisClient(redisServer.url);
    cleanups.push(() => closeRedisClient(subscriber));
    await untilRedisReady(subscriber);
    const received: JsonRecord[] = [];
    subscriber.on("message", (channel: string, message: string) => {
      if (channel === "orchestrator.events") received.push(record(JSON.parse(message)));
    });
    await subscriber.subscribe("orchestrator.events");

    const nodeId = `node-events-${randomBytes(3).toString("hex")}`;
    const node = await startNode({
      ...redisEnv(),
      NODE_ID: nodeId,
      HEALTH_CHECK_INTERVAL_MS: "200",
    });
    const fake = await startFake();
    // Only this node's events: the channel is shared by everything on this redis-server.
    const eventsOf = (type: string, subject: string) =>
      received.filter((e) => e.source === nodeId && e.type === type && e.subject === subject);
    const traceId = randomBytes(16).toString("hex");
    const correlationId = `corr-${randomUUID()}`;
    const registered = await rest(
      node,
      "POST",
      "/registry/register",
      { name: "inventory", base_url: fake.url, version: "3.1.0" },
      {
        "x-correlation-id": correlationId,
        traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01`,
      },
    );
    expect(registered.status, registered.text).toBe(200);

    await vi.waitFor(
      () => expect(eventsOf("registry.service.registered", "inventory")).toHaveLength(1),
      waitLong,
    );
    const [registration] = eventsOf("registry.service.registered", "inventory");
    expect(Object.keys(registration ?? {}).sort()).toEqual([
      "correlation_id",
      "id",
      "payload",
      "source",
      "subject",
      "timestamp",
      "trace_id",
      "type",
    ]);
    expect(registration).toMatchObject({
      type: "registry.service.registered",
      subject: "inventory",
      correlation_id: correlationId,
      trace_id: traceId,
      source: nodeId,
      payload: {
        service: "inventory",
        created: true,
        revision: 1,
        base_url: fake.url,
        version: "3.1.0",
      },
    });
    // The event store's id: "<unix ms>-<sequence>", as Redis Streams numbers entries.
    expect(registration?.id).toMatch(/^\d+-\d+$/);
    expect(Number.isNaN(Date.parse(String(registration?.timestamp)))).toBe(false);

    await vi.waitFor(() => {
      const changes = eventsOf("registry.service.health_changed", "inventory");
      expect(changes.map((e) => record(e.payload).to)).toContain("HEALTHY");
    }, waitLong);
    fake.setHealth("unhealthy");
    await vi.waitFor(() => {
      const changes = eventsOf("registry.service.health_changed", "inventory");
      expect(changes.map((e) => record(e.payload).to)).toContain("UNHEALTHY");
    }, waitLong);
    const changes = eventsOf("registry.service.health_changed", "inventory");
    expect(changes.map((e) => record(e.payload))).toEqual([
      expect.objectContaining({ service: "inventory", from: "UNKNOWN", to: "HEALTHY", error: "" }),
      expect.objectContaining({
        service: "inventory",
        from: "HEALTHY",
        to: "UNHEALTHY",
        error: "HTTP 503",
      }),
    ]);
    for (const change of changes) {
      expect(Object.keys(change).sort()).toEqual(Object.keys(registration ?? {}).sort());
      expect(change.source).toBe(nodeId);
    }

    // Over gRPC, the call's metadata is carried the same way.
    const grpc = grpcClientOf(node);
    const grpcCorrelation = `corr-${randomUUID()}`;
    await grpc.deregisterService(
      { name: "inventory" },
      { metadata: { "x-correlation-id": grpcCorrelation } },
    );
    await vi.waitFor(() => {
      const [removal] = eventsOf("registry.service.deregistered", "inventory");
      expect(removal).toMatchObject({ correlation_id: grpcCorrelation, source: nodeId });
      expect(removal?.trace_id).toMatch(/^[0-9a-f]{32}$/);
    }, waitLong);
  });
});
