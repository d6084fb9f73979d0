import type { ServerResponse } from "node:http";
import { gzipSync } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import {
  type LoopbackHandler,
  type LoopbackServer,
  requestText,
  startLoopbackServer,
} from "../../tests/support/loopback-server.js";
import { createMemoryTraceStore } from "../tracing/memory-trace-store.js";
import { createTracing, outboundTracerOf } from "../tracing/tracing.js";
import { createHttpClient, isOutboundError, type OutboundError } from "./http-client.js";
import type { Resolve } from "./outbound-guard.js";

const servers: LoopbackServer[] = [];

async function startServer(handler: LoopbackHandler): Promise<LoopbackServer> {
  const started = await startLoopbackServer(handler);
  servers.push(started);
  return started;
}

afterEach(async () => {
  const closing = servers.splice(0);
  await Promise.all(closing.map((server) => server.close()));
  for (const server of closing) await until(() => server.openConnections() === 0);
});

async function rejection(promise: Promise<unknown>): Promise<OutboundError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  if (!isOutboundError(error)) throw new Error(`expected an OutboundError, got ${String(error)}`);
  return error;
}

async function until(condition: () => boolean): Promise<void> {
  for (let attempt = 0; attempt < 400 && !condition(); attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  expect(condition()).toBe(true);
}

/**
 * Streams `total` bytes in 64 KiB chunks, honouring back-pressure, and records how many were
 * written before the client went away.
 */
function streamBytes(response: ServerResponse, total: number, sent: { bytes: number }): void {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  let closed = false;
  response.on("close", () => {
    closed = true;
  });
  const pump = async () => {
    while (!closed && sent.bytes < total) {
      sent.bytes += chunk.length;
      if (!response.write(chunk)) {
        await drainOrClose(response);
      }
    }
    if (!closed) response.end();
  };
  void pump();
}

/** Waits for room in the socket or its end, leaving no listener behind (either may never come). */
function drainOrClose(response: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      response.off("drain", done);
      response.off("close", done);
      resolve();
    };
    response.on("drain", done);
    response.on("close", done);
  });
}

const fiftyMegabytes = 50 * 1024 * 1024;

