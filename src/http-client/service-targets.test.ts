import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createManualClock } from "../../tests/support/manual-clock.js";
import { createRecordingEventLog } from "../../tests/support/recording-event-log.js";
import { configKeys, loadConfig } from "../config/index.js";
import { DomainError } from "../errors/domain-error.js";
import { createMemoryRegistryStore } from "../registry/memory-registry-store.js";
import type { ServiceStatus } from "../registry/model.js";
import { Registry } from "../registry/registry.js";
import { HybridLogicalClock } from "../replication/hybrid-logical-clock.js";
import {
  configuredTargets,
  createTargetResolver,
  isTargetName,
  type RegisteredTarget,
  type ResolvedTarget,
  registeredTarget,
  type TargetName,
  type TargetResolverDeps,
  targetNames,
  urlOf,
} from "./service-targets.js";

/** A resolver over a fixed registry (name → entry) and configuration. */
function resolverOf(
  registered: Readonly<Record<string, RegisteredTarget>> = {},
  configured: TargetResolverDeps["configured"] = {},
) {
  return createTargetResolver({
    registered: (name) => (Object.hasOwn(registered, name) ? registered[name] : undefined),
    configured,
  });
}

function resolveError(resolve: () => unknown): DomainError {
  try {
    resolve();
  } catch (error) {
    if (error instanceof DomainError) return error;
    throw error;
  }
  throw new Error("expected a DomainError");
}

const healthy = (baseUrl: string): RegisteredTarget => ({ baseUrl, healthy: true });
const notHealthy = (baseUrl: string): RegisteredTarget => ({ baseUrl, healthy: false });

describe("targetNames", () => {
  it("names the nine well-known services", () => {
    expect(Object.keys(targetNames)).toEqual([
      "reporting",
      "doc-store",
      "notification-service",
      "secure-analyzer",
      "github-agent",
      "jira-agent",
      "confluence-agent",
      "swagger-agent",
      "consistency-engine",
    ]);
  });

  it.each(Object.entries(targetNames))("%s: %s is a key of the services section", (_, key) => {
    const configKey = configKeys.find((candidate) => candidate.name === key);
    expect(configKey?.section).toBe("services");
    expect(configKey?.secret).toBe(false);
  });

  it("recognises only its own names, not what objects inherit", () => {
    expect(isTargetName("github-agent")).toBe(true);
    for (const name of ["x", "constructor", "toString", "__proto__", "GITHUB_AGENT_URL"]) {
      expect(isTargetName(name), name).toBe(false);
    }
  });
});

