import { createContextKey, type HandlerContext } from "@connectrpc/connect";
import { parseTraceParent } from "@opentelemetry/core";
import { type IdSource, randomIds } from "../ids.js";

/** Who a call belongs to: its correlation id and its place in a W3C trace. */
export interface CallMeta {
  /** From a well-formed X-Correlation-ID, else generated. */
  readonly correlationId: string;
  /** From the caller's traceparent, else a new trace. */
  readonly traceId: string;
  /** This server's span for the call. */
  readonly spanId: string;
  /** The caller's span; empty when the trace starts here. */
  readonly parentSpanId: string;
  /** W3C trace flags (bit 0: sampled). */
  readonly traceFlags: number;
  /**
   * The peer address of the connection the call came on (`127.0.0.1`, `::1`); empty when the
   * transport does not know it. Rate limits and refusal events use it, never a forwarded header,
   * which any client could write.
   */
  readonly clientAddress: string;
}

/** Header names, lowercase as HTTP/2 and Node give them. */
export const correlationHeader = "x-correlation-id";
export const traceparentHeader = "traceparent";
/** W3C Trace Context Level 2 response header naming the server's span. */
export const traceresponseHeader = "traceresponse";

/** A call context that holds its meta as a property (the gRPC fast path's and the gateway's). */
export interface CarriesCallMeta {
  readonly callMeta: CallMeta;
}

/** Where the edge leaves the call's meta for the interceptors and implementations. */
export const callMetaKey = createContextKey<CallMeta | undefined>(undefined, {
  description: "orchestrator call meta",
});

// Bounded, and only characters that are safe in headers, logs and event payloads.
const wellFormedCorrelationId = /^[A-Za-z0-9._:-]{1,128}$/;

/** True when a caller-supplied correlation id may be used as is. */
export function isWellFormedCorrelationId(value: string): boolean {
  return wellFormedCorrelationId.test(value);
}

/**
 * Resolves a call's meta from its request headers: a well-formed correlation id is kept (anything
 * else is replaced by a new one), a valid traceparent continues the caller's trace, and every call
 * gets a new span id.
 */
export function resolveCallMeta(
  correlationId: string | undefined,
  traceparent: string | undefined,
  ids: IdSource = randomIds,
  clientAddress = "",
): CallMeta {
  const parent = traceparent === undefined ? null : parseTraceParent(traceparent);
  return {
    correlationId:
      correlationId !== undefined && isWellFormedCorrelationId(correlationId)
        ? correlationId
        : ids.uuid(),
    traceId: parent?.traceId ?? ids.traceId(),
    spanId: ids.spanId(),
    parentSpanId: parent?.spanId ?? "",
    traceFlags: parent?.traceFlags ?? 1,
    clientAddress,
  };
}

/** The traceparent (and traceresponse) value naming this call's span. */
export function traceparentOf(meta: CallMeta): string {
  const flags = meta.traceFlags.toString(16).padStart(2, "0");
  return `00-${meta.traceId}-${meta.spanId}-${flags}`;
}

/**
 * The meta of a call. Every transport sets it at the edge; should one not have, it is resolved
 * from the request headers here, once.
 */
export function callMetaOf(context: HandlerContext): CallMeta {
  // Our own transports carry it on the context itself: no ContextValues made per call.
  const carried = (context as Partial<CarriesCallMeta>).callMeta;
  if (carried !== undefined) return carried;
  const known = context.values.get(callMetaKey);
  if (known !== undefined) return known;
  const meta = resolveCallMeta(
    context.requestHeader.get(correlationHeader) ?? undefined,
    context.requestHeader.get(traceparentHeader) ?? undefined,
  );
  context.values.set(callMetaKey, meta);
  return meta;
}
