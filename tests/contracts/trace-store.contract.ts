import { describe, expect, it } from "vitest";
import type { SpanRecord, SpanTree, TraceView } from "../../src/tracing/model.js";
import {
  spanBytes,
  type TraceStore,
  type TraceStoreLimits,
} from "../../src/tracing/trace-store.js";
import { seededRandom } from "../support/seeded-random.js";

/** How a store implementation is brought up for the contract suite. */
export interface TraceStoreHarness {
  /** A new, empty store of its own. */
  create(limits?: Partial<TraceStoreLimits>): TraceStore;
}

/** Trace number `n` as a trace id (32 hex digits). */
const traceIdOf = (n: number): string => n.toString(16).padStart(32, "0");
/** Span number `n` as a span id (16 hex digits): ids sort as their numbers do. */
const spanIdOf = (n: number): string => n.toString(16).padStart(16, "0");

/** Span `spanNo` of trace `traceNo`: a root of service "svc" unless `fields` say otherwise. */
function span(traceNo: number, spanNo: number, fields: Partial<SpanRecord> = {}): SpanRecord {
  return {
    traceId: traceIdOf(traceNo),
    spanId: spanIdOf(spanNo),
    parentSpanId: "",
    name: `span-${spanNo}`,
    service: "svc",
    kind: "internal",
    startTimeMs: 1_000 + spanNo,
    durationMs: 10,
    status: "ok",
    statusMessage: "",
    attributes: {},
    ...fields,
  };
}

const childOf = (spanNo: number): Partial<SpanRecord> => ({ parentSpanId: spanIdOf(spanNo) });

/** Every span of the trees, each tree walked without recursion. */
function spansIn(roots: readonly SpanTree[]): SpanRecord[] {
  const found: SpanRecord[] = [];
  const pending = [...roots];
  for (let tree = pending.pop(); tree !== undefined; tree = pending.pop()) {
    found.push(tree.span);
    pending.push(...tree.children);
  }
  return found;
}

/** The trees by span name, as "root(child,child(grandchild)),other-root". */
function shapeOf(roots: readonly SpanTree[]): string {
  return roots
    .map((tree) =>
      tree.children.length === 0 ? tree.span.name : `${tree.span.name}(${shapeOf(tree.children)})`,
    )
    .join(",");
}

function viewOf(store: TraceStore, traceNo: number): TraceView {
  const view = store.trace(traceIdOf(traceNo));
  if (view === undefined) throw new Error(`trace ${traceNo} is not held`);
  return view;
}

/** The trace numbers a service's listing names, in its order. */
function listed(store: TraceStore, service: string, limit = 1_000, errorsOnly = false): number[] {
  return store
    .serviceTraces({ service, limit, errorsOnly })
    .map((summary) => Number.parseInt(summary.traceId, 16));
}

/** What a store holding exactly `spans` must report in `size` and `stats`. */
function expectHolds(store: TraceStore, spans: readonly SpanRecord[]): void {
  const traces = new Set(spans.map((s) => s.traceId));
  const errors = spans.filter((s) => s.status === "error").length;
  expect(store.size).toEqual({
    traces: traces.size,
    spans: spans.length,
    bytes: spans.reduce((sum, s) => sum + spanBytes(s), 0),
  });
  const stats = store.stats();
  expect(stats).toMatchObject({
    totalTraces: traces.size,
    totalSpans: spans.length,
    servicesTraced: new Set(spans.map((s) => s.service)).size,
  });
  expect(stats.errorRate).toBeCloseTo(spans.length === 0 ? 0 : errors / spans.length, 12);
  for (const traceId of traces) {
    const held = spansIn(store.trace(traceId)?.roots ?? []);
    expect(held.map((s) => s.spanId).sort()).toEqual(
      spans
        .filter((s) => s.traceId === traceId)
        .map((s) => s.spanId)
        .sort(),
    );
  }
}

