import http from "node:http";
import net from "node:net";
import { gzipSync } from "node:zlib";
import {
  create,
  type DescMethod,
  type DescMethodUnary,
  getOption,
  hasOption,
} from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { http as httpRule } from "../../gen/google/api/annotations_pb.js";
import { RegistryService } from "../../gen/orchestrator/v1/registry_pb.js";
import { apiServices } from "../../src/services/api-services.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";

// The REST gateway as a curl user meets it: real node, real HTTP/1.1 over loopback, bodies and
// headers as sent on the wire.

interface Reply {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  /** The body parsed as JSON; undefined when it is not JSON. */
  readonly json: unknown;
}

type JsonRecord = Record<string, unknown>;

interface Call {
  readonly method: string;
  readonly path: string;
  /** Sent as is; with `application/json` unless `contentType` says otherwise. */
  readonly body?: string;
  readonly contentType?: string;
  readonly headers?: Record<string, string>;
}

/** Every body this file received, checked once more at the end for stack traces. */
const everyBody: string[] = [];

async function call(base: string, request: Call): Promise<Reply> {
  const headers: Record<string, string> = { ...request.headers };
  if (request.body !== undefined)
    headers["content-type"] = request.contentType ?? "application/json";
  const response = await fetch(`${base}${request.path}`, {
    method: request.method,
    headers,
    ...(request.body === undefined ? {} : { body: request.body }),
  });
  const text = await response.text();
  everyBody.push(text);
  return { status: response.status, headers: response.headers, text, json: parse(text) };
}

/** Sends `request` as raw bytes and reads until the server closes the connection. */
function rawExchange(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write(request));
    const chunks: Buffer[] = [];
    socket.on("data", (chunk) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => resolve(Buffer.concat(chunks).toString("utf8")));
  });
}

/** The text as JSON; undefined when it is not JSON. */
function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function asRecord(value: unknown): JsonRecord {
  expect(value).toBeTypeOf("object");
  expect(value).not.toBeNull();
  expect(Array.isArray(value)).toBe(false);
  return value as JsonRecord;
}

/** An error body: exactly `{code, message, details}`, a bounded message, no stack trace. */
function expectErrorBody(reply: Reply, status: number, code: string): JsonRecord {
  expect(reply.status, reply.text).toBe(status);
  expect(reply.headers.get("content-type")).toMatch(/^application\/json/);
  const body = asRecord(reply.json);
  expect(Object.keys(body).sort()).toEqual(["code", "details", "message"]);
  expect(body.code).toBe(code);
  expect(body.message).toBeTypeOf("string");
  expect((body.message as string).length).toBeLessThanOrEqual(600);
  expect(Array.isArray(body.details)).toBe(true);
  expect(reply.text).not.toContain("    at ");
  return body;
}

/** Every key of every object in `value`, at any depth. */
function keysOf(value: unknown, into: string[] = []): string[] {
  if (Array.isArray(value)) {
    for (const item of value) keysOf(item, into);
  } else if (typeof value === "object" && value !== null) {
    for (const [key, item] of Object.entries(value)) {
      into.push(key);
      keysOf(item, into);
    }
  }
  return into;
}

/** The path of every GET route of the protos, its variables filled with a value valid for all. */
function getPaths(): string[] {
  const paths: string[] = [];
  for (const service of apiServices) {
    for (const method of service.methods) {
      if (!hasOption(method, httpRule)) continue;
      const rule = getOption(method, httpRule);
      for (const binding of [rule, ...rule.additionalBindings]) {
        if (binding.pattern.case !== "get") continue;
        paths.push(binding.pattern.value.replace(/\{[^}]*\}/g, "0123456789abcdef0123456789abcdef"));
      }
    }
  }
  return paths;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const traceresponsePattern = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

