import pino from "pino";
import { beforeEach, describe, expect, it } from "vitest";
import { createManualClock, type ManualClock } from "../../tests/support/manual-clock.js";
import {
  createRecordingEventLog,
  type RecordingEventLog,
} from "../../tests/support/recording-event-log.js";
import { DomainError } from "../errors/domain-error.js";
import { HybridLogicalClock } from "../replication/hybrid-logical-clock.js";
import { createMemoryRegistryStore } from "./memory-registry-store.js";
import type { DeclaredService } from "./model.js";
import { Registry } from "./registry.js";
import type { RegistryStore } from "./registry-store.js";

const call = { correlationId: "corr-1", traceId: "0af7651916cd43dd8448eb211c80319c" };
const logger = pino({ level: "silent" });

function declared(name: string, overrides: Partial<DeclaredService> = {}): DeclaredService {
  return {
    name,
    baseUrl: `http://${name}:8080/`,
    openapiUrl: "",
    healthUrl: "",
    endpoints: [],
    metadata: {},
    tags: [],
    version: "1",
    ttlSeconds: 10,
    ...overrides,
  };
}

let clock: ManualClock;
let store: RegistryStore;
let events: RecordingEventLog;
let registry: Registry;

function makeRegistry(nodeId = "node-a"): Registry {
  return new Registry(
    { store, clock, hlc: new HybridLogicalClock(clock), events, nodeId, logger },
    { leaseGraceMs: 5_000, tombstoneRetentionMs: 60_000 },
  );
}

beforeEach(() => {
  clock = createManualClock();
  store = createMemoryRegistryStore();
  events = createRecordingEventLog({ clock, source: "node-a" });
  registry = makeRegistry();
});

const eventTypes = () => events.recent().map((e) => e.type);

describe("register", () => {
  it("creates an entry with a lease, a default health URL and an event", async () => {
    const { entry, created } = await registry.register(declared("svc"), call);
    expect(created).toBe(true);
    expect(entry).toMatchObject({
      name: "svc",
      status: "UNKNOWN",
      healthUrl: "http://svc:8080/health",
      registeredAt: clock.now(),
      leaseExpiresAt: clock.now() + 10_000,
      origin: "node-a",
      revision: 1,
    });
    expect(entry.hlc).toBeGreaterThan(0n);
    const [event] = events.recent();
    expect(event).toMatchObject({
      type: "registry.service.registered",
      subject: "svc",
      correlationId: "corr-1",
      traceId: call.traceId,
      payload: { service: "svc", created: true, revision: 1 },
    });
  });

  it("replaces declared fields but keeps the learned status and the first registration time", async () => {
    const first = await registry.register(declared("svc"), call);
    await registry.setHealth("svc", "HEALTHY", {});
    clock.advance(1_000);
    const { entry, created } = await registry.register(
      declared("svc", { version: "2", tags: ["x"], ttlSeconds: 0 }),
      call,
    );
    expect(created).toBe(false);
    expect(entry).toMatchObject({
      version: "2",
      tags: ["x"],
      status: "HEALTHY",
      registeredAt: first.entry.registeredAt,
      lastHeartbeat: clock.now(),
      leaseExpiresAt: 0,
    });
    expect(entry.hlc).toBeGreaterThan(first.entry.hlc);
  });

  it("keeps one copy of what a registration repeats: the new entry shares it with the old", async () => {
    const first = await registry.register(
      declared("svc", { endpoints: ["/a"], tags: ["t"], metadata: { team: "x" } }),
      call,
    );
    // A fresh request: equal values, other objects, as decoding one gives.
    const { entry } = await registry.register(
      declared("svc", {
        endpoints: ["/a"],
        tags: ["t", "u"],
        metadata: { team: "x" },
        version: "2",
      }),
      call,
    );
    expect(entry.endpoints).toBe(first.entry.endpoints);
    expect(entry.metadata).toBe(first.entry.metadata);
    expect(entry.tags).toEqual(["t", "u"]);
    expect(entry.tags).not.toBe(first.entry.tags);
    expect(entry.version).toBe("2");
  });
});

