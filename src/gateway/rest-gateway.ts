import type { OutgoingHttpHeaders } from "node:http";
import { type DescField, type Message, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { FastifyInstance, FastifyReply, FastifyRequest, HTTPMethods } from "fastify";
import { encodeJsonText, jsonWriteOptions } from "../encoding/message-encoding.js";
import type { CallMeta } from "../interceptors/call-meta.js";
import { once, type WrappedMethod, type WrappedService } from "../interceptors/chain.js";
import { ActiveCalls, CallContext } from "../server/call-context.js";
import { grpcTimeoutHeader, parseGrpcTimeout } from "../server/deadline.js";
import { errorResponseOf } from "./error-body.js";
import { type HttpBinding, httpBindingsOf } from "./http-bindings.js";
import { compilePathTemplate } from "./path-template.js";
import { type RequestMapping, requestMessageOf } from "./request-message.js";

/** One HTTP route derived from a google.api.http rule. */
export interface RestRoute {
  readonly method: HTTPMethods;
  readonly path: string;
  readonly target: WrappedMethod;
  readonly mapping: RequestMapping;
  /** Field of the response sent as the body; "" sends the whole response. */
  readonly responseBody: string;
  /** The response field `responseBody` names, resolved once; undefined when it names none. */
  readonly responseField: DescField | undefined;
}

export interface RestGatewayOptions {
  /** Aborts calls still running when the shutdown grace period is over. */
  readonly shutdownSignal: AbortSignal;
  /** The call's meta, resolved by the HTTP edge for every request. */
  readonly callMetaOf: (request: FastifyRequest) => CallMeta;
}

/**
 * Reads the google.api.http rules of every method (and their additional bindings) from the
 * descriptors. No route is written by hand: a proto change is a route change.
 * @throws Error when a rule uses a path template the gateway cannot route exactly.
 */
export function restRoutesOf(services: readonly WrappedService[]): RestRoute[] {
  const routes: RestRoute[] = [];
  for (const { methods } of services) {
    for (const target of methods.values()) {
      for (const binding of httpBindingsOf(target.method)) routes.push(routeOf(target, binding));
    }
  }
  return routes;
}

function routeOf(target: WrappedMethod, binding: HttpBinding): RestRoute {
  const { verb, template, rule } = binding;
  const path = compilePathTemplate(template);
  if (target.streaming && target.method.methodKind !== "server_streaming") {
    throw new Error(`${target.method.name}: only server-streaming RPCs can have an HTTP rule`);
  }
  return {
    method: verb,
    path: template,
    target,
    mapping: { input: target.method.input, path, body: rule.body },
    responseBody: rule.responseBody,
    responseField: target.method.output.fields.find((f) => f.name === rule.responseBody),
  };
}

/**
 * Registers the REST routes on fastify. Every route calls the same wrapped implementation as gRPC
 * and Connect do; unary responses are JSON, server-streaming responses are newline-delimited JSON
 * (one message per line) that `curl -N` can follow.
 */
export function registerRestGateway(
  app: FastifyInstance,
  routes: readonly RestRoute[],
  options: RestGatewayOptions,
): void {
  const edge: Edge = { ...options, activeCalls: new ActiveCalls(options.shutdownSignal) };
  for (const route of routes) {
    app.route({
      method: route.method,
      url: compilePathTemplate(route.path).routerPath,
      handler: route.target.streaming
        ? (request, reply) => serveStream(route, request, reply, edge)
        : (request, reply) => serveUnary(route, request, reply, edge),
    });
  }
}

interface Edge extends RestGatewayOptions {
  readonly activeCalls: ActiveCalls;
}

async function serveUnary(
  route: RestRoute,
  request: FastifyRequest,
  reply: FastifyReply,
  options: Edge,
): Promise<void> {
  const target = route.target;
  if (target.streaming) return;
  let context: CallContext | undefined;
  try {
    const message = requestMessageOf(route.mapping, partsOf(request));
    context = contextOf(route, request, options);
    const response = await untilAborted(context, target.call(message, context));
    const headers: OutgoingHttpHeaders = {};
    context.copyResponseHeaders(headers);
    reply.headers(headers);
    await reply.type("application/json; charset=utf-8").send(bodyTextOf(route, response));
  } catch (error) {
    await sendError(reply, error, route);
  } finally {
    context?.end();
  }
}

async function serveStream(
  route: RestRoute,
  request: FastifyRequest,
  reply: FastifyReply,
  options: Edge,
): Promise<void> {
  const target = route.target;
  if (!target.streaming) return;
  let message: Message;
  let context: CallContext;
  try {
    message = requestMessageOf(route.mapping, partsOf(request));
    context = contextOf(route, request, options);
  } catch (error) {
    return sendError(reply, error, route);
  }
  const raw = reply.raw;
  // Node's HTTP/2 compat response reports writableFinished after a client's RST_STREAM too, and
  // has no `destroyed`: whether the response ended, and whether the client left, are tracked here.
  let ended = false;
  let closed = false;
  raw.once("close", () => {
    closed = true;
    if (!ended) context.abort(new ConnectError("the client went away", Code.Canceled));
  });
  const responses = target.call(once(message), context)[Symbol.asyncIterator]();
  // A deadline or the end of the shutdown grace period ends the stream at once, with its reason,
  // as on the gRPC fast path, whether or not the implementation has noticed yet.
  const aborted = new Promise<never>((_, reject) => {
    context.onAbort = reject;
  });
  aborted.catch(() => undefined);
  const next = () => Promise.race([responses.next(), aborted]);
  let first: IteratorResult<Message>;
  try {
    first = await next();
  } catch (error) {
    ended = true;
    context.end();
    return sendError(reply, error, route);
  }
  const headers: OutgoingHttpHeaders = {
    "content-type": "application/x-ndjson; charset=utf-8",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
  };
  context.copyResponseHeaders(headers);
  if (request.method === "HEAD") {
    // HEAD answers what its GET starts with (the status is known with the first message) and
    // ends there: it never holds a stream open.
    ended = true;
    await responses.return?.();
    context.end();
    return reply.code(200).headers(headers).send();
  }
  // From here on the status line is sent: a later error becomes the stream's last line.
  reply.hijack();
  raw.writeHead(200, { ...(reply.getHeaders() as OutgoingHttpHeaders), ...headers });
  try {
    for (let result = first; !result.done && !closed; result = await next()) {
      if (!raw.write(`${bodyTextOf(route, result.value)}\n`) && !closed) await drained(raw);
    }
  } catch (error) {
    if (!closed) {
      raw.write(`${JSON.stringify({ error: errorResponseOf(asConnectError(error)).body })}\n`);
    }
  } finally {
    ended = true;
    context.end();
    if (!closed) raw.end();
    // After the response has ended: an implementation still finishing cannot hold it open.
    await responses.return?.();
  }
}

/**
 * The call's result, or its abort reason (a deadline, the end of the shutdown grace period) as
 * soon as it is aborted: the gRPC fast path answers at the deadline too.
 */
function untilAborted<T>(context: CallContext, result: Promise<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    context.onAbort = reject;
    result.then(resolve, reject);
  });
}

