import type { Readable, Transform } from "node:stream";
import { createBrotliDecompress, createGunzip, createInflate } from "node:zlib";
import type { Dispatcher } from "undici";
import { type Clock, systemClock } from "../clock.js";
import { isOutboundError, OutboundError } from "./outbound-errors.js";
import { createOutboundGuard, type OutboundGuard, type Resolve } from "./outbound-guard.js";
import type { OutboundPolicy } from "./outbound-policy.js";

export {
  isOutboundError,
  OutboundError,
  type OutboundErrorKind,
  outboundErrorKinds,
} from "./outbound-errors.js";

/** Options of {@link createHttpClient}; every call may override `timeoutMs` and `maxBytes`. */
export interface HttpClientOptions {
  /** Budget for one attempt: the exchange, redirects and body included, in ms. Default: 5000. */
  timeoutMs: number;
  /** Largest response body accepted, in bytes (after content decoding). Default: 5 MiB. */
  maxBytes: number;
  /** Same-origin redirects followed before giving up. Default: 3. */
  maxRedirects: number;
  /** Sent as `user-agent` unless the call's headers set one. Default: "orchestrator". */
  userAgent: string;
  /** Attempts of a retried call, the first included; 1 turns retries off. Default: 3. */
  maxAttempts: number;
  /**
   * Backoff ceiling before the first retry, in ms; it doubles at each retry, and each wait is
   * drawn between half the ceiling and all of it. Default: 100.
   */
  retryBaseDelayMs: number;
  /** Largest backoff between two attempts, in ms. Default: 2000. */
  retryMaxDelayMs: number;
  /**
   * Consecutive failed attempts (network failure, timeout, 5xx answer) on one origin that open
   * its circuit. Default: 5.
   */
  breakerThreshold: number;
  /**
   * Time an open circuit fails calls fast before it half-opens and lets one trial call through
   * (success closes it, failure opens it again), in ms. Default: 10000.
   */
  breakerHalfOpenMs: number;
  /**
   * Origins whose breakers are kept, so memory stays bounded whatever targets are called; the
   * oldest inserted goes when a new one comes. Default: 1000.
   */
  maxBreakers: number;
  /**
   * `OUTBOUND_ALLOW`'s entries: host names, `*.suffix`, addresses, CIDRs. Empty: any destination
   * but the always-refused ranges (link-local and metadata, unspecified). Default: empty.
   */
  allow: readonly string[];
}

/** The defaults {@link createHttpClient} merges its options over. */
export const httpClientDefaults: Readonly<HttpClientOptions> = Object.freeze({
  timeoutMs: 5000,
  maxBytes: 5 * 1024 * 1024,
  maxRedirects: 3,
  userAgent: "orchestrator",
  maxAttempts: 3,
  retryBaseDelayMs: 100,
  retryMaxDelayMs: 2000,
  breakerThreshold: 5,
  breakerHalfOpenMs: 10_000,
  maxBreakers: 1000,
  allow: Object.freeze([]),
});

/** The methods {@link HttpClient.request} sends. */
export const outboundMethods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] as const;

/** One of {@link outboundMethods}. */
export type OutboundMethod = (typeof outboundMethods)[number];

/** Methods whose repetition has the effect of one call (RFC 9110 §9.2.2): safe to retry. */
const idempotentMethods: ReadonlySet<string> = new Set(["GET", "HEAD", "PUT", "DELETE"]);

/** The call an outbound request is made on behalf of, propagated to the target. */
export interface OutboundCall {
  /** Sent as `x-correlation-id`. */
  readonly correlationId: string;
  /** Sent as `traceparent` (replaced by the client span's own when a tracer is set). */
  readonly traceparent?: string | undefined;
}

/** Per-call settings of {@link HttpClient.get}. */
export interface HttpGetRequest {
  /** Extra request headers; they override the user agent. */
  headers?: Readonly<Record<string, string>>;
  /** Overrides the client's `timeoutMs` for this call (each attempt). */
  timeoutMs?: number;
  /** Overrides the client's `maxBytes` for this call. */
  maxBytes?: number;
  /** Cancels the call; the call then rejects with the signal's reason, as fetch does. */
  signal?: AbortSignal;
  /** Sent as `accept`, over any `accept` in `headers`. */
  accept?: string;
  /** Sent as `x-correlation-id` and `traceparent`, over any in `headers`. */
  call?: OutboundCall;
}

