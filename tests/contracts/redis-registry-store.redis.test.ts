import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { setTimeout as delay } from "node:timers/promises";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import type { Clock } from "../../src/clock.js";
import { DomainError } from "../../src/errors/domain-error.js";
import type { EventDraft } from "../../src/events/model.js";
import { redisEventTarget } from "../../src/events/redis-event-scripts.js";
import { createRedisEventStore } from "../../src/events/redis-event-store.js";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import { createRedisWriteFence, type RedisWriteFence } from "../../src/redis/redis-write-fence.js";
import type { RegistryChange, TombstoneWrite } from "../../src/registry/model.js";
import {
  createRedisRegistryStore,
  type RedisRegistryStoreOptions,
} from "../../src/registry/redis-registry-store.js";
import type { RegistryStore } from "../../src/registry/registry-store.js";
import { createManualClock } from "../support/manual-clock.js";
import {
  createTestRedisClient,
  type RedisServer,
  startRedisServer,
  untilRedisReady,
} from "../support/redis-server.js";
import { startTcpProxy } from "../support/tcp-proxy.js";
import { entryWrite, failureOf, registryStoreContract } from "./registry-store.contract.js";

// Generous: the machine may be loaded; nothing here asserts on time.
const waitLong = { timeout: 20_000, interval: 50 };

/** What one orchestrator process has: its store and the two connections it gave it. */
interface StoreProcess {
  readonly prefix: string;
  readonly store: RegistryStore;
  readonly redis: Redis;
  readonly subscriber: Redis;
}

async function closeProcess(process: StoreProcess): Promise<void> {
  await process.store.close();
  await Promise.all([closeRedisClient(process.redis), closeRedisClient(process.subscriber)]);
}

/** Opens stores as separate processes would, each on its own two connections; closes them all. */
function storeProcesses(url: () => string) {
  const opened: StoreProcess[] = [];
  return {
    async open(
      prefix: string,
      options: Omit<RedisRegistryStoreOptions, "keyPrefix"> = {},
      deps: {
        clock?: Clock;
        fence?: (redis: Redis) => RedisWriteFence;
        /** Where the main connection goes (a proxy, say). Default: the server. */
        redisUrl?: string;
      } = {},
    ): Promise<StoreProcess> {
      const redis = createTestRedisClient(deps.redisUrl ?? url());
      const subscriber = createTestRedisClient(url());
      const store = createRedisRegistryStore(
        {
          redis,
          subscriber,
          ...(deps.clock ? { clock: deps.clock } : {}),
          ...(deps.fence ? { fence: deps.fence(redis) } : {}),
        },
        { keyPrefix: prefix, ...options },
      );
      const process = { prefix, store, redis, subscriber };
      // Recorded before open, so that cleanup closes the connections even when open fails.
      opened.push(process);
      await store.open();
      return process;
    },
    of(store: RegistryStore): StoreProcess {
      const found = opened.find((p) => p.store === store);
      if (found === undefined) throw new Error("not a store of this suite");
      return found;
    },
    close: closeProcess,
    async closeAll(): Promise<void> {
      const all = opened.splice(0);
      await Promise.all(all.map((p) => closeProcess(p)));
    },
  };
}

const newPrefix = () => `orchestrator-test:${randomUUID()}:`;

function tombstoneWrite(name: string, deletedAt = 1_700_000_100_000): TombstoneWrite {
  return { name, deletedAt, origin: "node-b", hlc: 111_411_000_000_000_999_000n };
}

/** Everything a store serves, in a stable order for comparison. */
function stateOf(store: RegistryStore) {
  const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name);
  return {
    revision: store.revision,
    entries: [...store.entries()].sort(byName),
    tombstones: [...store.tombstones()].sort(byName),
  };
}

/** Retries `write` while the store is unavailable (Redis coming back); any other failure fails. */
async function untilWritten<T>(write: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await write();
    } catch (error) {
      const unavailable = error instanceof DomainError && error.kind === "unavailable";
      if (!unavailable || Date.now() > deadline) throw error;
    }
    await delay(100);
  }
}

/** Resolves once `redis` answers a PING (it fails at once while not connected). */
async function untilPong(redis: Redis, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await redis.ping();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
    }
    await delay(50);
  }
}

/** Redis' own clock, Unix ms. */
async function redisNow(redis: Redis): Promise<number> {
  const [seconds, micros] = (await redis.time()).map(Number) as [number, number];
  return seconds * 1000 + micros / 1000;
}