describe("REST gateway: every endpoint of the original service", () => {
  let node: RunningOrchestrator;
  beforeAll(async () => {
    node = await startOrchestrator();
  });
  afterAll(async () => {
    await node?.close();
  });

  // The seed README's API table and "Endpoints (initial)" list, with real path ids and bodies
  // that pass request validation, so that what answers is the route's own implementation.
  const implemented: readonly Call[] = [
    { method: "GET", path: "/health" },
    { method: "GET", path: "/ready" },
    { method: "GET", path: "/info" },
    { method: "GET", path: "/config/effective" },
    { method: "GET", path: "/metrics" },
    { method: "GET", path: "/health/system" },
    {
      method: "POST",
      path: "/registry/register",
      body: '{"name":"svc","base_url":"http://svc:8080"}',
    },
    { method: "GET", path: "/registry" },
    { method: "GET", path: "/infrastructure/events/history" },
    { method: "POST", path: "/infrastructure/events/replay", body: '{"dry_run":true}' },
    { method: "POST", path: "/registry/poll-openapi", body: "{}" },
    { method: "GET", path: "/peers" },
    { method: "POST", path: "/registry/sync-peers", body: "{}" },
    { method: "GET", path: "/infrastructure/saga/stats" },
    { method: "GET", path: "/infrastructure/dlq/stats" },
    { method: "GET", path: "/infrastructure/dlq" },
    { method: "POST", path: "/infrastructure/dlq/retry", body: "{}" },
    { method: "GET", path: "/infrastructure/tracing/stats" },
    { method: "GET", path: "/infrastructure/tracing/service/svc" },
    { method: "POST", path: "/infrastructure/tracing/spans", body: '{"resource_spans":[]}' },
    // No doc store configured: the job is skipped, not failed (tests/e2e/jobs.test.ts has the rest).
    { method: "POST", path: "/jobs/recalc-quality", body: "{}" },
    { method: "GET", path: "/workflows" },
    { method: "POST", path: "/ingest", body: '{"source":"github"}' },
    { method: "GET", path: "/workflows/history" },
  ];
  // Every route of the API is implemented now: a method no capability implements would answer
  // 501 (src/capabilities/capability.test.ts checks that through composeServices).

  it.each(implemented)("$method $path answers 200", async (request) => {
    const reply = await call(node.url, request);
    expect(reply.status, reply.text).toBe(200);
    expect(reply.headers.get("x-correlation-id")).toMatch(uuidPattern);
    expect(reply.headers.get("traceresponse")).toMatch(traceresponsePattern);
  });

  // Validation runs before the implementation: an invalid request is a 400 naming the field,
  // whether the RPC is implemented or not.
  it.each([
    { path: "/ingest", field: "source" },
    { path: "/workflows/run", field: "sources" },
    { path: "/report/request", field: "kind" },
    { path: "/docstore/save", field: "content" },
    { path: "/registry/register", field: "name" },
  ])("POST $path with {} answers 400 naming $field", async ({ path, field }) => {
    const reply = await call(node.url, { method: "POST", path, body: "{}" });
    const body = expectErrorBody(reply, 400, "invalid_argument");
    expect(body.message).toContain(field);
  });
});

