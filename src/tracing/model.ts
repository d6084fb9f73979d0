/** What a span stands for, as OpenTelemetry says (the proto's SpanKind, by name). */
export type SpanKindName =
  | "unspecified"
  | "internal"
  | "server"
  | "client"
  | "producer"
  | "consumer";

/** A span's outcome, as OpenTelemetry's status codes say it. */
export type SpanStatus = "unset" | "ok" | "error";

/**
 * One finished span as the trace store keeps it: this node's own (from the OpenTelemetry SDK) or
 * one another service sent (OTLP). Ids are lowercase hex. Strings are already cut to the store's
 * limits by whoever builds the record (see `span-limits.ts`).
 */
export interface SpanRecord {
  /** 32 lowercase hex digits, not all zero. */
  readonly traceId: string;
  /** 16 lowercase hex digits, not all zero. */
  readonly spanId: string;
  /** The parent's span id; "" for a root span. */
  readonly parentSpanId: string;
  readonly name: string;
  /** The service that recorded it ("orchestrator" for this node's own spans). */
  readonly service: string;
  readonly kind: SpanKindName;
  /** Unix time of the start, in milliseconds (fractional). */
  readonly startTimeMs: number;
  /** Non-negative. */
  readonly durationMs: number;
  readonly status: SpanStatus;
  /** "" unless the status is "error" and the recorder gave a reason. */
  readonly statusMessage: string;
  /** Attribute values as text (numbers, booleans and arrays stringified). */
  readonly attributes: Readonly<Record<string, string>>;
}

/** A span and the spans it is the parent of, children by start time. */
export interface SpanTree {
  readonly span: SpanRecord;
  readonly children: readonly SpanTree[];
}

/** One trace as the store holds it. */
export interface TraceView {
  readonly traceId: string;
  /**
   * Root spans, and spans whose parent the store does not hold, each with its descendants; by
   * start time.
   */
  readonly roots: readonly SpanTree[];
  readonly spanCount: number;
  /** From the earliest start to the latest end, in ms. */
  readonly durationMs: number;
  /** The services of its spans, sorted. */
  readonly services: readonly string[];
  /** True when any span has status "error". */
  readonly error: boolean;
}

/** A trace, summed up for a listing. */
export interface TraceSummary {
  readonly traceId: string;
  /** The name of its earliest root span, or of its earliest span when it holds no root. */
  readonly rootName: string;
  /** The earliest span's start, Unix ms. */
  readonly startTimeMs: number;
  readonly durationMs: number;
  readonly spanCount: number;
  readonly error: boolean;
  readonly services: readonly string[];
}

/** Latency of one operation (span name) of one service. */
export interface OperationLatency {
  readonly service: string;
  readonly operation: string;
  /**
   * Spans of this operation held that counted in this row (a span held while the pair had no
   * row, the store being at `maxOperations`, does not count in a row made later).
   */
  readonly count: number;
  /** Of them, with status "error". */
  readonly errorCount: number;
  /** Percentiles over the operation's latest spans (see TraceStore.stats). */
  readonly p50Ms: number;
  readonly p95Ms: number;
  readonly p99Ms: number;
}

/** The store's counts, as `GET /infrastructure/tracing/stats` answers them. */
export interface TracingStats {
  readonly totalTraces: number;
  readonly totalSpans: number;
  readonly servicesTraced: number;
  /** Error spans over spans held; 0 when none are held. */
  readonly errorRate: number;
  /** By service, then operation. */
  readonly operations: readonly OperationLatency[];
}
