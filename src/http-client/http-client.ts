import { type Clock, systemClock } from "../clock.js";

/** The closed set of ways an outbound call fails before a status code can be returned. */
export type OutboundErrorKind =
  | "invalid_url"
  | "timeout"
  | "too_large"
  | "redirect_refused"
  | "too_many_redirects"
  | "network";

/**
 * Why an outbound call failed. The message is written to be shown to a client: it never names a
 * host, an address or a raw socket error; the underlying error, if any, is kept in `cause` for logs.
 */
export class OutboundError extends Error {
  override readonly name = "OutboundError";

  constructor(
    readonly kind: OutboundErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** True when `error` is an {@link OutboundError}. */
export function isOutboundError(error: unknown): error is OutboundError {
  return error instanceof OutboundError;
}

/** Options of {@link createHttpClient}; every call may override the first two. */
export interface HttpClientOptions {
  /** Budget for the whole exchange, redirects and body included, in ms. Default: 5000. */
  timeoutMs: number;
  /** Largest response body accepted, in bytes (after content decoding). Default: 5 MiB. */
  maxBytes: number;
  /** Same-origin redirects followed before giving up. Default: 3. */
  maxRedirects: number;
  /** Sent as `user-agent` unless the call's headers set one. Default: "orchestrator". */
  userAgent: string;
}

/** The defaults {@link createHttpClient} merges its options over. */
export const httpClientDefaults: Readonly<HttpClientOptions> = Object.freeze({
  timeoutMs: 5000,
  maxBytes: 5 * 1024 * 1024,
  maxRedirects: 3,
  userAgent: "orchestrator",
});

/** Per-call settings of {@link HttpClient.get}. */
export interface HttpGetRequest {
  /** Extra request headers (traceparent, correlation id, ...); they override the user agent. */
  headers?: Readonly<Record<string, string>>;
  /** Overrides the client's `timeoutMs` for this call. */
  timeoutMs?: number;
  /** Overrides the client's `maxBytes` for this call. */
  maxBytes?: number;
  /** Cancels the call; the call then rejects with the signal's reason, as fetch does. */
  signal?: AbortSignal;
  /** Sent as `accept`, over any `accept` in `headers`. */
  accept?: string;
}

/** A response read in full. */
export interface HttpResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Buffer;
  /** The URL that answered, after redirects. */
  readonly url: string;
  /** Time from the call to the end of the body, in ms. */
  readonly elapsedMs: number;
}

/** The one outbound HTTP client: bounded in time and size, never leaving the origin it was given. */
export interface HttpClient {
  /**
   * GETs `url` and reads the whole body. Non-2xx statuses are returned, not thrown. Redirects are
   * followed only within the same origin (scheme, host and port).
   * @throws OutboundError "invalid_url" for anything but an absolute http: or https: URL without
   *   credentials (before any I/O); "timeout" when the exchange outlasts `timeoutMs`; "too_large"
   *   when the body (declared or read) exceeds `maxBytes`; "redirect_refused" for a redirect to
   *   another origin; "too_many_redirects" past `maxRedirects`; "network" when the connection fails.
   * @throws the signal's reason when `request.signal` aborts the call.
   * @throws TypeError for header names or values fetch refuses.
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

/** Starts a client span for each outbound call (the tracing capability gives one). */
export interface OutboundTracer {
  /** `parent` is the traceparent the caller put in the call's headers, if any. */
  start(method: string, url: URL, parent: string | undefined): OutboundSpan;
}

/** What the client needs from outside. */
export interface HttpClientDeps {
  /** Measures `elapsedMs`. Default: the system clock. */
  clock: Clock;
  /** Records a client span per call and propagates it. Default: none (headers sent as given). */
  tracer: OutboundTracer | undefined;
}

const redirectStatuses = new Set([301, 302, 303, 307, 308]);

/**
 * Creates the outbound HTTP client over the global fetch (undici).
 * @throws RangeError when an option is not a non-negative number (timeoutMs: positive).
 */
export function createHttpClient(
  options: Partial<HttpClientOptions> = {},
  deps: Partial<HttpClientDeps> = {},
): HttpClient {
  const settings: Readonly<HttpClientOptions> = Object.freeze({
    ...httpClientDefaults,
    ...options,
  });
  checkLimits(settings.timeoutMs, settings.maxBytes);
  if (!Number.isInteger(settings.maxRedirects) || settings.maxRedirects < 0) {
    throw new RangeError("maxRedirects must be a non-negative integer");
  }
  const clock = deps.clock ?? systemClock;
  const tracer = deps.tracer;

  return {
    async get(url, request = {}) {
      const timeoutMs = request.timeoutMs ?? settings.timeoutMs;
      const maxBytes = request.maxBytes ?? settings.maxBytes;
      checkLimits(timeoutMs, maxBytes);
      let target = parseTarget(url);
      const headers = requestHeaders(settings.userAgent, request);
      request.signal?.throwIfAborted();

      const span = tracer?.start("GET", target, headers.get("traceparent") ?? undefined);
      if (span) headers.set("traceparent", span.traceparent);
      const started = clock.monotonic();
      const exchange = startExchange(timeoutMs, request.signal);
      let stage: Stage = "connect";
      try {
        for (let redirects = 0; ; redirects++) {
          stage = "connect";
          const response = await fetch(target, {
            method: "GET",
            headers,
            redirect: "manual",
            signal: exchange.controller.signal,
          });
          const next = redirectTarget(response, target);
          if (next === undefined) {
            stage = "body";
            const body = await readBody(response, maxBytes, exchange.controller);
            span?.end({ status: response.status });
            return {
              status: response.status,
              headers: response.headers,
              body,
              url: target.href,
              elapsedMs: clock.monotonic() - started,
            };
          }
          // The redirect's own body is of no interest; dropping it frees the connection.
          response.body?.cancel().catch(() => {});
          if (redirects >= settings.maxRedirects) {
            throw new OutboundError(
              "too_many_redirects",
              `more than ${settings.maxRedirects} redirects`,
            );
          }
          target = next;
        }
      } catch (error) {
        const failure = outboundFailure(error, {
          exchange,
          timeoutMs,
          stage,
          signal: request.signal,
        });
        span?.end({ error: isOutboundError(failure) ? failure.message : "cancelled" });
        throw failure;
      } finally {
        exchange.dispose();
      }
    },
  };
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

function requestHeaders(userAgent: string, request: HttpGetRequest): Headers {
  // Headers merges names case-insensitively, so a caller's "User-Agent" replaces ours.
  const headers = new Headers({ "user-agent": userAgent });
  for (const [name, value] of Object.entries(request.headers ?? {})) headers.set(name, value);
  if (request.accept !== undefined) headers.set("accept", request.accept);
  return headers;
}

/** Where a redirect leads, or undefined when `response` is the answer to return. */
function redirectTarget(response: Response, current: URL): URL | undefined {
  const location = response.headers.get("location");
  if (!redirectStatuses.has(response.status) || location === null) return undefined;
  let next: URL;
  try {
    next = new URL(location, current);
  } catch (error) {
    response.body?.cancel().catch(() => {});
    throw new OutboundError("redirect_refused", "redirect to an invalid location refused", {
      cause: error,
    });
  }
  if (next.origin !== current.origin || next.username !== "" || next.password !== "") {
    response.body?.cancel().catch(() => {});
    throw new OutboundError("redirect_refused", "redirect to another host refused");
  }
  return next;
}

/** Reads the body as a stream, aborting the exchange as soon as it grows past `maxBytes`. */
async function readBody(
  response: Response,
  maxBytes: number,
  controller: AbortController,
): Promise<Buffer> {
  const declared = Number(response.headers.get("content-length") ?? Number.NaN);
  if (declared > maxBytes) {
    controller.abort();
    throw tooLarge(maxBytes);
  }
  if (response.body === null) return Buffer.alloc(0);
  const reader = response.body.getReader();
  const body = new BodyBuffer(exactLength(response, declared));
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (body.length + value.byteLength > maxBytes) {
      // Aborting (not just cancelling the reader) closes the socket, so the sender stops too.
      controller.abort();
      throw tooLarge(maxBytes);
    }
    body.append(value);
  }
  return body.contents();
}

/** The body's length when the response says it exactly: declared and not content-encoded. */
function exactLength(response: Response, declared: number): number | undefined {
  const encoded = response.headers.has("content-encoding");
  return Number.isSafeInteger(declared) && declared > 0 && !encoded ? declared : undefined;
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

/** Maps whatever fetch threw to an OutboundError, in the one place that knows undici's errors. */
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
