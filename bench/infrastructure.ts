// bench:infrastructure — the figures of issue 8 in one run: the event store (append rate in
// process and on Redis, a page of 1,000 of 100,000 stored events), the dead-letter queue (the
// retry of 10,000 DEAD entries on Redis, each claimed once), the saga store (transitions), and
// tracing (server CPU per gRPC call with tracing on vs off). Each part is its own module, runnable
// alone (node dist/bench/infrastructure-<part>.js); this runs them in turn, prints their tables
// and writes one JSON.
//
//   npm run bench:infrastructure [-- --only events,dlq,sagas,tracing]
import { parseArgs } from "node:util";
import { runDlqBenchmarks } from "./infrastructure-dlq.js";
import { runEventBenchmarks } from "./infrastructure-events.js";
import { runSagaBenchmarks } from "./infrastructure-sagas.js";
import { runTracingBenchmarks } from "./infrastructure-tracing.js";
import { writeResults } from "./support.js";

const { values } = parseArgs({ options: { only: { type: "string", default: "" } } });

/** One part: its printable lines and its figures. */
type Part = () => Promise<{ lines: readonly string[]; json: Record<string, unknown> }>;

const parts: Record<string, Part> = {
  events: async () => {
    const { rows, json } = await runEventBenchmarks();
    return { lines: rows, json };
  },
  dlq: async () => {
    const { rows, json } = await runDlqBenchmarks();
    return { lines: rows, json };
  },
  sagas: async () => {
    const { lines, json } = await runSagaBenchmarks();
    return { lines, json };
  },
  tracing: async () => {
    const { lines, json } = await runTracingBenchmarks();
    return { lines, json };
  },
};

const selected = values.only ? values.only.split(",") : Object.keys(parts);
const results: Record<string, unknown> = { date: new Date().toISOString() };
for (const name of selected) {
  const part = parts[name];
  if (part === undefined) throw new Error(`no part ${name}: ${Object.keys(parts).join(", ")}`);
  process.stdout.write(`\n## ${name}\n\n`);
  const { lines, json } = await part();
  process.stdout.write(`${lines.join("\n")}\n`);
  results[name] = json;
}
process.stdout.write(`\nresults: ${writeResults("infrastructure", results)}\n`);
process.exit(0);
