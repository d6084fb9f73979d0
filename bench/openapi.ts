// bench:openapi — what polling large OpenAPI documents costs the orchestrator (issue 7, item 2):
// the event-loop delay of the orchestrator process while `services` documents of `operations`
// operations each (85,000 in 5.1 MB by default, under OPENAPI_MAX_BYTES) are polled at once,
// the latency of GET /health meanwhile, and the bytes each baseline takes in Redis.
//
// The orchestrator runs compiled (dist/), as production does, on a throwaway redis-server started
// here (never the shared one on 6379); the fake services run in this process. The delay comes
// from the orchestrator's own /metrics (prom-client's monitorEventLoopDelay, 10 ms resolution,
// reset by every scrape): one scrape before a poll, one after, so each row covers that poll only.
// The CPU time of the orchestrator's main thread (from /proc) is the load-independent figure: on a
// busy machine the delay also counts the time the loop waited for a core.
// Three polls: the first records the baselines, the second finds `drift` operations moved, the
// third finds the same document again.
//
//   npm run bench:openapi [-- --services 4 --operations 85000 --drift 1000 --max-operations 100000]
//
// `--max-operations` is passed as OPENAPI_MAX_OPERATIONS, raised over its default so that these
// documents go the whole way (parse, summary, diff, stored baseline) rather than being refused.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";
import { largeOpenApiDocument } from "../tests/support/large-openapi.js";
import { mainThreadCpuMicros, processCpuMicros } from "./process-cpu.js";
import {
  type BenchOrchestrator,
  type BenchRedisServer,
  count,
  fmt,
  percentile,
  startBenchOrchestrator,
  startBenchRedisServer,
  stop,
  stopBenchRedisServer,
  writeResults,
} from "./support.js";

const { values: args } = parseArgs({
  options: {
    services: { type: "string", default: "4" },
    operations: { type: "string", default: "85000" },
    drift: { type: "string", default: "1000" },
    "max-operations": { type: "string", default: "100000" },
  },
});
const serviceCount = Number(args.services);
const operations = Number(args.operations);
const drift = Number(args.drift);
const maxOperations = args["max-operations"];

/** A service whose document the bench swaps between polls. */
interface FakeDocumentService {
  readonly server: Server;
  readonly url: string;
}

let served = Buffer.alloc(0);

