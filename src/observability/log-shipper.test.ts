import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Clock } from "../clock.js";
import { createHttpClient } from "../http-client/http-client.js";
import {
  type CollectorRecord,
  CollectorResponseError,
  createLogShipper,
  type LogDropReason,
  type LogShipper,
  type LogShipperOptions,
  logShipperDefaults,
  toCollectorRecord,
} from "./log-shipper.js";
import { createLogger, redactionCensor } from "./logger.js";

/**
 * How the loopback collector answers: "ok" 200 everywhere; "no-batch" 404 on /logs/batch like a
 * collector without the batch endpoint; "hang" never answers; "fail" 500 everywhere.
 */
type CollectorMode = "ok" | "no-batch" | "hang" | "fail";

interface ReceivedRequest {
  method: string;
  path: string;
  contentType: string | undefined;
  body: unknown;
}

interface Collector {
  url: string;
  mode: CollectorMode;
  /** When true, answers to POST /logs wait in `held` until released. */
  holdSingles: boolean;
  held: ServerResponse[];
  requests: ReceivedRequest[];
  /** Records received, from /logs/batch items and single /logs bodies alike. */
  records(): CollectorRecord[];
  openConnections(): number;
  close(): Promise<void>;
}

async function startCollector(): Promise<Collector> {
  const sockets = new Set<Socket>();
  const collector: Collector = {
    url: "",
    mode: "ok",
    holdSingles: false,
    held: [],
    requests: [],
    records: () =>
      collector.requests.flatMap((request) =>
        request.path === "/logs/batch"
          ? (request.body as { items: CollectorRecord[] }).items
          : [request.body as CollectorRecord],
      ),
    openConnections: () => sockets.size,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const answer = (request: IncomingMessage, response: ServerResponse, body: unknown): void => {
    collector.requests.push({
      method: request.method ?? "",
      path: request.url ?? "",
      contentType: request.headers["content-type"],
      body,
    });
    if (collector.mode === "hang") return;
    if (collector.mode === "fail") {
      reply(response, 500, { detail: "boom" });
    } else if (collector.mode === "no-batch" && request.url === "/logs/batch") {
      reply(response, 404, { detail: "Not Found" });
    } else if (collector.holdSingles && request.url === "/logs") {
      collector.held.push(response);
    } else {
      reply(response, 200, { status: "ok" });
    }
  };
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () =>
      answer(request, response, JSON.parse(Buffer.concat(chunks).toString())),
    );
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  collector.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return collector;
}

