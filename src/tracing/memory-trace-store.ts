import type {
  OperationLatency,
  SpanRecord,
  SpanTree,
  TraceSummary,
  TraceView,
  TracingStats,
} from "./model.js";
import {
  spanBytes,
  type TraceStore,
  type TraceStoreLimits,
  traceStoreDefaults,
} from "./trace-store.js";

/**
 * The latency of one (service, operation) pair: a ring of its latest durations, and the spans
 * of the pair the store holds (the row goes when the last of them does).
 */
interface LatencyRow {
  readonly key: string;
  readonly service: string;
  readonly operation: string;
  /** The latest durations; slot `samples % length` is written next. */
  readonly ring: Float64Array;
  /** Durations written so far (the ring holds the latest `min(samples, ring.length)`). */
  samples: number;
  count: number;
  errorCount: number;
}

/** A held span and the latency row it counts in (none when its pair had no room for one). */
interface HeldSpan {
  readonly record: SpanRecord;
  readonly latency: LatencyRow | undefined;
}

/** A trace as the store holds it, with what it counts for kept up to date on every add. */
interface HeldTrace {
  readonly traceId: string;
  /** When the store first saw it: a larger number is a newer trace. */
  readonly firstSeen: number;
  readonly spans: Map<string, HeldSpan>;
  /** Its spans per service. */
  readonly services: Map<string, number>;
  bytes: number;
  errorSpans: number;
  /** Its earliest span (by start, then span id) and its earliest with parentSpanId "". */
  earliest: SpanRecord;
  earliestRoot: SpanRecord | undefined;
  latestEndMs: number;
}

/** A tree node while it is built (a SpanTree once done). */
interface GrowingTree {
  readonly span: SpanRecord;
  readonly children: GrowingTree[];
}

/**
 * Finished spans in this process, grouped by trace: the node's trace store. Traces are kept in
 * the order the store first saw them, and the oldest go first, whole, to stay within
 * `maxTraces` and `maxBytes`. Counts are kept as spans come and go, so that `size` and `stats`
 * never walk the spans.
 *
 * Bounds default to {@link traceStoreDefaults}: maxTraces 10,000, maxBytes 32 MiB,
 * maxSpansPerTrace 1,000, maxOperations 2,000, latencyWindow 1,024.
 * @throws RangeError when a bound is not a positive integer.
 */