/** One outbound call, as {@link HttpClient.request} makes it. */
export interface OutboundRequest extends HttpGetRequest {
  readonly method: OutboundMethod;
  /** An absolute http: or https: URL without credentials. */
  readonly url: string;
  /**
   * Sent as the body, JSON.stringify'd, with `content-type: application/json` unless `headers`
   * name another content type. Not allowed on GET and HEAD.
   */
  json?: unknown;
  /**
   * Sent as `Idempotency-Key`, the same on every attempt; it lets a POST or PATCH be retried,
   * since the target can then recognise a repeated call.
   */
  idempotencyKey?: string;
  /**
   * Retry transient failures. Default: true. Even then, only idempotent methods (GET, HEAD, PUT,
   * DELETE) and calls with an `idempotencyKey` are retried: a repeated POST could act twice.
   */
  retry?: boolean;
  /**
   * Pass the call through its origin's circuit breaker. Default: true. Health probes turn it off
   * (with `retry`): a probe is the health signal, it must be neither retried nor cut.
   */
  breaker?: boolean;
}

/** A response read in full. */
export interface HttpResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Buffer;
  /** The URL that answered, after redirects. */
  readonly url: string;
  /** Time from the start of the attempt that answered to the end of its body, in ms. */
  readonly elapsedMs: number;
}

/** The one outbound HTTP client: bounded in time and size, never leaving the origin it was given. */
export interface HttpClient {
  /**
   * Sends `request` and reads the whole answer. Non-2xx statuses are returned, not thrown.
   * Redirects are followed only within the same origin (scheme, host and port); a 303, or a 301
   * or 302 to a POST, goes on as a GET without body, as browsers do. Transient failures (network,
   * timeout, 429, 502, 503, 504) are retried after an exponential backoff with jitter, up to
   * `maxAttempts`, when the method is idempotent or the call has an idempotency key; the last
   * attempt's answer is returned. Each attempt passes the origin's circuit breaker.
   * @throws OutboundError "invalid_url" for anything but an absolute http: or https: URL without
   *   credentials (before any I/O); "destination_refused" for a destination the outbound guard
   *   refuses (`allow`, the link-local and metadata ranges): a scheme or an address written in
   *   the URL or a redirect's location before any I/O, a name as it resolves, before connecting;
   *   never retried, never counted by a breaker; "timeout" when an attempt outlasts `timeoutMs`;
   *   "too_large" when the body (declared or read) exceeds `maxBytes`; "redirect_refused" for a
   *   redirect to another origin; "too_many_redirects" past `maxRedirects`; "network" when the
   *   connection fails; "circuit_open" while the origin's circuit is open.
   * @throws the signal's reason when `request.signal` aborts the call (retries stop too).
   * @throws TypeError, before any I/O, for an unknown method, a body on GET or HEAD, a `json`
   *   that JSON.stringify cannot serialize, and header names or values fetch refuses.
   * @throws RangeError for a `timeoutMs` that is not positive or a `maxBytes` that is negative.
   */
  request(request: OutboundRequest): Promise<HttpResponse>;
  /**
   * GETs `url` once: `request` with `retry` and `breaker` off, as health probes and polls need
   * (their failures are the signal they report). Same errors as {@link HttpClient.request}.
   */
  get(url: string, request?: HttpGetRequest): Promise<HttpResponse>;
}

/** One outbound call's span, as {@link OutboundTracer} starts it. */
export interface OutboundSpan {
  /** Sent as the call's `traceparent`, so the service called continues the trace. */
  readonly traceparent: string;
  /** Ends it with the response's status, or with why the call failed (a message safe to show). */
  end(outcome: { readonly status: number } | { readonly error: string }): void;
}