describe("createHttpClient", () => {
  it("returns status, headers, body, final URL and elapsed time", async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(200, { "content-type": "application/json" });
      response.end('{"ok":true}');
    });
    const client = createHttpClient();

    const response = await client.get(`${server.url}/doc`);

    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/json");
    expect(response.body.toString("utf8")).toBe('{"ok":true}');
    expect(response.url).toBe(`${server.url}/doc`);
    expect(response.elapsedMs).toBeGreaterThanOrEqual(0);
    expect(server.requests[0]?.headers["user-agent"]).toBe("orchestrator");
  });

  it("reads a body whole whether its length is declared, chunked or content-encoded", async () => {
    // Varied bytes over many chunks: a misplaced chunk would show.
    const document = Buffer.from(Array.from({ length: 300_000 }, (_, i) => `${i},`).join(""));
    const gzipped = gzipSync(document);
    const server = await startServer((request, response) => {
      if (request.url === "/declared") {
        response.writeHead(200, { "content-length": String(document.length) });
        response.end(document);
      } else if (request.url === "/gzip") {
        response.writeHead(200, {
          "content-encoding": "gzip",
          "content-length": String(gzipped.length),
        });
        response.end(gzipped);
      } else {
        response.writeHead(200);
        for (let at = 0; at < document.length; at += 50_000) {
          response.write(document.subarray(at, at + 50_000));
        }
        response.end();
      }
    });
    const client = createHttpClient();

    for (const path of ["/declared", "/chunked", "/gzip"]) {
      const response = await client.get(`${server.url}${path}`);
      expect(response.body.equals(document), path).toBe(true);
    }
  });

  it("returns non-2xx answers instead of throwing", async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(503);
      response.end("down for maintenance");
    });

    const response = await createHttpClient().get(server.url);

    expect(response.status).toBe(503);
    expect(response.body.toString("utf8")).toBe("down for maintenance");
  });

  it("passes headers through and sets accept", async () => {
    const server = await startServer((_request, response) => response.end());
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    await createHttpClient({ userAgent: "orchestrator/test" }).get(server.url, {
      headers: { traceparent, "x-correlation-id": "corr-1", accept: "text/plain" },
      accept: "application/json",
    });

    const headers = server.requests[0]?.headers;
    expect(headers?.traceparent).toBe(traceparent);
    expect(headers?.["x-correlation-id"]).toBe("corr-1");
    expect(headers?.accept).toBe("application/json");
    expect(headers?.["user-agent"]).toBe("orchestrator/test");
  });

  it("leaves the caller's options untouched", () => {
    const options = Object.freeze({ timeoutMs: 1000 });
    createHttpClient(options);
    expect(options).toEqual({ timeoutMs: 1000 });
    expect(() => createHttpClient({ timeoutMs: 0 })).toThrow(RangeError);
    expect(() => createHttpClient({ maxRedirects: -1 })).toThrow(RangeError);
  });

  it("times out when the server never answers", async () => {
    const server = await startServer(() => {});

    const error = await rejection(createHttpClient().get(server.url, { timeoutMs: 300 }));

    expect(error.kind).toBe("timeout");
    expect(error.message).toBe("timed out after 300 ms");
    expect(server.requests).toHaveLength(1);
  });

  it("times out when the body stalls after the headers", async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(200, { "content-type": "application/json" });
      response.write('{"partial":');
    });

    const error = await rejection(createHttpClient({ timeoutMs: 300 }).get(server.url));

    expect(error.kind).toBe("timeout");
  });

  it("aborts a 50 MB stream as soon as it passes maxBytes", async () => {
    const sent = { bytes: 0 };
    let closed = false;
    const server = await startServer((_request, response) => {
      response.on("close", () => {
        closed = true;
      });
      response.writeHead(200, { "content-type": "application/octet-stream" });
      streamBytes(response, fiftyMegabytes, sent);
    });

    const error = await rejection(
      createHttpClient({ timeoutMs: 20_000 }).get(server.url, { maxBytes: 1024 * 1024 }),
    );

    expect(error.kind).toBe("too_large");
    expect(error.message).toBe("response larger than 1048576 bytes");
    await until(() => closed);
    // Socket buffers hold a few MB at most; the rest was never sent.
    expect(sent.bytes).toBeLessThan(fiftyMegabytes / 2);
  });

  it("refuses a declared content-length over the limit without reading the body", async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(200, { "content-length": String(fiftyMegabytes) });
      // Never sends the rest: reading the body would hang until the timeout.
      response.write("x");
    });

    const error = await rejection(createHttpClient({ timeoutMs: 20_000 }).get(server.url));

    expect(error.kind).toBe("too_large");
    expect(error.message).toBe("response larger than 5242880 bytes");
  });

  it("follows a same-origin redirect", async () => {
    const server = await startServer((request, response) => {
      if (request.url === "/old") {
        response.writeHead(301, { location: "/new?x=1" });
        response.end();
      } else {
        response.end(`at ${request.url}`);
      }
    });

    const response = await createHttpClient().get(`${server.url}/old`, {
      headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
    });

    expect(response.status).toBe(200);
    expect(response.body.toString("utf8")).toBe("at /new?x=1");
    expect(response.url).toBe(`${server.url}/new?x=1`);
    expect(server.requests[1]?.headers.traceparent).toBeDefined();
  });

  it("refuses a redirect to another port", async () => {
    const elsewhere = await startServer((_request, response) => response.end("elsewhere"));
    const server = await startServer((_request, response) => {
      response.writeHead(302, { location: `${elsewhere.url}/` });
      response.end();
    });

    const error = await rejection(createHttpClient().get(server.url));

    expect(error.kind).toBe("redirect_refused");
    expect(error.message).toBe("redirect to another host refused");
    expect(elsewhere.requests).toHaveLength(0);
  });

  it("refuses a redirect to another host name, even one resolving to the same address", async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(307, { location: `http://localhost:${server.port}/` });
      response.end();
    });

    const error = await rejection(createHttpClient().get(server.url));

    expect(error.kind).toBe("redirect_refused");
    expect(server.requests).toHaveLength(1);
    expect(error.message).not.toContain("localhost");
  });

  it("refuses a redirect to another scheme, as the outbound guard does", async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(302, { location: "ftp://127.0.0.1/file" });
      response.end();
    });

    const error = await rejection(createHttpClient().get(server.url));

    expect(error.kind).toBe("destination_refused");
    expect(error.message).toBe("ftp: is not http: or https:");
  });

  it("gives up on a redirect loop", async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(302, { location: "/loop" });
      response.end();
    });

    const error = await rejection(createHttpClient({ maxRedirects: 2 }).get(server.url));

    expect(error.kind).toBe("too_many_redirects");
    expect(error.message).toBe("more than 2 redirects");
    expect(server.requests).toHaveLength(3);
  });

  it("returns a redirect status that has no location", async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(302);
      response.end();
    });

    const response = await createHttpClient().get(server.url);

    expect(response.status).toBe(302);
  });

  it.each([
    ["ftp://127.0.0.1/doc.yaml", "only http and https URLs are allowed"],
    ["file:///etc/passwd", "only http and https URLs are allowed"],
    ["/relative/path", "not an absolute URL"],
    ["http://user:secret@127.0.0.1/", "URLs with credentials are not allowed"],
  ])("refuses %s before any I/O", async (url, message) => {
    const error = await rejection(createHttpClient().get(url));

    expect(error.kind).toBe("invalid_url");
    expect(error.message).toBe(message);
  });

  it("reports a refused connection without naming the address", async () => {
    const server = await startServer(() => {});
    const url = server.url;
    await servers.splice(0)[0]?.close();

    const error = await rejection(createHttpClient().get(url));

    expect(error.kind).toBe("network");
    expect(error.message).toBe("connection refused");
    expect(error.message).not.toContain("127.0.0.1");
    expect(String(error)).not.toContain("127.0.0.1");
    expect(error.cause).toBeDefined();
  });

  it("rejects with the caller's reason when the caller aborts", async () => {
    const server = await startServer(() => {});
    const controller = new AbortController();
    const reason = new Error("caller gave up");

    const call = createHttpClient({ timeoutMs: 20_000 }).get(server.url, {
      signal: controller.signal,
    });
    await until(() => server.requests.length === 1);
    controller.abort(reason);

    await expect(call).rejects.toBe(reason);
  });
});

