import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Metrics, RpcSeries } from "../observability/metrics.js";
import { callMetaOf } from "./call-meta.js";
import type { Interceptor } from "./chain.js";
import { reportingEnd } from "./stream-end.js";

// Failures that are the server's fault: logged as errors with their cause.
const serverFaults = new Set([Code.Internal, Code.Unknown, Code.DataLoss]);
// Failures operators want to see, though they are not bugs.
const operational = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.ResourceExhausted]);

/**
 * The outermost interceptor: counts and times every call (per protocol, service, method and code),
 * logs its outcome with its correlation and trace ids (successes at debug level, so that a busy
 * node does not pay for an access log by default), and makes sure nothing but a ConnectError
 * leaves the chain: an unexpected exception is logged with its stack and becomes a bare INTERNAL,
 * so that no stack, cause or internal host name reaches a client. Logs and metrics share one
 * wrapper because both need the call's start and end, and the hot path pays for one.
 */
export function createTelemetryInterceptor(logger: Logger, metrics: Metrics): Interceptor {
  return (method) => {
    const rpc = `${method.parent.typeName}/${method.name}`;
    const seriesOf = seriesByProtocol(metrics, method);
    const finish = (
      context: HandlerContext,
      series: RpcSeries,
      startedAt: number,
      error?: unknown,
    ): ConnectError | undefined => {
      const elapsedMs = performance.now() - startedAt;
      const outcome = sanitize(error);
      const code = outcome ? (Code[outcome.code] ?? "Unknown") : "OK";
      series.handled.set(code, (series.handled.get(code) ?? 0) + 1);
      series.observe(elapsedMs / 1000);
      const level = levelOf(outcome, error);
      if (logger.isLevelEnabled(level)) {
        const meta = callMetaOf(context);
        logger[level](
          {
            rpc,
            protocol: context.protocolName,
            code,
            duration_ms: Math.round(elapsedMs * 1000) / 1000,
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
        const series = seriesOf(context.protocolName);
        series.started++;
        const startedAt = performance.now();
        try {
          const response = await next(request, context);
          finish(context, series, startedAt);
          return response;
        } catch (error) {
          throw finish(context, series, startedAt, error);
        }
      },
      streaming: (next) =>
        async function* (requests, context) {
          const series = seriesOf(context.protocolName);
          series.started++;
          const startedAt = performance.now();
          yield* reportingEnd(
            () => next(requests, context),
            context,
            (error) => finish(context, series, startedAt, error),
          );
        },
    };
  };
}

/** The method's series per protocol, looked up once per protocol and then kept. */
function seriesByProtocol(metrics: Metrics, method: DescMethod): (protocol: string) => RpcSeries {
  const byProtocol = new Map<string, RpcSeries>();
  return (protocol) => {
    let series = byProtocol.get(protocol);
    if (series === undefined) {
      series = metrics.rpcSeries({
        protocol,
        service: method.parent.typeName,
        method: method.name,
        type: method.methodKind,
      });
      byProtocol.set(protocol, series);
    }
    return series;
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
