// bench:registry — the cost of the service registry (issue 3): a RegisterService call against the
// no-op SystemService/Ping on the same orchestrator in the same run, on the memory store, on one
// Redis and on a 3-master Redis Cluster (REDIS_CLUSTER_NODES), and the latency of listing 10,000 entries over REST (GET /registry) and gRPC.
//
// Three orchestrators run compiled (dist/), as production does: one on the memory store, one on a
// throwaway redis-server and one on a throwaway 3-master cluster started here (never the shared
// Redis on 6379). A grpc-js client keeps 64
// calls in flight against each target in turn, round after round (alternating, so that machine
// noise hits every target alike), and reads the CPU time of the orchestrator and of redis-server
// from /proc before and after. CPU per call is the sharp figure: the client shares the two cores.
// Each register re-registers one of 1,000 names (an upsert) with a realistic body.
//
//   npm run bench:registry [-- --seconds 5 --rounds 3 --warmup 2 --concurrency 64 --entries 10000]
//
// The etcd anchor (../shared/bench/) is not run here: its published figures are printed beside
// ours, labelled as such.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  ListServicesResponseSchema,
  type RegisterServiceRequest,
  RegisterServiceRequestSchema,
  RegistryService,
} from "../gen/orchestrator/v1/registry_pb.js";
import { SystemService } from "../gen/orchestrator/v1/system_pb.js";
import { createGrpcJsClient } from "../src/clients/grpc-js-client.js";
import { processCpuMicros } from "./process-cpu.js";
import {
  type BenchOrchestrator,
  type BenchRedisServer,
  closedLoop,
  count,
  fmt,
  type LoopResult,
  median,
  percentile,
  readAnchorSentence,
  startBenchOrchestrator,
  startBenchRedisCluster,
  startBenchRedisServer,
  stop,
  stopBenchRedisServer,
  writeResults,
} from "./support.js";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    rounds: { type: "string", default: "3" },
    warmup: { type: "string", default: "2" },
    concurrency: { type: "string", default: "64" },
    entries: { type: "string", default: "10000" },
  },
});
const seconds = Number(args.seconds);
const rounds = Number(args.rounds);
const warmupSeconds = Number(args.warmup);
const concurrency = Number(args.concurrency);
const entryCount = Number(args.entries);
// The rotating set of the register rounds: the first names of the listed entries.
const rotatingNames = Math.min(1_000, entryCount);
const listCalls = 20;
const listWarmupCalls = 3;
const ttlSeconds = 30;
// Register rounds of one store are 3 rounds apart: beyond the lease, the sweeper would mark the
// rotating entries DOWN in between and charge that work to the other targets.
if (3 * seconds + warmupSeconds >= ttlSeconds) {
  process.stderr.write(
    `note: rounds of ${seconds} s let the ${ttlSeconds} s leases run out between rounds\n`,
  );
}

type StoreName = "memory" | "redis" | "redis-cluster";

const targetRatios: Readonly<Record<StoreName, number>> = Object.freeze({
  memory: 1.5,
  redis: 3,
  "redis-cluster": 3,
});
const stores: readonly StoreName[] = ["memory", "redis", "redis-cluster"];

interface Orchestrator extends BenchOrchestrator {
  readonly store: StoreName;
}

/**
 * Starts the orchestrator exactly as `npm start` runs it (see `startBenchOrchestrator`), with its
 * health probes out of the way: probes of the fake base URLs would add load that is not the
 * registry's.
 */
async function startOrchestrator(
  store: StoreName,
  env: Record<string, string>,
): Promise<Orchestrator> {
  const orchestrator = await startBenchOrchestrator(store, {
    HEALTH_CHECK_INTERVAL_MS: "3600000",
    ...env,
  });
  return { ...orchestrator, store };
}

