import { create, type DescMethod, isMessage, type Message } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createHandlerContext,
  type HandlerContext,
  type ServiceImpl,
} from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { PeerService, ReplicateRequestSchema } from "../../gen/orchestrator/v1/peer_pb.js";
import {
  RegisterServiceRequestSchema,
  RegistryService,
  WatchServicesRequestSchema,
  WatchServicesResponseSchema,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { SystemService } from "../../gen/orchestrator/v1/system_pb.js";
import { once, type StreamingCall, type UnaryCall, wrapService } from "./chain.js";
import { createValidationInterceptor, invalidRequestError } from "./validation.js";

function contextFor(method: DescMethod): HandlerContext {
  return createHandlerContext({
    service: method.parent,
    method,
    protocolName: "test",
    requestMethod: "POST",
    url: `http://localhost/${method.parent.typeName}/${method.name}`,
  });
}

/** RegistryService wrapped with validation; `reached` lists the methods its implementation ran. */
function wrappedRegistry() {
  const reached: string[] = [];
  const impl: ServiceImpl<typeof RegistryService> = {
    registerService: (request) => {
      reached.push(`RegisterService ${request.name}`);
      return { status: "registered", count: 1 };
    },
    listServices: () => ({}),
    getService: () => ({}),
    deregisterService: () => ({}),
    heartbeat: () => ({}),
    pollOpenApi: () => ({}),
    async *watchServices(request) {
      reached.push(`WatchServices ${request.namePrefix}`);
      yield { revision: 7n };
    },
  };
  const wrapped = wrapService(RegistryService, impl, [createValidationInterceptor()]);
  const unary = (name: string): UnaryCall => {
    const method = wrapped.methods.get(name);
    if (method === undefined || method.streaming) throw new Error(`${name} is not unary`);
    return method.call;
  };
  const streaming = (name: string): StreamingCall => {
    const method = wrapped.methods.get(name);
    if (method === undefined || !method.streaming) throw new Error(`${name} is not streaming`);
    return method.call;
  };
  return { reached, unary, streaming };
}

async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  if (!(error instanceof ConnectError)) throw new Error(`expected a ConnectError, got ${error}`);
  return error;
}

async function collect(messages: AsyncIterable<Message>): Promise<Message[]> {
  const all: Message[] = [];
  for await (const message of messages) all.push(message);
  return all;
}

describe("createValidationInterceptor", () => {
  const registerContext = contextFor(RegistryService.method.registerService);
  const watchContext = contextFor(RegistryService.method.watchServices);

  it("stays out of methods whose request has no rules", () => {
    const interceptor = createValidationInterceptor();
    expect(interceptor(SystemService.method.ping)).toBeUndefined();
    expect(interceptor(RegistryService.method.registerService)).toBeDefined();
  });

  it("lets a valid unary request reach the implementation", async () => {
    const { reached, unary } = wrappedRegistry();
    const request = create(RegisterServiceRequestSchema, {
      name: "billing",
      baseUrl: "https://billing.internal",
    });
    const response = await unary("RegisterService")(request, registerContext);
    expect(response).toMatchObject({ status: "registered", count: 1 });
    expect(reached).toEqual(["RegisterService billing"]);
  });

  it("rejects an invalid unary request before the implementation", async () => {
    const { reached, unary } = wrappedRegistry();
    const request = create(RegisterServiceRequestSchema, {
      name: "Billing API",
      baseUrl: "ftp://billing.internal",
    });
    const error = await rejection(unary("RegisterService")(request, registerContext));
    expect(reached).toEqual([]);
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toBe(
      "invalid request: name: must match ^[a-z0-9][a-z0-9._-]*$; " +
        "base_url: must be an absolute http or https URL",
    );
    const [badRequest] = error.findDetails(BadRequestSchema);
    expect(
      badRequest?.fieldViolations.map(({ field, description }) => ({ field, description })),
    ).toEqual([
      { field: "name", description: "must match ^[a-z0-9][a-z0-9._-]*$" },
      { field: "base_url", description: "must be an absolute http or https URL" },
    ]);
  });

  it("lets a valid server-streaming request reach the implementation", async () => {
    const { reached, streaming } = wrappedRegistry();
    const request = create(WatchServicesRequestSchema, { namePrefix: "bill" });
    const responses = await collect(streaming("WatchServices")(once(request), watchContext));
    expect(responses).toEqual([create(WatchServicesResponseSchema, { revision: 7n })]);
    expect(reached).toEqual(["WatchServices bill"]);
  });

  it("rejects an invalid server-streaming request before the implementation", async () => {
    const { reached, streaming } = wrappedRegistry();
    const request = create(WatchServicesRequestSchema, { namePrefix: "x".repeat(101) });
    const error = await rejection(collect(streaming("WatchServices")(once(request), watchContext)));
    expect(reached).toEqual([]);
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toBe("invalid request: name_prefix: must be at most 100 characters");
    expect(error.findDetails(BadRequestSchema)).toHaveLength(1);
  });

  it("checks each streamed request as it is consumed", async () => {
    const interceptor = createValidationInterceptor()(PeerService.method.replicate);
    const wrap = interceptor?.streaming;
    if (wrap === undefined) throw new Error("Replicate has rules, so it must be intercepted");
    const consumed: string[] = [];
    const echo: StreamingCall = async function* (requests) {
      for await (const request of requests) {
        if (isMessage(request, ReplicateRequestSchema)) consumed.push(request.nodeId);
        yield request;
      }
    };
    async function* requests(): AsyncIterable<Message> {
      yield create(ReplicateRequestSchema, { nodeId: "node-a" });
      yield create(ReplicateRequestSchema, { nodeId: "" });
      yield create(ReplicateRequestSchema, { nodeId: "node-c" });
    }
    const error = await rejection(
      collect(wrap(echo)(requests(), contextFor(PeerService.method.replicate))),
    );
    expect(consumed).toEqual(["node-a"]);
    expect(error.rawMessage).toBe("invalid request: node_id: is required");
  });
});

describe("invalidRequestError", () => {
  it("names at most 10 violations and keeps the message within 512 characters", () => {
    const violations = Array.from({ length: 25 }, (_, i) => ({
      field: `metadata["${"k".repeat(60)}${i}"]`,
      description: "must be at most 1024 characters",
    }));
    const error = invalidRequestError(violations);
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toHaveLength(512);
    expect(error.rawMessage.startsWith('invalid request: metadata["kkk')).toBe(true);
    expect(error.rawMessage.endsWith("…")).toBe(true);
    expect(error.findDetails(BadRequestSchema)[0]?.fieldViolations).toHaveLength(10);
  });

  it("keeps a short message whole", () => {
    const error = invalidRequestError([{ field: "name", description: "is required" }]);
    expect(error.rawMessage).toBe("invalid request: name: is required");
    expect(error.message).toBe("[invalid_argument] invalid request: name: is required");
  });
});
