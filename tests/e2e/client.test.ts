import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  createOrchestratorClient,
  isTransient,
  type OrchestratorClient,
  type OrchestratorClientOptions,
  ServiceStatus,
  WatchEventType,
  type WatchServicesResponse,
} from "../../src/client/index.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { startTcpProxy } from "../support/tcp-proxy.js";

// src/client against a real node on loopback, over gRPC and over Connect with JSON: the typed
// clients, the bearer token, keepRegistered (leases kept, a forgotten entry registered again,
// deregistration on stop) and followRegistry (resuming after the link is cut, without missing or
// repeating a change).

const waitLong = { timeout: 30_000, interval: 50 };
// Probes would write status changes into the change log: none unless a test asks.
const quiet = { HEALTH_CHECK_INTERVAL_MS: "3600000" };

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startNode(env: Record<string, string> = {}): Promise<RunningOrchestrator> {
  const node = await startOrchestrator({ env: { ...quiet, ...env } });
  cleanups.push(() => node.close());
  return node;
}

function clientOf(options: OrchestratorClientOptions): OrchestratorClient {
  const client = createOrchestratorClient(options);
  cleanups.push(() => client.close());
  return client;
}

async function codeOf(call: Promise<unknown>): Promise<Code | undefined> {
  try {
    await call;
    return undefined;
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

/**
 * Reads the changes `follow` returns in the background into an array, until the test ends. It is
 * stopped by its signal: `return()` on a generator waiting for the next change would wait too.
 */
function collect(
  follow: (signal: AbortSignal) => AsyncGenerator<WatchServicesResponse>,
): WatchServicesResponse[] {
  const seen: WatchServicesResponse[] = [];
  const abort = new AbortController();
  const reading = (async () => {
    for await (const change of follow(abort.signal)) seen.push(change);
  })();
  cleanups.push(async () => {
    abort.abort();
    await reading;
  });
  return seen;
}

const named = (seen: readonly WatchServicesResponse[], name: string) =>
  seen.filter((change) => change.service?.name === name);

describe.each(["grpc", "connect"] as const)("typed client over %s", (protocol) => {
  it("calls every service with typed messages", async () => {
    const node = await startNode();
    const client = clientOf({ baseUrl: node.url, protocol, timeoutMs: 10_000 });

    const registered = await client.registry.registerService({
      name: "typed",
      baseUrl: "http://127.0.0.1:9/typed",
      tags: ["a"],
    });
    expect(registered.service?.name).toBe("typed");
    const listed = await client.registry.listServices({ tag: "a" });
    expect(listed.services.map((s) => s.name)).toEqual(["typed"]);
    expect(listed.revision).toBeGreaterThan(0n);
    expect((await client.system.ping({})).$typeName).toBe("orchestrator.v1.PingResponse");
    expect(Array.isArray((await client.workflows.listWorkflows({})).workflows)).toBe(true);
    expect((await client.peers.listPeers({})).$typeName).toBe("orchestrator.v1.ListPeersResponse");
    expect((await client.infrastructure.getDlqStats({})).$typeName).toBe(
      "orchestrator.v1.GetDlqStatsResponse",
    );
    expect(await codeOf(client.registry.getService({ name: "absent" }))).toBe(Code.NotFound);
  });

  it("sends the token as a bearer", async () => {
    const node = await startNode({ AUTH_TOKENS: "service/typed:tok-typed,viewer:tok-viewer" });
    const anonymous = clientOf({ baseUrl: node.url, protocol });
    const service = clientOf({ baseUrl: node.url, protocol, token: "tok-typed" });
    const entry = { name: "typed", baseUrl: "http://127.0.0.1:9/typed" };

    expect(await codeOf(anonymous.registry.registerService(entry))).toBe(Code.Unauthenticated);
    // Not transient: keepRegistered gives up at once rather than retrying.
    await expect(anonymous.keepRegistered(entry)).rejects.toMatchObject({
      code: Code.Unauthenticated,
    });
    const handle = await service.keepRegistered(entry);
    expect(handle.current.registrations).toBe(1);
    await handle.stop();
  });

  it("keeps a service registered past several leases, registers it again when the node forgot it, and deregisters on stop", async () => {
    const node = await startNode({ LEASE_GRACE_MS: "200" });
    const client = clientOf({ baseUrl: node.url, protocol, timeoutMs: 10_000 });
    const seen = collect((signal) => client.followRegistry({ namePrefix: "leased", signal }));
    const errors: unknown[] = [];

    const handle = await client.keepRegistered(
      { name: "leased", baseUrl: "http://127.0.0.1:9/leased", ttlSeconds: 2 },
      { onError: (error) => errors.push(error) },
    );
    cleanups.push(() => handle.stop());
    expect(handle.current.entry?.ttlSeconds).toBe(2);

    // A heartbeat every third of the lease: nine of them span three leases of 2 s.
    await vi.waitFor(() => expect(handle.current.heartbeats).toBeGreaterThanOrEqual(9), waitLong);
    const kept = await client.registry.getService({ name: "leased" });
    expect(kept.service?.status).not.toBe(ServiceStatus.DOWN);
    const lapses = named(seen, "leased").filter(
      (c) => c.type === WatchEventType.DELETE || c.service?.status === ServiceStatus.DOWN,
    );
    expect(lapses).toEqual([]);

    // Deleted behind its back: the next heartbeat answers NOT_FOUND and it registers again.
    await client.registry.deregisterService({ name: "leased" });
    await vi.waitFor(() => expect(handle.current.registrations).toBe(2), waitLong);
    expect((await client.registry.getService({ name: "leased" })).service?.name).toBe("leased");

    await handle.stop();
    expect(handle.current.stopped).toBe(true);
    expect(await codeOf(client.registry.getService({ name: "leased" }))).toBe(Code.NotFound);
    expect(errors).toEqual([]);
  });

  it("keeps trying while the node is unreachable, and registers again once it is back if the lease ran out meanwhile", async () => {
    const node = await startNode({ LEASE_GRACE_MS: "100" });
    const proxy = await startTcpProxy(node.port);
    cleanups.push(() => proxy.close());
    const direct = clientOf({ baseUrl: node.url, protocol });
    const viaProxy = clientOf({ baseUrl: proxy.url, protocol, timeoutMs: 2_000 });
    const seen = collect((signal) => direct.followRegistry({ namePrefix: "cut-off", signal }));

    const handle = await viaProxy.keepRegistered(
      { name: "cut-off", baseUrl: "http://127.0.0.1:9/cut-off", ttlSeconds: 1 },
      { maxBackoffMs: 200 },
    );
    cleanups.push(() => handle.stop());
    proxy.cut("reset");
    // Heartbeats fail and are retried; the lease runs out and the node removes the entry.
    await vi.waitFor(() => expect(handle.current.lastError).toBeDefined(), waitLong);
    await vi.waitFor(
      () => expect(named(seen, "cut-off").at(-1)?.type).toBe(WatchEventType.DELETE),
      waitLong,
    );
    expect(isTransient(handle.current.lastError)).toBe(true); // a refused or reset connection
    expect(handle.current.registrations).toBe(1);

    proxy.heal();
    await vi.waitFor(() => expect(handle.current.registrations).toBe(2), waitLong);
    expect((await direct.registry.getService({ name: "cut-off" })).service?.name).toBe("cut-off");
    await vi.waitFor(() => expect(handle.current.lastError).toBeUndefined(), waitLong);
  });

  it("deregisters when its signal aborts", async () => {
    const node = await startNode();
    const client = clientOf({ baseUrl: node.url, protocol });
    const abort = new AbortController();
    const handle = await client.keepRegistered(
      { name: "aborted", baseUrl: "http://127.0.0.1:9/aborted", ttlSeconds: 30 },
      { signal: abort.signal },
    );
    abort.abort();
    await handle.stop(); // the same stop the abort started
    expect(await codeOf(client.registry.getService({ name: "aborted" }))).toBe(Code.NotFound);
  });

  it("follows the registry across a cut link without missing or repeating a change", async () => {
    const node = await startNode();
    const proxy = await startTcpProxy(node.port);
    cleanups.push(() => proxy.close());
    const direct = clientOf({ baseUrl: node.url, protocol });
    const viaProxy = clientOf({ baseUrl: proxy.url, protocol });
    const register = (name: string) =>
      direct.registry.registerService({ name, baseUrl: `http://127.0.0.1:9/${name}` });

    await register("f-before");
    const seen = collect((signal) =>
      viaProxy.followRegistry({ namePrefix: "f-", maxBackoffMs: 200, signal }),
    );
    await vi.waitFor(
      () => expect(seen.some((c) => c.type === WatchEventType.SNAPSHOT_END)).toBe(true),
      waitLong,
    );
    expect(seen[0]).toMatchObject({ type: WatchEventType.PUT, snapshot: true });
    expect(seen[0]?.service?.name).toBe("f-before");
    await register("f-1");
    await vi.waitFor(() => expect(named(seen, "f-1")).toHaveLength(1), waitLong);

    proxy.cut("reset");
    await register("f-2");
    await direct.registry.deregisterService({ name: "f-before" });
    await register("f-3");
    proxy.heal();
    await vi.waitFor(() => expect(named(seen, "f-3")).toHaveLength(1), waitLong);
    await register("f-4");
    await vi.waitFor(() => expect(named(seen, "f-4")).toHaveLength(1), waitLong);

    expect(proxy.accepted).toBeGreaterThan(1); // it did reconnect
    const live = seen.filter((c) => !c.snapshot);
    expect(live.map((c) => [c.type, c.service?.name])).toEqual([
      [WatchEventType.PUT, "f-1"],
      [WatchEventType.PUT, "f-2"],
      [WatchEventType.DELETE, "f-before"],
      [WatchEventType.PUT, "f-3"],
      [WatchEventType.PUT, "f-4"],
    ]);
    const revisions = live.map((c) => c.revision);
    expect(revisions).toEqual([...revisions].sort((a, b) => (a < b ? -1 : 1)));
    expect(new Set(revisions).size).toBe(revisions.length);
    expect(seen.filter((c) => c.snapshot)).toHaveLength(2); // one snapshot: no restart from 0
  });
});

describe("followRegistry across a restart", () => {
  it("gets a compacted snapshot from a node that restarted empty on the same port, then its changes", async () => {
    const first = await startNode();
    const client = clientOf({ baseUrl: first.url });
    const seen = collect((signal) => client.followRegistry({ maxBackoffMs: 200, signal }));
    await client.registry.registerService({ name: "r-1", baseUrl: "http://127.0.0.1:9/r-1" });
    await vi.waitFor(() => expect(named(seen, "r-1")).toHaveLength(1), waitLong);

    // The in-memory store starts again at revision 0: the revision the follower resumes from is
    // ahead of it, which the node answers with a fresh snapshot marked compacted.
    await first.close();
    const second = await startNode({ PORT: String(first.port) });
    await vi.waitFor(
      () =>
        expect(
          seen.filter((c) => c.compacted && c.type === WatchEventType.SNAPSHOT_END),
        ).toHaveLength(1),
      waitLong,
    );
    await client.registry.registerService({ name: "r-2", baseUrl: "http://127.0.0.1:9/r-2" });
    await vi.waitFor(() => expect(named(seen, "r-2")).toHaveLength(1), waitLong);
    expect(second.port).toBe(first.port);
    expect(named(seen, "r-1")).toHaveLength(1); // gone with the old node: not in the new snapshot
    expect(named(seen, "r-2")[0]).toMatchObject({ type: WatchEventType.PUT, snapshot: false });
  });
});

describe("createOrchestratorClient", () => {
  it("refuses a base URL that is not http(s)", () => {
    expect(() => createOrchestratorClient({ baseUrl: "127.0.0.1:8080" })).toThrow(/baseUrl/);
    expect(() => createOrchestratorClient({ baseUrl: "ftp://host" })).toThrow(/http or https/);
  });
});
