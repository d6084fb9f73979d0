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
import { OpenCounts } from "../open-counts.js";

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
  /**
   * While closing: how long an HTTP/1.1 connection with nothing in flight (or a connection that
   * has not sent a byte) is kept open for one more request, which is answered with
   * `Connection: close`, before it is closed. A busy keep-alive client thus learns from an answer
   * that it must reconnect, instead of having its connection closed under a request it is
   * sending. Default 1000 ms.
   */
  drainKeepAliveMs?: number;
  /** Time a client has to send request headers, and to send its first bytes. Default 10000 ms. */
  headersTimeoutMs?: number;
  /** Concurrent streams per HTTP/2 connection. Default 1000. */
  maxConcurrentStreams?: number;
  /**
   * Largest request header block accepted, in bytes: past it, 431 (HTTP/1.1 then closes the
   * connection; see `refuseUnreadable`). Default 16384 (Node's HTTP/1.1 default).
   */
  maxHeaderBytes?: number;
  /** Open connections in all; a connection past it is closed at once. Default 10000. */
  maxConnections?: number;
  /** Open connections from one client address; one past it is closed at once. Default 256. */
  maxConnectionsPerClient?: number;
  /** Told of each connection closed at once for a limit. Default none. */
  onRefused?: (reason: ConnectionRefusal) => void;
  /**
   * The answer to an HTTP/1.1 request Node's parser cannot read (a head over `maxHeaderBytes`,
   * a malformed request line), given the parser's error: its status and JSON body. The
   * connection is closed after it. Default: Node's own answer, a status with no body.
   */
  refuseUnreadable?: (error: NodeJS.ErrnoException) => { status: number; body: string };
}

/** Why a connection was closed as soon as it was accepted. */
export type ConnectionRefusal = "max_connections" | "max_connections_per_client";

const defaults = Object.freeze({
  keepAliveTimeoutMs: 5_000,
  drainKeepAliveMs: 1_000,
  headersTimeoutMs: 10_000,
  maxConcurrentStreams: 1_000,
  maxHeaderBytes: 16_384,
  maxConnections: 10_000,
  maxConnectionsPerClient: 256,
});

/** One TCP (or TLS) port that speaks HTTP/1.1 and HTTP/2 at once. */
export interface OnePortListener {
  /** The socket server; fastify's serverFactory returns it. */
  readonly server: net.Server;
  listen(port: number, host: string): Promise<AddressInfo>;
  /**
   * Drains the port: stops accepting connections; sends HTTP/2 clients a GOAWAY (streams already
   * open finish, newer ones are refused, which tells the client they were not processed); answers
   * every HTTP/1.1 request still arriving, and the requests in flight, with `Connection: close`,
   * closing each connection after that answer; closes connections idle for `drainKeepAliveMs`.
   * Resolves once every connection is closed or `timeoutMs` has passed, after which the remaining
   * connections are destroyed.
   */
  close(timeoutMs: number): Promise<void>;
}

/** An HTTP/1.1 connection, as draining sees it. */
interface Http1Connection {
  /** Responses not finished yet, oldest first: several only when the client pipelines. */
  readonly pending: ServerResponse[];
  /** When (monotonic ms) its last response finished, or it was handed over; for idle ones. */
  idleSince: number;
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
  // Connections that have not sent a byte yet, with when they were accepted (monotonic ms).
  const silent = new Map<Socket, number>();
  const h1Connections = new Map<Socket, Http1Connection>();
  let draining = false;