/** Starts a client span for each outbound attempt (the tracing capability gives one). */
export interface OutboundTracer {
  /** `parent` is the traceparent the caller gave (in `call` or the headers), if any. */
  start(method: string, url: URL, parent: string | undefined): OutboundSpan;
}

/** What the client needs from outside. */
export interface HttpClientDeps {
  /** Measures `elapsedMs`. Default: the system clock. */
  clock: Clock;
  /** Records a client span per attempt and propagates it. Default: none (headers sent as given). */
  tracer: OutboundTracer | undefined;
  /** Draws the retries' jitter, in [0, 1). Default: Math.random. */
  random: () => number;
  /** Resolves host names before the guard checks their addresses. Default: dns.lookup. */
  resolve: Resolve | undefined;
}

const redirectStatuses = new Set([301, 302, 303, 307, 308]);

// undici (about a hundred modules) and the retry and breaker policies (cockatiel) are loaded with
// a process's first outbound call, not when it starts: many nodes make none for a long while.
let undici: Promise<typeof import("./undici-request.js")> | undefined;
const loadUndici = () => (undici ??= import("./undici-request.js"));

/**
 * Creates the outbound HTTP client over undici's `request`, on an undici Agent of its own (a
 * keep-alive pool per origin) whose connections resolve names through the outbound guard. Its
 * circuit breakers and pools live as long as it does: create one per process and share it.
 * @throws RangeError when an option is out of range: timeoutMs, breakerHalfOpenMs positive;
 *   maxBytes, retry delays non-negative; maxRedirects a non-negative integer; maxAttempts,
 *   breakerThreshold, maxBreakers positive integers; an `allow` entry that is not one.
 */
export function createHttpClient(
  options: Partial<HttpClientOptions> = {},
  deps: Partial<HttpClientDeps> = {},
): HttpClient {
  const settings: Readonly<HttpClientOptions> = Object.freeze({
    ...httpClientDefaults,
    ...options,
  });
  checkSettings(settings);
  const guard = createOutboundGuard({ allow: settings.allow }, deps.resolve ?? undefined);
  let agent: Dispatcher | undefined;
  const context: AttemptContext = {
    clock: deps.clock ?? systemClock,
    tracer: deps.tracer,
    maxRedirects: settings.maxRedirects,
    guard,
    // Created with the first call, as undici is loaded; net.connect calls the guard's lookup
    // for every new connection (a name, never an address: addresses are checked before).
    dispatcher: (undici) => (agent ??= new undici.Agent({ connect: { lookup: guard.lookup } })),
  };
  const random = deps.random ?? Math.random;
  let policy: Promise<OutboundPolicy> | undefined;
  const policyOf = () =>
    (policy ??= import("./outbound-policy.js").then(({ createOutboundPolicy }) =>
      createOutboundPolicy(settings, random),
    ));

  const client: HttpClient = {
    async request(request) {
      const plan = planCall(settings, request, guard);
      const policy = await policyOf();
      request.signal?.throwIfAborted();
      return policy.run(plan.target.origin, () => attempt(plan, context), {
        retry: plan.retry,
        breaker: request.breaker ?? true,
        signal: request.signal,
      });
    },
    get(url, request = {}) {
      return client.request({ ...request, method: "GET", url, retry: false, breaker: false });
    },
  };
  return client;
}

function checkSettings(settings: Readonly<HttpClientOptions>): void {
  checkLimits(settings.timeoutMs, settings.maxBytes);
  if (!Number.isInteger(settings.maxRedirects) || settings.maxRedirects < 0) {
    throw new RangeError("maxRedirects must be a non-negative integer");
  }
  for (const name of ["maxAttempts", "breakerThreshold", "maxBreakers"] as const) {
    if (!Number.isInteger(settings[name]) || settings[name] < 1) {
      throw new RangeError(`${name} must be a positive integer`);
    }
  }
  for (const name of ["retryBaseDelayMs", "retryMaxDelayMs"] as const) {
    if (!(Number.isFinite(settings[name]) && settings[name] >= 0)) {
      throw new RangeError(`${name} must be a non-negative number`);
    }
  }
  if (!(Number.isFinite(settings.breakerHalfOpenMs) && settings.breakerHalfOpenMs > 0)) {
    throw new RangeError("breakerHalfOpenMs must be a positive number");
  }
}