/** The deadline a "timeout" failure names (Unix ms). */
function namedDeadline(failure: DomainError): number {
  const said = /may have been applied before (\S+) and will not be applied after it/.exec(
    failure.message,
  );
  expect(said, failure.message).not.toBeNull();
  return Date.parse(said?.[1] ?? "");
}

/** This process' clock, `skewMs` off: both its wall clock and its monotonic clock. */
function skewedClock(skewMs: number): Clock {
  return { now: () => Date.now() + skewMs, monotonic: () => performance.now() + skewMs };
}

/** What a store holds in Redis under `prefix`, read directly. */
async function storedState(redis: Redis, prefix: string) {
  return {
    revision: await redis.get(`${prefix}{registry}:revision`),
    entries: (await redis.hkeys(`${prefix}{registry}:entries`)).sort(),
    tombstones: (await redis.hkeys(`${prefix}{registry}:tombstones`)).sort(),
    changes: await redis.llen(`${prefix}{registry}:changes`),
  };
}

/** Drops a connection as a network cut would, and waits until the client has noticed. */
async function cutOff(client: Redis): Promise<void> {
  const ended = once(client, "end");
  client.disconnect();
  await ended;
}

describe("contract against redis-server", () => {
  let server: RedisServer | undefined;
  const processes = storeProcesses(() => server?.url ?? "redis://127.0.0.1:1");

  beforeAll(async () => {
    // Persistent, for the same reasons production runs it so; `reopen` does not restart it.
    server = await startRedisServer({ persistent: true });
  });
  afterAll(async () => {
    await processes.closeAll();
    await server?.stop();
  });

  registryStoreContract("redis", {
    create: async (options) => (await processes.open(newPrefix(), options)).store,
    twin: async (store) => (await processes.open(processes.of(store).prefix)).store,
    reopen: async (store) => (await processes.open(processes.of(store).prefix)).store,
    cleanup: () => processes.closeAll(),
  });
});

