import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PeerService } from "../../gen/orchestrator/v1/peer_pb.js";
import { createGrpcJsClient } from "../../src/clients/grpc-js-client.js";
import { type OrchestratorProcess, startOrchestratorProcess } from "../support/process.js";
import { type RedisServer, startRedisServer } from "../support/redis-server.js";
import {
  expectStatus,
  openWatch,
  patience,
  register,
  registration,
  rest,
  type ServiceJson,
  until,
  untilStatus,
  type Watch,
  type WatchLine,
} from "../support/rest.js";

// Two orchestrator processes (real `src/main.ts` processes) sharing one Redis and key prefix are
// one registry: what is written on one is read, and watched, on the other; concurrent writers on
// both never share or skip a revision; and one of them dying leaves the other serving.

interface ListJson {
  readonly services: ServiceJson[];
  readonly revision: string;
}

async function list(base: string): Promise<ListJson> {
  return (await expectStatus(rest(base, "GET", "/registry"), 200)) as unknown as ListJson;
}

/** `count` consecutive integers from `first`. */
function range(first: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => first + i);
}

const byNumber = (x: number, y: number) => x - y;

describe("two orchestrator processes sharing one Redis", () => {
  let redis: RedisServer | undefined;
  let a: OrchestratorProcess | undefined;
  let b: OrchestratorProcess | undefined;
  const watches: Watch[] = [];

  const nodeA = (): OrchestratorProcess => a ?? expect.fail("node A did not start");
  const nodeB = (): OrchestratorProcess => b ?? expect.fail("node B did not start");
  const watch = (base: string, startRevision = 0): Watch => {
    const opened = openWatch(base, startRevision);
    watches.push(opened);
    return opened;
  };

  /** The revision both nodes agree on, once they do (B may still be catching up on A's writes). */
  const commonRevision = (): Promise<number> =>
    until("both nodes at the same revision", async () => {
      const [onA, onB] = await Promise.all([list(nodeA().url), list(nodeB().url)]);
      return onA.revision === onB.revision ? Number(onA.revision) : undefined;
    });

  /** Waits until both nodes are at `revision`, and returns their lists, which must be equal. */
  const bothAt = async (revision: number): Promise<ListJson> => {
    for (const node of [nodeA(), nodeB()]) {
      await until(`${node.url} at revision ${revision}`, async () =>
        Number((await list(node.url)).revision) >= revision ? true : undefined,
      );
    }
    const [onA, onB] = await Promise.all([list(nodeA().url), list(nodeB().url)]);
    expect(onA.revision).toBe(String(revision));
    expect(onB).toEqual(onA);
    return onA;
  };

  beforeAll(async () => {
    const server = await startRedisServer();
    redis = server;
    const prefix = `test-${randomUUID()}:`;
    const env = (nodeId: string) => ({
      REDIS_URL: server.url,
      REDIS_KEY_PREFIX: prefix,
      NODE_ID: nodeId,
      // Health probes write (status changes): none here, so that every revision is ours.
      HEALTH_CHECK_INTERVAL_MS: "3600000",
    });
    const [startedA, startedB] = await Promise.allSettled([
      startOrchestratorProcess({ env: env("node-a") }),
      startOrchestratorProcess({ env: env("node-b") }),
    ]);
    if (startedA.status === "fulfilled") a = startedA.value;
    if (startedB.status === "fulfilled") b = startedB.value;
    if (startedA.status === "rejected") throw startedA.reason;
    if (startedB.status === "rejected") throw startedB.reason;
    await Promise.all([
      untilStatus(nodeA().url, "/ready", 200),
      untilStatus(nodeB().url, "/ready", 200),
    ]);
  });

  afterAll(async () => {
    for (const opened of watches) opened.close();
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  it("shows a write on A on B, and in a watch open on B; and a delete on B on A", async () => {
    const onB = watch(nodeB().url);
    for (let line = await onB.next(); line.type !== "WATCH_EVENT_TYPE_SNAPSHOT_END"; ) {
      line = await onB.next();
    }
    const entry = await register(
      nodeA().url,
      registration("seen-on-b", { metadata: { team: "search" }, tags: ["blue"], version: "3" }),
    );
    expect(entry.origin_node_id).toBe("node-a");
    expect(await untilStatus(nodeB().url, "/registry/seen-on-b", 200)).toEqual(entry);
    expect(await onB.next()).toEqual({
      type: "WATCH_EVENT_TYPE_PUT",
      service: entry,
      revision: entry.revision,
      snapshot: false,
      compacted: false,
    });

    const onA = watch(nodeA().url, Number(entry.revision));
    const removed = await expectStatus(rest(nodeB().url, "DELETE", "/registry/seen-on-b"), 200);
    expect(removed.revision).toBe(String(Number(entry.revision) + 1));
    await untilStatus(nodeA().url, "/registry/seen-on-b", 404);
    expect(await onA.next()).toMatchObject({
      type: "WATCH_EVENT_TYPE_DELETE",
      revision: removed.revision,
      service: { name: "seen-on-b", origin_node_id: "node-b" },
    });
  });

  it("gives 100 concurrent registrations on A and B the revisions after the start, each once", {
    timeout: 60_000,
  }, async () => {
    const start = await commonRevision();
    // Resumed from the start: only the changes after it, every one of them.
    const onB = watch(nodeB().url, start);
    const names = range(0, 100).map((i) => `bulk-${String(i).padStart(3, "0")}`);
    const nodeOf = (i: number) => (i % 2 === 0 ? nodeA() : nodeB());
    const written = await Promise.all(
      names.map(async (name, i) => {
        const entry = await register(nodeOf(i).url, registration(name));
        // The node that wrote reads its own write at once, however busy the other one is.
        const read = await expectStatus(rest(nodeOf(i).url, "GET", `/registry/${name}`), 200);
        expect(read).toEqual(entry);
        return entry;
      }),
    );
    const expected = range(start + 1, 100);
    expect(written.map((entry) => Number(entry.revision)).sort(byNumber)).toEqual(expected);
    written.forEach((entry, i) => {
      expect(entry.name).toBe(names[i]);
      expect(entry.origin_node_id).toBe(i % 2 === 0 ? "node-a" : "node-b");
    });

    const both = await bothAt(start + 100);
    const bulk = both.services.filter((entry) => entry.name.startsWith("bulk-"));
    expect(bulk.map((entry) => entry.name)).toEqual(names);
    expect(bulk.map((entry) => Number(entry.revision)).sort(byNumber)).toEqual(expected);
    expect(new Set(written)).toEqual(new Set(bulk));

    const seen: WatchLine[] = [];
    for (let i = 0; i < 100; i++) seen.push(await onB.next());
    expect(seen.map((line) => Number(line.revision))).toEqual(expected);
    expect(seen.every((line) => line.type === "WATCH_EVENT_TYPE_PUT" && !line.snapshot)).toBe(true);
    expect(new Set(seen.map((line) => line.service?.name))).toEqual(new Set(names));
  });

  it("settles the same name registered on A and B at once on one winner, the same on both", {
    timeout: 60_000,
  }, async () => {
    const start = await commonRevision();
    const names = range(0, 20).map((i) => `contested-${i}`);
    const pairs = await Promise.all(
      names.map((name) =>
        Promise.all([
          register(nodeA().url, registration(name, { version: "from-a" })),
          register(nodeB().url, registration(name, { version: "from-b" })),
        ]),
      ),
    );
    // Both writes of every pair happened, one after the other: 40 revisions, none shared.
    const revisions = pairs.flat().map((entry) => Number(entry.revision));
    expect(revisions.sort(byNumber)).toEqual(range(start + 1, 40));

    const both = await bothAt(start + 40);
    for (const [fromA, fromB] of pairs) {
      const [first, last] =
        Number(fromA.revision) < Number(fromB.revision) ? [fromA, fromB] : [fromB, fromA];
      const final = both.services.find((entry) => entry.name === fromA.name);
      // The later write wins, whole; the entry remembers when it was first registered.
      expect(final).toEqual(last);
      expect(final?.registered_at).toBe(first.registered_at);
      expect(await expectStatus(rest(nodeA().url, "GET", `/registry/${fromA.name}`), 200)).toEqual(
        last,
      );
      expect(await expectStatus(rest(nodeB().url, "GET", `/registry/${fromA.name}`), 200)).toEqual(
        last,
      );
    }
  });

  // B's view may not have heard of A's acknowledged write yet: a DELETE (or heartbeat) on B must
  // check Redis before answering "not registered". Within a few hundred tries a stale view shows.
  it("deregisters on B what A has just registered (no false 404)", {
    timeout: 60_000,
  }, async () => {
    for (let i = 0; i < 300; i++) {
      const name = `just-registered-${i}`;
      await register(nodeA().url, registration(name));
      await expectStatus(rest(nodeB().url, "DELETE", `/registry/${name}`), 200);
    }
  });

  // Last: A does not come back.
  it("keeps B serving, reads and writes, when A is killed", { timeout: 60_000 }, async () => {
    const start = await commonRevision();
    const fromA = await register(nodeA().url, registration("registered-on-a"));
    await untilStatus(nodeB().url, "/registry/registered-on-a", 200);
    const before = await list(nodeB().url);
    const onB = watch(nodeB().url, Number(before.revision));
    expect(before.revision).toBe(String(start + 1));

    const exit = await nodeA().stop("SIGKILL");
    expect(exit.signal).toBe("SIGKILL");

    expect(await untilStatus(nodeB().url, "/ready", 200)).toMatchObject({ ready: true });
    expect(await list(nodeB().url)).toEqual(before);
    const beat = await expectStatus(
      rest(nodeB().url, "POST", "/registry/registered-on-a/heartbeat", {}),
      200,
    );
    expect(beat.name).toBe("registered-on-a");
    const fromB = await register(nodeB().url, registration("registered-on-b"));
    expect(fromB.revision).toBe(String(start + 3));
    expect(await onB.next()).toMatchObject({
      type: "WATCH_EVENT_TYPE_PUT",
      revision: String(start + 2),
      service: {
        name: "registered-on-a",
        origin_node_id: "node-b",
        registered_at: fromA.registered_at,
      },
    });
    expect(await onB.next()).toMatchObject({ type: "WATCH_EVENT_TYPE_PUT", service: fromB });
  });
});

// A purge of tombstones is not a change (no revision), so a process learns of one only if it is
// told: A forgets a tombstone on the shared Redis, and B, whose own sweep would keep it for an
// hour, forgets it too. Tombstones are read where a peer reads them (PeerService.GetEntries).
describe("tombstones purged by one process sharing a Redis are forgotten by the other", () => {
  let redis: RedisServer | undefined;
  const nodes: OrchestratorProcess[] = [];
  afterAll(async () => {
    await Promise.all(nodes.map((node) => node.stop()));
    await redis?.stop();
  });

  /** The names of the tombstones `node` holds in its view. */
  async function tombstonesOn(node: OrchestratorProcess): Promise<string[]> {
    const client = createGrpcJsClient(PeerService, `127.0.0.1:${node.port}`);
    try {
      const reply = await client.getEntries(
        { bucketCount: 1, buckets: [0] },
        { deadline: new Date(Date.now() + patience) },
      );
      return reply.entries
        .filter((entry) => entry.deleted)
        .map((entry) => entry.entry?.name ?? "")
        .sort();
    } finally {
      client.close();
    }
  }

  const untilTombstones = (node: OrchestratorProcess, expected: string[]) => {
    let last: string[] = [];
    return until(
      `${node.url} holds the tombstones ${expected.join(", ")}`,
      async () => {
        last = await tombstonesOn(node);
        return JSON.stringify(last) === JSON.stringify(expected) ? last : undefined;
      },
      { describe: () => last.join(", ") },
    );
  };

  it("drops from B's view the tombstone A's sweep forgot", { timeout: 120_000 }, async () => {
    const server = await startRedisServer();
    redis = server;
    const shared = {
      REDIS_URL: server.url,
      REDIS_KEY_PREFIX: `test-${randomUUID()}:`,
      HEALTH_CHECK_INTERVAL_MS: "3600000",
    };
    // A keeps one tombstone at most: its sweep (every second) forgets the older one as soon as
    // there are two. B keeps them all, for an hour: its own sweep forgets nothing here.
    const [a, b] = await Promise.all([
      startOrchestratorProcess({
        env: { ...shared, NODE_ID: "node-a", REGISTRY_MAX_TOMBSTONES: "1" },
      }),
      startOrchestratorProcess({ env: { ...shared, NODE_ID: "node-b" } }),
    ]);
    nodes.push(a, b);
    await Promise.all([untilStatus(a.url, "/ready", 200), untilStatus(b.url, "/ready", 200)]);

    for (const name of ["first-gone", "second-gone", "alive"]) {
      await register(a.url, registration(name));
    }
    await expectStatus(rest(a.url, "DELETE", "/registry/first-gone"), 200);
    await untilTombstones(b, ["first-gone"]);
    await untilTombstones(a, ["first-gone"]);

    await expectStatus(rest(a.url, "DELETE", "/registry/second-gone"), 200);
    // A's sweep forgets "first-gone" in Redis and in its view; B is told and forgets it too.
    await untilTombstones(a, ["second-gone"]);
    await untilTombstones(b, ["second-gone"]);
    // Nothing else changed: the live entry is still on both.
    await untilStatus(b.url, "/registry/alive", 200);
    await untilStatus(a.url, "/registry/alive", 200);
  });
});