describe("createTargetResolver", () => {
  it("takes a healthy registration first, over configuration, without trailing slashes", () => {
    const resolver = resolverOf(
      { "github-agent": healthy("http://10.0.0.7:5000//") },
      { "github-agent": "http://github-agent:5000" },
    );
    expect(resolver.resolve("github-agent")).toEqual({
      service: "github-agent",
      baseUrl: "http://10.0.0.7:5000",
      source: "registry",
    });
  });

  it("resolves any registered name, well-known or not, while it is healthy", () => {
    const resolver = resolverOf({ indexer: healthy("https://indexer.internal/api/") });
    expect(resolver.resolve("indexer")).toEqual({
      service: "indexer",
      baseUrl: "https://indexer.internal/api",
      source: "registry",
    });
  });

  it("falls back to configuration when the service is not registered", () => {
    const resolver = resolverOf({}, { "jira-agent": "http://jira-agent:5001/" });
    expect(resolver.resolve("jira-agent")).toEqual({
      service: "jira-agent",
      baseUrl: "http://jira-agent:5001",
      source: "configuration",
    });
  });

  it("falls back to configuration when the registration is not healthy", () => {
    const resolver = resolverOf(
      { "doc-store": notHealthy("http://10.0.0.9:5010") },
      { "doc-store": "http://doc-store:5010" },
    );
    expect(resolver.resolve("doc-store")).toMatchObject({
      baseUrl: "http://doc-store:5010",
      source: "configuration",
    });
  });

  it("refuses a well-known name found nowhere, naming the key to set", () => {
    const error = resolveError(() => resolverOf().resolve("github-agent"));
    expect(error.kind).toBe("failed_precondition");
    expect(error.message).toBe(
      'no healthy "github-agent" is registered and GITHUB_AGENT_URL is not set: register the service or set GITHUB_AGENT_URL',
    );
  });

  it("counts an empty configured URL as not set", () => {
    const error = resolveError(() =>
      resolverOf({}, { "swagger-agent": "" }).resolve("swagger-agent"),
    );
    expect(error.kind).toBe("failed_precondition");
    expect(error.message).toContain("SWAGGER_AGENT_URL is not set");
  });

  it("refuses a well-known name registered but not healthy and not configured, without its URL", () => {
    const resolver = resolverOf({ "consistency-engine": notHealthy("http://10.1.2.3:5020") });
    const error = resolveError(() => resolver.resolve("consistency-engine"));
    expect(error.kind).toBe("failed_precondition");
    expect(error.message).toBe(
      '"consistency-engine" is registered but not HEALTHY and CONSISTENCY_ENGINE_URL is not set: wait for it to pass its health checks or set CONSISTENCY_ENGINE_URL',
    );
    expect(error.message).not.toContain("10.1.2.3");
  });

  it("refuses another name that is not registered", () => {
    const error = resolveError(() => resolverOf().resolve("x"));
    expect(error.kind).toBe("failed_precondition");
    expect(error.message).toBe('no healthy "x" is registered: register the service');
  });

  it("refuses another name registered but not healthy", () => {
    const error = resolveError(() => resolverOf({ x: notHealthy("http://x:1") }).resolve("x"));
    expect(error.kind).toBe("failed_precondition");
    expect(error.message).toBe(
      '"x" is registered but not HEALTHY: wait for it to pass its health checks',
    );
  });

  it("never takes configuration for a name that only looks like a target", () => {
    const configured = { reporting: "http://reporting:5030" };
    for (const name of ["constructor", "__proto__", "REPORTING_URL", "Reporting"]) {
      expect(resolveError(() => resolverOf({}, configured).resolve(name)).kind, name).toBe(
        "failed_precondition",
      );
    }
  });

  it("cuts a huge name in its message", () => {
    const error = resolveError(() => resolverOf().resolve("n".repeat(10_000)));
    expect(error.message.length).toBeLessThan(200);
  });

  it("follows the registry from one call to the next", () => {
    let current: RegisteredTarget | undefined;
    const resolver = createTargetResolver({
      registered: () => current,
      configured: { "secure-analyzer": "http://secure-analyzer:5070" },
    });
    expect(resolver.resolve("secure-analyzer").source).toBe("configuration");
    current = healthy("http://10.0.0.5:5070");
    expect(resolver.resolve("secure-analyzer").baseUrl).toBe("http://10.0.0.5:5070");
    current = notHealthy("http://10.0.0.5:5070");
    expect(resolver.resolve("secure-analyzer").source).toBe("configuration");
  });
});