describe("leases", () => {
  it("turns an entry DOWN when its lease runs out, then removes it after the grace period", async () => {
    await registry.register(declared("svc", { ttlSeconds: 10 }), call);
    clock.advance(9_999);
    await registry.sweep();
    expect(registry.get("svc")?.status).toBe("UNKNOWN");
    clock.advance(1);
    await registry.sweep();
    expect(registry.get("svc")?.status).toBe("DOWN");
    expect(eventTypes()).toContain("registry.service.expired");
    clock.advance(4_999);
    await registry.sweep();
    expect(registry.get("svc")).toBeDefined();
    clock.advance(1);
    await registry.sweep();
    expect(registry.get("svc")).toBeUndefined();
    expect(store.tombstone("svc")).toMatchObject({ name: "svc", origin: "node-a" });
    expect(eventTypes()).toContain("registry.service.removed");
  });

  it("renews the lease on a heartbeat, and a heartbeat revives a DOWN entry", async () => {
    await registry.register(declared("svc"), call);
    clock.advance(8_000);
    const renewed = await registry.heartbeat("svc", call);
    expect(renewed.leaseExpiresAt).toBe(clock.now() + 10_000);
    clock.advance(9_000);
    await registry.sweep();
    expect(registry.get("svc")?.status).toBe("UNKNOWN");
    clock.advance(2_000);
    await registry.sweep();
    expect(registry.get("svc")?.status).toBe("DOWN");
    const revived = await registry.heartbeat("svc", call);
    expect(revived.status).toBe("UNKNOWN");
    expect(eventTypes()).toContain("registry.service.revived");
  });

  it("never expires an entry without a lease", async () => {
    await registry.register(declared("svc", { ttlSeconds: 0 }), call);
    clock.advance(86_400_000);
    await registry.sweep();
    expect(registry.get("svc")?.status).toBe("UNKNOWN");
  });

  it("forgets tombstones after the retention window", async () => {
    await registry.register(declared("svc"), call);
    await registry.deregister("svc", call);
    clock.advance(59_999);
    await registry.sweep();
    expect(store.tombstone("svc")).toBeDefined();
    clock.advance(2);
    await registry.sweep();
    expect(store.tombstone("svc")).toBeUndefined();
  });

  it("keeps at most maxTombstones tombstones, forgetting the oldest first", async () => {
    const capped = new Registry(
      { store, clock, hlc: new HybridLogicalClock(clock), events, nodeId: "node-a", logger },
      { tombstoneRetentionMs: 3_600_000, maxTombstones: 3 },
    );
    for (let i = 0; i < 8; i++) {
      await capped.register(declared(`gone-${i}`), call);
      await capped.deregister(`gone-${i}`, call);
      clock.advance(10);
    }
    expect([...store.tombstones()]).toHaveLength(8);
    await capped.sweep();
    expect([...store.tombstones()].map((t) => t.name).sort()).toEqual([
      "gone-5",
      "gone-6",
      "gone-7",
    ]);
  });
});

describe("limits", () => {
  it("refuses a registration over 16 KiB of declared strings, naming the size", async () => {
    const metadata: Record<string, string> = {};
    for (let i = 0; i < 32; i++) metadata[`key-${i}`] = "v".repeat(512);
    const error = await registry.register(declared("big", { metadata }), call).catch((e) => e);
    expect(error).toBeInstanceOf(DomainError);
    expect(error).toMatchObject({ kind: "invalid" });
    expect((error as DomainError).message).toMatch(/declares 16\d{3} bytes; at most 16384/);
    expect(store.get("big")).toBeUndefined();
  });

  it("refuses a new service when the registry is full, and still renews the ones it has", async () => {
    store = createMemoryRegistryStore({ maxEntries: 2 });
    registry = makeRegistry();
    await registry.register(declared("a"), call);
    await registry.register(declared("b"), call);
    const error = await registry.register(declared("c"), call).catch((e) => e);
    expect(error).toMatchObject({ kind: "resource_exhausted" });
    await registry.register(declared("a", { version: "2" }), call);
    await registry.heartbeat("b", call);
    expect(store.get("a")?.version).toBe("2");
  });
});

describe("deregister and heartbeat", () => {
  it("answers not_found for services that are not registered", async () => {
    for (const attempt of [
      () => registry.deregister("nope", call),
      () => registry.heartbeat("nope", call),
    ]) {
      const error = await attempt().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DomainError);
      expect((error as DomainError).kind).toBe("not_found");
    }
  });

  it("leaves a tombstone and emits an event", async () => {
    await registry.register(declared("svc"), call);
    const tombstone = await registry.deregister("svc", call);
    expect(tombstone).toMatchObject({ name: "svc", revision: 2 });
    expect(registry.get("svc")).toBeUndefined();
    expect(eventTypes()).toEqual(["registry.service.registered", "registry.service.deregistered"]);
  });
});

