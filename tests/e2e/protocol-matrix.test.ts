import { randomBytes, randomUUID } from "node:crypto";
import { once } from "node:events";
import { Agent } from "node:http";
import http2 from "node:http2";
import { setTimeout as delay } from "node:timers/promises";
import {
  create,
  type DescMessage,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  fromBinary,
  type JsonObject,
  type JsonValue,
  type MessageInitShape,
  toBinary,
  toJson,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Health } from "../../gen/health/v1/health_pb.js";
import { RegistryService } from "../../gen/orchestrator/v1/registry_pb.js";
import { SystemService } from "../../gen/orchestrator/v1/system_pb.js";
import { WorkflowService } from "../../gen/orchestrator/v1/workflow_pb.js";
import { h2cRequest } from "../support/h2c.js";
import { lineReader } from "../support/line-reader.js";
import {
  metricValue,
  type RunningOrchestrator,
  startOrchestrator,
} from "../support/orchestrator.js";

// The same RPCs over every protocol the one port speaks, each checked against the same
// expectations: one implementation behind one interceptor chain must answer them all alike.

const operatorToken = `operator-${randomUUID()}`;
// Calls carry the admin token unless a test says otherwise: every RPC needs a role now.
const adminToken = `admin-${randomUUID()}`;
const jsonOptions = { useProtoFieldName: true, alwaysEmitImplicit: true } as const;

/** One unary RPC, with its google.api.http binding when the proto gives it one. */
interface UnaryRpc<I extends DescMessage, O extends DescMessage> {
  readonly method: DescMethodUnary<I, O>;
  readonly request: MessageInitShape<I>;
  readonly rest?: { readonly verb: "GET" | "POST"; readonly path: string; readonly body?: unknown };
}

/** What came back, in one shape for every protocol. */
interface Outcome {
  /** Undefined when the call succeeded. */
  readonly code: Code | undefined;
  readonly message: string;
  /** The response as proto JSON (proto field names, defaults included); `{}` on failure. */
  readonly body: JsonObject;
  /** Response headers and trailers together. */
  readonly headers: Headers;
  /** REST only: the HTTP status. */
  readonly httpStatus: number | undefined;
  /** Fields named by a google.rpc.BadRequest detail, when the protocol carries details. */
  readonly violations: readonly string[] | undefined;
  /** Everything the client received, as text, for "no secret in the response" checks. */
  readonly raw: string;
}

type MetricsProtocol = "grpc" | "grpc-web" | "connect" | "rest";

/** A client of one protocol, calling any unary RPC, and any server-streaming RPC. */
interface Protocol {
  /** Calls a unary RPC; `deadlineMs` is for clients that only take a deadline of their own. */
  call<I extends DescMessage, O extends DescMessage>(
    rpc: UnaryRpc<I, O>,
    headers: Record<string, string>,
    deadlineMs?: number,
  ): Promise<Outcome>;
  /** Opens a server stream; `deadlineMs` is for clients that only take a deadline of their own. */
  stream(rpc: StreamRpc, headers: Record<string, string>, deadlineMs?: number): OpenStream;
  close(): void;
}

/** One server-streaming RPC and its google.api.http GET path. */
interface StreamRpc {
  readonly method: DescMethodServerStreaming;
  readonly restPath: string;
}

/** A server stream as its client sees it. */
interface OpenStream {
  /** Resolves when the first message has arrived; rejects if the stream ends before one. */
  readonly first: Promise<void>;
  /** Resolves when the stream has ended, with its final status. */
  readonly ended: Promise<StreamEnd>;
  /** Cancels the stream from the client side. */
  cancel(): void;
}

interface StreamEnd {
  /** Undefined when the stream ended with OK. */
  readonly code: Code | undefined;
  /** Messages received before the end. */
  readonly messages: number;
  /** REST only: the HTTP status the stream answered with. */
  readonly httpStatus: number | undefined;
}

/** How a protocol's client says how long a call may take. */
type DeadlineStyle = "client-deadline" | "grpc-timeout" | "connect-timeout-ms";

