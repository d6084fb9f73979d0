import type { ServerResponse } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import {
  type LoopbackHandler,
  type LoopbackServer,
  startLoopbackServer,
} from "../../tests/support/loopback-server.js";
import { seededRandom } from "../../tests/support/seeded-random.js";
import {
  createHttpClient,
  type HttpClientOptions,
  type HttpResponse,
  isOutboundError,
  type OutboundError,
} from "./http-client.js";
import { createOutboundPolicy } from "./outbound-policy.js";

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

/** A server answering the statuses of `script` in turn, then the last one for ever. */
async function scriptedServer(...script: number[]): Promise<LoopbackServer> {
  const server = await startServer((_request, response) => {
    const status = script[Math.min(server.requests.length, script.length) - 1] ?? 200;
    response.writeHead(status).end(`answer ${server.requests.length}`);
  });
  return server;
}

/** A server whose status the test sets as it goes. */
async function switchableServer(status: number) {
  const state = { status };
  const server = await startServer((_request, response: ServerResponse) => {
    response.writeHead(state.status).end();
  });
  return { server, state };
}

/** Small delays keep the tests quick; timeouts are generous for a loaded machine. */
function client(options: Partial<HttpClientOptions> = {}) {
  return createHttpClient(
    { timeoutMs: 10_000, retryBaseDelayMs: 2, retryMaxDelayMs: 5, ...options },
    { random: seededRandom(9) },
  );
}

async function rejection(promise: Promise<unknown>): Promise<OutboundError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  if (!isOutboundError(error)) throw new Error(`expected an OutboundError, got ${String(error)}`);
  return error;
}

