import { randomUUID } from "node:crypto";
import { gzipSync } from "node:zlib";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  compressionGzip,
  createGrpcTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  RegisterServiceRequestSchema,
  RegistryService,
} from "../../gen/orchestrator/v1/registry_pb.js";
import {
  ServingStatus,
  SystemService,
  type WatchHealthResponse,
  WatchHealthResponseSchema,
} from "../../gen/orchestrator/v1/system_pb.js";
import { createGrpcJsClient, type GrpcJsClient } from "../../src/clients/grpc-js-client.js";
import { type H2cResponse, h2cRequest } from "../support/h2c.js";
import {
  metricValue,
  type RunningOrchestrator,
  startOrchestrator,
} from "../support/orchestrator.js";

// The gRPC fast path (application/grpc on HTTP/2) with real clients: grpc-js first, connect-node's
// gRPC transport where it is cheap, and raw HTTP/2 for what no well-behaved client sends.

const operatorToken = `operator-${randomUUID()}`;
const adminToken = `admin-${randomUUID()}`;
const bodyLimitBytes = 2048;
const gzipChannel: grpc.ClientOptions = {
  "grpc.default_compression_algorithm": 2,
  "grpc.default_compression_level": 2,
};
const waitLong = { timeout: 15_000, interval: 50 };

let node: RunningOrchestrator;
let system: GrpcJsClient<typeof SystemService>;
let registry: GrpcJsClient<typeof RegistryService>;

beforeAll(async () => {
  // Auth is off on this node (it listens on loopback): these tests are about the transport. The
  // tests of the authorization header start a node with tokens of their own.
  node = await startOrchestrator({ env: { BODY_LIMIT_BYTES: String(bodyLimitBytes) } });
  system = createGrpcJsClient(SystemService, node.address);
  registry = createGrpcJsClient(RegistryService, node.address);
});

afterAll(async () => {
  system?.close();
  registry?.close();
  await node?.close();
});

/** Clients and nodes a single test opened; closed after it, whatever happened. */
const opened: { close(): unknown }[] = [];
afterEach(async () => {
  for (const resource of opened.splice(0).reverse()) await resource.close();
});

describe("WatchHealth (server streaming)", () => {
  it("sends SERVING, then NOT_SERVING when the node shuts down, and ends with OK", async () => {
    const own = await startOrchestrator();
    opened.push(own);
    const client = createGrpcJsClient(SystemService, own.address);
    opened.push(client);
    const watch = watchHealth(client.raw);

    await vi.waitFor(() => expect(watch.statuses()).toEqual([ServingStatus.SERVING]), waitLong);
    await own.close();
    const status = await watch.ended;

    expect(grpc.status[status.code]).toBe("OK");
    expect(watch.statuses()).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
  });

  it("ends with DEADLINE_EXCEEDED at the client's deadline, leaving no call open", async () => {
    const watch = watchHealth(system.raw, { deadline: Date.now() + 300 });
    const status = await watch.ended;

    expect(grpc.status[status.code]).toBe("DEADLINE_EXCEEDED");
    for (const served of watch.statuses()) expect(served).toBe(ServingStatus.SERVING);
    await expectNoWatchHealthOpen();
  });

  it("honours a grpc-timeout header on its own (no client-side deadline)", async () => {
    const response = await rawGrpc("/orchestrator.v1.SystemService/WatchHealth", emptyFrame(), {
      "grpc-timeout": "300m",
    });

    expect(grpcStatusOf(response)).toBe(String(grpc.status.DEADLINE_EXCEEDED));
    for (const message of framesOf(response.body)) {
      expect(fromBinary(WatchHealthResponseSchema, message).status).toBe(ServingStatus.SERVING);
    }
    await expectNoWatchHealthOpen();
  });

  it("is released on the server when the client cancels it", async () => {
    await expectNoWatchHealthOpen();
    const before = await watchHealthCounts();
    const watch = watchHealth(system.raw);
    await vi.waitFor(() => expect(watch.statuses()).toEqual([ServingStatus.SERVING]), waitLong);

    watch.call.cancel();
    const status = await watch.ended;
    expect(grpc.status[status.code]).toBe("CANCELLED");

    // Once the server has handled the call, started and handled agree again: nothing is left open.
    await vi.waitFor(async () => {
      expect((await watchHealthCounts()).handled).toBe(before.handled + 1);
    }, waitLong);
    const after = await watchHealthCounts();
    expect(after.started).toBe(before.started + 1);
    // The server records the call as the client saw it: cancelled.
    expect(after.handledCanceled).toBe(before.handledCanceled + 1);
  });
});

