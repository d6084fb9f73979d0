import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import { entryWrite } from "../../tests/contracts/registry-store.contract.js";
import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import { createHttpClient } from "../http-client/http-client.js";
import { createMemoryRegistryStore } from "./memory-registry-store.js";
import { createOpenApiAnalyzer, type OpenApiAnalyzer } from "./openapi-analyzer.js";
import { createOpenApiPoller, type OpenApiPollerDeps } from "./openapi-poller.js";
import type { RegistryStore } from "./registry-store.js";

type Handler = (request: IncomingMessage, response: ServerResponse) => void;

/** A loopback server whose routes the tests change between polls. */
interface DocumentServer {
  readonly url: string;
  readonly routes: Map<string, Handler>;
  readonly requests: IncomingMessage[];
  openConnections(): number;
  close(): Promise<void>;
}

async function startDocumentServer(): Promise<DocumentServer> {
  const routes = new Map<string, Handler>();
  const requests: IncomingMessage[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((request, response) => {
    requests.push(request);
    const handler = routes.get(request.url ?? "");
    if (handler === undefined) {
      response.writeHead(404, { "content-type": "text/plain" });
      response.end("no such document on docs-7.internal.example");
      return;
    }
    handler(request, response);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    routes,
    requests,
    openConnections: () => sockets.size,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function serve(body: string, contentType = "application/json"): Handler {
  return (_request, response) => {
    response.writeHead(200, { "content-type": contentType });
    response.end(body);
  };
}

async function until(condition: () => boolean): Promise<void> {
  for (let attempt = 0; attempt < 400 && !condition(); attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  expect(condition()).toBe(true);
}

type Json = Record<string, unknown>;

function inventory(): Json & { info: Json; paths: Record<string, Json> } {
  return {
    openapi: "3.0.3",
    info: { title: "Inventory", version: "1.0.0", description: "Stock levels." },
    paths: {
      "/items": {
        get: {
          parameters: [{ name: "limit", in: "query", schema: { type: "integer" } }],
          responses: {
            "200": {
              description: "Items",
              content: {
                "application/json": {
                  schema: { type: "array", items: { $ref: "#/components/schemas/Item" } },
                },
              },
            },
          },
        },
      },
      "/items/{id}": {
        get: {
          parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
          responses: {
            "200": {
              description: "One item",
              content: { "application/json": { schema: { $ref: "#/components/schemas/Item" } } },
            },
          },
        },
        delete: {
          parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
          responses: { "204": { description: "Gone" } },
        },
      },
    },
    components: {
      schemas: {
        Item: {
          type: "object",
          properties: {
            id: { type: "string" },
            sku: { type: "string" },
            count: { type: "integer" },
          },
        },
      },
    },
  };
}

const clock: Clock = { now: () => 1_700_000_000_000, monotonic: () => performance.now() };

/** Registers `names` in the store: baselines are kept for live entries only. */
async function registerAll(...names: string[]): Promise<void> {
  for (const name of names) {
    await store.put(entryWrite(name, { openapiUrl: `http://${name}.internal/openapi.json` }), 0);
  }
}

let server: DocumentServer;
let store: RegistryStore;
let analyzer: OpenApiAnalyzer;
let deps: OpenApiPollerDeps;

beforeEach(async () => {
  server = await startDocumentServer();
  store = createMemoryRegistryStore();
  analyzer = createOpenApiAnalyzer();
  deps = { baselines: store, http: createHttpClient(), clock, analyzer };
  await registerAll("inventory");
});

afterEach(async () => {
  await analyzer.close();
  await server.close();
  await until(() => server.openConnections() === 0);
});

describe("createOpenApiPoller", () => {
  it("records a baseline first, then reports drift against the latest document", async () => {
    const poller = createOpenApiPoller(deps);
    const targets = [{ service: "inventory", url: `${server.url}/openapi.json` }];
    const document = inventory();
    server.routes.set("/openapi.json", serve(JSON.stringify(document)));

    const [first] = await poller.poll(targets);
    expect(first).toEqual({
      service: "inventory",
      changed: false,
      baseline: true,
      hash: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    const recorded = await store.getBaseline("inventory");
    expect(recorded?.hash).toBe(first?.hash);
    expect(recorded?.recordedAt).toBe(1_700_000_000_000);
    expect(recorded?.operationCount).toBe(3);

    const [unchanged] = await poller.poll(targets);
    expect(unchanged).toEqual({
      service: "inventory",
      changed: false,
      baseline: false,
      hash: first?.hash,
    });

    delete document.paths["/items/{id}"]?.delete;
    document.paths["/items/{id}"] = { ...document.paths["/items/{id}"], patch: { responses: {} } };
    server.routes.set("/openapi.json", serve(JSON.stringify(document)));
    const [drifted] = await poller.poll(targets);
    expect(drifted?.changed).toBe(true);
    expect(drifted?.baseline).toBe(false);
    expect(drifted?.hash).not.toBe(first?.hash);
    expect(drifted?.diff).toEqual({
      added: ["PATCH /items/{id}"],
      removed: ["DELETE /items/{id}"],
      changed: [],
      addedCount: 1,
      removedCount: 1,
      changedCount: 0,
      breaking: true,
      breakingReasons: ["DELETE /items/{id}: operation removed"],
    });
    expect((await store.getBaseline("inventory"))?.hash).toBe(drifted?.hash);

    const [settled] = await poller.poll(targets);
    expect(settled).toEqual({
      service: "inventory",
      changed: false,
      baseline: false,
      hash: drifted?.hash,
    });
  });

  it("reports a description-only edit as unchanged but keeps the new hash", async () => {
    const poller = createOpenApiPoller(deps);
    const targets = [{ service: "inventory", url: `${server.url}/openapi.yaml` }];
    const document = inventory();
    server.routes.set("/openapi.yaml", serve(toYaml(document), "application/yaml"));
    const [first] = await poller.poll(targets);

    document.info.description = "Stock levels, per warehouse.";
    server.routes.set("/openapi.yaml", serve(toYaml(document), "application/yaml"));
    const [second] = await poller.poll(targets);

    expect(second).toEqual({
      service: "inventory",
      changed: false,
      baseline: false,
      hash: expect.not.stringMatching(first?.hash ?? ""),
    });
    expect((await store.getBaseline("inventory"))?.hash).toBe(second?.hash);
  });

  it("reports a narrowed response schema as breaking drift", async () => {
    const poller = createOpenApiPoller(deps);
    const targets = [{ service: "inventory", url: `${server.url}/openapi.json` }];
    const document = inventory();
    server.routes.set("/openapi.json", serve(JSON.stringify(document)));
    await poller.poll(targets);

    const components = document.components as { schemas: { Item: { properties: Json } } };
    delete components.schemas.Item.properties.count;
    server.routes.set("/openapi.json", serve(JSON.stringify(document)));
    const [result] = await poller.poll(targets);

    expect(result?.diff?.changed).toEqual(["GET /items", "GET /items/{id}"]);
    expect(result?.diff?.breakingReasons).toEqual([
      'GET /items/{id}: response 200 application/json: property "count" removed at $',
      'GET /items: response 200 application/json: property "count" removed at $[]',
    ]);
  });

  it("reports each failure in its own result, in target order, without host names", async () => {
    const sent = { bytes: 0 };
    let hugeClosed = false;
    server.routes.set("/ok.json", serve(JSON.stringify(inventory())));
    server.routes.set("/hang.json", () => {});
    server.routes.set("/huge.json", (_request, response) => {
      response.on("close", () => {
        hugeClosed = true;
      });
      response.writeHead(200, { "content-type": "application/json" });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const pump = async () => {
        while (!hugeClosed && sent.bytes < 50 * 1024 * 1024) {
          sent.bytes += chunk.length;
          if (!response.write(chunk)) {
            await Promise.race([once(response, "drain"), once(response, "close")]);
          }
        }
        if (!hugeClosed) response.end();
      };
      void pump();
    });
    server.routes.set("/malformed.json", serve('{"openapi": "3.0.0", "paths": {'));
    server.routes.set("/not-openapi.json", serve('{"name": "docs-7.internal.example"}'));
    server.routes.set("/bomb.yaml", serve(aliasBomb(), "application/yaml"));
    await registerAll("ok");
    // A generous budget for all but the hanging URL, so that a loaded machine cannot turn the
    // other failures into timeouts; a second, impatient poller times the hanging one out.
    const poller = createOpenApiPoller(deps, { timeoutMs: 20_000 });
    const impatient = createOpenApiPoller(deps, { timeoutMs: 300 });

    const [hung, results] = await Promise.all([
      impatient.poll([{ service: "hang", url: `${server.url}/hang.json` }]),
      poller.poll([
        { service: "huge", url: `${server.url}/huge.json` },
        { service: "malformed", url: `${server.url}/malformed.json` },
        { service: "not-openapi", url: `${server.url}/not-openapi.json` },
        { service: "bomb", url: `${server.url}/bomb.yaml` },
        { service: "missing", url: `${server.url}/missing.json` },
        { service: "ftp", url: "ftp://docs-7.internal.example/openapi.json" },
        { service: "ok", url: `${server.url}/ok.json` },
      ]),
    ]);

    expect(hung).toEqual([
      {
        service: "hang",
        changed: false,
        baseline: false,
        hash: "",
        error: "timed out after 300 ms",
      },
    ]);
    expect(results.map((result) => [result.service, result.error])).toEqual([
      ["huge", "response larger than 5242880 bytes"],
      ["malformed", "OpenAPI document is not valid JSON"],
      ["not-openapi", "not an OpenAPI 3.x or Swagger 2.0 document (no openapi or swagger version)"],
      ["bomb", "OpenAPI document is neither JSON nor YAML"],
      ["missing", "HTTP 404"],
      ["ftp", "only http and https URLs are allowed"],
      ["ok", undefined],
    ]);
    expect(results.at(-1)?.baseline).toBe(true);
    for (const result of results.slice(0, -1)) {
      expect(result).toMatchObject({ changed: false, baseline: false, hash: "" });
      expect(await store.getBaseline(result.service)).toBeUndefined();
    }
    const text = JSON.stringify(results);
    expect(text).not.toContain("127.0.0.1");
    expect(text).not.toContain("internal.example");
    await until(() => hugeClosed);
    expect(sent.bytes).toBeLessThan(25 * 1024 * 1024);
  });

  it("never has more than `concurrency` fetches in flight", async () => {
    const concurrency = 3;
    const total = 10;
    const held: ServerResponse[] = [];
    let received = 0;
    let maxInFlight = 0;
    const body = JSON.stringify(inventory());
    // Answers are held until `concurrency` requests wait at once (or all have come), so the test
    // proves that the poller does reach the bound, and that it never passes it.
    const release = () => {
      for (const response of held.splice(0)) {
        response.writeHead(200, { "content-type": "application/json" });
        response.end(body);
      }
    };
    for (let index = 0; index < total; index++) {
      server.routes.set(`/doc/${index}`, (_request, response) => {
        received += 1;
        held.push(response);
        maxInFlight = Math.max(maxInFlight, held.length);
        if (held.length >= concurrency || received === total) release();
      });
    }
    const poller = createOpenApiPoller(deps, { concurrency });
    const targets = Array.from({ length: total }, (_, index) => ({
      service: `svc-${index}`,
      url: `${server.url}/doc/${index}`,
    }));
    await registerAll(...targets.map((target) => target.service));

    const results = await poller.poll(targets);

    expect(results.map((result) => [result.service, result.baseline])).toEqual(
      targets.map((target) => [target.service, true]),
    );
    expect(maxInFlight).toBe(concurrency);
  });

  it("keeps to `concurrency` fetches in flight across polls made at the same time", async () => {
    const concurrency = 2;
    const held: ServerResponse[] = [];
    let maxInFlight = 0;
    const body = JSON.stringify(inventory());
    const total = 8;
    let received = 0;
    for (let index = 0; index < total; index++) {
      server.routes.set(`/doc/${index}`, (_request, response) => {
        received += 1;
        held.push(response);
        maxInFlight = Math.max(maxInFlight, held.length);
        // Held a while once the bound is reached, so that a fetch beyond it would show; a correct
        // poller sends none however long it waits (a slow machine can only hide a fault).
        if (held.length === concurrency || received === total) {
          setTimeout(() => {
            for (const waiting of held.splice(0)) {
              waiting.writeHead(200, { "content-type": "application/json" });
              waiting.end(body);
            }
          }, 300);
        }
      });
    }
    const poller = createOpenApiPoller(deps, { concurrency });
    const targets = Array.from({ length: total }, (_, index) => ({
      service: `svc-${index}`,
      url: `${server.url}/doc/${index}`,
    }));
    await registerAll(...targets.map((target) => target.service));
    // Four polls of two documents each, all at once: still two fetches at a time, node-wide.
    const polls = [0, 2, 4, 6].map((start) => poller.poll(targets.slice(start, start + 2)));
    const results = (await Promise.all(polls)).flat();
    expect(results.map((result) => result.baseline)).toEqual(targets.map(() => true));
    expect(maxInFlight).toBe(concurrency);
  });

  it("reports a store failure for its target only", async () => {
    server.routes.set("/openapi.json", serve(JSON.stringify(inventory())));
    const flaky: OpenApiPollerDeps["baselines"] = {
      getBaseline: (name) => store.getBaseline(name),
      putBaseline: async (name, baseline) => {
        if (name === "down") {
          throw new DomainError("unavailable", "redis at cache-3.internal.example:6379 refused");
        }
        if (name === "silent") {
          throw new DomainError("timeout", "redis at cache-3.internal.example:6379 is silent");
        }
        return store.putBaseline(name, baseline);
      },
    };
    const poller = createOpenApiPoller({ ...deps, baselines: flaky });
    await registerAll("down", "up");

    const results = await poller.poll([
      { service: "down", url: `${server.url}/openapi.json` },
      { service: "up", url: `${server.url}/openapi.json` },
      { service: "silent", url: `${server.url}/openapi.json` },
    ]);

    expect(results[0]).toEqual({
      service: "down",
      changed: false,
      baseline: false,
      hash: "",
      error: "baseline store unavailable",
    });
    expect(results[1]?.baseline).toBe(true);
    // Sent but unanswered: it may yet be recorded, so the poll does not say it was not.
    expect(results[2]?.error).toBe(
      "baseline store did not answer in time; the baseline may still be recorded",
    );
  });

  it("passes the request's headers and asks for JSON or YAML", async () => {
    server.routes.set("/openapi.json", serve(JSON.stringify(inventory())));
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    await createOpenApiPoller(deps).poll(
      [{ service: "inventory", url: `${server.url}/openapi.json` }],
      {
        headers: { traceparent, "x-correlation-id": "poll-1" },
      },
    );

    const headers = server.requests[0]?.headers;
    expect(headers?.traceparent).toBe(traceparent);
    expect(headers?.["x-correlation-id"]).toBe("poll-1");
    expect(headers?.accept).toContain("application/yaml");
  });

  it("returns no results for no targets and refuses a bad concurrency", async () => {
    expect(await createOpenApiPoller(deps).poll([])).toEqual([]);
    expect(() => createOpenApiPoller(deps, { concurrency: 0 })).toThrow(RangeError);
  });
});

function aliasBomb(): string {
  const names = "abcdefghij";
  let bomb = 'openapi: 3.0.0\npaths: {}\na: &a ["lol","lol","lol","lol","lol","lol","lol","lol"]\n';
  for (let index = 1; index < names.length; index++) {
    bomb += `${names[index]}: &${names[index]} [${Array(8)
      .fill(`*${names[index - 1]}`)
      .join(",")}]\n`;
  }
  return bomb;
}
