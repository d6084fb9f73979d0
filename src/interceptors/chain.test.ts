import type { DescMethod } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createHandlerContext,
  type HandlerContext,
  type ServiceImpl,
} from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  GetServiceRequestSchema,
  ListServicesRequestSchema,
  RegistryService,
  WatchServicesRequestSchema,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { DomainError } from "../errors/domain-error.js";
import { type Interceptor, once, wrapService } from "./chain.js";

function contextFor(method: DescMethod): HandlerContext {
  return createHandlerContext({
    service: method.parent,
    method,
    protocolName: "test",
    requestMethod: "POST",
    url: `http://localhost/${method.parent.typeName}/${method.name}`,
  });
}

const storeDown = new Error("connect ECONNREFUSED 10.0.0.7:6379");
const unavailable = () => new DomainError("unavailable", "the store is down", { cause: storeDown });

/** RegistryService whose methods fail in every way an implementation can. */
function failingRegistry(seen: unknown[]) {
  const impl: ServiceImpl<typeof RegistryService> = {
    registerService: () => {
      throw new Error("a bug");
    },
    // Synchronous throw, asynchronous rejection, and a ConnectError of the implementation's own.
    listServices: () => {
      throw unavailable();
    },
    getService: async () => {
      throw new DomainError("not_found", "service a is not registered");
    },
    deregisterService: () => Promise.reject(new ConnectError("no", Code.PermissionDenied)),
    heartbeat: () => ({}),
    pollOpenApi: () => ({}),
    async *watchServices() {
      yield { revision: 1n };
      throw new DomainError("failed_precondition", "revision 3 is compacted");
    },
  };
  // An interceptor outside the implementation, as telemetry is: it records what it sees.
  const recorder: Interceptor = () => ({
    unary: (next) => async (request, context) => {
      try {
        return await next(request, context);
      } catch (error) {
        seen.push(error);
        throw error;
      }
    },
    streaming: (next) =>
      async function* (requests, context) {
        try {
          yield* next(requests, context);
        } catch (error) {
          seen.push(error);
          throw error;
        }
      },
  });
  return wrapService(RegistryService, impl, [recorder]);
}

function unary(name: string, seen: unknown[]) {
  const method = failingRegistry(seen).methods.get(name);
  if (method === undefined || method.streaming) throw new Error(`${name} is not unary`);
  return (request: Parameters<typeof method.call>[0]) =>
    method.call(request, contextFor(method.method));
}

describe("wrapService error mapping", () => {
  it("turns a domain error thrown synchronously into its ConnectError, keeping the cause", async () => {
    const seen: unknown[] = [];
    const error = await unary(
      "ListServices",
      seen,
    )(create(ListServicesRequestSchema)).catch((e: unknown) => e);
    expect(seen).toEqual([error]);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.Unavailable);
    expect((error as ConnectError).rawMessage).toBe("the store is down");
    expect(((error as ConnectError).cause as DomainError).cause).toBe(storeDown);
  });

  it("turns a rejected domain error into its ConnectError", async () => {
    const seen: unknown[] = [];
    const error = await unary(
      "GetService",
      seen,
    )(create(GetServiceRequestSchema)).catch((e: unknown) => e);
    expect(seen[0]).toBe(error);
    expect((error as ConnectError).code).toBe(Code.NotFound);
    expect((error as ConnectError).rawMessage).toBe("service a is not registered");
  });

  it("passes ConnectErrors and unexpected errors as they are", async () => {
    const seen: unknown[] = [];
    const denied = await unary(
      "DeregisterService",
      seen,
    )(create(GetServiceRequestSchema)).catch((e: unknown) => e);
    expect((denied as ConnectError).code).toBe(Code.PermissionDenied);
    const bug = await unary(
      "RegisterService",
      seen,
    )(create(GetServiceRequestSchema)).catch((e: unknown) => e);
    expect(bug).not.toBeInstanceOf(ConnectError);
    expect((bug as Error).message).toBe("a bug");
  });

  it("turns a domain error a stream throws into its ConnectError", async () => {
    const seen: unknown[] = [];
    const method = failingRegistry(seen).methods.get("WatchServices");
    if (method === undefined || !method.streaming) throw new Error("WatchServices is a stream");
    const received: unknown[] = [];
    const error = await (async () => {
      for await (const message of method.call(
        once(create(WatchServicesRequestSchema)),
        contextFor(method.method),
      )) {
        received.push(message);
      }
    })().catch((e: unknown) => e);
    expect(received).toHaveLength(1);
    expect(seen).toEqual([error]);
    expect((error as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((error as ConnectError).rawMessage).toBe("revision 3 is compacted");
  });
});
