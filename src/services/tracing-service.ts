import { setImmediate } from "node:timers/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type {
  InfrastructureService,
  SpanNodeSchema,
} from "../../gen/orchestrator/v1/infrastructure_pb.js";
import {
  type AnyValue,
  type ExportSpansRequest,
  type KeyValue,
  type OtlpSpan,
  SpanKind,
  StatusCode,
} from "../../gen/orchestrator/v1/otlp_pb.js";
import { DomainError } from "../errors/domain-error.js";
import type { SpanKindName, SpanRecord, SpanTree, TraceSummary } from "../tracing/model.js";
import { attributesOf, cut, spanLimits } from "../tracing/span-limits.js";
import type { TraceStore } from "../tracing/trace-store.js";

/** The tracing methods of InfrastructureService. */
export type TracingServicePart = Pick<
  ServiceImpl<typeof InfrastructureService>,
  "getTrace" | "listServiceTraces" | "getTracingStats" | "exportSpans"
>;

/**
 * Trace lookups over the node's trace store (a trace as a tree, a service's latest traces, latency
 * by operation), and ExportSpans, which takes spans other services send in OTLP/JSON's shape.
 */
export function createTracingService(deps: { readonly store: TraceStore }): TracingServicePart {
  const { store } = deps;
  return {
    getTrace(request) {
      const traceId = request.traceId.toLowerCase();
      const view = store.trace(traceId);
      if (view === undefined) {
        throw new DomainError("not_found", `trace ${traceId} is not held by this node`);
      }
      return {
        traceId: view.traceId,
        roots: treeMessages(view.roots),
        spanCount: view.spanCount,
        durationMs: view.durationMs,
        services: [...view.services],
        error: view.error,
      };
    },

    listServiceTraces(request) {
      const traces = store.serviceTraces({
        service: request.serviceName,
        limit: request.limit === 0 ? 50 : request.limit,
        errorsOnly: request.errorsOnly,
      });
      return {
        serviceName: request.serviceName,
        traces: traces.map(summaryMessage),
        count: traces.length,
      };
    },

    getTracingStats() {
      const stats = store.stats();
      return {
        totalTraces: stats.totalTraces,
        totalSpans: stats.totalSpans,
        servicesTraced: stats.servicesTraced,
        errorRate: stats.errorRate,
        operations: stats.operations.map((row) => ({ ...row })),
      };
    },

    async exportSpans(request) {
      // Every span is checked before any is kept: a malformed request changes nothing.
      const spans = spanRecordsOf(request);
      let accepted = 0;
      let dropped = 0;
      // Kept a slice at a time, so that a large export does not hold the event loop.
      for (let start = 0; start < spans.length; start += exportSlice) {
        if (start > 0) await setImmediate();
        const added = store.add(spans.slice(start, start + exportSlice));
        accepted += added.accepted;
        dropped += added.dropped;
      }
      return {
        acceptedSpans: accepted,
        ...(dropped === 0
          ? {}
          : {
              partialSuccess: {
                rejectedSpans: BigInt(dropped),
                errorMessage: `${dropped} spans were not kept: their trace was full or repeated a span id`,
              },
            }),
      };
    },
  };
}

type SpanNodeInit = MessageInitShape<typeof SpanNodeSchema>;

/**
 * Nesting of the tree as answered: a span deeper than this is answered as a root of its own
 * (its parent id still names its parent), so that no encoder or client recurses without bound.
 */
const maxTreeDepth = 128;

function treeMessages(roots: readonly SpanTree[]): SpanNodeInit[] {
  const out: SpanNodeInit[] = [];
  const pending = [...roots];
  for (let i = 0; i < pending.length; i++) {
    out.push(nodeMessage(pending[i] as SpanTree, 1, pending));
  }
  return out;
}

function nodeMessage(node: SpanTree, depth: number, pending: SpanTree[]): SpanNodeInit {
  if (depth === maxTreeDepth) {
    pending.push(...node.children);
    return { span: spanMessage(node.span), children: [] };
  }
  return {
    span: spanMessage(node.span),
    children: node.children.map((child) => nodeMessage(child, depth + 1, pending)),
  };
}

function spanMessage(span: SpanRecord) {
  return {
    traceId: span.traceId,
    spanId: span.spanId,
    parentSpanId: span.parentSpanId,
    name: span.name,
    service: span.service,
    startTime: timestampFromMs(Math.floor(span.startTimeMs)),
    durationMs: span.durationMs,
    status: span.status,
    attributes: { ...span.attributes },
    kind: spanKindOf[span.kind],
    statusMessage: span.statusMessage,
  };
}