export function createMemoryTraceStore(limits: Partial<TraceStoreLimits> = {}): TraceStore {
  const bounds = traceStoreLimits(limits);
  // Insertion order is age: the first trace is the oldest.
  const traces = new Map<string, HeldTrace>();
  // The traces each service has spans in; a service goes when its last trace does.
  const byService = new Map<string, Set<string>>();
  const latency = new Map<string, LatencyRow>();
  let opened = 0;
  let spanCount = 0;
  let errorSpans = 0;
  let bytes = 0;

  const open = (span: SpanRecord): HeldTrace => {
    const trace: HeldTrace = {
      traceId: span.traceId,
      firstSeen: opened++,
      spans: new Map(),
      services: new Map(),
      bytes: 0,
      errorSpans: 0,
      earliest: span,
      earliestRoot: undefined,
      latestEndMs: span.startTimeMs + span.durationMs,
    };
    traces.set(span.traceId, trace);
    return trace;
  };

  /** The latency row the span counts in, made if its pair has none and there is room. */
  const measure = (span: SpanRecord): LatencyRow | undefined => {
    const key = operationKey(span.service, span.name);
    let row = latency.get(key);
    if (row === undefined) {
      if (latency.size >= bounds.maxOperations) return undefined;
      row = {
        key,
        service: span.service,
        operation: span.name,
        ring: new Float64Array(bounds.latencyWindow),
        samples: 0,
        count: 0,
        errorCount: 0,
      };
      latency.set(key, row);
    }
    row.ring[row.samples % row.ring.length] = span.durationMs;
    row.samples++;
    row.count++;
    if (span.status === "error") row.errorCount++;
    return row;
  };

  const unmeasure = (held: HeldSpan): void => {
    const row = held.latency;
    if (row === undefined) return;
    row.count--;
    if (held.record.status === "error") row.errorCount--;
    if (row.count === 0) latency.delete(row.key);
  };

  const hold = (trace: HeldTrace, span: SpanRecord, cost: number): void => {
    trace.spans.set(span.spanId, { record: span, latency: measure(span) });
    trace.bytes += cost;
    bytes += cost;
    spanCount++;
    if (span.status === "error") {
      trace.errorSpans++;
      errorSpans++;
    }
    const ofService = trace.services.get(span.service) ?? 0;
    trace.services.set(span.service, ofService + 1);
    if (ofService === 0) indexOf(span.service).add(trace.traceId);
    if (compareSpans(span, trace.earliest) < 0) trace.earliest = span;
    if (
      span.parentSpanId === "" &&
      (trace.earliestRoot === undefined || compareSpans(span, trace.earliestRoot) < 0)
    ) {
      trace.earliestRoot = span;
    }
    trace.latestEndMs = Math.max(trace.latestEndMs, span.startTimeMs + span.durationMs);
  };

  const indexOf = (service: string): Set<string> => {
    let ids = byService.get(service);
    if (ids === undefined) {
      ids = new Set();
      byService.set(service, ids);
    }
    return ids;
  };

  const evict = (trace: HeldTrace): void => {
    traces.delete(trace.traceId);
    bytes -= trace.bytes;
    spanCount -= trace.spans.size;
    errorSpans -= trace.errorSpans;
    for (const service of trace.services.keys()) {
      const ids = byService.get(service);
      ids?.delete(trace.traceId);
      if (ids?.size === 0) byService.delete(service);
    }
    for (const held of trace.spans.values()) unmeasure(held);
  };

  /** The oldest trace other than `keep`: the next to go. */
  const oldestBut = (keep: string): HeldTrace | undefined => {
    for (const trace of traces.values()) if (trace.traceId !== keep) return trace;
    return undefined;
  };

  // The trace a span is written to is never dropped to make room for it: the span would be
  // counted as accepted and yet not held.
  const makeRoom = (traceId: string, opens: boolean, cost: number): void => {
    const more = opens ? 1 : 0;
    while (traces.size + more > bounds.maxTraces || bytes + cost > bounds.maxBytes) {
      const oldest = oldestBut(traceId);
      if (oldest === undefined) return;
      evict(oldest);
    }
  };

  /** Holds the span, or tells why not (false: its trace is full, has it, or cannot fit it). */
  const take = (span: SpanRecord): boolean => {
    const trace = traces.get(span.traceId);
    if (trace !== undefined) {
      if (trace.spans.has(span.spanId)) return false;
      if (trace.spans.size >= bounds.maxSpansPerTrace) return false;
    }
    const cost = spanBytes(span);
    // Checked before making room, so that no trace is dropped for a span that would not fit.
    if ((trace?.bytes ?? 0) + cost > bounds.maxBytes) return false;
    makeRoom(span.traceId, trace === undefined, cost);
    hold(trace ?? open(span), span, cost);
    return true;
  };

  return {
    add(spans) {
      let accepted = 0;
      for (const span of spans) if (take(span)) accepted++;
      return { accepted, dropped: spans.length - accepted };
    },

    trace(traceId) {
      const trace = traces.get(traceId);
      return trace === undefined ? undefined : viewOf(trace);
    },

    serviceTraces(query) {
      const ids = byService.get(query.service);
      if (ids === undefined) return [];
      // A set's order is when the service joined each trace, which may come after the trace
      // was first seen: the listing's order is the latter.
      const newestFirst = Array.from(ids, (id) => traces.get(id) as HeldTrace).sort(
        (a, b) => b.firstSeen - a.firstSeen,
      );
      const summaries: TraceSummary[] = [];
      for (const trace of newestFirst) {
        if (summaries.length >= query.limit) break;
        if (query.errorsOnly && trace.errorSpans === 0) continue;
        summaries.push(summaryOf(trace));
      }
      return summaries;
    },

    stats(): TracingStats {
      return {
        totalTraces: traces.size,
        totalSpans: spanCount,
        servicesTraced: byService.size,
        errorRate: spanCount === 0 ? 0 : errorSpans / spanCount,
        operations: [...latency.values()].sort(byServiceThenOperation).map(latencyOf),
      };
    },

    get size() {
      return { traces: traces.size, spans: spanCount, bytes };
    },
  };
}

function traceStoreLimits(limits: Partial<TraceStoreLimits>): TraceStoreLimits {
  const merged = Object.freeze({ ...traceStoreDefaults, ...limits });
  for (const name of Object.keys(traceStoreDefaults) as (keyof TraceStoreLimits)[]) {
    const value = merged[name];
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(`${name} must be a positive integer, not ${value}`);
    }
  }
  return merged;
}

// The service's length first, so that no two pairs share a key whatever their characters.
function operationKey(service: string, operation: string): string {
  return `${service.length}:${service}${operation}`;
}

