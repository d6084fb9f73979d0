import type { JsonValue } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouterOptions,
  type ContextValues,
  createConnectRouter,
} from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import {
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { HttpRefusal, refusalResponseOf } from "../gateway/error-body.js";
import type { WrappedService } from "../interceptors/chain.js";
import { quotedInput } from "./bounded-message.js";
import { capDeadlineHeaders } from "./deadline.js";

export interface ConnectRoutesOptions {
  /** Every service, wrapped with the interceptor chain. */
  readonly services: readonly WrappedService[];
  /** Largest request message, before and after decompression, in bytes. */
  readonly readMaxBytes: number;
  /** Aborts the calls still running when the shutdown grace period is over. */
  readonly shutdownSignal: AbortSignal;
  /** The context values of a call (its correlation id and trace), from its request. */
  readonly contextValues: (request: FastifyRequest) => ContextValues;
}

/**
 * Serves the Connect router (Connect, gRPC-Web and gRPC+JSON) on fastify, as connect-fastify's
 * plugin does, but with the HTTP edge's habits: a request the router refuses without a body
 * (a method it does not take: 405, a content type it does not speak: 415) gets the error body
 * `{code, message, details}` every other HTTP error has, a failure to write a response is logged
 * through the request's logger, and a deadline is capped as on the other transports (the router
 * would overflow its timer with one over 24.8 days). Register it with `fastify.register`: its
 * content-type parsers (none: the router reads bodies itself) stay inside it.
 */
export function connectRoutes(options: ConnectRoutesOptions) {
  const routerOptions: ConnectRouterOptions = {
    readMaxBytes: options.readMaxBytes,
    shutdownSignal: options.shutdownSignal,
    acceptCompression: [compressionGzip, compressionBrotli],
    // As on REST: an unknown field is reported, not dropped (connect's default drops it).
    jsonOptions: { ignoreUnknownFields: false },
  };
  return async (instance: FastifyInstance): Promise<void> => {
    const router = createConnectRouter(routerOptions);
    for (const { service, impl } of options.services) router.service(service, impl);
    // The router reads and limits bodies itself, whatever their type; it answers 415 for the
    // types it does not speak.
    instance.addHook("onRequest", async (request) => capDeadlineHeaders(request.raw.headers));
    instance.removeAllContentTypeParsers();
    instance.addContentTypeParser("*", (_request, _payload, done) => done(null, undefined));
    // One route per service, `/<service>/*`, rather than one per RPC: fastify's router keeps a
    // tree per HTTP method and `all` adds the path to each of them, so a route per RPC was some
    // 450 insertions, a tenth of a node's start. The method name is looked up here; a path that
    // names no RPC goes to the not-found handler, as a path no route matches does.
    for (const [prefix, handlers] of handlersByService(router.handlers)) {
      instance.all(`${prefix}/*`, (request, reply) => {
        const handler = handlers.get((request.params as { "*": string })["*"]);
        if (handler === undefined) {
          reply.callNotFound();
          return;
        }
        return serve(handler, request, reply, options.contextValues(request));
      });
    }
  };
}

/** The router's handlers by service path (`/orchestrator.v1.RegistryService`), then by method name. */
function handlersByService(
  handlers: readonly UniversalHandler[],
): Map<string, Map<string, UniversalHandler>> {
  const services = new Map<string, Map<string, UniversalHandler>>();
  for (const handler of handlers) {
    const slash = handler.requestPath.lastIndexOf("/");
    const prefix = handler.requestPath.slice(0, slash);
    let methods = services.get(prefix);
    if (methods === undefined) {
      methods = new Map();
      services.set(prefix, methods);
    }
    methods.set(handler.requestPath.slice(slash + 1), handler);
  }
  return services;
}

async function serve(
  handler: UniversalHandler,
  request: FastifyRequest,
  reply: FastifyReply,
  contextValues: ContextValues,
): Promise<void> {
  const universal = await handler(
    universalRequestFromNodeRequest(
      request.raw,
      reply.raw,
      request.body as JsonValue | undefined,
      contextValues,
    ),
  );
  if (universal.body === undefined && universal.status >= 400) {
    const { status, body } = refusalResponseOf(refusalOf(handler, universal.status, request));
    if (status === 405) reply.header("allow", handler.allowedMethods.join(", "));
    await reply.code(status).send(body);
    return;
  }
  // The router writes the response itself; fastify's reply holds the headers set so far (the
  // correlation id and trace), which go out with it.
  reply.hijack();
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) reply.raw.setHeader(name, value);
  }
  try {
    await universalResponseToNodeResponse(universal, reply.raw);
  } catch (error) {
    // A client that went away is no failure of ours.
    if (ConnectError.from(error).code !== Code.Aborted) {
      request.log.warn({ err: error }, "writing an RPC response failed");
    }
  }
}

/** What a router's body-less refusal means, for the caller. */
function refusalOf(handler: UniversalHandler, status: number, request: FastifyRequest) {
  const rpc = `${handler.service.typeName}/${handler.method.name}`;
  switch (status) {
    case 405:
      return new HttpRefusal(
        405,
        Code.Unimplemented,
        `${rpc} does not take ${quotedInput(request.method)}: send ${handler.allowedMethods.join(" or ")}`,
      );
    case 415: {
      const type = request.headers["content-type"];
      return new HttpRefusal(
        415,
        Code.InvalidArgument,
        `${rpc} does not take the content type ${quotedInput(type ?? "")}: send a Connect, gRPC-Web or gRPC request of its kind (${handler.method.methodKind.replace("_", " ")})`,
      );
    }
    default:
      return new HttpRefusal(status, Code.InvalidArgument, `${rpc} refused the request`);
  }
}
