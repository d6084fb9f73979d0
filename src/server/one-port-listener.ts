import http, { type IncomingMessage, type ServerResponse } from "node:http";
import http2, {
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import net, { type AddressInfo, type Socket } from "node:net";
import tls from "node:tls";

/** A request handler that takes HTTP/1.1 requests and HTTP/2 requests through Node's compat API. */
export type HttpRequestHandler = (
  request: IncomingMessage | Http2ServerRequest,
  response: ServerResponse | Http2ServerResponse,
) => void;

/**
 * Takes an HTTP/2 stream before the compat layer sees it. Returns true when it handled the stream
 * (a gRPC call on the fast path); false hands the stream to the HTTP request handler.
 */
export type Http2StreamHandler = (
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
) => boolean;

export interface OnePortListenerOptions {
  /** Every HTTP/1.1 request, and the HTTP/2 requests that `onStream` declines. */
  onRequest: HttpRequestHandler;
  /** Offered every HTTP/2 stream first. Default: decline all. */
  onStream?: Http2StreamHandler;
  /** PEM certificate and key: serve TLS with ALPN h2 and http/1.1. Default: cleartext. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Idle time of an HTTP/1.1 keep-alive connection. Default 5000 ms (Node's). */
  keepAliveTimeoutMs?: number;
  /** Time a client has to send request headers, and to send its first bytes. Default 10000 ms. */
  headersTimeoutMs?: number;
  /** Concurrent streams per HTTP/2 connection. Default 1000. */
  maxConcurrentStreams?: number;
  /** Largest header block accepted, in bytes. Default 65536. */
  maxHeaderListSize?: number;
}

const defaults = Object.freeze({
  keepAliveTimeoutMs: 5_000,
  headersTimeoutMs: 10_000,
  maxConcurrentStreams: 1_000,
  maxHeaderListSize: 65_536,
});

/** One TCP (or TLS) port that speaks HTTP/1.1 and HTTP/2 at once. */
export interface OnePortListener {
  /** The socket server; fastify's serverFactory returns it. */
  readonly server: net.Server;
  listen(port: number, host: string): Promise<AddressInfo>;
  /**
   * Stops accepting connections, asks HTTP/2 clients to go away (GOAWAY) and closes idle HTTP/1.1
   * connections; resolves once every connection is closed or `timeoutMs` has passed, after which
   * the remaining connections are destroyed.
   */
  close(timeoutMs: number): Promise<void>;
}

const h2Preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
// HTTP/1 methods are tokens; none is "PRI", so the first bytes tell the protocol.
const sniffLength = 4;

/**
 * Creates a listener that serves HTTP/1.1 and cleartext HTTP/2 with prior knowledge on one port,
 * telling them apart by the HTTP/2 connection preface; with TLS, ALPN tells them apart.
 */
export function createOnePortListener(options: OnePortListenerOptions): OnePortListener {
  const opts = { ...defaults, ...options };
  const sockets = new Set<Socket>();
  const sessions = new Set<Http2Session>();
  // Connections that have not sent a byte yet: nothing is in flight on them, so shutdown may drop
  // them at once instead of waiting for the client.
  const silent = new Set<Socket>();

  const h1 = http.createServer(
    { keepAliveTimeout: opts.keepAliveTimeoutMs, headersTimeout: opts.headersTimeoutMs },
    opts.onRequest,
  );
  h1.requestTimeout = 0; // long-lived NDJSON streams are legitimate; handlers bound their own time
  const h2 = http2.createServer({
    settings: {
      maxConcurrentStreams: opts.maxConcurrentStreams,
      maxHeaderListSize: opts.maxHeaderListSize,
    },
    maxSessionMemory: 32,
  });
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    session.on("error", () => session.destroy());
  });
  h2.on(
    "stream",
    (
      stream: ServerHttp2Stream,
      headers: IncomingHttpHeaders,
      _flags: number,
      rawHeaders: string[],
    ) => {
      stream.on("error", ignore);
      if (opts.onStream?.(stream, headers)) return;
      dispatchToCompat(opts.onRequest, stream, headers, rawHeaders);
    },
  );
  // Both servers are fed sockets by hand, never listen; they still need to believe they are
  // listening, or fastify and keep-alive bookkeeping misbehave.
  h1.emit("listening");

  const onSocket = (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", ignore);
  };
  let server: net.Server;
  if (opts.tls) {
    server = tls.createServer({
      cert: opts.tls.cert,
      key: opts.tls.key,
      ALPNProtocols: ["h2", "http/1.1"],
    });
    server.on("connection", onSocket);
    server.on("secureConnection", (socket: tls.TLSSocket) => {
      socket.on("error", ignore);
      (socket.alpnProtocol === "h2" ? h2 : h1).emit("connection", socket);
    });
    server.on("tlsClientError", ignore);
  } else {
    server = net.createServer((socket) => {
      onSocket(socket);
      silent.add(socket);
      socket.once("close", () => silent.delete(socket));
      sniffProtocol(socket, opts.headersTimeoutMs, (isH2) => {
        silent.delete(socket);
        (isH2 ? h2 : h1).emit("connection", socket);
        // The HTTP/1.1 parser reads new bytes straight from the socket's handle; the bytes we
        // sniffed and put back are in the stream's buffer and flow to it once resumed.
        if (!isH2) socket.resume();
      });
    });
  }

  return {
    server,
    listen: (port, host) =>
      new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          resolve(server.address() as AddressInfo);
        });
      }),
    close: (timeoutMs) => {
      for (const socket of silent) socket.destroy();
      return closeGracefully(server, h1, sessions, sockets, timeoutMs);
    },
  };
}

/**
 * Reads the first bytes of a cleartext connection, puts them back, and says whether the client
 * opened with the HTTP/2 preface. A client that sends nothing in time is disconnected.
 */
function sniffProtocol(socket: Socket, timeoutMs: number, route: (isH2: boolean) => void): void {
  let seen: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  const onData = (chunk: Buffer) => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, sniffLength);
    const isH2Prefix = seen.subarray(0, n).equals(h2Preface.subarray(0, n));
    if (isH2Prefix && n < sniffLength) return; // too few bytes to tell yet
    clearTimeout(timer);
    socket.off("data", onData);
    socket.off("close", onClose);
    socket.pause();
    socket.unshift(seen);
    route(isH2Prefix);
  };
  const onClose = () => clearTimeout(timer);
  socket.on("data", onData);
  socket.once("close", onClose);
}

/** What Node's own HTTP/2 server does for a stream when a 'request' listener is installed. */
function dispatchToCompat(
  onRequest: HttpRequestHandler,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  rawHeaders: string[],
): void {
  const request = new http2.Http2ServerRequest(stream, headers, {}, rawHeaders);
  const response = new http2.Http2ServerResponse(stream);
  if (headers.expect === "100-continue") response.writeContinue();
  onRequest(request, response);
}

async function closeGracefully(
  server: net.Server,
  h1: http.Server,
  sessions: Set<Http2Session>,
  sockets: Set<Socket>,
  timeoutMs: number,
): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  for (const session of sessions) session.close();
  h1.closeIdleConnections();
  // An HTTP/1.1 connection that is busy now is closed once its response is done.
  const sweep = setInterval(() => h1.closeIdleConnections(), 50);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, timeoutMs);
  });
  await Promise.race([closed, timedOut]);
  clearInterval(sweep);
  clearTimeout(timer);
  for (const session of sessions) session.destroy();
  for (const socket of sockets) socket.destroy();
  h1.close();
}

function ignore(): void {}
