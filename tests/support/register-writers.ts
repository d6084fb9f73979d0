// Clients that hammer POST /registry/register over keep-alive connections, each request with a
// name of its own, recording how every request ended: for the shutdown tests, which close a node
// under this load and then check that every request was answered or never reached the server.
import http from "node:http";
import http2 from "node:http2";

/** How one request ended. */
export interface WriteOutcome {
  /** The name it registered. */
  readonly name: string;
  /** The HTTP status, when a whole response came back. */
  readonly status?: number;
  /** The response's `connection` header (HTTP/1.1), "" when absent. */
  readonly connection?: string;
  /**
   * Why no response came: the error's code (`ECONNREFUSED`, `ECONNRESET`, ...), or for an HTTP/2
   * stream the server reset, `RST_STREAM <code name>`.
   */
  readonly error?: string;
}

/** One HTTP/2 connection of a writer, as the client saw it end. */
export interface SessionRecord {
  /** Whether the connection was open when the test said so (`markDraining`). */
  openWhenDraining: boolean;
  /** Client-side events in order: "goaway", "close". */
  readonly events: string[];
}

/** A running set of writers. */
export interface RegisterWriters {
  /** Every writer's outcomes, in order. */
  readonly outcomes: readonly (readonly WriteOutcome[])[];
  /** Resolves when every writer has stopped: each stops at its first request that failed. */
  readonly done: Promise<void>;
  /** Requests answered with a 2xx so far, across writers. */
  acknowledged(): number;
  /** HTTP/2 only: every connection the writers opened. */
  readonly sessions: readonly SessionRecord[];
  /** HTTP/2 only: notes which connections are open now. */
  markDraining(): void;
}

// Nothing listens on port 1: the health probes of these entries fail at once.
const body = (name: string) => JSON.stringify({ name, base_url: "http://127.0.0.1:1" });

function errorCode(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" ? code : String(error);
}

/**
 * Runs `count` writers, each sending its next request as soon as the last one ended, until one
 * fails (no response) in a way that `retryable` does not accept: what a busy client does while
 * the node it talks to shuts down.
 */
function runWriters(
  count: number,
  send: (writer: number, name: string) => Promise<WriteOutcome>,
  retryable: (error: string) => boolean,
): Pick<RegisterWriters, "outcomes" | "done" | "acknowledged"> {
  const outcomes: WriteOutcome[][] = Array.from({ length: count }, () => []);
  const done = Promise.all(
    outcomes.map(async (own, writer) => {
      for (let n = 0; ; n++) {
        const outcome = await send(writer, `writer-${writer}-${n}`);
        own.push(outcome);
        if (outcome.error !== undefined && !retryable(outcome.error)) return;
      }
    }),
  ).then(() => undefined);
  const acknowledged = () =>
    outcomes.flat().filter((o) => o.status !== undefined && o.status < 300).length;
  return { outcomes, done, acknowledged };
}

/**
 * `count` writers over HTTP/1.1 through one `http.Agent` with keep-alive and `count` sockets:
 * each writer reuses a pooled connection as long as the server keeps it open.
 */
export function startHttp1Writers(port: number, count = 8): RegisterWriters {
  const agent = new http.Agent({ keepAlive: true, maxSockets: count });
  const send = (_writer: number, name: string) =>
    new Promise<WriteOutcome>((resolve) => {
      const payload = body(name);
      const request = http.request(
        {
          host: "127.0.0.1",
          port,
          method: "POST",
          path: "/registry/register",
          agent,
          headers: {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(payload),
          },
        },
        (response) => {
          response.resume();
          response.on("end", () =>
            resolve({
              name,
              status: response.statusCode ?? 0,
              connection: response.headers.connection ?? "",
            }),
          );
          response.on("error", (error) => resolve({ name, error: errorCode(error) }));
        },
      );
      request.on("error", (error) => resolve({ name, error: errorCode(error) }));
      request.end(payload);
    });
  // Any failure ends a writer: over HTTP/1.1 a request without an answer may have been applied.
  const writers = runWriters(count, send, () => false);
  void writers.done.finally(() => agent.destroy());
  return { ...writers, sessions: [], markDraining() {} };
}

/**
 * HTTP/2 failures that say the request never reached the service, so that a client may send it
 * again (elsewhere): a stream the server refused after its GOAWAY, or one the client would not
 * open on a connection that is going away.
 */
export const h2NeverSent: readonly string[] = Object.freeze([
  "RST_STREAM REFUSED_STREAM",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_INVALID_SESSION",
]);

/**
 * `count` writers over cleartext HTTP/2, each on a connection of its own; a writer whose
 * connection got a GOAWAY or closed opens a new one for its next request, and goes on after a
 * request that {@link h2NeverSent} says was never sent.
 */
export function startH2cWriters(origin: string, count = 8): RegisterWriters {
  const sessions: SessionRecord[] = [];
  const open: { session: http2.ClientHttp2Session; record: SessionRecord }[] = [];
  const current: (http2.ClientHttp2Session | undefined)[] = [];
  const connect = (): Promise<http2.ClientHttp2Session> =>
    new Promise((resolve, reject) => {
      const session = http2.connect(origin);
      const record: SessionRecord = { openWhenDraining: false, events: [] };
      const entry = { session, record };
      session.on("goaway", () => record.events.push("goaway"));
      session.once("close", () => {
        record.events.push("close");
        open.splice(open.indexOf(entry), 1);
      });
      session.once("connect", () => {
        session.off("error", reject);
        session.on("error", () => {}); // its streams report what matters
        sessions.push(record);
        open.push(entry);
        resolve(session);
      });
      session.once("error", reject);
    });
  const usable = (session: http2.ClientHttp2Session | undefined) =>
    session !== undefined && !session.closed && !session.destroyed;
  const send = async (writer: number, name: string): Promise<WriteOutcome> => {
    let session = current[writer];
    if (!usable(session)) {
      try {
        session = await connect();
      } catch (error) {
        return { name, error: errorCode(error) };
      }
      current[writer] = session;
    }
    return exchange(session as http2.ClientHttp2Session, name);
  };
  const writers = runWriters(count, send, (error) => h2NeverSent.includes(error));
  void writers.done.finally(() => {
    for (const { session } of open) session.close();
  });
  return {
    ...writers,
    sessions,
    markDraining() {
      for (const { record } of open) record.openWhenDraining = true;
    },
  };
}

function exchange(session: http2.ClientHttp2Session, name: string): Promise<WriteOutcome> {
  return new Promise((resolve) => {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request({
        ":method": "POST",
        ":path": "/registry/register",
        "content-type": "application/json",
      });
    } catch (error) {
      resolve({ name, error: errorCode(error) }); // the session is closing: nothing was sent
      return;
    }
    let status = 0;
    let ended = false;
    let failure = "";
    stream.on("response", (headers) => {
      status = Number(headers[":status"] ?? 0);
    });
    stream.resume();
    stream.on("end", () => {
      ended = true;
    });
    stream.on("error", (error) => {
      failure = errorCode(error);
    });
    stream.on("close", () => {
      if (ended) resolve({ name, status });
      else if (stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) {
        resolve({ name, error: "RST_STREAM REFUSED_STREAM" });
      } else if (stream.rstCode) resolve({ name, error: `RST_STREAM ${stream.rstCode}` });
      else resolve({ name, error: failure || "closed without a response" });
    });
    stream.end(body(name));
  });
}