function summaryMessage(summary: TraceSummary) {
  return {
    traceId: summary.traceId,
    rootName: summary.rootName,
    startTime: timestampFromMs(Math.floor(summary.startTimeMs)),
    durationMs: summary.durationMs,
    spanCount: summary.spanCount,
    error: summary.error,
    services: [...summary.services],
  };
}

const spanKindOf: Record<SpanKindName, SpanKind> = {
  unspecified: SpanKind.UNSPECIFIED,
  internal: SpanKind.INTERNAL,
  server: SpanKind.SERVER,
  client: SpanKind.CLIENT,
  producer: SpanKind.PRODUCER,
  consumer: SpanKind.CONSUMER,
};

const kindNameOf = new Map<SpanKind, SpanKindName>(
  Object.entries(spanKindOf).map(([name, kind]) => [kind, name as SpanKindName]),
);

/** Spans an export adds to the store between two turns of the event loop. */
const exportSlice = 500;

/** OpenTelemetry's name for a resource without `service.name`. */
const unknownService = "unknown_service";

/**
 * The spans of an OTLP export as the store keeps them. The field rules have already checked the
 * ids and required fields; what they cannot say (an end before its start) is refused here, the
 * field named.
 * @throws DomainError "invalid" naming the first span that ends before it starts.
 */
export function spanRecordsOf(request: ExportSpansRequest): SpanRecord[] {
  const records: SpanRecord[] = [];
  request.resourceSpans.forEach((resourceSpans, r) => {
    const service = cut(
      serviceNameOf(resourceSpans.resource?.attributes ?? []) ?? unknownService,
      spanLimits.service,
    );
    resourceSpans.scopeSpans.forEach((scopeSpans, s) => {
      scopeSpans.spans.forEach((span, i) => {
        const path = `resource_spans[${r}].scope_spans[${s}].spans[${i}]`;
        records.push(spanRecordOf(span, service, path));
      });
    });
  });
  return records;
}

function serviceNameOf(attributes: readonly KeyValue[]): string | undefined {
  const value = attributes.find((a) => a.key === "service.name")?.value?.value;
  return value?.case === "stringValue" && value.value !== "" ? value.value : undefined;
}

function spanRecordOf(span: OtlpSpan, service: string, path: string): SpanRecord {
  if (span.endTimeUnixNano < span.startTimeUnixNano) {
    throw new DomainError(
      "invalid",
      `${path}.end_time_unix_nano: must not be before start_time_unix_nano`,
    );
  }
  const status =
    span.status?.code === StatusCode.ERROR
      ? "error"
      : span.status?.code === StatusCode.OK
        ? "ok"
        : "unset";
  return {
    traceId: span.traceId.toLowerCase(),
    spanId: span.spanId.toLowerCase(),
    parentSpanId: span.parentSpanId.toLowerCase(),
    name: cut(span.name, spanLimits.name),
    service,
    kind: kindNameOf.get(span.kind) ?? "unspecified",
    // Microseconds are as fine as a double holds Unix time in ms.
    startTimeMs: Number(span.startTimeUnixNano / 1000n) / 1000,
    durationMs: Number(span.endTimeUnixNano - span.startTimeUnixNano) / 1e6,
    status,
    statusMessage:
      status === "error" ? cut(span.status?.message ?? "", spanLimits.statusMessage) : "",
    attributes: attributesOf(span.attributes.map((a) => [a.key, plainValueOf(a.value, 0)])),
  };
}

/** Nesting kept in an attribute's value; deeper values are shown as "…". */
const maxValueDepth = 8;

/** An OTLP value as plain JSON-able data (int64 as a string, bytes as base64). */
function plainValueOf(value: AnyValue | undefined, depth: number): unknown {
  const v = value?.value;
  if (v === undefined || v.case === undefined) return undefined;
  if (depth === maxValueDepth) return "…";
  switch (v.case) {
    case "stringValue":
    case "boolValue":
    case "doubleValue":
      return v.value;
    case "intValue":
      return v.value.toString();
    case "bytesValue":
      return Buffer.from(v.value).toString("base64");
    case "arrayValue":
      return v.value.values.map((item) => plainValueOf(item, depth + 1) ?? null);
    case "kvlistValue":
      return Object.fromEntries(
        v.value.values.map((kv) => [kv.key, plainValueOf(kv.value, depth + 1) ?? null]),
      );
  }
}
