// What an orchestrator process has loaded, as tests/support/loads-recorder.mjs (preloaded into it)
// reports on SIGUSR2: for the tests that check a feature's libraries load only when it is
// configured or used (issue 10, catch-up: module loading was most of a new node's start).
import type { OrchestratorProcess } from "./process.js";
import { repoRoot } from "./process.js";
import { until } from "./rest.js";

/** The preload that records what a process loads, for `imports` of startOrchestratorProcess. */
export const loadsRecorder = `${repoRoot}tests/support/loads-recorder.mjs`;

/** Libraries a node needs only for a feature: Redis, OTLP export, outbound calls, OpenAPI analysis. */
export const onDemandPackages: readonly string[] = [
  "ioredis",
  "@opentelemetry/exporter-trace-otlp-http",
  "undici",
  "cockatiel",
  "piscina",
  // fastify's schema compilers: no route of ours declares a schema.
  "@fastify/ajv-compiler",
  "ajv",
];

/** What a process has loaded so far. */
export interface LoadedModules {
  /** Packages of the module files loaded from node_modules, sorted. */
  readonly packages: string[];
  /** Every module file loaded (ES modules by URL, CommonJS ones by path). */
  readonly files: string[];
  /** Node's own modules (`process.moduleLoadList`). */
  readonly builtins: string[];
}

/** Asks the recorder preloaded into `node` what it has loaded so far. */
export async function loadedModules(node: OrchestratorProcess): Promise<LoadedModules> {
  const before = node.stderr().length;
  node.child.kill("SIGUSR2");
  const line = await until("the recorder's answer", async () =>
    node
      .stderr()
      .slice(before)
      .split("\n")
      .find((l) => l.startsWith('{"loaded"')),
  );
  return (JSON.parse(line) as { loaded: LoadedModules }).loaded;
}