describe("RedisRegistryStore with Redis failing and processes falling behind", () => {
  let server: RedisServer | undefined;
  const processes = storeProcesses(() => server?.url ?? "redis://127.0.0.1:1");

  beforeEach(async () => {
    server = await startRedisServer({ persistent: true });
  });
  afterEach(async () => {
    await processes.closeAll();
    await server?.stop();
    server = undefined;
  });
  const redisServer = (): RedisServer => {
    if (server === undefined) throw new Error("no redis-server");
    return server;
  };

  it("refuses writes while Redis is down, keeps serving reads, and recovers by itself", {
    timeout: 60_000,
  }, async () => {
    const { store, prefix } = await processes.open(newPrefix());
    const a = await store.put(entryWrite("a"), 0);
    const b = await store.put(entryWrite("b"), 0);
    await store.remove(tombstoneWrite("b"), b.revision);
    const before = stateOf(store);

    await redisServer().kill();
    const refused = await failureOf(store.put(entryWrite("c"), 0));
    expect(refused.kind).toBe("unavailable");
    // Written for the caller: no host, port or Redis wording; the cause keeps those for logs.
    expect(refused.message).toBe("the registry store is unavailable");
    expect(refused.cause).toBeInstanceOf(Error);
    expect((await failureOf(store.remove(tombstoneWrite("a"), a.revision))).kind).toBe(
      "unavailable",
    );
    expect((await failureOf(store.getBaseline("a"))).kind).toBe("unavailable");
    expect((await failureOf(store.sync())).kind).toBe("unavailable");
    expect(stateOf(store)).toEqual(before);
    expect(store.get("a")).toEqual(a);
    expect(store.size).toBe(1);

    await redisServer().restart();
    const c = await untilWritten(() => store.put(entryWrite("c"), 0));
    // The refused writes took no revision, and none was reused.
    expect(c.revision).toBe(before.revision + 1);
    expect(store.get("a")).toEqual(a);
    expect(store.tombstone("b")).toEqual(before.tombstones[0]);

    // Everything acknowledged before the crash is in Redis: a new process reads it all back.
    const fresh = await processes.open(prefix);
    expect(stateOf(fresh.store)).toEqual(stateOf(store));
  });

  it("changes nothing when a write's script runs after the deadline it carries", async () => {
    // A fence that hands out deadlines already gone on Redis' clock: the script must refuse.
    const pastFence = (redis: Redis): RedisWriteFence => ({
      start() {},
      stop() {},
      send: async (write) => write(Math.floor((await redisNow(redis)) - 1_000)),
    });
    const prefix = newPrefix();
    const honest = await processes.open(prefix);
    const a = await honest.store.put(entryWrite("a"), 0);
    const late = await processes.open(prefix, {}, { fence: pastFence });
    await vi.waitFor(() => expect(late.store.get("a")).toEqual(a), waitLong);
    const before = await storedState(honest.redis, prefix);

    const refusals = await Promise.all(
      [
        late.store.put(entryWrite("b"), 0),
        late.store.put(entryWrite("a", { version: "2" }), a.revision),
        late.store.remove(tombstoneWrite("a"), a.revision),
        late.store.remove(tombstoneWrite("ghost"), 0),
      ].map(failureOf),
    );
    for (const refused of refusals) {
      // Redis answered: the write did not happen, and can be retried.
      expect(refused.kind).toBe("unavailable");
      expect(refused.message).toBe(
        "the registry store ran the write after its deadline: it was not applied",
      );
    }
    expect(await storedState(honest.redis, prefix)).toEqual(before);
    expect(late.store.get("a")).toEqual(a);
    // No revision was taken: the next write is the next one.
    expect((await honest.store.put(entryWrite("c"), 0)).revision).toBe(a.revision + 1);
  });

  it.each([
    ["ahead of", 10 * 60_000],
    ["behind", -10 * 60_000],
  ])(
    "fences writes on Redis' clock with a local clock ten minutes %s it",
    {
      timeout: 60_000,
    },
    async (_, skewMs) => {
      const prefix = newPrefix();
      const { store, redis } = await processes.open(
        prefix,
        { writeTimeoutMs: 1_000 },
        { clock: skewedClock(skewMs) },
      );
      // Deadlines taken on the local clock would all be long past (behind) or far off (ahead):
      // writes succeed, so they are on Redis' clock...
      const a = await store.put(entryWrite("a"), 0);
      const b = await store.put(entryWrite("b"), 0);
      await store.remove(tombstoneWrite("b"), b.revision);
      const before = await storedState(redis, prefix);
      const frozenAt = await redisNow(redis);

      redisServer().pause();
      let failure: DomainError;
      try {
        failure = await failureOf(store.put(entryWrite("c"), 0));
      } finally {
        redisServer().resume();
      }
      // ...and a write Redis held is given up with its deadline named, and never applied.
      expect(failure.kind).toBe("timeout");
      const deadline = namedDeadline(failure);
      // The store's own connection runs in order: this answer comes after the held write ran.
      expect(await redis.ping()).toBe("PONG");
      expect(deadline).toBeGreaterThan(frozenAt);
      expect(deadline).toBeLessThan(await redisNow(redis));
      expect(await storedState(redis, prefix)).toEqual(before);
      expect(store.get("c")).toBeUndefined();
      expect((await store.put(entryWrite("c"), 0)).revision).toBe(before.changes + 1);
      expect(store.get("a")).toEqual(a);
    },
  );

  it("answers 'timeout' for a write in flight when the connection drops, and fences its re-sent copy", {
    timeout: 60_000,
  }, async () => {
    const proxy = await startTcpProxy(redisServer().port);
    try {
      const prefix = newPrefix();
      const honest = await processes.open(prefix);
      const a = await honest.store.put(entryWrite("a"), 0);
      // A store over the proxy, whose writes are given up 150 ms after they are sent (their
      // deadlines are sooner), and whose fence tells when it hands a write to the connection.
      let handedOver: () => void = () => {};
      const watchedFence = (redis: Redis): RedisWriteFence => {
        const fence = createRedisWriteFence({ redis }, { writeTimeoutMs: 150 });
        return {
          start: () => fence.start(),
          stop: () => fence.stop(),
          send: (write) =>
            fence.send((deadline) => {
              const reply = write(deadline);
              handedOver();
              return reply;
            }),
        };
      };
      const { store, redis } = await processes.open(
        prefix,
        {},
        { redisUrl: `redis://127.0.0.1:${proxy.port}`, fence: watchedFence },
      );
      // Nothing else in flight on its connection (a catch-up would hold the write back).
      await store.sync();

      // The write leaves the client but never reaches Redis; then the connection is reset, and
      // ioredis reconnects (200 ms later) and sends the unanswered write again, as it does.
      proxy.cut("blackhole");
      const sent = new Promise<void>((resolve) => {
        handedOver = resolve;
      });
      const inFlight = failureOf(store.put(entryWrite("lost"), 0));
      await sent;
      // ioredis writes to the socket in a setImmediate (auto-pipelining): let it run first.
      await new Promise((resolve) => setImmediate(resolve));
      proxy.cut("reset");
      proxy.heal();
      const failure = await inFlight;
      // Sent: never "unavailable", whatever ioredis said when the connection went.
      expect(failure.kind).toBe("timeout");
      namedDeadline(failure);

      // Once a PING on that connection is answered, the re-sent copy (sent first on
      // reconnection) has run: after its deadline, so it changed nothing.
      await untilPong(redis);
      expect(await honest.redis.hexists(`${prefix}{registry}:entries`, "lost")).toBe(0);
      const b = await honest.store.put(entryWrite("b"), 0);
      expect(b.revision).toBe(a.revision + 1);
      expect(store.get("lost")).toBeUndefined();
    } finally {
      await proxy.close();
    }
  });

  it("brings a process cut off by a Redis crash up to date once Redis is back", {
    timeout: 60_000,
  }, async () => {
    const prefix = newPrefix();
    const one = await processes.open(prefix);
    const two = await processes.open(prefix);
    const seen: number[] = [];
    two.store.onChange((change) => seen.push(change.revision));
    await one.store.put(entryWrite("a"), 0);
    await vi.waitFor(() => expect(two.store.revision).toBe(1), waitLong);

    await redisServer().kill();
    expect((await failureOf(two.store.put(entryWrite("x"), 0))).kind).toBe("unavailable");
    await redisServer().restart();

    const b = await untilWritten(() => one.store.put(entryWrite("b"), 0));
    await vi.waitFor(() => expect(two.store.get("b")).toEqual(b), waitLong);
    const c = await untilWritten(() => two.store.put(entryWrite("c"), 0));
    expect(c.revision).toBe(3);
    await vi.waitFor(() => expect(one.store.get("c")).toEqual(c), waitLong);
    expect(seen).toEqual([1, 2, 3]);
    expect(stateOf(one.store)).toEqual(stateOf(two.store));
  });

  it("catches up on writes it was not notified of when its connections come back", {
    timeout: 60_000,
  }, async () => {
    const prefix = newPrefix();
    const one = await processes.open(prefix);
    const two = await processes.open(prefix);
    const seen: [string, number][] = [];
    two.store.onChange((change) => seen.push([change.type, change.revision]));

    await cutOff(two.redis);
    await cutOff(two.subscriber);
    const a = await one.store.put(entryWrite("a"), 0);
    const b = await one.store.put(entryWrite("b"), 0);
    await one.store.remove(tombstoneWrite("a"), a.revision);
    // Both its connections are down: `two` cannot have heard of any of it.
    expect(two.store.revision).toBe(0);

    // The main connection alone comes back: its reconnection is what makes `two` catch up.
    await two.redis.connect();
    await vi.waitFor(() => expect(two.store.revision).toBe(3), waitLong);
    expect(two.store.get("b")).toEqual(b);
    expect(two.store.tombstone("a")).toEqual(one.store.tombstone("a"));

    // The subscriber is still down, and nothing polls: this write goes unnoticed for now...
    const c = await one.store.put(entryWrite("c"), 0);
    expect(two.store.revision).toBe(3);
    // ...until the subscriber is back: it subscribes again, then catches up.
    await two.subscriber.connect();
    await vi.waitFor(() => expect(two.store.get("c")).toEqual(c), waitLong);
    // And it hears of later writes again.
    const d = await one.store.put(entryWrite("d"), 0);
    await vi.waitFor(() => expect(two.store.get("d")).toEqual(d), waitLong);

    expect(seen).toEqual([
      ["put", 1],
      ["put", 2],
      ["delete", 3],
      ["put", 4],
      ["put", 5],
    ]);
    expect(stateOf(two.store)).toEqual(stateOf(one.store));
  });

  it("reloads a snapshot when more changes were made meanwhile than the log keeps", {
    timeout: 60_000,
  }, async () => {
    const prefix = newPrefix();
    const one = await processes.open(prefix, { changeLogSize: 5 });
    const two = await processes.open(prefix, { changeLogSize: 5 });
    for (const name of ["a", "b", "c", "d", "e", "f"]) await one.store.put(entryWrite(name), 0);
    await vi.waitFor(() => expect(two.store.revision).toBe(6), waitLong);
    const seen: RegistryChange[] = [];
    one.store.onChange((change) => seen.push(change));

    await cutOff(one.redis);
    await cutOff(one.subscriber);
    await two.store.put(entryWrite("a", { version: "2" }), 1);
    await two.store.remove(tombstoneWrite("b"), 2);
    for (let i = 0; i < 10; i++) await two.store.put(entryWrite(`n${i}`), 0);
    expect(two.store.revision).toBe(18);
    expect(one.store.revision).toBe(6);

    await Promise.all([one.redis.connect(), one.subscriber.connect()]);
    await vi.waitFor(() => expect(one.store.revision).toBe(18), waitLong);
    expect(stateOf(one.store)).toEqual(stateOf(two.store));
    // Changes 7 to 13 are gone from every log: the view starts its log afresh at the snapshot.
    expect(one.store.compactedRevision).toBe(18);
    expect(one.store.changesSince(6)).toBeUndefined();
    expect(one.store.changesSince(18)).toEqual([]);
    // Its listeners were told what changed, in revision order.
    expect(
      seen.map((c) => [c.type, c.type === "put" ? c.entry.name : c.tombstone.name, c.revision]),
    ).toEqual([
      ["put", "a", 7],
      ["delete", "b", 8],
      ...Array.from({ length: 10 }, (_, i) => ["put", `n${i}`, 9 + i]),
    ]);
    expect(seen[0]).toEqual({ type: "put", revision: 7, entry: two.store.get("a") });
    expect(seen[1]).toEqual({ type: "delete", revision: 8, tombstone: two.store.tombstone("b") });
  });

  it("opens with the change log Redis holds, so that resumes from before the open are served", {
    timeout: 60_000,
  }, async () => {
    const prefix = newPrefix();
    const writer = await processes.open(prefix, { changeLogSize: 5 });
    for (const name of ["a", "b", "c", "d", "e", "f"]) await writer.store.put(entryWrite(name), 0);
    await writer.store.put(entryWrite("a", { version: "2" }), 1);
    await writer.store.remove(tombstoneWrite("b"), 2);
    // As a restarted process: a new view of the same prefix.
    const restarted = await processes.open(prefix, { changeLogSize: 5 });
    expect(stateOf(restarted.store)).toEqual(stateOf(writer.store));
    // The log in Redis holds the last 5 changes (4 to 8): served as the writer serves them.
    expect(restarted.store.compactedRevision).toBe(3);
    expect(restarted.store.changesSince(3)).toEqual(writer.store.changesSince(3));
    expect(restarted.store.changesSince(3)?.map((c) => c.revision)).toEqual([4, 5, 6, 7, 8]);
    expect(restarted.store.changesSince(6, 1)).toEqual(writer.store.changesSince(6, 1));
    expect(restarted.store.changesSince(2)).toBeUndefined();
    // A change that is the live entry's write holds that very entry, not a copy of it.
    const [seventh] = restarted.store.changesSince(6, 1) ?? [];
    expect(seventh?.type === "put" && seventh.entry).toBe(restarted.store.get("a"));
    // And it goes on from there as any view does.
    await writer.store.put(entryWrite("g"), 0);
    await vi.waitFor(() => expect(restarted.store.revision).toBe(9), waitLong);
    expect(restarted.store.changesSince(4)).toEqual(writer.store.changesSince(4));
    // A view with a smaller log keeps only what fits it.
    const smaller = await processes.open(prefix, { changeLogSize: 3 });
    expect(smaller.store.compactedRevision).toBe(6);
    expect(smaller.store.changesSince(6)).toEqual(writer.store.changesSince(6));
  });

  it("bounds the change log in Redis by records and by bytes, counting the bytes exactly", {
    timeout: 60_000,
  }, async () => {
    const prefix = newPrefix();
    const heavy = (name: string) => entryWrite(name, { metadata: { blob: "x".repeat(2_000) } });
    const { store, redis } = await processes.open(prefix, {
      changeLogSize: 30,
      changeLogBytes: 20_000,
    });
    for (let i = 0; i < 20; i++) await store.put(heavy(`h${i}`), 0);
    const log = `${prefix}{registry}:changes`;
    const records = await redis.lrange(log, 0, -1);
    const bytes = records.reduce((sum, record) => sum + Buffer.byteLength(record), 0);
    expect(Number(await redis.get(`${prefix}{registry}:changes:bytes`))).toBe(bytes);
    // As many of the newest records as fit in 20,000 bytes (records of about 2.3 KB: 8 of them).
    const size = Buffer.byteLength(records[0] ?? "");
    expect(bytes).toBeLessThanOrEqual(20_000);
    expect(bytes + size).toBeGreaterThan(20_000);
    expect(records.map((r) => JSON.parse(r).revision)).toEqual(
      Array.from({ length: records.length }, (_, i) => 21 - records.length + i),
    );
    // Small records: the count bounds the log.
    for (let i = 0; i < 60; i++) await store.put(entryWrite(`s${i}`), 0);
    expect(await redis.llen(log)).toBe(30);
    // A log written before the byte count existed is counted at the next write.
    await redis.del(`${prefix}{registry}:changes:bytes`);
    await store.put(entryWrite("t"), 0);
    const all = await redis.lrange(log, 0, -1);
    expect(Number(await redis.get(`${prefix}{registry}:changes:bytes`))).toBe(
      all.reduce((sum, record) => sum + Buffer.byteLength(record), 0),
    );
  });

  it("counts the bytes of every baseline record beside them, also for a hash written before", async () => {
    const prefix = newPrefix();
    const { store, redis } = await processes.open(prefix);
    const baseline = (n: number) => ({
      hash: `h${n}`,
      operationCount: 1,
      summary: Buffer.alloc(1_000 * n, n),
      recordedAt: 5,
    });
    for (const n of [1, 2, 3]) {
      await store.put(entryWrite(`s${n}`), 0);
      await store.putBaseline(`s${n}`, baseline(n));
    }
    const key = `${prefix}{registry}:baselines`;
    const recorded = async () => {
      let sum = 0;
      for (const name of await redis.hkeys(key)) sum += await redis.hstrlen(key, name);
      return sum;
    };
    expect(Number(await redis.get(`${key}:bytes`))).toBe(await recorded());
    await redis.del(`${key}:bytes`);
    await store.deleteBaseline("s2");
    expect(Number(await redis.get(`${key}:bytes`))).toBe(await recorded());
    expect(await recorded()).toBeGreaterThan(4_000);
  });

  it("catches up on a long gap page by page from the log, without a snapshot", {
    timeout: 60_000,
  }, async () => {
    const prefix = newPrefix();
    const one = await processes.open(prefix);
    const two = await processes.open(prefix);
    await cutOff(one.redis);
    await cutOff(one.subscriber);
    // More changes than one page of the catch-up read.
    for (let i = 0; i < 1_200; i++) await two.store.put(entryWrite(`p${i}`), 0);
    await Promise.all([one.redis.connect(), one.subscriber.connect()]);
    await vi.waitFor(() => expect(one.store.revision).toBe(1_200), waitLong);
    expect(stateOf(one.store)).toEqual(stateOf(two.store));
    // Applied change by change: the view's log holds them all (a snapshot would have reset it).
    expect(one.store.compactedRevision).toBe(0);
    expect(one.store.changesSince(0)).toHaveLength(1_200);
  });

  it("passes a tombstone of a name never live to other processes, by the log and by snapshot", {
    timeout: 60_000,
  }, async () => {
    const prefix = newPrefix();
    const one = await processes.open(prefix);
    const two = await processes.open(prefix);
    const ghost = await one.store.remove(tombstoneWrite("ghost"), 0);
    await vi.waitFor(() => expect(two.store.tombstone("ghost")).toEqual(ghost), waitLong);
    expect(two.store.changesSince(0)).toEqual([{ type: "delete", revision: 1, tombstone: ghost }]);
    const fresh = await processes.open(prefix);
    expect(fresh.store.tombstone("ghost")).toEqual(ghost);
    expect(fresh.store.historyId).toBe(one.store.historyId);
  });

  it("runs the tombstone purge in Redis only when its view holds a tombstone old enough", async () => {
    const { store, redis, prefix } = await processes.open(newPrefix());
    const tombstones = `${prefix}{registry}:tombstones`;
    // An old tombstone this view does not hold, as one another process wrote a moment ago would be.
    const unseen = { revision: 0, name: "unseen", deletedAt: 1_000, origin: "node-b", hlc: "1" };
    await redis.hset(tombstones, "unseen", JSON.stringify(unseen));
    await store.remove(tombstoneWrite("fresh", 5_000), 0);
    expect(await store.purgeTombstones(2_000)).toBe(0);
    expect(await redis.hexists(tombstones, "unseen")).toBe(1);
    // Once the view holds an old tombstone, the purge runs, and forgets every old one in Redis.
    await store.remove(tombstoneWrite("old", 1_500), 0);
    expect(await store.purgeTombstones(2_000)).toBe(2);
    expect(await redis.hkeys(tombstones)).toEqual(["fresh"]);
    expect([...store.tombstones()].map((t) => t.name)).toEqual(["fresh"]);
  });

  it("has every process sharing the Redis forget the tombstones one of them purged", {
    timeout: 60_000,
  }, async () => {
    const prefix = newPrefix();
    const one = await processes.open(prefix);
    const two = await processes.open(prefix);
    await one.store.remove(tombstoneWrite("old", 1_000), 0);
    await one.store.remove(tombstoneWrite("recent", 5_000), 0);
    await vi.waitFor(() => expect(two.store.tombstone("recent")).toBeDefined(), waitLong);
    // "late" is written after the purge, although deleted long before its cut-off (a replicated
    // delete): the purge did not forget it in Redis, and no view must.
    const names = (store: RegistryStore) => [...store.tombstones()].map((t) => t.name).sort();
    expect(await one.store.purgeTombstones(2_000)).toBe(1);
    await one.store.remove(tombstoneWrite("late", 500), 0);
    await vi.waitFor(() => expect(names(two.store)).toEqual(["late", "recent"]), waitLong);
    expect(names(one.store)).toEqual(["late", "recent"]);
    // And the other way round, the notice as it goes over the channel.
    const notices: string[] = [];
    const listener = createTestRedisClient(redisServer().url);
    try {
      await untilRedisReady(listener);
      listener.on("message", (_channel: string, message: string) => notices.push(message));
      await listener.subscribe(`${prefix}registry:changes`);
      expect(await two.store.purgeTombstones(2_000)).toBe(1);
      await vi.waitFor(() => expect(names(one.store)).toEqual(["recent"]), waitLong);
      expect(names(two.store)).toEqual(["recent"]);
      await vi.waitFor(() => expect(notices).toHaveLength(1), waitLong);
      expect(notices).toEqual([`purge:3:2000:${two.store.historyId}`]);
      // Nothing left to forget: no script run, no notice.
      expect(await one.store.purgeTombstones(2_000)).toBe(0);
    } finally {
      await closeRedisClient(listener);
    }
  });

  it("takes a new history id when Redis loses its data, and keeps it otherwise", {
    timeout: 60_000,
  }, async () => {
    const { store, redis, prefix } = await processes.open(newPrefix());
    await store.put(entryWrite("a"), 0);
    const history = store.historyId;
    expect(await redis.get(`${prefix}{registry}:history`)).toBe(history);
    await store.sync();
    expect(store.historyId).toBe(history);

    await redis.flushall();
    await store.sync();
    expect(store.historyId).toMatch(/\S/);
    expect(store.historyId).not.toBe(history);
    expect(store.revision).toBe(0);
    expect(store.get("a")).toBeUndefined();
    expect((await processes.open(prefix)).store.historyId).toBe(store.historyId);
  });

  it("refuses node id and cursor calls with 'unavailable' while Redis is down", async () => {
    const { store } = await processes.open(newPrefix());
    await redisServer().kill();
    expect((await failureOf(store.ensureNodeId("n"))).kind).toBe("unavailable");
    expect((await failureOf(store.getCursor("http://peer:1"))).kind).toBe("unavailable");
    const cursor = { historyId: "h", revision: 1 };
    expect((await failureOf(store.putCursor("http://peer:1", cursor))).kind).toBe("unavailable");
  });

  it("gives a restarted process back every one of 1,000 entries, exactly", {
    timeout: 60_000,
  }, async () => {
    const prefix = newPrefix();
    const first = await processes.open(prefix);
    await Promise.all(
      Array.from({ length: 1_000 }, (_, i) =>
        first.store.put(
          entryWrite(`svc-${i}`, {
            hlc: 111_411_000_000_000_000_000n + BigInt(i),
            metadata: { index: String(i), 'quote"and\\slash': "é ✓" },
            endpoints: [`/v1/${i}`],
          }),
          0,
        ),
      ),
    );
    for (let i = 0; i < 50; i++) {
      const name = `svc-${i}`;
      await first.store.remove(tombstoneWrite(name), first.store.get(name)?.revision ?? 0);
    }
    for (let i = 50; i < 100; i++) {
      const name = `svc-${i}`;
      const current = first.store.get(name);
      await first.store.put(entryWrite(name, { status: "HEALTHY" }), current?.revision ?? 0);
    }
    const before = stateOf(first.store);
    expect(before.revision).toBe(1_100);
    await processes.close(first);

    const again = await processes.open(prefix);
    expect(again.store.size).toBe(950);
    expect(stateOf(again.store)).toEqual(before);
    expect(again.store.get("svc-999")?.hlc).toBe(111_411_000_000_000_000_999n);
    const next = await again.store.put(entryWrite("svc-new"), 0);
    expect(next.revision).toBe(1_101);
  });

  it("leaves the caller's connections as it found them when closed", async () => {
    const prefix = newPrefix();
    const redis = createTestRedisClient(redisServer().url);
    const subscriber = createTestRedisClient(redisServer().url);
    try {
      await Promise.all([untilRedisReady(redis), untilRedisReady(subscriber)]);
      const listeners = () => [
        redis.listenerCount("ready"),
        subscriber.listenerCount("ready"),
        subscriber.listenerCount("message"),
      ];
      const unused = listeners();
      const store = createRedisRegistryStore({ redis, subscriber }, { keyPrefix: prefix });
      await store.open();
      expect(listeners()).not.toEqual(unused);
      await store.put(entryWrite("a"), 0);
      await store.close();
      expect(listeners()).toEqual(unused);
      expect(await redis.pubsub("NUMSUB", `${prefix}registry:changes`)).toEqual([
        `${prefix}registry:changes`,
        0,
      ]);
      // Both connections are still the caller's to use.
      expect(redis.status).toBe("ready");
      expect(await redis.hget(`${prefix}{registry}:revisions`, "a")).toBe("1");
    } finally {
      await Promise.all([closeRedisClient(redis), closeRedisClient(subscriber)]);
    }
  });

  it("fails to open with 'unavailable' when Redis cannot be reached", async () => {
    await redisServer().kill();
    const redis = createTestRedisClient(redisServer().url);
    const subscriber = createTestRedisClient(redisServer().url);
    const readyListeners = redis.listenerCount("ready");
    try {
      const store = createRedisRegistryStore(
        { redis, subscriber },
        { keyPrefix: newPrefix(), openTimeoutMs: 500 },
      );
      const failure = await failureOf(store.open());
      expect(failure.kind).toBe("unavailable");
      expect(failure.message).toBe("the registry store is unavailable");
      // Its wait for the connections left nothing behind.
      expect(redis.listenerCount("ready")).toBe(readyListeners);
    } finally {
      await Promise.all([closeRedisClient(redis), closeRedisClient(subscriber)]);
    }
  });
});