/** The behaviour every TraceStore must have. */
export function traceStoreContract(name: string, harness: TraceStoreHarness): void {
  describe(`TraceStore contract: ${name}`, () => {
    describe("bounds", () => {
      it("refuses a bound that is not a positive integer", () => {
        const bad: Partial<TraceStoreLimits>[] = [
          { maxTraces: 0 },
          { maxBytes: -1 },
          { maxSpansPerTrace: 1.5 },
          { maxOperations: Number.NaN },
          { latencyWindow: Number.POSITIVE_INFINITY },
        ];
        for (const limits of bad) expect(() => harness.create(limits)).toThrow(RangeError);
      });

      it("starts empty", () => {
        const store = harness.create();
        expect(store.size).toEqual({ traces: 0, spans: 0, bytes: 0 });
        expect(store.stats()).toEqual({
          totalTraces: 0,
          totalSpans: 0,
          servicesTraced: 0,
          errorRate: 0,
          operations: [],
        });
        expect(store.trace(traceIdOf(1))).toBeUndefined();
        expect(store.serviceTraces({ service: "svc", limit: 10, errorsOnly: false })).toEqual([]);
      });
    });

    describe("trace", () => {
      it("builds the tree: children under their parent by start then span id, orphans as roots", () => {
        const store = harness.create();
        const root = span(1, 1, { name: "R", service: "web", startTimeMs: 100, durationMs: 50 });
        const spans = [
          span(1, 5, { name: "d", ...childOf(1), service: "api", startTimeMs: 110 }),
          span(1, 3, { name: "b", ...childOf(1), service: "api", startTimeMs: 105 }),
          span(1, 4, { name: "c", ...childOf(3), service: "db", startTimeMs: 106, durationMs: 94 }),
          span(1, 2, { name: "a", ...childOf(1), service: "api", startTimeMs: 110 }),
          span(1, 6, { name: "o", ...childOf(99), service: "web", startTimeMs: 90 }),
          span(1, 7, { name: "o2", ...childOf(6), service: "web", startTimeMs: 95 }),
        ];
        // Children before their parents, over two adds: the tree does not depend on the order.
        expect(store.add(spans.slice(0, 3))).toEqual({ accepted: 3, dropped: 0 });
        expect(store.add([...spans.slice(3), root])).toEqual({ accepted: 4, dropped: 0 });
        const view = viewOf(store, 1);
        expect(shapeOf(view.roots)).toBe("o(o2),R(b(c),a,d)");
        expect(view).toMatchObject({
          traceId: traceIdOf(1),
          spanCount: 7,
          durationMs: 200 - 90,
          services: ["api", "db", "web"],
          error: false,
        });
        expect(view.roots[1]?.span).toEqual(root);
        store.add([span(1, 8, { ...childOf(4), status: "error", statusMessage: "boom" })]);
        expect(viewOf(store, 1).error).toBe(true);
        expect(store.trace(traceIdOf(2))).toBeUndefined();
      });

      it("places every span of a cycle once, the cycle's earliest span as a root", () => {
        const store = harness.create();
        store.add([
          span(1, 1, { name: "A", ...childOf(2), startTimeMs: 10 }),
          span(1, 2, { name: "B", ...childOf(1), startTimeMs: 20 }),
          span(1, 3, { name: "C", ...childOf(1), startTimeMs: 30 }),
          span(1, 4, { name: "S", ...childOf(4), startTimeMs: 5 }),
          span(1, 5, { name: "R", startTimeMs: 40 }),
        ]);
        expect(shapeOf(viewOf(store, 1).roots)).toBe("S,A(B,C),R");
        // X → Z → Y → X, and W below Y starts first: the root is the cycle's earliest, Z.
        store.add([
          span(2, 1, { name: "X", ...childOf(3), startTimeMs: 30 }),
          span(2, 2, { name: "Y", ...childOf(1), startTimeMs: 20 }),
          span(2, 3, { name: "Z", ...childOf(2), startTimeMs: 10 }),
          span(2, 4, { name: "W", ...childOf(2), startTimeMs: 1 }),
        ]);
        const view = viewOf(store, 2);
        expect(shapeOf(view.roots)).toBe("Z(X(Y(W)))");
        expect(view.spanCount).toBe(4);
      });

      it("holds a chain as deep as maxSpansPerTrace", () => {
        const store = harness.create();
        const depth = 1_000;
        const chain = Array.from({ length: depth }, (_, i) =>
          span(1, i + 1, i === 0 ? {} : childOf(i)),
        );
        expect(store.add(chain.reverse())).toEqual({ accepted: depth, dropped: 0 });
        let levels = 0;
        for (let tree = viewOf(store, 1).roots[0]; tree !== undefined; tree = tree.children[0]) {
          expect(tree.span.spanId).toBe(spanIdOf(levels + 1));
          levels++;
        }
        expect(levels).toBe(depth);
      });
    });

    describe("summaries", () => {
      it("names a trace by its earliest root, else its earliest span; spans from the earliest start to the latest end", () => {
        const store = harness.create();
        store.add([
          span(1, 1, { name: "late-root", startTimeMs: 20, durationMs: 5, service: "b" }),
          span(1, 2, { name: "first-root", startTimeMs: 10, durationMs: 1, service: "b" }),
          span(1, 3, { name: "orphan", ...childOf(9), startTimeMs: 5, service: "a" }),
          span(1, 4, { ...childOf(1), startTimeMs: 21, durationMs: 30, status: "error" }),
          span(2, 5, { name: "orphan-late", ...childOf(9), startTimeMs: 8, service: "b" }),
          span(2, 6, { name: "orphan-early", ...childOf(9), startTimeMs: 7, durationMs: 2 }),
          span(2, 7, { name: "orphan-tie", ...childOf(9), startTimeMs: 7, service: "b" }),
        ]);
        expect(store.serviceTraces({ service: "b", limit: 10, errorsOnly: false })).toEqual([
          {
            traceId: traceIdOf(2),
            rootName: "orphan-early",
            startTimeMs: 7,
            durationMs: 18 - 7,
            spanCount: 3,
            error: false,
            services: ["b", "svc"],
          },
          {
            traceId: traceIdOf(1),
            rootName: "first-root",
            startTimeMs: 5,
            durationMs: 51 - 5,
            spanCount: 4,
            error: true,
            services: ["a", "b", "svc"],
          },
        ]);
        expect(viewOf(store, 1).durationMs).toBe(51 - 5);
      });
    });

    describe("add", () => {
      it("drops a span whose id its trace already holds", () => {
        const store = harness.create();
        const first = span(1, 1, { name: "first" });
        expect(store.add([first, span(1, 1, { name: "again" })])).toEqual({
          accepted: 1,
          dropped: 1,
        });
        expect(store.add([span(1, 1, { name: "later" })])).toEqual({ accepted: 0, dropped: 1 });
        expect(viewOf(store, 1).roots.map((tree) => tree.span)).toEqual([first]);
        // The same span id in another trace is another span.
        const other = span(2, 1);
        expect(store.add([other])).toEqual({ accepted: 1, dropped: 0 });
        expectHolds(store, [first, other]);
      });

      it("drops the spans of a trace beyond maxSpansPerTrace", () => {
        const store = harness.create({ maxSpansPerTrace: 3 });
        const batch = [1, 2, 3, 4, 5].map((n) => span(1, n));
        expect(store.add([...batch, span(2, 6)])).toEqual({ accepted: 4, dropped: 2 });
        expect(store.add([span(1, 7), span(2, 8)])).toEqual({ accepted: 1, dropped: 1 });
        expect(viewOf(store, 1).roots.map((tree) => tree.span.spanId)).toEqual(
          [1, 2, 3].map(spanIdOf),
        );
        expectHolds(store, [...batch.slice(0, 3), span(2, 6), span(2, 8)]);
      });
    });

    describe("eviction", () => {
      it("drops the oldest traces whole beyond maxTraces, from every count and listing", () => {
        const store = harness.create({ maxTraces: 3 });
        const t1 = [span(1, 1, { service: "a" }), span(1, 2, { service: "b", status: "error" })];
        const t2 = [span(2, 3, { service: "b" })];
        const t3 = [span(3, 4, { service: "a" }), span(3, 5, { service: "c", ...childOf(4) })];
        const t4 = [span(4, 6, { service: "b" })];
        const t5 = [span(5, 7, { service: "b", status: "error" })];
        const t6 = [span(6, 8, { service: "b" })];
        for (const trace of [t1, t2, t3, t4, t5]) store.add(trace);
        expect(store.trace(traceIdOf(1))).toBeUndefined();
        expect(store.trace(traceIdOf(2))).toBeUndefined();
        expectHolds(store, [...t3, ...t4, ...t5]);
        expect(listed(store, "a")).toEqual([3]);
        expect(listed(store, "b")).toEqual([5, 4]);
        expect(listed(store, "c")).toEqual([3]);
        store.add(t6);
        expectHolds(store, [...t4, ...t5, ...t6]);
        expect(listed(store, "a")).toEqual([]);
        expect(listed(store, "c")).toEqual([]);
        expect(listed(store, "b")).toEqual([6, 5, 4]);
        expect([...new Set(store.stats().operations.map((op) => op.service))]).toEqual(["b"]);
      });

      it("ages a trace by when it was first seen: a late span neither saves it nor moves it up a listing", () => {
        const store = harness.create({ maxTraces: 2 });
        store.add([span(1, 1, { service: "a" })]);
        store.add([span(2, 2, { service: "late" })]);
        store.add([span(1, 3, { service: "late" })]);
        expect(listed(store, "late")).toEqual([2, 1]);
        store.add([span(3, 4)]);
        expect(store.trace(traceIdOf(1))).toBeUndefined();
        expectHolds(store, [span(2, 2, { service: "late" }), span(3, 4)]);
        expect(listed(store, "late")).toEqual([2]);
      });

      it("keeps the bytes held within maxBytes, dropping the oldest traces first", () => {
        const random = seededRandom(8);
        const maxBytes = 6_000;
        const store = harness.create({ maxBytes });
        const added: SpanRecord[] = [];
        let spanNo = 0;
        for (let traceNo = 1; traceNo <= 40; traceNo++) {
          const spans = Array.from({ length: 1 + Math.floor(random() * 3) }, () =>
            span(traceNo, ++spanNo, {
              attributes: { note: "x".repeat(Math.floor(random() * 600)) },
            }),
          );
          // One add, or one per span: either way the trace written to is the newest.
          if (random() < 0.5) store.add(spans);
          else for (const one of spans) store.add([one]);
          added.push(...spans);
          expect(store.size.bytes).toBeLessThanOrEqual(maxBytes);
          // What is held is the newest traces, whole, and no older one fits beside them.
          const held = [...new Set(added.map((s) => s.traceId))].filter(
            (id) => store.trace(id) !== undefined,
          );
          const oldestHeld = Number.parseInt(held[0] ?? "0", 16);
          expect(held.map((id) => Number.parseInt(id, 16))).toEqual(
            Array.from({ length: traceNo - oldestHeld + 1 }, (_, i) => oldestHeld + i),
          );
          const heldSpans = added.filter((s) => held.includes(s.traceId));
          expectHolds(store, heldSpans);
          const before = added.filter((s) => s.traceId === traceIdOf(oldestHeld - 1));
          const bytesBefore = before.reduce((sum, s) => sum + spanBytes(s), 0);
          if (before.length > 0) expect(store.size.bytes + bytesBefore).toBeGreaterThan(maxBytes);
        }
      });

      it("never makes room for a span by dropping its own trace: the oldest others go", () => {
        const probe = span(1, 1);
        const store = harness.create({ maxBytes: 3 * spanBytes(probe) });
        store.add([span(1, 1), span(2, 2), span(3, 3)]);
        store.add([span(1, 4)]);
        expectHolds(store, [span(1, 1), span(1, 4), span(3, 3)]);
        store.add([span(4, 5)]);
        expectHolds(store, [span(3, 3), span(4, 5)]);
      });

      it("drops a span its trace cannot hold within maxBytes, and drops no trace for it", () => {
        const small = span(1, 1);
        const maxBytes = 4 * spanBytes(small);
        const store = harness.create({ maxBytes });
        store.add([span(1, 1), span(2, 2)]);
        const huge = span(3, 3, { attributes: { blob: "x".repeat(maxBytes) } });
        expect(store.add([huge])).toEqual({ accepted: 0, dropped: 1 });
        expectHolds(store, [span(1, 1), span(2, 2)]);
        // A span trace 2 cannot hold beside its own: dropped, and trace 1 stays.
        const bare = spanBytes(span(2, 4, { attributes: { blob: "" } }));
        const blob = "x".repeat(Math.floor((3.5 * spanBytes(small) - bare) / 2));
        const grows = span(2, 4, { attributes: { blob } });
        expect(spanBytes(grows)).toBeGreaterThan(maxBytes - spanBytes(span(2, 2)));
        expect(spanBytes(grows)).toBeLessThanOrEqual(maxBytes);
        expect(store.add([grows])).toEqual({ accepted: 0, dropped: 1 });
        expectHolds(store, [span(1, 1), span(2, 2)]);
      });
    });

    describe("serviceTraces", () => {
      it("lists a service's traces newest first, up to the limit, errors only if asked", () => {
        const store = harness.create();
        for (let traceNo = 1; traceNo <= 12; traceNo++) {
          const status = traceNo % 3 === 0 ? "error" : "ok";
          store.add([
            span(traceNo, traceNo * 10, { service: "api" }),
            span(traceNo, traceNo * 10 + 1, { service: "db", status, ...childOf(traceNo * 10) }),
          ]);
          if (traceNo % 4 === 0) store.add([span(traceNo, traceNo * 10 + 2, { service: "solo" })]);
        }
        expect(listed(store, "api", 5)).toEqual([12, 11, 10, 9, 8]);
        expect(listed(store, "api", 2, true)).toEqual([12, 9]);
        expect(listed(store, "api", 100, true)).toEqual([12, 9, 6, 3]);
        expect(listed(store, "solo", 100)).toEqual([12, 8, 4]);
        expect(listed(store, "solo", 100, true)).toEqual([12]);
        expect(listed(store, "nobody", 100)).toEqual([]);
        const [newest] = store.serviceTraces({ service: "api", limit: 1, errorsOnly: false });
        expect(newest).toMatchObject({
          spanCount: 3,
          error: true,
          services: ["api", "db", "solo"],
        });
      });
    });

    describe("stats", () => {
      it("counts spans, services and errors, with nearest-rank percentiles per operation", () => {
        const store = harness.create();
        const random = seededRandom(3);
        const durations = Array.from({ length: 100 }, (_, i) => i + 1).sort(() => random() - 0.5);
        let spanNo = 0;
        store.add([span(9, ++spanNo, { service: "db", name: "query", durationMs: 2.5 })]);
        store.add([span(9, ++spanNo, { service: "api", name: "POST", durationMs: 7 })]);
        store.add(
          durations.map((durationMs, i) =>
            span(1 + (i % 7), ++spanNo, {
              service: "api",
              name: "GET",
              durationMs,
              status: i % 10 === 0 ? "error" : "ok",
            }),
          ),
        );
        const stats = store.stats();
        expect(stats).toMatchObject({ totalTraces: 8, totalSpans: 102, servicesTraced: 2 });
        expect(stats.errorRate).toBeCloseTo(10 / 102, 12);
        expect(stats.operations).toEqual([
          {
            service: "api",
            operation: "GET",
            count: 100,
            errorCount: 10,
            p50Ms: 50,
            p95Ms: 95,
            p99Ms: 99,
          },
          {
            service: "api",
            operation: "POST",
            count: 1,
            errorCount: 0,
            p50Ms: 7,
            p95Ms: 7,
            p99Ms: 7,
          },
          {
            service: "db",
            operation: "query",
            count: 1,
            errorCount: 0,
            p50Ms: 2.5,
            p95Ms: 2.5,
            p99Ms: 2.5,
          },
        ]);
      });

      it("keeps only the latest latencyWindow durations of an operation", () => {
        const store = harness.create({ latencyWindow: 10 });
        // 20 ms down to 1 ms: the latest ten are 10 down to 1.
        store.add(
          Array.from({ length: 20 }, (_, i) =>
            span(1, i + 1, { name: "op", durationMs: 20 - i, status: i < 3 ? "error" : "ok" }),
          ),
        );
        expect(store.stats().operations).toEqual([
          {
            service: "svc",
            operation: "op",
            count: 20,
            errorCount: 3,
            p50Ms: 5,
            p95Ms: 10,
            p99Ms: 10,
          },
        ]);
      });

      it("gives no latency row to a pair beyond maxOperations, yet holds and counts its spans", () => {
        const store = harness.create({ maxOperations: 2 });
        store.add([
          span(1, 1, { service: "b", name: "x" }),
          span(1, 2, { service: "a", name: "y" }),
          span(1, 3, { service: "a", name: "z" }),
          span(1, 4, { service: "c", name: "x", status: "error" }),
        ]);
        const stats = store.stats();
        expect(stats.operations.map((op) => `${op.service}/${op.operation}`)).toEqual([
          "a/y",
          "b/x",
        ]);
        expect(stats).toMatchObject({ totalSpans: 4, servicesTraced: 3, errorRate: 0.25 });
      });

      it("drops an operation's row with its last held span; a span held without a row leaves rows alone", () => {
        const store = harness.create({ maxOperations: 1, maxTraces: 2 });
        const rows = () =>
          store.stats().operations.map((op) => `${op.service}/${op.operation}:${op.count}`);
        store.add([span(1, 1, { service: "a", name: "x" })]);
        store.add([span(2, 2, { service: "b", name: "y" })]);
        expect(rows()).toEqual(["a/x:1"]);
        // Trace 1 goes, and its row with it: b/y now has room, and counts from here.
        store.add([span(3, 3, { service: "b", name: "y", durationMs: 42 })]);
        expect(rows()).toEqual(["b/y:1"]);
        // Trace 2's b/y span had no row: its going leaves b/y's row as it was.
        store.add([span(4, 4, { service: "c", name: "z" })]);
        expect(rows()).toEqual(["b/y:1"]);
        expect(store.stats().operations[0]).toMatchObject({ p50Ms: 42, errorCount: 0 });
      });
    });

    describe("under load", () => {
      for (const maxOperations of [64, 8]) {
        it(`keeps size and stats equal to a recount of what it holds (maxOperations ${maxOperations})`, () => {
          stress(harness, maxOperations);
        });
      }
    });
  });
}

