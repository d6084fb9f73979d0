import { afterEach, describe, expect, it } from "vitest";
import {
  type OrchestratorProcess,
  repoRoot,
  startOrchestratorProcess,
} from "../support/process.js";
import { rest, until } from "../support/rest.js";

// What a node loads to start: the libraries of a feature only when it is configured or first used
// (issue 10, catch-up: module loading was most of a new node's start).

const script = `${repoRoot}tests/support/loads-recorder.ts`;

/** Libraries a node needs only for a feature: Redis, OTLP export, outbound calls, OpenAPI analysis. */
const onDemand = [
  "ioredis",
  "@opentelemetry/exporter-trace-otlp-http",
  "undici",
  "cockatiel",
  "piscina",
  // fastify's schema compilers: no route of ours declares a schema.
  "@fastify/ajv-compiler",
  "ajv",
];

interface Loaded {
  readonly packages: string[];
  readonly builtins: string[];
}

/** Asks the recorder what the node has loaded so far. */
async function loadedBy(node: OrchestratorProcess): Promise<Loaded> {
  const before = node.stderr().length;
  node.child.kill("SIGUSR2");
  const line = await until("the recorder's answer", async () =>
    node
      .stderr()
      .slice(before)
      .split("\n")
      .find((l) => l.startsWith('{"loaded"')),
  );
  return (JSON.parse(line) as { loaded: Loaded }).loaded;
}

describe("what a node loads", () => {
  let node: OrchestratorProcess | undefined;
  afterEach(async () => {
    await node?.stop();
    node = undefined;
  });

  it("loads no library of a feature that is not configured nor used, nor Node's fetch", {
    timeout: 60_000,
  }, async () => {
    node = await startOrchestratorProcess({ script });
    // Calls of the kinds a new node answers while it catches up.
    expect((await rest(node.url, "GET", "/peers")).status).toBe(200);
    expect((await rest(node.url, "GET", "/registry")).status).toBe(200);
    const loaded = await loadedBy(node);
    expect(loaded.packages).toContain("fastify");
    expect(loaded.packages.filter((p) => onDemand.includes(p))).toEqual([]);
    // The first Headers of a process (a ConnectError has some) loads Node's fetch (~80 ms).
    expect(loaded.builtins.filter((m) => m.includes("undici"))).toEqual([]);
  });

  it("loads the OTLP exporter when an endpoint is configured", { timeout: 60_000 }, async () => {
    node = await startOrchestratorProcess({
      script,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" },
    });
    expect((await loadedBy(node)).packages).toContain("@opentelemetry/exporter-trace-otlp-http");
  });
});
