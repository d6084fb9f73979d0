import { execFile } from "node:child_process";
import { setTimeout as delay } from "node:timers/promises";
import { promisify } from "node:util";
import type { Redis } from "ioredis";
import { pino } from "pino";
import { createRedisClient } from "../../src/redis/redis-client.js";
import { freePort } from "./process.js";
import { type RedisServer, startRedisServer } from "./redis-server.js";

const run = promisify(execFile);

/** A throwaway Redis Cluster of masters on 127.0.0.1, without replicas. */
export interface RedisCluster {
  /** `127.0.0.1:<port>` of every master: the seeds REDIS_CLUSTER_NODES takes. */
  readonly nodes: readonly string[];
  readonly servers: readonly RedisServer[];
  /** Kills every server and removes their directories. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts `masters` `redis-server`s in cluster mode on free loopback ports (each with its bus
 * port chosen free too, and its nodes.conf in its own temporary directory), joins them with
 * `redis-cli --cluster create`, and waits until every node says `cluster_state:ok`. Never touches
 * the shared Redis on 6379.
 * @throws Error when the cluster does not form in `readyTimeoutMs` (default 60000 ms).
 */
export async function startRedisCluster(
  options: { masters?: number; readyTimeoutMs?: number } = {},
): Promise<RedisCluster> {
  const masters = options.masters ?? 3;
  const servers: RedisServer[] = [];
  const stop = async () => {
    await Promise.all(servers.map((server) => server.stop()));
  };
  try {
    for (let i = 0; i < masters; i++) {
      servers.push(
        await startRedisServer({
          extraArgs: async () => [
            ...["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
            ...["--cluster-port", String(await freePort())],
            // Slots of a node that is down stay unserved, but the others keep answering.
            ...["--cluster-require-full-coverage", "no"],
          ],
        }),
      );
    }
    const nodes = servers.map((server) => `127.0.0.1:${server.port}`);
    await run(
      "redis-cli",
      ["--cluster", "create", ...nodes, "--cluster-replicas", "0", "--cluster-yes"],
      { timeout: 60_000 },
    );
    await untilClusterOk(servers, options.readyTimeoutMs ?? 60_000);
    return { nodes, servers, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Polls CLUSTER INFO on every node until each has all slots and says the cluster is ok. */
async function untilClusterOk(servers: readonly RedisServer[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const answers = await Promise.all(
      servers.map((server) =>
        run("redis-cli", ["-p", String(server.port), "cluster", "info"], { timeout: 10_000 }).then(
          (result) => result.stdout,
          (error: unknown) => String(error),
        ),
      ),
    );
    const ok = (info: string) =>
      info.includes("cluster_state:ok") && info.includes("cluster_slots_ok:16384");
    if (answers.every(ok)) return;
    last = answers.find((info) => !ok(info)) ?? "";
    await delay(100);
  }
  throw new Error(`the Redis Cluster did not form in time; a node said:\n${last}`);
}

/**
 * An ioredis Cluster client configured as the app configures its own (`createRedisClient` with
 * REDIS_CLUSTER_NODES), typed as the stores take it. Close it with `closeRedisClient`.
 */
export function createTestClusterClient(cluster: RedisCluster): Redis {
  return createRedisClient({ clusterNodes: cluster.nodes, port: 6379 }, pino({ level: "silent" }));
}