function reply(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

/** A pino-shaped JSON line, as the logger would write it. */
function line(fields: Record<string, unknown>): string {
  return `${JSON.stringify({ level: "info", time: "2030-01-02T03:04:05.678Z", service: "orchestrator", pid: 42, hostname: "h", msg: "m", ...fields })}\n`;
}

describe("createLogShipper", () => {
  let collector: Collector;
  let shippers: LogShipper[];
  let drops: Array<[number, LogDropReason]>;
  let sendErrors: unknown[];

  const dropped = (reason: LogDropReason): number =>
    drops.filter(([, r]) => r === reason).reduce((sum, [count]) => sum + count, 0);

  function ship(options: Partial<LogShipperOptions> = {}): LogShipper {
    const shipper = createLogShipper({
      url: collector.url,
      service: "orchestrator",
      flushIntervalMs: 60_000,
      onDrop: (count, reason) => drops.push([count, reason]),
      onSendError: (error) => sendErrors.push(error),
      ...options,
    });
    shippers.push(shipper);
    return shipper;
  }

  beforeEach(async () => {
    collector = await startCollector();
    shippers = [];
    drops = [];
    sendErrors = [];
  });

  afterEach(async () => {
    await Promise.all(shippers.map((shipper) => shipper.close(500)));
    for (const response of collector.held) response.destroy();
    await collector.close();
    // Nothing the shipper opened is left behind.
    await vi.waitFor(() => expect(collector.openConnections()).toBe(0), { timeout: 10_000 });
  });

  it("posts batches to /logs/batch as {items} in the collector's record shape", async () => {
    const shipper = ship({ batchSize: 3 });

    shipper.stream.write(line({ level: "info", msg: "started", correlation_id: "c-1" }));
    shipper.stream.write(
      line({ level: "warn", msg: "slow", correlation_id: "c-2", node_id: "n1" }),
    );
    shipper.stream.write(
      line({ level: "error", msg: "failed", correlation_id: "c-3", err: { message: "x" } }),
    );

    await vi.waitFor(() => expect(collector.requests).toHaveLength(1), { timeout: 10_000 });
    const [request] = collector.requests;
    expect(request).toMatchObject({
      method: "POST",
      path: "/logs/batch",
      contentType: "application/json",
    });
    expect(request?.body).toEqual({
      items: [
        {
          service: "orchestrator",
          level: "info",
          message: "started",
          timestamp: "2030-01-02T03:04:05.678Z",
          context: { correlation_id: "c-1" },
        },
        {
          service: "orchestrator",
          level: "warning",
          message: "slow",
          timestamp: "2030-01-02T03:04:05.678Z",
          context: { correlation_id: "c-2", node_id: "n1" },
        },
        {
          service: "orchestrator",
          level: "error",
          message: "failed",
          timestamp: "2030-01-02T03:04:05.678Z",
          context: { correlation_id: "c-3", err: { message: "x" } },
        },
      ],
    });
    await vi.waitFor(() => expect(shipper.stats()).toEqual({ buffered: 0, sent: 3, dropped: 0 }), {
      timeout: 10_000,
    });
  });

  it("never sends from inside write: a full batch goes out on a later turn", async () => {
    let fetchCalls = 0;
    const client = createHttpClient({ maxAttempts: 1 });
    const shipper = ship({
      batchSize: 2,
      http: {
        get: client.get,
        request: (request) => {
          fetchCalls += 1;
          return client.request(request);
        },
      },
    });

    shipper.stream.write(line({ msg: "a" }));
    shipper.stream.write(line({ msg: "b" }));
    shipper.stream.write(line({ msg: "c" }));

    expect(fetchCalls).toBe(0);
    expect(shipper.stats().buffered).toBe(3);
    await vi.waitFor(
      () => expect(collector.records().map((r) => r.message)).toEqual(["a", "b", "c"]),
      { timeout: 10_000 },
    );
  });

  it("flushes a partial batch on the interval", async () => {
    const shipper = ship({ batchSize: 100, flushIntervalMs: 20 });

    shipper.stream.write(line({ msg: "lonely" }));

    await vi.waitFor(() => expect(collector.records().map((r) => r.message)).toEqual(["lonely"]), {
      timeout: 10_000,
    });
  });

  it("falls back to one POST /logs per record after a 404 on /logs/batch, and remembers it", async () => {
    collector.mode = "no-batch";
    const shipper = ship({ batchSize: 3 });

    for (const msg of ["a", "b", "c"]) shipper.stream.write(line({ msg }));
    await vi.waitFor(() => expect(shipper.stats().sent).toBe(3), { timeout: 10_000 });
    for (const msg of ["d", "e", "f"]) shipper.stream.write(line({ msg }));
    await vi.waitFor(() => expect(shipper.stats().sent).toBe(6), { timeout: 10_000 });

    expect(collector.requests.map((r) => r.path)).toEqual([
      "/logs/batch",
      ...Array(6).fill("/logs"),
    ]);
    const singles = collector.requests.slice(1);
    expect(singles.every((r) => r.contentType === "application/json")).toBe(true);
    expect(singles.map((r) => (r.body as CollectorRecord).message).sort()).toEqual([
      "a",
      "b",
      "c",
      "d",
      "e",
      "f",
    ]);
    expect(singles[0]?.body).toMatchObject({ service: "orchestrator", level: "info", context: {} });
    expect(shipper.stats()).toEqual({ buffered: 0, sent: 6, dropped: 0 });
    expect(drops).toEqual([]);
  });

  it("keeps at most 4 single-record requests in flight", async () => {
    collector.mode = "no-batch";
    collector.holdSingles = true;
    const shipper = ship({ batchSize: 10 });

    for (let i = 0; i < 10; i += 1) shipper.stream.write(line({ msg: `r${i}` }));

    for (const expected of [4, 4, 2]) {
      await vi.waitFor(() => expect(collector.held).toHaveLength(expected), { timeout: 10_000 });
      // Give a fifth request every chance to show up before checking it did not.
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(collector.held).toHaveLength(expected);
      for (const response of collector.held.splice(0)) reply(response, 200, { status: "ok" });
    }
    await vi.waitFor(() => expect(shipper.stats().sent).toBe(10), { timeout: 10_000 });
  });

  it("arms only an unref'd timer, so buffered records never keep the process alive", () => {
    const refedTimeouts = () =>
      process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const baseline = refedTimeouts();
    const shipper = ship({ batchSize: 100, flushIntervalMs: 60_000 });

    shipper.stream.write(line({ msg: "waiting" }));

    expect(shipper.stats().buffered).toBe(1);
    expect(refedTimeouts()).toBe(baseline);
  });

  it("drops and counts records beyond maxBufferedRecords without waiting", () => {
    collector.mode = "hang";
    const shipper = ship({ batchSize: 10, maxBufferedRecords: 50, timeoutMs: 200 });

    const results = Array.from({ length: 200 }, (_, i) =>
      shipper.stream.write(line({ msg: `r${i}` })),
    );

    // Counted synchronously: write never waited for the network.
    expect(results.every((result) => result === undefined)).toBe(true);
    expect(dropped("buffer_full")).toBe(150);
    expect(drops.every(([count]) => count === 1)).toBe(true);
    expect(shipper.stats()).toEqual({ buffered: 50, sent: 0, dropped: 150 });
  });

  it("drops and counts records beyond maxBufferedBytes, whatever their count", async () => {
    collector.mode = "hang";
    const shipper = ship({ batchSize: 1_000, maxBufferedBytes: 100_000, timeoutMs: 200 });
    const big = line({ msg: "x".repeat(10_000) });
    for (let i = 0; i < 50; i += 1) shipper.stream.write(big);
    // Nine lines of about 10 KB fit in 100,000 bytes; the rest are dropped at once.
    expect(shipper.stats().buffered).toBe(Math.floor(100_000 / big.length));
    expect(dropped("buffer_full")).toBe(50 - Math.floor(100_000 / big.length));
    // Once the held records are gone (their flush timed out), there is room again.
    await shipper.flush();
    expect(shipper.stats().buffered).toBe(0);
    shipper.stream.write(big);
    expect(shipper.stats().buffered).toBe(1);
  });

  it("keeps accepting writes while the collector hangs, then drops the flush after the timeout", async () => {
    collector.mode = "hang";
    const shipper = ship({ timeoutMs: 200 });

    for (let i = 0; i < 10_000; i += 1) {
      shipper.stream.write(line({ msg: `r${i}`, correlation_id: `c-${i}` }));
    }
    expect(shipper.stats().buffered).toBe(10_000);

    await vi.waitFor(() => expect(collector.requests).toHaveLength(1), { timeout: 10_000 });
    // The event loop still turns while the collector holds the request.
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(shipper.stats().sent).toBe(0);

    await vi.waitFor(() => expect(dropped("send_failed")).toBe(10_000), { timeout: 10_000 });
    // One timeout stops the flush: the other 99 batches are dropped without being tried.
    expect(collector.requests).toHaveLength(1);
    expect(sendErrors).toHaveLength(1);
    expect(sendErrors[0]).toMatchObject({ name: "OutboundError", kind: "timeout" });
    expect(shipper.stats()).toEqual({ buffered: 0, sent: 0, dropped: 10_000 });

    collector.mode = "ok";
    shipper.stream.write(line({ msg: "after" }));
    await shipper.flush();
    expect(shipper.stats().sent).toBe(1);
  });

  it("drops a batch the collector answers with 500, and still sends the next", async () => {
    collector.mode = "fail";
    const shipper = ship({ batchSize: 2 });

    for (let i = 0; i < 4; i += 1) shipper.stream.write(line({ msg: `r${i}` }));
    await shipper.flush();

    expect(collector.requests.map((r) => r.path)).toEqual(["/logs/batch", "/logs/batch"]);
    expect(drops).toEqual([
      [2, "send_failed"],
      [2, "send_failed"],
    ]);
    expect(sendErrors).toHaveLength(2);
    expect(sendErrors[0]).toBeInstanceOf(CollectorResponseError);
    expect(sendErrors[0]).toMatchObject({ status: 500, path: "/logs/batch" });
    expect(shipper.stats()).toEqual({ buffered: 0, sent: 0, dropped: 4 });
  });

  it("counts an unreachable collector as send_failed", async () => {
    const closed = await startCollector();
    await closed.close();
    const shipper = ship({ url: closed.url, batchSize: 5 });

    for (let i = 0; i < 7; i += 1) shipper.stream.write(line({ msg: `r${i}` }));
    await shipper.flush();

    expect(dropped("send_failed")).toBe(7);
    expect(sendErrors).toHaveLength(1);
    expect(shipper.stats()).toEqual({ buffered: 0, sent: 0, dropped: 7 });
  });

  it("does not overlap flushes: records written meanwhile go in the next one", async () => {
    const shipper = ship({ batchSize: 100 });

    shipper.stream.write(line({ msg: "first" }));
    const first = shipper.flush();
    shipper.stream.write(line({ msg: "second" }));
    const second = shipper.flush();
    const third = shipper.flush();
    await Promise.all([first, second, third]);

    expect(
      collector.requests.map((r) =>
        (r.body as { items: CollectorRecord[] }).items.map((i) => i.message),
      ),
    ).toEqual([["first"], ["second"]]);
  });

  it("ships the remainder on close and ignores writes after it", async () => {
    const shipper = ship({ batchSize: 100 });

    for (const msg of ["x", "y", "z"]) shipper.stream.write(line({ msg }));
    await shipper.close();
    shipper.stream.write(line({ msg: "late" }));

    expect(collector.records().map((r) => r.message)).toEqual(["x", "y", "z"]);
    expect(shipper.stats()).toEqual({ buffered: 0, sent: 3, dropped: 0 });
  });

  it("resolves close after its timeout when the collector hangs, dropping what was in flight", async () => {
    collector.mode = "hang";
    const shipper = ship({ timeoutMs: 60_000 });

    shipper.stream.write(line({ msg: "stuck" }));
    await shipper.close(100);

    await vi.waitFor(() => expect(dropped("send_failed")).toBe(1), { timeout: 10_000 });
    expect(shipper.stats()).toEqual({ buffered: 0, sent: 0, dropped: 1 });
  });

  it("skips lines that are not JSON objects, and survives throwing callbacks", async () => {
    const shipper = ship({
      maxBufferedRecords: 1,
      onDrop: () => {
        throw new Error("callback bug");
      },
    });

    expect(() => {
      shipper.stream.write("not json\n");
      shipper.stream.write("[1,2]\n");
      shipper.stream.write("null\n");
      shipper.stream.write(line({ msg: "kept" }));
      shipper.stream.write(line({ msg: "over the limit" }));
    }).not.toThrow();
    await shipper.flush();

    expect(collector.records().map((r) => r.message)).toEqual(["kept"]);
    expect(shipper.stats()).toEqual({ buffered: 0, sent: 1, dropped: 1 });
  });

  it("sends what a logger made with the shipper logs, redacted, while still writing locally", async () => {
    const shipper = ship();
    const local: string[] = [];
    const logger = createLogger({
      level: "info",
      service: "orchestrator",
      nodeId: "node-7",
      version: "9.9.9",
      destination: { write: (l: string) => void local.push(l) },
      shipper,
    });

    logger.debug("below the level");
    logger.info(
      {
        correlation_id: "corr-42",
        authorization: "Bearer abc",
        user: { password: "hunter2", name: "ann" },
      },
      "request served",
    );
    await shipper.close();

    expect(local).toHaveLength(1);
    expect(local[0]).toContain('"msg":"request served"');
    expect(local[0]).not.toContain("hunter2");
    const records = collector.records();
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      service: "orchestrator",
      level: "info",
      message: "request served",
      context: {
        correlation_id: "corr-42",
        node_id: "node-7",
        version: "9.9.9",
        authorization: redactionCensor,
        user: { password: redactionCensor, name: "ann" },
      },
    });
    expect(Number.isNaN(Date.parse(records[0]?.timestamp ?? ""))).toBe(false);
    expect(JSON.stringify(records)).not.toContain("Bearer abc");
  });
});