/** By start time, then span id: the order of roots and of children. */
function compareSpans(a: SpanRecord, b: SpanRecord): number {
  return a.startTimeMs - b.startTimeMs || compareText(a.spanId, b.spanId);
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function byServiceThenOperation(a: LatencyRow, b: LatencyRow): number {
  return compareText(a.service, b.service) || compareText(a.operation, b.operation);
}

function latencyOf(row: LatencyRow): OperationLatency {
  const sorted = row.ring.slice(0, Math.min(row.samples, row.ring.length)).sort();
  return {
    service: row.service,
    operation: row.operation,
    count: row.count,
    errorCount: row.errorCount,
    p50Ms: percentile(sorted, 50),
    p95Ms: percentile(sorted, 95),
    p99Ms: percentile(sorted, 99),
  };
}

/** The nearest-rank `q`th percentile (q in 1..100) of ascending values; 0 when there are none. */
function percentile(sorted: Float64Array, q: number): number {
  const rank = Math.max(1, Math.ceil((q * sorted.length) / 100));
  return sorted[rank - 1] ?? 0;
}

function summaryOf(trace: HeldTrace): TraceSummary {
  return {
    traceId: trace.traceId,
    rootName: (trace.earliestRoot ?? trace.earliest).name,
    startTimeMs: trace.earliest.startTimeMs,
    durationMs: trace.latestEndMs - trace.earliest.startTimeMs,
    spanCount: trace.spans.size,
    error: trace.errorSpans > 0,
    services: [...trace.services.keys()].sort(),
  };
}

function viewOf(trace: HeldTrace): TraceView {
  return {
    traceId: trace.traceId,
    roots: treesOf(trace.spans),
    spanCount: trace.spans.size,
    durationMs: trace.latestEndMs - trace.earliest.startTimeMs,
    services: [...trace.services.keys()].sort(),
    error: trace.errorSpans > 0,
  };
}

/**
 * The spans as trees: a span whose parent is not held is a root. Spans on a cycle (A's parent
 * B, B's parent A) reach no root: the earliest span of each cycle becomes one, so that every
 * span is in exactly one tree. Built without recursion, so that no depth can exhaust the stack.
 */
function treesOf(spans: ReadonlyMap<string, HeldSpan>): SpanTree[] {
  const roots: SpanRecord[] = [];
  const childrenOf = new Map<string, SpanRecord[]>();
  for (const { record } of spans.values()) {
    if (!spans.has(record.parentSpanId)) roots.push(record);
    else {
      const siblings = childrenOf.get(record.parentSpanId);
      if (siblings === undefined) childrenOf.set(record.parentSpanId, [record]);
      else siblings.push(record);
    }
  }
  for (const siblings of childrenOf.values()) siblings.sort(compareSpans);
  const placed = new Set<string>();
  const trees = roots.map((root) => grow(root, childrenOf, placed));
  if (placed.size < spans.size) {
    const unplaced = [...spans.values()].map((held) => held.record).sort(compareSpans);
    for (const span of unplaced) {
      if (!placed.has(span.spanId)) trees.push(grow(cycleAbove(span, spans), childrenOf, placed));
    }
  }
  return trees.sort((a, b) => compareSpans(a.span, b.span));
}

/** The tree below `root`, leaving out spans already placed (so that a cycle ends). */
function grow(
  root: SpanRecord,
  childrenOf: ReadonlyMap<string, readonly SpanRecord[]>,
  placed: Set<string>,
): GrowingTree {
  const tree: GrowingTree = { span: root, children: [] };
  placed.add(root.spanId);
  const pending = [tree];
  for (let node = pending.pop(); node !== undefined; node = pending.pop()) {
    for (const child of childrenOf.get(node.span.spanId) ?? []) {
      if (placed.has(child.spanId)) continue;
      placed.add(child.spanId);
      const grown: GrowingTree = { span: child, children: [] };
      node.children.push(grown);
      pending.push(grown);
    }
  }
  return tree;
}

/**
 * The earliest span of the cycle `span` hangs below: walking up from a span no root reaches
 * always meets a span twice, since its every ancestor is held.
 */
function cycleAbove(span: SpanRecord, spans: ReadonlyMap<string, HeldSpan>): SpanRecord {
  const path: SpanRecord[] = [];
  const onPath = new Set<string>();
  let at: SpanRecord | undefined = span;
  while (at !== undefined && !onPath.has(at.spanId)) {
    path.push(at);
    onPath.add(at.spanId);
    at = spans.get(at.parentSpanId)?.record;
  }
  if (at === undefined) return span;
  const cycle = path.slice(path.indexOf(at));
  return cycle.reduce((earliest, s) => (compareSpans(s, earliest) < 0 ? s : earliest));
}
