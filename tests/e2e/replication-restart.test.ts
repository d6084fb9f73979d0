import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { closeRedisClient } from "../../src/redis/redis-client.js";
import {
  freePort,
  type OrchestratorProcess,
  startOrchestratorProcess,
} from "../support/process.js";
import {
  createTestRedisClient,
  type RedisServer,
  startRedisServer,
  untilRedisReady,
} from "../support/redis-server.js";
import {
  entryNamed,
  listPeers,
  nodeIdOf,
  quietEnv,
  replicated,
  untilConverged,
} from "../support/replication.js";
import {
  deregister,
  expectStatus,
  type Json,
  register,
  registration,
  rest,
  until,
} from "../support/rest.js";

// Three real orchestrator processes in a full mesh; one is killed (SIGKILL) and started again on
// the same port. With the memory store it comes back empty, under a new history, and takes the
// others' state by snapshot; with Redis it comes back with its data, its node id and its cursors,
// and resumes. Writes a node made while the others were down reach them once all are back.

/** Three processes on ports picked beforehand, each listing the other two. */
class ProcessMesh {
  readonly ports: number[] = [];
  private readonly running: (OrchestratorProcess | undefined)[] = [undefined, undefined, undefined];

  constructor(private readonly env: (i: number) => Record<string, string>) {}

  async reservePorts(): Promise<void> {
    for (let i = 0; i < 3; i++) this.ports.push(await freePort());
  }

  url(i: number): string {
    const port = this.ports[i] ?? expect.fail(`no port for node ${i}`);
    return `http://127.0.0.1:${port}`;
  }

  get urls(): string[] {
    return [0, 1, 2].map((i) => this.url(i));
  }

  /** Starts node `i` (again) and waits until it is ready. */
  async start(i: number): Promise<void> {
    const peers = [0, 1, 2].filter((j) => j !== i).map((j) => this.url(j));
    this.running[i] = await startOrchestratorProcess({
      env: {
        ...quietEnv,
        PORT: String(this.ports[i]),
        ORCHESTRATOR_PEERS: peers.join(","),
        ...this.env(i),
      },
    });
    const url = this.url(i);
    await until(`${url} ready`, async () =>
      (await rest(url, "GET", "/ready")).status === 200 ? true : undefined,
    );
  }

  /** Stops node `i` with `signal` and checks it went the way asked. */
  async stop(i: number, signal: "SIGKILL" | "SIGTERM"): Promise<void> {
    const node = this.running[i] ?? expect.fail(`node ${i} is not running`);
    this.running[i] = undefined;
    const status = await node.stop(signal);
    if (signal === "SIGKILL") expect(status.signal).toBe("SIGKILL");
    else expect(status.code, `${node.stderr()}${node.stdout().slice(-4_000)}`).toBe(0);
  }

  async close(): Promise<void> {
    await Promise.all(this.running.map((node) => node?.stop("SIGKILL")));
  }
}

describe("a node killed and restarted, with the memory store", () => {
  const mesh = new ProcessMesh((i) => ({ NODE_ID: nodeIdOf(i) }));

  beforeAll(async () => {
    await mesh.reservePorts();
    await Promise.all([0, 1, 2].map((i) => mesh.start(i)));
  });

  afterAll(async () => {
    await mesh.close();
  });

  it("takes the others' state by snapshot, and its new writes reach them", {
    timeout: 90_000,
  }, async () => {
    const [a, b, c] = [mesh.url(0), mesh.url(1), mesh.url(2)];
    await register(b, registration("early", { version: "1" }));
    await register(a, registration("doomed"));
    await untilConverged(mesh.urls);
    const historyOfB = (await listPeers(a)).find((peer) => peer.url === b)?.incarnation_id;
    expect(historyOfB ?? "").not.toBe("");

    await mesh.stop(1, "SIGKILL");
    const whileDownA = await register(a, registration("while-down-a"));
    await deregister(a, "doomed");
    const whileDownC = await register(c, registration("while-down-c"));
    const early = await register(c, registration("early", { version: "2" }));

    await mesh.start(1);
    const caughtUp = await untilConverged(mesh.urls);
    expect(entryNamed(caughtUp, "while-down-a")).toEqual(replicated(whileDownA));
    expect(entryNamed(caughtUp, "while-down-c")).toEqual(replicated(whileDownC));
    expect(entryNamed(caughtUp, "early")).toEqual(replicated(early));
    expect(entryNamed(caughtUp, "doomed")).toBeUndefined();
    expect((await rest(b, "GET", "/registry/doomed")).status).toBe(404);

    const afterRestart = await register(b, registration("after-restart"));
    const converged = await untilConverged(mesh.urls);
    expect(entryNamed(converged, "after-restart")).toEqual(replicated(afterRestart));
    // The others follow B's new history: its revisions started over.
    for (const other of [a, c]) {
      const row = (await listPeers(other)).find((peer) => peer.url === b);
      expect(row).toMatchObject({ node_id: "node-b", state: "PEER_STATE_LIVE" });
      expect(row?.incarnation_id).not.toBe(historyOfB);
    }
  });
});

