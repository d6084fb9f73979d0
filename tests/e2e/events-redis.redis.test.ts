import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import { lineReader } from "../support/line-reader.js";
import { startOrchestrator } from "../support/orchestrator.js";
import { type OrchestratorProcess, startOrchestratorProcess } from "../support/process.js";
import { type RedisServer, startRedisServer, subscribeToChannel } from "../support/redis-server.js";
import { expectStatus, type Json, registration, rest, until } from "../support/rest.js";

// The event store on a real redis-server: several orchestrators sharing one stream (each event
// seen once by every watcher, published once), replays published with replay_of, and what an
// orchestrator killed with SIGKILL keeps.

let server: RedisServer | undefined;
let subscriber: Redis | undefined;
/** Every message on orchestrator.events since the suite started (the channel is server-wide). */
const published: Json[] = [];

beforeAll(async () => {
  server = await startRedisServer();
  subscriber = await subscribeToChannel(server.url, "orchestrator.events", published);
});
afterAll(async () => {
  if (subscriber) await closeRedisClient(subscriber);
  await server?.stop();
});

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function redisEnv(prefix: string, nodeId: string): Record<string, string> {
  if (server === undefined) throw new Error("redis-server not started");
  return {
    REDIS_URL: server.url,
    REDIS_KEY_PREFIX: prefix,
    NODE_ID: nodeId,
    // No probes: every event here is one the test caused.
    HEALTH_CHECK_INTERVAL_MS: "3600000",
  };
}

async function startProcess(env: Record<string, string>): Promise<OrchestratorProcess> {
  const node = await startOrchestratorProcess({ env });
  cleanups.push(() => node.stop("SIGKILL"));
  return node;
}

/** An NDJSON watch of events, read a line at a time. */
function watchEvents(base: string, query = "") {
  const controller = new AbortController();
  cleanups.push(() => controller.abort());
  const response = fetch(`${base}/infrastructure/events/watch${query}`, {
    signal: controller.signal,
  });
  response.catch(() => undefined);
  let lines: ReturnType<typeof lineReader> | undefined;
  return async (): Promise<Json> => {
    if (lines === undefined) {
      const answer = await response;
      expect(answer.status).toBe(200);
      const body = answer.body as AsyncIterable<Uint8Array> | null;
      if (body === null) throw new Error("no body");
      lines = lineReader(body[Symbol.asyncIterator]());
    }
    const line = await lines.next();
    if (line === undefined) throw new Error("the watch ended");
    return JSON.parse(line) as Json;
  };
}

/** Every stored event, paged with the cursor (pages of 1,000). */
async function history(base: string, query = ""): Promise<Json[]> {
  const all: Json[] = [];
  let cursor = "";
  for (;;) {
    const page = await expectStatus(
      rest(base, "GET", `/infrastructure/events/history?limit=1000&cursor=${cursor}${query}`),
      200,
    );
    all.push(...(page.events as Json[]));
    cursor = String(page.next_cursor);
    if (cursor === "") return all;
  }
}

describe("two orchestrator processes on one Redis", () => {
  it("an event stored on A is seen once by a watch on B, and published once", {
    timeout: 120_000,
  }, async () => {
    const prefix = `events-e2e:${randomUUID()}:`;
    const [idA, idB] = [`node-a-${randomUUID().slice(0, 8)}`, `node-b-${randomUUID().slice(0, 8)}`];
    const [a, b] = await Promise.all([
      startProcess(redisEnv(prefix, idA)),
      startProcess(redisEnv(prefix, idB)),
    ]);
    const next = watchEvents(b.url);
    expect(Object.keys(await next())).toEqual(["started_after"]);

    // A registry write (its event stored in the write's own script), then an event through A's
    // outbox (the clearing of nothing), then one of B's own.
    await expectStatus(rest(a.url, "POST", "/registry/register", registration("from-a")), 200);
    await expectStatus(
      rest(a.url, "POST", "/infrastructure/events/clear", { correlation_id: "nothing-here" }),
      200,
    );
    // The outbox stores its event after the answer: wait for it, so B's write comes after it.
    await until("the clearing event stored", async () =>
      (await history(a.url)).length >= 2 ? true : undefined,
    );
    await expectStatus(rest(b.url, "POST", "/registry/register", registration("from-b")), 200);
    const seen: Json[] = [];
    for (let i = 0; i < 3; i++) seen.push((await next()).event as Json);
    expect(seen.map((e) => [e.source, e.type, e.subject])).toEqual([
      [idA, "registry.service.registered", "from-a"],
      [idA, "events.cleared", "events"],
      [idB, "registry.service.registered", "from-b"],
    ]);
    // Both nodes read the same stream.
    expect(await history(a.url)).toEqual(seen);
    expect(await history(b.url)).toEqual(seen);

    // Published once each, by the script that stored it, whichever node that was.
    const ours = () => published.filter((e) => e.source === idA || e.source === idB);
    await until("three events published", async () => (ours().length >= 3 ? true : undefined));
    // A fourth event, published after them: once it is in, nothing else of ours can come late.
    await expectStatus(rest(b.url, "DELETE", "/registry/from-b"), 200);
    await until("the marker published", async () => (ours().length >= 4 ? true : undefined));
    expect(ours().map((e) => e.id)).toEqual([...seen.map((e) => e.id), ours()[3]?.id]);
    expect(ours()[0]).toEqual({ ...seen[0], replay_of: undefined });
  });
});

