import http2 from "node:http2";
import net from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createOnePortListener, type OnePortListener } from "./one-port-listener.js";

// Draining the one port, seen from raw client sockets: what each connection is told and when it
// is closed. The requests are plain HTTP/1.1 written by hand, so that a test can send one while
// the port drains, or pipeline two.

/** A promise and the function that resolves it. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve = () => {};
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** A client connection that keeps everything it receives. */
interface RawClient {
  readonly socket: net.Socket;
  /** Everything received so far. */
  text(): string;
  /** Resolves when the server has closed the connection. */
  readonly closed: Promise<void>;
}

async function connect(port: number): Promise<RawClient> {
  const socket = net.connect(port, "127.0.0.1");
  let text = "";
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => {
    text += chunk;
  });
  socket.on("error", () => {}); // a reset shows as a missing answer
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  return { socket, text: () => text, closed };
}

const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: test\r\n\r\n`;

/** The answers in `text`: each one's Connection header and body. */
function answers(text: string): { connection: string; body: string }[] {
  return text
    .split(/(?=HTTP\/1\.1 )/)
    .filter((part) => part !== "")
    .map((part) => {
      const [head = "", body = ""] = part.split("\r\n\r\n");
      const connection = /^connection: (.*)$/im.exec(head)?.[1] ?? "";
      return { connection: connection.toLowerCase(), body };
    });
}

const waitFor = <T>(check: () => T) => vi.waitFor(check, { timeout: 10_000, interval: 5 });

let listener: OnePortListener | undefined;
const clients: RawClient[] = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.socket.destroy();
  await listener?.close(0);
  listener = undefined;
});

/**
 * A listener on a free loopback port that answers `ok <path>`, holding the answer to `/held`
 * until the test releases it. Connections are never closed for being idle unless draining.
 */
async function startListener(drainKeepAliveMs: number) {
  const held = deferred();
  const requests: string[] = [];
  listener = createOnePortListener({
    onRequest: (request, response) => {
      requests.push(request.url ?? "");
      const answer = () => response.end(`ok ${request.url}`);
      if (request.url === "/held") void held.promise.then(answer);
      else answer();
    },
    keepAliveTimeoutMs: 600_000,
    drainKeepAliveMs,
  });
  const { port } = await listener.listen(0, "127.0.0.1");
  const open = async () => {
    const client = await connect(port);
    clients.push(client);
    return client;
  };
  return { listener, port, open, requests, release: held.resolve };
}

describe("draining HTTP/1.1 connections", () => {
  it("answers a request sent on an idle keep-alive connection while draining, with Connection: close, then closes it", async () => {
    const { listener, port, open } = await startListener(60_000);
    const client = await open();
    client.socket.write(get("/before"));
    await waitFor(() => expect(answers(client.text())).toHaveLength(1));

    const closing = listener.close(60_000);
    expect(await refusedOrConnected(port)).toBe("ECONNREFUSED");
    client.socket.write(get("/while-draining"));
    await client.closed;
    expect(answers(client.text())).toEqual([
      { connection: "keep-alive", body: "ok /before" },
      { connection: "close", body: "ok /while-draining" },
    ]);
    await closing;
  });

  it("answers the first request on a connection that had sent nothing yet when draining began", async () => {
    const { listener, open } = await startListener(60_000);
    const client = await open();
    const closing = listener.close(60_000);
    client.socket.write(get("/first"));
    await client.closed;
    expect(answers(client.text())).toEqual([{ connection: "close", body: "ok /first" }]);
    await closing;
  });

  it("closes a connection that stays idle for drainKeepAliveMs, without waiting for the timeout", async () => {
    const { listener, open } = await startListener(50);
    const client = await open();
    client.socket.write(get("/only"));
    await waitFor(() => expect(answers(client.text())).toHaveLength(1));
    const silent = await open();
    // The grace period is 60 s: only closing the idle connections lets this resolve.
    await listener.close(60_000);
    await client.closed;
    await silent.closed;
    expect(answers(client.text())).toEqual([{ connection: "keep-alive", body: "ok /only" }]);
    expect(silent.text()).toBe("");
  });

  it("tells a request in flight to close the connection, unless the client pipelined another behind it: the last answer closes it", async () => {
    const { listener, open, requests, release } = await startListener(60_000);
    const client = await open();
    client.socket.write(get("/held"));
    await waitFor(() => expect(requests).toEqual(["/held"]));

    const closing = listener.close(60_000);
    client.socket.write(get("/pipelined"));
    await waitFor(() => expect(requests).toEqual(["/held", "/pipelined"]));
    release();
    await client.closed;
    expect(answers(client.text())).toEqual([
      { connection: "keep-alive", body: "ok /held" },
      { connection: "close", body: "ok /pipelined" },
    ]);
    await closing;
  });
});

describe("draining HTTP/2 connections", () => {
  it("sends a GOAWAY on a connection that opens with the HTTP/2 preface after draining began", async () => {
    const { listener, open } = await startListener(60_000);
    const client = await open();
    const closing = listener.close(60_000);
    const session = http2.connect("http://test", { createConnection: () => client.socket });
    session.on("error", () => {});
    const events: string[] = [];
    session.on("goaway", () => events.push("goaway"));
    await new Promise<void>((resolve) => session.once("close", () => resolve()));
    expect(events[0]).toBe("goaway");
    await closing;
  });
});

/** Resolves with the error code of a new connection to `port`, or "connected". */
function refusedOrConnected(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve("connected");
    });
    socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"));
  });
}