async function startFake(): Promise<FakeDocumentService> {
  const server = createServer((_request, response) => {
    response.writeHead(200, { "content-type": "application/json" });
    response.end(served);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function post(port: number, path: string, body: unknown): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${path} answered ${response.status}: ${text.slice(0, 300)}`);
  return text;
}

/** The orchestrator's event-loop delay since the previous scrape, in ms. */
async function eventLoopDelay(port: number): Promise<{ maxMs: number; p99Ms: number }> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const gauge = (name: string) => {
    const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
    return match ? Number(match[1]) * 1000 : Number.NaN;
  };
  return {
    maxMs: gauge("nodejs_eventloop_lag_max_seconds"),
    p99Ms: gauge("nodejs_eventloop_lag_p99_seconds"),
  };
}

/** GET /health one after another until `done`; the latency of each, in ms. */
async function probeHealth(port: number, done: () => boolean): Promise<number[]> {
  const latencies: number[] = [];
  while (!done()) {
    const started = performance.now();
    await (await fetch(`http://127.0.0.1:${port}/health`)).arrayBuffer();
    latencies.push(performance.now() - started);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return latencies;
}

interface PollRow {
  readonly poll: string;
  readonly seconds: number;
  /** CPU time of the orchestrator's main thread (its event loop) during the poll. */
  readonly loopCpuMs: number;
  /** CPU time of the whole orchestrator process (worker threads included). */
  readonly processCpuMs: number;
  readonly loopMaxMs: number;
  readonly loopP99Ms: number;
  readonly healthMaxMs: number;
  readonly healthP50Ms: number;
  readonly healthProbes: number;
  readonly answerBytes: number;
  readonly errors: string[];
}

async function measurePoll(orchestrator: BenchOrchestrator, poll: string): Promise<PollRow> {
  await eventLoopDelay(orchestrator.port); // resets the histogram
  const loopCpu = mainThreadCpuMicros(orchestrator.pid);
  const processCpu = processCpuMicros(orchestrator.pid);
  let done = false;
  const probing = probeHealth(orchestrator.port, () => done);
  const started = performance.now();
  const answer = await post(orchestrator.port, "/registry/poll-openapi", {}).finally(() => {
    done = true;
  });
  const seconds = (performance.now() - started) / 1000;
  const loopCpuMs = (mainThreadCpuMicros(orchestrator.pid) - loopCpu) / 1000;
  const processCpuMs = (processCpuMicros(orchestrator.pid) - processCpu) / 1000;
  const health = (await probing).sort((a, b) => a - b);
  const loop = await eventLoopDelay(orchestrator.port);
  const results = (JSON.parse(answer) as { results: { service: string; error: string }[] }).results;
  return {
    poll,
    seconds,
    loopCpuMs,
    processCpuMs,
    loopMaxMs: loop.maxMs,
    loopP99Ms: loop.p99Ms,
    healthMaxMs: health.at(-1) ?? Number.NaN,
    healthP50Ms: percentile(health, 50),
    healthProbes: health.length,
    answerBytes: Buffer.byteLength(answer),
    errors: results.filter((r) => r.error !== "").map((r) => `${r.service}: ${r.error}`),
  };
}

/** Bytes of each baseline in Redis (HSTRLEN), and of the whole baselines key (MEMORY USAGE). */
function baselineBytes(redis: BenchRedisServer, prefix: string, names: readonly string[]) {
  const cli = (...command: string[]) => {
    const run = spawnSync("redis-cli", ["-p", `${redis.port}`, ...command], { encoding: "utf8" });
    return Number(run.stdout.trim()) || 0;
  };
  const key = `${prefix}{registry}:baselines`;
  return {
    perService: names.map((name) => cli("HSTRLEN", key, name)),
    keyMemoryUsage: cli("MEMORY", "USAGE", key, "SAMPLES", "0"),
  };
}

function table(rows: readonly PollRow[]): string[] {
  const lines = [
    `${serviceCount} services × ${count(operations)} operations, polled at once`,
    "| poll | seconds | main thread CPU ms | process CPU ms | loop delay max ms | loop delay p99 ms | /health max ms | /health p50 ms | probes | answer bytes | errors |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const row of rows) {
    lines.push(
      `| ${row.poll} | ${fmt(row.seconds, 2)} | ${count(row.loopCpuMs)} | ${count(row.processCpuMs)} | ${fmt(row.loopMaxMs)} | ${fmt(row.loopP99Ms)} | ${fmt(row.healthMaxMs)} | ${fmt(row.healthP50Ms)} | ${row.healthProbes} | ${count(row.answerBytes)} | ${row.errors.join("; ") || "–"} |`,
    );
  }
  return lines;
}

async function run(): Promise<void> {
  const redis = await startBenchRedisServer();
  const prefix = `bench-openapi-${randomBytes(4).toString("hex")}:`;
  const fakes: FakeDocumentService[] = [];
  let orchestrator: BenchOrchestrator | undefined;
  try {
    orchestrator = await startBenchOrchestrator("openapi", {
      REDIS_URL: redis.url,
      REDIS_KEY_PREFIX: prefix,
      HEALTH_CHECK_INTERVAL_MS: "3600000",
      OPENAPI_MAX_OPERATIONS: maxOperations,
    });
    const names = Array.from({ length: serviceCount }, (_, i) => `inventory-${i}`);
    for (const name of names) {
      const fake = await startFake();
      fakes.push(fake);
      await post(orchestrator.port, "/registry/register", {
        name,
        base_url: fake.url,
        openapi_url: `${fake.url}/openapi.json`,
      });
    }
    const rows: PollRow[] = [];
    served = Buffer.from(largeOpenApiDocument({ operations }));
    const documentBytes = served.length;
    process.stderr.write(`document: ${count(documentBytes)} bytes\n`);
    rows.push(await measurePoll(orchestrator, "first (records baselines)"));
    served = Buffer.from(largeOpenApiDocument({ operations, drift }));
    rows.push(await measurePoll(orchestrator, `drift (${count(drift)} moved)`));
    rows.push(await measurePoll(orchestrator, "unchanged"));
    const stored = baselineBytes(redis, prefix, names);
    const lines = [
      ...table(rows),
      "",
      `document: ${count(documentBytes)} bytes; baseline in Redis per service: ${stored.perService.map(count).join(", ")} bytes; MEMORY USAGE of the baselines key: ${count(stored.keyMemoryUsage)} bytes`,
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
    const file = writeResults("openapi", {
      bench: "openapi",
      date: new Date().toISOString(),
      services: serviceCount,
      operations,
      drift,
      maxOperations: Number(maxOperations),
      documentBytes,
      polls: rows,
      baselineBytes: stored,
    });
    process.stderr.write(`results: ${file}\n`);
  } finally {
    if (orchestrator) await stop(orchestrator.child);
    for (const fake of fakes) fake.server.close();
    await stopBenchRedisServer(redis);
  }
}

await run();