describe("request", () => {
  /** Answers with what it received: method, content type and body. */
  async function echoServer() {
    return startServer((request, response) => {
      void requestText(request).then((body) => {
        response.writeHead(200, { "content-type": "application/json" });
        response.end(
          JSON.stringify({
            method: request.method,
            contentType: request.headers["content-type"] ?? null,
            body,
          }),
        );
      });
    });
  }

  function echoed(body: Buffer): { method: string; contentType: string | null; body: string } {
    return JSON.parse(body.toString("utf8"));
  }

  it("sends a JSON body with its content type", async () => {
    const server = await echoServer();
    const document = { source: "github", scope: ["org/repo"], depth: 2 };

    const response = await createHttpClient().request({
      method: "POST",
      url: `${server.url}/ingest`,
      json: document,
    });

    expect(echoed(response.body)).toEqual({
      method: "POST",
      contentType: "application/json",
      body: JSON.stringify(document),
    });
  });

  it("keeps a content type the caller names", async () => {
    const server = await echoServer();

    const response = await createHttpClient().request({
      method: "PATCH",
      url: server.url,
      json: { name: "x" },
      headers: { "Content-Type": "application/merge-patch+json" },
    });

    expect(echoed(response.body)).toMatchObject({
      method: "PATCH",
      contentType: "application/merge-patch+json",
    });
  });

  it.each(["PUT", "DELETE"] as const)("sends %s with its body", async (method) => {
    const server = await echoServer();

    const response = await createHttpClient().request({ method, url: server.url, json: [1] });

    expect(echoed(response.body)).toEqual({
      method,
      contentType: "application/json",
      body: "[1]",
    });
  });

  it("answers a HEAD with the status and an empty body", async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(200, { "content-type": "text/plain", "content-length": "5" });
      response.end("hello");
    });

    const response = await createHttpClient().request({ method: "HEAD", url: server.url });

    expect(response.status).toBe(200);
    expect(response.body).toHaveLength(0);
    expect(server.requests[0]?.method).toBe("HEAD");
  });

  it("refuses what cannot be sent, before any I/O", async () => {
    const server = await echoServer();
    const client = createHttpClient();
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;

    const refusals = [
      client.request({ method: "POST", url: server.url, json: { big: 1n } }),
      client.request({ method: "POST", url: server.url, json: cycle }),
      client.request({ method: "POST", url: server.url, json: () => 1 }),
      client.request({ method: "GET", url: server.url, json: {} }),
      client.request({ method: "HEAD", url: server.url, json: {} }),
      client.request({ method: "CONNECT" as "GET", url: server.url }),
    ];

    for (const refusal of refusals) await expect(refusal).rejects.toBeInstanceOf(TypeError);
    expect(server.requests).toHaveLength(0);
  });

  it("sends the call's correlation id and traceparent over the headers' own", async () => {
    const server = await startServer((_request, response) => response.end());
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    await createHttpClient().request({
      method: "POST",
      url: server.url,
      headers: { "x-correlation-id": "stale", traceparent: "00-stale" },
      call: { correlationId: "corr-42", traceparent },
      idempotencyKey: "run-1/step-2",
    });
    await createHttpClient().get(server.url, { call: { correlationId: "corr-43" } });

    expect(server.requests[0]?.headers).toMatchObject({
      "x-correlation-id": "corr-42",
      traceparent,
      "idempotency-key": "run-1/step-2",
    });
    expect(server.requests[1]?.headers["x-correlation-id"]).toBe("corr-43");
    expect(server.requests[1]?.headers.traceparent).toBeUndefined();
  });

  it("applies maxBytes to the answer of a POST, and does not retry it", async () => {
    const server = await startServer((request, response) => {
      void requestText(request).then(() => {
        response.writeHead(200);
        response.end(Buffer.alloc(64 * 1024, 0x61));
      });
    });

    const error = await rejection(
      createHttpClient().request({
        method: "POST",
        url: server.url,
        json: {},
        idempotencyKey: "k",
        maxBytes: 1024,
      }),
    );

    expect(error.kind).toBe("too_large");
    expect(server.requests).toHaveLength(1);
  });

  it("follows a 303 after a POST as a GET without body, a 307 as the same POST", async () => {
    const server = await startServer((request, response) => {
      void requestText(request).then((body) => {
        if (request.url === "/see-other") {
          response.writeHead(303, { location: "/result" }).end();
        } else if (request.url === "/temporary") {
          response.writeHead(307, { location: "/result" }).end();
        } else {
          response.end(
            JSON.stringify({
              method: request.method,
              contentType: request.headers["content-type"] ?? null,
              body,
            }),
          );
        }
      });
    });
    const client = createHttpClient();

    const seeOther = await client.request({
      method: "POST",
      url: `${server.url}/see-other`,
      json: { a: 1 },
    });
    const temporary = await client.request({
      method: "POST",
      url: `${server.url}/temporary`,
      json: { a: 1 },
    });

    expect(echoed(seeOther.body)).toEqual({ method: "GET", contentType: null, body: "" });
    expect(echoed(temporary.body)).toEqual({
      method: "POST",
      contentType: "application/json",
      body: '{"a":1}',
    });
  });
});

