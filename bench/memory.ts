// bench:memory — what hostile but valid traffic does to a node's heap (issue 7, item 1).
//
// Each scenario starts a fresh orchestrator as `npm start` runs it (compiled, memory store, default
// settings, no heap limit flags), opens watch streams that are never read (stalled watchers: the
// worst case for anything queued per watcher), sends its registrations over REST with a few in
// flight, lists the registry twice (so that every entry's API message and encodings are cached, as
// a busy node's are), then has the node collect its garbage (SIGUSR2, handled by a bench-only
// preload, bench/gc-on-signal.ts) and reads its heap (`nodejs_heap_size_used_bytes` on /metrics)
// and its peak resident set (VmHWM in /proc). A node that dies is reported as such.
//
//   npm run bench:memory [-- --writes 16000 --fill 30000 --churn 50000 --concurrency 8 --watchers 10]
//
// Scenarios:
// - oversize: the issue's registrations (about 324 KB: 64 metadata keys of 128 characters with
//   1,024-character values, 500 endpoints of 512 characters) over 10 names.
// - largest: the largest registration the entry limits accept (just under 16 KiB), over 10 names.
// - fill: the largest accepted registration under new names, until the registry refuses (or --fill).
// - churn: register then deregister new names (tombstones), --churn times.
// - ceiling: the registry filled to REGISTRY_MAX_BYTES with the largest registrations, then
//   --writes updates of them (every version in the change log, up to its bound): what a node
//   holds at most, with the default bounds.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import {
  type BenchOrchestrator,
  count,
  fmt,
  startBenchOrchestrator,
  stop,
  writeResults,
} from "./support.js";

const { values: args } = parseArgs({
  options: {
    writes: { type: "string", default: "16000" },
    fill: { type: "string", default: "30000" },
    churn: { type: "string", default: "50000" },
    concurrency: { type: "string", default: "8" },
    watchers: { type: "string", default: "10" },
    only: { type: "string", default: "" },
  },
});
const writes = Number(args.writes);
const fillLimit = Number(args.fill);
const churnCount = Number(args.churn);
const concurrency = Number(args.concurrency);
const watcherCount = Number(args.watchers);

type Body = Record<string, unknown>;

const chars = (length: number, seed: string) =>
  seed.repeat(Math.ceil(length / seed.length)).slice(0, length);

/** The issue's registration: every field at the limits the API had when the issue was filed. */
function oversize(name: string, round: number): Body {
  const metadata: Record<string, string> = {};
  for (let i = 0; i < 64; i++) {
    metadata[chars(128, `k${i}-`)] = chars(1024, `v${round}-${i}-`);
  }
  return {
    name,
    base_url: `http://${name}.bench.internal:8080`,
    endpoints: Array.from({ length: 500 }, (_, i) => `/${chars(511, `e${round}-${i}-`)}`),
    metadata,
    tags: ["bench"],
    version: `r${round}`,
  };
}

/** The largest registration the entry limits accept: metadata filling the 16 KiB total. */
function largest(name: string, round: number): Body {
  const metadata: Record<string, string> = {};
  // 24 pairs of 128 + 512 characters: 15,360 bytes, plus the name, URL and version.
  for (let i = 0; i < 24; i++) metadata[chars(128, `k${i}-`)] = chars(512, `v${round}-${i}-`);
  return {
    name,
    base_url: `http://${name}.bench.internal:8080`,
    metadata,
    // Fixed width: an update weighs what the version it replaces weighed.
    version: `r${String(round).padStart(8, "0")}`,
  };
}

interface Outcome {
  readonly scenario: string;
  readonly sent: number;
  readonly accepted: number;
  readonly refused: Record<string, number>;
  readonly died: boolean;
  readonly heapUsedMb: number;
  readonly peakRssMb: number;
  readonly seconds: number;
}

