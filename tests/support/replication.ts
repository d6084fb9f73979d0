import { expect } from "vitest";
import { type RunningOrchestrator, startOrchestrator } from "./orchestrator.js";
import { freePort } from "./process.js";
import {
  expectStatus,
  type Json,
  listRegistry,
  patience,
  rest,
  type ServiceJson,
  until,
} from "./rest.js";
import { startTcpProxy, type TcpProxy } from "./tcp-proxy.js";

/** One row of GET /peers. */
export interface PeerJson {
  readonly url: string;
  readonly node_id?: string;
  readonly state: string;
  readonly last_contact?: string;
  readonly applied_revision?: string;
  readonly lag_changes?: string;
  readonly lag_ms?: number;
  readonly last_error?: string;
  readonly incarnation_id?: string;
}

/** GET /peers. */
export async function listPeers(base: string): Promise<PeerJson[]> {
  const body = await expectStatus(rest(base, "GET", "/peers"), 200, `GET ${base}/peers`);
  return (body.peers as PeerJson[] | undefined) ?? [];
}

/**
 * An entry without what each node keeps for itself (its revision, the health status it learned,
 * and the update time that learning moves): what must be the same on every node once they agree.
 */
export function replicated(entry: ServiceJson): Json {
  return {
    name: entry.name,
    hlc: entry.hlc,
    origin_node_id: entry.origin_node_id,
    base_url: entry.base_url,
    openapi_url: entry.openapi_url ?? "",
    health_url: entry.health_url ?? "",
    endpoints: entry.endpoints ?? [],
    version: entry.version ?? "",
    tags: entry.tags ?? [],
    metadata: entry.metadata ?? {},
    ttl_seconds: entry.ttl_seconds ?? 0,
    registered_at: entry.registered_at,
    last_heartbeat: entry.last_heartbeat,
    lease_expires_at: entry.lease_expires_at,
  };
}

/** The node's registry as {@link replicated} entries, by name. */
export async function replicatedRegistry(base: string): Promise<Json[]> {
  return (await listRegistry(base)).services.map(replicated);
}

/** Whether every link of the node is LIVE and has applied all its peer has. */
export function allLive(peers: readonly PeerJson[]): boolean {
  return peers.every(
    (peer) => peer.state === "PEER_STATE_LIVE" && Number(peer.lag_changes ?? 0) === 0,
  );
}

/**
 * Waits until all registries are identical ({@link replicated}) and, unless `linksLive` is false,
 * every link of every node is LIVE with nothing left to apply; returns that registry.
 */
export async function untilConverged(
  bases: readonly string[],
  options: { linksLive?: boolean } = {},
): Promise<Json[]> {
  const linksLive = options.linksLive ?? true;
  let last = "";
  return until(
    `${bases.join(", ")} converge`,
    async () => {
      const peers = linksLive ? await Promise.all(bases.map(listPeers)) : [];
      const registries = await Promise.all(bases.map(replicatedRegistry));
      const [first, ...others] = registries.map((registry) => JSON.stringify(registry));
      last = JSON.stringify({ peers, registries });
      const agree = first !== undefined && others.every((other) => other === first);
      return agree && peers.every(allLive) ? registries[0] : undefined;
    },
    { describe: () => last },
  );
}

/** The answer of POST /registry/sync-peers. */
export interface SyncJson {
  readonly sent?: number;
  readonly received?: number;
  readonly peers: readonly {
    readonly url: string;
    readonly ok?: boolean;
    readonly sent?: number;
    readonly received?: number;
    readonly error?: string;
  }[];
}

export async function syncPeers(base: string): Promise<SyncJson> {
  const body = await expectStatus(
    rest(base, "POST", "/registry/sync-peers", {}),
    200,
    `sync-peers on ${base}`,
  );
  return body as unknown as SyncJson;
}

/** Anti-entropy finds nothing to repair: the digests (entries and tombstones) already agree. */
export async function expectNothingToRepair(base: string): Promise<void> {
  const sync = await syncPeers(base);
  for (const peer of sync.peers) {
    expect(peer, `sync from ${base}`).toMatchObject({ ok: true });
    expect(peer.sent ?? 0, `sent from ${base} to ${peer.url}`).toBe(0);
    expect(peer.received ?? 0, `received by ${base} from ${peer.url}`).toBe(0);
  }
}

/** A replication stamp as the REST gateway shows it. */
export interface StampJson {
  readonly hlc: unknown;
  readonly origin_node_id: unknown;
}

/**
 * The order of last-writer-wins: by hybrid logical clock, then by origin node id. Negative when
 * `a` is older than `b`, 0 when they are the same stamp.
 */
export function compareStamps(a: StampJson, b: StampJson): number {
  const [ha, hb] = [BigInt(String(a.hlc)), BigInt(String(b.hlc))];
  if (ha !== hb) return ha < hb ? -1 : 1;
  const [oa, ob] = [String(a.origin_node_id), String(b.origin_node_id)];
  return oa < ob ? -1 : oa > ob ? 1 : 0;
}

/** The newer of two entries by {@link compareStamps}. */
export function newerStamp<T extends StampJson>(a: T, b: T): T {
  return compareStamps(a, b) >= 0 ? a : b;
}

export function entryNamed(registry: readonly Json[], name: string): Json | undefined {
  return registry.find((entry) => entry.name === name);
}

/** Polls GET /peers until the row of `url` satisfies `check`, and returns it. */
export function untilPeer(
  base: string,
  url: string,
  check: (peer: PeerJson) => boolean,
): Promise<PeerJson> {
  let last: PeerJson | undefined;
  return until(
    `${base}/peers: the link to ${url} in the expected state`,
    async () => {
      last = (await listPeers(base)).find((peer) => peer.url === url);
      return last !== undefined && check(last) ? last : undefined;
    },
    { describe: () => JSON.stringify(last) },
  );
}