describe("REST gateway: bad input", () => {
  let node: RunningOrchestrator;
  let small: RunningOrchestrator;
  beforeAll(async () => {
    [node, small] = await Promise.all([
      startOrchestrator(),
      startOrchestrator({ env: { BODY_LIMIT_BYTES: "2048" } }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([node?.close(), small?.close()]);
  });

  const register = (body: string, contentType?: string): Call => ({
    method: "POST",
    path: "/registry/register",
    body,
    ...(contentType === undefined ? {} : { contentType }),
  });

  it.each([
    { name: "malformed JSON", body: '{"name": "svc",' },
    { name: "a JSON array", body: '[{"name":"svc","base_url":"http://svc:8080"}]' },
    { name: "a JSON string", body: '"svc"' },
    { name: "a wrong type", body: '{"name":"svc","base_url":"http://x","ttl_seconds":"abc"}' },
    { name: "an unknown field", body: '{"name":"svc","base_url":"http://x","bogus":1}' },
    { name: "an empty body", body: "" },
  ])("$name answers 400 invalid_argument", async ({ body }) => {
    expectErrorBody(await call(node.url, register(body)), 400, "invalid_argument");
  });

  // The Connect protocol's JSON is held to the same rule as REST: a field the server does not
  // know is a mistake to report, not something to drop silently.
  it("Connect JSON with an unknown field answers 400 invalid_argument", async () => {
    const reply = await call(node.url, {
      method: "POST",
      path: "/orchestrator.v1.RegistryService/RegisterService",
      body: '{"name":"svc","baseUrl":"http://svc:8080","bogus":1}',
      headers: { "connect-protocol-version": "1" },
    });
    expect(reply.status, reply.text).toBe(400);
    expect(asRecord(reply.json).code).toBe("invalid_argument");
    expect(reply.text).toContain("bogus");
  });

  it("accepts camelCase and snake_case field names alike", async () => {
    for (const body of [
      '{"name":"svc","baseUrl":"http://svc:8080","ttlSeconds":30}',
      '{"name":"svc","base_url":"http://svc:8080","ttl_seconds":30}',
    ]) {
      // Past decoding and validation, the registry itself answers.
      const reply = await call(node.url, register(body));
      expect(reply.status, reply.text).toBe(200);
      expect(asRecord(asRecord(JSON.parse(reply.text)).service).ttl_seconds).toBe(30);
    }
  });

  it("a violated field rule names the field, with a google.rpc.BadRequest detail", async () => {
    const reply = await call(node.url, register('{"base_url":"http://svc:8080"}'));
    const body = expectErrorBody(reply, 400, "invalid_argument");
    expect(body.message).toContain("name");
    const details = body.details as JsonRecord[];
    const first = asRecord(details[0]);
    expect(first["@type"]).toBe("type.googleapis.com/google.rpc.BadRequest");
    const violations = first.field_violations as JsonRecord[];
    expect(violations.map((v) => v.field)).toContain("name");
  });

  it("a body over BODY_LIMIT_BYTES answers 413 resource_exhausted", async () => {
    const body = JSON.stringify({
      name: "svc",
      base_url: "http://svc:8080",
      version: "v".repeat(4096),
    });
    expect(body.length).toBeGreaterThan(4096);
    expectErrorBody(await call(small.url, register(body)), 413, "resource_exhausted");
  });

  it("a body just under BODY_LIMIT_BYTES is read", async () => {
    const body = JSON.stringify({ name: "svc", base_url: "http://svc:8080", version: "1" });
    expect((await call(small.url, register(body))).status).toBe(200);
  });

  it("an unsupported content type answers 415", async () => {
    const reply = await call(node.url, register("<name>svc</name>", "application/xml"));
    expectErrorBody(reply, 415, "invalid_argument");
  });

  // Known defect (see the report): fastify's built-in text/plain parser accepts the body, and the
  // gateway then answers 400 "the request body must be a JSON object" instead of 415. Flip to
  // `it` once text/plain is refused.
  it("a text/plain POST answers 415", async () => {
    const reply = await call(node.url, register('{"name":"svc"}', "text/plain"));
    expect(reply.status).toBe(415);
  });

  it("an unknown path answers 404 not_found", async () => {
    expectErrorBody(
      await call(node.url, { method: "GET", path: "/no/such/route" }),
      404,
      "not_found",
    );
    expectErrorBody(await call(node.url, { method: "DELETE", path: "/health" }), 404, "not_found");
  });

  it("an unknown query parameter answers 400", async () => {
    const reply = await call(node.url, { method: "GET", path: "/registry?bogus=1" });
    const body = expectErrorBody(reply, 400, "invalid_argument");
    expect(body.message).toContain("bogus");
  });

  it("a query parameter of the wrong type answers 400", async () => {
    const reply = await call(node.url, { method: "GET", path: "/registry?page_size=abc" });
    const body = expectErrorBody(reply, 400, "invalid_argument");
    expect(body.message).toContain("page_size");
  });

  it("a gzip-encoded body answers 415 naming the encoding", async () => {
    const response = await fetch(`${node.url}/registry/register`, {
      method: "POST",
      headers: { "content-type": "application/json", "content-encoding": "gzip" },
      body: gzipSync(JSON.stringify({ name: "svc", base_url: "http://svc:8080" })),
    });
    const text = await response.text();
    everyBody.push(text);
    const reply = { status: response.status, headers: response.headers, text, json: parse(text) };
    const body = expectErrorBody(reply, 415, "invalid_argument");
    expect(body.message).toContain('content-encoding "gzip"');
  });

  it.each([
    { key: "__proto__", body: '{"name":"svc","base_url":"http://x","__proto__":{"polluted":1}}' },
    {
      key: "__proto__",
      body: '{"name":"svc","base_url":"http://x","metadata":{"\\u005f_proto__":"x"}}',
    },
    {
      key: "constructor",
      body: '{"name":"svc","base_url":"http://x","constructor":{"prototype":{"polluted":1}}}',
    },
  ])("a JSON body with a $key key answers 400 naming that key", async ({ key, body }) => {
    const reply = await call(node.url, register(body));
    const error = expectErrorBody(reply, 400, "invalid_argument");
    expect(error.message).toContain(`key ${key}`);
    expect(error.message).not.toContain("not valid JSON");
  });

  // A map key that merely reads "constructor" is data, as fastify's own parser treats it.
  it("a metadata key named constructor is kept", async () => {
    const body = '{"name":"svc","base_url":"http://x","metadata":{"constructor":"c"}}';
    const reply = await call(node.url, register(body));
    expect(reply.status, reply.text).toBe(200);
    expect(asRecord(asRecord(asRecord(reply.json).service).metadata).constructor).toBe("c");
  });

  it.each(["0x10", "0o7", "0b1", "1e1", "16.0", " 16", "16 ", "", "1_0"])(
    "an integer query parameter written %j answers 400 naming the field",
    async (value) => {
      const reply = await call(node.url, {
        method: "GET",
        path: `/registry?page_size=${encodeURIComponent(value)}`,
      });
      const body = expectErrorBody(reply, 400, "invalid_argument");
      expect(body.message).toContain("page_size");
      expect(body.message).toContain("decimal");
    },
  );

  it.each(["16", "+16", "0", "007"])(
    "an integer query parameter written %j is read as decimal",
    async (value) => {
      const reply = await call(node.url, {
        method: "GET",
        path: `/registry?page_size=${encodeURIComponent(value)}`,
      });
      expect(reply.status, reply.text).toBe(200);
    },
  );

  it("a 10 KB unknown field name is not echoed back in full", async () => {
    const field = "f".repeat(10 * 1024);
    const body = `{"name":"svc","base_url":"http://svc:8080","${field}":1}`;
    const reply = await call(node.url, register(body));
    expectErrorBody(reply, 400, "invalid_argument");
    expect(reply.text.length).toBeLessThan(1200);
  });

  it("a 5 KB path is not echoed back in full", async () => {
    const reply = await call(node.url, { method: "GET", path: `/${"p".repeat(5 * 1024)}` });
    expectErrorBody(reply, 404, "not_found");
    expect(reply.text.length).toBeLessThan(1200);
  });
});

describe("REST gateway: errors raised before any route", () => {
  let node: RunningOrchestrator;
  beforeAll(async () => {
    node = await startOrchestrator();
  });
  afterAll(async () => {
    await node?.close();
  });

  const long = "a".repeat(15 * 1024);
  // Whoever raises the error (fastify's router, body reading, content-type parsers, the 404
  // handler, the Connect router), the client gets the one error body and its ids, and no more
  // than a short quote of what it sent.
  const cases: readonly (Call & { name: string; status: number; code: string })[] = [
    {
      name: "a path variable over 512 characters",
      method: "GET",
      path: `/registry/${long}`,
      status: 414,
      code: "invalid_argument",
    },
    {
      name: "a bad percent-encoding",
      method: "GET",
      path: "/registry/%ZZ",
      status: 400,
      code: "invalid_argument",
    },
    {
      name: "a bad percent-encoding in a long path",
      method: "GET",
      path: `/registry/%ZZ${long}`,
      status: 400,
      code: "invalid_argument",
    },
    {
      name: "an unknown long path",
      method: "GET",
      path: `/${long}`,
      status: 404,
      code: "not_found",
    },
    {
      name: "malformed JSON",
      method: "POST",
      path: "/registry/register",
      body: `{"name": "${long}`,
      status: 400,
      code: "invalid_argument",
    },
    {
      name: "an unsupported media type",
      method: "POST",
      path: "/registry/register",
      body: "<a/>",
      contentType: `application/${long}`,
      status: 415,
      code: "invalid_argument",
    },
    {
      name: "a GET of a Connect route that takes POST",
      method: "GET",
      path: "/orchestrator.v1.SystemService/Ping",
      status: 405,
      code: "unimplemented",
    },
    {
      name: "a unary content type on a Connect streaming route",
      method: "POST",
      path: "/orchestrator.v1.SystemService/WatchHealth",
      body: "{}",
      status: 415,
      code: "invalid_argument",
    },
    {
      name: "a content type the Connect router does not speak",
      method: "POST",
      path: "/orchestrator.v1.SystemService/Ping",
      body: "<a/>",
      contentType: `text/${long}`,
      status: 415,
      code: "invalid_argument",
    },
  ];

  it.each(cases)("$name answers $status with the error body and the ids", async (request) => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const correlationId = `errors:${request.status}`;
    const reply = await call(node.url, {
      ...request,
      headers: {
        "x-correlation-id": correlationId,
        traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
      },
    });
    const body = expectErrorBody(reply, request.status, request.code);
    expect(body.message).not.toContain("a".repeat(100));
    expect(reply.text.length).toBeLessThan(600);
    expect(reply.headers.get("x-correlation-id")).toBe(correlationId);
    expect(reply.headers.get("traceresponse")).toMatch(
      new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`),
    );
  });

  // Found by the hostile-input suite: Node's HTTP/1.1 parser answered these itself, empty-bodied.
  it("a request head over Node's limit answers 431 with the error body, quoting nothing", async () => {
    const path = `/registry/${"b".repeat(20 * 1024)}`;
    const reply = await call(node.url, { method: "GET", path });
    const body = expectErrorBody(reply, 431, "resource_exhausted");
    expect(body.message).toContain("bytes");
    expect(reply.text).not.toContain("bbbbbbbb");
  });

  it("a request the parser cannot read answers 400 with the error body, then closes", async () => {
    const answer = await rawExchange(
      node.port,
      "GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    );
    const [head = "", text = ""] = answer.split("\r\n\r\n");
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(head.toLowerCase()).toContain("connection: close");
    expect(head.toLowerCase()).toContain("content-type: application/json");
    expect(JSON.parse(text)).toEqual({
      code: "invalid_argument",
      message: "malformed HTTP request",
      details: [],
    });
  });
});

/** A path variable of one route that a literal segment of another route takes first. */
interface Collision {
  readonly method: DescMethod;
  /** The variable's field path, e.g. "name". */
  readonly field: string;
  readonly literal: string;
  /** The route that takes it, e.g. "GET /registry/watch". */
  readonly route: string;
}

/**
 * Every collision of the protos' routes, found here on its own terms: two bindings with the same
 * verb and as many segments, a variable in one where the other has a literal, and every other
 * position able to match both.
 */
function collisions(): Collision[] {
  const bindings = apiServices.flatMap((service) =>
    service.methods.flatMap((method) => {
      if (!hasOption(method, httpRule)) return [];
      const rule = getOption(method, httpRule);
      return [rule, ...rule.additionalBindings].map((binding) => ({
        method,
        verb: binding.pattern.case ?? "",
        segments: String(binding.pattern.value ?? "").split("/"),
      }));
    }),
  );
  const isVariable = (segment: string | undefined) => segment?.startsWith("{") ?? false;
  const found: Collision[] = [];
  for (const a of bindings) {
    for (const b of bindings) {
      if (a === b || a.verb !== b.verb || a.segments.length !== b.segments.length) continue;
      a.segments.forEach((segment, i) => {
        const literal = b.segments[i] ?? "";
        if (!isVariable(segment) || isVariable(literal)) return;
        const rest = a.segments.every(
          (s, j) => j === i || s === b.segments[j] || isVariable(s) || isVariable(b.segments[j]),
        );
        if (!rest) return;
        found.push({
          method: a.method,
          field: segment.replace(/^\{|(=\*)?\}$/g, ""),
          literal,
          route: `${b.verb.toUpperCase()} ${b.segments.join("/")}`,
        });
      });
    }
  }
  return found;
}

describe("REST gateway: no route silently shadows a path variable's values", () => {
  let node: RunningOrchestrator;
  let sessionManager: Http2SessionManager;
  beforeAll(async () => {
    node = await startOrchestrator();
    sessionManager = new Http2SessionManager(node.url);
  });
  afterAll(async () => {
    sessionManager?.abort();
    await node?.close();
  });

  it("finds the collisions of the protos' routes (GET /registry/watch among them)", () => {
    expect(collisions()).toContainEqual({
      method: RegistryService.method.getService,
      field: "name",
      literal: "watch",
      route: "GET /registry/watch",
    });
  });

  // A value a route takes first must be refused for its variable, on every protocol, naming the
  // route: a future route cannot shadow values without this failing.
  it.each(collisions())(
    "$method.name refuses $field $literal, which $route takes",
    async ({ method, field, literal, route }) => {
      const transport = createGrpcTransport({ baseUrl: node.url, sessionManager });
      const request = create(method.input, {});
      const target = method.input.fields.find((f) => f.name === field);
      if (target === undefined) throw new Error(`${method.input.typeName} has no field ${field}`);
      (request as unknown as Record<string, unknown>)[target.localName] = literal;
      let failure: ConnectError | undefined;
      try {
        await transport.unary(
          method as DescMethodUnary,
          undefined,
          undefined,
          undefined,
          request as never,
        );
      } catch (error) {
        failure = ConnectError.from(error);
      }
      expect(failure === undefined ? "OK" : Code[failure.code]).toBe("InvalidArgument");
      expect(failure?.rawMessage).toContain(field);
      expect(failure?.rawMessage).toContain(route);
    },
  );

  it("refuses to register a service named watch, over REST and gRPC, naming the reason", async () => {
    const reply = await call(node.url, {
      method: "POST",
      path: "/registry/register",
      body: '{"name":"watch","base_url":"http://svc:8080"}',
    });
    const body = expectErrorBody(reply, 400, "invalid_argument");
    expect(body.message).toBe(
      "the name watch is reserved: GET /registry/watch is a route of its own, not GET /registry/{name}",
    );
    const client = createClient(
      RegistryService,
      createGrpcTransport({ baseUrl: node.url, sessionManager }),
    );
    let failure: ConnectError | undefined;
    try {
      await client.registerService({ name: "watch", baseUrl: "http://svc:8080" });
    } catch (error) {
      failure = ConnectError.from(error);
    }
    expect(failure === undefined ? "OK" : Code[failure.code]).toBe("InvalidArgument");
    expect(failure?.rawMessage).toBe(body.message);
    // Names that only start like a route are names like any other.
    const watcher = await call(node.url, {
      method: "POST",
      path: "/registry/register",
      body: '{"name":"watcher","base_url":"http://svc:8080"}',
    });
    expect(watcher.status, watcher.text).toBe(200);
    expect((await call(node.url, { method: "GET", path: "/registry/watcher" })).status).toBe(200);
  });
});

describe("REST gateway: operator routes", () => {
  const operatorToken = "operator-token-5c1f";
  const peerToken = "peer-token-9a2e";
  let node: RunningOrchestrator;
  beforeAll(async () => {
    node = await startOrchestrator({
      env: { OPERATOR_TOKEN: operatorToken, PEER_TOKEN: peerToken },
    });
  });
  afterAll(async () => {
    await node?.close();
  });

  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

  // /metrics and GET /config/effective are both operator routes: one check, one answer.
  it.each([
    { name: "no token", headers: {}, status: 401, code: "unauthenticated" },
    { name: "a wrong token", headers: bearer("wrong"), status: 401, code: "unauthenticated" },
    { name: "the peer token", headers: bearer(peerToken), status: 403, code: "permission_denied" },
  ])("with $name, /metrics answers as the operator RPCs do", async ({ headers, status, code }) => {
    const rpc = await call(node.url, { method: "GET", path: "/config/effective", headers });
    const metrics = await call(node.url, { method: "GET", path: "/metrics", headers });
    expectErrorBody(rpc, status, code);
    expectErrorBody(metrics, status, code);
    for (const reply of [rpc, metrics]) {
      expect(reply.text).not.toContain(operatorToken);
      expect(reply.text).not.toContain(peerToken);
    }
  });

  it("with the operator token, /metrics answers the Prometheus text", async () => {
    const reply = await call(node.url, {
      method: "GET",
      path: "/metrics",
      headers: bearer(operatorToken),
    });
    expect(reply.status).toBe(200);
    expect(reply.text).toContain("orchestrator_rpc_started_total");
  });
});

describe("REST gateway: headers, JSON shape, readiness, connections", () => {
  let node: RunningOrchestrator;
  let unready: RunningOrchestrator;
  beforeAll(async () => {
    [node, unready] = await Promise.all([
      startOrchestrator(),
      startOrchestrator({
        deps: {
          readinessChecks: [{ name: "downstream", probe: async () => "downstream is unreachable" }],
        },
      }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([node?.close(), unready?.close()]);
  });

  it.each(["abc-123", "A.b_c:d-9", "x".repeat(128)])(
    "keeps and echoes a well-formed correlation id (%s)",
    async (id) => {
      const reply = await call(node.url, {
        method: "GET",
        path: "/health",
        headers: { "x-correlation-id": id },
      });
      expect(reply.headers.get("x-correlation-id")).toBe(id);
      const failed = await call(node.url, {
        method: "GET",
        path: "/nope",
        headers: { "x-correlation-id": id },
      });
      expect(failed.headers.get("x-correlation-id")).toBe(id);
    },
  );

  it.each([
    { name: "too long (200 chars)", id: "x".repeat(200) },
    { name: "with a space", id: "a b" },
    { name: "with markup", id: "<script>" },
    { name: "empty", id: "" },
  ])("replaces a correlation id that is $name with a generated UUID", async ({ id }) => {
    const reply = await call(node.url, {
      method: "GET",
      path: "/health",
      headers: { "x-correlation-id": id },
    });
    expect(reply.status).toBe(200);
    expect(reply.headers.get("x-correlation-id")).toMatch(uuidPattern);
  });

  it("writes snake_case field names and fields at their defaults", async () => {
    const ready = await call(node.url, { method: "GET", path: "/ready" });
    expect(ready.status).toBe(200);
    const body = asRecord(ready.json);
    expect(body.ready).toBe(true);
    expect(body.checks).toContainEqual({ name: "serving", ok: true, detail: "" });

    const health = asRecord((await call(node.url, { method: "GET", path: "/health" })).json);
    expect(health).toHaveProperty("uptime_seconds");
    expect(health).toHaveProperty("node_id");
    const info = asRecord((await call(node.url, { method: "GET", path: "/info" })).json);
    expect(info).toHaveProperty("incarnation_id");
    for (const reply of [ready.json, health, info]) {
      for (const key of keysOf(reply)) expect(key).toMatch(/^[a-z0-9_@]+$/);
    }
  });

  it("GET /ready answers 503 unavailable naming a failing readiness check", async () => {
    const reply = await call(unready.url, { method: "GET", path: "/ready" });
    expect(reply.status).toBe(503);
    const body = asRecord(reply.json);
    expect(body.code).toBe("unavailable");
    expect(body.message).toContain("downstream");
    expect(Array.isArray(body.details)).toBe(true);
    expect(body.ready).toBe(false);
    expect(body.checks).toContainEqual({
      name: "downstream",
      ok: false,
      detail: "downstream is unreachable",
    });
    expect(body.checks).toContainEqual({ name: "serving", ok: true, detail: "" });
    expect(reply.text).not.toContain("    at ");
    // The node is alive all the same.
    expect((await call(unready.url, { method: "GET", path: "/health" })).status).toBe(200);
  });

  it("HEAD /health answers 200 without a body", async () => {
    const reply = await call(node.url, { method: "HEAD", path: "/health" });
    expect(reply.status).toBe(200);
    expect(reply.text).toBe("");
    expect(reply.headers.get("x-correlation-id")).toMatch(uuidPattern);
  });

  // fastify answers HEAD for every GET route; a stream's HEAD must not wait for a stream's end.
  it.each([...getPaths(), "/metrics", "/orchestrator.v1.SystemService/Ping", "/no/such/route"])(
    "HEAD %s answers the status and headers of its GET, without a body",
    async (path) => {
      const correlationId = "head:check";
      const headers = { "x-correlation-id": correlationId };
      const get = new AbortController();
      const got = await fetch(`${node.url}${path}`, { headers, signal: get.signal });
      get.abort(); // a stream's GET never ends: its status line and headers are enough
      const head = await fetch(`${node.url}${path}`, {
        method: "HEAD",
        headers,
        signal: AbortSignal.timeout(10_000),
      });
      expect(head.status).toBe(got.status);
      expect(head.headers.get("content-type")).toBe(got.headers.get("content-type"));
      expect(head.headers.get("x-correlation-id")).toBe(correlationId);
      expect(await head.text()).toBe("");
    },
  );

  it("serves several requests on one HTTP/1.1 keep-alive connection", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    try {
      for (const path of ["/health", "/info", "/ready", "/nope", "/health"]) {
        const { status, body } = await new Promise<{ status: number; body: string }>(
          (resolve, reject) => {
            const request = http.get(`${node.url}${path}`, { agent }, (response) => {
              let text = "";
              response.setEncoding("utf8");
              response.on("data", (chunk: string) => {
                text += chunk;
              });
              response.on("end", () => resolve({ status: response.statusCode ?? 0, body: text }));
              response.on("error", reject);
            });
            request.on("socket", (socket) => sockets.add(socket));
            request.on("error", reject);
          },
        );
        everyBody.push(body);
        expect(status).toBe(path === "/nope" ? 404 : 200);
      }
      expect(sockets.size).toBe(1);
    } finally {
      agent.destroy();
    }
  });

  it("no body this file received carries a stack trace", () => {
    expect(everyBody.length).toBeGreaterThan(0);
    for (const body of everyBody) expect(body).not.toContain("    at ");
  });
});