async function post(url: string, body: Body | undefined, method = "POST"): Promise<number> {
  try {
    const response = await fetch(url, {
      method,
      headers: body ? { "content-type": "application/json" } : {},
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return 0;
  }
}

/** Watch streams opened and never read: whatever the node queues for them, it keeps. */
function stalledWatchers(port: number): AbortController {
  const abort = new AbortController();
  for (let i = 0; i < watcherCount; i++) {
    fetch(`http://127.0.0.1:${port}/registry/watch`, { signal: abort.signal }).catch(() => {});
  }
  return abort;
}

async function heapUsedMb(port: number): Promise<number> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const match = /^nodejs_heap_size_used_bytes (\S+)$/m.exec(text);
    return match ? Number(match[1]) / 2 ** 20 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

function peakRssMb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const match = /^VmHWM:\s+(\d+) kB$/m.exec(status);
    return match ? Number(match[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Sends `total` requests made by `request(i)`, `concurrency` at a time; stops early if `until`. */
async function drive(
  total: number,
  request: (index: number) => Promise<number>,
  until: (status: number) => boolean = () => false,
): Promise<{ sent: number; statuses: Map<number, number> }> {
  const statuses = new Map<number, number>();
  let next = 0;
  let stopped = false;
  const worker = async () => {
    for (let index = next++; index < total && !stopped; index = next++) {
      const status = await request(index);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      if (status === 0 || until(status)) stopped = true;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { sent: Math.min(next, total), statuses };
}

async function scenario(
  name: string,
  run: (
    node: BenchOrchestrator,
    base: string,
  ) => Promise<{ sent: number; statuses: Map<number, number> }>,
): Promise<Outcome> {
  const preload = new URL("./gc-on-signal.js", import.meta.url).pathname;
  const node = await startBenchOrchestrator(`memory-${name}`, {}, [
    "--expose-gc",
    "--import",
    preload,
  ]);
  const base = `http://127.0.0.1:${node.port}`;
  const watchers = stalledWatchers(node.port);
  const started = performance.now();
  const { sent, statuses } = await run(node, base);
  const seconds = (performance.now() - started) / 1000;
  for (let i = 0; i < 2; i++)
    await fetch(`${base}/registry`).then(
      (r) => r.arrayBuffer(),
      () => {},
    );
  const died = node.child.exitCode !== null || node.child.signalCode !== null;
  if (!died) node.child.kill("SIGUSR2");
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const outcome: Outcome = {
    scenario: name,
    sent,
    accepted: statuses.get(200) ?? 0,
    refused: Object.fromEntries(
      [...statuses].filter(([status]) => status !== 200).map(([s, n]) => [String(s), n]),
    ),
    died,
    heapUsedMb: died ? Number.NaN : await heapUsedMb(node.port),
    peakRssMb: peakRssMb(node.pid),
    seconds,
  };
  watchers.abort();
  await stop(node.child);
  return outcome;
}

const scenarios: Record<string, () => Promise<Outcome>> = {
  oversize: () =>
    scenario("oversize", (_node, base) =>
      drive(writes, (i) => post(`${base}/registry/register`, oversize(`svc-${i % 10}`, i))),
    ),
  largest: () =>
    scenario("largest", (_node, base) =>
      drive(writes, (i) => post(`${base}/registry/register`, largest(`svc-${i % 10}`, i))),
    ),
  fill: () =>
    scenario("fill", (_node, base) =>
      drive(
        fillLimit,
        (i) => post(`${base}/registry/register`, largest(`svc-${i}`, i)),
        (status) => status === 429,
      ),
    ),
  ceiling: () =>
    scenario("ceiling", async (_node, base) => {
      const filled = await drive(
        fillLimit,
        (i) => post(`${base}/registry/register`, largest(`svc-${i}`, i)),
        (status) => status === 429,
      );
      const names = filled.statuses.get(200) ?? 0;
      const updated = await drive(writes, (i) =>
        post(`${base}/registry/register`, largest(`svc-${i % names}`, i + fillLimit)),
      );
      const statuses = new Map(filled.statuses);
      for (const [status, n] of updated.statuses)
        statuses.set(status, (statuses.get(status) ?? 0) + n);
      return { sent: filled.sent + updated.sent, statuses };
    }),
  churn: () =>
    scenario("churn", (_node, base) =>
      drive(churnCount, async (i) => {
        const status = await post(`${base}/registry/register`, {
          name: `gone-${i}`,
          base_url: "http://gone.bench.internal:8080",
        });
        return status === 200 ? post(`${base}/registry/gone-${i}`, undefined, "DELETE") : status;
      }),
    ),
};

async function main(): Promise<void> {
  const selected = args.only ? args.only.split(",") : Object.keys(scenarios);
  const outcomes: Outcome[] = [];
  for (const name of selected) {
    const run = scenarios[name];
    if (run === undefined) throw new Error(`no scenario ${name}`);
    const outcome = await run();
    outcomes.push(outcome);
    process.stdout.write(`${JSON.stringify(outcome)}\n`);
  }
  const lines = [
    "",
    `| scenario | requests | accepted | refused (status: count) | node | heap used MB | peak RSS MB | s |`,
    "|---|---:|---:|---|---|---:|---:|---:|",
    ...outcomes.map(
      (o) =>
        `| ${o.scenario} | ${count(o.sent)} | ${count(o.accepted)} | ${
          Object.entries(o.refused)
            .map(([s, n]) => `${s}: ${count(n)}`)
            .join(", ") || "–"
        } | ${o.died ? "**died**" : "alive"} | ${fmt(o.heapUsedMb)} | ${fmt(o.peakRssMb)} | ${fmt(o.seconds)} |`,
    ),
    "",
  ];
  process.stdout.write(lines.join("\n"));
  const file = writeResults("memory", {
    date: new Date().toISOString(),
    args: { writes, fillLimit, churnCount, concurrency, watcherCount },
    outcomes,
  });
  process.stdout.write(`results: ${file}\n`);
}

await main();