const rpcs = {
  health: {
    method: SystemService.method.health,
    request: {},
    rest: { verb: "GET", path: "/health" },
  },
  info: { method: SystemService.method.info, request: {}, rest: { verb: "GET", path: "/info" } },
  ping: { method: SystemService.method.ping, request: {} },
  ready: { method: SystemService.method.ready, request: {}, rest: { verb: "GET", path: "/ready" } },
  grpcHealthCheck: { method: Health.method.check, request: { service: "" } },
  cancelWorkflowRun: {
    method: WorkflowService.method.cancelWorkflowRun,
    request: { runId: "run-1" },
    rest: { verb: "POST", path: "/workflows/runs/run-1/cancel", body: {} },
  },
  badRegistration: {
    method: RegistryService.method.registerService,
    request: { name: "Bad Name!", baseUrl: "http://billing.internal" },
    rest: {
      verb: "POST",
      path: "/registry/register",
      body: { name: "Bad Name!", base_url: "http://billing.internal" },
    },
  },
  effectiveConfig: {
    method: SystemService.method.getEffectiveConfig,
    request: {},
    rest: { verb: "GET", path: "/config/effective" },
  },
} satisfies Record<string, UnaryRpc<DescMessage, DescMessage>>;

/** One way of calling the node, opened once its port is known. */
interface ProtocolSpec {
  readonly name: string;
  /** The `protocol` label the server's metrics give its calls. */
  readonly label: MetricsProtocol;
  readonly isRest: boolean;
  readonly deadline: DeadlineStyle;
  open(node: RunningOrchestrator): Protocol;
}

const protocolSpecs: readonly ProtocolSpec[] = [
  {
    name: "grpc-js (h2)",
    label: "grpc",
    isRest: false,
    deadline: "client-deadline",
    open: ({ address }) => grpcJsProtocol(address),
  },
  {
    name: "connect-node gRPC (h2)",
    label: "grpc",
    isRest: false,
    deadline: "grpc-timeout",
    open: ({ url }) =>
      connectNodeProtocol(url, (sessionManager) =>
        createGrpcTransport({ baseUrl: url, sessionManager }),
      ),
  },
  {
    name: "gRPC-Web (HTTP/1.1)",
    label: "grpc-web",
    isRest: false,
    deadline: "grpc-timeout",
    open: ({ url }) =>
      connectNodeProtocol(url, (_, agent) =>
        createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1", nodeOptions: { agent } }),
      ),
  },
  {
    name: "gRPC-Web (h2)",
    label: "grpc-web",
    isRest: false,
    deadline: "grpc-timeout",
    open: ({ url }) =>
      connectNodeProtocol(url, (sessionManager) =>
        createGrpcWebTransport({ baseUrl: url, httpVersion: "2", sessionManager }),
      ),
  },
  {
    name: "Connect (HTTP/1.1)",
    label: "connect",
    isRest: false,
    deadline: "connect-timeout-ms",
    open: ({ url }) =>
      connectNodeProtocol(url, (_, agent) =>
        createConnectTransport({ baseUrl: url, httpVersion: "1.1", nodeOptions: { agent } }),
      ),
  },
  {
    name: "Connect (h2)",
    label: "connect",
    isRest: false,
    deadline: "connect-timeout-ms",
    open: ({ url }) =>
      connectNodeProtocol(url, (sessionManager) =>
        createConnectTransport({ baseUrl: url, httpVersion: "2", sessionManager }),
      ),
  },
  {
    name: "REST (HTTP/1.1, fetch)",
    label: "rest",
    isRest: true,
    deadline: "grpc-timeout",
    open: ({ url }) => restProtocol(url, fetchExchange, fetchStream),
  },
  {
    name: "REST (h2c)",
    label: "rest",
    isRest: true,
    deadline: "grpc-timeout",
    open: ({ url }) => restProtocol(url, h2cExchange, h2cStream),
  },
];

let node: RunningOrchestrator;
const opened = new Map<string, Protocol>();

beforeAll(async () => {
  node = await startOrchestrator({
    env: { AUTH_TOKENS: `admin:${adminToken}`, OPERATOR_TOKEN: operatorToken },
  });
  for (const spec of protocolSpecs) opened.set(spec.name, spec.open(node));
});

afterAll(async () => {
  for (const protocol of opened.values()) protocol.close();
  await node?.close();
});

function protocolNamed(name: string): Protocol {
  const protocol = opened.get(name);
  if (protocol === undefined) throw new Error(`protocol ${name} is not open`);
  return protocol;
}

