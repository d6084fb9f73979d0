import http from "node:http";
import http2 from "node:http2";
import { afterEach, describe, expect, it } from "vitest";
import { lineReader } from "../support/line-reader.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";

// GET /health/watch streams WatchHealth as newline-delimited JSON. A shutdown must end it with a
// NOT_SERVING line, and a client that leaves early must not hold the shutdown up.

interface WatchLine {
  readonly status: string;
  readonly timestamp: string;
}

function parseWatchLine(line: string | undefined): WatchLine {
  expect(line).toBeDefined();
  const parsed: unknown = JSON.parse(line ?? "");
  expect(Object.keys(parsed as object).sort()).toEqual(["status", "timestamp"]);
  const { status, timestamp } = parsed as WatchLine;
  expect(Number.isNaN(Date.parse(timestamp))).toBe(false);
  return { status, timestamp };
}

/** Finished WatchHealth calls over REST, as GET /metrics counts them. */
async function watchCallsEnded(node: RunningOrchestrator): Promise<number> {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  let ended = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith("orchestrator_rpc_handled_total{")) continue;
    if (!line.includes('method="WatchHealth"') || !line.includes('protocol="rest"')) continue;
    ended += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return ended;
}

/** Resolves once `count` WatchHealth calls over REST have ended; throws after `withinMs`. */
async function untilWatchCallsEnded(
  node: RunningOrchestrator,
  count: number,
  withinMs: number,
): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (Date.now() < deadline) {
    if ((await watchCallsEnded(node)) >= count) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`fewer than ${count} WatchHealth calls ended within ${withinMs} ms`);
}

describe("NDJSON stream: GET /health/watch", () => {
  let node: RunningOrchestrator | undefined;
  let session: http2.ClientHttp2Session | undefined;
  afterEach(async () => {
    session?.destroy();
    session = undefined;
    await node?.close();
    node = undefined;
  });

  // A long grace period: if a stream held the shutdown up, close() would not resolve within the
  // test's timeout, instead of being rescued by the grace period.
  const env = { SHUTDOWN_TIMEOUT_MS: "600000" };

  it("over HTTP/1.1: SERVING first, then NOT_SERVING on shutdown, then the end", async () => {
    node = await startOrchestrator({ env });
    const response = await fetch(`${node.url}/health/watch`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^application\/x-ndjson/);
    expect(response.headers.get("x-correlation-id")).toBeTruthy();
    expect(response.body).not.toBeNull();
    const lines = lineReader((response.body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]());

    expect(parseWatchLine(await lines.next()).status).toBe("SERVING_STATUS_SERVING");
    const closing = node.app.close();
    expect(parseWatchLine(await lines.next()).status).toBe("SERVING_STATUS_NOT_SERVING");
    expect(await lines.next()).toBeUndefined();
    await closing;
  });

  it("over HTTP/1.1: a client that leaves early ends the call and does not hold up close()", async () => {
    node = await startOrchestrator({ env });
    const request = http.get(`${node.url}/health/watch`);
    request.on("error", () => {});
    const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
      request.once("response", resolve);
      request.once("error", reject);
    });
    expect(response.statusCode).toBe(200);
    const lines = lineReader((response as AsyncIterable<Buffer>)[Symbol.asyncIterator]());
    expect(parseWatchLine(await lines.next()).status).toBe("SERVING_STATUS_SERVING");
    request.destroy();

    // The server noticed while still serving: the call ended without a shutdown to end it.
    await untilWatchCallsEnded(node, 1, 30_000);
    expect(node.app.status.state).toBe("SERVING");
    await node.app.close();
  });

  it("over h2c: SERVING first, then NOT_SERVING on shutdown, then the end", async () => {
    node = await startOrchestrator({ env });
    const client = http2.connect(node.url);
    session = client;
    client.on("error", () => {});
    const stream = client.request({ ":method": "GET", ":path": "/health/watch" });
    const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      stream.once("response", resolve);
      stream.once("error", reject);
    });
    expect(headers[":status"]).toBe(200);
    expect(headers["content-type"]).toMatch(/^application\/x-ndjson/);
    const lines = lineReader((stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]());

    expect(parseWatchLine(await lines.next()).status).toBe("SERVING_STATUS_SERVING");
    const closing = node.app.close();
    expect(parseWatchLine(await lines.next()).status).toBe("SERVING_STATUS_NOT_SERVING");
    expect(await lines.next()).toBeUndefined();
    await closing;
  });

  it("over h2c: a client that cancels its stream does not hold up close()", async () => {
    node = await startOrchestrator({ env });
    const stream = await watchOverH2c(node);
    const lines = lineReader((stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]());
    expect(parseWatchLine(await lines.next()).status).toBe("SERVING_STATUS_SERVING");
    stream.close(http2.constants.NGHTTP2_CANCEL);
    // The session itself stays open: close() must end it (GOAWAY) and resolve.
    await node.app.close();
  });

  // Node's Http2ServerResponse reports writableFinished === true once its stream is closed, also
  // after the client's RST_STREAM(CANCEL): a gateway that trusted it never noticed the client leave.
  it("over h2c: a client that cancels its stream ends the call on the server", async () => {
    node = await startOrchestrator({ env });
    const stream = await watchOverH2c(node);
    const lines = lineReader((stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]());
    expect(parseWatchLine(await lines.next()).status).toBe("SERVING_STATUS_SERVING");
    stream.close(http2.constants.NGHTTP2_CANCEL);
    await untilWatchCallsEnded(node, 1, 30_000);
    expect(node.app.status.state).toBe("SERVING");
  });

  async function watchOverH2c(running: RunningOrchestrator): Promise<http2.ClientHttp2Stream> {
    const client = http2.connect(running.url);
    session = client;
    client.on("error", () => {});
    const stream = client.request({ ":method": "GET", ":path": "/health/watch" });
    stream.on("error", () => {});
    const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      stream.once("response", resolve);
      stream.once("error", reject);
    });
    expect(headers[":status"]).toBe(200);
    return stream;
  }
});
