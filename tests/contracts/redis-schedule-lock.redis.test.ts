import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterAll, beforeAll } from "vitest";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import { createRedisScheduleLock } from "../../src/schedules/redis-schedule-lock.js";
import type { ScheduleLock } from "../../src/schedules/schedule-lock.js";
import {
  createTestRedisClient,
  type RedisServer,
  startRedisServer,
  untilRedisReady,
} from "../support/redis-server.js";
import { scheduleLockContract } from "./schedule-lock.contract.js";

let server: RedisServer;
const clients: Redis[] = [];
const prefixes = new Map<ScheduleLock, string>();

beforeAll(async () => {
  server = await startRedisServer();
});
afterAll(async () => {
  for (const client of clients) await closeRedisClient(client);
  await server?.stop();
});

async function lockOver(keyPrefix: string): Promise<ScheduleLock> {
  const redis = createTestRedisClient(server.url);
  clients.push(redis);
  await untilRedisReady(redis);
  const lock = createRedisScheduleLock({ redis, keyPrefix });
  prefixes.set(lock, keyPrefix);
  return lock;
}

// The twin has a connection of its own, as another orchestrator would.
scheduleLockContract("redis", {
  create: () => lockOver(`test-${randomUUID()}:`),
  twin: (lock) => lockOver(prefixes.get(lock) ?? ""),
});
