import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { ActiveSpan, Tracing } from "../tracing/tracing.js";
import { callMetaOf } from "./call-meta.js";
import type { Interceptor } from "./chain.js";
import { reportingEnd } from "./stream-end.js";

/**
 * Records a server span for every call, on every transport (the chain is the one path all of
 * them take): named `package.Service/Method`, with the ids the edge chose (so `traceresponse`
 * and the logs name the recorded span), the caller's traceparent as its parent, and the call's
 * outcome as its status. It sits inside telemetry and outside auth, so refused calls are traced
 * too. A failure's status message is the code and the message the client saw; an unexpected
 * exception is only "internal error", as telemetry makes it.
 */
export function createTracingInterceptor(tracing: Tracing): Interceptor {
  return (method) => {
    const name = `${method.parent.typeName}/${method.name}`;
    const start = (context: HandlerContext): ActiveSpan => {
      const meta = callMetaOf(context);
      // The span's name carries the service and method: attributes are what varies per call.
      return tracing.startServerSpan(name, meta, {
        "orchestrator.protocol": context.protocolName,
        "orchestrator.correlation_id": meta.correlationId,
      });
    };
    return {
      unary: (next) => async (request, context) => {
        const span = start(context);
        try {
          const response = await next(request, context);
          finish(span);
          return response;
        } catch (error) {
          finish(span, error);
          throw error;
        }
      },
      streaming: (next) =>
        async function* (requests, context) {
          const span = start(context);
          yield* reportingEnd(
            () => next(requests, context),
            context,
            (error) => finish(span, error),
          );
        },
    };
  };
}

function finish(span: ActiveSpan, error?: unknown): void {
  if (error === undefined) {
    span.setAttribute("rpc.grpc.status_code", 0);
    span.end();
    return;
  }
  const outcome =
    error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal);
  span.setAttribute("rpc.grpc.status_code", outcome.code);
  span.end({ message: `${Code[outcome.code]}: ${outcome.rawMessage}` });
}
