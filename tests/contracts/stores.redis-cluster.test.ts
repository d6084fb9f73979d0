// Every store contract with a Redis variant, run against a 3-master Redis Cluster: the same code
// as on one Redis, connected as REDIS_CLUSTER_NODES connects it. One cluster serves every suite
// (a fresh key prefix per store keeps them apart), so that the cluster is formed once.
import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DlqStore, DlqStoreLimits } from "../../src/dlq/dlq-store.js";
import { createRedisDlqStore } from "../../src/dlq/redis-dlq-store.js";
import type { EventStore } from "../../src/events/event-store.js";
import { redisEventTarget } from "../../src/events/redis-event-scripts.js";
import { createRedisEventStore } from "../../src/events/redis-event-store.js";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import { redisKeyspace } from "../../src/redis/redis-keys.js";
import {
  createRedisRegistryStore,
  type RedisRegistryStoreOptions,
} from "../../src/registry/redis-registry-store.js";
import type { RegistryStore } from "../../src/registry/registry-store.js";
import {
  createRedisSagaStore,
  type RedisSagaStoreOptions,
} from "../../src/sagas/redis-saga-store.js";
import type { SagaStore } from "../../src/sagas/saga-store.js";
import { createRedisScheduleLock } from "../../src/schedules/redis-schedule-lock.js";
import type { ScheduleLock } from "../../src/schedules/schedule-lock.js";
import {
  createTestClusterClient,
  type RedisCluster,
  startRedisCluster,
} from "../support/redis-cluster.js";
import { untilRedisReady } from "../support/redis-server.js";
import { dlqStoreContract } from "./dlq-store.contract.js";
import { type EventStoreSetup, eventStoreContract } from "./event-store.contract.js";
import { registryStoreContract } from "./registry-store.contract.js";
import { type SagaStoreHarness, sagaStoreContract } from "./saga-store.contract.js";
import { scheduleLockContract } from "./schedule-lock.contract.js";

