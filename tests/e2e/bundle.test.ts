import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { RegistryService } from "../../gen/orchestrator/v1/registry_pb.js";
import { createGrpcJsClient } from "../../src/clients/grpc-js-client.js";
import { buildBundle, bundleMain, packagesInBundleFiles } from "../support/bundle.js";
import { type FakeService, startFakeService } from "../support/fake-service.js";
import { loadedModules, loadsRecorder, onDemandPackages } from "../support/loaded-modules.js";
import { type OrchestratorProcess, startOrchestratorProcess } from "../support/process.js";
import { rest } from "../support/rest.js";

// The production bundle (dist/bundle/, scripts/bundle.mjs) that `npm start` runs: built here once,
// since CI runs `npm test` with no build step before it, then run as production runs it.

beforeAll(buildBundle, 180_000);

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startBundle(
  options: { env?: Record<string, string>; recordLoads?: boolean } = {},
): Promise<OrchestratorProcess> {
  const node = await startOrchestratorProcess({
    script: bundleMain,
    // As `npm start` runs it.
    nodeArgs: ["--enable-source-maps"],
    ...(options.recordLoads ? { imports: [loadsRecorder] } : {}),
    ...(options.env ? { env: options.env } : {}),
  });
  cleanups.push(() => node.stop());
  return node;
}

/** Packages loaded so far: from node_modules, and those inside the bundle's chunks loaded. */
async function packagesLoaded(node: OrchestratorProcess) {
  const loaded = await loadedModules(node);
  return {
    fromNodeModules: loaded.packages,
    fromBundle: await packagesInBundleFiles(loaded.files),
    builtins: loaded.builtins,
  };
}

describe("what the bundle loads", () => {
  it("loads no chunk holding a library of a feature not configured nor used, nor Node's fetch", {
    timeout: 60_000,
  }, async () => {
    const node = await startBundle({ recordLoads: true });
    // Calls of the kinds a new node answers while it catches up.
    expect((await rest(node.url, "GET", "/peers")).status).toBe(200);
    expect((await rest(node.url, "GET", "/registry")).status).toBe(200);
    const loaded = await packagesLoaded(node);
    // fastify runs from the bundle, not from node_modules.
    expect(loaded.fromBundle).toContain("fastify");
    expect(loaded.fromNodeModules).not.toContain("fastify");
    const all = [...loaded.fromBundle, ...loaded.fromNodeModules];
    expect(all.filter((p) => onDemandPackages.includes(p))).toEqual([]);
    expect(loaded.builtins.filter((m) => m.includes("undici"))).toEqual([]);
  });

  it("loads the chunk of the OTLP exporter when an endpoint is configured", {
    timeout: 60_000,
  }, async () => {
    const node = await startBundle({
      recordLoads: true,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" },
    });
    const loaded = await packagesLoaded(node);
    expect(loaded.fromBundle).toContain("@opentelemetry/exporter-trace-otlp-http");
    expect(loaded.fromBundle).not.toContain("ioredis");
  });
});

describe("the bundle end to end", () => {
  async function startFake(): Promise<FakeService> {
    const fake = await startFakeService();
    cleanups.push(() => fake.close());
    return fake;
  }

  it("registers over REST, answers gRPC, analyses OpenAPI in its worker thread, stops on SIGTERM", {
    timeout: 90_000,
  }, async () => {
    const fake = await startFake();
    fake.serveDocument({
      openapi: "3.0.3",
      info: { title: "catalog", version: "1.0.0" },
      paths: { "/items": { get: { responses: { "200": { description: "ok" } } } } },
    });
    const node = await startBundle();

    const registered = await rest(node.url, "POST", "/registry/register", {
      name: "catalog",
      base_url: fake.url,
      openapi_url: fake.openapiUrl,
      version: "1.2.3",
    });
    expect(registered.status, registered.text).toBe(200);
    const read = await rest(node.url, "GET", "/registry/catalog");
    expect(read.status, read.text).toBe(200);
    expect(read.body).toMatchObject({ name: "catalog", version: "1.2.3" });

    const grpc = createGrpcJsClient(RegistryService, `127.0.0.1:${node.port}`);
    cleanups.push(() => grpc.close());
    const viaGrpc = await grpc.getService({ name: "catalog" });
    expect(viaGrpc.service).toMatchObject({ name: "catalog", version: "1.2.3", baseUrl: fake.url });

    // Parsed and summarised by dist/bundle/openapi-worker.js on a piscina worker thread.
    const polled = await rest(node.url, "POST", "/registry/poll-openapi", {});
    expect(polled.status, polled.text).toBe(200);
    expect(polled.body.results).toEqual([
      { service: "catalog", changed: false, baseline: true, hash: expect.any(String), error: "" },
    ]);
    expect(fake.requests.filter((r) => r.path === "/openapi.json")).toHaveLength(1);

    expect(await node.stop("SIGTERM")).toEqual({ code: 0, signal: null });
    expect(node.stdout()).toContain('"msg":"shut down"');
    expect(node.stderr()).toBe("");
  });
});