/** A call checked and prepared before any I/O; every attempt sends it as it is. */
interface CallPlan {
  readonly method: OutboundMethod;
  readonly target: URL;
  /** The headers of every attempt, before the attempt's span sets its traceparent. */
  readonly headers: Headers;
  readonly body: string | undefined;
  readonly timeoutMs: number;
  readonly maxBytes: number;
  readonly signal: AbortSignal | undefined;
  readonly retry: boolean;
}

function planCall(
  settings: Readonly<HttpClientOptions>,
  request: OutboundRequest,
  guard: OutboundGuard,
): CallPlan {
  const method = checkMethod(request.method);
  const timeoutMs = request.timeoutMs ?? settings.timeoutMs;
  const maxBytes = request.maxBytes ?? settings.maxBytes;
  checkLimits(timeoutMs, maxBytes);
  const target = parseTarget(request.url);
  checkDestination(guard, target);
  const body = jsonBody(method, request.json);
  const headers = requestHeaders(settings.userAgent, request, body !== undefined);
  const idempotent = idempotentMethods.has(method) || request.idempotencyKey !== undefined;
  return {
    method,
    target,
    headers,
    body,
    timeoutMs,
    maxBytes,
    signal: request.signal,
    retry: (request.retry ?? true) && idempotent,
  };
}

function checkMethod(method: string): OutboundMethod {
  const known = outboundMethods.find((candidate) => candidate === method);
  if (known === undefined) throw new TypeError(`unsupported method ${JSON.stringify(method)}`);
  return known;
}

/** The body to send, serialized once so that every attempt sends the same bytes. */
function jsonBody(method: OutboundMethod, json: unknown): string | undefined {
  if (json === undefined) return undefined;
  if (method === "GET" || method === "HEAD") {
    throw new TypeError(`a ${method} request cannot have a body`);
  }
  // JSON.stringify throws a TypeError for cycles and BigInts, and returns undefined for a
  // function or a symbol: neither is a body.
  const body: string | undefined = JSON.stringify(json);
  if (body === undefined) throw new TypeError("the json body cannot be serialized as JSON");
  return body;
}

/** What an attempt needs besides the plan. */
interface AttemptContext {
  readonly clock: Clock;
  readonly tracer: OutboundTracer | undefined;
  readonly maxRedirects: number;
  readonly guard: OutboundGuard;
  /** The client's Agent, created on first use from the loaded undici. */
  readonly dispatcher: (undici: typeof import("./undici-request.js")) => Dispatcher;
}

/** Where one request of an attempt goes: the first, then each redirect's. */
interface Hop {
  readonly method: OutboundMethod;
  readonly target: URL;
  readonly body: string | undefined;
}

