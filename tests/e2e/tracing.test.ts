import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryService } from "../../gen/orchestrator/v1/registry_pb.js";
import { createGrpcJsClient, type GrpcJsClient } from "../../src/clients/grpc-js-client.js";
import { type FakeService, startFakeService } from "../support/fake-service.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { expectStatus, type Json, patience, rest } from "../support/rest.js";

// Tracing as operators and other services meet it: real nodes on loopback, called over gRPC
// (grpc-js), Connect and REST with W3C traceparent headers; a downstream service on loopback
// that the node calls and that sends its own span back with the real OpenTelemetry OTLP/HTTP
// JSON exporter; and a loopback OTLP receiver standing in for Jaeger or Tempo.

let node: RunningOrchestrator;
let registry: GrpcJsClient<typeof RegistryService>;
let downstream: FakeService;

beforeAll(async () => {
  node = await startOrchestrator();
  registry = createGrpcJsClient(RegistryService, node.address);
  downstream = await startFakeService();
});
afterAll(async () => {
  registry?.close();
  await downstream?.close();
  await node?.close();
});

let counter = 0;
/** A fresh trace id and a caller span id, and the traceparent naming them. */
function callerTrace(flags = "01") {
  counter++;
  const traceId = `${Date.now().toString(16).padStart(16, "0")}${counter.toString(16).padStart(16, "0")}`;
  const spanId = counter.toString(16).padStart(16, "a");
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-${flags}` };
}

async function getTrace(traceId: string): Promise<Json> {
  return expectStatus(rest(node.url, "GET", `/infrastructure/tracing/trace/${traceId}`), 200);
}

type Node = { span: Json; children: Node[] };

describe("server spans", () => {
  it("records a gRPC call continuing the caller's trace, found by its id", async () => {
    const caller = callerTrace();
    await registry.listServices({}, { metadata: { traceparent: caller.traceparent } });
    const body = await getTrace(caller.traceId);
    expect(body).toMatchObject({ trace_id: caller.traceId, span_count: 1, error: false });
    expect(body.services).toEqual(["orchestrator"]);
    const [root] = body.roots as Node[];
    expect(root?.span).toMatchObject({
      trace_id: caller.traceId,
      parent_span_id: caller.spanId,
      name: "orchestrator.v1.RegistryService/ListServices",
      service: "orchestrator",
      kind: "SPAN_KIND_SERVER",
      status: "ok",
      attributes: expect.objectContaining({
        "orchestrator.protocol": "grpc",
        "rpc.grpc.status_code": "0",
      }),
    });
    expect(root?.children).toEqual([]);
  });

  it("records the span the traceresponse header names, on REST and Connect alike", async () => {
    for (const [path, init] of [
      ["/registry", { method: "GET" }],
      [
        "/orchestrator.v1.RegistryService/ListServices",
        { method: "POST", body: "{}", headers: { "content-type": "application/json" } },
      ],
    ] as const) {
      const caller = callerTrace();
      const response = await fetch(`${node.url}${path}`, {
        ...init,
        headers: { ...("headers" in init ? init.headers : {}), traceparent: caller.traceparent },
        signal: AbortSignal.timeout(patience),
      });
      expect(response.status).toBe(200);
      const spanId = /^00-[0-9a-f]{32}-([0-9a-f]{16})-01$/.exec(
        response.headers.get("traceresponse") ?? "",
      )?.[1];
      const [root] = (await getTrace(caller.traceId)).roots as Node[];
      expect(root?.span.span_id).toBe(spanId);
      expect(root?.span.parent_span_id).toBe(caller.spanId);
      expect(root?.span.attributes).toHaveProperty(
        ["orchestrator.protocol"],
        path === "/registry" ? "rest" : "connect",
      );
    }
  });

  it("starts a trace when the caller sends none, and names it in traceresponse", async () => {
    const response = await fetch(`${node.url}/info`, { signal: AbortSignal.timeout(patience) });
    const [, traceId, spanId] =
      /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(response.headers.get("traceresponse") ?? "") ??
      [];
    const [root] = (await getTrace(traceId ?? "")).roots as Node[];
    expect(root?.span).toMatchObject({ span_id: spanId, parent_span_id: "" });
  });

  it("marks a failed call as an error with the code and message the client saw", async () => {
    const caller = callerTrace();
    await registry
      .getService({ name: "nobody" }, { metadata: { traceparent: caller.traceparent } })
      .catch(() => undefined);
    const body = await getTrace(caller.traceId);
    expect(body.error).toBe(true);
    const [root] = body.roots as Node[];
    expect(root?.span).toMatchObject({
      status: "error",
      status_message: expect.stringMatching(/^NotFound: .*nobody/),
    });
    expect(root?.span.attributes).toHaveProperty(["rpc.grpc.status_code"], "5");
  });

  it("records nothing for a caller that did not sample its trace", async () => {
    const caller = callerTrace("00");
    await registry.listServices({}, { metadata: { traceparent: caller.traceparent } });
    const reply = await rest(node.url, "GET", `/infrastructure/tracing/trace/${caller.traceId}`);
    expect(reply.status).toBe(404);
  });
});

describe("a trace crossing the orchestrator and a downstream service", () => {
  it("holds the server span, the client span and the downstream's own span as one tree", async () => {
    downstream.serveDocument({ openapi: "3.0.0", info: { title: "t", version: "1" }, paths: {} });
    await expectStatus(
      rest(node.url, "POST", "/registry/register", {
        name: "traced-billing",
        base_url: downstream.url,
        openapi_url: downstream.openapiUrl,
        ttl_seconds: 0,
      }),
      200,
    );
    const caller = callerTrace();
    const polled = await fetch(`${node.url}/registry/poll-openapi`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: caller.traceparent },
      body: JSON.stringify({ names: ["traced-billing"] }),
      signal: AbortSignal.timeout(patience),
    });
    expect(polled.status).toBe(200);
    const fetched = downstream.requests.find(
      (r) => r.path === "/openapi.json" && String(r.headers.traceparent).includes(caller.traceId),
    );
    const [, clientSpanId] =
      /^00-[0-9a-f]{32}-([0-9a-f]{16})-01$/.exec(String(fetched?.headers.traceparent)) ?? [];
    expect(clientSpanId).toBeDefined();

    // The downstream service records its own span under the client span and sends it with the
    // OpenTelemetry SDK's OTLP/HTTP JSON exporter, pointed at the node.
    const provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ "service.name": "billing-downstream" }),
      spanProcessors: [
        new SimpleSpanProcessor(
          new OTLPTraceExporter({ url: `${node.url}/infrastructure/tracing/spans` }),
        ),
      ],
    });
    const parent = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: caller.traceId,
      spanId: clientSpanId ?? "",
      traceFlags: 1,
      isRemote: true,
    });
    const span = provider
      .getTracer("billing")
      .startSpan("GET /openapi.json", { kind: SpanKind.SERVER, attributes: { rows: 3 } }, parent);
    span.setStatus({ code: SpanStatusCode.ERROR, message: "slow disk" });
    span.end();
    await provider.forceFlush();
    await provider.shutdown();

    const body = await getTrace(caller.traceId);
    expect(body).toMatchObject({ span_count: 3, error: true });
    expect(body.services).toEqual(["billing-downstream", "orchestrator"]);
    const roots = body.roots as Node[];
    expect(roots).toHaveLength(1);
    const server = roots[0] as Node;
    expect(server.span).toMatchObject({
      name: "orchestrator.v1.RegistryService/PollOpenApi",
      parent_span_id: caller.spanId,
    });
    const client = server.children[0] as Node;
    expect(client.span).toMatchObject({
      span_id: clientSpanId,
      name: "GET",
      kind: "SPAN_KIND_CLIENT",
      service: "orchestrator",
      status: "ok",
      attributes: expect.objectContaining({
        "url.path": "/openapi.json",
        "http.response.status_code": "200",
      }),
    });
    expect(client.children.map((c) => c.span)).toEqual([
      expect.objectContaining({
        name: "GET /openapi.json",
        service: "billing-downstream",
        kind: "SPAN_KIND_SERVER",
        status: "error",
        status_message: "slow disk",
        attributes: { rows: "3" },
      }),
    ]);

    const listed = await expectStatus(
      rest(node.url, "GET", "/infrastructure/tracing/service/billing-downstream?errors_only=true"),
      200,
    );
    expect(listed).toMatchObject({ service_name: "billing-downstream", count: 1 });
    expect((listed.traces as Json[])[0]).toMatchObject({
      trace_id: caller.traceId,
      root_name: "orchestrator.v1.RegistryService/PollOpenApi",
      span_count: 3,
      error: true,
    });

    const stats = await expectStatus(rest(node.url, "GET", "/infrastructure/tracing/stats"), 200);
    expect(stats.total_spans as number).toBeGreaterThanOrEqual(3);
    expect(stats.services_traced as number).toBeGreaterThanOrEqual(2);
    expect(stats.operations).toContainEqual(
      expect.objectContaining({
        service: "billing-downstream",
        operation: "GET /openapi.json",
        count: 1,
        error_count: 1,
      }),
    );
  });
});

describe("POST /infrastructure/tracing/spans", () => {
  const now = BigInt(Date.now()) * 1_000_000n;
  const otlp = (span: Json) => ({
    resourceSpans: [
      {
        resource: { attributes: [{ key: "service.name", value: { stringValue: "curl-service" } }] },
        scopeSpans: [{ scope: { name: "manual" }, spans: [span] }],
      },
    ],
  });
  const span = (overrides: Json = {}) => ({
    traceId: callerTrace().traceId.toUpperCase(),
    spanId: "00f067aa0ba902b7",
    name: "work",
    kind: 1,
    startTimeUnixNano: String(now),
    endTimeUnixNano: String(now + 2_500_000n),
    attributes: [
      { key: "n", value: { intValue: "7" } },
      {
        key: "tags",
        value: { arrayValue: { values: [{ stringValue: "a" }, { boolValue: true }] } },
      },
    ],
    status: { code: "STATUS_CODE_OK" },
    ...overrides,
  });

  it("keeps a span written as OTLP/JSON, ids in any case", async () => {
    const sent = span();
    const reply = await expectStatus(
      rest(node.url, "POST", "/infrastructure/tracing/spans", otlp(sent)),
      200,
    );
    expect(reply).toMatchObject({ accepted_spans: 1 });
    const body = await getTrace(String(sent.traceId).toLowerCase());
    expect((body.roots as Node[])[0]?.span).toMatchObject({
      span_id: "00f067aa0ba902b7",
      service: "curl-service",
      kind: "SPAN_KIND_INTERNAL",
      duration_ms: 2.5,
      status: "ok",
      attributes: { n: "7", tags: '["a",true]' },
    });
  });

  it("counts a repeated span id as rejected, keeping the first", async () => {
    const sent = span();
    const twice = otlp(sent);
    twice.resourceSpans[0]?.scopeSpans[0]?.spans.push({ ...sent, name: "again" });
    const reply = await expectStatus(
      rest(node.url, "POST", "/infrastructure/tracing/spans", twice),
      200,
    );
    expect(reply).toMatchObject({ accepted_spans: 1, partial_success: { rejected_spans: "1" } });
    const body = await getTrace(String(sent.traceId).toLowerCase());
    expect((body.roots as Node[]).map((r) => r.span.name)).toEqual(["work"]);
  });

  it("keeps every span of an export larger than one slice, across its traces", async () => {
    const traces = [callerTrace().traceId, callerTrace().traceId, callerTrace().traceId];
    const spans = Array.from({ length: 1_200 }, (_, i) => ({
      ...span(),
      traceId: traces[i % 3],
      spanId: (i + 1).toString(16).padStart(16, "0"),
      name: `step ${i}`,
    }));
    const sent = otlp(spans[0] as Json);
    sent.resourceSpans[0]?.scopeSpans[0]?.spans.splice(0, 1, ...spans);
    const reply = await expectStatus(
      rest(node.url, "POST", "/infrastructure/tracing/spans", sent),
      200,
    );
    expect(reply).toEqual({ accepted_spans: 1_200 });
    for (const traceId of traces) {
      expect((await getTrace(traceId ?? "")).span_count).toBe(400);
    }
  });

  it.each([
    [{ traceId: "abc" }, "resource_spans[0].scope_spans[0].spans[0].trace_id"],
    [{ traceId: "0".repeat(32) }, "resource_spans[0].scope_spans[0].spans[0].trace_id"],
    [{ spanId: "xyz" }, "resource_spans[0].scope_spans[0].spans[0].span_id"],
    [{ parentSpanId: "12" }, "resource_spans[0].scope_spans[0].spans[0].parent_span_id"],
    [{ name: "" }, "resource_spans[0].scope_spans[0].spans[0].name"],
    [{ endTimeUnixNano: String(now - 1n) }, "end_time_unix_nano"],
    [{ startTimeUnixNano: "soon" }, "start_time_unix_nano"],
  ])("refuses %j with 400 naming the field, keeping nothing", async (overrides, field) => {
    const sent = span(overrides);
    const reply = await rest(node.url, "POST", "/infrastructure/tracing/spans", otlp(sent));
    expect(reply.status, reply.text).toBe(400);
    expect(String(reply.body.message)).toContain(field);
    if (/^[0-9a-fA-F]{32}$/.test(String(sent.traceId)) && !/^0+$/.test(String(sent.traceId))) {
      const lookup = `/infrastructure/tracing/trace/${String(sent.traceId).toLowerCase()}`;
      expect((await rest(node.url, "GET", lookup)).status).toBe(404);
    }
  });
});

describe("lookups' bad input", () => {
  it.each([
    ["/infrastructure/tracing/trace/not-a-trace", 400, "trace_id"],
    [`/infrastructure/tracing/trace/${"ab".repeat(16)}`, 404, "not held"],
    ["/infrastructure/tracing/service/x?limit=5000", 400, "limit"],
    ["/infrastructure/tracing/service/x?limit=ten", 400, "limit"],
  ])("GET %s answers %i naming %s", async (path, status, mentions) => {
    const reply = await rest(node.url, "GET", path);
    expect(reply.status, reply.text).toBe(status);
    expect(String(reply.body.message)).toContain(mentions);
  });
});

describe("OTLP export", () => {
  it("sends the node's spans to the configured collector, flushed on shutdown", async () => {
    const received: { path: string; type: string; body: Json }[] = [];
    const collector = await listen((request, body) => {
      received.push({
        path: request.url ?? "",
        type: String(request.headers["content-type"]),
        body: JSON.parse(body) as Json,
      });
    });
    const exporting = await startOrchestrator({
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: `${collector.url}/` },
    });
    try {
      const caller = callerTrace();
      const response = await fetch(`${exporting.url}/registry`, {
        headers: { traceparent: caller.traceparent },
        signal: AbortSignal.timeout(patience),
      });
      expect(response.status).toBe(200);
      await exporting.close();
      const spans = received.flatMap((r) =>
        (r.body.resourceSpans as Json[]).flatMap((rs) =>
          (rs.scopeSpans as Json[]).flatMap((ss) =>
            (ss.spans as Json[]).map((s) => ({ ...s, resource: rs.resource })),
          ),
        ),
      );
      expect(received.every((r) => r.path === "/v1/traces" && r.type.includes("json"))).toBe(true);
      expect(spans).toContainEqual(
        expect.objectContaining({
          traceId: caller.traceId,
          parentSpanId: caller.spanId,
          name: "orchestrator.v1.RegistryService/ListServices",
          resource: expect.objectContaining({
            attributes: expect.arrayContaining([
              { key: "service.name", value: { stringValue: "orchestrator" } },
            ]),
          }),
        }),
      );
    } finally {
      await exporting.close();
      await collector.close();
    }
  });
});

describe("TRACING_ENABLED=false", () => {
  it("records no span of its own, and still keeps the spans others send", async () => {
    const quiet = await startOrchestrator({ env: { TRACING_ENABLED: "false" } });
    try {
      const caller = callerTrace();
      const response = await fetch(`${quiet.url}/registry`, {
        headers: { traceparent: caller.traceparent },
        signal: AbortSignal.timeout(patience),
      });
      expect(response.status).toBe(200);
      const lookup = `/infrastructure/tracing/trace/${caller.traceId}`;
      expect((await rest(quiet.url, "GET", lookup)).status).toBe(404);
      const sent = {
        resourceSpans: [
          {
            scopeSpans: [
              {
                spans: [
                  {
                    traceId: caller.traceId,
                    spanId: "1111111111111111",
                    name: "elsewhere",
                    startTimeUnixNano: "1000000",
                    endTimeUnixNano: "2000000",
                  },
                ],
              },
            ],
          },
        ],
      };
      await expectStatus(rest(quiet.url, "POST", "/infrastructure/tracing/spans", sent), 200);
      const body = await expectStatus(rest(quiet.url, "GET", lookup), 200);
      expect(body).toMatchObject({ span_count: 1, services: ["unknown_service"] });
    } finally {
      await quiet.close();
    }
  });
});

/** An HTTP server on loopback that hands every request's body to `onRequest` and answers 200. */
async function listen(
  onRequest: (request: IncomingMessage, body: string) => void,
): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      onRequest(request, Buffer.concat(chunks).toString("utf8"));
      response.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