const stressServices = ["web", "api", "db", "cache", "queue"];
const stressOperations = ["get", "put", "list", "delete", "scan", "sync"];

/**
 * 20,000 random spans over 3,000 traces (parents, orphans, repeats, errors, strings of every
 * size) with small bounds; at checkpoints, everything the store reports is recounted from its
 * traces. With room for every (service, operation) pair, rows count exactly the spans held.
 */
function stress(harness: TraceStoreHarness, maxOperations: number): void {
  const limits = {
    maxTraces: 150,
    maxBytes: 300_000,
    maxSpansPerTrace: 10,
    maxOperations,
    latencyWindow: 8,
  };
  const store = harness.create(limits);
  const random = seededRandom(20_000 + maxOperations);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const spanNosOf = new Map<number, number[]>();
  let spanNo = 0;
  let batches = 0;
  let atTraceBound = 0;
  let atByteBound = 0;
  let dropped = 0;

  // Most spans go to one of the latest traces, the others to any trace seen so far (late
  // spans, and traces opened again after they were dropped). Strings are short for a while,
  // then long, so that the count bound and the byte bound each bind in turn.
  const nextSpan = (sent: number): SpanRecord => {
    const newest = Math.ceil(((sent + 1) * 3_000) / 20_000);
    const traceNo = Math.max(
      1,
      random() < 0.8 ? newest - Math.floor(random() * 20) : 1 + Math.floor(random() * newest),
    );
    const longStrings = Math.floor(sent / 2_500) % 2 === 1;
    const earlier = spanNosOf.get(traceNo) ?? [];
    const roll = random();
    const repeat = roll < 0.05 && earlier.length > 0;
    const no = repeat ? pick(earlier) : ++spanNo;
    if (!repeat) spanNosOf.set(traceNo, [...earlier, no]);
    const parent =
      roll < 0.35 || earlier.length === 0
        ? ""
        : roll < 0.85
          ? spanIdOf(pick(earlier))
          : spanIdOf(1_000_000 + no);
    return span(traceNo, no, {
      parentSpanId: parent,
      service: pick(stressServices),
      name: pick(stressOperations),
      startTimeMs: random() * 10_000,
      durationMs: Math.floor(random() * 1_000) / 4,
      status: random() < 0.1 ? "error" : "ok",
      attributes: { note: "n".repeat(Math.floor(random() * (longStrings ? 600 : 20))) },
    });
  };

  for (let sent = 0; sent < 20_000; ) {
    const length = Math.min(1 + Math.floor(random() * 40), 20_000 - sent);
    const batch = Array.from({ length }, (_, i) => nextSpan(sent + i));
    sent += batch.length;
    const result = store.add(batch);
    expect(result.accepted + result.dropped).toBe(batch.length);
    expect(store.size.traces).toBeLessThanOrEqual(limits.maxTraces);
    expect(store.size.bytes).toBeLessThanOrEqual(limits.maxBytes);
    dropped += result.dropped;
    if (store.size.traces === limits.maxTraces) atTraceBound++;
    else if (store.size.bytes > 0.95 * limits.maxBytes) atByteBound++;
    if (++batches % 50 === 0 || sent === 20_000) expectRecount(store, limits);
  }
  // Each bound binds in turn, and spans were dropped (repeats, full traces).
  expect(atTraceBound).toBeGreaterThan(100);
  expect(atByteBound).toBeGreaterThan(100);
  expect(dropped).toBeGreaterThan(0);
}

