import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextValues,
  type HandlerContext,
} from "@connectrpc/connect";
import {
  type CallMeta,
  type CarriesCallMeta,
  callMetaKey,
  correlationHeader,
  traceparentOf,
  traceresponseHeader,
} from "../interceptors/call-meta.js";
import type { WrappedMethod } from "../interceptors/chain.js";

export interface CallContextInit {
  readonly target: WrappedMethod;
  /** "grpc" on the fast path, "rest" on the gateway. */
  readonly protocolName: string;
  readonly requestMethod: string;
  /** The request URL, built only if something asks for it. */
  readonly url: () => string;
  readonly headers: IncomingHttpHeaders;
  readonly meta: CallMeta;
  /** Calls still running when the shutdown grace period is over are aborted through it. */
  readonly activeCalls: ActiveCalls;
  /** The client's deadline, if it sent one. */
  readonly timeoutMs?: number | undefined;
}

// One shared reason for calls that simply ended: aborting without a reason would make Node build
// a DOMException (with its stack) for every call. Built when first needed, which a call that hands
// out no signal never is: a ConnectError carries Headers, and the process's first Headers loads
// Node's fetch implementation (~80 ms), which nothing else on a node's start needs.
let callEndedError: ConnectError | undefined;
const callEnded = () => (callEndedError ??= new ConnectError("the call has ended", Code.Canceled));
/** The reason of a call that simply ended, until someone asks for it. */
const ended: unique symbol = Symbol("the call has ended");
const reasonOf = (reason: ConnectError | typeof ended) => (reason === ended ? callEnded() : reason);

/**
 * The HandlerContext our own transports (the gRPC fast path, the REST gateway) hand to wrapped
 * methods. It has the shape the Connect router gives, but builds nothing a call does not use:
 * request headers, response headers and trailers, context values, the URL and the abort signal
 * are made on first access,
 * which on the hot path (a unary call no interceptor inspects) is never. The transport releases it
 * with `end()`, and learns of a deadline or shutdown through `onAbort`.
 */
export class CallContext implements HandlerContext, CarriesCallMeta {
  readonly method: DescMethod;
  readonly service: DescService;
  readonly protocolName: string;
  readonly requestMethod: string;
  /** Set by the transport: called once if the call is aborted (deadline, shutdown, cancel). */
  onAbort: ((reason: ConnectError) => void) | undefined;

  private readonly headers: IncomingHttpHeaders;
  /** The call's meta, read by `callMetaOf` without making the context's values. */
  readonly callMeta: CallMeta;
  private readonly urlOf: () => string;
  private readonly activeCalls: ActiveCalls;
  private readonly deadline: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private controller: AbortController | undefined;
  private abortReason: ConnectError | typeof ended | undefined;
  private lazyValues: ContextValues | undefined;
  private lazyRequestHeader: Headers | undefined;
  private lazyResponseHeader: Headers | undefined;
  private lazyResponseTrailer: Headers | undefined;

  constructor(init: CallContextInit) {
    this.method = init.target.method;
    this.service = init.target.method.parent;
    this.protocolName = init.protocolName;
    this.requestMethod = init.requestMethod;
    this.urlOf = init.url;
    this.headers = init.headers;
    this.callMeta = init.meta;
    this.activeCalls = init.activeCalls;
    if (init.timeoutMs !== undefined) {
      this.deadline = Date.now() + init.timeoutMs;
      this.timer = setTimeout(
        () => this.abort(new ConnectError("the deadline was exceeded", Code.DeadlineExceeded)),
        init.timeoutMs,
      );
    }
    init.activeCalls.add(this);
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.abortReason !== undefined) this.controller.abort(reasonOf(this.abortReason));
    }
    return this.controller.signal;
  }

  get url(): string {
    return this.urlOf();
  }

  get values(): ContextValues {
    this.lazyValues ??= createContextValues().set(callMetaKey, this.callMeta);
    return this.lazyValues;
  }

  get requestHeader(): Headers {
    this.lazyRequestHeader ??= new Headers(headerPairsOf(this.headers));
    return this.lazyRequestHeader;
  }

  get responseHeader(): Headers {
    this.lazyResponseHeader ??= new Headers();
    return this.lazyResponseHeader;
  }

  get responseTrailer(): Headers {
    this.lazyResponseTrailer ??= new Headers();
    return this.lazyResponseTrailer;
  }

  readonly timeoutMs = (): number | undefined =>
    this.deadline === undefined ? undefined : this.deadline - Date.now();

  /** True once the call was aborted or ended. */
  get done(): boolean {
    return this.abortReason !== undefined;
  }

  /** Aborts the call: the signal fires and the transport hears of it through onAbort. */
  abort(reason: ConnectError): void {
    if (this.abortReason !== undefined) return;
    this.release(reason);
    this.onAbort?.(reason);
  }

  /** Releases the call once it is over: its timer, its place among active calls, its signal. */
  end(): void {
    if (this.abortReason === undefined) this.release(ended);
  }

  /** Copies the response headers the implementation set, if any, into `to`. */
  copyResponseHeaders(to: OutgoingHttpHeaders): void {
    if (this.lazyResponseHeader) copyHeaders(this.lazyResponseHeader, to);
  }

  /** The trailers the implementation set, if any. */
  get trailers(): Headers | undefined {
    return this.lazyResponseTrailer;
  }

  private release(reason: ConnectError | typeof ended): void {
    this.abortReason = reason;
    clearTimeout(this.timer);
    this.activeCalls.delete(this);
    this.controller?.abort(reasonOf(reason));
  }
}

/**
 * The calls a transport has in flight. One listener on the shutdown signal aborts them all when
 * the grace period is over, instead of one listener per call.
 */
export class ActiveCalls {
  private readonly calls = new Set<CallContext>();

  constructor(shutdownSignal: AbortSignal) {
    shutdownSignal.addEventListener(
      "abort",
      () => {
        const reason = new ConnectError("the server is shutting down", Code.Unavailable);
        for (const call of [...this.calls]) call.abort(reason);
      },
      { once: true },
    );
  }

  add(call: CallContext): void {
    this.calls.add(call);
  }

  delete(call: CallContext): void {
    this.calls.delete(call);
  }

  get size(): number {
    return this.calls.size;
  }
}

/** The response headers every call carries: its correlation id and the server's trace span. */
export function responseHeaderPairsOf(meta: CallMeta): [string, string][] {
  return [
    [correlationHeader, meta.correlationId],
    [traceresponseHeader, traceparentOf(meta)],
  ];
}

/** Node's request headers as pairs, without HTTP/2 pseudo-headers (which Headers rejects). */
export function headerPairsOf(headers: IncomingHttpHeaders): [string, string][] {
  const pairs: [string, string][] = [];
  for (const name in headers) {
    if (name.charCodeAt(0) === 58 /* ':' */) continue;
    const value = headers[name];
    if (typeof value === "string") pairs.push([name, value]);
    else if (Array.isArray(value)) for (const v of value) pairs.push([name, v]);
  }
  return pairs;
}

/** Copies Headers into a Node outgoing-headers object. */
export function copyHeaders(from: Headers, to: OutgoingHttpHeaders): void {
  from.forEach((value, name) => {
    to[name] = value;
  });
}