describe("replay on Redis", () => {
  it("publishes the selected events again, in their original order, marked replay_of", {
    timeout: 60_000,
  }, async () => {
    const nodeId = `node-replay-${randomUUID().slice(0, 8)}`;
    const node = await startOrchestrator({ env: redisEnv(`events-e2e:${randomUUID()}:`, nodeId) });
    cleanups.push(() => node.close());
    for (const name of ["r1", "r2", "r3"]) {
      await expectStatus(
        fetchJson(node.url, "/registry/register", registration(name), {
          "x-correlation-id": "again",
        }),
        200,
      );
    }
    await expectStatus(rest(node.url, "POST", "/registry/register", registration("other")), 200);
    const stored = await history(node.url);
    expect(stored).toHaveLength(4);
    const mine = () => published.filter((e) => e.source === nodeId);
    await until("four events published", async () => (mine().length === 4 ? true : undefined));

    const dry = await expectStatus(
      rest(node.url, "POST", "/infrastructure/events/replay", {
        correlation_id: "again",
        dry_run: true,
      }),
      200,
    );
    expect(dry.count).toBe(3);
    const replayed = await expectStatus(
      rest(node.url, "POST", "/infrastructure/events/replay", { correlation_id: "again" }),
      200,
    );
    expect(replayed.replayed_events).toEqual(stored.slice(0, 3));
    await until("three replays published", async () => (mine().length >= 7 ? true : undefined));
    // The dry run published nothing; the replay published each once, in order, marked.
    expect(mine().slice(4)).toEqual(
      stored.slice(0, 3).map((event) => {
        const { replay_of: _, ...rest } = event;
        return { ...rest, replay_of: event.id };
      }),
    );
    // Nothing new was stored.
    expect(await history(node.url)).toEqual(stored);
  });
});

describe("an orchestrator killed with SIGKILL", () => {
  it("keeps the event of every registry change it acknowledged", { timeout: 180_000 }, async () => {
    // What is guaranteed, and asserted: on Redis, a registry write and its event are one Lua
    // script, so every write that was answered 200 before the kill has its event in the history
    // after a restart, with the write's revision; and so does every entry the registry holds
    // (a write in flight at the kill either happened with its event or not at all).
    // What is not guaranteed, and not asserted: events that go through the outbox (replication,
    // drift findings, events.cleared) and were still waiting in it at the kill are lost; and a
    // write in flight at the kill may or may not have happened.
    const prefix = `events-e2e:${randomUUID()}:`;
    const nodeId = `node-kill-${randomUUID().slice(0, 8)}`;
    const env = redisEnv(prefix, nodeId);
    const first = await startProcess(env);

    const acknowledged = new Map<string, string>();
    let stop = false;
    const writer = async (lane: number) => {
      for (let i = 0; !stop; i++) {
        const name = `svc-${lane}-${i % 20}`;
        try {
          const reply = await rest(first.url, "POST", "/registry/register", {
            ...registration(name),
            version: String(i),
          });
          if (reply.status === 200) {
            acknowledged.set(`${name}@${String((reply.body.service as Json).revision)}`, name);
          }
        } catch {
          return; // the node is gone
        }
      }
    };
    const writers = Array.from({ length: 8 }, (_, lane) => writer(lane));
    await until("200 writes acknowledged", async () =>
      acknowledged.size >= 200 ? true : undefined,
    );
    await first.stop("SIGKILL");
    stop = true;
    await Promise.all(writers);

    const second = await startProcess(env);
    const events = await history(second.url, "&event_types=registry.service.registered");
    const recorded = new Set(
      events.map((e) => `${String(e.subject)}@${String((e.payload as Json).revision)}`),
    );
    const missing = [...acknowledged.keys()].filter((write) => !recorded.has(write));
    expect(missing).toEqual([]);
    const { services } = await expectStatus(rest(second.url, "GET", "/registry"), 200);
    for (const service of services as Json[]) {
      expect(recorded.has(`${String(service.name)}@${String(service.revision)}`)).toBe(true);
    }
  });
});

/** A JSON POST with extra headers. */
async function fetchJson(
  base: string,
  path: string,
  body: Json,
  headers: Record<string, string>,
): Promise<{ status: number; text: string; body: Json }> {
  const response = await fetch(`${base}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, text, body: JSON.parse(text) as Json };
}
