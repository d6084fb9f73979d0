import { create, createFileRegistry, type DescFile, equals, fromBinary } from "@bufbuild/protobuf";
import {
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
  file_google_protobuf_descriptor,
  file_google_protobuf_timestamp,
} from "@bufbuild/protobuf/wkt";
import { type Client, Code, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  file_grpc_reflection_v1_reflection,
  type ServerReflectionResponse as ServerReflectionResponseV1,
  ServerReflection as ServerReflectionV1,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import {
  file_grpc_reflection_v1alpha_reflection,
  type ServerReflectionResponse as ServerReflectionResponseV1alpha,
  ServerReflection as ServerReflectionV1alpha,
} from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { file_health_v1_health, Health } from "../../gen/health/v1/health_pb.js";
import {
  file_orchestrator_v1_infrastructure,
  InfrastructureService,
} from "../../gen/orchestrator/v1/infrastructure_pb.js";
import { file_orchestrator_v1_jobs, JobsService } from "../../gen/orchestrator/v1/jobs_pb.js";
import { field as fieldRulesExtension } from "../../gen/orchestrator/v1/options_pb.js";
import { file_orchestrator_v1_peer, PeerService } from "../../gen/orchestrator/v1/peer_pb.js";
import {
  file_orchestrator_v1_registry,
  RegistryService,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { file_orchestrator_v1_system, SystemService } from "../../gen/orchestrator/v1/system_pb.js";
import {
  file_orchestrator_v1_workflow,
  WorkflowService,
} from "../../gen/orchestrator/v1/workflow_pb.js";
import { createServerReflectionServices } from "./server-reflection-service.js";

const servedFiles: readonly DescFile[] = [
  file_orchestrator_v1_system,
  file_orchestrator_v1_registry,
  file_orchestrator_v1_peer,
  file_orchestrator_v1_jobs,
  file_orchestrator_v1_workflow,
  file_orchestrator_v1_infrastructure,
  file_health_v1_health,
  file_grpc_reflection_v1_reflection,
  file_grpc_reflection_v1alpha_reflection,
];

const servedNames: readonly string[] = [
  SystemService.typeName,
  RegistryService.typeName,
  PeerService.typeName,
  JobsService.typeName,
  WorkflowService.typeName,
  InfrastructureService.typeName,
  Health.typeName,
  ServerReflectionV1.typeName,
  ServerReflectionV1alpha.typeName,
];

/** A request kind, written once for both protocol versions. */
type RequestKind =
  | { case: "listServices"; value: string }
  | { case: "fileByFilename"; value: string }
  | { case: "fileContainingSymbol"; value: string }
  | {
      case: "fileContainingExtension";
      value: { containingType: string; extensionNumber: number };
    }
  | { case: "allExtensionNumbersOfType"; value: string }
  | { case: undefined };

interface RequestInit {
  host: string;
  messageRequest: RequestKind;
}

type Response = ServerReflectionResponseV1 | ServerReflectionResponseV1alpha;

/** One open reflection stream on which each request is answered before the next is sent. */
interface Session {
  ask(kind: RequestKind): Promise<Response>;
  close(): Promise<void>;
}

const { v1, v1alpha } = createServerReflectionServices(servedFiles, servedNames);
const transport = createRouterTransport((router) => {
  router.service(ServerReflectionV1, v1);
  router.service(ServerReflectionV1alpha, v1alpha);
});
const v1Client: Client<typeof ServerReflectionV1> = createClient(ServerReflectionV1, transport);
const v1alphaClient: Client<typeof ServerReflectionV1alpha> = createClient(
  ServerReflectionV1alpha,
  transport,
);

const versions: [string, (requests: AsyncIterable<RequestInit>) => AsyncIterable<Response>][] = [
  ["v1", (requests) => v1Client.serverReflectionInfo(requests)],
  ["v1alpha", (requests) => v1alphaClient.serverReflectionInfo(requests)],
];

function openSession(call: (requests: AsyncIterable<RequestInit>) => AsyncIterable<Response>) {
  const queue: RequestInit[] = [];
  let wake: (() => void) | undefined;
  let closed = false;
  async function* requests(): AsyncGenerator<RequestInit> {
    for (;;) {
      const next = queue.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (closed) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  }
  const responses = call(requests())[Symbol.asyncIterator]();
  const session: Session = {
    async ask(kind) {
      queue.push({ host: "orchestrator.test", messageRequest: kind });
      wake?.();
      const result = await responses.next();
      if (result.done) throw new Error("stream ended before answering");
      return result.value;
    },
    async close() {
      closed = true;
      wake?.();
      expect((await responses.next()).done).toBe(true);
    },
  };
  return session;
}

function fileDescriptors(response: Response): FileDescriptorProto[] {
  const { messageResponse } = response;
  if (messageResponse.case !== "fileDescriptorResponse") {
    throw new Error(`expected file descriptors, got ${String(messageResponse.case)}`);
  }
  return messageResponse.value.fileDescriptorProto.map((bytes) =>
    fromBinary(FileDescriptorProtoSchema, bytes),
  );
}

/**
 * Rebuilds a registry as a reflection client does, from nothing but the response (in any order),
 * and fails if an import is missing from it.
 */
function registryFrom(protos: FileDescriptorProto[]) {
  const byName = new Map(protos.map((proto) => [proto.name, proto]));
  // A FileDescriptorSet must list each file after its imports. (The resolver overload of
  // createFileRegistry is no shortcut: in protobuf-es 2.17 it orders diamond imports wrongly.)
  const ordered = new Map<string, FileDescriptorProto>();
  const visit = (proto: FileDescriptorProto): void => {
    if (ordered.has(proto.name)) return;
    for (const name of proto.dependency) {
      const dependency = byName.get(name);
      if (dependency === undefined) throw new Error(`${proto.name} imports ${name}, not sent`);
      visit(dependency);
    }
    ordered.set(proto.name, proto);
  };
  protos.forEach(visit);
  return createFileRegistry(create(FileDescriptorSetSchema, { file: [...ordered.values()] }));
}

function errorOf(response: Response): { errorCode: number; errorMessage: string } | undefined {
  return response.messageResponse.case === "errorResponse"
    ? response.messageResponse.value
    : undefined;
}

describe.each(versions)("createServerReflectionServices (%s)", (_version, call) => {
  it("lists every served service", async () => {
    const session = openSession(call);
    const response = await session.ask({ case: "listServices", value: "" });
    expect(response.validHost).toBe("orchestrator.test");
    expect(response.originalRequest?.messageRequest.case).toBe("listServices");
    expect(response.messageResponse.case).toBe("listServicesResponse");
    const names =
      response.messageResponse.case === "listServicesResponse"
        ? response.messageResponse.value.service.map((service) => service.name)
        : [];
    expect(names).toEqual(servedNames);
    await session.close();
  });

  it("answers file_containing_symbol with descriptors a client can rebuild", async () => {
    const session = openSession(call);
    const protos = fileDescriptors(
      await session.ask({ case: "fileContainingSymbol", value: SystemService.typeName }),
    );
    expect(protos[0]?.name).toBe("orchestrator/v1/system.proto");
    const registry = registryFrom(protos);
    const service = registry.getService(SystemService.typeName);
    expect(service?.methods.map((method) => method.name)).toEqual(
      SystemService.methods.map((method) => method.name),
    );
    expect(registry.getMessage("google.protobuf.Timestamp")).toBeDefined();
    // Custom options travel as part of the descriptors.
    expect(registry.getExtension(fieldRulesExtension.typeName)?.number).toBe(51000);
    await session.close();
  });

  it("finds methods, nested messages, fields and enum values by symbol", async () => {
    const session = openSession(call);
    const firstMethod = SystemService.methods[0];
    const symbols = [
      `${SystemService.typeName}.${firstMethod?.name ?? ""}`,
      "orchestrator.v1.HealthResponse.service",
      "google.protobuf.FieldDescriptorProto.Type",
      "google.protobuf.FieldDescriptorProto.TYPE_STRING",
      "grpc.health.v1.HealthCheckResponse.SERVING",
    ];
    const files = [];
    for (const symbol of symbols) {
      files.push(
        fileDescriptors(await session.ask({ case: "fileContainingSymbol", value: symbol }))[0]
          ?.name,
      );
    }
    expect(files).toEqual([
      "orchestrator/v1/system.proto",
      "orchestrator/v1/system.proto",
      "google/protobuf/descriptor.proto",
      "google/protobuf/descriptor.proto",
      "health/v1/health.proto",
    ]);
    await session.close();
  });

  it("answers file_by_filename with the file first, then all it imports", async () => {
    const session = openSession(call);
    const protos = fileDescriptors(
      await session.ask({ case: "fileByFilename", value: "orchestrator/v1/system.proto" }),
    );
    expect(protos.map((proto) => proto.name)).toEqual([
      "orchestrator/v1/system.proto",
      ...new Set(protos.slice(1).map((proto) => proto.name)),
    ]);
    expect(protos.map((proto) => proto.name).sort()).toEqual([
      "google/api/annotations.proto",
      "google/api/http.proto",
      "google/protobuf/descriptor.proto",
      "google/protobuf/timestamp.proto",
      "orchestrator/v1/options.proto",
      "orchestrator/v1/system.proto",
    ]);
    expect(registryFrom(protos).getService(SystemService.typeName)).toBeDefined();
    await session.close();
  });

  it("answers file_containing_extension and all_extension_numbers_of_type", async () => {
    const session = openSession(call);
    const protos = fileDescriptors(
      await session.ask({
        case: "fileContainingExtension",
        value: { containingType: "google.protobuf.FieldOptions", extensionNumber: 51000 },
      }),
    );
    expect(protos[0]?.name).toBe("orchestrator/v1/options.proto");

    const numbers = await session.ask({
      case: "allExtensionNumbersOfType",
      value: "google.protobuf.FieldOptions",
    });
    expect(numbers.messageResponse.case).toBe("allExtensionNumbersResponse");
    if (numbers.messageResponse.case === "allExtensionNumbersResponse") {
      expect(numbers.messageResponse.value.baseTypeName).toBe("google.protobuf.FieldOptions");
      expect(numbers.messageResponse.value.extensionNumber).toContain(51000);
    }
    // A known message without extensions has an empty list, not an error.
    const none = await session.ask({
      case: "allExtensionNumbersOfType",
      value: "google.protobuf.Timestamp",
    });
    expect(none.messageResponse.case).toBe("allExtensionNumbersResponse");
    await session.close();
  });

  it("answers NOT_FOUND for what it does not know, and keeps the stream going", async () => {
    const session = openSession(call);
    const unknownSymbol = await session.ask({
      case: "fileContainingSymbol",
      value: `no.such.${"Symbol".repeat(100)}`,
    });
    expect(errorOf(unknownSymbol)?.errorCode).toBe(Code.NotFound);
    expect(errorOf(unknownSymbol)?.errorMessage).toMatch(/^symbol no\.such\.Symbol.* not found$/);
    expect(errorOf(unknownSymbol)?.errorMessage.length).toBeLessThanOrEqual(
      "symbol ".length + 200 + " not found".length,
    );
    for (const kind of [
      { case: "fileByFilename", value: "no/such.proto" },
      {
        case: "fileContainingExtension",
        value: { containingType: "google.protobuf.FieldOptions", extensionNumber: 1 },
      },
      { case: "allExtensionNumbersOfType", value: "no.such.Message" },
    ] satisfies RequestKind[]) {
      expect(errorOf(await session.ask(kind))?.errorCode).toBe(Code.NotFound);
    }
    const next = await session.ask({ case: "listServices", value: "" });
    expect(next.messageResponse.case).toBe("listServicesResponse");
    await session.close();
  });

  it("answers INVALID_ARGUMENT for a request without a kind", async () => {
    const session = openSession(call);
    const response = await session.ask({ case: undefined });
    expect(errorOf(response)?.errorCode).toBe(Code.InvalidArgument);
    await session.close();
  });
});

describe("served descriptors", () => {
  // Every file reachable from the served ones, as the generated code embeds it.
  const reachable = new Map<string, DescFile>();
  const visit = (file: DescFile): void => {
    if (reachable.has(file.proto.name)) return;
    reachable.set(file.proto.name, file);
    file.dependencies.forEach(visit);
  };
  servedFiles.forEach(visit);

  it("include descriptor.proto and the well-known types", () => {
    expect(reachable.get("google/protobuf/descriptor.proto")).toBe(file_google_protobuf_descriptor);
    expect(reachable.get("google/protobuf/timestamp.proto")).toBe(file_google_protobuf_timestamp);
  });

  it.each([...reachable.keys()])(
    "%s round-trips and rebuilds from its own response",
    async (name) => {
      const session = openSession((requests) => v1Client.serverReflectionInfo(requests));
      const protos = fileDescriptors(await session.ask({ case: "fileByFilename", value: name }));
      const embedded = reachable.get(name)?.proto;
      expect(embedded && protos[0] && equals(FileDescriptorProtoSchema, protos[0], embedded)).toBe(
        true,
      );
      expect(registryFrom(protos).getFile(name)).toBeDefined();
      await session.close();
    },
  );
});
