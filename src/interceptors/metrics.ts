import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Metrics } from "../observability/metrics.js";
import type { Interceptor } from "./chain.js";

interface MethodSeries {
  started(): void;
  handled(code: string, startedAt: number): void;
}

/**
 * Counts every call when it starts and when it ends (with its code) and observes its duration,
 * per protocol, service and method. Label children are created once per method and protocol,
 * so that a call costs two increments and one observation.
 */
export function createMetricsInterceptor(metrics: Metrics): Interceptor {
  return (method) => {
    const series = seriesOf(metrics, method);
    return {
      unary: (next) => async (request, context) => {
        const s = series(context.protocolName);
        s.started();
        const startedAt = performance.now();
        try {
          const response = await next(request, context);
          s.handled("OK", startedAt);
          return response;
        } catch (error) {
          s.handled(codeOf(error), startedAt);
          throw error;
        }
      },
      streaming: (next) =>
        async function* (requests, context) {
          const s = series(context.protocolName);
          s.started();
          const startedAt = performance.now();
          let code = "OK";
          try {
            yield* next(requests, context);
          } catch (error) {
            code = codeOf(error);
            throw error;
          } finally {
            s.handled(code, startedAt);
          }
        },
    };
  };
}

function seriesOf(metrics: Metrics, method: DescMethod): (protocol: string) => MethodSeries {
  const byProtocol = new Map<string, MethodSeries>();
  const type = method.methodKind;
  return (protocol) => {
    let series = byProtocol.get(protocol);
    if (series !== undefined) return series;
    const labels = { protocol, service: method.parent.typeName, method: method.name, type };
    const started = metrics.rpcStarted.labels(labels);
    const duration = metrics.rpcHandlingSeconds.labels(labels);
    const handledByCode = new Map<string, ReturnType<Metrics["rpcHandled"]["labels"]>>();
    series = {
      started: () => started.inc(),
      handled: (code, startedAt) => {
        let handled = handledByCode.get(code);
        if (handled === undefined) {
          handled = metrics.rpcHandled.labels({ ...labels, code });
          handledByCode.set(code, handled);
        }
        handled.inc();
        duration.observe((performance.now() - startedAt) / 1000);
      },
    };
    byProtocol.set(protocol, series);
    return series;
  };
}

/** The status code name of a failure, as gRPC names codes ("NotFound", "Internal"). */
export function codeOf(error: unknown): string {
  return Code[error instanceof ConnectError ? error.code : Code.Unknown] ?? "Unknown";
}
