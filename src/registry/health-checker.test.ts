import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
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

const logger = pino({ level: "silent" });
const call = { correlationId: "c", traceId: "t" };
let store: RegistryStore;
let events: RecordingEventLog;
let registry: Registry;
let checker: HealthChecker;
let service: Awaited<ReturnType<typeof startService>>;

beforeEach(async () => {
  const clock = createManualClock();
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
});