/** What a service of a real fleet declares: endpoints, a few tags and metadata, a lease. */
function registration(index: number): RegisterServiceRequest {
  const name = `svc-${String(index).padStart(5, "0")}`;
  const baseUrl = `http://${name}.bench.internal:8080`;
  return create(RegisterServiceRequestSchema, {
    name,
    baseUrl,
    openapiUrl: `${baseUrl}/openapi.json`,
    endpoints: ["/v1/items", "/v1/items/{id}", "/v1/orders"],
    metadata: { team: "payments", region: "eu-west-1", owner: `${name}@example.com` },
    tags: ["prod", "payments", "v2"],
    version: "1.4.2",
    ttlSeconds,
  });
}

const registrations = Array.from({ length: entryCount }, (_, index) => registration(index));

interface Target {
  readonly store: StoreName;
  readonly rpc: "SystemService/Ping" | "RegistryService/RegisterService";
  readonly orchestrator: Orchestrator;
  /** The redis-servers behind it (none on the memory store, three for the cluster). */
  readonly redis: readonly BenchRedisServer[];
  readonly call: () => Promise<unknown>;
}

interface Sample extends LoopResult {
  readonly cpuMicros: number;
  readonly redisCpuMicros: number;
}

function targetsOf(orchestrator: Orchestrator, redis: readonly BenchRedisServer[]): Target[] {
  const address = `127.0.0.1:${orchestrator.port}`;
  const system = createGrpcJsClient(SystemService, address);
  const registry = createGrpcJsClient(RegistryService, address);
  let next = 0;
  const common = { store: orchestrator.store, orchestrator, redis };
  return [
    { ...common, rpc: "SystemService/Ping", call: () => system.ping({}) },
    {
      ...common,
      rpc: "RegistryService/RegisterService",
      call: () => registry.registerService(registrations[next++ % rotatingNames] ?? {}),
    },
  ];
}

const redisCpu = (redis: readonly BenchRedisServer[]) =>
  redis.reduce((sum, server) => sum + processCpuMicros(server.pid), 0);

async function drive(target: Target, durationSeconds: number): Promise<Sample> {
  const cpuBefore = processCpuMicros(target.orchestrator.pid);
  const redisBefore = redisCpu(target.redis);
  const loop = await closedLoop(target.call, durationSeconds, concurrency);
  return {
    ...loop,
    cpuMicros: processCpuMicros(target.orchestrator.pid) - cpuBefore,
    redisCpuMicros: redisCpu(target.redis) - redisBefore,
  };
}

interface CallRow {
  readonly store: StoreName;
  readonly rpc: string;
  readonly callsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly orchestratorCpuMicrosPerCall: number;
  /** 0 on the memory store, which has no redis-server. */
  readonly redisCpuMicrosPerCall: number;
  readonly totalCpuMicrosPerCall: number;
}

function callRow(target: Target, runs: Sample[]): CallRow {
  const latencies = runs.flatMap((r) => r.latenciesMs).sort((a, b) => a - b);
  const orchestrator = median(runs.map((r) => r.cpuMicros / r.calls));
  const redis = median(runs.map((r) => r.redisCpuMicros / r.calls));
  return {
    store: target.store,
    rpc: target.rpc,
    callsPerSecond: median(runs.map((r) => r.calls / r.seconds)),
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    orchestratorCpuMicrosPerCall: orchestrator,
    redisCpuMicrosPerCall: redis,
    totalCpuMicrosPerCall: median(runs.map((r) => (r.cpuMicros + r.redisCpuMicros) / r.calls)),
  };
}

interface RatioRow {
  readonly store: StoreName;
  /** Register over no-op, orchestrator CPU only: the figure the target applies to. */
  readonly cpuRatio: number;
  readonly targetRatio: number;
  readonly met: boolean;
  /** Register over no-op, orchestrator and redis-server CPU together. */
  readonly totalCpuRatio: number;
  readonly throughputRatio: number;
}