describe("client spans", () => {
  // The tracing capability's tracer over the real SDK and a memory trace store: what a call
  // records, found by the trace id the server received.
  async function tracedClient() {
    const store = createMemoryTraceStore();
    const tracing = await createTracing({
      store,
      serviceName: "orchestrator",
      instanceId: "n",
      version: "1",
    });
    return {
      store,
      client: createHttpClient(
        { timeoutMs: 2000, retryBaseDelayMs: 2, retryMaxDelayMs: 5 },
        { tracer: outboundTracerOf(tracing) },
      ),
    };
  }

  it("records a span per attempt, each a child of the call's traceparent", async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(server.requests.length === 1 ? 503 : 201).end();
    });
    const { store, client } = await tracedClient();
    const caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    const response = await client.request({
      method: "PUT",
      url: `${server.url}/documents/7`,
      json: {},
      call: { correlationId: "c-1", traceparent: caller },
    });

    expect(response.status).toBe(201);
    const sent = server.requests.map((request) => String(request.headers.traceparent));
    expect(sent).toHaveLength(2);
    expect(new Set(sent).size).toBe(2);
    const spans = (store.trace("0af7651916cd43dd8448eb211c80319c")?.roots ?? []).map(
      (root) => root.span,
    );
    expect(spans.map((span) => [span.name, span.parentSpanId, span.status])).toEqual([
      ["PUT", "b7ad6b7169203331", "error"],
      ["PUT", "b7ad6b7169203331", "ok"],
    ]);
    expect(spans.map((span) => `00-${span.traceId}-${span.spanId}-01`)).toEqual(sent);
  });

  it("sends its own span as traceparent, the child of the caller's, and records the status", async () => {
    const server = await startServer((_request, response) => response.writeHead(404).end());
    const { store, client } = await tracedClient();
    const caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const response = await client.get(`${server.url}/openapi.json?token=secret`, {
      headers: { traceparent: caller },
    });
    expect(response.status).toBe(404);
    const sent = String(server.requests[0]?.headers.traceparent);
    const [, traceId, spanId] = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(sent) ?? [];
    expect(traceId).toBe("0af7651916cd43dd8448eb211c80319c");
    const [root] = store.trace(traceId ?? "")?.roots ?? [];
    expect(root?.span).toMatchObject({
      spanId,
      parentSpanId: "b7ad6b7169203331",
      name: "GET",
      kind: "client",
      status: "error",
      statusMessage: "HTTP 404",
      attributes: {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": String(server.port),
        "url.path": "/openapi.json",
        "http.response.status_code": "404",
      },
    });
    expect(JSON.stringify(root)).not.toContain("secret");
  });

  it("starts a trace for a call made outside any call, and records a failure's reason", async () => {
    const server = await startServer(() => {});
    const { store, client } = await tracedClient();
    const failure = await rejection(client.get(`${server.url}/health`, { timeoutMs: 200 }));
    expect(failure.kind).toBe("timeout");
    const [, traceId] =
      /^00-([0-9a-f]{32})-/.exec(String(server.requests[0]?.headers.traceparent)) ?? [];
    const [root] = store.trace(traceId ?? "")?.roots ?? [];
    expect(root?.span).toMatchObject({
      parentSpanId: "",
      status: "error",
      statusMessage: failure.message,
    });
  });
});