describe.each(protocolSpecs)("over $name", ({ name, isRest }) => {
  it("Health answers healthy with this node's id, echoing correlation and trace", async () => {
    const protocol = protocolNamed(name);
    const sent = callHeaders();
    const outcome = await protocol.call(rpcs.health, sent);
    expectSuccess(outcome);
    expect(outcome.body).toEqual({
      status: "healthy",
      service: "orchestrator",
      version: node.app.node.version,
      uptime_seconds: expect.any(Number),
      timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      node_id: node.app.node.nodeId,
    });
    expectEchoed(outcome, sent);
  });

  it("Info describes the same node and its protocols", async () => {
    const protocol = protocolNamed(name);
    const sent = callHeaders();
    const outcome = await protocol.call(rpcs.info, sent);
    expectSuccess(outcome);
    expect(outcome.body).toEqual({
      service: "orchestrator",
      version: node.app.node.version,
      description: node.app.node.description,
      node_id: node.app.node.nodeId,
      uptime_seconds: expect.any(Number),
      capabilities: expect.arrayContaining(["system", "grpc-health", "grpc-reflection"]),
      protocols: expect.arrayContaining(["grpc", "grpc-web", "connect", "rest", "http/1.1", "h2c"]),
      environment: "development",
      incarnation_id: node.app.node.incarnationId,
      scheduled_jobs: [],
      auth_enabled: true,
    });
    expectEchoed(outcome, sent);
  });

  // Ping has no google.api.http binding, so no REST route.
  it.skipIf(isRest)("Ping answers an empty message", async () => {
    const protocol = protocolNamed(name);
    const sent = callHeaders();
    const outcome = await protocol.call(rpcs.ping, sent);
    expectSuccess(outcome);
    expect(outcome.body).toEqual({});
    expectEchoed(outcome, sent);
  });

  it("Ready answers ready with the serving, events, registry and dlq checks", async () => {
    const protocol = protocolNamed(name);
    const sent = callHeaders();
    const outcome = await protocol.call(rpcs.ready, sent);
    expectSuccess(outcome);
    expect(outcome.body).toEqual({
      ready: true,
      checks: [
        { name: "serving", ok: true, detail: "" },
        { name: "events", ok: true, detail: "" },
        { name: "registry", ok: true, detail: "" },
        { name: "dlq", ok: true, detail: "" },
      ],
    });
    expectEchoed(outcome, sent);
  });

  // grpc.health.v1 has no google.api.http binding, so no REST route.
  it.skipIf(isRest)("grpc.health.v1.Health/Check answers SERVING", async () => {
    const protocol = protocolNamed(name);
    const sent = callHeaders();
    const outcome = await protocol.call(rpcs.grpcHealthCheck, sent);
    expectSuccess(outcome);
    expect(outcome.body).toEqual({ status: "SERVING" });
    expectEchoed(outcome, sent);
  });

  it("WorkflowService.CancelWorkflowRun of an unknown run answers NOT_FOUND (HTTP 404)", async () => {
    const protocol = protocolNamed(name);
    const sent = callHeaders();
    const outcome = await protocol.call(rpcs.cancelWorkflowRun, sent);
    expectFailure(outcome, Code.NotFound, 404);
    expect(outcome.message).toContain("workflow run run-1 not found");
    expectEchoed(outcome, sent);
  });

  it("a name breaking its rules is INVALID_ARGUMENT (HTTP 400) naming the field", async () => {
    const protocol = protocolNamed(name);
    const sent = callHeaders();
    const outcome = await protocol.call(rpcs.badRegistration, sent);
    expectFailure(outcome, Code.InvalidArgument, 400);
    expect(outcome.message).toMatch(/\bname\b/);
    // base_url is valid: only the name is reported.
    expect(outcome.message).not.toContain("base_url");
    if (outcome.violations !== undefined) expect(outcome.violations).toEqual(["name"]);
    expectEchoed(outcome, sent);
  });

  it("replaces a malformed correlation id with a generated one", async () => {
    const protocol = protocolNamed(name);
    const outcome = await protocol.call(rpcs.health, {
      ...callHeaders(),
      "x-correlation-id": "not well formed!",
    });
    expectSuccess(outcome);
    const echoed = outcome.headers.get("x-correlation-id");
    expect(echoed).toMatch(/^[A-Za-z0-9._:-]{1,128}$/);
    expect(echoed).not.toBe("not well formed!");
  });

  describe("GetEffectiveConfig, an admin RPC", () => {
    it("is UNAUTHENTICATED (HTTP 401) without a token", async () => {
      const sent = anonymousHeaders();
      const outcome = await protocolNamed(name).call(rpcs.effectiveConfig, sent);
      expectFailure(outcome, Code.Unauthenticated, 401);
      expect(outcome.raw).not.toContain(operatorToken);
      expectEchoed(outcome, sent);
    });

    it("is UNAUTHENTICATED (HTTP 401) with a wrong token", async () => {
      const sent = { ...callHeaders(), authorization: "Bearer not-the-token" };
      const outcome = await protocolNamed(name).call(rpcs.effectiveConfig, sent);
      expectFailure(outcome, Code.Unauthenticated, 401);
      expect(outcome.raw).not.toContain(operatorToken);
    });

    it("is PERMISSION_DENIED (HTTP 403) with an operator token", async () => {
      const sent = { ...callHeaders(), authorization: `Bearer ${operatorToken}` };
      const outcome = await protocolNamed(name).call(rpcs.effectiveConfig, sent);
      expectFailure(outcome, Code.PermissionDenied, 403);
      expect(outcome.raw).not.toContain(operatorToken);
    });

    it("answers the values with the right token, secrets redacted", async () => {
      const sent = callHeaders();
      const outcome = await protocolNamed(name).call(rpcs.effectiveConfig, sent);
      expectSuccess(outcome);
      const values = configValuesOf(outcome.body);
      expect(values).toContainEqual({
        key: "OPERATOR_TOKEN",
        value: "[redacted]",
        source: "env",
        secret: true,
      });
      expect(values).toContainEqual({ key: "PORT", value: "0", source: "env", secret: false });
      for (const value of values.filter((v) => v.secret)) {
        expect(["", "[redacted]"]).toContain(value.value);
      }
      expect(outcome.raw).not.toContain(operatorToken);
      expect(outcome.raw).not.toContain(adminToken);
      expectEchoed(outcome, sent);
    });
  });
});

