import http2, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from "node:http2";

/** One request over cleartext HTTP/2 with prior knowledge. */
export interface H2cRequest {
  /** Default "GET". */
  method?: string;
  /** Path and query, e.g. "/health". May be any bytes a header allows. */
  path: string;
  /** Request headers besides the pseudo-headers. Default: none. */
  headers?: OutgoingHttpHeaders;
  /** Request body. Default: none (the stream ends with the headers). */
  body?: Uint8Array | string;
}

/** What came back: status, headers, trailers and the whole body. */
export interface H2cResponse {
  readonly status: number;
  /** Response headers, pseudo-headers included. A gRPC trailers-only answer has its status here. */
  readonly headers: IncomingHttpHeaders;
  /** Trailers; empty when the server sent none. */
  readonly trailers: IncomingHttpHeaders;
  readonly body: Buffer;
  /** The body as UTF-8. */
  text(): string;
}

/**
 * Sends one request to `origin` (e.g. "http://127.0.0.1:5099") on a connection of its own and
 * resolves once the response has ended; the connection is closed before it resolves.
 *
 * @throws Error when the connection or the stream fails before the response ends.
 */
export async function h2cRequest(origin: string, request: H2cRequest): Promise<H2cResponse> {
  const session = http2.connect(origin);
  try {
    return await exchange(session, request);
  } finally {
    await new Promise<void>((resolve) => {
      if (session.closed) resolve();
      else session.close(() => resolve());
    });
  }
}

function exchange(session: http2.ClientHttp2Session, request: H2cRequest): Promise<H2cResponse> {
  return new Promise((resolve, reject) => {
    session.on("error", reject); // a second error after the first settles nothing, harmlessly
    const stream = session.request(
      { ":method": request.method ?? "GET", ":path": request.path, ...request.headers },
      { endStream: request.body === undefined },
    );
    let headers: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => {
      headers = h;
    });
    stream.on("trailers", (t) => {
      trailers = t;
    });
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    // A server may reset the stream once it has answered (to stop an upload it refused): the
    // answer still counts, so an error only matters when no response came.
    let failure: unknown;
    stream.on("error", (error) => {
      failure ??= error;
    });
    stream.once("close", () => {
      if (headers[":status"] === undefined) {
        reject(failure ?? new Error(`stream closed without a response (code ${stream.rstCode})`));
        return;
      }
      const body = Buffer.concat(chunks);
      resolve({
        status: Number(headers[":status"]),
        headers,
        trailers,
        body,
        text: () => body.toString("utf8"),
      });
    });
    if (request.body !== undefined) stream.end(request.body);
  });
}