/** One attempt: one exchange (redirects included) under its own deadline and client span. */
async function attempt(plan: CallPlan, context: AttemptContext): Promise<HttpResponse> {
  // Before the exchange's deadline starts: loading undici is no part of the call's time.
  const undici = await loadUndici();
  const dispatcher = context.dispatcher(undici);
  // A caller who aborted during a backoff gets no further request sent on their behalf.
  plan.signal?.throwIfAborted();
  const headers = new Headers(plan.headers);
  const span = context.tracer?.start(
    plan.method,
    plan.target,
    headers.get("traceparent") ?? undefined,
  );
  if (span) headers.set("traceparent", span.traceparent);
  const started = context.clock.monotonic();
  const exchange = startExchange(plan.timeoutMs, plan.signal);
  let stage: Stage = "connect";
  let hop: Hop = { method: plan.method, target: plan.target, body: plan.body };
  try {
    for (let redirects = 0; ; redirects++) {
      stage = "connect";
      // undici's request, not fetch: fetch's WHATWG streams cost about a millisecond of CPU per
      // call (bench:workflows' profile), request a fraction of it. Redirects are not followed
      // by it, and content codings are decoded below, as fetch would.
      const response = await undici.request(hop.target, {
        dispatcher,
        method: hop.method,
        headers: headerRecord(headers),
        body: hop.body ?? null,
        signal: exchange.controller.signal,
      });
      const responseHeaders = headersOf(response.headers);
      const next = redirectTarget(
        response.statusCode,
        responseHeaders,
        response.body,
        hop.target,
        context.guard,
      );
      if (next === undefined) {
        stage = "body";
        const body = await readBody(
          response.body,
          responseHeaders,
          plan.maxBytes,
          exchange.controller,
        );
        span?.end({ status: response.statusCode });
        return {
          status: response.statusCode,
          headers: responseHeaders,
          body,
          url: hop.target.href,
          elapsedMs: context.clock.monotonic() - started,
        };
      }
      // The redirect's own body is of no interest; dropping it frees the connection.
      discard(response.body);
      if (redirects >= context.maxRedirects) {
        throw new OutboundError(
          "too_many_redirects",
          `more than ${context.maxRedirects} redirects`,
        );
      }
      hop = redirected(hop, response.statusCode, next, headers);
    }
  } catch (error) {
    const failure = outboundFailure(error, {
      exchange,
      timeoutMs: plan.timeoutMs,
      stage,
      signal: plan.signal,
    });
    span?.end({ error: isOutboundError(failure) ? failure.message : "cancelled" });
    throw failure;
  } finally {
    exchange.dispose();
  }
}

/**
 * The next hop after a redirect to `next`. A 303 asks for a GET of the new location, and a 301 or
 * 302 to a POST is turned into a GET by every client in use (RFC 9110 §15.4): the body and its
 * content type are dropped. 307 and 308 repeat the method and the body.
 */
function redirected(hop: Hop, status: number, next: URL, headers: Headers): Hop {
  const toGet =
    (status === 303 && hop.method !== "GET" && hop.method !== "HEAD") ||
    ((status === 301 || status === 302) && hop.method === "POST");
  if (!toGet) return { ...hop, target: next };
  headers.delete("content-type");
  return { method: "GET", target: next, body: undefined };
}

type Stage = "connect" | "body";

interface Exchange {
  readonly controller: AbortController;
  readonly timedOut: () => boolean;
  readonly dispose: () => void;
}

/** One controller aborts the exchange, whether the deadline passes or the caller gives up. */
function startExchange(timeoutMs: number, signal: AbortSignal | undefined): Exchange {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  const onAbort = () => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  return {
    controller,
    timedOut: () => timedOut,
    dispose: () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    },
  };
}

function checkLimits(timeoutMs: number, maxBytes: number): void {
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
    throw new RangeError("timeoutMs must be a positive number");
  }
  if (!(Number.isFinite(maxBytes) && maxBytes >= 0)) {
    throw new RangeError("maxBytes must be a non-negative number");
  }
}

function parseTarget(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (error) {
    throw new OutboundError("invalid_url", "not an absolute URL", { cause: error });
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new OutboundError("invalid_url", "only http and https URLs are allowed");
  }
  if (parsed.username !== "" || parsed.password !== "") {
    throw new OutboundError("invalid_url", "URLs with credentials are not allowed");
  }
  return parsed;
}

/** Refuses, before any I/O, a destination the guard refuses (a scheme, an address literal). */
function checkDestination(guard: OutboundGuard, target: URL): void {
  const verdict = guard.checkUrl(target);
  if (!verdict.allowed) throw new OutboundError("destination_refused", verdict.reason);
}

/**
 * The headers every attempt sends. Headers merges names case-insensitively, so a caller's
 * "User-Agent" replaces ours; what the request says in its own fields (accept, the idempotency
 * key, the call's ids) wins over the same names in `headers`.
 */