const streams = {
  watchHealth: { method: SystemService.method.watchHealth, restPath: "/health/watch" },
  watchServices: { method: RegistryService.method.watchServices, restPath: "/registry/watch" },
} satisfies Record<string, StreamRpc>;

/**
 * A deadline as each kind of client asks for it: a `grpc-timeout` text (gRPC, gRPC-Web, REST), a
 * `connect-timeout-ms` text (Connect), or a deadline of the client's own (grpc-js, which sends
 * grpc-timeout for it). Headers alone, where the client allows, so that the status a test sees is
 * the server's, not the client's own timer's.
 */
interface Deadline {
  readonly grpc: string;
  readonly connect: string;
  /** For grpc-js; undefined when it cannot send this deadline. */
  readonly clientMs: number | undefined;
}

const deadlines = {
  short: { grpc: "300m", connect: "300", clientMs: 300 },
  twoDays: { grpc: "48H", connect: "172800000", clientMs: 172_800_000 },
  // Far beyond the 2^31-1 ms a Node timer takes (a longer one fires after 1 ms).
  huge: { grpc: "99999999H", connect: "9999999999", clientMs: 1000 * 86_400_000 },
  malformed: { grpc: "soon", connect: "soon", clientMs: undefined },
} satisfies Record<string, Deadline>;

function asking(style: DeadlineStyle, deadline: Deadline) {
  const authorization = `Bearer ${adminToken}`;
  switch (style) {
    case "grpc-timeout":
      return { headers: { "grpc-timeout": deadline.grpc, authorization }, clientMs: undefined };
    case "connect-timeout-ms":
      return {
        headers: { "connect-timeout-ms": deadline.connect, authorization },
        clientMs: undefined,
      };
    default:
      return { headers: { authorization }, clientMs: deadline.clientMs };
  }
}

/** Polls the node's metrics until every call of `method` it started has been handled. */
async function expectNoCallOpen(method: DescMethodServerStreaming): Promise<void> {
  const series = { service: method.parent.typeName, method: method.name };
  const auth = { token: operatorToken };
  await vi.waitFor(
    async () => {
      const started = await metricValue(node, "orchestrator_rpc_started_total", series, auth);
      const handled = await metricValue(node, "orchestrator_rpc_handled_total", series, auth);
      expect(handled).toBe(started);
    },
    { timeout: 15_000, interval: 100 },
  );
}

