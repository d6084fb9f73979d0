import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createManualClock } from "../../tests/support/manual-clock.js";
import {
  createRecordingEventLog,
  type RecordingEventLog,
} from "../../tests/support/recording-event-log.js";
import { createHttpClient } from "../http-client/http-client.js";
import { HybridLogicalClock } from "../replication/hybrid-logical-clock.js";
import { HealthChecker } from "./health-checker.js";
import { createMemoryRegistryStore } from "./memory-registry-store.js";
import { Registry } from "./registry.js";
import type { RegistryStore } from "./registry-store.js";

type Mode = "healthy" | "unhealthy" | "slow" | "redirect-away";

/** A real service on loopback whose health endpoint a test switches between behaviours. */
async function startService(): Promise<{
  url: string;
  setMode(mode: Mode): void;
  close(): Promise<void>;
}> {
  let mode: Mode = "healthy";
  const server: Server = createServer((request, response) => {
    switch (mode) {
      case "healthy":
        response.end("ok");
        return;
      case "unhealthy":
        response.statusCode = 503;
        response.end("down");
        return;
      case "redirect-away":
        response.writeHead(302, { location: "http://127.0.0.2:9/health" });
        response.end();
        return;
      default: {
        // slow: answer long after any probe's timeout
        const timer = setTimeout(() => response.end("late"), 30_000);
        request.once("close", () => clearTimeout(timer));
      }
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    setMode: (next) => {
      mode = next;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * A health endpoint that holds every request until `release()` (then answers 200, as it does every
 * request after), counting how many it held at once.
 */
async function startHeldService(): Promise<{
  url: string;
  paths: string[];
  maxHeld(): number;
  release(): void;
  close(): Promise<void>;
}> {
  const paths: string[] = [];
  const held = new Set<ServerResponse>();
  let most = 0;
  let released = false;
  const server: Server = createServer((request, response) => {
    paths.push(request.url ?? "");
    if (released) {
      response.end("ok");
      return;
    }
    held.add(response);
    most = Math.max(most, held.size);
    response.once("close", () => held.delete(response));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    paths,
    maxHeld: () => most,
    release: () => {
      released = true;
      for (const response of held) response.end("ok");
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function declared(name: string, healthUrl: string) {
  return {
    name,
    baseUrl: "http://127.0.0.1:9",
    openapiUrl: "",
    healthUrl,
    endpoints: [],
    metadata: {},
    tags: [],
    version: "1",
    ttlSeconds: 0,
  };
}

const logger = pino({ level: "silent" });
const call = { correlationId: "c", traceId: "t" };
let store: RegistryStore;
let events: RecordingEventLog;
let registry: Registry;
let checker: HealthChecker;
let service: Awaited<ReturnType<typeof startService>>;

let clock: ReturnType<typeof createManualClock>;
// Rounds only when a test asks (probeAll), apart from the one at start.
const hourly = { intervalMs: 3_600_000, timeoutMs: 30_000, successThreshold: 1 };
const waitLong = { timeout: 15_000, interval: 20 };

beforeEach(async () => {
  clock = createManualClock();
  store = createMemoryRegistryStore();
  events = createRecordingEventLog({ clock, source: "n" });
  registry = new Registry({
    store,
    clock,
    hlc: new HybridLogicalClock(clock),
    events,
    nodeId: "n",
    logger,
  });
  checker = new HealthChecker(
    { registry, entries: () => store.entries(), http: createHttpClient(), clock, logger },
    { timeoutMs: 300, failureThreshold: 2, successThreshold: 1, concurrency: 4 },
  );
  service = await startService();
  await registry.register(
    {
      name: "svc",
      baseUrl: service.url,
      openapiUrl: "",
      healthUrl: "",
      endpoints: [],
      metadata: {},
      tags: [],
      version: "1",
      ttlSeconds: 0,
    },
    call,
  );
});

afterEach(async () => {
  await checker.stop();
  await service.close();
});

const status = () => registry.get("svc")?.status;

describe("HealthChecker", () => {
  it("turns a service HEALTHY, then UNHEALTHY after the failure threshold, and back", async () => {
    await checker.probeAll();
    expect(status()).toBe("HEALTHY");
    service.setMode("unhealthy");
    await checker.probeAll();
    expect(status()).toBe("HEALTHY");
    await checker.probeAll();
    expect(status()).toBe("UNHEALTHY");
    expect(checker.systemHealth().services.get("svc")).toMatchObject({
      status: "unhealthy",
      error: "HTTP 503",
    });
    service.setMode("healthy");
    await checker.probeAll();
    expect(status()).toBe("HEALTHY");
    const transitions = events
      .recent()
      .filter((e) => e.type === "registry.service.health_changed")
      .map((e) => `${e.payload.from}->${e.payload.to}`);
    expect(transitions).toEqual(["UNKNOWN->HEALTHY", "HEALTHY->UNHEALTHY", "UNHEALTHY->HEALTHY"]);
  });

  it("counts a probe that outlasts its timeout as a failure, without blocking", async () => {
    service.setMode("slow");
    await checker.probeAll();
    await checker.probeAll();
    expect(status()).toBe("UNHEALTHY");
    const last = checker.systemHealth().services.get("svc");
    expect(last?.error).toMatch(/timed out/);
  });

  it("never follows a redirect to another host", async () => {
    service.setMode("redirect-away");
    await checker.probeAll();
    await checker.probeAll();
    expect(status()).toBe("UNHEALTHY");
    expect(checker.systemHealth().services.get("svc")?.error).toMatch(/redirect/);
  });

  it("summarises the fleet: healthy, degraded, unhealthy", async () => {
    expect(checker.systemHealth()).toMatchObject({ overallStatus: "unhealthy", totalCount: 1 });
    await checker.probeAll();
    expect(checker.systemHealth()).toMatchObject({
      overallStatus: "healthy",
      healthyCount: 1,
      totalCount: 1,
    });
    await registry.register(
      {
        name: "other",
        baseUrl: "http://127.0.0.1:9",
        openapiUrl: "",
        healthUrl: "",
        endpoints: [],
        metadata: {},
        tags: [],
        version: "1",
        ttlSeconds: 0,
      },
      call,
    );
    await checker.probeAll();
    await checker.probeAll();
    expect(checker.systemHealth()).toMatchObject({
      overallStatus: "degraded",
      healthyCount: 1,
      totalCount: 2,
    });
    expect(checker.systemHealth().services.get("other")?.error).not.toContain("127.0.0.1");
  });

  it("probes a registration at once: one probe in flight and one waiting per name, however often it registers", async () => {
    const held = await startHeldService();
    try {
      const deps = { registry, entries: () => store.entries(), http: createHttpClient(), clock };
      checker = new HealthChecker({ ...deps, logger }, { ...hourly, concurrency: 4 });
      checker.start();
      await checker.probeAll();
      // 50 registrations, each with another health URL than the one before.
      for (let i = 0; i < 50; i++) {
        await registry.register(declared("flood", `${held.url}/h${i % 2}`), call);
      }
      await vi.waitFor(() => expect(held.paths).toEqual(["/h0"]), waitLong);
      held.release();
      // The one waiting probes the latest URL, once the one in flight is done.
      await vi.waitFor(() => expect(held.paths).toEqual(["/h0", "/h1"]), waitLong);
      await checker.stop();
      expect(held.paths).toEqual(["/h0", "/h1"]);
      expect(held.maxHeld()).toBe(1);
      expect(registry.get("flood")?.status).toBe("HEALTHY");
    } finally {
      await held.close();
    }
  });

  it("shares its concurrency between rounds and probes at once, and a round skips names being probed", async () => {
    const held = await startHeldService();
    try {
      const deps = { registry, entries: () => store.entries(), http: createHttpClient(), clock };
      checker = new HealthChecker({ ...deps, logger }, { ...hourly, concurrency: 2 });
      checker.start();
      await checker.probeAll();
      const names = ["n1", "n2", "n3", "n4", "n5", "n6"];
      for (const name of names)
        await registry.register(declared(name, `${held.url}/${name}`), call);
      await vi.waitFor(() => expect(held.paths).toHaveLength(2), waitLong);
      // A round now: every new name is being probed or waits to be, so it probes only "svc", in
      // a slot of the same two.
      const round = checker.probeAll();
      held.release();
      await round;
      await vi.waitFor(() => {
        for (const name of names) expect(registry.get(name)?.status).toBe("HEALTHY");
      }, waitLong);
      await checker.stop();
      expect([...held.paths].sort()).toEqual(names.map((name) => `/${name}`));
      expect(held.maxHeld()).toBe(2);
    } finally {
      await held.close();
    }
  });

  it("does not probe at once what it did not register itself, nor a registration that changes no URL", async () => {
    checker = new HealthChecker(
      { registry, entries: () => store.entries(), http: createHttpClient(), clock, logger },
      { ...hourly, concurrency: 4 },
    );
    checker.start();
    await checker.probeAll();
    expect(status()).toBe("HEALTHY");
    service.setMode("unhealthy");
    // The declaration of beforeEach again (a periodic re-registration): nothing new to probe.
    await registry.register({ ...declared("svc", ""), baseUrl: service.url }, call);
    // An entry written to the store by someone else (a peer's merge, another process).
    await store.put(
      {
        ...declared("merged", `${service.url}/health`),
        status: "UNKNOWN",
        registeredAt: 1,
        lastHeartbeat: 1,
        updatedAt: 1,
        leaseExpiresAt: 0,
        origin: "peer",
        hlc: 1n,
      },
      0,
    );
    // Stopping waits for any probe started: none was.
    await checker.stop();
    expect(checker.systemHealth().services.get("svc")).toMatchObject({ error: "" });
    expect(checker.systemHealth().services.get("merged")).toMatchObject({ checkedAt: 0 });
  });
});