/** A node of a {@link Cluster}. */
export interface ClusterNode {
  /** NODE_ID, e.g. "node-a". */
  readonly id: string;
  readonly port: number;
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
}

/** What {@link startCluster} takes. */
export interface ClusterOptions {
  /** Number of nodes, named node-a, node-b, ... */
  size: number;
  /** The nodes node `i` lists as peers (pulls from). Default: every other node (full mesh). */
  peersOf?: (i: number) => readonly number[];
  /** More environment for node `i`. */
  env?: (i: number) => Record<string, string>;
}

/** In-process nodes on loopback, replicating with each other. */
export interface Cluster {
  readonly nodes: readonly ClusterNode[];
  /** The URLs of the nodes, in order. */
  readonly urls: readonly string[];
  /** The running node `i`. */
  node(i: number): RunningOrchestrator;
  /** The proxy node `from` reaches node `to` through. @throws Error when `from` does not list `to`. */
  proxy(from: number, to: number): TcpProxy;
  /** Every proxy, with the link it carries. */
  readonly proxies: readonly {
    readonly from: number;
    readonly to: number;
    readonly proxy: TcpProxy;
  }[];
  /** Closes every node and proxy. Idempotent. */
  close(): Promise<void>;
}

/** Health probes write (status changes): none in these tests, so that every revision is a change. */
export const quietEnv: Readonly<Record<string, string>> = Object.freeze({
  HEALTH_CHECK_INTERVAL_MS: "3600000",
});

/** node-a, node-b, ... */
export function nodeIdOf(i: number): string {
  return `node-${String.fromCharCode(97 + i)}`;
}

/**
 * Starts `size` in-process nodes on ports picked beforehand (a peer URL needs the port before its
 * node starts), each reaching each of its peers through a {@link TcpProxy} of its own (so that a
 * test can cut any link, and so that the cluster can be closed with every link down first), and
 * waits until every one is ready. Closes what it started when one fails to start.
 */
export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const indexes = Array.from({ length: options.size }, (_, i) => i);
  const peersOf = options.peersOf ?? ((i: number) => indexes.filter((j) => j !== i));
  const proxies: { from: number; to: number; proxy: TcpProxy }[] = [];
  const nodes: ClusterNode[] = [];
  const running: (RunningOrchestrator | undefined)[] = indexes.map(() => undefined);
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      // Links are cut first, and the nodes closed once none has a stream open (see untilLinksDown).
      for (const { proxy } of proxies) proxy.cut("reset");
      for (const node of running) {
        if (node !== undefined) await untilLinksDown(node.url, 10_000).catch(() => undefined);
      }
      await Promise.all(running.map((node) => node?.close()));
      await Promise.all(proxies.map(({ proxy }) => proxy.close()));
    })();
    return closing;
  };
  try {
    // The proxies take their ports first and the nodes' ports are picked after, while every proxy
    // holds its own: a port picked for a node and released until it starts cannot be a proxy's.
    const peerUrls: string[][] = [];
    for (const i of indexes) {
      const urls: string[] = [];
      for (const j of peersOf(i)) {
        if (!indexes.includes(j)) throw new Error(`node ${i} lists node ${j}, which is not there`);
        const proxy = await startTcpProxy(() => nodes[j]?.port ?? 1);
        proxies.push({ from: i, to: j, proxy });
        urls.push(proxy.url);
      }
      peerUrls.push(urls);
    }
    for (const i of indexes) {
      const port = await freePort();
      nodes.push({ id: nodeIdOf(i), port, url: `http://127.0.0.1:${port}` });
    }
    const started = await Promise.allSettled(
      nodes.map((node, i) =>
        startOrchestrator({
          env: {
            ...quietEnv,
            NODE_ID: node.id,
            PORT: String(node.port),
            ORCHESTRATOR_PEERS: (peerUrls[i] ?? []).join(","),
            ...options.env?.(i),
          },
        }),
      ),
    );
    started.forEach((outcome, i) => {
      if (outcome.status === "fulfilled") running[i] = outcome.value;
    });
    for (const outcome of started) if (outcome.status === "rejected") throw outcome.reason;
    for (const node of nodes) {
      await until(`${node.url} ready`, async () =>
        (await rest(node.url, "GET", "/ready")).status === 200 ? true : undefined,
      );
    }
  } catch (error) {
    await close();
    throw error;
  }
  return {
    nodes,
    urls: nodes.map((node) => node.url),
    node(i) {
      const node = running[i];
      if (node === undefined) throw new Error(`node ${i} is not running`);
      return node;
    },
    proxy(from, to) {
      const found = proxies.find((p) => p.from === from && p.to === to);
      if (found === undefined) throw new Error(`node ${from} does not reach node ${to} by proxy`);
      return found.proxy;
    },
    proxies,
    close,
  };
}

/**
 * Waits until every link of the node is between attempts (BACKOFF): none has a stream open.
 * Close a node only then when its peers are gone or cut: closing it with a Replicate stream open
 * leaves an HTTP/2 ping timer behind that throws later (reported; see
 * tests/e2e/replication.test.ts).
 */
export async function untilLinksDown(base: string, timeoutMs = patience): Promise<void> {
  await until(
    `every link of ${base} down`,
    async () => {
      const peers = await listPeers(base);
      return peers.every((peer) => peer.state === "PEER_STATE_BACKOFF") ? true : undefined;
    },
    { timeoutMs },
  );
}
