import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import type { RedisWriteFence } from "../../src/redis/redis-write-fence.js";
import {
  createRedisSagaStore,
  type RedisSagaStoreOptions,
} from "../../src/sagas/redis-saga-store.js";
import type { SagaStore } from "../../src/sagas/saga-store.js";
import {
  createTestRedisClient,
  type RedisServer,
  startRedisServer,
} from "../support/redis-server.js";
import type { SagaStoreHarness } from "./saga-store.contract.js";
import {
  failureOf,
  moveSaga,
  moveStep,
  newSaga,
  sagaStoreContract,
} from "./saga-store.contract.js";

/** Stores opened as separate processes would, each on its own connection; closed all at once. */
function storeProcesses(url: () => string) {
  const opened: { prefix: string; store: SagaStore; redis: Redis }[] = [];
  return {
    async open(
      prefix: string,
      options: Omit<RedisSagaStoreOptions, "keyPrefix"> = {},
      deps: Parameters<SagaStoreHarness["create"]>[1] & {
        fence?: (redis: Redis) => RedisWriteFence;
      } = {},
    ): Promise<SagaStore> {
      const redis = createTestRedisClient(url());
      const { fence, ...rest } = deps;
      const store = createRedisSagaStore(
        { redis, ...rest, ...(fence ? { fence: fence(redis) } : {}) },
        { keyPrefix: prefix, ...options },
      );
      opened.push({ prefix, store, redis });
      await store.open();
      return store;
    },
    prefixOf(store: SagaStore): string {
      const found = opened.find((p) => p.store === store);
      if (found === undefined) throw new Error("not a store of this suite");
      return found.prefix;
    },
    redisOf(store: SagaStore): Redis {
      const found = opened.find((p) => p.store === store);
      if (found === undefined) throw new Error("not a store of this suite");
      return found.redis;
    },
    async closeAll(): Promise<void> {
      const all = opened.splice(0);
      await Promise.all(
        all.map(async (p) => {
          await p.store.close();
          await closeRedisClient(p.redis);
        }),
      );
    },
  };
}

const newPrefix = () => `saga-test:${randomUUID()}:`;

let server: RedisServer | undefined;
const processes = storeProcesses(() => server?.url ?? "redis://127.0.0.1:1");

beforeAll(async () => {
  server = await startRedisServer({ persistent: true });
});
afterAll(async () => {
  await processes.closeAll();
  await server?.stop();
});

describe("contract against redis-server", () => {
  sagaStoreContract("redis", {
    create: (options = {}, deps = {}) => processes.open(newPrefix(), options, deps),
    twin: (store) => processes.open(processes.prefixOf(store)),
    reopen: (store) => processes.open(processes.prefixOf(store)),
    cleanup: () => processes.closeAll(),
  });
});

describe("RedisSagaStore", () => {
  afterEach(() => processes.closeAll());

  it("changes nothing when a write's script runs after the deadline it carries", async () => {
    const prefix = newPrefix();
    const honest = await processes.open(prefix);
    await honest.create(newSaga("s"));
    const pastFence = (redis: Redis): RedisWriteFence => ({
      start() {},
      stop() {},
      send: async (write) => {
        const [seconds] = (await redis.time()).map(Number) as [number, number];
        return write(seconds * 1000 - 1_000);
      },
    });
    const late = await processes.open(prefix, {}, { fence: pastFence });
    const before = await honest.get("s");
    const counts = await honest.counts();
    const refusals = await Promise.all(
      [
        late.create(newSaga("t")),
        late.transition("s", { expectedVersion: 1, to: "RUNNING" }),
        late.transitionStep("s", 0, { expectedVersion: 1, to: "SKIPPED" }),
      ].map(failureOf),
    );
    for (const refused of refusals) {
      expect(refused.kind).toBe("unavailable");
      expect(refused.message).toBe(
        "the saga store ran the write after its deadline: it was not applied",
      );
    }
    expect(await honest.get("s")).toEqual(before);
    expect(await honest.get("t")).toBeUndefined();
    expect(await honest.counts()).toEqual(counts);
  });

  it("answers 'unavailable' for every call while Redis is down, and recovers by itself", {
    timeout: 60_000,
  }, async () => {
    const own = await startRedisServer();
    const redis = createTestRedisClient(own.url);
    try {
      const store = createRedisSagaStore({ redis }, { keyPrefix: newPrefix() });
      await store.open();
      await store.create(newSaga("s"));
      await own.kill();
      for (const call of [
        () => store.get("s"),
        () => store.create(newSaga("t")),
        () => store.transition("s", { expectedVersion: 1, to: "RUNNING" }),
        () => store.transitionStep("s", 0, { expectedVersion: 1, to: "SKIPPED" }),
        () => store.list({ status: "PENDING" }),
        () => store.counts(),
        () => store.sweep(),
      ]) {
        const failure = await failureOf(call());
        expect(failure.kind).toBe("unavailable");
        expect(failure.message).toBe("the saga store is unavailable");
      }
      await own.restart();
      // Not persistent: the data went with the server; the store works again.
      for (let attempt = 0; ; attempt++) {
        try {
          await store.create(newSaga("after"));
          break;
        } catch (error) {
          if (attempt > 200) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      expect((await store.get("after"))?.status).toBe("PENDING");
      await store.close();
    } finally {
      await closeRedisClient(redis);
      await own.stop();
    }
  });

  it("keeps its counts equal to the stored sagas whatever the interleaving of writers", async () => {
    const prefix = newPrefix();
    const a = await processes.open(prefix, { maxFinished: 5 });
    const b = await processes.open(prefix, { maxFinished: 5 });
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const store = i % 2 === 0 ? a : b;
        const other = i % 2 === 0 ? b : a;
        await store.create(newSaga(`c${i}`));
        await moveSaga(other, `c${i}`, "RUNNING");
        if (i % 3 === 0) return;
        await moveStep(store, `c${i}`, 0, "RUNNING");
        await moveSaga(other, `c${i}`, i % 3 === 1 ? "ABORTED" : "COMPENSATING");
      }),
    );
    const counts = await a.counts();
    let listed = 0;
    for (const status of Object.keys(counts.byStatus) as (keyof typeof counts.byStatus)[]) {
      const page = await a.list({ status, pageSize: 1000 });
      expect(page.sagas.length, status).toBe(counts.byStatus[status]);
      listed += page.sagas.length;
    }
    expect(counts.byStatus.ABORTED).toBe(5);
    expect(listed).toBe(20 - (7 - 5));
  });
});