/** A node with tokens, for the tests of the authorization header. */
async function startAuthNode(): Promise<RunningOrchestrator> {
  const own = await startOrchestrator({
    env: { AUTH_TOKENS: `admin:${adminToken}`, OPERATOR_TOKEN: operatorToken },
  });
  opened.push(own);
  return own;
}

describe("metadata", () => {
  it("carries the authorization header of an admin RPC", async () => {
    const own = await startAuthNode();
    const client = createGrpcJsClient(SystemService, own.address);
    opened.push(client);
    const noToken = await failureOf(client.getEffectiveConfig({}));
    const wrong = await failureOf(
      client.getEffectiveConfig({}, { metadata: { authorization: "Bearer wrong" } }),
    );
    const operator = await failureOf(
      client.getEffectiveConfig({}, { metadata: { authorization: `Bearer ${operatorToken}` } }),
    );
    const response = await client.getEffectiveConfig(
      {},
      { metadata: { authorization: `Bearer ${adminToken}` } },
    );

    expect(grpc.status[noToken.code]).toBe("UNAUTHENTICATED");
    expect(grpc.status[wrong.code]).toBe("UNAUTHENTICATED");
    expect(grpc.status[operator.code]).toBe("PERMISSION_DENIED");
    const secret = response.values.find((value) => value.key === "OPERATOR_TOKEN");
    expect(secret).toMatchObject({ value: "[redacted]", source: "env", secret: true });
    expect(JSON.stringify(response.values)).not.toContain(operatorToken);
    expect(JSON.stringify(response.values)).not.toContain(adminToken);
  });

  it("answers with the caller's correlation id and trace, and grpc-status 0 in trailers", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const response = await rawGrpc("/orchestrator.v1.SystemService/Ping", emptyFrame(), {
      "grpc-timeout": "10S", // a deadline the call meets
      "x-correlation-id": "fast-path:ping",
      traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
    });

    expect(response.status).toBe(200);
    expect(response.headers["content-type"]).toBe("application/grpc");
    expect(response.headers["grpc-status"]).toBeUndefined();
    expect(response.headers["x-correlation-id"]).toBe("fast-path:ping");
    expect(response.headers.traceresponse).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
    expect([...response.body]).toEqual([0, 0, 0, 0, 0]); // one empty PingResponse
    expect(response.trailers["grpc-status"]).toBe("0");
  });

  it("grpc-js sees a successful unary call end with OK", async () => {
    await expect(system.ping({})).resolves.toMatchObject({
      $typeName: "orchestrator.v1.PingResponse",
    });
  });

  // Every response should carry x-correlation-id; calls refused before the method is resolved do
  // not (unknown method, unsupported grpc-encoding, malformed grpc-timeout). See the report.
  it("answers an unknown method with the caller's x-correlation-id", async () => {
    const response = await rawGrpc("/orchestrator.v1.SystemService/Nope", emptyFrame(), {
      "x-correlation-id": "fast-path:unknown",
    });
    expect(grpcStatusOf(response)).toBe(String(grpc.status.UNIMPLEMENTED));
    expect(response.headers["x-correlation-id"]).toBe("fast-path:unknown");
  });
});

describe("gzip request compression", () => {
  const valid = { name: "billing", baseUrl: "http://billing.internal:8080" };
  let gzip: GrpcJsClient<typeof RegistryService>;
  beforeAll(() => {
    gzip = createGrpcJsClient(
      RegistryService,
      node.address,
      grpc.credentials.createInsecure(),
      gzipChannel,
    );
  });
  afterAll(() => gzip?.close());

  it("decodes a compressed message: validation judges its content", async () => {
    const error = await failureOf(gzip.registerService({ ...valid, version: "v".repeat(1500) }));

    expect(grpc.status[error.code]).toBe("INVALID_ARGUMENT");
    expect(decodeMessage(error.details)).toBe(
      "invalid request: version: must be at most 64 characters",
    );
  });

  it("decodes a compressed valid message whole: the registration is stored as sent", async () => {
    const endpoints = Array.from({ length: 10 }, (_, i) => `/${i}${"e".repeat(148)}`);
    const response = await gzip.registerService({ ...valid, endpoints });

    expect(response.status).toBe("registered");
    expect(response.service?.endpoints).toEqual(endpoints);
  });

  it("bounds the inflated size: the message was compressed on the wire", async () => {
    const request = { ...valid, version: "1", endpoints: Array(30).fill(`/${"e".repeat(149)}`) };
    const encoded = toBinary(
      RegisterServiceRequestSchema,
      create(RegisterServiceRequestSchema, request),
    );
    expect(encoded.length).toBeGreaterThan(bodyLimitBytes);

    const compressed = await failureOf(gzip.registerService(request));
    const plain = await failureOf(registry.registerService(request));

    expect(grpc.status[compressed.code]).toBe("RESOURCE_EXHAUSTED");
    expect(decodeMessage(compressed.details)).toBe(
      `decompressed message exceeds the limit of ${bodyLimitBytes} bytes`,
    );
    expect(grpc.status[plain.code]).toBe("RESOURCE_EXHAUSTED");
    expect(decodeMessage(plain.details)).toMatch(/^message of \d+ bytes exceeds the limit of 2048/);
  });
});

