// The saga store's transitions per second (issue 8): step transitions (a retry, RUNNING →
// RUNNING: one compare-and-set each) and whole sagas (create, start, three steps run and
// completed, complete: nine writes), on the memory store and on Redis (a throwaway redis-server
// started here, never the shared one on 6379), with the CPU this process and redis-server spend
// per transition, read from /proc. The store is called in-process, as the workflow engine calls
// it: what is measured is the store, not the API.
//
//   npm run build && node dist/bench/infrastructure-sagas.js [--seconds 3 --concurrency 64]
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { createRedisClient } from "../src/redis/redis-client.js";
import { createMemorySagaStore } from "../src/sagas/memory-saga-store.js";
import { createRedisSagaStore } from "../src/sagas/redis-saga-store.js";
import type { SagaStore } from "../src/sagas/saga-store.js";
import { processCpuMicros } from "./process-cpu.js";
import {
  closedLoop,
  count,
  fmt,
  percentile,
  startBenchRedisServer,
  stopBenchRedisServer,
  writeResults,
} from "./support.js";

/** One measured workload on one store. */
export interface SagaBenchRow {
  readonly store: "memory" | "redis";
  readonly workload: "step transition" | "whole saga (9 writes)";
  readonly transitionsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** CPU of this process (the store's caller) per transition, µs. */
  readonly clientCpuMicros: number;
  /** CPU of redis-server per transition, µs; null on the memory store. */
  readonly redisCpuMicros: number | null;
}

/** What {@link runSagaBenchmarks} takes. */
export interface SagaBenchOptions {
  /** Seconds each workload runs. Default 3. */
  readonly seconds?: number;
  /** Calls in flight. Default 64. */
  readonly concurrency?: number;
}

/**
 * Measures both workloads on both stores.
 * @returns the rows, the printable table lines, and the JSON to keep.
 */
export async function runSagaBenchmarks(
  options: SagaBenchOptions = {},
): Promise<{ rows: SagaBenchRow[]; lines: string[]; json: Record<string, unknown> }> {
  const seconds = options.seconds ?? 3;
  const concurrency = options.concurrency ?? 64;
  const rows: SagaBenchRow[] = [];
  rows.push(
    ...(await measureStore("memory", createMemorySagaStore(), undefined, seconds, concurrency)),
  );
  const server = await startBenchRedisServer();
  const redis = createRedisClient(
    { url: server.url, port: server.port },
    pino({ level: "silent" }),
  );
  try {
    const store = createRedisSagaStore(
      { redis },
      { keyPrefix: "bench-sagas:", maxBytes: 1024 * 1024 * 1024, maxFinished: 1_000_000 },
    );
    await store.open();
    rows.push(...(await measureStore("redis", store, server.pid, seconds, concurrency)));
    await store.close();
  } finally {
    redis.disconnect();
    await stopBenchRedisServer(server);
  }
  const lines = [
    "| store | workload | transitions/s | p50 ms (per call) | p99 ms | caller CPU µs/transition | redis-server CPU µs/transition |",
    "|---|---|---:|---:|---:|---:|---:|",
    ...rows.map(
      (r) =>
        `| ${r.store} | ${r.workload} | ${count(r.transitionsPerSecond)} | ${fmt(r.p50Ms, 2)} | ${fmt(r.p99Ms, 2)} | ${fmt(r.clientCpuMicros)} | ${r.redisCpuMicros === null ? "–" : fmt(r.redisCpuMicros)} |`,
    ),
  ];
  const json = {
    bench: "infrastructure-sagas",
    date: new Date().toISOString(),
    seconds,
    concurrency,
    node: process.version,
    rows,
  };
  return { rows, lines, json };
}

async function measureStore(
  name: SagaBenchRow["store"],
  store: SagaStore,
  redisPid: number | undefined,
  seconds: number,
  concurrency: number,
): Promise<SagaBenchRow[]> {
  // Step transitions: each worker retries the step of a saga of its own, again and again.
  const sagaIds = await Promise.all(
    Array.from({ length: concurrency }, async (_, worker) => {
      const sagaId = `${name}-retry-${worker}`;
      await store.create({ sagaId, name: "bench", steps: [{ name: "step" }] });
      await store.transition(sagaId, { expectedVersion: 1, to: "RUNNING" });
      await store.transitionStep(sagaId, 0, { expectedVersion: 1, to: "RUNNING" });
      return { sagaId, version: 2 };
    }),
  );
  // One call per worker's saga at a time: the loop's workers each own one.
  const owned = sagaIds.map((target) => async () => {
    const { step } = await store.transitionStep(target.sagaId, 0, {
      expectedVersion: target.version,
      to: "RUNNING",
    });
    target.version = step.version;
  });
  const steps = await measured(redisPid, 1, () => loopOwned(owned, seconds));

  let sagas = 0;
  const whole = async () => {
    const sagaId = `${name}-whole-${sagas++}`;
    await store.create({
      sagaId,
      name: "bench",
      steps: [{ name: "a" }, { name: "b" }, { name: "c", group: 1 }],
    });
    await store.transition(sagaId, { expectedVersion: 1, to: "RUNNING" });
    await Promise.all(
      [0, 1].map(async (index) => {
        await store.transitionStep(sagaId, index, { expectedVersion: 1, to: "RUNNING" });
        await store.transitionStep(sagaId, index, {
          expectedVersion: 2,
          to: "COMPLETED",
          output: { documents: 10 },
        });
      }),
    );
    await store.transitionStep(sagaId, 2, { expectedVersion: 1, to: "RUNNING" });
    await store.transitionStep(sagaId, 2, { expectedVersion: 2, to: "COMPLETED" });
    await store.transition(sagaId, { expectedVersion: 8, to: "COMPLETED" });
  };
  const sagaRun = await measured(redisPid, 9, () => closedLoop(whole, seconds, concurrency));
  return [
    { store: name, workload: "step transition", ...steps },
    { store: name, workload: "whole saga (9 writes)", ...sagaRun },
  ];
}

/** Runs each owned call in its own worker, for `seconds`. */
async function loopOwned(calls: readonly (() => Promise<void>)[], seconds: number) {
  const latenciesMs: number[] = [];
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let done = 0;
  await Promise.all(
    calls.map(async (call) => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        await call();
        latenciesMs.push(performance.now() - t0);
        done++;
      }
    }),
  );
  return { calls: done, seconds: (performance.now() - started) / 1000, latenciesMs };
}