// One deadline behaviour on every protocol: any valid deadline is accepted (a very long one is
// capped, never overflowing a timer), a malformed one is refused alike, and a stream whose
// deadline passes ends with DEADLINE_EXCEEDED.
describe.each(protocolSpecs)("deadlines over $name", ({ name, deadline: style }) => {
  it("accepts a 48-hour deadline", async () => {
    const { headers, clientMs } = asking(style, deadlines.twoDays);
    const outcome = await protocolNamed(name).call(rpcs.health, headers, clientMs);
    expectSuccess(outcome);
  });

  it("keeps a stream open under a deadline far beyond Node's longest timer", async () => {
    const { headers, clientMs } = asking(style, deadlines.huge);
    const stream = protocolNamed(name).stream(streams.watchHealth, headers, clientMs);
    await stream.first;
    const early = await Promise.race([stream.ended, delay(1000, "still open" as const)]);
    expect(early).toBe("still open");
    stream.cancel();
    await stream.ended;
    await expectNoCallOpen(streams.watchHealth.method);
  });

  it.skipIf(style === "client-deadline")(
    "refuses a malformed deadline with INVALID_ARGUMENT (HTTP 400)",
    async () => {
      const { headers } = asking(style, deadlines.malformed);
      const outcome = await protocolNamed(name).call(rpcs.health, headers);
      expectFailure(outcome, Code.InvalidArgument, 400);
      expect(outcome.message).toContain("timeout");
    },
  );

  it.each(Object.values(streams))(
    "ends $method.name with DEADLINE_EXCEEDED when its deadline passes",
    async (rpc) => {
      const { headers, clientMs } = asking(style, deadlines.short);
      const stream = protocolNamed(name).stream(rpc, headers, clientMs);
      const end = await stream.ended;
      expect(end.code === undefined ? "OK" : Code[end.code]).toBe(Code[Code.DeadlineExceeded]);
      expect(end.messages).toBeGreaterThan(0);
      // REST: the status line went with the first message; the error is the stream's last line.
      if (end.httpStatus !== undefined) expect(end.httpStatus).toBe(200);
      await expectNoCallOpen(rpc.method);
    },
  );
});

