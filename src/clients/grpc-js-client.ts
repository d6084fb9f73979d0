import {
  create,
  type DescMessage,
  type DescMethod,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type DescService,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";

/** Per-call options of the grpc-js client. */
export interface GrpcJsCallOptions {
  /** Request metadata, e.g. `{ "x-correlation-id": "abc", authorization: "Bearer t" }`. */
  metadata?: Record<string, string>;
  /** Absolute deadline. Default: none. */
  deadline?: Date;
  /** Cancels the call. */
  signal?: AbortSignal;
}

type UnaryMethod<M> =
  M extends DescMethodUnary<infer I, infer O>
    ? (request: MessageInitShape<I>, options?: GrpcJsCallOptions) => Promise<MessageShape<O>>
    : never;
type ServerStreamingMethod<M> =
  M extends DescMethodServerStreaming<infer I, infer O>
    ? (request: MessageInitShape<I>, options?: GrpcJsCallOptions) => AsyncIterable<MessageShape<O>>
    : never;

/** A typed client over grpc-js: unary methods return promises, server streams async iterables. */
export type GrpcJsClient<S extends DescService> = {
  [K in keyof S["method"]]: S["method"][K] extends DescMethodUnary
    ? UnaryMethod<S["method"][K]>
    : S["method"][K] extends DescMethodServerStreaming
      ? ServerStreamingMethod<S["method"][K]>
      : never;
} & { close(): void; readonly raw: grpc.Client };

/**
 * The grpc-js service definition of a protobuf-es service descriptor: paths and (de)serializers
 * from the same generated code the server uses, so no .proto file is loaded at run time.
 */
export function grpcJsServiceDefinition(service: DescService): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream:
        method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream:
        method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: serializer(method.input),
      requestDeserialize: deserializer(method.input),
      responseSerialize: serializer(method.output),
      responseDeserialize: deserializer(method.output),
    } as grpc.MethodDefinition<unknown, unknown>;
  }
  return definition as grpc.ServiceDefinition;
}

/**
 * Creates a typed grpc-js client of `service` at `address` (host:port). Unary and server-streaming
 * methods are typed; use `raw` for the others.
 */
export function createGrpcJsClient<S extends DescService>(
  service: S,
  address: string,
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  options?: grpc.ClientOptions,
): GrpcJsClient<S> {
  const Client = grpc.makeGenericClientConstructor(grpcJsServiceDefinition(service), service.name);
  const raw = new Client(address, credentials, options);
  const client: Record<string, unknown> = { raw, close: () => raw.close() };
  for (const method of service.methods) {
    if (method.methodKind === "unary") client[method.localName] = unary(raw, method);
    if (method.methodKind === "server_streaming") {
      client[method.localName] = serverStreaming(raw, method);
    }
  }
  return client as GrpcJsClient<S>;
}

function unary(raw: grpc.Client, method: DescMethod) {
  const path = `/${method.parent.typeName}/${method.name}`;
  return (request: MessageInitShape<DescMessage>, options: GrpcJsCallOptions = {}) =>
    new Promise((resolve, reject) => {
      const call = raw.makeUnaryRequest(
        path,
        serializer(method.input),
        deserializer(method.output),
        create(method.input, request),
        metadataOf(options),
        callOptionsOf(options),
        (error, response) => (error ? reject(error) : resolve(response)),
      );
      options.signal?.addEventListener("abort", () => call.cancel(), { once: true });
    });
}

function serverStreaming(raw: grpc.Client, method: DescMethod) {
  const path = `/${method.parent.typeName}/${method.name}`;
  return (request: MessageInitShape<DescMessage>, options: GrpcJsCallOptions = {}) => {
    const call = raw.makeServerStreamRequest(
      path,
      serializer(method.input),
      deserializer(method.output),
      create(method.input, request),
      metadataOf(options),
      callOptionsOf(options),
    );
    options.signal?.addEventListener("abort", () => call.cancel(), { once: true });
    return call as AsyncIterable<unknown>;
  };
}

function metadataOf(options: GrpcJsCallOptions): grpc.Metadata {
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(options.metadata ?? {})) metadata.set(key, value);
  return metadata;
}

function callOptionsOf(options: GrpcJsCallOptions): grpc.CallOptions {
  return options.deadline ? { deadline: options.deadline } : {};
}

function serializer(schema: DescMessage) {
  return (message: MessageShape<DescMessage>) => Buffer.from(toBinary(schema, message));
}

function deserializer(schema: DescMessage) {
  return (bytes: Buffer) => fromBinary(schema, bytes);
}
