import {
  type Attributes,
  type Context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { hrTimeToMilliseconds, parseTraceParent } from "@opentelemetry/core";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  type IdGenerator,
  ParentBasedSampler,
  RandomIdGenerator,
  type ReadableSpan,
  type SpanProcessor,
  TraceIdRatioBasedSampler,
} from "@opentelemetry/sdk-trace-base";
import type { OutboundTracer } from "../http-client/http-client.js";
import type { SpanKindName, SpanRecord } from "./model.js";
import { attributesOfObject, cut, spanLimits } from "./span-limits.js";
import type { TraceStore } from "./trace-store.js";

/** Where a span sits in a W3C trace, as the call's edge resolved it. */
export interface SpanPlace {
  readonly traceId: string;
  /** The span's own id, already chosen (and sent back in `traceresponse`). */
  readonly spanId: string;
  /** The caller's span; "" when the trace starts here. */
  readonly parentSpanId: string;
  /** W3C trace flags of the caller (bit 0: sampled). */
  readonly traceFlags: number;
}

/** A span in progress, as the interceptors and the HTTP client hold it. */
export interface ActiveSpan {
  /** The traceparent naming this span, for the calls it makes. */
  readonly traceparent: string;
  setAttribute(key: string, value: string | number | boolean): void;
  /** Ends the span: OK, or ERROR with a message that is safe to show (never a stack). */
  end(error?: { readonly message: string }): void;
}

/** What {@link createTracing} is built from. */
export interface TracingOptions {
  /** Holds every span this node records (and, through its API, the spans others send). */
  readonly store: TraceStore;
  /** `service.name` of this node's spans. */
  readonly serviceName: string;
  /** `service.instance.id`: the node id. */
  readonly instanceId: string;
  readonly version: string;
  /** Share of new traces recorded (0..1); a caller's sampled flag is followed. Default 1. */
  readonly sampleRatio?: number;
  /** When set, spans are also exported there over OTLP/HTTP (JSON), in batches. */
  readonly otlp?: {
    /** The collector's base URL (OTEL_EXPORTER_OTLP_ENDPOINT); spans go to `<url>/v1/traces`. */
    readonly endpoint: string;
    readonly timeoutMs: number;
  };
}

/** The node's tracer: server and client spans into the trace store (and OTLP when configured). */
export interface Tracing {
  /** Starts the span of an inbound call, with the ids its edge chose. */
  startServerSpan(name: string, place: SpanPlace, attributes: Attributes): ActiveSpan;
  /**
   * Starts the span of an outbound call, the child of the span `parent` names (a traceparent), or
   * the root of a new trace.
   */
  startClientSpan(name: string, parent: string | undefined, attributes: Attributes): ActiveSpan;
  /** Sends what the OTLP batch holds and stops. */
  shutdown(): Promise<void>;
}

/**
 * Builds the OpenTelemetry SDK's tracer for the node: a span processor writes each ended span into
 * the trace store, and a batch processor exports it over OTLP when an endpoint is configured. The
 * SDK is used without a global registration or a context manager: spans are parented explicitly
 * from the call's meta, which costs nothing per call and cannot leak between calls. The OTLP
 * exporter (with the transformer and metrics SDK it pulls in) is loaded only when configured.
 */
export async function createTracing(options: TracingOptions): Promise<Tracing> {
  const ids = new PresetIds();
  const processors: SpanProcessor[] = [storeProcessor(options.store, options.serviceName)];
  if (options.otlp) {
    const { OTLPTraceExporter } = await import("./otlp-trace-exporter.js");
    const exporter = new OTLPTraceExporter({
      url: `${options.otlp.endpoint.replace(/\/+$/, "")}/v1/traces`,
      timeoutMillis: options.otlp.timeoutMs,
    });
    // The batch processor's queue is bounded (2,048 spans): spans past it are dropped, not kept.
    processors.push(
      new BatchSpanProcessor(exporter, { exportTimeoutMillis: options.otlp.timeoutMs }),
    );
  }
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      "service.name": options.serviceName,
      "service.instance.id": options.instanceId,
      "service.version": options.version,
    }),
    sampler: new ParentBasedSampler({
      // Recording every trace needs no look at its id.
      root:
        (options.sampleRatio ?? 1) >= 1
          ? new AlwaysOnSampler()
          : new TraceIdRatioBasedSampler(options.sampleRatio ?? 1),
    }),
    idGenerator: ids,
    spanLimits: {
      attributeCountLimit: spanLimits.attributes,
      attributeValueLengthLimit: spanLimits.attributeValue,
    },
    spanProcessors: processors,
  });
  const tracer = provider.getTracer("orchestrator");

  return {
    startServerSpan(name, place, attributes) {
      const parent =
        place.parentSpanId === ""
          ? ROOT_CONTEXT
          : remoteParent(place.traceId, place.parentSpanId, place.traceFlags);
      ids.preset(place.traceId, place.spanId);
      const span = tracer.startSpan(name, { kind: SpanKind.SERVER, attributes }, parent);
      ids.clear();
      return activeSpan(span);
    },
    startClientSpan(name, parent, attributes) {
      const context = parent === undefined ? ROOT_CONTEXT : contextOf(parent);
      return activeSpan(tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes }, context));
    },
    shutdown: () => provider.shutdown(),
  };
}