describe("metrics", () => {
  it("count Health once per call under the protocol it came over", async () => {
    const labels = ["grpc", "grpc-web", "connect", "rest"] as const;
    const series = (protocol: MetricsProtocol) => ({
      protocol,
      service: "orchestrator.v1.SystemService",
      method: "Health",
    });
    const read = async (metric: string, extra: Record<string, string>) =>
      Object.fromEntries(
        await Promise.all(
          labels.map(async (label) => [
            label,
            await metricValue(
              node,
              metric,
              { ...series(label), ...extra },
              { token: operatorToken },
            ),
          ]),
        ),
      ) as Record<MetricsProtocol, number>;
    const handledBefore = await read("orchestrator_rpc_handled_total", { code: "OK" });
    const startedBefore = await read("orchestrator_rpc_started_total", {});

    for (const spec of protocolSpecs) {
      expectSuccess(await protocolNamed(spec.name).call(rpcs.health, {}));
    }

    const handled = await read("orchestrator_rpc_handled_total", { code: "OK" });
    const started = await read("orchestrator_rpc_started_total", {});
    for (const label of labels) {
      const calls = protocolSpecs.filter((spec) => spec.label === label).length;
      expect(calls, label).toBe(2);
      expect(handled[label] - handledBefore[label], `handled ${label}`).toBe(calls);
      expect(started[label] - startedBefore[label], `started ${label}`).toBe(calls);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Expectations

function expectSuccess(outcome: Outcome): void {
  expect({ code: outcome.code, message: outcome.message }).toEqual({
    code: undefined,
    message: "",
  });
  if (outcome.httpStatus !== undefined) expect(outcome.httpStatus).toBe(200);
}

function expectFailure(outcome: Outcome, code: Code, httpStatus: number): void {
  expect(outcome.code === undefined ? "OK" : Code[outcome.code]).toBe(Code[code]);
  if (outcome.httpStatus !== undefined) expect(outcome.httpStatus).toBe(httpStatus);
}

interface SentHeaders extends Record<string, string> {
  "x-correlation-id": string;
  traceparent: string;
}

/** {@link anonymousHeaders} and the admin token. */
function callHeaders(): SentHeaders {
  return { ...anonymousHeaders(), authorization: `Bearer ${adminToken}` };
}

/** A fresh correlation id and a traceparent of a fresh trace, as a caller would send. */
function anonymousHeaders(): SentHeaders {
  const traceId = randomBytes(16).toString("hex");
  const spanId = randomBytes(8).toString("hex");
  return {
    "x-correlation-id": `matrix:${randomUUID()}`,
    traceparent: `00-${traceId}-${spanId}-01`,
  };
}

function expectEchoed(outcome: Outcome, sent: SentHeaders): void {
  expect(outcome.headers.get("x-correlation-id")).toBe(sent["x-correlation-id"]);
  const [, traceId, parentSpanId] = sent.traceparent.split("-");
  const traceresponse = outcome.headers.get("traceresponse") ?? "";
  const match = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(traceresponse);
  expect(match, `traceresponse ${traceresponse}`).not.toBeNull();
  expect(match?.[1]).toBe(traceId);
  // The server's own span, not the caller's.
  expect(match?.[2]).not.toBe(parentSpanId);
}

interface ConfigValueJson {
  key: JsonValue;
  value: JsonValue;
  source: JsonValue;
  secret: JsonValue;
}

function configValuesOf(body: JsonObject): ConfigValueJson[] {
  const values = body.values;
  if (!Array.isArray(values)) throw new Error(`no values in ${JSON.stringify(body)}`);
  return values.map((value) => {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new Error(`not a config value: ${JSON.stringify(value)}`);
    }
    return {
      key: value.key ?? null,
      value: value.value ?? null,
      source: value.source ?? null,
      secret: value.secret ?? null,
    };
  });
}

// ---------------------------------------------------------------------------------------------
// The protocols

function grpcJsProtocol(address: string): Protocol {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const metadataOf = (headers: Record<string, string>) => {
    const metadata = new grpc.Metadata();
    for (const [key, value] of Object.entries(headers)) metadata.set(key, value);
    return metadata;
  };
  const optionsOf = (deadlineMs: number | undefined): grpc.CallOptions =>
    deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs };
  return {
    stream(rpc, headers, deadlineMs) {
      const { input, output } = rpc.method;
      const call = client.makeServerStreamRequest(
        `/${rpc.method.parent.typeName}/${rpc.method.name}`,
        (message: MessageInitShape<typeof input>) =>
          Buffer.from(toBinary(input, create(input, message))),
        (bytes: Buffer) => fromBinary(output, bytes),
        {},
        metadataOf(headers),
        optionsOf(deadlineMs),
      );
      const progress = streamProgress();
      call.on("data", () => progress.message());
      call.on("error", () => {}); // the status says the same
      call.on("status", (status) =>
        progress.end(status.code === grpc.status.OK ? undefined : (status.code as number as Code)),
      );
      return { first: progress.first, ended: progress.ended, cancel: () => call.cancel() };
    },
    call: (rpc, headers, deadlineMs?: number) =>
      new Promise((resolve) => {
        const { input, output } = rpc.method;
        const metadata = new grpc.Metadata();
        for (const [key, value] of Object.entries(headers)) metadata.set(key, value);
        const received = new Headers();
        const keep = (md: grpc.Metadata) => {
          for (const [key, value] of Object.entries(md.getMap())) {
            if (typeof value === "string") received.set(key, value);
          }
        };
        const call = client.makeUnaryRequest(
          `/${rpc.method.parent.typeName}/${rpc.method.name}`,
          (message: MessageInitShape<typeof input>) =>
            Buffer.from(toBinary(input, create(input, message))),
          (bytes: Buffer) => fromBinary(output, bytes),
          rpc.request,
          metadata,
          optionsOf(deadlineMs),
          (error, response) => {
            if (error) {
              keep(error.metadata);
              resolve({
                code: error.code as number as Code,
                message: error.details,
                body: {},
                headers: received,
                httpStatus: undefined,
                violations: undefined,
                raw: JSON.stringify({ details: error.details, metadata: error.metadata.toJSON() }),
              });
              return;
            }
            const body =
              response === undefined ? {} : (toJson(output, response, jsonOptions) as JsonObject);
            resolve({
              code: undefined,
              message: "",
              body,
              headers: received,
              httpStatus: undefined,
              violations: undefined,
              raw: JSON.stringify(body),
            });
          },
        );
        call.on("metadata", keep);
      }),
    close: () => client.close(),
  };
}

function connectNodeProtocol(
  origin: string,
  transportOf: (sessionManager: Http2SessionManager, agent: Agent) => Transport,
): Protocol {
  const sessionManager = new Http2SessionManager(origin);
  const agent = new Agent({ keepAlive: true });
  const transport = transportOf(sessionManager, agent);
  return {
    stream(rpc, headers) {
      const controller = new AbortController();
      const progress = streamProgress();
      void (async () => {
        try {
          const response = await transport.stream(
            rpc.method,
            controller.signal,
            undefined,
            headers,
            (async function* () {
              yield {};
            })(),
          );
          for await (const _ of response.message) progress.message();
          progress.end(undefined);
        } catch (caught) {
          progress.end(ConnectError.from(caught).code);
        }
      })();
      return { first: progress.first, ended: progress.ended, cancel: () => controller.abort() };
    },
    async call(rpc, headers) {
      try {
        const response = await transport.unary(
          rpc.method,
          undefined,
          undefined,
          headers,
          rpc.request,
        );
        const received = new Headers(response.header);
        for (const [key, value] of response.trailer) received.set(key, value);
        const body = toJson(rpc.method.output, response.message, jsonOptions) as JsonObject;
        return {
          code: undefined,
          message: "",
          body,
          headers: received,
          httpStatus: undefined,
          violations: undefined,
          raw: JSON.stringify(body),
        };
      } catch (caught) {
        const error = ConnectError.from(caught);
        const details = error.findDetails(BadRequestSchema);
        return {
          code: error.code,
          message: error.rawMessage,
          body: {},
          headers: error.metadata,
          httpStatus: undefined,
          violations:
            details.length === 0
              ? undefined
              : details.flatMap((d) => d.fieldViolations.map((v) => v.field)),
          raw: JSON.stringify({ message: error.rawMessage, metadata: [...error.metadata] }),
        };
      }
    },
    close() {
      sessionManager.abort();
      agent.destroy();
    },
  };
}

interface HttpExchange {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
}

type Exchange = (
  origin: string,
  verb: string,
  path: string,
  headers: Record<string, string>,
  body: string | undefined,
) => Promise<HttpExchange>;

async function fetchExchange(
  origin: string,
  verb: string,
  path: string,
  headers: Record<string, string>,
  body: string | undefined,
): Promise<HttpExchange> {
  const response = await fetch(`${origin}${path}`, {
    method: verb,
    headers,
    ...(body === undefined ? {} : { body }),
  });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

async function h2cExchange(
  origin: string,
  verb: string,
  path: string,
  headers: Record<string, string>,
  body: string | undefined,
): Promise<HttpExchange> {
  const response = await h2cRequest(origin, {
    method: verb,
    path,
    headers,
    ...(body === undefined ? {} : { body }),
  });
  const received = new Headers();
  for (const [key, value] of Object.entries(response.headers)) {
    if (key.startsWith(":") || value === undefined) continue;
    received.set(key, Array.isArray(value) ? value.join(", ") : String(value));
  }
  return { status: response.status, headers: received, text: response.text() };
}

/** An NDJSON response as it comes: its status, then its body, chunk by chunk. */
interface RestStreamResponse {
  readonly status: number;
  readonly body: AsyncIterator<Uint8Array>;
}

type RestStreamOpener = (
  origin: string,
  path: string,
  headers: Record<string, string>,
  signal: AbortSignal,
) => Promise<RestStreamResponse>;

async function fetchStream(
  origin: string,
  path: string,
  headers: Record<string, string>,
  signal: AbortSignal,
): Promise<RestStreamResponse> {
  const response = await fetch(`${origin}${path}`, { headers, signal });
  const body = response.body as AsyncIterable<Uint8Array> | null;
  if (body === null) throw new Error(`GET ${path} answered no body`);
  return { status: response.status, body: body[Symbol.asyncIterator]() };
}

async function h2cStream(
  origin: string,
  path: string,
  headers: Record<string, string>,
  signal: AbortSignal,
): Promise<RestStreamResponse> {
  const session = http2.connect(origin);
  session.on("error", () => {}); // the stream's own end or error says what happened
  const stream = session.request({ ":method": "GET", ":path": path, ...headers });
  const closeAll = () => {
    stream.close(http2.constants.NGHTTP2_CANCEL);
    session.close();
  };
  signal.addEventListener("abort", closeAll, { once: true });
  stream.once("close", () => session.close());
  const [responseHeaders] = (await once(stream, "response")) as [http2.IncomingHttpHeaders];
  return {
    status: Number(responseHeaders[":status"]),
    body: (stream as AsyncIterable<Uint8Array>)[Symbol.asyncIterator](),
  };
}

function restProtocol(origin: string, exchange: Exchange, openStream: RestStreamOpener): Protocol {
  return {
    stream(rpc, headers) {
      const controller = new AbortController();
      const progress = streamProgress();
      void (async () => {
        try {
          const response = await openStream(origin, rpc.restPath, headers, controller.signal);
          const lines = lineReader(response.body);
          let code: Code | undefined;
          for (let line = await lines.next(); line !== undefined; line = await lines.next()) {
            const json = JSON.parse(line) as JsonObject;
            const error = response.status === 200 ? json.error : json;
            if (error === undefined) progress.message();
            else if (typeof error === "object" && error !== null && !Array.isArray(error)) {
              code = codeOfName(error.code);
            }
          }
          progress.end(code, response.status);
        } catch {
          progress.end(Code.Canceled); // the client gave up: an abort of ours
        }
      })();
      return { first: progress.first, ended: progress.ended, cancel: () => controller.abort() };
    },
    async call(rpc, headers) {
      if (rpc.rest === undefined) throw new Error(`${rpc.method.name} has no REST binding`);
      const body = rpc.rest.body === undefined ? undefined : JSON.stringify(rpc.rest.body);
      const sent =
        body === undefined ? headers : { ...headers, "content-type": "application/json" };
      const response = await exchange(origin, rpc.rest.verb, rpc.rest.path, sent, body);
      const json = JSON.parse(response.text) as JsonObject;
      const ok = response.status >= 200 && response.status < 300;
      return {
        code: ok ? undefined : codeOfName(json.code),
        message: ok ? "" : String(json.message),
        body: ok ? json : {},
        headers: response.headers,
        httpStatus: response.status,
        violations: ok ? undefined : fieldViolationsOf(json.details),
        raw: response.text,
      };
    },
    close() {},
  };
}

/** The Code of a REST error's `code`, written as Connect writes codes ("invalid_argument"). */
function codeOfName(name: JsonValue | undefined): Code {
  for (const value of Object.values(Code)) {
    if (typeof value !== "number") continue;
    const snake = (Code[value] ?? "").replace(/[A-Z]/g, (c, i: number) =>
      i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`,
    );
    if (snake === name) return value;
  }
  throw new Error(`not a code: ${JSON.stringify(name)}`);
}

function fieldViolationsOf(details: JsonValue | undefined): string[] | undefined {
  if (!Array.isArray(details)) return undefined;
  const fields: string[] = [];
  let found = false;
  for (const detail of details) {
    if (typeof detail !== "object" || detail === null || Array.isArray(detail)) continue;
    if (detail["@type"] !== `type.googleapis.com/${BadRequestSchema.typeName}`) continue;
    found = true;
    const violations = detail.field_violations;
    if (!Array.isArray(violations)) continue;
    for (const v of violations) {
      if (typeof v === "object" && v !== null && !Array.isArray(v)) fields.push(String(v.field));
    }
  }
  return found ? fields : undefined;
}

/** Collects a stream's messages and its end, whatever the client library. */
function streamProgress() {
  let messages = 0;
  let settleFirst: { resolve(): void; reject(error: Error): void } | undefined;
  const first = new Promise<void>((resolve, reject) => {
    settleFirst = { resolve, reject };
  });
  first.catch(() => undefined); // awaited by the tests that care
  let finish: ((end: StreamEnd) => void) | undefined;
  const ended = new Promise<StreamEnd>((resolve) => {
    finish = resolve;
  });
  return {
    first,
    ended,
    message() {
      messages++;
      settleFirst?.resolve();
    },
    end(code: Code | undefined, httpStatus?: number) {
      settleFirst?.reject(new Error(`the stream ended (${code}) before its first message`));
      finish?.({ code, messages, httpStatus });
    },
  };
}
