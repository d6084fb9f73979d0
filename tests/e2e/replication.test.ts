import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PeerService, type ReplicateResponse } from "../../gen/orchestrator/v1/peer_pb.js";
import { createGrpcJsClient } from "../../src/clients/grpc-js-client.js";
import {
  batchMessage,
  changeMessage,
  type GarbageKind,
  type GarbagePeer,
  helloMessage,
  snapshotEndMessage,
  startGarbagePeer,
} from "../support/garbage-peer.js";
import {
  metricValue,
  type RunningOrchestrator,
  startOrchestrator,
} from "../support/orchestrator.js";
import {
  freePort,
  type OrchestratorProcess,
  repoRoot,
  startOrchestratorProcess,
} from "../support/process.js";
import {
  type Cluster,
  entryNamed,
  expectNothingToRepair,
  listPeers,
  newerStamp,
  quietEnv,
  replicated,
  replicatedRegistry,
  startCluster,
  syncPeers,
  untilConverged,
  untilLinksDown,
  untilPeer,
} from "../support/replication.js";
import {
  deregister,
  expectStatus,
  listRegistry,
  register,
  registration,
  rest,
  type ServiceJson,
  until,
} from "../support/rest.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

/**
 * Changes each node has received from each of its peers (applied or not), by "receiver<-sender"
 * node id: the traffic of every directed link, from the nodes' own metrics.
 */
async function receivedByLink(
  urls: readonly string[],
  metric = "orchestrator_replication_received_changes_total",
): Promise<Map<string, number>> {
  const received = new Map<string, number>();
  for (const base of urls) {
    const [self] = await Promise.all([
      expectStatus(rest(base, "GET", "/info"), 200).then((info) => String(info.node_id)),
    ]);
    for (const peer of await listPeers(base)) {
      const count = await metricValue({ url: base }, metric, { peer: peer.url });
      received.set(`${self}<-${peer.node_id}`, count);
    }
  }
  return received;
}

function difference(after: Map<string, number>, before: Map<string, number>) {
  return Object.fromEntries(
    [...after].map(([link, count]) => [link, count - (before.get(link) ?? 0)]).sort(),
  );
}

// In-process nodes on loopback replicating over real HTTP/2 streams: changes made anywhere reach
// every node, concurrent writes of one name settle on the same winner everywhere, a chain carries
// changes end to end without echoing them forever, and a peer that refuses us, is down or speaks
// garbage shows as such in /peers without touching the registry.