describe("health", () => {
  it("records a transition once, with an event, and leaves a DOWN entry alone", async () => {
    await registry.register(declared("svc"), call);
    const { hlc } = registry.get("svc") ?? { hlc: 0n };
    await registry.setHealth("svc", "UNHEALTHY", { error: "HTTP 503" });
    await registry.setHealth("svc", "UNHEALTHY", { error: "HTTP 503" });
    expect(registry.get("svc")).toMatchObject({ status: "UNHEALTHY", hlc });
    const changes = events.recent().filter((e) => e.type === "registry.service.health_changed");
    expect(changes).toHaveLength(1);
    expect(changes[0]?.payload).toMatchObject({
      from: "UNKNOWN",
      to: "UNHEALTHY",
      error: "HTTP 503",
    });
    clock.advance(20_000);
    await registry.sweep();
    await registry.setHealth("svc", "HEALTHY", {});
    expect(registry.get("svc")?.status).toBe("DOWN");
  });
});

describe("list", () => {
  it("filters by tag, status and name prefix, sorted by name, a page at a time", async () => {
    for (const name of ["b-2", "a-1", "b-1", "c-1"]) {
      await registry.register(declared(name, { tags: name.startsWith("b") ? ["blue"] : [] }), call);
    }
    await registry.setHealth("c-1", "HEALTHY", {});
    expect(registry.list().entries.map((e) => e.name)).toEqual(["a-1", "b-1", "b-2", "c-1"]);
    expect(registry.list({ tag: "blue" }).entries.map((e) => e.name)).toEqual(["b-1", "b-2"]);
    expect(registry.list({ namePrefix: "b-" }).entries).toHaveLength(2);
    expect(registry.list({ status: "HEALTHY" }).entries.map((e) => e.name)).toEqual(["c-1"]);
    const first = registry.list({ pageSize: 3 });
    expect(first.entries.map((e) => e.name)).toEqual(["a-1", "b-1", "b-2"]);
    const second = registry.list({ pageSize: 3, pageToken: first.nextPageToken });
    expect(second.entries.map((e) => e.name)).toEqual(["c-1"]);
    expect(second.nextPageToken).toBe("");
    // The total counts every page's matches, whichever page it comes with.
    expect([first.totalSize, second.totalSize]).toEqual([4, 4]);
    const blue = registry.list({ tag: "blue", pageSize: 1 });
    expect(blue.entries).toHaveLength(1);
    expect(blue.totalSize).toBe(2);
    expect(
      registry.list({ tag: "blue", pageSize: 1, pageToken: blue.nextPageToken }),
    ).toMatchObject({ totalSize: 2, nextPageToken: "" });
    expect(registry.list({ status: "DOWN" }).totalSize).toBe(0);
    expect(() => registry.list({ pageToken: "!!not-ours" })).toThrow(DomainError);
  });
});

describe("concurrent writers", () => {
  it("lose no update when two orchestrators share one store", async () => {
    const other = makeRegistry("node-b");
    await registry.register(declared("svc"), call);
    await Promise.all([
      registry.heartbeat("svc", call),
      other.setHealth("svc", "HEALTHY", {}),
      other.heartbeat("svc", call),
      registry.register(declared("svc", { version: "9" }), call),
    ]);
    expect(registry.get("svc")).toMatchObject({ status: "HEALTHY", version: "9" });
    expect(store.revision).toBe(5);
  });
});

describe("writes whose outcome is unknown", () => {
  it("are neither retried nor reported as a conflict, and emit no event", async () => {
    const { entry } = await registry.register(declared("svc"), call);
    const before = events.recent().length;
    const writes: string[] = [];
    const unknown = () => new DomainError("timeout", "the write may have been applied");
    // The same data, through a store that cannot say whether a write happened (Redis silent).
    const unsure: RegistryStore = Object.assign(Object.create(store) as RegistryStore, {
      async put() {
        writes.push("put");
        throw unknown();
      },
      async remove() {
        writes.push("remove");
        throw unknown();
      },
    });
    const unsureRegistry = new Registry({
      store: unsure,
      clock,
      hlc: new HybridLogicalClock(clock),
      events,
      nodeId: "node-a",
      logger,
    });
    for (const attempt of [
      () => unsureRegistry.register(declared("svc", { version: "2" }), call),
      () => unsureRegistry.heartbeat("svc", call),
      () => unsureRegistry.deregister("svc", call),
    ]) {
      const error = await attempt().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(DomainError);
      expect((error as DomainError).kind).toBe("timeout");
    }
    expect(writes).toEqual(["put", "put", "remove"]);
    expect(events.recent()).toHaveLength(before);
    expect(registry.get("svc")).toEqual(entry);
  });
});

describe("events", () => {
  it("says when a registration changes something, not when it only renews", async () => {
    await registry.register(declared("svc"), call);
    await registry.register(declared("svc"), call);
    await registry.register(declared("svc", { version: "2" }), call);
    const registered = events.recent().filter((e) => e.type === "registry.service.registered");
    expect(registered.map((e) => e.payload.version)).toEqual(["1", "2"]);
  });
});
