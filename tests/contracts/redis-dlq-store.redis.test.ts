import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { DlqStore, DlqStoreLimits } from "../../src/dlq/dlq-store.js";
import { createRedisDlqStore } from "../../src/dlq/redis-dlq-store.js";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import type { RedisWriteFence } from "../../src/redis/redis-write-fence.js";
import {
  createTestRedisClient,
  type RedisServer,
  startRedisServer,
  untilRedisReady,
} from "../support/redis-server.js";
import { dlqStoreContract, newDlqEntry } from "./dlq-store.contract.js";
import { failureOf } from "./registry-store.contract.js";

/** A store as one process opens it: on a connection of its own. */
interface StoreProcess {
  readonly prefix: string;
  readonly limits: Partial<DlqStoreLimits>;
  readonly store: DlqStore;
  readonly redis: Redis;
}

const newPrefix = () => `orchestrator-test:${randomUUID()}:`;

function storeProcesses(url: () => string) {
  const opened: StoreProcess[] = [];
  return {
    async open(
      prefix: string,
      limits: Partial<DlqStoreLimits> = {},
      fence?: (redis: Redis) => RedisWriteFence,
    ): Promise<StoreProcess> {
      const redis = createTestRedisClient(url());
      const store = createRedisDlqStore(
        { redis, ...(fence ? { fence: fence(redis) } : {}) },
        { keyPrefix: prefix, ...limits },
      );
      const process = { prefix, limits, store, redis };
      opened.push(process);
      await untilRedisReady(redis);
      await store.open();
      return process;
    },
    of(store: DlqStore): StoreProcess {
      const found = opened.find((p) => p.store === store);
      if (found === undefined) throw new Error("not a store of this suite");
      return found;
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

describe("DLQ contract against redis-server", () => {
  let server: RedisServer | undefined;
  const processes = storeProcesses(() => server?.url ?? "redis://127.0.0.1:1");
  beforeAll(async () => {
    server = await startRedisServer({ persistent: true });
  });
  afterAll(async () => {
    await processes.closeAll();
    await server?.stop();
  });

  dlqStoreContract("redis", {
    create: async (limits) => (await processes.open(newPrefix(), limits)).store,
    twin: async (store) => {
      const { prefix, limits } = processes.of(store);
      return (await processes.open(prefix, limits)).store;
    },
    reopen: async (store) => {
      const { prefix, limits } = processes.of(store);
      return (await processes.open(prefix, limits)).store;
    },
    cleanup: () => processes.closeAll(),
  });
});

describe("RedisDlqStore with Redis failing", () => {
  let server: RedisServer | undefined;
  const processes = storeProcesses(() => server?.url ?? "redis://127.0.0.1:1");
  beforeAll(async () => {
    server = await startRedisServer();
  });
  afterEach(() => processes.closeAll());
  afterAll(async () => {
    await server?.stop();
  });

  it("changes nothing when a write's script runs after the deadline it carries", async () => {
    const pastFence = (redis: Redis): RedisWriteFence => ({
      start() {},
      stop() {},
      send: async (write) => {
        const [seconds, micros] = (await redis.time()).map(Number) as [number, number];
        return write(Math.floor(seconds * 1000 + micros / 1000) - 1_000);
      },
    });
    const prefix = newPrefix();
    const honest = await processes.open(prefix);
    const entry = await honest.store.add(newDlqEntry());
    const late = await processes.open(prefix, {}, pastFence);
    const before = await honest.store.stats();
    const refusals = await Promise.all(
      [
        late.store.add(newDlqEntry()),
        late.store.claim([entry.dlqId], {
          token: "t",
          now: 1,
          expiresAt: 2,
          from: ["PENDING_RETRY"],
        }),
        late.store.expireClaims(Date.now(), 10, "expired"),
      ].map(failureOf),
    );
    for (const refused of refusals) {
      expect(refused.kind).toBe("unavailable");
      expect(refused.message).toBe(
        "the dead-letter store ran the write after its deadline: it was not applied",
      );
    }
    expect(await honest.store.stats()).toEqual(before);
    expect(await honest.store.get(entry.dlqId)).toEqual(entry);
  });

  it("refuses calls with 'unavailable' while Redis is down, naming no host", async () => {
    const { store } = await processes.open(newPrefix());
    await server?.kill();
    try {
      for (const call of [
        store.add(newDlqEntry()),
        store.get("x"),
        store.stats(),
        store.list({}, { after: "", limit: 10 }),
        store.due(["event.delivery"], Date.now(), 10),
      ]) {
        const failure = await failureOf(call);
        expect(failure.kind).toBe("unavailable");
        expect(failure.message).toBe("the dead-letter store is unavailable");
      }
    } finally {
      await server?.restart();
    }
  });
});
