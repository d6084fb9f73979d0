// bench:infrastructure (DLQ part) — the figure: retrying 10,000 DEAD entries on Redis takes
// at most 2 s end to end, each entry claimed once.
//
// What runs: orchestrator apps built in this process by createApp (compiled, as `npm start` runs
// them: this file runs from dist/), serving on loopback, on a throwaway redis-server started here
// (never the shared one on 6379). Each app is given, through the `withDeadLetters` hook, a handler
// for the type "bench.noop" that only counts its runs. The entries are added through the apps'
// own DeadLetters (not timed), then an operator's RetryDlq over gRPC (grpc-js) retries them all:
// the time is from sending the call to its answer, so it holds selection, claims, the handler
// runs and the outcomes written to Redis. Two scenarios: one node retrying the 10,000 by filter,
// and two nodes sharing the Redis both retrying all 10,000 at once (they race for every claim).
// Checked in every round: each entry's handler ran exactly once, and the stored counts say
// 10,000 retried and resolved.
//
//   npm run build && node dist/bench/infrastructure-dlq.js [-- --entries 10000 --rounds 3]
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import {
  DlqState,
  InfrastructureService,
  type RetryDlqResponse,
} from "../gen/orchestrator/v1/infrastructure_pb.js";
import { type App, createApp } from "../src/app.js";
import { createGrpcJsClient } from "../src/clients/grpc-js-client.js";
import { loadConfig } from "../src/config/index.js";
import type { DeadLetters } from "../src/dlq/dead-letters.js";
import { processCpuMicros } from "./process-cpu.js";
import {
  type BenchRedisServer,
  fmt,
  median,
  startBenchRedisServer,
  stopBenchRedisServer,
  writeResults,
} from "./support.js";

/** One scenario's figures over its rounds. */
interface DlqBenchRow {
  readonly scenario: string;
  readonly nodes: number;
  readonly entries: number;
  readonly roundsMs: readonly number[];
  readonly medianMs: number;
  /** CPU time of this process (the nodes and the client) and of redis-server, median per round. */
  readonly nodeCpuMs: number;
  readonly redisCpuMs: number;
  /** The machine's 1-minute load average at the end of each round (other work on it). */
  readonly loadAverages: readonly number[];
  readonly maxMs: number;
  readonly entriesPerSecond: number;
  /** Every round: each handler ran once, stored counts agree. */
  readonly claimedOnce: boolean;
  readonly targetMs: number;
}

const targetMs = 2_000;

/** A node of the bench: an app on loopback and the runs its handler counted. */
interface BenchNode {
  readonly app: App;
  readonly address: string;
  readonly deadLetters: DeadLetters;
  close(): Promise<void>;
}

