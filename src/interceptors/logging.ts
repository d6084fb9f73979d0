import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { Logger } from "pino";
import { callMetaOf } from "./call-meta.js";
import type { Interceptor } from "./chain.js";

// Failures that are the server's fault: logged as errors with their cause.
const serverFaults = new Set([Code.Internal, Code.Unknown, Code.DataLoss]);
// Failures operators want to see, though they are not bugs.
const operational = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.ResourceExhausted]);

/**
 * Logs every call's outcome with its correlation and trace ids (successes at debug level, so that
 * a busy node does not pay for an access log by default), and makes sure nothing but a ConnectError
 * leaves the chain: an unexpected exception is logged with its stack and becomes a bare INTERNAL,
 * so no stack, cause or internal host name reaches a client. It is the outermost interceptor.
 */
export function createLoggingInterceptor(logger: Logger): Interceptor {
  return (method) => {
    const rpc = `${method.parent.typeName}/${method.name}`;
    const finish = (context: HandlerContext, startedAt: number, error?: unknown): unknown => {
      const outcome = sanitize(error);
      const level = levelOf(outcome, error);
      if (logger.isLevelEnabled(level)) {
        const meta = callMetaOf(context);
        logger[level](
          {
            rpc,
            protocol: context.protocolName,
            code: outcome ? Code[outcome.code] : "OK",
            duration_ms: Math.round((performance.now() - startedAt) * 1000) / 1000,
            correlation_id: meta.correlationId,
            trace_id: meta.traceId,
            span_id: meta.spanId,
            ...(level === "error" ? { err: error } : {}),
          },
          outcome ? `rpc failed: ${outcome.rawMessage}` : "rpc handled",
        );
      }
      return outcome;
    };
    return {
      unary: (next) => async (request, context) => {
        const startedAt = performance.now();
        try {
          const response = await next(request, context);
          finish(context, startedAt);
          return response;
        } catch (error) {
          throw finish(context, startedAt, error);
        }
      },
      streaming: (next) =>
        async function* (requests, context) {
          const startedAt = performance.now();
          try {
            yield* next(requests, context);
            finish(context, startedAt);
          } catch (error) {
            throw finish(context, startedAt, error);
          }
        },
    };
  };
}

function sanitize(error: unknown): ConnectError | undefined {
  if (error === undefined) return undefined;
  if (error instanceof ConnectError) return error;
  return new ConnectError("internal error", Code.Internal);
}

function levelOf(outcome: ConnectError | undefined, raw: unknown): "debug" | "warn" | "error" {
  if (outcome === undefined) return "debug";
  if (!(raw instanceof ConnectError) || serverFaults.has(outcome.code)) return "error";
  if (operational.has(outcome.code)) return "warn";
  return "debug";
}
