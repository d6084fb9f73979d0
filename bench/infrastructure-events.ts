// The event store's figures (issue 8): appending events, from a capability's synchronous emit
// through the outbox to the store, in events/s, on the memory store in process and on a throwaway
// redis-server (batches of up to 256 events per Lua script: one round trip each); and reading a
// page of 1,000 of 100,000 stored events, in ms (p50 and max of several reads at random cursors),
// on both stores. Targets: memory ≥ 100k events/s, Redis ≥ 20k events/s, a page < 20 ms.
//
//   npm run bench:events [-- --events 200000 --reads 25]
//
// runEventBenchmarks() is what `npm run bench:infrastructure` composes; run alone, this file
// prints its rows and writes bench/results/infrastructure-events-<time>.json.
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import type { Redis } from "ioredis";
import { pino } from "pino";
import { systemClock } from "../src/clock.js";
import { createEventLog, EventSubscribers } from "../src/events/event-log.js";
import { createEventOutbox } from "../src/events/event-outbox.js";
import type { EventStore } from "../src/events/event-store.js";
import { createMemoryEventStore } from "../src/events/memory-event-store.js";
import { createRedisEventStore } from "../src/events/redis-event-store.js";
import { closeRedisClient, createRedisClient } from "../src/redis/redis-client.js";
import { untilReady } from "../src/redis/redis-connection.js";
import {
  count,
  fmt,
  percentile,
  startBenchRedisServer,
  stopBenchRedisServer,
  writeResults,
} from "./support.js";

/** What the event benchmarks take. */
export interface EventBenchmarkOptions {
  /** Events appended through the outbox, per store. Default 200,000. */
  readonly events?: number;
  /** Events stored before the page reads. Default 100,000. */
  readonly stored?: number;
  /** Page reads per store (at random cursors). Default 25. */
  readonly reads?: number;
}

/** One store's figures. */
interface StoreFigures {
  readonly store: "memory" | "redis";
  readonly appendEventsPerSecond: number;
  readonly pageMs: { readonly p50: number; readonly max: number };
  readonly filteredPageMs: { readonly p50: number; readonly max: number };
}

const pageSize = 1_000;
// Emitted at once between two drains: what a busy node's capabilities emit in a tick or two.
const emitChunk = 1_000;

/**
 * Measures both stores; returns the markdown table rows (header included) and the figures.
 * @throws Error when redis-server cannot be started.
 */
export async function runEventBenchmarks(
  options: EventBenchmarkOptions = {},
): Promise<{ rows: string[]; json: Record<string, unknown> }> {
  const settings = { events: 200_000, stored: 100_000, reads: 25, ...options };
  const figures: StoreFigures[] = [];
  figures.push(await measure("memory", () => memoryStore(settings.stored), settings));
  const server = await startBenchRedisServer();
  const connections: Redis[] = [];
  try {
    figures.push(
      await measure("redis", () => redisStore(server.url, settings.stored, connections), settings),
    );
  } finally {
    await Promise.all(connections.map((c) => closeRedisClient(c)));
    await stopBenchRedisServer(server);
  }
  const rows = [
    "| store | append events/s (emit → stored) | page of 1,000 of 100k: p50 ms | max ms | filtered page (1 in 10 types): p50 ms | max ms |",
    "|---|---:|---:|---:|---:|---:|",
    ...figures.map(
      (f) =>
        `| ${f.store} | ${count(f.appendEventsPerSecond)} | ${fmt(f.pageMs.p50, 2)} | ${fmt(f.pageMs.max, 2)} | ${fmt(f.filteredPageMs.p50, 2)} | ${fmt(f.filteredPageMs.max, 2)} |`,
    ),
  ];
  return {
    rows,
    json: {
      benchmark: "infrastructure-events",
      date: new Date().toISOString(),
      node: process.version,
      settings,
      targets: { memoryEventsPerSecond: 100_000, redisEventsPerSecond: 20_000, pageMs: 20 },
      figures,
    },
  };
}

async function measure(
  name: "memory" | "redis",
  open: () => Promise<EventStore>,
  settings: Required<EventBenchmarkOptions>,
): Promise<StoreFigures> {
  // A store of its own for the appends, so that the page reads see exactly `stored` events.
  const appendEventsPerSecond = await appendRate(await open(), settings.events);
  const store = await open();
  await fill(store, settings.stored);
  const ids = await allIds(store);
  return {
    store: name,
    appendEventsPerSecond,
    pageMs: await pageReads(store, ids, settings.reads, {}),
    filteredPageMs: await pageReads(store, ids, settings.reads, { types: ["type-3"] }),
  };
}