async function startNode(
  redisUrl: string,
  prefix: string,
  runs: Map<string, number>,
): Promise<BenchNode> {
  const dir = mkdtempSync(join(tmpdir(), "bench-dlq-"));
  const { config, effective } = loadConfig({
    env: {
      HOST: "127.0.0.1",
      PORT: "0",
      LOG_LEVEL: "warn",
      REDIS_URL: redisUrl,
      REDIS_KEY_PREFIX: prefix,
      // The defaults otherwise: DLQ_RETRY_CONCURRENCY 32.
    },
    cwd: dir,
    secretsDir: join(dir, "secrets"),
  });
  let deadLetters: DeadLetters | undefined;
  const app = await createApp(config, effective, {
    logDestination: { write: () => true },
    withDeadLetters(queue) {
      deadLetters = queue;
      queue.handle("bench.noop", async (entry) => {
        runs.set(entry.dlqId, (runs.get(entry.dlqId) ?? 0) + 1);
      });
    },
  });
  const { port } = await app.listen();
  if (deadLetters === undefined) throw new Error("the app did not hand out its dead letters");
  return {
    app,
    address: `127.0.0.1:${port}`,
    deadLetters,
    async close() {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Adds `count` DEAD entries through the node's DeadLetters, 200 at a time. */
async function seed(deadLetters: DeadLetters, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let start = 0; start < count; start += 200) {
    const batch = Array.from({ length: Math.min(200, count - start) }, (_, i) =>
      deadLetters.add({
        eventType: "bench.noop",
        payload: { index: start + i, channel: "orders", body: "x".repeat(200) },
        failureReason: "connection refused",
        serviceName: "billing",
        correlationId: `bench-${start + i}`,
        maxAttempts: 0,
      }),
    );
    ids.push(...(await Promise.all(batch)));
  }
  return ids;
}

interface Sample {
  readonly ms: number;
  readonly claimedOnce: boolean;
  readonly nodeCpuMs: number;
  readonly redisCpuMs: number;
  readonly load: number;
}

/** One round: fresh prefix, `nodes` apps, `count` entries, every node retrying all at once. */
async function round(redis: BenchRedisServer, nodeCount: number, count: number): Promise<Sample> {
  const prefix = `bench-dlq-${randomBytes(4).toString("hex")}:`;
  const runs = new Map<string, number>();
  const nodes: BenchNode[] = [];
  const clients: ReturnType<typeof createGrpcJsClient<typeof InfrastructureService>>[] = [];
  try {
    for (let i = 0; i < nodeCount; i++) nodes.push(await startNode(redis.url, prefix, runs));
    const first = nodes[0] as BenchNode;
    const ids = await seed(first.deadLetters, count);
    for (const node of nodes) clients.push(createGrpcJsClient(InfrastructureService, node.address));
    // A first call on each connection, so that the timed one does not pay for connecting.
    await Promise.all(clients.map((client) => client.getDlqStats({})));
    const cpu = process.cpuUsage();
    const redisCpu = processCpuMicros(redis.pid);
    const started = performance.now();
    const answers: RetryDlqResponse[] = await Promise.all(
      clients.map((client) =>
        client.retryDlq({ eventType: "bench.noop", state: DlqState.DEAD, limit: count }),
      ),
    );
    const ms = performance.now() - started;
    const used = process.cpuUsage(cpu);
    const nodeCpuMs = (used.user + used.system) / 1000;
    const redisCpuMs = (processCpuMicros(redis.pid) - redisCpu) / 1000;
    const stats = await (clients[0] as (typeof clients)[number]).getDlqStats({});
    const resolvedInAnswers = answers.reduce(
      (sum, answer) => sum + answer.results.filter((r) => r.outcome === "resolved").length,
      0,
    );
    const claimedOnce =
      runs.size === count &&
      ids.every((id) => runs.get(id) === 1) &&
      resolvedInAnswers === count &&
      answers.reduce((sum, answer) => sum + answer.retriedEvents, 0) === count &&
      stats.resolved === count &&
      stats.retriedEvents === count &&
      stats.deadEvents === 0;
    return { ms, claimedOnce, nodeCpuMs, redisCpuMs, load: loadavg()[0] ?? 0 };
  } finally {
    for (const client of clients) client.close();
    for (const node of nodes) await node.close();
  }
}

/**
 * Runs the DLQ scenarios (`entries` DEAD entries, `rounds` rounds each) on a throwaway
 * redis-server and returns the table's lines (markdown) and the figures as JSON.
 */
export async function runDlqBenchmarks(
  options: { entries?: number; rounds?: number } = {},
): Promise<{ rows: string[]; json: Record<string, unknown> }> {
  const entries = options.entries ?? 10_000;
  const rounds = options.rounds ?? 3;
  const redis = await startBenchRedisServer();
  const results: DlqBenchRow[] = [];
  try {
    for (const [scenario, nodes] of [
      ["RetryDlq by filter, one node", 1],
      ["RetryDlq of all on two nodes at once", 2],
    ] as const) {
      const samples: Sample[] = [];
      for (let i = 0; i < rounds; i++) {
        process.stderr.write(`dlq: ${scenario}, round ${i + 1}/${rounds}\n`);
        samples.push(await round(redis, nodes, entries));
      }
      const roundsMs = samples.map((s) => s.ms);
      const medianMs = median(roundsMs);
      results.push({
        scenario,
        nodes,
        entries,
        roundsMs,
        medianMs,
        nodeCpuMs: median(samples.map((x) => x.nodeCpuMs)),
        redisCpuMs: median(samples.map((x) => x.redisCpuMs)),
        loadAverages: samples.map((x) => Math.round(x.load * 10) / 10),
        maxMs: Math.max(...roundsMs),
        entriesPerSecond: entries / (medianMs / 1000),
        claimedOnce: samples.every((s) => s.claimedOnce),
        targetMs,
      });
    }
  } finally {
    await stopBenchRedisServer(redis);
  }
  const rows = [
    `DLQ: retry of ${entries.toLocaleString("en-US")} DEAD entries on Redis, end to end (gRPC RetryDlq, ${rounds} rounds)`,
    "",
    "| scenario | nodes | median ms | max ms | entries/s | node CPU ms | redis CPU ms | load avg | each claimed once | target ≤ 2,000 ms |",
    "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ...results.map(
      (r) =>
        `| ${r.scenario} | ${r.nodes} | ${fmt(r.medianMs, 0)} | ${fmt(r.maxMs, 0)} | ${fmt(r.entriesPerSecond, 0)} | ${fmt(r.nodeCpuMs, 0)} | ${fmt(r.redisCpuMs, 0)} | ${r.loadAverages.join(", ")} | ${r.claimedOnce ? "yes" : "NO"} | ${r.medianMs <= targetMs ? "met" : "missed"} (median) |`,
    ),
  ];
  const json = {
    bench: "infrastructure-dlq",
    date: new Date().toISOString(),
    node: process.version,
    entries,
    rounds,
    targetMs,
    how: "apps built in the bench process (compiled), RetryDlq over grpc-js on loopback, throwaway redis-server",
    scenarios: results,
  };
  return { rows, json };
}

// Run on its own: print the table and write bench/results/infrastructure-dlq-<time>.json.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      entries: { type: "string", default: "10000" },
      rounds: { type: "string", default: "3" },
    },
  });
  runDlqBenchmarks({ entries: Number(values.entries), rounds: Number(values.rounds) }).then(
    ({ rows, json }) => {
      process.stdout.write(`${rows.join("\n")}\n`);
      process.stdout.write(`written ${writeResults("infrastructure-dlq", json)}\n`);
      process.exit(0);
    },
    (error: unknown) => {
      process.stderr.write(
        `${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
      process.exit(1);
    },
  );
}