describe("registeredTarget over the real registry", () => {
  const call = { correlationId: "corr-1", traceId: "0af7651916cd43dd8448eb211c80319c" };

  /** A memory registry with a manual clock, and a resolver reading its store as app.ts would. */
  function setUp() {
    const clock = createManualClock();
    const store = createMemoryRegistryStore();
    const registry = new Registry(
      {
        store,
        clock,
        hlc: new HybridLogicalClock(clock),
        events: createRecordingEventLog({ clock, source: "node-a" }),
        nodeId: "node-a",
        logger: pino({ level: "silent" }),
      },
      { leaseGraceMs: 60_000 },
    );
    const resolver = createTargetResolver({
      registered: (name) => registeredTarget(store.get(name)),
      configured: { "github-agent": "http://github-agent:5000" },
    });
    return {
      clock,
      registry,
      resolve: () => resolver.resolve("github-agent"),
      status: () => store.get("github-agent")?.status,
    };
  }

  it("uses an entry only while it is HEALTHY: not UNKNOWN, UNHEALTHY or DOWN", async () => {
    const { clock, registry, resolve, status } = setUp();
    expect(resolve().source).toBe("configuration");
    await registry.register(
      {
        name: "github-agent",
        baseUrl: "http://10.0.0.7:5000/",
        openapiUrl: "",
        healthUrl: "",
        endpoints: [],
        metadata: {},
        tags: [],
        version: "1",
        ttlSeconds: 10,
      },
      call,
    );
    expect(status()).toBe("UNKNOWN");
    expect(resolve().source).toBe("configuration");

    await registry.setHealth("github-agent", "HEALTHY", {});
    expect(resolve()).toEqual({
      service: "github-agent",
      baseUrl: "http://10.0.0.7:5000",
      source: "registry",
    });

    await registry.setHealth("github-agent", "UNHEALTHY", {});
    expect(resolve().source).toBe("configuration");

    await registry.setHealth("github-agent", "HEALTHY", {});
    clock.advance(11_000);
    await registry.sweep();
    expect(status()).toBe("DOWN");
    expect(resolve().source).toBe("configuration");
  });

  it.each<[ServiceStatus, boolean]>([
    ["HEALTHY", true],
    ["UNKNOWN", false],
    ["UNHEALTHY", false],
    ["DOWN", false],
  ])("maps status %s to healthy %s", (entryStatus, expected) => {
    expect(registeredTarget({ baseUrl: "http://a", status: entryStatus })).toEqual({
      baseUrl: "http://a",
      healthy: expected,
    });
    expect(registeredTarget(undefined)).toBeUndefined();
  });
});

describe("configuredTargets", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "orchestrator-targets-"));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const load = (env: Record<string, string>) =>
    loadConfig({ env, cwd: dir, secretsDir: join(dir, "secrets") }).config;

  it("gives each well-known name the URL of its own key", () => {
    const env = Object.fromEntries(
      Object.entries(targetNames).map(([name, key]) => [key, `http://${name}.example:1/`]),
    );
    const expected = Object.fromEntries(
      Object.keys(targetNames).map((name) => [name, `http://${name}.example:1`]),
    );
    expect(configuredTargets(load(env))).toEqual(expected);
  });

  it("leaves out what is not configured: by default only reporting and notification", () => {
    const configured = configuredTargets(load({}));
    expect(configured).toEqual({
      reporting: "http://reporting:5030",
      "notification-service": "http://notification-service:5095",
    });
    const name: TargetName = "doc-store";
    expect(Object.hasOwn(configured, name)).toBe(false);
  });
});

describe("urlOf", () => {
  const target = (baseUrl: string): ResolvedTarget => ({
    service: "reporting",
    baseUrl,
    source: "configuration",
  });

  it("joins the base URL and an absolute path with one slash", () => {
    expect(urlOf(target("http://reporting:5030"), "/reports/generate")).toBe(
      "http://reporting:5030/reports/generate",
    );
    expect(urlOf(target("http://reporting:5030/"), "/reports")).toBe(
      "http://reporting:5030/reports",
    );
    expect(urlOf(target("http://reporting:5030"), "/")).toBe("http://reporting:5030/");
  });

  it("keeps a path the base URL carries, and a query string", () => {
    expect(urlOf(target("https://gateway/reporting"), "/reports?format=json")).toBe(
      "https://gateway/reporting/reports?format=json",
    );
  });

  it.each(["reports", "", "//evil.example/x", "http://evil.example/x"])(
    "refuses the path %j",
    (path) => {
      const error = resolveError(() => urlOf(target("http://reporting:5030"), path));
      expect(error.kind).toBe("invalid");
      expect(error.message).toContain('a call to "reporting"');
      expect(error.message).toContain("is not an absolute path");
      expect(error.message).not.toContain("reporting:5030");
    },
  );
});
