import type { Server } from "node:net";
import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import { fastifyConnectPlugin } from "@connectrpc/connect-fastify";
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerFactory,
  LogController,
} from "fastify";
import type { Logger } from "pino";
import { Access } from "../../gen/orchestrator/v1/options_pb.js";
import { errorResponseOf } from "../gateway/error-body.js";
import { codeName } from "../gateway/http-status.js";
import { type RestRoute, registerRestGateway } from "../gateway/rest-gateway.js";
import type { IdSource } from "../ids.js";
import type { AccessCheck } from "../interceptors/auth.js";
import {
  type CallMeta,
  callMetaKey,
  correlationHeader,
  isWellFormedCorrelationId,
  resolveCallMeta,
} from "../interceptors/call-meta.js";
import type { WrappedService } from "../interceptors/chain.js";
import type { Metrics } from "../observability/metrics.js";
import { boundedMessage } from "./bounded-message.js";
import { responseHeaderPairsOf } from "./call-context.js";
import type { HttpRequestHandler } from "./one-port-listener.js";

declare module "fastify" {
  interface FastifyRequest {
    /** Correlation id and trace context of the request, resolved in onRequest. */
    callMeta: CallMeta;
  }
}

export interface HttpAppDeps {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly ids: IdSource;
  /** Every service, wrapped with the interceptor chain; served over Connect, gRPC-Web and gRPC+JSON. */
  readonly services: readonly WrappedService[];
  /** The REST routes derived from the services' google.api.http rules. */
  readonly restRoutes: readonly RestRoute[];
  /** The socket server fastify believes it owns (the one-port listener's). */
  readonly server: Server;
  /** Largest request body on every HTTP protocol, in bytes. */
  readonly bodyLimitBytes: number;
  /** Aborts calls still running when the shutdown grace period is over. */
  readonly shutdownSignal: AbortSignal;
  /** The one auth check: /metrics is an operator route, answered as operator RPCs are. */
  readonly checkAccess: AccessCheck;
}

/** The fastify application and the request handler the one-port listener feeds. */
export interface HttpApp {
  readonly fastify: FastifyInstance;
  readonly handler: HttpRequestHandler;
}

/**
 * Builds the HTTP side of the port: the REST gateway, the Connect router (Connect, gRPC-Web and
 * gRPC+JSON), /metrics, and one error shape `{code, message, details}` for everything, including
 * what fastify itself rejects (bad JSON, oversize or unsupported bodies, unknown paths).
 */
export async function createHttpApp(deps: HttpAppDeps): Promise<HttpApp> {
  let handler: HttpRequestHandler | undefined;
  // fastify never listens: the one-port listener feeds it requests through this handler.
  const serverFactory: FastifyServerFactory = (h) => {
    handler = h as HttpRequestHandler;
    return deps.server as ReturnType<FastifyServerFactory>;
  };
  const fastify: FastifyInstance = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // The telemetry interceptor logs every RPC; fastify's own per-request lines would double them.
    logController: new LogController({
      disableRequestLogging: true,
      requestIdLogLabel: "correlation_id",
    }),
    bodyLimit: deps.bodyLimitBytes,
    requestIdHeader: false,
    genReqId: (request) => {
      const offered = request.headers[correlationHeader];
      return typeof offered === "string" && isWellFormedCorrelationId(offered)
        ? offered
        : deps.ids.uuid();
    },
    return503OnClosing: false,
    routerOptions: { maxParamLength: 512 },
    serverFactory,
  });

  // REST bodies are JSON; fastify's default text/plain parser would let other media types through
  // to a confusing 400 instead of a clear 415.
  fastify.removeContentTypeParser("text/plain");
  fastify.decorateRequest("callMeta", null as unknown as CallMeta);
  fastify.addHook("onRequest", async (request, reply) => {
    const traceparent = request.headers.traceparent;
    request.callMeta = resolveCallMeta(
      request.id,
      typeof traceparent === "string" ? traceparent : undefined,
      deps.ids,
    );
    for (const [name, value] of responseHeaderPairsOf(request.callMeta)) reply.header(name, value);
  });
  fastify.setErrorHandler(errorHandler(deps));
  fastify.setNotFoundHandler((request, reply) =>
    reply.code(404).send({
      code: codeName(Code.NotFound),
      message: boundedMessage(`no route for ${request.method} ${request.url}`),
      details: [],
    }),
  );

  fastify.get("/metrics", async (request, reply) => {
    try {
      deps.checkAccess(Access.OPERATOR, request.headers.authorization, "/metrics");
    } catch (error) {
      const { status, body } = errorResponseOf(ConnectError.from(error));
      return reply.code(status).send(body);
    }
    const text = await deps.metrics.registry.metrics();
    return reply.type(deps.metrics.registry.contentType).send(text);
  });

  registerRestGateway(fastify, deps.restRoutes, {
    shutdownSignal: deps.shutdownSignal,
    callMetaOf: (request) => request.callMeta,
  });

  await fastify.register(fastifyConnectPlugin, {
    routes: (router) => {
      for (const { service, impl } of deps.services) router.service(service, impl);
    },
    readMaxBytes: deps.bodyLimitBytes,
    shutdownSignal: deps.shutdownSignal,
    // As on REST: an unknown field is reported, not dropped (connect's default drops it).
    jsonOptions: { ignoreUnknownFields: false },
    contextValues: (request: FastifyRequest) =>
      createContextValues().set(callMetaKey, request.callMeta),
  });

  await fastify.ready();
  if (handler === undefined) throw new Error("fastify did not hand over its request handler");
  return { fastify, handler };
}

/** Renders whatever fastify (or a plain route) throws as `{code, message, details}`. */
function errorHandler(deps: HttpAppDeps) {
  return (error: FastifyError | ConnectError, request: FastifyRequest, reply: FastifyReply) => {
    if (error instanceof ConnectError) {
      const { status, body } = errorResponseOf(error);
      return reply.code(status).send(body);
    }
    const status = error.statusCode ?? 500;
    if (status >= 500) {
      request.log.error({ err: error }, "request failed");
      return reply
        .code(500)
        .send({ code: codeName(Code.Internal), message: "internal error", details: [] });
    }
    return reply.code(status).send({
      code: codeName(status === 413 ? Code.ResourceExhausted : Code.InvalidArgument),
      message: clientErrorMessage(error, deps.bodyLimitBytes),
      details: [],
    });
  };
}

function clientErrorMessage(error: FastifyError, bodyLimitBytes: number): string {
  switch (error.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return `request body exceeds the limit of ${bodyLimitBytes} bytes`;
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return "unsupported content type: send application/json";
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return "request body is not valid JSON";
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return "request body is empty: send a JSON object";
    default:
      return boundedMessage(error.message);
  }
}