describe("createLogShipper options", () => {
  it("merges over frozen defaults without touching the caller's object", async () => {
    const options: LogShipperOptions = Object.freeze({
      url: "http://127.0.0.1:9",
      service: "s",
      batchSize: 7,
    });

    const shipper = createLogShipper(options);
    await shipper.close(10);

    expect(options).toEqual({ url: "http://127.0.0.1:9", service: "s", batchSize: 7 });
    expect(Object.isFrozen(logShipperDefaults)).toBe(true);
    expect(logShipperDefaults).toMatchObject({
      batchSize: 100,
      flushIntervalMs: 1000,
      maxBufferedRecords: 10_000,
      timeoutMs: 5000,
    });
  });

  it("rejects a bad url or size", () => {
    expect(() => createLogShipper({ url: "not a url", service: "s" })).toThrow(TypeError);
    expect(() => createLogShipper({ url: "ftp://host", service: "s" })).toThrow(TypeError);
    expect(() => createLogShipper({ url: "http://host", service: "s", batchSize: 0 })).toThrow(
      RangeError,
    );
    expect(() => createLogShipper({ url: "http://host", service: "s", timeoutMs: -1 })).toThrow(
      RangeError,
    );
  });

  it("keeps a base url's path prefix", async () => {
    const urls: string[] = [];
    const shipper = createLogShipper({
      url: "http://collector.test/prefix/",
      service: "s",
      // A client that answers without I/O (collector.test does not exist): what is under test
      // is the URL the shipper asks for.
      http: {
        get: () => Promise.reject(new Error("not used")),
        request: async (request) => {
          urls.push(request.url);
          return {
            status: 200,
            headers: new Headers(),
            body: Buffer.from("{}"),
            url: request.url,
            elapsedMs: 0,
          };
        },
      },
    });
    shipper.stream.write(line({}));
    await shipper.close();

    expect(urls).toEqual(["http://collector.test/prefix/logs/batch"]);
  });
});

describe("toCollectorRecord", () => {
  const clock: Clock = { now: () => Date.UTC(2031, 0, 1), monotonic: () => 0 };

  it("maps pino's numeric levels and epoch times, and fills a missing time from the clock", () => {
    expect(toCollectorRecord('{"level":40,"time":0,"msg":"w"}', "s", clock)).toEqual({
      service: "s",
      level: "warning",
      message: "w",
      timestamp: "1970-01-01T00:00:00.000Z",
      context: {},
    });
    expect(toCollectorRecord('{"level":"fatal","a":1}', "s", clock)).toEqual({
      service: "s",
      level: "fatal",
      message: "",
      timestamp: "2031-01-01T00:00:00.000Z",
      context: { a: 1 },
    });
  });

  it("keeps a __proto__ field as data", () => {
    const record = toCollectorRecord('{"msg":"m","__proto__":{"polluted":true}}', "s", clock);

    expect(Object.getPrototypeOf(record?.context)).toBe(Object.prototype);
    expect(Object.keys(record?.context ?? {})).toEqual(["__proto__"]);
  });
});
