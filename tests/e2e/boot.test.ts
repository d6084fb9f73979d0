import { afterEach, describe, expect, it } from "vitest";
import { loadedModules, loadsRecorder, onDemandPackages } from "../support/loaded-modules.js";
import { type OrchestratorProcess, startOrchestratorProcess } from "../support/process.js";
import { rest } from "../support/rest.js";

// What a node loads to start: the libraries of a feature only when it is configured or first used
// (issue 10, catch-up: module loading was most of a new node's start). tests/e2e/bundle.test.ts
// checks the same of the production bundle.

describe("what a node loads", () => {
  let node: OrchestratorProcess | undefined;
  afterEach(async () => {
    await node?.stop();
    node = undefined;
  });

  it("loads no library of a feature that is not configured nor used, nor Node's fetch", {
    timeout: 60_000,
  }, async () => {
    node = await startOrchestratorProcess({ imports: [loadsRecorder] });
    // Calls of the kinds a new node answers while it catches up.
    expect((await rest(node.url, "GET", "/peers")).status).toBe(200);
    expect((await rest(node.url, "GET", "/registry")).status).toBe(200);
    const loaded = await loadedModules(node);
    expect(loaded.packages).toContain("fastify");
    expect(loaded.packages.filter((p) => onDemandPackages.includes(p))).toEqual([]);
    // The first Headers of a process (a ConnectError has some) loads Node's fetch (~80 ms).
    expect(loaded.builtins.filter((m) => m.includes("undici"))).toEqual([]);
  });

  it("loads the OTLP exporter when an endpoint is configured", { timeout: 60_000 }, async () => {
    node = await startOrchestratorProcess({
      imports: [loadsRecorder],
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" },
    });
    expect((await loadedModules(node)).packages).toContain(
      "@opentelemetry/exporter-trace-otlp-http",
    );
  });
});
