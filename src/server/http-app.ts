import { createRequire } from "node:module";
import type { Server } from "node:net";
import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerFactory,
  type FastifyServerOptions,
  LogController,
} from "fastify";
import type { Logger } from "pino";
import { Access } from "../../gen/orchestrator/v1/options_pb.js";
import {
  type ErrorResponse,
  errorResponseOf,
  HttpRefusal,
  refusalResponseOf,
} from "../gateway/error-body.js";
import { codeName } from "../gateway/http-status.js";
import { parseJsonBody } from "../gateway/json-body.js";
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
import { type OpenApiInfo, openApiDocumentOf } from "../openapi/document.js";
import { registerDashboardRoutes } from "../ui/dashboard-routes.js";
import { quotedInput } from "./bounded-message.js";
import { responseHeaderPairsOf } from "./call-context.js";
import { connectRoutes } from "./connect-routes.js";
import { refusalOfFastifyError } from "./http-errors.js";
import type { HttpRequestHandler } from "./one-port-listener.js";

/** Longest path segment the router takes, in characters (a registry name is at most 100). */
const maxParamLength = 512;

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
  /** The title, version and description of GET /openapi.json. */
  readonly apiInfo: OpenApiInfo;
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
    routerOptions: { maxParamLength },
    // Errors of the router itself (a bad percent-encoding, an over-long segment) come before the
    // onRequest hook: they get the ids and the error body here.
    frameworkErrors: (error, request, reply) => {
      setCallMeta(request, reply, deps.ids);
      return sendError(error, request, reply, deps);
    },
    serverFactory,
    schemaController: { compilersFactory: schemaCompilersOnDemand() },
  });

  // REST bodies are JSON; fastify's default text/plain parser would let other media types through
  // to a confusing 400 instead of a clear 415.
  fastify.removeContentTypeParser("text/plain");
  // Our own JSON parser says which of its rules a body broke (an encoding, a refused key), where
  // fastify's says "not valid JSON" for all of them. The size limit is still fastify's.
  fastify.removeContentTypeParser("application/json");
  fastify.addContentTypeParser("application/json", { parseAs: "string" }, (request, text, done) => {
    try {
      done(null, parseJsonBody(text as string, headerText(request.headers["content-encoding"])));
    } catch (error) {
      done(error as Error, undefined);
    }
  });
  fastify.decorateRequest("callMeta", null as unknown as CallMeta);
  fastify.addHook("onRequest", async (request, reply) => setCallMeta(request, reply, deps.ids));
  fastify.setErrorHandler((error: unknown, request, reply) =>
    sendError(error, request, reply, deps),
  );
  fastify.setNotFoundHandler((request, reply) =>
    sendError(
      new HttpRefusal(
        404,
        Code.NotFound,
        `no route for ${request.method} ${quotedInput(request.url)}`,
      ),
      request,
      reply,
      deps,
    ),
  );

  fastify.get("/metrics", async (request, reply) => {
    try {
      deps.checkAccess({
        access: Access.VIEWER,
        authorization: request.headers.authorization,
        what: "/metrics",
        clientAddress: request.ip,
      });
    } catch (error) {
      const { status, headers, body } = errorResponseOf(ConnectError.from(error));
      return reply.code(status).headers(headers).send(body);
    }
    const text = await deps.metrics.registry.metrics();
    return reply.type(deps.metrics.registry.contentType).send(text);
  });

  registerDashboardRoutes(fastify);
  // Public, as gRPC reflection is: it shows the schema the protos and the README already publish,
  // and tools read it before they hold a token. Built at the first request (about 10 ms), not at
  // every start, then the same bytes for the life of the node.
  let openApiText: string | undefined;
  fastify.get("/openapi.json", async (_request, reply) => {
    openApiText ??= JSON.stringify(openApiDocumentOf(deps.restRoutes, deps.apiInfo));
    return reply.type("application/json; charset=utf-8").send(openApiText);
  });

  registerRestGateway(fastify, deps.restRoutes, {
    shutdownSignal: deps.shutdownSignal,
    callMetaOf: (request) => request.callMeta,
  });

  await fastify.register(
    connectRoutes({
      services: deps.services,
      readMaxBytes: deps.bodyLimitBytes,
      shutdownSignal: deps.shutdownSignal,
      contextValues: (request) => createContextValues().set(callMetaKey, request.callMeta),
    }),
  );

  await fastify.ready();
  if (handler === undefined) throw new Error("fastify did not hand over its request handler");
  return { fastify, handler };
}

type SchemaCompilers = NonNullable<
  NonNullable<FastifyServerOptions["schemaController"]>["compilersFactory"]
>;

/**
 * fastify's own schema compilers (ajv and fast-json-stringify, as fastify would pick them), loaded
 * when a route first declares a schema instead of when fastify is created: none of our routes
 * does (messages are checked by the validation interceptor), and loading ajv was a tenth of a
 * start. The one difference: fastify then treats the validator as custom, which only stops it
 * lower-casing the keys of a `headers` schema.
 */
function schemaCompilersOnDemand(): SchemaCompilers {
  const fromFastify = createRequire(import.meta.resolve("fastify"));
  type Selector<F> = () => F;
  type Validator = NonNullable<SchemaCompilers["buildValidator"]>;
  type Serializer = NonNullable<SchemaCompilers["buildSerializer"]>;
  let validator: Validator | undefined;
  let serializer: Serializer | undefined;
  return {
    buildValidator: (schemas, options) => {
      validator ??= (fromFastify("@fastify/ajv-compiler") as Selector<Validator>)();
      return validator(schemas, options);
    },
    buildSerializer: (schemas, options) => {
      serializer ??= (
        fromFastify("@fastify/fast-json-stringify-compiler") as Selector<Serializer>
      )();
      return serializer(schemas, options);
    },
  };
}

/** Resolves the request's correlation id and trace context, and echoes them on the reply. */
function setCallMeta(request: FastifyRequest, reply: FastifyReply, ids: IdSource): void {
  const traceparent = request.headers.traceparent;
  request.callMeta = resolveCallMeta(
    request.id,
    typeof traceparent === "string" ? traceparent : undefined,
    ids,
    request.socket.remoteAddress ?? "",
  );
  for (const [name, value] of responseHeaderPairsOf(request.callMeta)) reply.header(name, value);
}

/**
 * Sends whatever was thrown on the HTTP side (by a route, the gateway, fastify's router, body
 * reading or parsers) as `{code, message, details}`. What is none of the client's doing is logged
 * and answered 500 "internal error".
 */
function sendError(
  error: unknown,
  request: FastifyRequest,
  reply: FastifyReply,
  deps: HttpAppDeps,
) {
  const response = responseOf(error, deps.bodyLimitBytes);
  if (response === undefined) {
    request.log.error({ err: error }, "request failed");
    return reply
      .code(500)
      .send({ code: codeName(Code.Internal), message: "internal error", details: [] });
  }
  return reply
    .code(response.status)
    .headers(response.headers ?? {})
    .send(response.body);
}

function responseOf(error: unknown, bodyLimitBytes: number): ErrorResponse | undefined {
  if (error instanceof ConnectError) return errorResponseOf(error);
  if (error instanceof HttpRefusal) return refusalResponseOf(error);
  if (!(error instanceof Error) || !("statusCode" in error)) return undefined;
  const refusal = refusalOfFastifyError(error as FastifyError, { bodyLimitBytes, maxParamLength });
  return refusal === undefined ? undefined : refusalResponseOf(refusal);
}

function headerText(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(", ") : value;
}