describe("three nodes, full mesh", () => {
  let cluster: Cluster | undefined;
  const urls = (): readonly string[] => cluster?.urls ?? expect.fail("the cluster did not start");
  const url = (i: number): string => urls()[i] ?? expect.fail(`no node ${i}`);

  beforeAll(async () => {
    cluster = await startCluster({ size: 3 });
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it("shows a registration made on any node on the other two, as it was written", async () => {
    const written = await Promise.all(
      urls().map((base, i) =>
        register(
          base,
          registration(`mesh-${i}`, {
            version: `v${i}`,
            tags: ["mesh", `t${i}`],
            metadata: { written_on: String(i) },
            endpoints: [`/e${i}`],
            ttl_seconds: 3600,
          }),
        ),
      ),
    );
    expect(written.map((entry) => entry.origin_node_id)).toEqual(["node-a", "node-b", "node-c"]);
    const converged = await untilConverged(urls());
    for (const entry of written)
      expect(entryNamed(converged, entry.name)).toEqual(replicated(entry));
    for (const base of urls()) {
      for (const entry of written) {
        const read = await expectStatus(rest(base, "GET", `/registry/${entry.name}`), 200, "read");
        expect(replicated(read as ServiceJson)).toEqual(replicated(entry));
      }
    }
    for (const base of urls()) await expectNothingToRepair(base);
  });

  it("exports each link's lag, applied changes and reconnects on /metrics, labelled by peer", async () => {
    const before = await metricValue(
      { url: url(0) },
      "orchestrator_replication_applied_changes_total",
      {},
    );
    await register(url(1), registration("metered-1"));
    await register(url(2), registration("metered-2"));
    await untilConverged(urls());
    const peers = await listPeers(url(0));
    expect(peers).toHaveLength(2);
    const text = await (await fetch(`${url(0)}/metrics`)).text();
    for (const peer of peers) {
      const labels = `{peer="${peer.url}"}`;
      // Converged with every link LIVE: nothing left to apply from any peer.
      expect(text).toContain(`orchestrator_replication_lag_changes${labels} 0\n`);
      expect(text).toContain(`orchestrator_replication_lag_seconds${labels} 0\n`);
      expect(text).toMatch(
        new RegExp(`orchestrator_replication_reconnects_total${escaped(labels)} \\d+\n`),
      );
    }
    // Both registrations reached node A, each applied once (through whichever link came first).
    const after = await metricValue(
      { url: url(0) },
      "orchestrator_replication_applied_changes_total",
      {},
    );
    expect(after - before).toBeGreaterThanOrEqual(2);
  });

  it("sends each write over each directed link at most once, never back to where it came from", async () => {
    const applied = "orchestrator_replication_applied_changes_total";
    const before = await receivedByLink(urls());
    const appliedBefore = await receivedByLink(urls(), applied);
    const writes = 20;
    for (let k = 0; k < writes; k++) await register(url(0), registration(`counted-${k}`));
    await untilConverged(urls());
    // A's writes: A sends each to B and C once; neither sends them back to A. B relays to C
    // every write it learned from A, not those it learned from C first (when C's relay beat A's
    // own message to B), and the same the other way: at most four messages per write in a full
    // mesh of three, where every node sending everything to everyone made six.
    const expected = (learned: Record<string, number>) => ({
      "node-a<-node-b": 0,
      "node-a<-node-c": 0,
      "node-b<-node-a": writes,
      "node-b<-node-c": writes - (learned["node-c<-node-b"] ?? 0),
      "node-c<-node-a": writes,
      "node-c<-node-b": writes - (learned["node-b<-node-c"] ?? 0),
    });
    let last: Record<string, number> = {};
    let learned: Record<string, number> = {};
    await until(
      "every relay counted",
      async () => {
        last = difference(await receivedByLink(urls()), before);
        learned = difference(await receivedByLink(urls(), applied), appliedBefore);
        return JSON.stringify(last) === JSON.stringify(expected(learned)) ? true : undefined;
      },
      { describe: () => `${JSON.stringify(last)} applied ${JSON.stringify(learned)}` },
    );
    // Each node applied each write once, from whichever link brought it first.
    expect((learned["node-b<-node-a"] ?? 0) + (learned["node-b<-node-c"] ?? 0)).toBe(writes);
    expect((learned["node-c<-node-a"] ?? 0) + (learned["node-c<-node-b"] ?? 0)).toBe(writes);
    // Nothing more comes (an echo would arrive after the relays).
    await delay(1_000);
    expect(difference(await receivedByLink(urls()), before)).toEqual(expected(learned));
  });

  it("removes everywhere what is deleted on any node, and a later registration wins over the delete", async () => {
    const names = [0, 1, 2].map((i) => `doomed-${i}`);
    await Promise.all(names.map((name, i) => register(url(i), registration(name))));
    await untilConverged(urls());
    // Each is deleted on a node other than the one that registered it.
    await Promise.all(names.map((name, i) => deregister(url((i + 1) % 3), name)));
    const converged = await untilConverged(urls());
    for (const name of names) {
      expect(entryNamed(converged, name)).toBeUndefined();
      for (const base of urls()) {
        expect((await rest(base, "GET", `/registry/${name}`)).status, `${name} on ${base}`).toBe(
          404,
        );
      }
    }
    // The tombstones agree too (the digests cover them).
    for (const base of urls()) await expectNothingToRepair(base);

    const back = await register(url(2), registration("doomed-0", { version: "back" }));
    const again = await untilConverged(urls());
    expect(entryNamed(again, "doomed-0")).toEqual(replicated(back));
  });

  it("settles the same name written concurrently on every node on one winner, the same everywhere", async () => {
    const names = Array.from({ length: 12 }, (_, k) => `contested-${k}`);
    const written = await Promise.all(
      names.map((name) =>
        Promise.all(
          urls().map((base, i) => register(base, registration(name, { version: `from-${i}` }))),
        ),
      ),
    );
    const converged = await untilConverged(urls());
    names.forEach((name, k) => {
      const candidates = written[k] ?? [];
      const [first, ...others] = candidates;
      if (first === undefined) expect.fail(`nothing written for ${name}`);
      const winner = others.reduce(newerStamp, first);
      expect(entryNamed(converged, name), name).toEqual(replicated(winner));
    });
    for (const base of urls()) await expectNothingToRepair(base);
  });
});

describe("three nodes in a chain A-B-C (A and C do not list each other)", () => {
  let cluster: Cluster | undefined;
  const urls = (): readonly string[] => cluster?.urls ?? expect.fail("the cluster did not start");
  const url = (i: number): string => urls()[i] ?? expect.fail(`no node ${i}`);

  beforeAll(async () => {
    cluster = await startCluster({ size: 3, peersOf: (i) => (i === 1 ? [0, 2] : [1]) });
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it("carries every change end to end, applies each once per node, and then goes quiet", {
    timeout: 60_000,
  }, async () => {
    const perNode = 10;
    const names = (i: number) => Array.from({ length: perNode }, (_, k) => `chain-${i}-${k}`);
    await Promise.all(
      [0, 1, 2].map(async (i) => {
        for (const name of names(i))
          await register(url(i), registration(name, { version: `${i}` }));
      }),
    );
    const registered = await untilConverged(urls());
    expect(registered.map((entry) => entry.name).sort()).toEqual([0, 1, 2].flatMap(names).sort());
    // Deletes at each end of what the other end wrote: they cross the whole chain.
    const deleted = [
      ...names(2)
        .slice(0, 3)
        .map((n) => [0, n] as const),
      ...names(0)
        .slice(0, 3)
        .map((n) => [2, n] as const),
    ];
    for (const [i, name] of deleted) await deregister(url(i), name);
    const converged = await untilConverged(urls());
    expect(converged).toHaveLength(3 * perNode - deleted.length);

    // Every change made one revision on every node: none was applied twice (by the direct and
    // the forwarded path), none came back to where it started and changed it again.
    const changes = 3 * perNode + deleted.length;
    const revisions = async () =>
      Promise.all(urls().map(async (base) => (await listRegistry(base)).revision));
    expect(await revisions()).toEqual([changes, changes, changes]);
    const applied = async () =>
      Promise.all(
        urls().map(async (base) =>
          (await listPeers(base)).map((peer) => [peer.node_id, Number(peer.applied_revision)]),
        ),
      );
    const caughtUp = [
      [["node-b", changes]],
      [
        ["node-a", changes],
        ["node-c", changes],
      ],
      [["node-b", changes]],
    ];
    // A stream passes over the receiver's own changes, and then says how far it got (a
    // keepalive): the cursors reach the end without any change sent back.
    let last: unknown;
    await until(
      "every cursor at the end",
      async () => {
        last = await applied();
        return JSON.stringify(last) === JSON.stringify(caughtUp) ? true : undefined;
      },
      { describe: () => JSON.stringify(last) },
    );
    // Each change crossed each link once, towards the end it had not reached: A's 13 changes
    // (10 writes, 3 deletes) go A->B->C, C's 13 go C->B->A, B's 10 go both ways.
    expect(difference(await receivedByLink(urls()), new Map())).toEqual({
      "node-a<-node-b": 23,
      "node-b<-node-a": 13,
      "node-b<-node-c": 13,
      "node-c<-node-b": 23,
    });

    // Quiet: over a few keepalive periods no change circulates (nothing is written anywhere).
    await delay(5_000);
    expect(await revisions()).toEqual([changes, changes, changes]);
    expect(await applied()).toEqual(caughtUp);
    expect(await Promise.all(urls().map(replicatedRegistry))).toEqual([
      converged,
      converged,
      converged,
    ]);
  });
});

describe("two nodes with different peer tokens", () => {
  let cluster: Cluster | undefined;
  const urls = (): readonly string[] => cluster?.urls ?? expect.fail("the cluster did not start");
  const url = (i: number): string => urls()[i] ?? expect.fail(`no node ${i}`);
  const tokens = ["token-of-a-7f3c9e", "token-of-b-2d81aa"];

  beforeAll(async () => {
    cluster = await startCluster({ size: 2, env: (i) => ({ PEER_TOKEN: tokens[i] ?? "" }) });
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it("shows each link UNAUTHENTICATED, and no entry crosses, by stream or by anti-entropy", async () => {
    const own = await Promise.all([0, 1].map((i) => register(url(i), registration(`own-${i}`))));
    for (const [i, j] of [
      [0, 1],
      [1, 0],
    ] as const) {
      const peer = await untilPeer(
        url(i),
        cluster?.proxy(i, j).url ?? expect.fail("no cluster"),
        (p) => p.state === "PEER_STATE_UNAUTHENTICATED" && (p.last_error ?? "") !== "",
      );
      expect(peer.last_error).toMatch(/unauthenticated/i);
      // It never said hello: nothing is known of it.
      expect(peer.node_id ?? "").toBe("");
      for (const token of tokens) expect(peer.last_error).not.toContain(token);
    }
    for (const base of urls()) {
      const sync = await syncPeers(base);
      expect(sync.peers).toHaveLength(1);
      expect(sync.peers[0]).toMatchObject({ ok: false });
      expect(sync.peers[0]?.error).toMatch(/unauthenticated/i);
      expect(sync.received ?? 0).toBe(0);
    }
    for (const [i, entry] of own.entries()) {
      expect(await replicatedRegistry(url(i))).toEqual([replicated(entry)]);
    }
    for (const base of urls()) expect((await rest(base, "GET", "/ready")).status).toBe(200);
  });
});

describe("a peer URL nobody listens on", () => {
  let node: RunningOrchestrator | undefined;
  let later: OrchestratorProcess | undefined;

  afterAll(async () => {
    // The peer goes first, so that the node closes with its link down (see untilLinksDown).
    await later?.stop("SIGKILL");
    if (node) await untilLinksDown(node.url).catch(() => undefined);
    await node?.close();
  });

  it("shows the link in backoff with an error, serves meanwhile, and goes LIVE once the peer is up", async () => {
    const peerPort = await freePort();
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    node = await startOrchestrator({
      env: { ...quietEnv, NODE_ID: "lonely", ORCHESTRATOR_PEERS: peerUrl },
    });
    const down = await untilPeer(
      node.url,
      peerUrl,
      (p) =>
        (p.state === "PEER_STATE_BACKOFF" || p.state === "PEER_STATE_CONNECTING") &&
        (p.last_error ?? "") !== "",
    );
    expect(down.last_error).toBe("the peer is unreachable");
    expect(down.node_id ?? "").toBe("");
    // However many attempts it makes, a peer never heard from has no last contact, and its
    // loss is logged once.
    await untilReconnects(node, peerUrl, 3);
    const never = await untilPeer(node.url, peerUrl, () => true);
    expect(never.last_contact).toBeUndefined();
    expect(await lastContactSample(node, peerUrl)).toBeUndefined();
    expect(peerLog(node.logs, peerUrl)).toEqual([
      { level: "warn", msg: "replication peer unreachable", err: "the peer is unreachable" },
    ]);

    expect((await rest(node.url, "GET", "/ready")).status).toBe(200);
    const mine = await register(node.url, registration("while-peer-down"));
    expect(await replicatedRegistry(node.url)).toEqual([replicated(mine)]);
    const sync = await syncPeers(node.url);
    expect(sync.peers[0]).toMatchObject({ url: peerUrl, ok: false });
    expect(sync.peers[0]?.error ?? "").not.toBe("");

    // A process of its own: it can be killed at the end, leaving the node's link down.
    later = await startOrchestratorProcess({
      env: { ...quietEnv, NODE_ID: "late", PORT: String(peerPort), ORCHESTRATOR_PEERS: node.url },
    });
    const theirs = await register(later.url, registration("from-the-late-peer"));
    const converged = await untilConverged([node.url, later.url]);
    expect(converged).toEqual([replicated(theirs), replicated(mine)]);
    const live = await untilPeer(node.url, peerUrl, (p) => p.state === "PEER_STATE_LIVE");
    expect(live).toMatchObject({ node_id: "late", last_error: "" });
    expect(live.last_contact).toBeDefined();
    expect(await lastContactSample(node, peerUrl)).toBeGreaterThan(0);
    expect(peerLog(node.logs, peerUrl)).toEqual([
      { level: "warn", msg: "replication peer unreachable", err: "the peer is unreachable" },
      { level: "info", msg: "replication peer reachable", peer_node_id: "late" },
    ]);
  });
});

describe("a peer stopped with SIGSTOP, then continued", () => {
  let node: RunningOrchestrator | undefined;
  let peer: OrchestratorProcess | undefined;

  afterAll(async () => {
    // The peer goes first, so that the node closes with its link down (see untilLinksDown).
    peer?.child.kill("SIGCONT");
    await peer?.stop("SIGKILL");
    if (node) await untilLinksDown(node.url).catch(() => undefined);
    await node?.close();
  });

  it("keeps the last contact of the peer's last message while it is stopped, and logs losing and regaining it once each", {
    timeout: 180_000,
  }, async () => {
    peer = await startOrchestratorProcess({ env: { ...quietEnv, NODE_ID: "sleeper" } });
    const peerUrl = peer.url;
    node = await startOrchestrator({
      env: { ...quietEnv, NODE_ID: "watcher", ORCHESTRATOR_PEERS: peerUrl },
    });
    const running = node;
    const live = await untilPeer(running.url, peerUrl, (p) => p.state === "PEER_STATE_LIVE");
    const firstContact = Date.parse(live.last_contact ?? "");
    expect(firstContact).toBeGreaterThan(0);
    // The peer's keepalives move it while the peer talks.
    await untilPeer(running.url, peerUrl, (p) => Date.parse(p.last_contact ?? "") > firstContact);

    // The port still accepts connections (the kernel does), but nothing answers on them.
    peer.child.kill("SIGSTOP");
    const down = await untilPeer(
      running.url,
      peerUrl,
      (p) => p.state !== "PEER_STATE_LIVE" && (p.last_error ?? "") !== "",
    );
    const lastContact = down.last_contact;
    expect(lastContact).toBeDefined();
    // Two more attempts end while the peer is stopped; the second began after the read above.
    const attempts = await reconnectsOf(running, peerUrl);
    await untilReconnects(running, peerUrl, attempts + 2, 150_000);
    const stopped = await untilPeer(running.url, peerUrl, () => true);
    expect(stopped.state).not.toBe("PEER_STATE_LIVE");
    expect(stopped.last_contact).toBe(lastContact);
    expect(await lastContactSample(running, peerUrl)).toBe(Date.parse(lastContact ?? ""));

    peer.child.kill("SIGCONT");
    await untilPeer(
      running.url,
      peerUrl,
      (p) =>
        p.state === "PEER_STATE_LIVE" &&
        Date.parse(p.last_contact ?? "") > Date.parse(lastContact ?? ""),
    );
    const log = peerLog(running.logs, peerUrl);
    expect(log.map(({ level, msg }) => ({ level, msg }))).toEqual([
      { level: "info", msg: "replication peer reachable" },
      { level: "warn", msg: "replication peer unreachable" },
      { level: "info", msg: "replication peer reachable" },
    ]);
    expect(log[1]?.err ?? "").not.toBe("");
  });
});

/** The link's reconnects as /metrics counts them. */
function reconnectsOf(node: RunningOrchestrator, peerUrl: string): Promise<number> {
  return metricValue(node, "orchestrator_replication_reconnects_total", { peer: peerUrl });
}

/** Waits until the link to `peerUrl` has ended at least `count` attempts. */
async function untilReconnects(
  node: RunningOrchestrator,
  peerUrl: string,
  count: number,
  timeoutMs?: number,
): Promise<void> {
  await until(
    `${count} attempts of ${node.url} to reach ${peerUrl}`,
    async () => ((await reconnectsOf(node, peerUrl)) >= count ? true : undefined),
    timeoutMs === undefined ? {} : { timeoutMs },
  );
}

/**
 * The last-contact gauge of the link to `peerUrl`, in Unix milliseconds, or undefined when
 * /metrics has no sample of it.
 */
async function lastContactSample(
  node: RunningOrchestrator,
  peerUrl: string,
): Promise<number | undefined> {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  const sample = new RegExp(
    `^orchestrator_replication_last_contact_timestamp_seconds\\{peer="${escaped(peerUrl)}"\\} (\\S+)$`,
    "m",
  ).exec(text);
  return sample?.[1] === undefined ? undefined : Math.round(Number(sample[1]) * 1000);
}

/** What the node logged at info and above about its link to `peerUrl`. */
function peerLog(
  logs: readonly string[],
  peerUrl: string,
): { level: string; msg: string; err?: string; peer_node_id?: string }[] {
  return logs
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((record) => record.peer === peerUrl)
    .map(({ level, msg, err, peer_node_id }) => ({
      level: String(level),
      msg: String(msg),
      ...(typeof err === "string" ? { err } : {}),
      ...(typeof peer_node_id === "string" && peer_node_id !== "" ? { peer_node_id } : {}),
    }));
}

describe("peers that send garbage", () => {
  const garbage: GarbagePeer[] = [];
  let node: RunningOrchestrator | undefined;

  afterEach(async () => {
    // The peers go first, so that the node closes with its links down (see untilLinksDown).
    await Promise.all(garbage.map((peer) => peer.close()));
    garbage.length = 0;
    if (node) await untilLinksDown(node.url).catch(() => undefined);
    await node?.close();
    node = undefined;
  });

  const startGarbage = async (kinds: readonly GarbageKind[]): Promise<GarbagePeer[]> => {
    for (const kind of kinds) garbage.push(await startGarbagePeer(kind));
    return garbage;
  };

  it("shows each link failing with an error, never LIVE, and leaves the registry alone", {
    timeout: 60_000,
  }, async () => {
    const peers = await startGarbage([
      { kind: "html" },
      { kind: "junk-frames" },
      { kind: "raw-junk" },
      // A well-formed stream whose change has no stamp.
      {
        kind: "bad-entries",
        messages: [
          helloMessage("garbage-node", 1),
          changeMessage("unstamped", { origin: "", hlc: 0n }, 1),
        ],
      },
    ]);
    node = await startOrchestrator({
      env: { ...quietEnv, NODE_ID: "sane", ORCHESTRATOR_PEERS: peers.map((p) => p.url).join(",") },
    });
    const mine = await register(node.url, registration("mine", { tags: ["kept"] }));
    const before = await replicatedRegistry(node.url);
    expect(before).toEqual([replicated(mine)]);

    const base = node.url;
    const failed = await Promise.all(
      peers.map((peer) =>
        untilPeer(
          base,
          peer.url,
          (p) => p.state !== "PEER_STATE_LIVE" && (p.last_error ?? "") !== "",
        ),
      ),
    );
    const [html, frames, , unstamped] = failed;
    // grpc-js reads the HTML as frames and refuses the absurd length it finds.
    expect(html?.last_error).toMatch(/content type|larger than max|invalid/i);
    expect(frames?.last_error).not.toBe("");
    expect(unstamped?.last_error).toMatch(/lacks its name or stamp/);
    for (const peer of failed) expect(Number(peer.applied_revision ?? 0)).toBe(0);

    expect(await replicatedRegistry(base)).toEqual(before);
    expect((await rest(base, "GET", "/registry/unstamped")).status).toBe(404);
    const sync = await syncPeers(base);
    expect(sync.peers).toHaveLength(peers.length);
    for (const result of sync.peers) {
      expect(result, result.url).toMatchObject({ ok: false });
      expect(result.error ?? "", result.url).not.toBe("");
    }
    expect(await replicatedRegistry(base)).toEqual(before);
    expect((await rest(base, "GET", "/ready")).status).toBe(200);
    const after = await register(base, registration("after-garbage"));
    expect(await replicatedRegistry(base)).toEqual([replicated(after), replicated(mine)]);
  });

  // BUG (src/services/registry-messages.ts changeOfReplicated, src/replication/merge.ts): a
  // replicated entry's name is not validated as a registration's is, so a peer can plant an entry
  // the API itself refuses to create. Expected: not merged (the link fails or skips it).
  it("does not merge a replicated entry whose name a registration could not have", async () => {
    const stamp = { origin: "garbage-node", hlc: BigInt(Date.now()) << 16n };
    const peers = await startGarbage([
      {
        kind: "bad-entries",
        messages: [
          helloMessage("garbage-node", 2),
          changeMessage("Not A/Valid Name", stamp, 1),
          changeMessage("valid-name", stamp, 2),
          snapshotEndMessage(2),
        ],
      },
    ]);
    const peerUrl = peers[0]?.url ?? expect.fail("no garbage peer");
    node = await startOrchestrator({
      env: { ...quietEnv, NODE_ID: "sane", ORCHESTRATOR_PEERS: peerUrl },
    });
    const base = node.url;
    // The API refuses the name.
    expect(
      (await rest(base, "POST", "/registry/register", registration("Not A/Valid Name"))).status,
    ).toBe(400);
    // Either the link refused the stream, or it went past the bad entry.
    await until("the garbage stream is dealt with", async () => {
      const peer = (await listPeers(base)).find((p) => p.url === peerUrl);
      const registry = await replicatedRegistry(base);
      return (peer?.last_error ?? "") !== "" || entryNamed(registry, "valid-name")
        ? true
        : undefined;
    });
    expect(entryNamed(await replicatedRegistry(base), "Not A/Valid Name")).toBeUndefined();
  });

  it("merges a batch's changes up to a malformed one, then fails the link as for a single change", async () => {
    const stamp = { origin: "garbage-node", hlc: BigInt(Date.now()) << 16n };
    const peers = await startGarbage([
      {
        kind: "bad-entries",
        messages: [
          helloMessage("garbage-node", 3),
          batchMessage([
            changeMessage("before-unstamped", stamp, 1),
            changeMessage("unstamped", { origin: "", hlc: 0n }, 2),
            changeMessage("after-unstamped", stamp, 3),
          ]),
          snapshotEndMessage(3),
        ],
      },
    ]);
    const peerUrl = peers[0]?.url ?? expect.fail("no garbage peer");
    node = await startOrchestrator({
      env: { ...quietEnv, NODE_ID: "sane", ORCHESTRATOR_PEERS: peerUrl },
    });
    const base = node.url;
    const peer = await untilPeer(base, peerUrl, (p) => (p.last_error ?? "") !== "");
    expect(peer.last_error).toMatch(/lacks its name or stamp/);
    expect(peer.state).not.toBe("PEER_STATE_LIVE");
    const registry = await replicatedRegistry(base);
    expect(registry.map((entry) => entry.name)).toEqual(["before-unstamped"]);
  });

  it("refuses a batch of more than 4,096 changes whole, failing the link", async () => {
    const stamp = { origin: "garbage-node", hlc: BigInt(Date.now()) << 16n };
    const changes = Array.from({ length: 4_097 }, (_, i) =>
      changeMessage(`oversized-${i}`, stamp, i + 1),
    );
    const peers = await startGarbage([
      {
        kind: "bad-entries",
        messages: [
          helloMessage("garbage-node", 4_097),
          batchMessage(changes),
          snapshotEndMessage(4_097),
        ],
      },
    ]);
    const peerUrl = peers[0]?.url ?? expect.fail("no garbage peer");
    node = await startOrchestrator({
      env: { ...quietEnv, NODE_ID: "sane", ORCHESTRATOR_PEERS: peerUrl },
    });
    const base = node.url;
    const peer = await untilPeer(base, peerUrl, (p) => (p.last_error ?? "") !== "");
    expect(peer.last_error).toMatch(/batch of 4097 changes, more than the 4096 accepted/);
    expect(peer.state).not.toBe("PEER_STATE_LIVE");
    expect(await replicatedRegistry(base)).toEqual([]);
  });

  // GET /registry/watch is the watch stream: a service named "watch" could never be read over
  // REST, so the name is reserved, and a peer cannot plant it either.
  it("does not merge a replicated entry whose name is reserved", async () => {
    const stamp = { origin: "garbage-node", hlc: BigInt(Date.now()) << 16n };
    const peers = await startGarbage([
      {
        kind: "bad-entries",
        messages: [
          helloMessage("garbage-node", 2),
          changeMessage("watch", stamp, 1),
          changeMessage("after-watch", stamp, 2),
          snapshotEndMessage(2),
        ],
      },
    ]);
    const peerUrl = peers[0]?.url ?? expect.fail("no garbage peer");
    node = await startOrchestrator({
      env: { ...quietEnv, NODE_ID: "sane", ORCHESTRATOR_PEERS: peerUrl },
    });
    const base = node.url;
    expect((await rest(base, "POST", "/registry/register", registration("watch"))).status).toBe(
      400,
    );
    // The change after it is merged: the link went on past the refused one.
    const registry = await until("the entry after the reserved one is merged", async () => {
      const entries = await replicatedRegistry(base);
      return entryNamed(entries, "after-watch") ? entries : undefined;
    });
    expect(entryNamed(registry, "watch")).toBeUndefined();
  });
});

// A node of the previous version asks for no batches (its ReplicateRequest has no
// accepts_batches): it must get every change as its own message, and a node of this version
// asking for batches gets the same changes in fewer messages.
describe("the Replicate stream to callers with and without accepts_batches", () => {
  let node: RunningOrchestrator | undefined;
  const names = Array.from({ length: 40 }, (_, i) => `listed-${String(i).padStart(2, "0")}`);

  beforeAll(async () => {
    node = await startOrchestrator({ env: { ...quietEnv, NODE_ID: "server" } });
    for (const name of names) await register(node.url, registration(name));
  });

  afterAll(async () => {
    await node?.close();
  });

  /**
   * A Replicate stream's messages from a snapshot to its end, then those up to the first change
   * written after it (`writeAfter` is registered once the snapshot has ended); keepalives left out.
   */
  async function replicate(acceptsBatches: boolean | undefined, writeAfter: string) {
    const running = node ?? expect.fail("the node did not start");
    const client = createGrpcJsClient(PeerService, running.address);
    const controller = new AbortController();
    try {
      const stream = client.replicate(
        {
          nodeId: "a-peer",
          incarnationId: "a-peer-incarnation",
          ...(acceptsBatches === undefined ? {} : { acceptsBatches }),
        },
        { signal: controller.signal },
      );
      const events: ReplicateResponse["event"][] = [];
      for await (const message of stream) {
        if (message.event.case === "keepalive") continue;
        events.push(message.event);
        if (message.event.case === "snapshotEnd")
          await register(running.url, registration(writeAfter));
        if (
          events.some((e) => e.case === "snapshotEnd") &&
          namesIn([message.event]).includes(writeAfter)
        ) {
          return events;
        }
      }
      throw new Error("the Replicate stream ended");
    } finally {
      controller.abort();
      client.close();
    }
  }

  /** The names the change and batch events carry, in order. */
  function namesIn(events: readonly ReplicateResponse["event"][]): string[] {
    return events.flatMap((event) => {
      if (event.case === "change") return [event.value.entry?.name ?? ""];
      if (event.case === "batch") return event.value.changes.map((c) => c.entry?.name ?? "");
      return [];
    });
  }

  it("sends a caller without the flag every change as its own message", async () => {
    const events = await replicate(undefined, "late-for-old");
    expect(events.map((e) => e.case)).toEqual([
      "hello",
      ...names.map(() => "change"),
      "snapshotEnd",
      "change",
    ]);
    expect(namesIn(events)).toEqual([...names, "late-for-old"]);
  });

  it("sends a caller that accepts batches the same snapshot in one batch, and a lone change alone", async () => {
    const events = await replicate(true, "late-for-new");
    expect(events.map((e) => e.case)).toEqual(["hello", "batch", "snapshotEnd", "change"]);
    // The snapshot has every entry, in revision order (after them, what another test wrote).
    const carried = namesIn(events);
    expect(carried.filter((name) => names.includes(name))).toEqual(names);
    expect(carried.at(-1)).toBe("late-for-new");
  });
});

// BUG (src/replication/hybrid-logical-clock.ts observe, src/replication/merge.ts): a remote stamp
// is observed whatever its value. After a peer sends hlc 2^64-1, this node stamps its own next
// write 2^64, which no uint64 can carry: its Replicate stream then fails ("Internal: internal
// error") for every peer, for good, and replication from it stops. Expected: such a stamp is
// refused (or at least local stamps stay within uint64 and keep replicating).
describe("a stamp at the top of the uint64 range from a peer", () => {
  let garbage: GarbagePeer | undefined;
  let proxy: TcpProxy | undefined;
  let a: RunningOrchestrator | undefined;
  let b: RunningOrchestrator | undefined;

  afterAll(async () => {
    // Every link down first, so that the nodes close with none open (see untilLinksDown).
    await garbage?.close();
    proxy?.cut("reset");
    for (const node of [a, b]) if (node) await untilLinksDown(node.url).catch(() => undefined);
    await Promise.all([b?.close(), a?.close()]);
    await proxy?.close();
  });

  it("does not stop the node's own writes from replicating", async () => {
    const top = (1n << 64n) - 1n;
    garbage = await startGarbagePeer({
      kind: "bad-entries",
      messages: [
        helloMessage("garbage-node", 1),
        changeMessage("far-future", { origin: "garbage-node", hlc: top }, 1),
        snapshotEndMessage(1),
      ],
    });
    a = await startOrchestrator({
      env: { ...quietEnv, NODE_ID: "a", ORCHESTRATOR_PEERS: garbage.url },
    });
    proxy = await startTcpProxy(a.port);
    b = await startOrchestrator({
      env: { ...quietEnv, NODE_ID: "b", ORCHESTRATOR_PEERS: proxy.url },
    });
    const base = a.url;
    // Merged, or refused (the link failing on it): either way A has dealt with it.
    await until("A has dealt with the far-future entry", async () => {
      const merged = (await rest(base, "GET", "/registry/far-future")).status === 200;
      const refused = (await listPeers(base)).some((peer) => (peer.last_error ?? "") !== "");
      return merged || refused ? true : undefined;
    });
    const mine = await register(base, registration("written-on-a"));
    expect(BigInt(mine.hlc)).toBeLessThanOrEqual(top);
    const onB = b.url;
    await until("B has A's write", async () =>
      (await rest(onB, "GET", "/registry/written-on-a")).status === 200 ? true : undefined,
    );
  });
});

/**
 * Runs a script of tests/support in a `node --import tsx` process of its own, with a temporary
 * directory of its own (removed afterwards, whatever the script left in it).
 */
async function runSupportScript(
  script: string,
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
  const path = fileURLToPath(new URL(`../support/${script}`, import.meta.url));
  const tmp = await mkdtemp(join(tmpdir(), "orchestrator-script-"));
  try {
    const child = spawn(process.execPath, ["--import", tsx, path], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? tmp, TMPDIR: tmp },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    const code = await new Promise<number | null>((resolve) => {
      child.once("close", (exitCode) => resolve(exitCode));
    });
    clearTimeout(timer);
    return { code, stdout, stderr };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

// BUG (src/replication/peer-link.ts stop, src/clients/peer-client.ts close; with
// @connectrpc/connect-node 2.1.2's Http2SessionManager): `App.close()` on a node whose Replicate
// stream to a live peer is open leaves a timer behind. PeerLink.stop() aborts the stream and calls
// transport.close() (sessions.abort()) before the HTTP/2 stream's "close" event; the session
// manager has already dropped its listeners, and that late "close" re-arms the keepalive ping
// (resetPingInterval), which fires pingIntervalMs later on the destroyed session and throws
// ERR_HTTP2_INVALID_SESSION ("The session has been destroyed") as an uncaught exception. A process
// running main.ts exits first; an embedder or a test process that goes on running dies.
// Expected: nothing is left behind once close() resolves.
describe("closing a node while its replication stream to a live peer is open", () => {
  it("leaves no timer behind that throws after the close", { timeout: 90_000 }, async () => {
    const run = await runSupportScript("close-during-replication.ts", 80_000);
    expect(run.stdout, run.stderr).toContain("closed a");
    expect(run.stderr).not.toContain("The session has been destroyed");
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain("clean");
  });
});

/** `text` as a regular expression matching it literally. */
function escaped(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