describe("the outbound guard", () => {
  /** A resolver from a table, recording each name asked; no DNS is involved. */
  function resolverOf(table: Record<string, readonly string[] | (() => readonly string[])>) {
    const asked: string[] = [];
    const resolve: Resolve = async (hostname) => {
      asked.push(hostname);
      const entry = table[hostname];
      const addresses = typeof entry === "function" ? entry() : (entry ?? []);
      return addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
    };
    return { resolve, asked };
  }

  it("refuses a name that resolves to the metadata address, before connecting", async () => {
    const { resolve, asked } = resolverOf({ "metadata.test": ["169.254.169.254"] });
    const client = createHttpClient({ timeoutMs: 20_000 }, { resolve });

    const error = await rejection(client.get("http://metadata.test/latest/meta-data/"));

    expect(error.kind).toBe("destination_refused");
    expect(error.message).toBe(
      "metadata.test resolves to 169.254.169.254, is a link-local/metadata address; add it to OUTBOUND_ALLOW to call it",
    );
    expect(asked).toEqual(["metadata.test"]);
  });

  it("refuses a name mixing a loopback address with a metadata one: no request reaches the loopback", async () => {
    const server = await startServer((_request, response) => response.end("ok"));
    const { resolve } = resolverOf({ "mixed.test": ["127.0.0.1", "169.254.169.254"] });

    const error = await rejection(
      createHttpClient({}, { resolve }).get(`http://mixed.test:${server.port}/`),
    );

    expect(error.kind).toBe("destination_refused");
    expect(server.requests).toHaveLength(0);
  });

  it("refuses an address literal before any I/O, without a lookup", async () => {
    const { resolve, asked } = resolverOf({});
    const client = createHttpClient({}, { resolve });

    for (const url of [
      "http://169.254.169.254/",
      "http://[::ffff:169.254.169.254]/",
      "http://0.0.0.0/",
    ]) {
      const error = await rejection(client.get(url));
      expect(error.kind).toBe("destination_refused");
    }
    expect(asked).toEqual([]);
  });

  it("refuses a redirect's hop to a refused address", async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(302, { location: "http://169.254.169.254/latest/meta-data/" });
      response.end();
    });

    const error = await rejection(createHttpClient().get(server.url));

    expect(error.kind).toBe("destination_refused");
    expect(error.message).toContain("169.254.169.254 is a link-local/metadata address");
    expect(server.requests).toHaveLength(1);
  });

  it("checks the address again when a same-origin redirect reconnects (DNS rebinding)", async () => {
    const server = await startServer((request, response) => {
      if (request.url === "/start") {
        // Closing the connection makes the next hop connect, and so resolve, again.
        response.writeHead(302, { location: "/next", connection: "close" });
        response.end();
      } else {
        response.end("the second hop should not arrive");
      }
    });
    const answers = [["127.0.0.1"], ["169.254.169.254"]];
    const { resolve, asked } = resolverOf({ "rebind.test": () => answers.shift() ?? [] });

    const error = await rejection(
      createHttpClient({}, { resolve }).get(`http://rebind.test:${server.port}/start`),
    );

    expect(error.kind).toBe("destination_refused");
    expect(asked).toEqual(["rebind.test", "rebind.test"]);
    expect(server.requests.map((request) => request.url)).toEqual(["/start"]);
  });

  it("with OUTBOUND_ALLOW=127.0.0.1/32, calls 127.0.0.1 and refuses 127.0.0.2 and other names", async () => {
    const server = await startServer((_request, response) => response.end("ok"));
    const { resolve } = resolverOf({
      "listed.test": ["127.0.0.1"],
      "elsewhere.test": ["127.0.0.2"],
    });
    const client = createHttpClient({ allow: ["127.0.0.1/32"] }, { resolve });

    expect((await client.get(server.url)).status).toBe(200);
    expect((await client.get(`http://listed.test:${server.port}/`)).status).toBe(200);
    const literal = await rejection(client.get(`http://127.0.0.2:${server.port}/`));
    expect(literal.kind).toBe("destination_refused");
    expect(literal.message).toBe("127.0.0.2 is not in OUTBOUND_ALLOW");
    const named = await rejection(client.get(`http://elsewhere.test:${server.port}/`));
    expect(named.message).toBe(
      "elsewhere.test is not in OUTBOUND_ALLOW (neither the name nor its address)",
    );
    expect(server.requests).toHaveLength(2);
  });

  it("neither retries a refusal nor counts it on the origin's breaker", async () => {
    const server = await startServer((_request, response) => response.end("ok"));
    const answers = [["169.254.169.254"], ["169.254.169.254"], ["127.0.0.1"]];
    const { resolve, asked } = resolverOf({ "svc.test": () => answers.shift() ?? [] });
    const client = createHttpClient(
      { maxAttempts: 3, retryBaseDelayMs: 1, breakerThreshold: 1 },
      { resolve },
    );
    const url = `http://svc.test:${server.port}/`;

    expect((await rejection(client.request({ method: "GET", url }))).kind).toBe(
      "destination_refused",
    );
    expect(asked).toHaveLength(1);
    expect((await rejection(client.request({ method: "GET", url }))).kind).toBe(
      "destination_refused",
    );
    // A breaker that counted either refusal would be open now (threshold 1): the call goes through.
    expect((await client.request({ method: "GET", url })).status).toBe(200);
  });

  it("refuses an allow-list entry that is not one when the client is created", () => {
    expect(() => createHttpClient({ allow: ["10.0.0.0/99"] })).toThrow(RangeError);
  });
});
