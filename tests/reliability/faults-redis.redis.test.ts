import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { RegistryService } from "../../gen/orchestrator/v1/registry_pb.js";
import { createGrpcJsClient } from "../../src/clients/grpc-js-client.js";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import { startOrchestrator } from "../support/orchestrator.js";
import {
  createTestRedisClient,
  type RedisServer,
  startRedisServer,
  untilRedisReady,
} from "../support/redis-server.js";
import { byProfile, recordReliability } from "../support/reliability-report.js";
import { listRegistry, registration, rest, until, untilStatus } from "../support/rest.js";

// Fault: Redis SIGKILLed and restarted (same port, same AOF with appendfsync always, so Redis
// itself keeps every write it acknowledged) while writers register services through a node.
// What tests/e2e/registry-redis.redis.test.ts already proves with one write at a time (503 while
// down, reads from the last known state, recovery without a restart) is proven here under load:
// writers in flight at the moment of the kill, reads polled all through the outage, and the
// durability of every acknowledged write across the Redis restart.

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Statuses a write may end with while Redis dies: done, unavailable, or deadline exceeded. */
const cleanStatuses = new Set([200, 503, 504]);

interface Load {
  /** Names whose registration was answered 200. */
  readonly acknowledged: string[];
  /** Every status seen (writes and reads), by status. */
  readonly statuses: Map<string, number>;
  /** Reads of GET /registry that did not answer 200, and writes with an unclean status. */
  readonly errors: string[];
  requests(): number;
  stop(): Promise<void>;
}

/**
 * `writers` loops registering new names over REST, and one loop reading the registry (GET
 * /registry, then ListServices over gRPC, in turn), until stopped.
 */
function startLoad(base: string, address: string, writers: number): Load {
  const acknowledged: string[] = [];
  const statuses = new Map<string, number>();
  const errors: string[] = [];
  let stopping = false;
  let requests = 0;
  const note = (what: string) => {
    requests++;
    statuses.set(what, (statuses.get(what) ?? 0) + 1);
  };
  const writer = async (w: number) => {
    for (let n = 0; !stopping; n++) {
      const name = `load-${w}-${n}`;
      const reply = await rest(base, "POST", "/registry/register", registration(name));
      note(`write ${reply.status}`);
      if (reply.status === 200) acknowledged.push(name);
      else if (!cleanStatuses.has(reply.status)) errors.push(`${name}: ${reply.text}`);
      // A refused write is retried later by a real client; here the next name goes on at once,
      // with a breath so that an outage is not a busy loop.
      if (reply.status !== 200) await delay(20);
    }
  };
  const client = createGrpcJsClient(RegistryService, address);
  const reader = async () => {
    try {
      while (!stopping) {
        const reply = await rest(base, "GET", "/registry?page_size=1");
        note(`read ${reply.status}`);
        if (reply.status !== 200) errors.push(`GET /registry: ${reply.status} ${reply.text}`);
        await client.listServices({ pageSize: 1 }).then(
          () => note("ListServices OK"),
          (error: unknown) => {
            note("ListServices failed");
            errors.push(`ListServices: ${String(error)}`);
          },
        );
        await delay(20);
      }
    } finally {
      client.close();
    }
  };
  const done = Promise.all([...Array.from({ length: writers }, (_, w) => writer(w)), reader()]);
  return {
    acknowledged,
    statuses,
    errors,
    requests: () => requests,
    async stop() {
      stopping = true;
      await done;
    },
  };
}

/** Waits until the writers have had `count` more writes acknowledged. */
async function untilAcknowledged(load: Load, count: number): Promise<void> {
  const target = load.acknowledged.length + count;
  await until(`${target} acknowledged writes`, async () =>
    load.acknowledged.length >= target ? true : undefined,
  );
}

describe("faults: Redis killed and restarted under write load", () => {
  it("keeps every acknowledged write, refuses the rest cleanly, serves reads, and recovers by itself", {
    timeout: byProfile(90_000, 300_000),
  }, async () => {
    const redis: RedisServer = await startRedisServer({ persistent: true });
    cleanups.push(() => redis.stop());
    const prefix = `faults-${randomUUID()}:`;
    const node = await startOrchestrator({
      env: {
        REDIS_URL: redis.url,
        REDIS_KEY_PREFIX: prefix,
        NODE_ID: "faults-redis",
        // No probe writes: every write is one of the writers'.
        HEALTH_CHECK_INTERVAL_MS: "3600000",
        LOG_LEVEL: "warn",
      },
    });
    cleanups.push(() => node.close());
    await untilStatus(node.url, "/ready", 200);

    const kills = byProfile(2, 5);
    const outageMs = byProfile(1_500, 5_000);
    const load = startLoad(node.url, node.address, byProfile(4, 8));
    try {
      for (let kill = 0; kill < kills; kill++) {
        // Some writes acknowledged before each kill, so that it lands amid the load.
        await untilAcknowledged(load, 20);
        await redis.kill();
        await delay(outageMs);
        await redis.restart();
        // Back without a restart of the node: ready again, and writes acknowledged again.
        await untilStatus(node.url, "/ready", 200);
        await untilAcknowledged(load, 20);
      }
    } finally {
      await load.stop();
    }

    expect(load.errors).toEqual([]);
    // The outages were seen by the writers (refused writes), not slipped between them.
    const refused = (load.statuses.get("write 503") ?? 0) + (load.statuses.get("write 504") ?? 0);
    expect(refused).toBeGreaterThan(0);

    // Every acknowledged write is in the node's view, and in Redis itself.
    const served = new Set((await listRegistry(node.url)).services.map((s) => s.name));
    expect(load.acknowledged.filter((name) => !served.has(name))).toEqual([]);
    const raw = createTestRedisClient(redis.url);
    try {
      await untilRedisReady(raw);
      const stored = new Set(await raw.hkeys(`${prefix}{registry}:entries`));
      expect(load.acknowledged.filter((name) => !stored.has(name))).toEqual([]);
      // And the node's view is Redis' (a write refused after Redis applied it, its answer lost
      // with the connection, is in both or in neither once the node has caught up).
      expect([...served].sort()).toEqual([...stored].sort());
    } finally {
      await closeRedisClient(raw);
    }

    recordReliability({
      suite: "faults",
      name: "redis SIGKILL + restart under write load",
      faults: kills,
      requests: load.requests(),
      errors: load.errors.length,
      note: `${load.acknowledged.length} writes acked, all kept; ${refused} refused 503/504; reads (REST and gRPC) answered throughout`,
    });
  });
});
