import type { SpanRecord, TraceSummary, TraceView, TracingStats } from "./model.js";

/** The bounds of a trace store. Every one is enforced on every add. */
export interface TraceStoreLimits {
  /** Traces held at most; the oldest (first seen) goes first. Default 10,000. */
  readonly maxTraces: number;
  /** Bytes of spans held at most (see `spanBytes`); the oldest traces go first. Default 32 MiB. */
  readonly maxBytes: number;
  /** Spans one trace holds at most; later spans of a full trace are dropped. Default 1,000. */
  readonly maxSpansPerTrace: number;
  /**
   * Distinct (service, operation) pairs whose latency is kept at most; spans of further pairs
   * are held and counted but have no latency row. Default 1,000 (with the window: 4 MiB of rings).
   */
  readonly maxOperations: number;
  /** Latest durations kept per (service, operation) for its percentiles. Default 512. */
  readonly latencyWindow: number;
}

/** What an add did. */
export interface AddResult {
  /** Spans now held. */
  readonly accepted: number;
  /**
   * Spans refused: their trace was full, they repeated a span id the trace holds, or their
   * trace with them would not fit in `maxBytes` (no other trace is dropped for them).
   */
  readonly dropped: number;
}

/** A listing of one service's traces. */
export interface ServiceTracesQuery {
  readonly service: string;
  /** 1 to 1,000. */
  readonly limit: number;
  /** Only traces with an error span. */
  readonly errorsOnly: boolean;
}

/**
 * The node's bounded store of finished spans, grouped by trace: a ring of traces (oldest first
 * out) bounded in count and in bytes, looked up by trace id in O(1). It holds this node's own
 * spans and those other services send; it is per node (a trace another node served is not here)
 * and in memory only: OTLP export is how traces outlive the node.
 *
 * Implementations: the in-memory store; it passes tests/contracts/trace-store.contract.ts.
 */
export interface TraceStore {
  /**
   * Adds finished spans (any mix of traces). A span whose trace is new opens it as the newest;
   * room is made by dropping the oldest traces whole, never the trace the span joins.
   */
  add(spans: readonly SpanRecord[]): AddResult;
  /** One trace as a tree, or undefined when the store does not hold it. */
  trace(traceId: string): TraceView | undefined;
  /** The latest traces (by when the store first saw them) a service has spans in, newest first. */
  serviceTraces(query: ServiceTracesQuery): TraceSummary[];
  /**
   * Counts over the spans held; percentiles per (service, operation) over its latest
   * `latencyWindow` spans (which may include spans of traces already dropped).
   */
  stats(): TracingStats;
  /** What is held now. */
  readonly size: { readonly traces: number; readonly spans: number; readonly bytes: number };
}

/** The defaults of {@link TraceStoreLimits}. */
export const traceStoreDefaults: Readonly<TraceStoreLimits> = Object.freeze({
  maxTraces: 10_000,
  maxBytes: 32 * 1024 * 1024,
  maxSpansPerTrace: 1_000,
  maxOperations: 1_000,
  latencyWindow: 512,
});

/**
 * What a span costs the store, in bytes: its strings (two bytes a character, as V8 may hold
 * them) and a fixed 320 for the record, its tree node and the indexes.
 */
export function spanBytes(span: SpanRecord): number {
  let chars =
    span.traceId.length +
    span.spanId.length +
    span.parentSpanId.length +
    span.name.length +
    span.service.length +
    span.statusMessage.length;
  for (const key in span.attributes) chars += key.length + (span.attributes[key]?.length ?? 0);
  return 320 + 2 * chars;
}
