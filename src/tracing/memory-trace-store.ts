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
  /**
   * Its spans in arrival order, and an index by span id once there are more than a few: most
   * traces hold one or two spans, for which two arrays cost far less than two Maps.
   */
  spans: HeldSpan[];
  byId: Map<string, HeldSpan> | undefined;
  /** Its services (an array: a trace has few). */
  services: string[];
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
 * maxSpansPerTrace 1,000, maxOperations 1,000, latencyWindow 512.
 * @throws RangeError when a bound is not a positive integer.
 */
export function createMemoryTraceStore(limits: Partial<TraceStoreLimits> = {}): TraceStore {
  const bounds = traceStoreLimits(limits);
  // Insertion order is age: the first trace is the oldest.
  const traces = new Map<string, HeldTrace>();
  // Traces held per service: a service goes when its last trace does.
  const tracesOfService = new Map<string, number>();
  // Latency rows by service, then operation: looked up with the span's own strings, which are
  // shared by every span of a pair, so no key is built and hashed per span.
  const latency = new Map<string, Map<string, LatencyRow>>();
  let latencyRows = 0;
  // The held traces, oldest first, from `ageHead` on (slots before it are consumed).
  const age: (HeldTrace | undefined)[] = [];
  let ageHead = 0;
  let opened = 0;
  let spanCount = 0;
  let errorSpans = 0;
  let bytes = 0;

  const open = (span: SpanRecord): HeldTrace => {
    const trace: HeldTrace = {
      traceId: span.traceId,
      firstSeen: opened++,
      spans: [],
      byId: undefined,
      services: [],
      bytes: 0,
      errorSpans: 0,
      earliest: span,
      earliestRoot: undefined,
      latestEndMs: span.startTimeMs + span.durationMs,
    };
    traces.set(span.traceId, trace);
    age.push(trace);
    return trace;
  };

  /** The latency row the span counts in, made if its pair has none and there is room. */
  const measure = (span: SpanRecord): LatencyRow | undefined => {
    let ofService = latency.get(span.service);
    let row = ofService?.get(span.name);
    if (row === undefined) {
      if (latencyRows >= bounds.maxOperations) return undefined;
      if (ofService === undefined) {
        ofService = new Map();
        latency.set(span.service, ofService);
      }
      row = {
        service: span.service,
        operation: span.name,
        ring: new Float64Array(bounds.latencyWindow),
        samples: 0,
        count: 0,
        errorCount: 0,
      };
      ofService.set(span.name, row);
      latencyRows++;
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
    if (row.count > 0) return;
    const ofService = latency.get(row.service);
    ofService?.delete(row.operation);
    if (ofService?.size === 0) latency.delete(row.service);
    latencyRows--;
  };

  const hold = (trace: HeldTrace, span: SpanRecord, cost: number): void => {
    const held: HeldSpan = { record: span, latency: measure(span) };
    // A literal of one, not a push onto [], which would reserve 17 slots: most traces keep one.
    if (trace.spans.length === 0) trace.spans = [held];
    else trace.spans.push(held);
    if (trace.byId !== undefined) trace.byId.set(span.spanId, held);
    else if (trace.spans.length > indexFrom) trace.byId = spansById(trace.spans);
    trace.bytes += cost;
    bytes += cost;
    spanCount++;
    if (span.status === "error") {
      trace.errorSpans++;
      errorSpans++;
    }
    if (!trace.services.includes(span.service)) {
      if (trace.services.length === 0) trace.services = [span.service];
      else trace.services.push(span.service);
      tracesOfService.set(span.service, (tracesOfService.get(span.service) ?? 0) + 1);
    }
    if (compareSpans(span, trace.earliest) < 0) trace.earliest = span;
    if (
      span.parentSpanId === "" &&
      (trace.earliestRoot === undefined || compareSpans(span, trace.earliestRoot) < 0)
    ) {
      trace.earliestRoot = span;
    }
    trace.latestEndMs = Math.max(trace.latestEndMs, span.startTimeMs + span.durationMs);
  };

  const evict = (trace: HeldTrace): void => {
    traces.delete(trace.traceId);
    bytes -= trace.bytes;
    spanCount -= trace.spans.length;
    errorSpans -= trace.errorSpans;
    for (const service of trace.services) {
      const left = (tracesOfService.get(service) ?? 1) - 1;
      if (left === 0) tracesOfService.delete(service);
      else tracesOfService.set(service, left);
    }
    for (const held of trace.spans) unmeasure(held);
  };

  /**
   * Removes and returns the oldest held trace other than `keep`. Age is kept in its own queue:
   * finding the oldest by iterating the Map from its start would walk over the slots of every
   * trace deleted since V8 last rehashed it, which under steady eviction is most of them.
   */
  const takeOldestBut = (keep: string): HeldTrace | undefined => {
    if (age.length - ageHead < 1) return undefined;
    let oldest = age[ageHead] as HeldTrace;
    if (oldest.traceId === keep) {
      if (age.length - ageHead < 2) return undefined;
      // The kept trace stays the oldest: the next one changes places with it and goes.
      const next = age[ageHead + 1] as HeldTrace;
      age[ageHead + 1] = oldest;
      oldest = next;
    }
    age[ageHead] = undefined;
    ageHead++;
    // Dropping the consumed head now and then keeps the queue's array at about the traces held.
    if (ageHead > 1024 && ageHead * 2 > age.length) {
      age.splice(0, ageHead);
      ageHead = 0;
    }
    return oldest;
  };

  // The trace a span is written to is never dropped to make room for it: the span would be
  // counted as accepted and yet not held.
  const makeRoom = (traceId: string, opens: boolean, cost: number): void => {
    const more = opens ? 1 : 0;
    while (traces.size + more > bounds.maxTraces || bytes + cost > bounds.maxBytes) {
      const oldest = takeOldestBut(traceId);
      if (oldest === undefined) return;
      evict(oldest);
    }
  };

  /** Holds the span, or tells why not (false: its trace is full, has it, or cannot fit it). */
  const take = (span: SpanRecord): boolean => {
    const trace = traces.get(span.traceId);
    if (trace !== undefined) {
      if (holds(trace, span.spanId)) return false;
      if (trace.spans.length >= bounds.maxSpansPerTrace) return false;
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

    // A walk of the age queue from its newest end: no per-service index is kept, since one
    // would cost every call a set insertion and deletion, and a listing is rare and bounded by
    // the traces held.
    serviceTraces(query) {
      const summaries: TraceSummary[] = [];
      if (!tracesOfService.has(query.service)) return summaries;
      for (let i = age.length - 1; i >= ageHead && summaries.length < query.limit; i--) {
        const trace = age[i] as HeldTrace;
        if (query.errorsOnly && trace.errorSpans === 0) continue;
        if (trace.services.includes(query.service)) summaries.push(summaryOf(trace));
      }
      return summaries;
    },

    stats(): TracingStats {
      return {
        totalTraces: traces.size,
        totalSpans: spanCount,
        servicesTraced: tracesOfService.size,
        errorRate: spanCount === 0 ? 0 : errorSpans / spanCount,
        operations: [...latency.values()]
          .flatMap((ofService) => [...ofService.values()])
          .sort(byServiceThenOperation)
          .map(latencyOf),
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

/** Spans a trace holds before it gets an index by span id. */
const indexFrom = 8;

/** The spans by id. */
function spansById(spans: readonly HeldSpan[]): Map<string, HeldSpan> {
  return new Map(spans.map((held) => [held.record.spanId, held]));
}

/** True when the trace holds a span with this id. */
function holds(trace: HeldTrace, spanId: string): boolean {
  if (trace.byId !== undefined) return trace.byId.has(spanId);
  for (const held of trace.spans) if (held.record.spanId === spanId) return true;
  return false;
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
    spanCount: trace.spans.length,
    error: trace.errorSpans > 0,
    services: [...trace.services].sort(),
  };
}

function viewOf(trace: HeldTrace): TraceView {
  return {
    traceId: trace.traceId,
    roots: treesOf(trace.byId ?? spansById(trace.spans)),
    spanCount: trace.spans.length,
    durationMs: trace.latestEndMs - trace.earliest.startTimeMs,
    services: [...trace.services].sort(),
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