/**
 * Gives the SDK the ids the call's edge already chose (so that the recorded span is the one the
 * `traceresponse` header and the logs name), and random ones otherwise. The SDK asks for them
 * synchronously inside `startSpan`, right after `preset`.
 */
class PresetIds implements IdGenerator {
  private readonly random = new RandomIdGenerator();
  private traceId: string | undefined;
  private spanId: string | undefined;

  preset(traceId: string, spanId: string): void {
    this.traceId = traceId;
    this.spanId = spanId;
  }

  clear(): void {
    this.traceId = undefined;
    this.spanId = undefined;
  }

  generateTraceId(): string {
    return this.traceId ?? this.random.generateTraceId();
  }

  generateSpanId(): string {
    return this.spanId ?? this.random.generateSpanId();
  }
}

function remoteParent(traceId: string, spanId: string, traceFlags: number): Context {
  return trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId, traceFlags, isRemote: true });
}

/** The context a traceparent names; the root context when it is malformed. */
function contextOf(traceparent: string): Context {
  const parent = parseTraceParent(traceparent);
  return parent === null
    ? ROOT_CONTEXT
    : remoteParent(parent.traceId, parent.spanId, parent.traceFlags);
}

const statusOk = Object.freeze({ code: SpanStatusCode.OK });

/** Wraps an SDK span; its traceparent is built only when asked for (server spans never are). */
class SdkSpan implements ActiveSpan {
  constructor(private readonly span: Span) {}

  get traceparent(): string {
    const context = this.span.spanContext();
    const flags = context.traceFlags.toString(16).padStart(2, "0");
    return `00-${context.traceId}-${context.spanId}-${flags}`;
  }

  setAttribute(key: string, value: string | number | boolean): void {
    this.span.setAttribute(key, value);
  }

  end(error?: { readonly message: string }): void {
    this.span.setStatus(
      error === undefined ? statusOk : { code: SpanStatusCode.ERROR, message: error.message },
    );
    this.span.end();
  }
}

function activeSpan(span: Span): ActiveSpan {
  return new SdkSpan(span);
}

/** The span processor that writes each ended span into the trace store. */
function storeProcessor(store: TraceStore, service: string): SpanProcessor {
  return {
    onStart() {},
    onEnd(span) {
      store.add([spanRecordOf(span, service)]);
    },
    forceFlush: async () => {},
    shutdown: async () => {},
  };
}

const kindNames: Record<SpanKind, SpanKindName> = {
  [SpanKind.INTERNAL]: "internal",
  [SpanKind.SERVER]: "server",
  [SpanKind.CLIENT]: "client",
  [SpanKind.PRODUCER]: "producer",
  [SpanKind.CONSUMER]: "consumer",
};

/** A span the SDK ended, as the trace store keeps it. */
export function spanRecordOf(span: ReadableSpan, service: string): SpanRecord {
  const context = span.spanContext();
  const status =
    span.status.code === SpanStatusCode.ERROR
      ? "error"
      : span.status.code === SpanStatusCode.OK
        ? "ok"
        : "unset";
  return {
    traceId: context.traceId,
    spanId: context.spanId,
    parentSpanId: span.parentSpanContext?.spanId ?? "",
    name: cut(span.name, spanLimits.name),
    service,
    kind: kindNames[span.kind] ?? "unspecified",
    startTimeMs: hrTimeToMilliseconds(span.startTime),
    durationMs: hrTimeToMilliseconds(span.duration),
    status,
    statusMessage:
      status === "error" ? cut(span.status.message ?? "", spanLimits.statusMessage) : "",
    attributes: attributesOfObject(span.attributes),
  };
}

/**
 * The HTTP client's tracer over {@link Tracing}: a client span per call named after the method,
 * with the server's address and the path (never the query, which may carry credentials). A
 * status of 400 or more is an error, as OpenTelemetry's HTTP conventions say for clients.
 */
export function outboundTracerOf(tracing: Tracing): OutboundTracer {
  return {
    start(method, url, parent) {
      const span = tracing.startClientSpan(method, parent, {
        "http.request.method": method,
        "server.address": url.hostname,
        "server.port": Number(url.port || (url.protocol === "https:" ? 443 : 80)),
        "url.path": url.pathname,
      });
      return {
        traceparent: span.traceparent,
        end(outcome) {
          if ("error" in outcome) {
            span.end({ message: outcome.error });
            return;
          }
          span.setAttribute("http.response.status_code", outcome.status);
          span.end(outcome.status >= 400 ? { message: `HTTP ${outcome.status}` } : undefined);
        },
      };
    },
  };
}
