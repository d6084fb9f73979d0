// An orchestrator node as src/main.ts starts it, with one dead-letter handler more, for the tests
// that run real processes: entries of type "test.http" are retried by POSTing
// {"dlq_id", "attempts", "pid"} to `${DLQ_TEST_SINK_URL}/run`; an answer other than 2xx fails the
// retry. The sink lives in the test process, so every run of every node is seen from outside.
// Run with `startOrchestratorProcess({ script: dlqNodeScript, env: { DLQ_TEST_SINK_URL, ... } })`.
import { fileURLToPath } from "node:url";
import { createApp } from "../../src/app.js";
import { loadConfig } from "../../src/config/index.js";

/** This script's path, for `startOrchestratorProcess({ script })`. */
export const dlqNodeScript = fileURLToPath(import.meta.url);

async function main(): Promise<void> {
  const sink = process.env.DLQ_TEST_SINK_URL ?? "";
  const { config, effective } = loadConfig();
  const app = await createApp(config, effective, {
    withDeadLetters(deadLetters) {
      deadLetters.handle("test.http", async (entry) => {
        const response = await fetch(`${sink}/run`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ dlq_id: entry.dlqId, attempts: entry.attempts, pid: process.pid }),
          signal: entry.signal,
        });
        await response.arrayBuffer();
        if (!response.ok) throw new Error(`the sink answered ${response.status}`);
      });
    },
  });
  const stop = () => {
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  await app.listen();
}

// Imported for its path by the tests; run as a node only as the process' entry script.
if (process.argv[1] === dlqNodeScript) {
  main().catch((error: unknown) => {
    process.stderr.write(
      `failed to start: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    process.exit(1);
  });
}