function requestHeaders(userAgent: string, request: OutboundRequest, json: boolean): Headers {
  const headers = new Headers({ "user-agent": userAgent });
  for (const [name, value] of Object.entries(request.headers ?? {})) headers.set(name, value);
  if (request.accept !== undefined) headers.set("accept", request.accept);
  if (json && !headers.has("content-type")) headers.set("content-type", "application/json");
  if (request.idempotencyKey !== undefined) {
    headers.set("idempotency-key", request.idempotencyKey);
  }
  if (request.call !== undefined) {
    headers.set("x-correlation-id", request.call.correlationId);
    if (request.call.traceparent !== undefined) {
      headers.set("traceparent", request.call.traceparent);
    }
  }
  return headers;
}

/** Where a redirect leads, or undefined when the answer is the one to return. */
function redirectTarget(
  status: number,
  headers: Headers,
  body: Readable,
  current: URL,
  guard: OutboundGuard,
): URL | undefined {
  const location = headers.get("location");
  if (!redirectStatuses.has(status) || location === null) return undefined;
  let next: URL;
  try {
    next = new URL(location, current);
  } catch (error) {
    discard(body);
    throw new OutboundError("redirect_refused", "redirect to an invalid location refused", {
      cause: error,
    });
  }
  // The guard first, so a redirect to a refused place says why, whatever its origin.
  const verdict = guard.checkUrl(next);
  if (!verdict.allowed) {
    discard(body);
    throw new OutboundError("destination_refused", verdict.reason);
  }
  if (next.origin !== current.origin || next.username !== "" || next.password !== "") {
    discard(body);
    throw new OutboundError("redirect_refused", "redirect to another host refused");
  }
  return next;
}

/** Drops an answer's body unread: its socket goes back to the pool (or is closed). */
function discard(body: Readable): void {
  body.on("error", () => {});
  body.destroy();
}

/** The request headers as undici takes them. */
function headerRecord(headers: Headers): Record<string, string> {
  const record: Record<string, string> = {};
  headers.forEach((value, name) => {
    record[name] = value;
  });
  return record;
}

/** undici's response headers as a Headers, as callers read them. */
function headersOf(raw: Record<string, string | string[] | undefined>): Headers {
  const headers = new Headers();
  for (const name in raw) {
    const value = raw[name];
    if (typeof value === "string") headers.append(name, value);
    else if (Array.isArray(value)) for (const v of value) headers.append(name, v);
  }
  return headers;
}

// The content codings decoded, as fetch decodes them; another one is passed on as it came.
const decoders: Readonly<Record<string, () => Transform>> = {
  gzip: () => createGunzip(),
  "x-gzip": () => createGunzip(),
  deflate: () => createInflate(),
  br: () => createBrotliDecompress(),
};

/**
 * Reads the body, decoded, aborting the exchange as soon as it (declared, or read after
 * decoding) grows past `maxBytes`: a small compressed answer that would inflate past it is cut
 * as it inflates.
 */
async function readBody(
  raw: Readable,
  headers: Headers,
  maxBytes: number,
  controller: AbortController,
): Promise<Buffer> {
  const declared = Number(headers.get("content-length") ?? Number.NaN);
  const coding = headers.get("content-encoding")?.trim().toLowerCase();
  const decoder = coding === undefined ? undefined : decoders[coding];
  if (declared > maxBytes && decoder === undefined) {
    discard(raw);
    controller.abort();
    throw tooLarge(maxBytes);
  }
  const source: Readable = decoder === undefined ? raw : raw.pipe(decoder());
  if (decoder !== undefined) raw.on("error", (error) => source.destroy(error));
  const body = new BodyBuffer(exactLength(declared, coding));
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      if (body.length + chunk.byteLength > maxBytes) {
        // Aborting (not just leaving the stream) closes the socket, so the sender stops too.
        controller.abort();
        throw tooLarge(maxBytes);
      }
      body.append(chunk);
    }
  } catch (error) {
    if (error instanceof OutboundError) throw error;
    if (decoder !== undefined && !controller.signal.aborted && isZlibError(error)) {
      throw new OutboundError("network", "malformed HTTP response", { cause: error });
    }
    throw error;
  } finally {
    if (source !== raw) source.destroy();
  }
  return body.contents();
}

function isZlibError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("Z_");
}