/** Runs `loop` with the CPU of this process and of redis-server read around it. */
async function measured(
  redisPid: number | undefined,
  transitionsPerCall: number,
  loop: () => Promise<{ calls: number; seconds: number; latenciesMs: number[] }>,
) {
  const cpu0 = process.cpuUsage();
  const redis0 = redisPid === undefined ? 0 : processCpuMicros(redisPid);
  const result = await loop();
  const cpu = process.cpuUsage(cpu0);
  const redisCpu = redisPid === undefined ? 0 : processCpuMicros(redisPid) - redis0;
  const transitions = result.calls * transitionsPerCall;
  const sorted = result.latenciesMs.sort((a, b) => a - b);
  return {
    transitionsPerSecond: transitions / result.seconds,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    clientCpuMicros: (cpu.user + cpu.system) / transitions,
    redisCpuMicros: redisPid === undefined ? null : redisCpu / transitions,
  };
}

// Run directly: print the table and keep the JSON.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: { seconds: { type: "string" }, concurrency: { type: "string" } },
  });
  const { lines, json } = await runSagaBenchmarks({
    ...(values.seconds ? { seconds: Number(values.seconds) } : {}),
    ...(values.concurrency ? { concurrency: Number(values.concurrency) } : {}),
  });
  process.stdout.write(`${lines.join("\n")}\n`);
  process.stdout.write(`written ${writeResults("infrastructure-sagas", json)}\n`);
  process.exit(0);
}