function partsOf(request: FastifyRequest) {
  return {
    params: request.params as Record<string, string | undefined>,
    query: request.query as Record<string, string | string[] | undefined>,
    body: request.body,
  };
}

/**
 * The call's context. REST honours a `grpc-timeout` header, as gRPC and gRPC-Web do (and as
 * grpc-gateway does): the call gets that deadline.
 * @throws ConnectError INVALID_ARGUMENT when the header is malformed.
 */
function contextOf(route: RestRoute, request: FastifyRequest, options: Edge): CallContext {
  const timeout = request.headers[grpcTimeoutHeader];
  const timeoutMs = parseGrpcTimeout(Array.isArray(timeout) ? timeout.join(", ") : timeout);
  return new CallContext({
    target: route.target,
    protocolName: "rest",
    requestMethod: request.method,
    url: () => `${request.protocol}://${request.host}${request.url}`,
    headers: request.headers,
    meta: options.callMetaOf(request),
    activeCalls: options.activeCalls,
    timeoutMs,
  });
}

/** The JSON text of a response, or of the one field its rule names (`response_body`). */
function bodyTextOf(route: RestRoute, response: Message): string {
  const output = route.target.method.output;
  if (route.responseBody === "") return encodeJsonText(output, response);
  const field = route.responseField;
  if (field?.fieldKind === "message") {
    const value = (response as unknown as Record<string, Message | undefined>)[field.localName];
    return value === undefined ? "{}" : encodeJsonText(field.message, value);
  }
  const json = toJson(output, response, jsonWriteOptions) as Record<string, unknown>;
  return JSON.stringify(json[route.responseBody] ?? {});
}

async function sendError(reply: FastifyReply, error: unknown, route: RestRoute): Promise<void> {
  const { status, headers, body } = errorResponseOf(
    asConnectError(error),
    route.target.method.output,
  );
  await reply.code(status).headers(headers).send(body);
}

/** The chain turns every failure into a ConnectError; anything else here is ours, and hidden. */
function asConnectError(error: unknown): ConnectError {
  return error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal);
}

/** Resolves when the response can take more, or closes: call it only while it is open. */
function drained(raw: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      raw.removeListener("drain", done);
      raw.removeListener("close", done);
      resolve();
    };
    raw.on("drain", done);
    raw.on("close", done);
  });
}