describe("refusals", () => {
  it("answers an unknown method UNIMPLEMENTED", async () => {
    const error = await new Promise<grpc.ServiceError | null>((resolve) => {
      system.raw.makeUnaryRequest(
        "/orchestrator.v1.SystemService/Nope",
        (bytes: Buffer) => bytes,
        (bytes: Buffer) => bytes,
        Buffer.alloc(0),
        (failure) => resolve(failure),
      );
    });
    expect(error === null ? "OK" : grpc.status[error.code]).toBe("UNIMPLEMENTED");
  });

  it("answers bytes that are not a valid message INVALID_ARGUMENT", async () => {
    const response = await rawGrpc(
      "/orchestrator.v1.SystemService/Info",
      frame([0xff, 0xff, 0xff]),
    );

    expect(grpcStatusOf(response)).toBe(String(grpc.status.INVALID_ARGUMENT));
    expect(grpcMessageOf(response)).toBe(
      "request is not a valid orchestrator.v1.InfoRequest message",
    );
  });

  it("answers a message over BODY_LIMIT_BYTES RESOURCE_EXHAUSTED", async () => {
    const error = await failureOf(
      registry.registerService({ name: "billing", baseUrl: "http://b", version: "v".repeat(4000) }),
    );
    const raw = await rawGrpc("/orchestrator.v1.SystemService/Info", frame(new Uint8Array(4096)));

    expect(grpc.status[error.code]).toBe("RESOURCE_EXHAUSTED");
    expect(grpcStatusOf(raw)).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
    expect(grpcMessageOf(raw)).toBe(
      `message of 4096 bytes exceeds the limit of ${bodyLimitBytes} bytes`,
    );
  });

  it("answers a gzip message that inflates beyond the limit RESOURCE_EXHAUSTED", async () => {
    const bomb = gzipSync(Buffer.alloc(1024 * 1024));
    expect(bomb.length).toBeLessThan(bodyLimitBytes);
    const response = await rawGrpc("/orchestrator.v1.SystemService/Info", frame(bomb, true), {
      "grpc-encoding": "gzip",
    });

    expect(grpcStatusOf(response)).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
    expect(grpcMessageOf(response)).toBe(
      `decompressed message exceeds the limit of ${bodyLimitBytes} bytes`,
    );
  });

  it("answers an unsupported grpc-encoding UNIMPLEMENTED, naming what it accepts", async () => {
    const response = await rawGrpc("/orchestrator.v1.SystemService/Info", emptyFrame(), {
      "grpc-encoding": "br",
    });

    expect(grpcStatusOf(response)).toBe(String(grpc.status.UNIMPLEMENTED));
    expect(response.headers["grpc-accept-encoding"]).toBe("gzip");
  });

  it("refuses a malformed grpc-timeout, without repeating it", async () => {
    for (const value of ["soon", "9".repeat(5000)]) {
      const response = await rawGrpc("/orchestrator.v1.SystemService/Ping", emptyFrame(), {
        "grpc-timeout": value,
      });
      expect(grpcStatusOf(response)).toBe(String(grpc.status.INVALID_ARGUMENT));
      expect(grpcMessageOf(response)).toBe(
        "invalid grpc-timeout: expected 1 to 8 digits and a unit (H, M, S, m, u or n)",
      );
    }
  });

  it("bounds the message about a very long unknown path", async () => {
    const path = `/orchestrator.v1.SystemService/${"N".repeat(5000)}`;
    const response = await rawGrpc(path, emptyFrame());

    expect(grpcStatusOf(response)).toBe(String(grpc.status.UNIMPLEMENTED));
    const message = grpcMessageOf(response);
    expect(message.startsWith("unknown method /orchestrator.v1.SystemService/NNN")).toBe(true);
    expect(message.length).toBeLessThanOrEqual(600);
  });
});

