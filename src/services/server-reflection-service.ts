import {
  create,
  createFileRegistry,
  type DescFile,
  type FileRegistry,
  toBinary,
} from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ServiceImpl } from "@connectrpc/connect";
import type {
  ServerReflectionRequest as ServerReflectionRequestV1,
  ServerReflection as ServerReflectionV1,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import type {
  ServerReflectionRequest as ServerReflectionRequestV1alpha,
  ServerReflection as ServerReflectionV1alpha,
} from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** Longest name echoed back in an error message, so a caller cannot make us echo megabytes. */
const maxEchoedNameLength = 200;

/** The `grpc.reflection` services, one per protocol version that clients speak. */
export interface ServerReflectionServices {
  /** `grpc.reflection.v1.ServerReflection` (grpcurl, buf curl by default). */
  readonly v1: ServiceImpl<typeof ServerReflectionV1>;
  /** `grpc.reflection.v1alpha.ServerReflection` (older clients, `buf curl --reflect-protocol`). */
  readonly v1alpha: ServiceImpl<typeof ServerReflectionV1alpha>;
}

/**
 * Creates the gRPC server reflection services (v1 and v1alpha) over `files` and every file they
 * import, transitively.
 *
 * `list_services` answers `serviceNames` as given: the caller lists every service it serves,
 * reflection and health included. File requests answer the file's serialized
 * `FileDescriptorProto` first, then those of all its transitive imports. A name that is not
 * found, or a request kind that is empty or unknown, gets an `error_response` (NOT_FOUND,
 * INVALID_ARGUMENT or UNIMPLEMENTED) and the stream goes on.
 *
 * The catalogue the answers come from (every file rebuilt from its serialized descriptor, as a
 * client would) is built by the first request, not at start, where it cost a node ~15 ms that
 * most never use. A descriptor that does not resolve (a missing import, a type that is not
 * declared), which clients could not decode either, fails that request; the unit tests build it
 * from the served files.
 */
export function createServerReflectionServices(
  files: readonly DescFile[],
  serviceNames: readonly string[],
): ServerReflectionServices {
  let catalogue: DescriptorCatalogue | undefined;
  const catalogueOf = () => {
    catalogue ??= createDescriptorCatalogue(files, serviceNames);
    return catalogue;
  };
  return {
    v1: {
      serverReflectionInfo: (requests) =>
        answerEach<ServerReflectionRequestV1>(requests, catalogueOf),
    },
    v1alpha: {
      serverReflectionInfo: (requests) =>
        answerEach<ServerReflectionRequestV1alpha>(requests, catalogueOf),
    },
  };
}

/**
 * The request shape both protocol versions share; the generated types differ only in their
 * `$typeName`, so one implementation serves both.
 */
interface ReflectionRequest {
  readonly host: string;
  readonly messageRequest:
    | { readonly case: "fileByFilename"; readonly value: string }
    | { readonly case: "fileContainingSymbol"; readonly value: string }
    | {
        readonly case: "fileContainingExtension";
        readonly value: { readonly containingType: string; readonly extensionNumber: number };
      }
    | { readonly case: "allExtensionNumbersOfType"; readonly value: string }
    | { readonly case: "listServices"; readonly value: string }
    | { readonly case: undefined; readonly value?: undefined };
  readonly $unknown?: readonly unknown[] | undefined;
}

/** The `message_response` oneof of both protocol versions, as an init shape. */
type ReflectionAnswer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | {
      case: "allExtensionNumbersResponse";
      value: { baseTypeName: string; extensionNumber: number[] };
    }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/** Answers every request of the stream with one response, in order. */
async function* answerEach<Request extends ReflectionRequest>(
  requests: AsyncIterable<Request>,
  catalogueOf: () => DescriptorCatalogue,
): AsyncGenerator<{
  validHost: string;
  originalRequest: Request;
  messageResponse: ReflectionAnswer;
}> {
  for await (const request of requests) {
    yield {
      validHost: request.host,
      originalRequest: request,
      messageResponse: answer(request, catalogueOf()),
    };
  }
}

function answer(request: ReflectionRequest, catalogue: DescriptorCatalogue): ReflectionAnswer {
  const { messageRequest } = request;
  switch (messageRequest.case) {
    case "listServices":
      return {
        case: "listServicesResponse",
        value: { service: catalogue.serviceNames.map((name) => ({ name })) },
      };
    case "fileByFilename":
      return fileAnswer(catalogue.fileByName(messageRequest.value), "file", messageRequest.value);
    case "fileContainingSymbol":
      return fileAnswer(
        catalogue.fileBySymbol(messageRequest.value),
        "symbol",
        messageRequest.value,
      );
    case "fileContainingExtension": {
      const { containingType, extensionNumber } = messageRequest.value;
      return fileAnswer(
        catalogue.fileByExtension(containingType, extensionNumber),
        "extension",
        `${containingType}(${extensionNumber})`,
      );
    }
    case "allExtensionNumbersOfType": {
      const numbers = catalogue.extensionNumbersOf(messageRequest.value);
      if (numbers === undefined) return notFound("type", messageRequest.value);
      return {
        case: "allExtensionNumbersResponse",
        value: { baseTypeName: messageRequest.value, extensionNumber: numbers },
      };
    }
    case undefined:
      // A request kind from a newer protocol arrives as an unknown field; an empty one is a
      // malformed request.
      return request.$unknown?.length
        ? errorAnswer(Code.Unimplemented, "request kind not supported")
        : errorAnswer(Code.InvalidArgument, "request kind not set");
  }
}

function fileAnswer(
  descriptors: Uint8Array[] | undefined,
  what: string,
  name: string,
): ReflectionAnswer {
  if (descriptors === undefined) return notFound(what, name);
  return { case: "fileDescriptorResponse", value: { fileDescriptorProto: descriptors } };
}

function notFound(what: string, name: string): ReflectionAnswer {
  return errorAnswer(Code.NotFound, `${what} ${truncate(name, maxEchoedNameLength)} not found`);
}

function errorAnswer(code: Code, message: string): ReflectionAnswer {
  // Connect's Code values are the gRPC status codes that error_code carries.
  return { case: "errorResponse", value: { errorCode: code, errorMessage: message } };
}

/** What reflection answers from: served files, their symbols and extensions, serialized once. */
interface DescriptorCatalogue {
  readonly serviceNames: string[];
  /** The serialized file and its transitive imports, the file first; undefined if unknown. */
  fileByName(fileName: string): Uint8Array[] | undefined;
  fileBySymbol(symbol: string): Uint8Array[] | undefined;
  fileByExtension(extendee: string, fieldNumber: number): Uint8Array[] | undefined;
  /** Numbers of all known extensions of the message; undefined if the message is unknown. */
  extensionNumbersOf(typeName: string): number[] | undefined;
}

function createDescriptorCatalogue(
  files: readonly DescFile[],
  serviceNames: readonly string[],
): DescriptorCatalogue {
  // Rebuilding from the serialized protos proves that what we send resolves on its own, which is
  // what a reflection client does with it.
  const registry = createFileRegistry(
    create(FileDescriptorSetSchema, { file: inImportOrder(files).map((file) => file.proto) }),
  );
  const symbols = indexSymbols(registry);
  const extensions = indexExtensions(registry);
  const serialized = new Map<DescFile, Uint8Array>();
  const serialize = (file: DescFile): Uint8Array => {
    let bytes = serialized.get(file);
    if (bytes === undefined) {
      bytes = toBinary(FileDescriptorProtoSchema, file.proto);
      serialized.set(file, bytes);
    }
    return bytes;
  };
  const withImports = (file: DescFile | undefined): Uint8Array[] | undefined =>
    file && withTransitiveImports(file).map(serialize);
  return {
    serviceNames: [...serviceNames],
    fileByName: (fileName) => withImports(registry.getFile(fileName)),
    fileBySymbol: (symbol) => withImports(symbols.get(symbol)),
    fileByExtension: (extendee, fieldNumber) =>
      withImports(extensions.get(extendee)?.get(fieldNumber)),
    extensionNumbersOf: (typeName) =>
      registry.getMessage(typeName) && [...(extensions.get(typeName)?.keys() ?? [])],
  };
}

/** `files` and all their imports, each after the files it imports (as a registry needs them). */
function inImportOrder(files: readonly DescFile[]): DescFile[] {
  const ordered = new Map<string, DescFile>();
  const visit = (file: DescFile): void => {
    if (ordered.has(file.proto.name)) return;
    for (const dependency of file.dependencies) visit(dependency);
    ordered.set(file.proto.name, file);
  };
  for (const file of files) visit(file);
  return [...ordered.values()];
}

/** `file` first, then everything it imports, transitively, each once. */
function withTransitiveImports(file: DescFile): DescFile[] {
  const seen = new Set<DescFile>([file]);
  for (const current of seen) {
    for (const dependency of current.dependencies) seen.add(dependency);
  }
  return [...seen];
}

/**
 * Maps every fully-qualified name a client may ask for to its file: messages (nested ones
 * too), fields, oneofs, enums, enum values (scoped beside their enum, as in protobuf),
 * extensions, services and methods.
 */
function indexSymbols(registry: FileRegistry): Map<string, DescFile> {
  const symbols = new Map<string, DescFile>();
  for (const file of registry.files) {
    for (const type of nestedTypes(file)) {
      symbols.set(type.typeName, file);
      switch (type.kind) {
        case "message":
          for (const member of [...type.fields, ...type.oneofs]) {
            symbols.set(`${type.typeName}.${member.name}`, file);
          }
          break;
        case "enum": {
          const scope = type.parent?.typeName ?? file.proto.package;
          for (const value of type.values) {
            symbols.set(scope === "" ? value.name : `${scope}.${value.name}`, file);
          }
          break;
        }
        case "service":
          for (const method of type.methods) symbols.set(`${type.typeName}.${method.name}`, file);
          break;
        case "extension":
          break;
      }
    }
  }
  return symbols;
}

/** Extendee type name → field number → the file that declares the extension. */
function indexExtensions(registry: FileRegistry): Map<string, Map<number, DescFile>> {
  const extensions = new Map<string, Map<number, DescFile>>();
  for (const file of registry.files) {
    for (const type of nestedTypes(file)) {
      if (type.kind !== "extension") continue;
      const byNumber = extensions.get(type.extendee.typeName) ?? new Map<number, DescFile>();
      byNumber.set(type.number, file);
      extensions.set(type.extendee.typeName, byNumber);
    }
  }
  return extensions;
}

/** Cuts `text` to at most `max` UTF-16 units without splitting a surrogate pair. */
function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  const cut = text.slice(0, max);
  const last = cut.charCodeAt(cut.length - 1);
  return last >= 0xd800 && last <= 0xdbff ? cut.slice(0, -1) : cut;
}
