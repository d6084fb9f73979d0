import type { OutgoingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { fromBinary, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { encodeBinary } from "../encoding/message-encoding.js";
import {
  type CallMeta,
  correlationHeader,
  traceparentOf,
  traceresponseHeader,
} from "../interceptors/call-meta.js";
import type { WrappedMethod, WrappedService } from "../interceptors/chain.js";
import { boundedMessage } from "./bounded-message.js";
import { ActiveCalls, CallContext, copyHeaders } from "./call-context.js";
import { grpcTimeoutHeader, parseGrpcTimeout } from "./deadline.js";
import { encodeFrame, framePayload, type GrpcFrame, GrpcFrameReader } from "./grpc-frames.js";
import type { Http2StreamHandler } from "./one-port-listener.js";

export interface GrpcFastPathOptions {
  /** Largest request message accepted, before and after decompression, in bytes. */
  readMaxBytes: number;
  /** Aborts the calls still running when the shutdown grace period is over. */
  shutdownSignal: AbortSignal;
  /** Resolves a call's correlation id and trace context from its request headers. */
  resolveCallMeta: (
    correlationId: string | undefined,
    traceparent: string | undefined,
    clientAddress: string,
  ) => CallMeta;
}

// gRPC over HTTP/2 with the binary codec; application/grpc+json goes to the Connect router.
const grpcProtoContentType = /^application\/grpc(\+proto)?$/i;
const acceptEncoding = "gzip";
type Encoding = "identity" | "gzip";

/**
 * Serves `application/grpc` calls straight from HTTP/2 streams: frames decoded with protobuf-es,
 * the same wrapped implementations (and so the same interceptors) as every other protocol, and
 * none of the per-call machinery of a general-purpose router. Unary calls are the hot path.
 */
export function createGrpcFastPath(
  services: readonly WrappedService[],
  options: GrpcFastPathOptions,
): Http2StreamHandler {
  const methods = new Map<string, WrappedMethod>();
  for (const { service, methods: byName } of services) {
    for (const wrapped of byName.values()) {
      methods.set(`/${service.typeName}/${wrapped.method.name}`, wrapped);
    }
  }
  const activeCalls = new ActiveCalls(options.shutdownSignal);

  return (stream, headers) => {
    const contentType = headers["content-type"];
    if (contentType === undefined || !grpcProtoContentType.test(contentType)) return false;
    // Resolved first, so that even a refusal echoes the caller's correlation id.
    const meta = options.resolveCallMeta(
      headerValue(headers[correlationHeader]),
      headerValue(headers.traceparent),
      stream.session?.socket?.remoteAddress ?? "",
    );
    const call = new ServerCall(stream, contentType, meta);
    const path = headers[":path"] ?? "";
    const target = methods.get(path);
    if (target === undefined || headers[":method"] !== "POST") {
      call.fail(new ConnectError(`unknown method ${path}`, Code.Unimplemented));
      return true;
    }
    const encoding = headers["grpc-encoding"] ?? "identity";
    if (encoding !== "identity" && encoding !== "gzip") {
      call.fail(new ConnectError(`unsupported grpc-encoding ${encoding}`, Code.Unimplemented));
      return true;
    }
    let timeoutMs: number | undefined;
    try {
      // Any valid deadline is accepted, as on every protocol; a very long one is capped.
      timeoutMs = parseGrpcTimeout(headerValue(headers[grpcTimeoutHeader]));
    } catch (error) {
      call.fail(error);
      return true;
    }
    const context = new CallContext({
      target,
      protocolName: "grpc",
      requestMethod: "POST",
      url: () => `http://${headers[":authority"] ?? "localhost"}${path}`,
      headers,
      meta,
      activeCalls,
      timeoutMs,
    });
    call.start(target, context, encoding, options.readMaxBytes);
    return true;
  };
}

/** One gRPC call on one HTTP/2 stream: it sends headers once, messages, then the status, once. */
class ServerCall {
  private headersSent = false;
  private finished = false;
  private context: CallContext | undefined;
  /** The status the trailers carry, set when the call ends. */
  private status: ConnectError | undefined;

  constructor(
    private readonly stream: ServerHttp2Stream,
    private readonly contentType: string,
    private readonly meta: CallMeta,
  ) {}

  start(
    target: WrappedMethod,
    context: CallContext,
    encoding: Encoding,
    readMaxBytes: number,
  ): void {
    this.context = context;
    // A deadline or the end of the shutdown grace period answers the call with its reason.
    context.onAbort = (reason) => this.fail(reason);
    // A client that resets the stream or goes away cancels the call; nobody is left to answer.
    this.stream.once("close", () => {
      if (this.finished) return;
      this.finished = true;
      context.abort(new ConnectError("the client cancelled the call", Code.Canceled));
    });
    const reader = new GrpcFrameReader(readMaxBytes);
    if (target.streaming) this.runStreaming(target, context, reader, encoding, readMaxBytes);
    else this.runUnary(target, context, reader, encoding, readMaxBytes);
  }

  private runUnary(
    target: Extract<WrappedMethod, { streaming: false }>,
    context: CallContext,
    reader: GrpcFrameReader,
    encoding: Encoding,
    readMaxBytes: number,
  ): void {
    let frame: GrpcFrame | undefined;
    let frames = 0;
    this.stream.on("data", (chunk: Buffer) => {
      if (this.finished) return;
      try {
        for (const f of reader.push(chunk)) {
          frame = f;
          frames++;
        }
      } catch (error) {
        this.fail(error);
      }
    });
    this.stream.once("end", async () => {
      if (this.finished) return;
      try {
        if (frames !== 1 || frame === undefined || reader.hasPartialFrame) {
          throw new ConnectError("a unary call takes exactly one message", Code.InvalidArgument);
        }
        const request = decode(target, await framePayload(frame, encoding, readMaxBytes));
        const response = await target.call(request, context);
        this.respond(encodeBinary(target.method.output, response));
      } catch (error) {
        this.fail(error);
      }
    });
  }

  private runStreaming(
    target: Extract<WrappedMethod, { streaming: true }>,
    context: CallContext,
    reader: GrpcFrameReader,
    encoding: Encoding,
    readMaxBytes: number,
  ): void {
    const requests = new RequestQueue(this.stream);
    this.stream.on("data", (chunk: Buffer) => {
      if (this.finished) return;
      try {
        for (const frame of reader.push(chunk)) {
          requests.push(
            Promise.resolve(framePayload(frame, encoding, readMaxBytes)).then((bytes) =>
              decode(target, bytes),
            ),
          );
        }
      } catch (error) {
        requests.fail(error);
      }
    });
    this.stream.once("end", () => {
      if (reader.hasPartialFrame) {
        requests.fail(new ConnectError("stream ended inside a message", Code.InvalidArgument));
      } else {
        requests.end();
      }
    });
    void this.pump(target.call(requests, context), target);
  }

  private async pump(responses: AsyncIterable<Message>, target: WrappedMethod): Promise<void> {
    const output = target.method.output;
    try {
      for await (const response of responses) {
        if (this.finished) return;
        this.sendHeaders();
        if (!this.stream.write(encodeFrame(encodeBinary(output, response)))) {
          await waitForDrain(this.stream);
        }
      }
      this.end(undefined);
    } catch (error) {
      this.fail(error);
    }
  }

  /** Sends the one response message of a unary call and the OK status. */
  private respond(bytes: Uint8Array): void {
    if (this.finished) return;
    this.sendHeaders();
    this.finished = true;
    this.stream.end(encodeFrame(bytes));
    this.context?.end();
  }

  /** Ends the call with an error: a trailers-only response if nothing was sent yet. */
  fail(reason: unknown): void {
    if (this.finished) return;
    this.end(toConnectError(reason));
  }

  private end(error: ConnectError | undefined): void {
    if (this.finished) return;
    this.finished = true;
    if (!this.headersSent && error !== undefined) {
      this.trailersOnly(error);
    } else {
      this.sendHeaders();
      this.status = error;
      this.stream.end();
    }
    this.context?.end();
  }

  private responseHeaders(): OutgoingHttpHeaders {
    const headers: OutgoingHttpHeaders = {
      ":status": 200,
      "content-type": this.contentType,
      "grpc-accept-encoding": acceptEncoding,
    };
    headers[correlationHeader] = this.meta.correlationId;
    headers[traceresponseHeader] = traceparentOf(this.meta);
    this.context?.copyResponseHeaders(headers);
    return headers;
  }

  private sendHeaders(): void {
    if (this.headersSent || this.stream.destroyed) return;
    this.headersSent = true;
    this.stream.respond(this.responseHeaders(), { waitForTrailers: true });
    this.stream.once("wantTrailers", () => this.stream.sendTrailers(this.trailers()));
  }

  private trailers(): OutgoingHttpHeaders {
    const trailer = this.context?.trailers;
    // The common case, OK with no trailers of the implementation's, builds no Headers object.
    if (this.status === undefined && trailer === undefined) return { "grpc-status": "0" };
    const trailers: OutgoingHttpHeaders = {};
    copyHeaders(statusHeaders(trailer ?? new Headers(), this.status), trailers);
    return trailers;
  }

  private trailersOnly(error: ConnectError): void {
    if (this.stream.destroyed || this.stream.headersSent) return;
    const headers = this.responseHeaders();
    const trailers = this.context?.trailers;
    if (trailers) copyHeaders(trailers, headers);
    copyHeaders(statusHeaders(new Headers(), error), headers);
    this.stream.respond(headers, { endStream: true });
    // Stop reading whatever the client is still sending (an oversize message, say).
    if (!this.stream.readableEnded) this.stream.close();
  }
}

/** Request messages of a streaming call, delivered in order, with backpressure on the stream. */
class RequestQueue implements AsyncIterable<Message> {
  private readonly items: Promise<Message>[] = [];
  private waiting: ((result: IteratorResult<Promise<Message>>) => void) | undefined;
  private ended = false;
  private error: unknown;

  constructor(private readonly stream: ServerHttp2Stream) {}

  push(message: Promise<Message>): void {
    message.catch(() => {}); // surfaced when the consumer reaches it
    if (this.waiting) {
      const wake = this.waiting;
      this.waiting = undefined;
      wake({ done: false, value: message });
      return;
    }
    this.items.push(message);
    if (this.items.length >= 16) this.stream.pause();
  }

  end(): void {
    this.ended = true;
    this.wake();
  }

  fail(error: unknown): void {
    this.error ??= error;
    this.ended = true;
    this.wake();
  }

  private wake(): void {
    if (this.waiting === undefined || this.items.length > 0) return;
    const wake = this.waiting;
    this.waiting = undefined;
    if (this.error !== undefined) wake({ done: false, value: Promise.reject(this.error) });
    else wake({ done: true, value: undefined });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Message> {
    for (;;) {
      const next = this.items.shift();
      if (next !== undefined) {
        if (this.items.length < 8) this.stream.resume();
        yield await next;
        continue;
      }
      if (this.error !== undefined) throw this.error;
      if (this.ended) return;
      const result = await new Promise<IteratorResult<Promise<Message>>>((resolve) => {
        this.waiting = resolve;
        this.stream.resume();
      });
      if (result.done) return;
      yield await result.value;
    }
  }
}

function decode(target: WrappedMethod, bytes: Uint8Array): Message {
  try {
    return fromBinary(target.method.input, bytes);
  } catch {
    throw new ConnectError(
      `request is not a valid ${target.method.input.typeName} message`,
      Code.InvalidArgument,
    );
  }
}

function toConnectError(reason: unknown): ConnectError {
  if (reason instanceof ConnectError) return reason;
  // Whatever else escaped the chain says nothing the client should see.
  return new ConnectError("internal error", Code.Internal);
}

/**
 * Writes the status into `target`: grpc-status, grpc-message and grpc-status-details-bin, with the
 * message bounded (no trailer grows with the input) and percent-encoded only where the gRPC spec
 * requires, so that every client shows it as written.
 */
function statusHeaders(target: Headers, error: ConnectError | undefined): Headers {
  if (error === undefined) return setTrailerStatus(target, undefined);
  const status = bounded(error);
  setTrailerStatus(target, status);
  target.set("grpc-message", percentEncodeGrpcMessage(status.rawMessage));
  return target;
}

/** The gRPC spec's encoding of grpc-message: bytes outside 0x20-0x7E, and "%", as %XX. */
function percentEncodeGrpcMessage(message: string): string {
  let encoded = "";
  for (const byte of Buffer.from(message, "utf8")) {
    encoded +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return encoded;
}

/** A copy of the error whose message is bounded, so that no trailer grows with the input. */
function bounded(error: ConnectError): ConnectError {
  const message = boundedMessage(error.rawMessage);
  if (message === error.rawMessage) return error;
  const copy = new ConnectError(message, error.code, error.metadata);
  copy.details = error.details;
  return copy;
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function waitForDrain(stream: ServerHttp2Stream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}
