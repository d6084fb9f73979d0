import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EventStore } from "../../src/events/event-store.js";
import { createRedisEventStore } from "../../src/events/redis-event-store.js";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import { createManualClock } from "../support/manual-clock.js";
import {
  createTestRedisClient,
  type RedisServer,
  startRedisServer,
  untilRedisReady,
} from "../support/redis-server.js";
import {
  draft,
  type EventStoreSetup,
  eventStoreContract,
  readAll,
} from "./event-store.contract.js";

let server: RedisServer | undefined;
beforeAll(async () => {
  server = await startRedisServer();
});
afterAll(async () => {
  await server?.stop();
});

/** What one orchestrator process has: its store and the two connections it gave it. */
interface StoreProcess {
  readonly prefix: string;
  readonly store: EventStore;
  readonly connections: readonly Redis[];
}

const opened: StoreProcess[] = [];

async function openStore(prefix: string, setup: EventStoreSetup): Promise<StoreProcess> {
  if (server === undefined) throw new Error("redis-server not started");
  const redis = createTestRedisClient(server.url);
  const blocking = createTestRedisClient(server.url);
  const store = createRedisEventStore(
    { redis, blocking, clock: setup.clock },
    {
      keyPrefix: prefix,
      ...(setup.retention ? { retention: setup.retention } : {}),
      ...(setup.maxScan ? { maxScan: setup.maxScan } : {}),
    },
  );
  const process = { prefix, store, connections: [redis, blocking] };
  opened.push(process);
  await store.open();
  return process;
}

eventStoreContract("redis", {
  create: async (setup) => (await openStore(`events-test:${randomUUID()}:`, setup)).store,
  twin: async (store, setup) => {
    const found = opened.find((p) => p.store === store);
    if (found === undefined) throw new Error("not a store of this suite");
    return (await openStore(found.prefix, setup)).store;
  },
  countSlack: 100,
  cleanup: async () => {
    const all = opened.splice(0);
    for (const process of all) await process.store.close();
    await Promise.all(all.flatMap((p) => p.connections.map((c) => closeRedisClient(c))));
  },
});

describe("redis event store", () => {
  it("publishes each stored event once on orchestrator.events, and findings on their own channel", async () => {
    if (server === undefined) throw new Error("redis-server not started");
    const subscriber = createTestRedisClient(server.url);
    await untilRedisReady(subscriber);
    const received: [string, string][] = [];
    subscriber.on("message", (channel: string, message: string) =>
      received.push([channel, message]),
    );
    await subscriber.subscribe("orchestrator.events", "findings.created");
    try {
      const start = Date.UTC(2026, 10, 26);
      const { store } = await openStore(`events-test:${randomUUID()}:`, {
        clock: createManualClock(start),
      });
      const source = `node-${randomUUID()}`;
      const key = { producer: source, sequence: 1 };
      const batch = [
        draft(start, { source }),
        draft(start + 1, {
          source,
          type: "findings.created",
          payload: { type: "api_drift_candidate" },
        }),
      ];
      const stored = await store.append(batch, key);
      // The same batch again (a retry after a lost reply) is neither stored nor published again.
      expect(await store.append(batch, key)).toEqual([]);
      const mine = () => received.filter(([, m]) => m.includes(source) || m.includes("api_drift"));
      await expect.poll(() => mine().length, { timeout: 20_000 }).toBe(3);
      const events = mine()
        .filter(([c]) => c === "orchestrator.events")
        .map(([, m]) => JSON.parse(m) as Record<string, unknown>);
      expect(events.map((e) => e.id)).toEqual(stored.map((e) => e.id));
      expect(Object.keys(events[0] ?? {}).sort()).toEqual([
        "correlation_id",
        "id",
        "payload",
        "source",
        "subject",
        "timestamp",
        "trace_id",
        "type",
      ]);
      expect(events[0]).toMatchObject({ timestamp: new Date(start).toISOString(), source });
      expect(
        mine()
          .filter(([c]) => c === "findings.created")
          .map(([, m]) => JSON.parse(m)),
      ).toEqual([{ type: "api_drift_candidate" }]);
      expect(await readAll(store)).toEqual(stored);
    } finally {
      await closeRedisClient(subscriber);
    }
  });
});