function ratioRow(store: StoreName, rows: readonly CallRow[]): RatioRow {
  const noop = rows.find((r) => r.store === store && r.rpc === "SystemService/Ping");
  const register = rows.find((r) => r.store === store && r.rpc !== "SystemService/Ping");
  const ratio = (pick: (row: CallRow) => number) =>
    noop && register ? pick(register) / pick(noop) : Number.NaN;
  const cpuRatio = ratio((r) => r.orchestratorCpuMicrosPerCall);
  return {
    store,
    cpuRatio,
    targetRatio: targetRatios[store],
    met: cpuRatio <= targetRatios[store],
    totalCpuRatio: ratio((r) => r.totalCpuMicrosPerCall),
    throughputRatio: ratio((r) => r.callsPerSecond),
  };
}

/** Registers every entry (the rotating ones again: upserts), `concurrency` calls in flight. */
async function fill(orchestrator: Orchestrator): Promise<number> {
  const registry = createGrpcJsClient(RegistryService, `127.0.0.1:${orchestrator.port}`);
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    for (let index = next++; index < entryCount; index = next++) {
      await registry.registerService(registrations[index] ?? {});
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  registry.close();
  return (performance.now() - started) / 1000;
}

/** One listing: its latency (until the response is parsed), its size and its entry count. */
interface Listing {
  readonly ms: number;
  readonly bytes: number;
  readonly entries: number;
}

interface ListMethod {
  readonly name: string;
  list(): Promise<Listing>;
  close(): void;
}

function restList(orchestrator: Orchestrator): ListMethod {
  const url = `http://127.0.0.1:${orchestrator.port}/registry`;
  return {
    name: "GET /registry (HTTP/1.1 JSON)",
    async list() {
      const t0 = performance.now();
      const response = await fetch(url);
      const text = await response.text();
      const body = JSON.parse(text) as { services?: unknown[] };
      const ms = performance.now() - t0;
      if (!response.ok) throw new Error(`GET /registry answered ${response.status}`);
      return { ms, bytes: Buffer.byteLength(text), entries: body.services?.length ?? 0 };
    },
    close() {},
  };
}

function grpcList(orchestrator: Orchestrator): ListMethod {
  // 10,000 entries (~3.7 MB) come close to grpc-js' default 4 MiB receive limit; ~11,000 pass it.
  const registry = createGrpcJsClient(
    RegistryService,
    `127.0.0.1:${orchestrator.port}`,
    undefined,
    { "grpc.max_receive_message_length": 256 * 1024 * 1024 },
  );
  return {
    name: "gRPC ListServices (page_size 0)",
    async list() {
      const t0 = performance.now();
      const response = await registry.listServices({ pageSize: 0 });
      const ms = performance.now() - t0;
      const bytes = toBinary(ListServicesResponseSchema, response).length;
      return { ms, bytes, entries: response.services.length };
    },
    close: () => registry.close(),
  };
}

interface ListRow {
  readonly store: StoreName;
  readonly method: string;
  readonly calls: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly orchestratorCpuMsPerCall: number;
  readonly bytes: number;
  readonly entries: number;
  readonly met: boolean;
}

/** Sequential listings, the methods alternating, after a warm-up of each. */
async function measureListing(orchestrator: Orchestrator): Promise<ListRow[]> {
  const methods = [restList(orchestrator), grpcList(orchestrator)];
  for (const method of methods) {
    for (let i = 0; i < listWarmupCalls; i++) await method.list();
  }
  const runs = methods.map(() => ({ listings: [] as Listing[], cpuMicros: 0 }));
  for (let i = 0; i < listCalls; i++) {
    for (const [index, method] of methods.entries()) {
      const cpuBefore = processCpuMicros(orchestrator.pid);
      const listing = await method.list();
      const run = runs[index];
      if (run === undefined) continue;
      run.cpuMicros += processCpuMicros(orchestrator.pid) - cpuBefore;
      run.listings.push(listing);
    }
  }
  for (const method of methods) method.close();
  return methods.map((method, index) => {
    const run = runs[index] ?? { listings: [], cpuMicros: 0 };
    const latencies = run.listings.map((l) => l.ms).sort((a, b) => a - b);
    const last = run.listings[run.listings.length - 1];
    const p99Ms = percentile(latencies, 99);
    return {
      store: orchestrator.store,
      method: method.name,
      calls: run.listings.length,
      p50Ms: percentile(latencies, 50),
      p99Ms,
      orchestratorCpuMsPerCall: run.cpuMicros / 1000 / run.listings.length,
      bytes: last?.bytes ?? 0,
      entries: last?.entries ?? 0,
      met: p99Ms < 100 && last?.entries === entryCount,
    };
  });
}

/** The etcd anchor as ../shared/bench/README.md gives it: not measured by this bench. */
interface Anchor {
  readonly sentence: string;
  readonly putsPerSecond: number;
  readonly installed: boolean;
}

function readAnchor(): Anchor | undefined {
  const sentence = readAnchorSentence();
  if (sentence === undefined) return undefined;
  const puts = /([\d,]+) puts\/s/.exec(sentence)?.[1];
  const installed = spawnSync("etcd", ["--version"], { stdio: "ignore" }).error === undefined;
  return {
    sentence,
    putsPerSecond: puts ? Number(puts.replaceAll(",", "")) : Number.NaN,
    installed,
  };
}

function callTable(rows: readonly CallRow[]): string[] {
  return [
    `bench:registry — ${concurrency} concurrent grpc-js unary calls, ${rounds} rounds × ${seconds} s per target (medians); each register re-registers one of ${count(rotatingNames)} names (upsert, ttl ${ttlSeconds} s)`,
    "",
    "| store | rpc | calls/s | p50 ms | p99 ms | orchestrator CPU µs/call | redis-server CPU µs/call | orchestrator+redis µs/call |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
    ...rows.map(
      (r) =>
        `| ${r.store} | ${r.rpc} | ${fmt(r.callsPerSecond, 0)} | ${fmt(r.p50Ms, 2)} | ${fmt(r.p99Ms, 2)} | ${fmt(r.orchestratorCpuMicrosPerCall)} | ${r.store === "memory" ? "–" : fmt(r.redisCpuMicrosPerCall)} | ${fmt(r.totalCpuMicrosPerCall)} |`,
    ),
  ];
}

function ratioTable(rows: readonly RatioRow[]): string[] {
  return [
    "Register / no-op. The target applies to the orchestrator's own CPU; orchestrator+redis is shown beside it.",
    "",
    "| store | CPU ratio (orchestrator only) | target | met | CPU ratio (orchestrator+redis) | calls/s ratio |",
    "|---|---:|---:|---|---:|---:|",
    ...rows.map(
      (r) =>
        `| ${r.store} | ${fmt(r.cpuRatio, 2)}x | ≤ ${r.targetRatio}x | ${r.met ? "yes" : "no"} | ${fmt(r.totalCpuRatio, 2)}x | ${fmt(r.throughputRatio, 2)}x |`,
    ),
  ];
}

function listTable(rows: readonly ListRow[], fills: Readonly<Record<StoreName, number>>): string[] {
  return [
    `Listing ${count(entryCount)} entries: ${listCalls} sequential calls per method (alternating) after ${listWarmupCalls} warm-up calls; p99 of ${listCalls} calls is their maximum. Fill: ${stores.map((store) => `${count(entryCount / fills[store])} registers/s on ${store}`).join(", ")}.`,
    "",
    "| store | call | p50 ms | p99 ms | orchestrator CPU ms/call | response bytes | entries | < 100 ms |",
    "|---|---|---:|---:|---:|---:|---:|---|",
    ...rows.map(
      (r) =>
        `| ${r.store} | ${r.method} | ${fmt(r.p50Ms)} | ${fmt(r.p99Ms)} | ${fmt(r.orchestratorCpuMsPerCall)} | ${count(r.bytes)} | ${count(r.entries)} | ${r.met ? "yes" : "no"} |`,
    ),
  ];
}

function anchorLines(anchor: Anchor | undefined, rows: readonly CallRow[]): string[] {
  if (anchor === undefined)
    return ["Anchor: ../shared/bench/README.md not found; no etcd figures."];
  const registers = rows.filter((r) => r.rpc === "RegistryService/RegisterService");
  return [
    "Anchor (etcd, from ../shared/bench/README.md — NOT measured in this run; machines are noisy):",
    `> ${anchor.sentence}`,
    ...(anchor.installed
      ? ["etcd is installed: run ../shared/bench/etcd-anchor.sh in the same sitting to compare."]
      : []),
    ...registers.map(
      (r) =>
        `- register on ${r.store}: ${count(r.callsPerSecond)} calls/s = ${fmt(r.callsPerSecond / anchor.putsPerSecond, 2)}x etcd's puts/s at 64 in flight (p50 ${fmt(r.p50Ms, 2)} ms, p99 ${fmt(r.p99Ms, 2)} ms)`,
    ),
  ];
}

async function measureCalls(targets: readonly Target[]): Promise<CallRow[]> {
  for (const target of targets) await drive(target, warmupSeconds);
  const samples = new Map<Target, Sample[]>(targets.map((t) => [t, []]));
  for (let round = 0; round < rounds; round++) {
    process.stderr.write(`round ${round + 1}/${rounds}\n`);
    for (const target of targets) samples.get(target)?.push(await drive(target, seconds));
  }
  return targets.map((target) => callRow(target, samples.get(target) ?? []));
}

async function run(): Promise<void> {
  const redis = await startBenchRedisServer();
  const cluster = await startBenchRedisCluster(3);
  const orchestrators: Orchestrator[] = [];
  const prefix = () => `bench-${randomBytes(4).toString("hex")}:`;
  try {
    orchestrators.push(await startOrchestrator("memory", {}));
    orchestrators.push(
      await startOrchestrator("redis", { REDIS_URL: redis.url, REDIS_KEY_PREFIX: prefix() }),
    );
    orchestrators.push(
      await startOrchestrator("redis-cluster", {
        REDIS_CLUSTER_NODES: cluster.map((server) => `127.0.0.1:${server.port}`).join(","),
        REDIS_KEY_PREFIX: prefix(),
      }),
    );
    const serversOf: Record<StoreName, readonly BenchRedisServer[]> = {
      memory: [],
      redis: [redis],
      "redis-cluster": cluster,
    };
    await report(orchestrators, serversOf);
  } finally {
    // The orchestrators first: they say goodbye to Redis on the way out.
    await Promise.all(orchestrators.map((o) => stop(o.child)));
    await Promise.all([redis, ...cluster].map((server) => stopBenchRedisServer(server)));
  }
}

async function report(
  orchestrators: readonly Orchestrator[],
  serversOf: Readonly<Record<StoreName, readonly BenchRedisServer[]>>,
) {
  const callRows = await measureCalls(
    orchestrators.flatMap((o) => targetsOf(o, serversOf[o.store])),
  );
  const ratioRows = stores.map((store) => ratioRow(store, callRows));
  process.stderr.write(`listing ${entryCount} entries\n`);
  const fills: Record<StoreName, number> = { memory: 0, redis: 0, "redis-cluster": 0 };
  const listRows: ListRow[] = [];
  for (const orchestrator of orchestrators) {
    fills[orchestrator.store] = await fill(orchestrator);
    listRows.push(...(await measureListing(orchestrator)));
  }
  const anchor = readAnchor();
  const lines = [
    ...callTable(callRows),
    "",
    ...ratioTable(ratioRows),
    "",
    ...listTable(listRows, fills),
    "",
    ...anchorLines(anchor, callRows),
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
  const file = writeResults("registry", {
    bench: "registry",
    date: new Date().toISOString(),
    seconds,
    rounds,
    warmupSeconds,
    concurrency,
    entries: entryCount,
    rotatingNames,
    node: process.version,
    calls: callRows,
    ratios: ratioRows,
    listing: listRows,
    fillSeconds: fills,
    anchor: anchor ? { measuredInThisRun: false, ...anchor } : null,
  });
  process.stdout.write(`written ${file}\n`);
}

await run();
process.exit(0);
