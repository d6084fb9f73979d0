import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { type RedisServer, startRedisServer, subscribeToChannel } from "../support/redis-server.js";
import { expectStatus, type Json, rest, until } from "../support/rest.js";

// POST /ingest on a node with Redis: the agents hear of the request on the
// `ingestion.requested` channel of a real (throwaway) redis-server.

let server: RedisServer | undefined;
let subscriber: Redis | undefined;
let node: RunningOrchestrator | undefined;
const heard: Json[] = [];

beforeAll(async () => {
  server = await startRedisServer();
  subscriber = await subscribeToChannel(server.url, "ingestion.requested", heard);
  node = await startOrchestrator({
    env: {
      REDIS_URL: server.url,
      REDIS_KEY_PREFIX: "ingest-test:",
      HEALTH_CHECK_INTERVAL_MS: "3600000",
    },
  });
  await until("the node is ready", async () =>
    (await rest(node?.url ?? "", "GET", "/ready")).status === 200 ? true : undefined,
  );
});
afterAll(async () => {
  await node?.close();
  if (subscriber) await closeRedisClient(subscriber);
  await server?.stop();
});

describe("POST /ingest with Redis", () => {
  it("publishes the request on ingestion.requested with its correlation and trace ids", async () => {
    const accepted = await expectStatus(
      rest(node?.url ?? "", "POST", "/ingest", {
        source: "confluence",
        scope: { space: "ENG" },
        correlation_id: "ing-redis-1",
      }),
      200,
    );
    const message = await until("the message on ingestion.requested", async () =>
      heard.find((m) => m.correlation_id === "ing-redis-1"),
    );
    // The agents' contract: the payload itself, as the original service published it.
    expect(message).toEqual({
      source: "confluence",
      scope: { space: "ENG" },
      correlation_id: "ing-redis-1",
      trace_id: accepted.trace_id,
    });
  });
});