async function until(condition: () => boolean | Promise<boolean>): Promise<void> {
  for (let attempt = 0; attempt < 400; attempt++) {
    if (await condition()) return;
    await sleep(25);
  }
  expect(await condition()).toBe(true);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe("retries", () => {
  it("retries a 503 and returns the 200 that follows", async () => {
    const server = await scriptedServer(503, 200);

    const response = await client().request({ method: "GET", url: server.url });

    expect(response.status).toBe(200);
    expect(response.body.toString()).toBe("answer 2");
    expect(server.requests).toHaveLength(2);
  });

  it.each([429, 502, 504])("retries a %i", async (status) => {
    const server = await scriptedServer(status, 200);

    const response = await client().request({ method: "DELETE", url: server.url });

    expect(response.status).toBe(200);
    expect(server.requests).toHaveLength(2);
  });

  it.each([400, 404, 409, 500, 501])("does not retry a %i", async (status) => {
    const server = await scriptedServer(status, 200);

    const response = await client().request({ method: "PUT", url: server.url, json: {} });

    expect(response.status).toBe(status);
    expect(server.requests).toHaveLength(1);
  });

  it("returns the last attempt's answer when every attempt is retryable", async () => {
    const server = await scriptedServer(503);

    const response = await client({ maxAttempts: 4 }).request({ method: "GET", url: server.url });

    expect(response.status).toBe(503);
    expect(response.body.toString()).toBe("answer 4");
    expect(server.requests).toHaveLength(4);
  });

  it("does not retry a POST without an idempotency key", async () => {
    const server = await scriptedServer(503, 200);

    const response = await client().request({ method: "POST", url: server.url, json: {} });

    expect(response.status).toBe(503);
    expect(server.requests).toHaveLength(1);
  });

  it("retries a POST with an idempotency key, sending the same key each time", async () => {
    const server = await scriptedServer(503, 502, 201);

    const response = await client().request({
      method: "POST",
      url: server.url,
      json: { step: "ingest" },
      idempotencyKey: "run-7/ingest-github",
    });

    expect(response.status).toBe(201);
    expect(server.requests.map((request) => request.headers["idempotency-key"])).toEqual([
      "run-7/ingest-github",
      "run-7/ingest-github",
      "run-7/ingest-github",
    ]);
  });

  it("retries a connection lost before the answer", async () => {
    const server = await startServer((request, response) => {
      if (server.requests.length === 1) request.socket.destroy();
      else response.end("second");
    });

    const response = await client().request({ method: "GET", url: server.url });

    expect(response.body.toString()).toBe("second");
    expect(server.requests).toHaveLength(2);
  });

  it("retries an attempt that outlasts its timeout", async () => {
    const server = await startServer((_request, response) => {
      if (server.requests.length > 1) response.end("in time");
    });

    const response = await client().request({ method: "GET", url: server.url, timeoutMs: 300 });

    expect(response.body.toString()).toBe("in time");
    expect(server.requests).toHaveLength(2);
  });

  it("throws the last failure when every attempt fails", async () => {
    const server = await startServer(() => {});

    const error = await rejection(
      client().request({ method: "HEAD", url: server.url, timeoutMs: 200 }),
    );

    expect(error.kind).toBe("timeout");
    expect(server.requests).toHaveLength(3);
  });

  it("never retries an answer too large", async () => {
    const server = await startServer((_request, response) => response.end("x".repeat(4096)));

    const error = await rejection(
      client().request({ method: "GET", url: server.url, maxBytes: 1024 }),
    );

    expect(error.kind).toBe("too_large");
    expect(server.requests).toHaveLength(1);
  });

  it("never retries a refused redirect", async () => {
    const server = await startServer((_request, response) => {
      response.writeHead(302, { location: "http://localhost:1/" }).end();
    });

    const error = await rejection(client().request({ method: "GET", url: server.url }));

    expect(error.kind).toBe("redirect_refused");
    expect(server.requests).toHaveLength(1);
  });

  it("stops retrying when the caller aborts, and rejects with the caller's reason", async () => {
    const controller = new AbortController();
    const reason = new Error("caller gave up");
    const server = await startServer((_request, response) => {
      response.writeHead(503).end();
      response.on("finish", () => controller.abort(reason));
    });

    const call = client({ retryBaseDelayMs: 100, retryMaxDelayMs: 100, maxAttempts: 5 }).request({
      method: "GET",
      url: server.url,
      signal: controller.signal,
    });

    await expect(call).rejects.toBe(reason);
    // Long enough for any backoff (100 ms at most) to end: a retry would show here.
    await sleep(400);
    expect(server.requests).toHaveLength(1);
  });

  it("does not wait for the backoff to end once the caller aborts", async () => {
    const controller = new AbortController();
    const server = await scriptedServer(503);
    // A 60 s backoff: the call can only settle within the test's time if the abort cuts it.
    const call = createHttpClient(
      { retryBaseDelayMs: 60_000, retryMaxDelayMs: 60_000, maxAttempts: 2 },
      { random: () => 0 },
    ).request({ method: "GET", url: server.url, signal: controller.signal });
    await until(() => server.requests.length === 1);
    await sleep(50);

    controller.abort(new Error("shutting down"));

    await expect(call).rejects.toThrow("shutting down");
    expect(server.requests).toHaveLength(1);
  });

  it("does not retry when the call opts out", async () => {
    const server = await scriptedServer(503, 200);

    const response = await client().request({ method: "GET", url: server.url, retry: false });

    expect(response.status).toBe(503);
    expect(server.requests).toHaveLength(1);
  });

  it("makes one attempt for get, as health probes need", async () => {
    const server = await scriptedServer(503, 200);

    const response = await client().get(server.url);

    expect(response.status).toBe(503);
    expect(server.requests).toHaveLength(1);
  });
});

describe("circuit breaker", () => {
  const breakerOptions = { breakerThreshold: 3, breakerHalfOpenMs: 200 };

  /** Calls `url` once without retries: each call is one attempt through the breaker. */
  function once(http: ReturnType<typeof client>, url: string): Promise<HttpResponse> {
    return http.request({ method: "GET", url, retry: false });
  }

  it("opens after the threshold and fails fast without reaching the server", async () => {
    const { server } = await switchableServer(500);
    const http = client(breakerOptions);

    for (let call = 0; call < 3; call++) expect((await once(http, server.url)).status).toBe(500);
    const error = await rejection(once(http, server.url));

    expect(error.kind).toBe("circuit_open");
    expect(error.message).toMatch(/^circuit open: .* half-opens in \d+ ms$/);
    expect(error.message).not.toContain("127.0.0.1");
    expect(server.requests).toHaveLength(3);
  });

  it("counts timeouts and network failures, not a 4xx or a too-large answer", async () => {
    const state = { mode: "400" };
    const server = await startServer((request, response) => {
      if (state.mode === "400") response.writeHead(400).end();
      else if (state.mode === "large") response.end("x".repeat(4096));
      else if (state.mode === "reset") request.socket.destroy();
      // "hang": no answer, the attempt times out.
    });
    const http = client({ ...breakerOptions, timeoutMs: 200 });
    const call = (maxBytes = 1024 * 1024) =>
      http.request({ method: "GET", url: server.url, retry: false, maxBytes });

    for (let i = 0; i < 5; i++) expect((await call()).status).toBe(400);
    state.mode = "large";
    for (let i = 0; i < 5; i++) expect((await rejection(call(1024))).kind).toBe("too_large");
    state.mode = "reset";
    expect((await rejection(call())).kind).toBe("network");
    state.mode = "hang";
    expect((await rejection(call())).kind).toBe("timeout");
    expect((await rejection(call())).kind).toBe("timeout");

    expect((await rejection(call())).kind).toBe("circuit_open");
    expect(server.requests).toHaveLength(13);
  });

  it("ends a call's retries when its attempts open the circuit", async () => {
    const server = await scriptedServer(503);

    const error = await rejection(
      client({ ...breakerOptions, maxAttempts: 5 }).request({ method: "GET", url: server.url }),
    );

    expect(error.kind).toBe("circuit_open");
    expect(server.requests).toHaveLength(3);
  });

  it("half-opens after the break, and one successful trial closes it", async () => {
    const { server, state } = await switchableServer(503);
    const http = client(breakerOptions);
    for (let call = 0; call < 3; call++) await once(http, server.url);
    expect((await rejection(once(http, server.url))).kind).toBe("circuit_open");
    state.status = 200;

    let trial: HttpResponse | undefined;
    await until(async () => {
      trial = await once(http, server.url).catch(() => undefined);
      return trial !== undefined;
    });

    expect(trial?.status).toBe(200);
    expect(server.requests).toHaveLength(4);
    // Closed: failures count from zero again, so two more do not open it.
    state.status = 503;
    for (let call = 0; call < 2; call++) expect((await once(http, server.url)).status).toBe(503);
    state.status = 200;
    expect((await once(http, server.url)).status).toBe(200);
    expect(server.requests).toHaveLength(7);
  });

  it("re-opens when the trial call fails", async () => {
    const { server } = await switchableServer(503);
    const http = client({ ...breakerOptions, breakerHalfOpenMs: 1000 });
    for (let call = 0; call < 3; call++) await once(http, server.url);

    await until(async () => {
      await once(http, server.url).catch(() => undefined);
      return server.requests.length === 4;
    });
    const error = await rejection(once(http, server.url));

    expect(error.kind).toBe("circuit_open");
    expect(server.requests).toHaveLength(4);
  });

  it("keeps one breaker per origin: an open circuit does not cut another target", async () => {
    const failing = await scriptedServer(503);
    const healthy = await scriptedServer(200);
    const http = client(breakerOptions);
    for (let call = 0; call < 3; call++) await once(http, failing.url);

    expect((await rejection(once(http, `${failing.url}/other/path`))).kind).toBe("circuit_open");
    expect((await once(http, healthy.url)).status).toBe(200);
    expect(healthy.requests).toHaveLength(1);
  });

  it("lets calls that opt out through an open circuit, get included", async () => {
    const server = await scriptedServer(503);
    const http = client(breakerOptions);
    for (let call = 0; call < 3; call++) await once(http, server.url);
    expect((await rejection(once(http, server.url))).kind).toBe("circuit_open");

    const optedOut = await http.request({ method: "GET", url: server.url, breaker: false });
    const probe = await http.get(server.url);

    expect(optedOut.status).toBe(503);
    expect(probe.status).toBe(503);
    // The opted-out call was still retried: 3 attempts, then the probe's one.
    expect(server.requests).toHaveLength(7);
  });

  it("forgets the oldest origin's breaker when more origins than maxBreakers are called", async () => {
    const failing = await scriptedServer(503);
    const others = [await scriptedServer(200), await scriptedServer(200)];
    const http = client({ ...breakerOptions, maxBreakers: 2 });
    for (let call = 0; call < 3; call++) await once(http, failing.url);
    expect((await rejection(once(http, failing.url))).kind).toBe("circuit_open");

    for (const other of others) await once(http, other.url);

    // Its breaker was the oldest and went: the failing origin is called again.
    expect((await once(http, failing.url)).status).toBe(503);
    expect(failing.requests).toHaveLength(4);
  });
});

describe("createOutboundPolicy", () => {
  it("keeps at most maxBreakers breakers whatever the number of origins", async () => {
    const policy = createOutboundPolicy(
      {
        maxAttempts: 3,
        retryBaseDelayMs: 1,
        retryMaxDelayMs: 1,
        breakerThreshold: 5,
        breakerHalfOpenMs: 10_000,
        maxBreakers: 10,
      },
      Math.random,
    );
    const answer = async () => ({ status: 200 });

    for (let origin = 0; origin < 1000; origin++) {
      await policy.run(`http://service-${origin}:8080`, answer, {
        retry: true,
        breaker: true,
        signal: undefined,
      });
      expect(policy.breakerCount).toBe(Math.min(origin + 1, 10));
    }
  });

  it("refuses options out of range through the client", () => {
    for (const options of [
      { maxAttempts: 0 },
      { maxAttempts: 1.5 },
      { breakerThreshold: 0 },
      { maxBreakers: 0 },
      { retryBaseDelayMs: -1 },
      { retryMaxDelayMs: Number.NaN },
      { breakerHalfOpenMs: 0 },
    ]) {
      expect(() => createHttpClient(options), JSON.stringify(options)).toThrow(RangeError);
    }
  });
});