let cluster: RedisCluster | undefined;
beforeAll(async () => {
  cluster = await startRedisCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

/** Stores opened on connections of their own, as separate processes would; closed together. */
function storeProcesses<S extends { close(): Promise<void> }>() {
  const opened: { prefix: string; store: S; connections: Redis[] }[] = [];
  return {
    /** A connection to the cluster, closed with the store it is given to. */
    async connection(into: Redis[]): Promise<Redis> {
      if (cluster === undefined) throw new Error("the Redis Cluster did not start");
      const client = createTestClusterClient(cluster);
      into.push(client);
      await untilRedisReady(client);
      return client;
    },
    async open(prefix: string, make: (connect: () => Promise<Redis>) => Promise<S>): Promise<S> {
      const connections: Redis[] = [];
      const store = await make(() => this.connection(connections));
      opened.push({ prefix, store, connections });
      return store;
    },
    prefixOf(store: S): string {
      const found = opened.find((p) => p.store === store);
      if (found === undefined) throw new Error("not a store of this suite");
      return found.prefix;
    },
    async closeAll(): Promise<void> {
      const all = opened.splice(0);
      for (const { store } of all) await store.close();
      await Promise.all(all.flatMap((p) => p.connections.map((c) => closeRedisClient(c))));
    },
  };
}

const newPrefix = () => `cluster-test:${randomUUID()}:`;

describe("registry store contract on a Redis Cluster", () => {
  const processes = storeProcesses<RegistryStore>();
  // With its events recorded, as the app runs it: the scripts then touch the event stream too.
  const open = (prefix: string, options: Omit<RedisRegistryStoreOptions, "keyPrefix"> = {}) =>
    processes.open(prefix, async (connect) => {
      const store = createRedisRegistryStore(
        { redis: await connect(), subscriber: await connect() },
        {
          keyPrefix: prefix,
          events: redisEventTarget(prefix, { maxEvents: 1_000, channel: "" }),
          ...options,
        },
      );
      await store.open();
      return store;
    });
  registryStoreContract("redis cluster", {
    create: (options) => open(newPrefix(), options),
    twin: (store) => open(processes.prefixOf(store)),
    reopen: (store) => open(processes.prefixOf(store)),
    cleanup: () => processes.closeAll(),
  });
});

describe("event store contract on a Redis Cluster", () => {
  const processes = storeProcesses<EventStore>();
  const open = (prefix: string, setup: EventStoreSetup) =>
    processes.open(prefix, async (connect) => {
      const store = createRedisEventStore(
        { redis: await connect(), blocking: await connect(), clock: setup.clock },
        {
          keyPrefix: prefix,
          ...(setup.retention ? { retention: setup.retention } : {}),
          ...(setup.maxScan ? { maxScan: setup.maxScan } : {}),
        },
      );
      await store.open();
      return store;
    });
  eventStoreContract("redis cluster", {
    create: (setup) => open(newPrefix(), setup),
    twin: (store, setup) => open(processes.prefixOf(store), setup),
    countSlack: 100,
    cleanup: () => processes.closeAll(),
  });
});

describe("DLQ store contract on a Redis Cluster", () => {
  const processes = storeProcesses<DlqStore>();
  const limitsOf = new Map<DlqStore, Partial<DlqStoreLimits>>();
  const open = (prefix: string, limits: Partial<DlqStoreLimits> = {}) =>
    processes.open(prefix, async (connect) => {
      const store = createRedisDlqStore(
        { redis: await connect() },
        { keyPrefix: prefix, ...limits },
      );
      limitsOf.set(store, limits);
      await store.open();
      return store;
    });
  const again = (store: DlqStore) => open(processes.prefixOf(store), limitsOf.get(store));
  dlqStoreContract("redis cluster", {
    create: (limits) => open(newPrefix(), limits),
    twin: again,
    reopen: again,
    cleanup: () => processes.closeAll(),
  });
});

describe("saga store contract on a Redis Cluster", () => {
  const processes = storeProcesses<SagaStore>();
  const open = (
    prefix: string,
    options: Omit<RedisSagaStoreOptions, "keyPrefix"> = {},
    deps: Parameters<SagaStoreHarness["create"]>[1] = {},
  ) =>
    processes.open(prefix, async (connect) => {
      const store = createRedisSagaStore(
        { redis: await connect(), ...deps },
        { keyPrefix: prefix, ...options },
      );
      await store.open();
      return store;
    });
  sagaStoreContract("redis cluster", {
    create: (options = {}, deps = {}) => open(newPrefix(), options, deps),
    twin: (store) => open(processes.prefixOf(store)),
    reopen: (store) => open(processes.prefixOf(store)),
    cleanup: () => processes.closeAll(),
  });
});

describe("schedule lock contract on a Redis Cluster", () => {
  const processes = storeProcesses<ScheduleLock & { close(): Promise<void> }>();
  afterAll(() => processes.closeAll());
  const open = (prefix: string) =>
    processes.open(prefix, async (connect) => ({
      ...createRedisScheduleLock({ redis: await connect(), keyPrefix: prefix }),
      close: async () => {},
    }));
  scheduleLockContract("redis cluster", {
    create: () => open(newPrefix()),
    twin: (lock) => open(processes.prefixOf(lock as ScheduleLock & { close(): Promise<void> })),
  });
});

describe("key slots on a Redis Cluster", () => {
  it("puts each store's keys in one slot, and the three stores on three different masters", async () => {
    if (cluster === undefined) throw new Error("the Redis Cluster did not start");
    const client = createTestClusterClient(cluster);
    try {
      await untilRedisReady(client);
      const prefix = newPrefix();
      const slotOf = async (key: string) => Number(await client.cluster("KEYSLOT", key));
      const slots = new Map<string, number>();
      for (const group of ["registry", "dlq", "sagas"] as const) {
        const space = redisKeyspace(prefix, group);
        const [first, second] = [await slotOf(`${space}a`), await slotOf(`${space}b:c`)];
        expect(second, group).toBe(first);
        slots.set(group, first);
      }
      // The slot ranges of each master, as CLUSTER SHARDS gives them (three masters, no replicas).
      const ranges = (await client.cluster("SLOTS")) as [number, number, ...unknown[]][];
      const masterOf = (slot: number) =>
        ranges.findIndex(([from, to]) => slot >= from && slot <= to);
      const masters = new Set([...slots.values()].map(masterOf));
      expect(masters.has(-1)).toBe(false);
      expect(masters.size).toBe(3);
    } finally {
      await closeRedisClient(client);
    }
  });
});
