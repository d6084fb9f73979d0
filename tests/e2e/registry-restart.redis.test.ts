import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { PeerService, type ReplicateResponse } from "../../gen/orchestrator/v1/peer_pb.js";
import { createGrpcJsClient } from "../../src/clients/grpc-js-client.js";
import { type OrchestratorProcess, startOrchestratorProcess } from "../support/process.js";
import { type RedisServer, startRedisServer } from "../support/redis-server.js";
import {
  deregister,
  openWatch,
  patience,
  register,
  registration,
  untilStatus,
  type WatchLine,
} from "../support/rest.js";

// A node process on Redis that restarts (killed, or stopped) comes back with the change log Redis
// still holds: a watcher, or a peer, resuming from a revision of before the restart gets the
// changes after it, not a snapshot; only a revision the log no longer reaches gets one.

/** The first `count` lines of a watch from `startRevision`, then the watch is closed. */
async function watchLines(base: string, startRevision: number, count: number) {
  const watch = openWatch(base, startRevision);
  try {
    const lines: WatchLine[] = [];
    while (lines.length < count) lines.push(await watch.next());
    return lines;
  } finally {
    watch.close();
  }
}

/** The hello and the first `count` messages after it of a Replicate stream from the cursor. */
async function replicate(
  node: OrchestratorProcess,
  cursor: { historyId: string; revision: number },
  count: number,
): Promise<{ hello: ReplicateResponse["event"]; after: ReplicateResponse["event"][] }> {
  const client = createGrpcJsClient(PeerService, `127.0.0.1:${node.port}`);
  const controller = new AbortController();
  try {
    const stream = client.replicate(
      {
        nodeId: "test-peer",
        incarnationId: randomUUID(),
        fromIncarnationId: cursor.historyId,
        fromRevision: BigInt(cursor.revision),
      },
      { signal: controller.signal, deadline: new Date(Date.now() + patience) },
    );
    const events: ReplicateResponse["event"][] = [];
    for await (const message of stream) {
      // Keepalives come when the stream is idle: not what a resume is about.
      if (message.event.case !== "keepalive") events.push(message.event);
      if (events.length > count) break;
    }
    const [hello, ...after] = events;
    if (hello === undefined) throw new Error("the Replicate stream ended before its hello");
    return { hello, after };
  } finally {
    controller.abort();
    client.close();
  }
}

/** What a resumed watch sends for a change: the entry (or tombstone) at its revision. */
function change(type: "PUT" | "DELETE", revision: number) {
  return {
    type: `WATCH_EVENT_TYPE_${type}`,
    revision: String(revision),
    ...(type === "PUT" ? { snapshot: false, compacted: false } : {}),
  };
}

describe("a restarted node on Redis resumes watches and peers from the change log", () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function redisServer(): Promise<RedisServer> {
    const server = await startRedisServer();
    cleanups.push(() => server.stop());
    return server;
  }

  async function nodeProcess(env: Record<string, string>): Promise<OrchestratorProcess> {
    const node = await startOrchestratorProcess({ env });
    cleanups.push(() => node.stop());
    // The store loads in the background: ready means it has.
    await untilStatus(node.url, "/ready", 200);
    return node;
  }

  it("serves the changes after a revision of before a SIGKILL, and of before a SIGTERM", {
    timeout: 180_000,
  }, async () => {
    const redis = await redisServer();
    const env = {
      REDIS_URL: redis.url,
      REDIS_KEY_PREFIX: `test-${randomUUID()}:`,
      NODE_ID: "node-restart",
      // No probe writes: every revision is a write of this test.
      HEALTH_CHECK_INTERVAL_MS: "3600000",
      // The smallest log there is, so that the test can also outrun it.
      REGISTRY_CHANGE_LOG_SIZE: "10",
    };

    const first = await nodeProcess(env);
    for (const name of ["alpha", "beta", "gamma"]) await register(first.url, registration(name));
    const noted = 3;
    const { hello: greeting } = await replicate(first, { historyId: "", revision: 0 }, 0);
    if (greeting.case !== "hello") throw new Error(`expected a hello, got ${greeting.case}`);
    const historyId = greeting.value.incarnationId;
    expect(historyId).not.toBe("");
    const delta = await register(first.url, registration("delta"));
    const beta = await register(first.url, registration("beta", { version: "2" }));
    await deregister(first.url, "alpha");
    expect([delta.revision, beta.revision]).toEqual(["4", "5"]);
    await first.stop("SIGKILL");

    /** Resumes a watch and a Replicate stream from `noted` on `node`: the changes 4, 5, 6. */
    const expectResumed = async (node: OrchestratorProcess) => {
      const lines = await watchLines(node.url, noted, 3);
      expect(lines).toMatchObject([change("PUT", 4), change("PUT", 5), change("DELETE", 6)]);
      expect(lines[0]?.service).toMatchObject({ name: "delta" });
      expect(lines[1]?.service).toEqual(beta);
      expect(lines[2]?.service).toMatchObject({ name: "alpha" });

      const { hello, after } = await replicate(node, { historyId, revision: noted }, 3);
      expect(hello).toMatchObject({
        case: "hello",
        value: { incarnationId: historyId, snapshot: false, revision: 6n },
      });
      expect(after).toMatchObject([
        { case: "change", value: { revision: 4n, deleted: false, entry: { name: "delta" } } },
        { case: "change", value: { revision: 5n, deleted: false, entry: { name: "beta" } } },
        { case: "change", value: { revision: 6n, deleted: true, entry: { name: "alpha" } } },
      ]);
    };

    // --- Killed: nothing said goodbye, the log in Redis is all there is. ---
    const second = await nodeProcess(env);
    await expectResumed(second);
    await second.stop("SIGTERM");

    // --- Stopped gracefully: the same. ---
    const third = await nodeProcess(env);
    await expectResumed(third);
    // Ten more changes (7 to 16) and another restart: the log (10 changes) no longer holds 4 to
    // 6, so a resume from 3 gets a snapshot, and one from 6 still the changes.
    for (let i = 0; i < 10; i++) await register(third.url, registration(`more-${i}`));
    await third.stop("SIGKILL");
    const fourth = await nodeProcess(env);
    const [firstLine] = await watchLines(fourth.url, noted, 1);
    expect(firstLine).toMatchObject({ snapshot: true, compacted: true });
    const fromSix = await watchLines(fourth.url, 6, 10);
    expect(fromSix.map((line) => [line.type, line.revision, line.snapshot])).toEqual(
      Array.from({ length: 10 }, (_, i) => ["WATCH_EVENT_TYPE_PUT", String(7 + i), false]),
    );
  });
});