/** The body's length when the response says it exactly: declared and not content-encoded. */
function exactLength(declared: number, coding: string | undefined): number | undefined {
  return Number.isSafeInteger(declared) && declared > 0 && coding === undefined
    ? declared
    : undefined;
}

/**
 * A body read chunk by chunk. With its length known, each chunk is copied into the final buffer
 * as it arrives: the first touch of fresh memory costs about 3 ms per MB on these machines, and
 * one concatenation at the end would spend it all in one task (17 ms for a 5 MB document,
 * during which the event loop stalls). Without a length, the chunks are concatenated at the end.
 */
class BodyBuffer {
  private readonly chunks: Uint8Array[] = [];
  private readonly exact: Buffer | undefined;
  length = 0;

  constructor(expectedLength: number | undefined) {
    this.exact = expectedLength === undefined ? undefined : Buffer.allocUnsafe(expectedLength);
  }

  append(chunk: Uint8Array): void {
    if (this.exact !== undefined && this.length + chunk.byteLength <= this.exact.length) {
      this.exact.set(chunk, this.length);
    } else {
      if (this.exact !== undefined && this.chunks.length === 0) {
        // Longer than declared (a server's mistake): keep what was copied, go on with chunks.
        this.chunks.push(this.exact.subarray(0, this.length));
      }
      this.chunks.push(chunk);
    }
    this.length += chunk.byteLength;
  }

  contents(): Buffer {
    if (this.chunks.length === 0 && this.exact !== undefined) {
      return this.exact.subarray(0, this.length);
    }
    return Buffer.concat(this.chunks, this.length);
  }
}

function tooLarge(maxBytes: number): OutboundError {
  return new OutboundError("too_large", `response larger than ${maxBytes} bytes`);
}

/** Maps whatever undici threw to an OutboundError, in the one place that knows its errors. */
function outboundFailure(
  error: unknown,
  context: { exchange: Exchange; timeoutMs: number; stage: Stage; signal: AbortSignal | undefined },
): unknown {
  if (isOutboundError(error)) return error;
  if (context.exchange.timedOut()) {
    return new OutboundError("timeout", `timed out after ${context.timeoutMs} ms`, {
      cause: error,
    });
  }
  if (context.signal?.aborted) return context.signal.reason;
  return new OutboundError("network", networkMessage(errorCode(error), context.stage), {
    cause: error,
  });
}

const networkMessages: ReadonlyMap<string, string> = new Map([
  ["ECONNREFUSED", "connection refused"],
  ["ECONNRESET", "connection reset"],
  ["EPIPE", "connection reset"],
  ["UND_ERR_SOCKET", "connection closed unexpectedly"],
  ["ENOTFOUND", "host name could not be resolved"],
  ["EAI_AGAIN", "host name could not be resolved"],
  ["EAI_NONAME", "host name could not be resolved"],
  ["EHOSTUNREACH", "host unreachable"],
  ["ENETUNREACH", "network unreachable"],
  ["ETIMEDOUT", "connection timed out"],
  ["UND_ERR_CONNECT_TIMEOUT", "connection timed out"],
  ["UND_ERR_HEADERS_TIMEOUT", "no response headers in time"],
  ["UND_ERR_BODY_TIMEOUT", "response body stalled"],
  ["UND_ERR_HEADERS_OVERFLOW", "response headers too large"],
]);

function networkMessage(code: string | undefined, stage: Stage): string {
  const known = code === undefined ? undefined : networkMessages.get(code);
  if (known !== undefined) return known;
  if (
    code !== undefined &&
    /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED)/.test(code)
  ) {
    return "TLS handshake failed";
  }
  if (code?.startsWith("HPE_")) return "malformed HTTP response";
  return stage === "body" ? "connection lost while reading the response" : "could not connect";
}

/** The first `code` found along the cause chain (fetch wraps socket errors in "fetch failed"). */
function errorCode(error: unknown): string | undefined {
  let current = error;
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string") return code;
    const nested = (current as { errors?: unknown }).errors;
    if (Array.isArray(nested) && nested.length > 0) {
      current = nested[0];
      continue;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}