describe("connect-node gRPC transport", () => {
  let sessionManager: Http2SessionManager;
  beforeAll(() => {
    sessionManager = new Http2SessionManager(node.url);
  });
  afterAll(() => sessionManager?.abort());

  const systemClient = () =>
    createClient(SystemService, createGrpcTransport({ baseUrl: node.url, sessionManager }));
  const gzipRegistry = () =>
    createClient(
      RegistryService,
      createGrpcTransport({
        baseUrl: node.url,
        sessionManager,
        sendCompression: compressionGzip,
        compressMinBytes: 1,
      }),
    );

  it("calls Health and sends headers (the admin token)", async () => {
    const own = await startAuthNode();
    const ownSessions = new Http2SessionManager(own.url);
    opened.push({ close: () => ownSessions.abort() });
    const client = createClient(
      SystemService,
      createGrpcTransport({ baseUrl: own.url, sessionManager: ownSessions }),
    );
    const health = await client.health({});
    const denied = await connectFailureOf(client.getEffectiveConfig({}));
    const config = await client.getEffectiveConfig(
      {},
      { headers: { authorization: `Bearer ${adminToken}` } },
    );

    expect(health).toMatchObject({ status: "healthy", nodeId: own.app.node.nodeId });
    expect(Code[denied.code]).toBe("Unauthenticated");
    expect(config.values.find((v) => v.key === "OPERATOR_TOKEN")?.value).toBe("[redacted]");
  });

  it("sends gzip messages the server decodes and bounds", async () => {
    const client = gzipRegistry();
    const valid = { name: "billing", baseUrl: "http://billing.internal" };
    const invalid = await connectFailureOf(
      client.registerService({ ...valid, version: "v".repeat(1500) }),
    );
    const tooBig = await connectFailureOf(
      client.registerService({ ...valid, endpoints: Array(30).fill(`/${"e".repeat(149)}`) }),
    );

    expect([Code[invalid.code], invalid.rawMessage]).toEqual([
      "InvalidArgument",
      "invalid request: version: must be at most 64 characters",
    ]);
    expect([Code[tooBig.code], tooBig.rawMessage]).toEqual([
      "ResourceExhausted",
      `decompressed message exceeds the limit of ${bodyLimitBytes} bytes`,
    ]);
  });

  it("ends WatchHealth with DeadlineExceeded at its timeout", async () => {
    const seen: ServingStatus[] = [];
    const failure = await connectFailureOf(
      (async () => {
        for await (const message of systemClient().watchHealth({}, { timeoutMs: 300 })) {
          seen.push(message.status);
        }
      })(),
    );

    expect(Code[failure.code]).toBe("DeadlineExceeded");
    for (const served of seen) expect(served).toBe(ServingStatus.SERVING);
    await expectNoWatchHealthOpen();
  });

  it("cancels WatchHealth through its signal, leaving no call open", async () => {
    const controller = new AbortController();
    const seen: ServingStatus[] = [];
    const failure = await connectFailureOf(
      (async () => {
        for await (const message of systemClient().watchHealth({}, { signal: controller.signal })) {
          seen.push(message.status);
          controller.abort();
        }
      })(),
    );

    expect(Code[failure.code]).toBe("Canceled");
    expect(seen).toEqual([ServingStatus.SERVING]);
    await expectNoWatchHealthOpen();
  });

  it("answers a message over the limit ResourceExhausted", async () => {
    const client = createClient(
      RegistryService,
      createGrpcTransport({ baseUrl: node.url, sessionManager }),
    );
    const failure = await connectFailureOf(
      client.registerService({ name: "billing", baseUrl: "http://b", version: "v".repeat(4000) }),
    );
    expect(Code[failure.code]).toBe("ResourceExhausted");
  });
});

// ---------------------------------------------------------------------------------------------

interface Watch {
  readonly call: grpc.ClientReadableStream<WatchHealthResponse>;
  /** The statuses received so far. */
  statuses(): ServingStatus[];
  /** The call's final status, whatever it is. */
  readonly ended: Promise<grpc.StatusObject>;
}