/** An event as published on `orchestrator.events`. */
interface EventJson {
  readonly type: string;
  readonly source: string;
  readonly payload: Json;
}

describe("nodes on Redis killed and restarted", () => {
  let redis: RedisServer | undefined;
  let subscriber: Redis | undefined;
  const events: EventJson[] = [];
  const run = randomUUID();
  const mesh = new ProcessMesh((i) => ({
    REDIS_URL: redis?.url ?? "",
    REDIS_KEY_PREFIX: `replication-${run}-${i}:`,
    // No NODE_ID: each node keeps the one it stored with its data.
  }));

  /** Each node's id, as its peers see it. */
  const nodeIds = async (): Promise<string[]> =>
    Promise.all(
      [0, 1, 2].map(async (i) => {
        const seenBy = mesh.url((i + 1) % 3);
        const row = (await listPeers(seenBy)).find((peer) => peer.url === mesh.url(i));
        return row?.node_id ?? "";
      }),
    );

  beforeAll(async () => {
    redis = await startRedisServer();
    const client = createTestRedisClient(redis.url);
    subscriber = client;
    await untilRedisReady(client);
    client.on("message", (_channel: string, message: string) => {
      events.push(JSON.parse(message) as EventJson);
    });
    await client.subscribe("orchestrator.events");
    await mesh.reservePorts();
    await Promise.all([0, 1, 2].map((i) => mesh.start(i)));
  });

  afterAll(async () => {
    await mesh.close();
    if (subscriber) await closeRedisClient(subscriber);
    await redis?.stop();
  });

  it("brings a killed node back with its data and id, resuming from its cursors", {
    timeout: 90_000,
  }, async () => {
    const [a, b, c] = [mesh.url(0), mesh.url(1), mesh.url(2)];
    await register(a, registration("shared-1"));
    await register(a, registration("shared-2", { version: "1" }));
    await untilConverged(mesh.urls);
    const ids = await nodeIds();
    expect(new Set(ids).size).toBe(3);
    const idOfB = ids[1] ?? expect.fail("no id for B");
    const historyOfB = (await listPeers(a)).find((peer) => peer.url === b)?.incarnation_id;

    await mesh.stop(1, "SIGKILL");
    await deregister(a, "shared-1");
    const updated = await register(a, registration("shared-2", { version: "2" }));
    const whileDown = await register(c, registration("while-b-down"));
    const resumedFrom = events.length;

    await mesh.start(1);
    const caughtUp = await untilConverged(mesh.urls);
    expect(entryNamed(caughtUp, "shared-1")).toBeUndefined();
    expect(entryNamed(caughtUp, "shared-2")).toEqual(replicated(updated));
    expect(entryNamed(caughtUp, "while-b-down")).toEqual(replicated(whileDown));
    // Same node, same history of revisions: its data outlived the process.
    expect(await nodeIds()).toEqual(ids);
    expect((await listPeers(a)).find((peer) => peer.url === b)?.incarnation_id).toBe(historyOfB);
    // Its links resumed from the cursors it kept: the first hello from each peer after the
    // restart announced no snapshot.
    const others = [ids[0], ids[2]];
    const firstHellos = await until("B reports both links connected", async () => {
      const connected = events
        .slice(resumedFrom)
        .filter((e) => e.source === idOfB && e.type === "replication.peer.connected");
      const first = others.map((id) => connected.find((e) => e.payload.node_id === id));
      return first.every((e) => e !== undefined) ? first : undefined;
    });
    expect(firstHellos.map((e) => e?.payload.snapshot)).toEqual([false, false]);
  });

  it("delivers a node's writes made while the others were down once all are back", {
    timeout: 90_000,
  }, async () => {
    const [a, b, c] = [mesh.url(0), mesh.url(1), mesh.url(2)];
    await untilConverged(mesh.urls);
    // One after the other: two peers shutting down at the same moment may exit 1 on an
    // unhandled HTTP/2 GOAWAY error (reported as a bug; not what this test is about).
    await mesh.stop(1, "SIGTERM");
    await mesh.stop(2, "SIGTERM");

    const own1 = await register(a, registration("own-1", { tags: ["alone"] }));
    const own2 = await register(a, registration("own-2", { metadata: { written: "alone" } }));
    await deregister(a, "while-b-down");
    await mesh.stop(0, "SIGKILL");

    await Promise.all([mesh.start(1), mesh.start(2)]);
    // Only A has them, and A is down.
    for (const other of [b, c]) {
      await expectStatus(rest(other, "GET", "/registry/own-1"), 404, `own-1 on ${other}`);
    }
    await mesh.start(0);
    const converged = await untilConverged(mesh.urls);
    expect(entryNamed(converged, "own-1")).toEqual(replicated(own1));
    expect(entryNamed(converged, "own-2")).toEqual(replicated(own2));
    expect(entryNamed(converged, "while-b-down")).toBeUndefined();
  });
});
