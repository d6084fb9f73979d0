import { Counter, collectDefaultMetrics, Histogram, Registry } from "prom-client";

/** Label names of the per-RPC metrics, as in go-grpc-prometheus plus the protocol. */
type RpcLabels = "protocol" | "service" | "method" | "type";

/** The node's metrics, in a registry of its own (several nodes may share one test process). */
export interface Metrics {
  readonly registry: Registry;
  /** Calls started, by protocol ("grpc", "grpc-web", "connect", "rest"), service, method, type. */
  readonly rpcStarted: Counter<RpcLabels>;
  /** Calls finished, with their status code name ("OK", "InvalidArgument", ...). */
  readonly rpcHandled: Counter<RpcLabels | "code">;
  /** Time from the start of a call to its end, in seconds. */
  readonly rpcHandlingSeconds: Histogram<RpcLabels>;
  /** Log records not shipped to the log collector, by reason. */
  readonly logRecordsDropped: Counter<"reason">;
}

export interface MetricsOptions {
  /** Collect prom-client's default process metrics (CPU, memory, event loop, GC). Default true. */
  collectDefaultMetrics?: boolean;
}

/** Creates the node's metrics registry with the process metrics and the per-RPC metrics. */
export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  if (options.collectDefaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  const rpcLabels: RpcLabels[] = ["protocol", "service", "method", "type"];
  return {
    registry,
    rpcStarted: new Counter({
      name: "orchestrator_rpc_started_total",
      help: "RPCs started, on every protocol (grpc, grpc-web, connect, rest).",
      labelNames: rpcLabels,
      registers: [registry],
    }),
    rpcHandled: new Counter({
      name: "orchestrator_rpc_handled_total",
      help: "RPCs completed, by status code.",
      labelNames: [...rpcLabels, "code"],
      registers: [registry],
    }),
    rpcHandlingSeconds: new Histogram({
      name: "orchestrator_rpc_handling_seconds",
      help: "Time to handle an RPC (until a stream ends, for streams).",
      labelNames: rpcLabels,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    logRecordsDropped: new Counter({
      name: "orchestrator_log_records_dropped_total",
      help: "Log records not shipped to the log collector (buffer full, or the send failed).",
      labelNames: ["reason"],
      registers: [registry],
    }),
  };
}
