import { InfrastructureService } from "../../gen/orchestrator/v1/infrastructure_pb.js";
import type { AppConfig } from "../config/index.js";
import type { OutboundTracer } from "../http-client/http-client.js";
import { createTracingService } from "../services/tracing-service.js";
import type { NodeInfo } from "../system/node-info.js";
import { createMemoryTraceStore } from "../tracing/memory-trace-store.js";
import type { TraceStore } from "../tracing/trace-store.js";
import { createTracing, outboundTracerOf, type Tracing } from "../tracing/tracing.js";
import { type Capability, servicePart } from "./capability.js";

/** What the tracing capability gives the others. */
export interface TracingCapability extends Capability {
  /** The node's tracer; undefined when TRACING_ENABLED is false. */
  readonly tracing: Tracing | undefined;
  /** For the HTTP clients of the other capabilities; undefined when tracing is off. */
  readonly outboundTracer: OutboundTracer | undefined;
  readonly store: TraceStore;
}

/**
 * Tracing: the node's bounded trace store (its own spans and those other services send through
 * ExportSpans), the OpenTelemetry tracer that records server and client spans into it and, when
 * OTEL_EXPORTER_OTLP_ENDPOINT is set, exports them over OTLP; and the trace lookups of
 * InfrastructureService. Stopped last, so that the spans of every other capability's shutdown
 * are exported.
 */
export async function createTracingCapability(deps: {
  readonly config: AppConfig;
  readonly node: NodeInfo;
}): Promise<TracingCapability> {
  const settings = deps.config.tracing;
  const store = createMemoryTraceStore({
    maxTraces: settings.maxTraces,
    maxBytes: settings.maxBytes,
    maxSpansPerTrace: settings.maxSpansPerTrace,
  });
  const tracing = settings.enabled
    ? await createTracing({
        store,
        serviceName: deps.node.service,
        instanceId: deps.node.nodeId,
        version: deps.node.version,
        sampleRatio: settings.sampleRatio,
        ...(settings.otlpEndpoint
          ? {
              otlp: { endpoint: settings.otlpEndpoint, timeoutMs: deps.config.outboundTimeoutMs },
            }
          : {}),
      })
    : undefined;
  return {
    names: ["tracing", ...(tracing && settings.otlpEndpoint ? ["otlp-export"] : [])],
    services: [servicePart(InfrastructureService, createTracingService({ store }))],
    readiness: [],
    tracing,
    outboundTracer: tracing && outboundTracerOf(tracing),
    store,
    async start() {},
    async stop() {
      await tracing?.shutdown();
    },
  };
}
