import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  isMessage,
  type Message,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { toConnectError } from "../errors/connect-errors.js";

/** A unary call as every transport sees it: one request message in, one response message out. */
export type UnaryCall = (request: Message, context: HandlerContext) => Promise<Message>;

/**
 * Any streaming call (client, server or bidi), in bidi shape: the transports adapt their kind to it,
 * so that an interceptor is written once for all three.
 */
export type StreamingCall = (
  requests: AsyncIterable<Message>,
  context: HandlerContext,
) => AsyncIterable<Message>;

/** What an interceptor does around one method. Either half may be left out. */
export interface MethodInterceptor {
  unary?: (next: UnaryCall) => UnaryCall;
  streaming?: (next: StreamingCall) => StreamingCall;
}

/**
 * An interceptor is asked once per method when services are wrapped, so that it can precompute what
 * it needs for that method (rules, metric children, access policy) off the hot path. It returns
 * `undefined` to stay out of a method.
 */
export type Interceptor = (method: DescMethod) => MethodInterceptor | undefined;

/** One method of a service, with the interceptor chain applied, ready for any transport. */
export type WrappedMethod =
  | { readonly method: DescMethod; readonly streaming: false; readonly call: UnaryCall }
  | { readonly method: DescMethod; readonly streaming: true; readonly call: StreamingCall };

/** A service whose methods all run through the same interceptor chain. */
export interface WrappedService {
  readonly service: DescService;
  /** Keyed by the method's proto name, e.g. "Health". */
  readonly methods: ReadonlyMap<string, WrappedMethod>;
  /** The same calls in the shape the Connect router wants. */
  readonly impl: ServiceImpl<DescService>;
}

/**
 * Wraps every method of `impl` with `interceptors` (the first is outermost). The Connect router, the
 * gRPC fast path and the REST gateway all call the result, so every protocol gets one behaviour.
 * A DomainError an implementation throws becomes its ConnectError here, inside every interceptor.
 */
export function wrapService<S extends DescService>(
  service: S,
  impl: ServiceImpl<S>,
  interceptors: readonly Interceptor[],
): WrappedService {
  const methods = new Map<string, WrappedMethod>();
  const connectImpl: Record<string, unknown> = {};
  const handlers = impl as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const method of service.methods) {
    const handler = handlers[method.localName];
    if (handler === undefined) {
      throw new Error(`${service.typeName} implementation lacks ${method.name}`);
    }
    const wrapped = wrapMethod(method, handler.bind(impl), interceptors);
    methods.set(method.name, wrapped);
    connectImpl[method.localName] = toConnectShape(wrapped);
  }
  return { service, methods, impl: connectImpl as ServiceImpl<DescService> };
}

function wrapMethod(
  method: DescMethod,
  handler: (...args: unknown[]) => unknown,
  interceptors: readonly Interceptor[],
): WrappedMethod {
  const layers = interceptors.map((interceptor) => interceptor(method));
  if (method.methodKind === "unary") {
    const output = method.output;
    // No async frame of its own: implementations often answer synchronously (Ping, Health).
    let call: UnaryCall = (request, context) => {
      try {
        const result = handler(request, context);
        return result instanceof Promise
          ? result.then((value) => asMessage(output, value), rejectAsConnectError)
          : Promise.resolve(asMessage(output, result));
      } catch (error) {
        return rejectAsConnectError(error);
      }
    };
    for (let i = layers.length - 1; i >= 0; i--) {
      const unary = layers[i]?.unary;
      if (unary) call = unary(call);
    }
    return { method, streaming: false, call };
  }
  let call = streamingCallOf(method, handler);
  for (let i = layers.length - 1; i >= 0; i--) {
    const streaming = layers[i]?.streaming;
    if (streaming) call = streaming(call);
  }
  return { method, streaming: true, call };
}

/** Adapts a client-, server- or bidi-streaming implementation to the bidi shape. */
function streamingCallOf(
  method: DescMethod,
  handler: (...args: unknown[]) => unknown,
): StreamingCall {
  const output = method.output;
  switch (method.methodKind) {
    case "server_streaming":
      return async function* (requests, context) {
        try {
          const request = await single(requests, method);
          for await (const response of handler(request, context) as AsyncIterable<unknown>) {
            yield asMessage(output, response);
          }
        } catch (error) {
          throw toConnectError(error);
        }
        throwIfAborted(context);
      };
    case "client_streaming":
      return async function* (requests, context) {
        try {
          yield asMessage(output, await handler(requests, context));
        } catch (error) {
          throw toConnectError(error);
        }
      };
    default:
      return async function* (requests, context) {
        try {
          for await (const response of handler(requests, context) as AsyncIterable<unknown>) {
            yield asMessage(output, response);
          }
        } catch (error) {
          throw toConnectError(error);
        }
        throwIfAborted(context);
      };
  }
}

/**
 * A stream whose implementation stopped because its call was aborted (its deadline passed, the
 * server is shutting down, the client left) ends with that reason, not OK. Implementations just
 * return when their signal aborts; the gRPC fast path reports the reason itself, the Connect
 * router (Connect, gRPC-Web) only reports what the implementation throws: this makes them agree.
 * (A drain is not an abort of the call: the drain interceptor ends such streams with OK.)
 */
function throwIfAborted(context: HandlerContext): void {
  if (!context.signal.aborted) return;
  const reason: unknown = context.signal.reason;
  throw reason instanceof ConnectError
    ? reason
    : new ConnectError("the call was cancelled", Code.Canceled);
}

/**
 * The one place a domain error becomes what clients see: innermost in the chain, so that every
 * interceptor (telemetry above all) sees the ConnectError, on every protocol.
 */
function rejectAsConnectError(error: unknown): Promise<never> {
  return Promise.reject(toConnectError(error));
}

/** Adapts a wrapped method back to the signature the Connect router expects for its kind. */
function toConnectShape(wrapped: WrappedMethod): unknown {
  if (!wrapped.streaming) return wrapped.call;
  const call = wrapped.call;
  switch (wrapped.method.methodKind) {
    case "server_streaming":
      return (request: Message, context: HandlerContext) => call(once(request), context);
    case "client_streaming":
      return (requests: AsyncIterable<Message>, context: HandlerContext) =>
        single(call(requests, context), wrapped.method);
    default:
      return call;
  }
}

/** Implementations may return init objects; transports need real messages to serialize. */
function asMessage(schema: DescMessage, value: unknown): Message {
  if (isMessage(value, schema)) return value;
  return create(schema, (value ?? {}) as Parameters<typeof create>[1]);
}

/** An iterable of exactly one message. */
export async function* once<T>(value: T): AsyncIterable<T> {
  yield value;
}

/** Reads the one message a unary side of a stream must carry. */
async function single<T>(messages: AsyncIterable<T>, method: DescMethod): Promise<T> {
  let first: T | undefined;
  let count = 0;
  for await (const message of messages) {
    if (count++ === 0) first = message;
  }
  if (count !== 1 || first === undefined) {
    throw protocolViolation(`${method.parent.typeName}.${method.name} expects exactly one message`);
  }
  return first;
}

function protocolViolation(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}