/** Emits `total` events through the log and the outbox, and times until the store has them. */
async function appendRate(store: EventStore, total: number): Promise<number> {
  const outbox = createEventOutbox({ store, producer: "bench" });
  const log = createEventLog(
    { clock: systemClock, source: "bench-node", maxPayloadBytes: 16_384 },
    outbox,
    new EventSubscribers(),
  );
  outbox.start();
  const started = performance.now();
  for (let emitted = 0; emitted < total; emitted += emitChunk) {
    for (let i = emitted; i < emitted + emitChunk; i++) log.append(newEvent(i));
    if (!(await outbox.flush(60_000))) throw new Error("the outbox did not drain");
  }
  const seconds = (performance.now() - started) / 1000;
  outbox.stop();
  if (outbox.stats().stored !== total) throw new Error(`stored ${outbox.stats().stored}`);
  return total / seconds;
}

async function fill(store: EventStore, total: number): Promise<void> {
  const now = Date.now();
  for (let i = 0; i < total; i += 256) {
    const batch = Array.from({ length: Math.min(256, total - i) }, (_, j) => ({
      ...newEvent(i + j),
      source: "bench-node",
      correlationId: "",
      traceId: "",
      timestamp: now + Math.floor((i + j) / 100),
    }));
    await store.append(batch);
  }
}

async function allIds(store: EventStore): Promise<string[]> {
  const ids: string[] = [];
  let after = "";
  do {
    const page = await store.read({ after, limit: pageSize });
    ids.push(...page.events.map((e) => e.id));
    after = page.next;
  } while (after !== "");
  return ids;
}

/** Reads pages of 1,000 after random stored ids (leaving room for a full page). */
async function pageReads(
  store: EventStore,
  ids: readonly string[],
  reads: number,
  filter: { types?: string[] },
): Promise<{ p50: number; max: number }> {
  const times: number[] = [];
  for (let i = 0; i < reads + 2; i++) {
    const at = Math.floor(Math.random() * (ids.length - 20 * pageSize));
    const started = performance.now();
    const page = await store.read({ ...filter, after: ids[at] ?? "", limit: pageSize });
    const ms = performance.now() - started;
    if (page.events.length !== pageSize) throw new Error(`a page of ${page.events.length}`);
    if (i >= 2) times.push(ms); // the first two warm up
  }
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), max: times.at(-1) ?? Number.NaN };
}

function newEvent(i: number) {
  const service = `svc-${i % 1_000}`;
  return {
    type: `type-${i % 10}`,
    subject: service,
    payload: {
      service,
      created: false,
      revision: i,
      base_url: `http://${service}.internal:8080`,
      version: "1.2.3",
    },
  };
}

async function memoryStore(stored: number): Promise<EventStore> {
  return createMemoryEventStore(
    { clock: systemClock },
    { retention: { maxEvents: stored, maxAgeMs: 0 }, maxBytes: 1024 * 1024 * 1024 },
  );
}

let prefixes = 0;

async function redisStore(url: string, stored: number, connections: Redis[]): Promise<EventStore> {
  const logger = pino({ level: "silent" });
  const options = { url, port: Number(new URL(url).port) };
  const redis = createRedisClient(options, logger);
  const blocking = createRedisClient(options, logger);
  connections.push(redis, blocking);
  await Promise.all([untilReady(redis, 10_000), untilReady(blocking, 10_000)]);
  return createRedisEventStore(
    { redis, blocking, clock: systemClock },
    {
      keyPrefix: `bench-${++prefixes}:`,
      // MAXLEN ~ keeps at least this many: exactly `stored` after the fill, as no more came.
      retention: { maxEvents: stored, maxAgeMs: 0 },
    },
  );
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const { values } = parseArgs({
    options: {
      events: { type: "string", default: "200000" },
      stored: { type: "string", default: "100000" },
      reads: { type: "string", default: "25" },
    },
  });
  const { rows, json } = await runEventBenchmarks({
    events: Number(values.events),
    stored: Number(values.stored),
    reads: Number(values.reads),
  });
  process.stdout.write(`${rows.join("\n")}\n`);
  process.stdout.write(`results: ${writeResults("infrastructure-events", json)}\n`);
}