/** Size and stats equal what the store's own traces, found through its listings, add up to. */
function expectRecount(store: TraceStore, limits: TraceStoreLimits): void {
  const traceIds = new Set<string>();
  for (const service of stressServices) {
    for (const summary of store.serviceTraces({ service, limit: 1_000, errorsOnly: false })) {
      traceIds.add(summary.traceId);
    }
  }
  const pairs = new Map<string, { count: number; errorCount: number; durations: Set<number> }>();
  const services = new Set<string>();
  let spans = 0;
  let bytes = 0;
  let errors = 0;
  for (const traceId of traceIds) {
    const view = store.trace(traceId);
    if (view === undefined) throw new Error(`listed trace ${traceId} is not held`);
    const held = spansIn(view.roots);
    expect(held.length).toBe(view.spanCount);
    expect(new Set(held.map((s) => s.spanId)).size).toBe(held.length);
    expect(held.length).toBeLessThanOrEqual(limits.maxSpansPerTrace);
    expect(view.services).toEqual([...new Set(held.map((s) => s.service))].sort());
    expect(view.error).toBe(held.some((s) => s.status === "error"));
    for (const s of held) {
      expect(s.traceId).toBe(traceId);
      spans++;
      bytes += spanBytes(s);
      services.add(s.service);
      const key = `${s.service}/${s.name}`;
      const pair = pairs.get(key) ?? { count: 0, errorCount: 0, durations: new Set() };
      pair.count++;
      if (s.status === "error") {
        pair.errorCount++;
        errors++;
      }
      pair.durations.add(s.durationMs);
      pairs.set(key, pair);
    }
  }
  expect(store.size).toEqual({ traces: traceIds.size, spans, bytes });
  const stats = store.stats();
  expect(stats).toMatchObject({
    totalTraces: traceIds.size,
    totalSpans: spans,
    servicesTraced: services.size,
  });
  expect(stats.errorRate).toBeCloseTo(spans === 0 ? 0 : errors / spans, 12);
  const exact = limits.maxOperations >= stressServices.length * stressOperations.length;
  const keys = stats.operations.map((op) => `${op.service}/${op.operation}`);
  expect(keys).toEqual([...keys].sort());
  if (exact) expect(keys).toEqual([...pairs.keys()].sort());
  expect(stats.operations.length).toBeLessThanOrEqual(limits.maxOperations);
  for (const op of stats.operations) {
    const pair = pairs.get(`${op.service}/${op.operation}`);
    if (pair === undefined) throw new Error(`a row for ${op.service}/${op.operation}, not held`);
    if (exact) {
      expect({ count: op.count, errorCount: op.errorCount }).toEqual({
        count: pair.count,
        errorCount: pair.errorCount,
      });
    } else {
      expect(op.count).toBeGreaterThan(0);
      expect(op.count).toBeLessThanOrEqual(pair.count);
      expect(op.errorCount).toBeLessThanOrEqual(Math.min(op.count, pair.errorCount));
    }
    expect(op.p50Ms).toBeLessThanOrEqual(op.p95Ms);
    expect(op.p95Ms).toBeLessThanOrEqual(op.p99Ms);
  }
}
