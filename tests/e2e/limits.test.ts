// The listener's and the watches' limits, each set low and crossed through a real node: request
// headers (HTTP/1.1 and HTTP/2), streams per HTTP/2 connection, connections in all and per client
// address, and watches in all and per client address on REST and gRPC.
import http2 from "node:http2";
import net from "node:net";
import type * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it, vi } from "vitest";
import { RegistryService } from "../../gen/orchestrator/v1/registry_pb.js";
import { createGrpcJsClient } from "../../src/clients/grpc-js-client.js";
import {
  metricValue,
  type RunningOrchestrator,
  startOrchestrator,
} from "../support/orchestrator.js";

let node: RunningOrchestrator | undefined;
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await node?.close();
  node = undefined;
});

describe("request headers", () => {
  it("answers 431 on HTTP/1.1 past HEADER_LIMIT_BYTES, and serves smaller ones", async () => {
    node = await startOrchestrator({ env: { HEADER_LIMIT_BYTES: "2048" } });
    const big = await fetch(`${node.url}/health`, { headers: { "x-filler": "a".repeat(4096) } });
    expect(big.status).toBe(431);
    const small = await fetch(`${node.url}/health`, { headers: { "x-filler": "a".repeat(512) } });
    expect(small.status).toBe(200);
  });

  it("refuses an HTTP/2 stream past it, and keeps serving", async () => {
    node = await startOrchestrator({ env: { HEADER_LIMIT_BYTES: "2048" } });
    const session = http2.connect(node.url);
    session.on("error", () => {});
    cleanups.push(() => void session.destroy());
    const status = (headers: http2.OutgoingHttpHeaders) =>
      new Promise<number | string>((resolve) => {
        const stream = session.request({ ":path": "/health", ...headers });
        stream.on("response", (h) => resolve(h[":status"] ?? 0));
        stream.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"));
        stream.on("close", () => resolve(`closed ${stream.rstCode}`));
        stream.resume();
        stream.end();
      });
    expect(await status({ "x-filler": "a".repeat(4096) })).toBe(431);
    const fresh = http2.connect(node.url);
    cleanups.push(() => void fresh.destroy());
    const ok = await new Promise((resolve, reject) => {
      const stream = fresh.request({ ":path": "/health", "x-filler": "a".repeat(512) });
      stream.on("response", (h) => resolve(h[":status"]));
      stream.on("error", reject);
      stream.resume();
      stream.end();
    });
    expect(ok).toBe(200);
  });
});

describe("HTTP/2 streams", () => {
  it("announces HTTP2_MAX_CONCURRENT_STREAMS to the client", async () => {
    node = await startOrchestrator({ env: { HTTP2_MAX_CONCURRENT_STREAMS: "7" } });
    const session = http2.connect(node.url);
    cleanups.push(() => void session.destroy());
    const settings = await new Promise<http2.Settings>((resolve) =>
      session.once("remoteSettings", resolve),
    );
    expect(settings.maxConcurrentStreams).toBe(7);
  });
});

/** A raw TCP connection to the node, open until closed; `closed` settles when the node closes it. */
async function connect(port: number): Promise<{ socket: net.Socket; closed: Promise<void> }> {
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => {});
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  cleanups.push(() => void socket.destroy());
  return { socket, closed };
}

describe("connections", () => {
  it("closes a client's connection past MAX_CONNECTIONS_PER_CLIENT, and takes one again after", async () => {
    node = await startOrchestrator({ env: { MAX_CONNECTIONS_PER_CLIENT: "3" } });
    const port = node.port;
    const held = [await connect(port), await connect(port), await connect(port)];
    const refused = await connect(port);
    await refused.closed; // closed by the node, without a byte of ours read
    // The held ones were not touched: one of them still gets an answer.
    const first = held[0];
    if (first === undefined) throw new Error("no connection held");
    const answer = new Promise<string>((resolve) =>
      first.socket.once("data", (data) => resolve(data.toString("latin1"))),
    );
    first.socket.write("GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
    expect(await answer).toMatch(/^HTTP\/1\.1 200/);
    for (const { socket } of held) socket.destroy();
    // Once the node has seen them close, the client may connect again.
    await vi.waitFor(async () => {
      expect((await fetch(`${node?.url}/health`)).status).toBe(200);
    });
    expect(
      await metricValue(node, "orchestrator_connections_refused_total", {
        reason: "max_connections_per_client",
      }),
      // One at least: a retry above may also have come before the node saw the others close.
    ).toBeGreaterThanOrEqual(1);
  });

  it("closes any connection past MAX_CONNECTIONS", async () => {
    node = await startOrchestrator({ env: { MAX_CONNECTIONS: "2" } });
    const port = node.port;
    const held = [await connect(port), await connect(port)];
    await (await connect(port)).closed;
    for (const { socket } of held) socket.destroy();
    await vi.waitFor(async () => {
      expect(
        (await fetch(`${node?.url}/health`, { headers: { connection: "close" } })).status,
      ).toBe(200);
    });
  });
});

/** Opens a REST watch; resolves with its status once the headers arrive. */
async function restWatch(url: string): Promise<{ status: number; body: string; close(): void }> {
  const controller = new AbortController();
  const response = await fetch(`${url}/registry/watch`, { signal: controller.signal });
  const close = () => controller.abort();
  cleanups.push(close);
  const body = response.status === 200 ? "" : await response.text();
  return { status: response.status, body, close };
}

describe("watches", () => {
  it("refuses a client's watch past WATCH_MAX_SUBSCRIBERS_PER_CLIENT, and takes one after another closed", async () => {
    node = await startOrchestrator({ env: { WATCH_MAX_SUBSCRIBERS_PER_CLIENT: "2" } });
    const url = node.url;
    const first = await restWatch(url);
    const second = await restWatch(url);
    expect([first.status, second.status]).toEqual([200, 200]);
    const third = await restWatch(url);
    expect(third.status).toBe(429);
    expect(JSON.parse(third.body)).toMatchObject({
      code: "resource_exhausted",
      message: expect.stringContaining("this client address (2)"),
    });
    first.close();
    await vi.waitFor(async () => {
      const again = await restWatch(url);
      expect(again.status).toBe(200);
    });
    expect(
      await metricValue(node, "orchestrator_watches_refused_total", {
        limit: "per_client",
        method: "WatchServices",
      }),
    ).toBeGreaterThan(0);
  });

  it("refuses a watch past WATCH_MAX_SUBSCRIBERS on gRPC too", async () => {
    node = await startOrchestrator({ env: { WATCH_MAX_SUBSCRIBERS: "1" } });
    const client = createGrpcJsClient(RegistryService, node.address);
    cleanups.push(() => client.close());
    const held = new AbortController();
    cleanups.push(() => held.abort());
    const first = client.watchServices({}, { signal: held.signal })[Symbol.asyncIterator]();
    // The first watch is open once its first message (the current state) arrives.
    await first.next();
    const second = client.watchServices({})[Symbol.asyncIterator]();
    const refused = await second.next().catch((error: grpc.ServiceError) => error);
    expect((refused as grpc.ServiceError).code).toBe(8); // RESOURCE_EXHAUSTED
    expect((refused as grpc.ServiceError).details).toContain("too many watches open on this node");
  });
});