describe("RedisRegistryStore recording the events of its writes", () => {
  let server: RedisServer | undefined;
  const processes = storeProcesses(() => server?.url ?? "redis://127.0.0.1:1");

  beforeAll(async () => {
    server = await startRedisServer();
  });
  afterAll(async () => {
    await processes.closeAll();
    await server?.stop();
  });

  it("stores a write's event in the event stream in the same script, with the change's revision", async () => {
    const prefix = newPrefix();
    const target = redisEventTarget(prefix, { maxEvents: 1_000, channel: "" });
    const { store } = await processes.open(prefix, { events: target });
    expect(store.recordsEvents).toBe(true);
    const at = Date.UTC(2026, 10, 26, 12, 0, 0);
    const event = (type: string, timestamp: number): EventDraft => ({
      type,
      subject: "a",
      correlationId: "corr-1",
      traceId: "",
      source: "node-a",
      timestamp,
      payload: { service: "a", base_url: 'http://a.svc/"quoted"' },
    });

    const a = await store.put(entryWrite("a"), 0, event("registry.service.registered", at));
    // A write that is refused stores no event.
    await failureOf(store.put(entryWrite("a"), 0, event("never", at + 1)));
    const gone = await store.remove(
      tombstoneWrite("a"),
      a.revision,
      event("registry.service.deregistered", at + 2),
    );
    await store.put(entryWrite("b"), 0);

    const reader = createTestRedisClient(server?.url ?? "");
    const blocking = createTestRedisClient(server?.url ?? "");
    try {
      const events = createRedisEventStore(
        { redis: reader, blocking, clock: createManualClock(at) },
        { keyPrefix: prefix },
      );
      await events.open();
      const page = await events.read({ limit: 10 });
      expect(page.events).toEqual([
        {
          ...event("registry.service.registered", at),
          id: `${at}-0`,
          payload: { service: "a", base_url: 'http://a.svc/"quoted"', revision: a.revision },
        },
        {
          ...event("registry.service.deregistered", at + 2),
          id: `${at + 2}-0`,
          payload: { service: "a", base_url: 'http://a.svc/"quoted"', revision: gone.revision },
        },
      ]);
      // Events appended by the event store afterwards continue the same sequence of ids.
      const [next] = await events.append([event("events.cleared", at)]);
      expect(next?.id).toBe(`${at + 2}-1`);
    } finally {
      await Promise.all([closeRedisClient(reader), closeRedisClient(blocking)]);
    }
  });

  it("records no event without an event target", async () => {
    const { store } = await processes.open(newPrefix());
    expect(store.recordsEvents).toBe(false);
  });
});
