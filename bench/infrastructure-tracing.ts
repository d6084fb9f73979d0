// Tracing's cost (issue 8): server CPU per unary gRPC call with tracing on vs off, measured as
// bench:grpc measures it: a grpc-js client keeps calls in flight against each compiled
// orchestrator in turn, round after round (alternating, so machine noise hits both alike), and
// each server's CPU time is read from /proc around every round. The call is SystemService/Ping,
// the cheapest the node serves, so the span's cost shows at its largest; measured twice: calls
// that start their trace at the node, and calls continuing a caller's traceparent (each against
// tracing off with the same calls). The node's trace store is full (10,000 traces) early on, so
// eviction is part of what is measured.
//
//   npm run build && node dist/bench/infrastructure-tracing.js [--seconds 5 --rounds 3]
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import { SystemService } from "../gen/orchestrator/v1/system_pb.js";
import { createGrpcJsClient } from "../src/clients/grpc-js-client.js";
import { randomIds } from "../src/ids.js";
import { processCpuMicros } from "./process-cpu.js";
import {
  type BenchOrchestrator,
  closedLoop,
  fmt,
  median,
  percentile,
  startBenchOrchestrator,
  stop,
  writeResults,
} from "./support.js";

/** What {@link runTracingBenchmarks} takes. */
export interface TracingBenchOptions {
  /** Seconds per target per round. Default 5. */
  readonly seconds?: number;
  /** Rounds over every target. Default 3. */
  readonly rounds?: number;
  /** Calls in flight. Default 64. */
  readonly concurrency?: number;
}

interface Target {
  readonly name: string;
  readonly server: BenchOrchestrator;
  readonly call: () => Promise<unknown>;
  readonly close: () => void;
}

/** Runs the comparison; returns its table lines and its figures. */
export async function runTracingBenchmarks(options: TracingBenchOptions = {}) {
  const seconds = options.seconds ?? 5;
  const rounds = options.rounds ?? 3;
  const concurrency = options.concurrency ?? 64;
  const off = await startBenchOrchestrator("tracing off", { TRACING_ENABLED: "false" });
  const on = await startBenchOrchestrator("tracing on", { TRACING_ENABLED: "true" });
  // A new trace per call, as callers send them (one trace id for all would fill its trace and
  // have every later span dropped early, which is cheaper than keeping it).
  const traceparent = () => ({
    traceparent: `00-${randomIds.traceId()}-${randomIds.spanId()}-01`,
  });
  // Each "on" is compared with the "off" of the same calls: a traceparent header costs the
  // server its decoding and parsing whether tracing is on or not.
  const targets = [
    pingTarget("tracing off", off),
    pingTarget("tracing on, trace starts here", on),
    pingTarget("tracing off, caller's traceparent", off, traceparent),
    pingTarget("tracing on, caller's traceparent", on, traceparent),
  ];
  try {
    for (const target of targets) await drive(target, 2, concurrency);
    const samples = new Map<string, Sample[]>(targets.map((t) => [t.name, []]));
    for (let round = 0; round < rounds; round++) {
      for (const target of targets) {
        samples.get(target.name)?.push(await drive(target, seconds, concurrency));
      }
    }
    const stats = (await (
      await fetch(`http://127.0.0.1:${on.port}/infrastructure/tracing/stats`)
    ).json()) as { total_traces: number; total_spans: number };
    const rows = targets.map((target) => summarize(target.name, samples.get(target.name) ?? []));
    const table = rows.map((row, index) => {
      const baseline = rows[index - (index % 2)];
      return {
        ...row,
        cpuRatio: baseline ? row.cpuMicrosPerCall / baseline.cpuMicrosPerCall : Number.NaN,
      };
    });
    const lines = [
      `tracing: SystemService/Ping over grpc-js, ${concurrency} in flight, ${rounds} rounds × ${seconds} s per target (medians)`,
      "",
      "| target | calls/s | p50 ms | p99 ms | server CPU µs/call (rounds) | CPU vs off (same calls) |",
      "|---|---:|---:|---:|---:|---:|",
      ...table.map(
        (r) =>
          `| ${r.target} | ${fmt(r.callsPerSecond, 0)} | ${fmt(r.p50Ms, 2)} | ${fmt(r.p99Ms, 2)} | ${fmt(r.cpuMicrosPerCall)} (${r.roundCpuMicros.map((c) => fmt(c)).join(", ")}) | ${fmt(r.cpuRatio, 2)}x |`,
      ),
      "",
      `trace store of the traced node at the end: ${stats.total_traces} traces, ${stats.total_spans} spans (full: the oldest are evicted as calls come)`,
    ];
    return {
      lines,
      json: { seconds, rounds, concurrency, node: process.version, rows: table, store: stats },
    };
  } finally {
    for (const target of targets) target.close();
    await Promise.all([off, on].map((server) => stop(server.child)));
  }
}

interface Sample {
  readonly calls: number;
  readonly seconds: number;
  readonly latenciesMs: number[];
  readonly cpuMicros: number;
}

function pingTarget(
  name: string,
  server: BenchOrchestrator,
  metadata: () => Record<string, string> = () => ({}),
): Target {
  const client = createGrpcJsClient(SystemService, `127.0.0.1:${server.port}`);
  const request = create(SystemService.method.ping.input);
  return {
    name,
    server,
    call: () => client.ping(request, { metadata: metadata() }),
    close: () => client.close(),
  };
}

async function drive(target: Target, seconds: number, concurrency: number): Promise<Sample> {
  const before = processCpuMicros(target.server.pid);
  const loop = await closedLoop(target.call, seconds, concurrency);
  return { ...loop, cpuMicros: processCpuMicros(target.server.pid) - before };
}

function summarize(target: string, runs: readonly Sample[]) {
  const latencies = runs.flatMap((r) => r.latenciesMs).sort((a, b) => a - b);
  const roundCpuMicros = runs.map((r) => r.cpuMicros / r.calls);
  return {
    target,
    callsPerSecond: median(runs.map((r) => r.calls / r.seconds)),
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    cpuMicrosPerCall: median(roundCpuMicros),
    roundCpuMicros,
  };
}

// Run directly: print the table and keep the JSON.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      seconds: { type: "string" },
      rounds: { type: "string" },
      concurrency: { type: "string" },
    },
  });
  const { lines, json } = await runTracingBenchmarks({
    ...(values.seconds ? { seconds: Number(values.seconds) } : {}),
    ...(values.rounds ? { rounds: Number(values.rounds) } : {}),
    ...(values.concurrency ? { concurrency: Number(values.concurrency) } : {}),
  });
  process.stdout.write(`${lines.join("\n")}\n`);
  process.stdout.write(`written ${writeResults("infrastructure-tracing", json)}\n`);
  process.exit(0);
}