/** Opens SystemService/WatchHealth with grpc-js, keeping the call object to cancel it. */
function watchHealth(client: grpc.Client, options: grpc.CallOptions = {}): Watch {
  const method = SystemService.method.watchHealth;
  const call = client.makeServerStreamRequest(
    `/${SystemService.typeName}/${method.name}`,
    (request: MessageInitShape<typeof method.input>) =>
      Buffer.from(toBinary(method.input, create(method.input, request))),
    (bytes: Buffer) => fromBinary(method.output, bytes),
    {},
    new grpc.Metadata(),
    options,
  );
  const received: WatchHealthResponse[] = [];
  call.on("data", (message: WatchHealthResponse) => received.push(message));
  call.on("error", () => {}); // the status below says the same
  const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  return { call, statuses: () => received.map((m) => m.status), ended };
}

interface WatchHealthCounts {
  readonly started: number;
  /** Over every code. */
  readonly handled: number;
  readonly handledCanceled: number;
}

async function watchHealthCounts(): Promise<WatchHealthCounts> {
  const series = { service: "orchestrator.v1.SystemService", method: "WatchHealth" };
  const auth = {};
  const [started, handled, handledCanceled] = await Promise.all([
    metricValue(node, "orchestrator_rpc_started_total", series, auth),
    metricValue(node, "orchestrator_rpc_handled_total", series, auth),
    metricValue(node, "orchestrator_rpc_handled_total", { ...series, code: "Canceled" }, auth),
  ]);
  return { started, handled, handledCanceled };
}

/** Polls the node's metrics until every WatchHealth it started has been handled. */
async function expectNoWatchHealthOpen(): Promise<void> {
  await vi.waitFor(async () => {
    const counts = await watchHealthCounts();
    expect(counts.handled).toBe(counts.started);
  }, waitLong);
}

async function failureOf(call: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await call;
  } catch (error) {
    if (error instanceof Error && "code" in error && "details" in error) {
      return error as grpc.ServiceError;
    }
    throw error;
  }
  throw new Error("the call succeeded");
}

async function connectFailureOf(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("the call succeeded");
}

/**
 * The server percent-encodes only what the gRPC spec requires (bytes outside 0x20-0x7E, and "%"),
 * so grpc-js shows the message as written: nothing is left to decode.
 */
function decodeMessage(details: string): string {
  return details;
}

/** One gRPC call on raw HTTP/2: what no well-behaved client would send. */
function rawGrpc(
  path: string,
  body: Uint8Array,
  headers: Record<string, string> = {},
): Promise<H2cResponse> {
  return h2cRequest(node.url, {
    method: "POST",
    path,
    headers: { "content-type": "application/grpc", te: "trailers", ...headers },
    body,
  });
}

/** A length-prefixed gRPC message. */
function frame(payload: ArrayLike<number>, compressed = false): Buffer {
  const bytes = Buffer.from(Uint8Array.from(payload));
  const prefix = Buffer.alloc(5);
  prefix[0] = compressed ? 1 : 0;
  prefix.writeUInt32BE(bytes.length, 1);
  return Buffer.concat([prefix, bytes]);
}

function emptyFrame(): Buffer {
  return frame([]);
}

/** The messages of a response body, without their prefixes. */
function framesOf(body: Buffer): Buffer[] {
  const messages: Buffer[] = [];
  for (let at = 0; at + 5 <= body.length; ) {
    const length = body.readUInt32BE(at + 1);
    messages.push(body.subarray(at + 5, at + 5 + length));
    at += 5 + length;
  }
  return messages;
}

/** grpc-status from the trailers, or from the headers of a trailers-only answer. */
function grpcStatusOf(response: H2cResponse): string | undefined {
  const value = response.trailers["grpc-status"] ?? response.headers["grpc-status"];
  return Array.isArray(value) ? value[0] : value;
}

function grpcMessageOf(response: H2cResponse): string {
  const value = response.trailers["grpc-message"] ?? response.headers["grpc-message"];
  return decodeURIComponent(String(value ?? ""));
}

describe("grpc-message", () => {
  it("reaches grpc-js as written: only what the spec requires is percent-encoded", async () => {
    const error = await failureOf(registry.registerService({ name: "Bad Name!" }));
    expect(error.details).toMatch(/^invalid request: name: must match \^\[a-z0-9\]/);
  });
});