  const h1 = http.createServer(
    {
      keepAliveTimeout: opts.keepAliveTimeoutMs,
      headersTimeout: opts.headersTimeoutMs,
      maxHeaderSize: opts.maxHeaderBytes,
    },
    (request, response) => {
      const connection = h1Connections.get(request.socket);
      if (connection !== undefined && !trackResponse(connection, response, draining)) return;
      opts.onRequest(request, response);
    },
  );
  h1.requestTimeout = 0; // long-lived NDJSON streams are legitimate; handlers bound their own time
  const refuseUnreadable = opts.refuseUnreadable;
  if (refuseUnreadable) {
    h1.on("clientError", (error: NodeJS.ErrnoException, socket: Socket) =>
      answerUnreadable(socket, refuseUnreadable(error)),
    );
  }
  const h2 = http2.createServer({
    settings: {
      maxConcurrentStreams: opts.maxConcurrentStreams,
      maxHeaderListSize: opts.maxHeaderBytes,
    },
    maxSessionMemory: 32,
  });
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    session.on("error", () => session.destroy());
    if (draining) session.close(); // a connection that was accepted before the port closed
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
      // nghttp2 announces SETTINGS_MAX_HEADER_LIST_SIZE but does not enforce it on what it
      // receives, so the limit is applied here, as HTTP/1.1 applies it: 431.
      if (headerListSize(rawHeaders) > opts.maxHeaderBytes) {
        stream.respond({ ":status": 431 }, { endStream: true });
        return;
      }
      if (opts.onStream?.(stream, headers)) return;
      dispatchToCompat(opts.onRequest, stream, headers, rawHeaders);
    },
  );
  // Both servers are fed sockets by hand, never listen; they still need to believe they are
  // listening, or fastify and keep-alive bookkeeping misbehave.
  h1.emit("listening");

  const perClient = new OpenCounts();
  /** Tracks a new connection; false when a limit closed it (nothing more is done with it). */
  const onSocket = (socket: Socket): boolean => {
    socket.on("error", ignore);
    const address = socket.remoteAddress ?? "";
    const fromClient = perClient.of(address);
    const refusal: ConnectionRefusal | undefined =
      sockets.size >= opts.maxConnections
        ? "max_connections"
        : fromClient >= opts.maxConnectionsPerClient
          ? "max_connections_per_client"
          : undefined;
    if (refusal !== undefined) {
      // Closed before a byte is read: the client sees a reset connection, nothing was processed.
      socket.destroy();
      opts.onRefused?.(refusal);
      return false;
    }
    sockets.add(socket);
    perClient.open(address);
    socket.once("close", () => {
      sockets.delete(socket);
      perClient.close(address);
    });
    return true;
  };
  const toH1 = (socket: Socket) => {
    h1Connections.set(socket, { pending: [], idleSince: performance.now() });
    socket.once("close", () => h1Connections.delete(socket));
    h1.emit("connection", socket);
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
      if (socket.destroyed) return; // refused by onSocket
      socket.on("error", ignore);
      if (socket.alpnProtocol === "h2") h2.emit("connection", socket);
      else toH1(socket);
    });
    server.on("tlsClientError", ignore);
  } else {
    server = net.createServer((socket) => {
      if (!onSocket(socket)) return;
      silent.set(socket, performance.now());
      socket.once("close", () => silent.delete(socket));
      sniffProtocol(socket, opts.headersTimeoutMs, (isH2) => {
        silent.delete(socket);
        if (isH2) {
          h2.emit("connection", socket);
          return;
        }
        toH1(socket);
        // The HTTP/1.1 parser reads new bytes straight from the socket's handle; the bytes we
        // sniffed and put back are in the stream's buffer and flow to it once resumed.
        socket.resume();
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
      draining = true;
      for (const connection of h1Connections.values()) closeAfterNewest(connection.pending);
      // Idle long enough that no request is on its way: closing it now drops nothing.
      const closeIdle = () => {
        const idleSince = performance.now() - opts.drainKeepAliveMs;
        for (const [socket, acceptedAt] of silent) if (acceptedAt <= idleSince) socket.destroy();
        for (const [socket, connection] of h1Connections) {
          if (connection.pending.length === 0 && connection.idleSince <= idleSince) {
            socket.destroy();
          }
        }
      };
      return closeGracefully(server, h1, sessions, sockets, closeIdle, timeoutMs);
    },
  };
}

/** A header list's size as RFC 9113 counts it: each field's name and value, plus 32 bytes. */
function headerListSize(rawHeaders: readonly string[]): number {
  let size = 0;
  for (const field of rawHeaders) size += field.length + 16; // name and value: 32 per pair
  return size;
}

/**
 * Notes a new HTTP/1.1 response on its connection until it is done; while draining, makes it
 * the one that closes the connection. Returns false when the request must not be served: the
 * client pipelined it behind an answer that already said `Connection: close`, so it will retry
 * it, and serving it too would apply it twice or without an answer.
 */
function trackResponse(
  connection: Http1Connection,
  response: ServerResponse,
  draining: boolean,
): boolean {
  const { pending } = connection;
  if (draining && pending.some((earlier) => earlier.headersSent && !earlier.shouldKeepAlive)) {
    return false;
  }
  pending.push(response);
  response.once("close", () => {
    pending.splice(pending.indexOf(response), 1);
    if (pending.length === 0) connection.idleSince = performance.now();
  });
  if (draining) closeAfterNewest(pending);
  return true;
}

/** Responses that say `Connection: close` because of draining, not because of their request. */
const closedByDrain = new WeakSet<ServerResponse>();

/**
 * Makes the newest response of a connection say `Connection: close` (Node then closes the
 * connection once it is sent); an earlier one this made so gets its keep-alive back, since the
 * client pipelined another request behind it. Responses whose headers are out are left alone.
 */
function closeAfterNewest(pending: readonly ServerResponse[]): void {
  const newest = pending.at(-1);
  for (const response of pending) {
    if (response.headersSent) continue;
    if (response === newest) {
      if (response.shouldKeepAlive) closedByDrain.add(response);
      response.shouldKeepAlive = false;
    } else if (closedByDrain.delete(response)) {
      response.shouldKeepAlive = true;
    }
  }
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

/**
 * Answers a request the HTTP/1.1 parser gave up on, as Node's default does (only when no answer
 * has started on the connection: anything else would corrupt it), then closes the connection:
 * the parser cannot resume after an error.
 */
function answerUnreadable(socket: Socket, refusal: { status: number; body: string }): void {
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (!socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const head = [
    `HTTP/1.1 ${refusal.status} ${http.STATUS_CODES[refusal.status] ?? "Bad Request"}`,
    "content-type: application/json; charset=utf-8",
    `content-length: ${Buffer.byteLength(refusal.body)}`,
    "connection: close",
  ];
  socket.end(`${head.join("\r\n")}\r\n\r\n${refusal.body}`, () => socket.destroy());
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
  closeIdle: () => void,
  timeoutMs: number,
): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  for (const session of sessions) session.close();
  closeIdle();
  // A connection busy now closes itself after its answer; one that stays idle is closed here.
  const sweep = setInterval(closeIdle, 50);
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
