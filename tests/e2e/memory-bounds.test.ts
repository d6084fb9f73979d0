// What a node keeps is bounded in bytes, whatever valid traffic clients send (issue 7, item 1):
// registrations are held to the limits a real registry sets, the registry refuses to grow past
// its bounds, and a flood of the largest registrations a node accepts, watched by streams that
// never read, fits in a small fixed heap.
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { RegistryService } from "../../gen/orchestrator/v1/registry_pb.js";
import { createGrpcJsClient } from "../../src/clients/grpc-js-client.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { type OrchestratorProcess, startOrchestratorProcess } from "../support/process.js";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const chars = (length: number, seed: string) =>
  seed.repeat(Math.ceil(length / seed.length)).slice(0, length);

/** The registration the issue found: about 324 KB, every field within the API's former rules. */
function heaviestFormerlyValid(name: string): Record<string, unknown> {
  const metadata: Record<string, string> = {};
  for (let i = 0; i < 64; i++) metadata[chars(128, `k${i}-`)] = chars(1024, `v${i}-`);
  return {
    name,
    base_url: `http://${name}.test:8080`,
    endpoints: Array.from({ length: 500 }, (_, i) => `/${chars(511, `e${i}-`)}`),
    metadata,
  };
}

/** Just under the 16 KiB a registration may declare: 24 metadata pairs of 128 + 512 characters. */
function largestValid(name: string, round: number): Record<string, unknown> {
  const metadata: Record<string, string> = {};
  for (let i = 0; i < 24; i++) metadata[chars(128, `k${i}-`)] = chars(512, `v${round}-${i}-`);
  return { name, base_url: `http://${name}.test:8080`, metadata, version: `r${round}` };
}

async function register(url: string, body: unknown): Promise<{ status: number; text: string }> {
  const response = await fetch(`${url}/registry/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, text: await response.text() };
}

async function startNode(env: Record<string, string> = {}): Promise<RunningOrchestrator> {
  const node = await startOrchestrator({ env: { HEALTH_CHECK_INTERVAL_MS: "3600000", ...env } });
  cleanups.push(() => node.close());
  return node;
}

describe("what one registration may weigh", () => {
  it("refuses the issue's 324 KB registration, naming the fields over their limits", async () => {
    const node = await startNode();
    const reply = await register(node.url, heaviestFormerlyValid("heavy"));
    expect(reply.status).toBe(400);
    const body = JSON.parse(reply.text) as { code: string; message: string };
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toContain("endpoints: must have at most 100 items");
    expect(body.message).toContain("must be at most 512 characters");
    expect((await fetch(`${node.url}/registry/heavy`)).status).toBe(404);
  });

  it("refuses, over REST and gRPC, a registration within every field rule but over 16 KiB in all", async () => {
    const node = await startNode();
    const metadata: Record<string, string> = {};
    for (let i = 0; i < 32; i++) metadata[`key-${i}`] = chars(512, `v${i}-`);
    const reply = await register(node.url, { name: "wide", base_url: "http://wide:1", metadata });
    expect(reply.status).toBe(400);
    expect(JSON.parse(reply.text).message).toMatch(/declares 16\d{3} bytes; at most 16384 bytes/);

    const client = createGrpcJsClient(RegistryService, node.address);
    cleanups.push(() => client.close());
    const error = await client
      .registerService({ name: "wide", baseUrl: "http://wide:1", metadata })
      .catch((e: unknown) => e);
    expect((error as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
    // Just under the limit passes.
    expect((await register(node.url, largestValid("fits", 0))).status).toBe(200);
  });
});

describe("how much the registry may hold", () => {
  it("refuses a new service past REGISTRY_MAX_ENTRIES with 429 / RESOURCE_EXHAUSTED, and keeps serving", async () => {
    const node = await startNode({ REGISTRY_MAX_ENTRIES: "3" });
    for (const name of ["a", "b", "c"]) {
      expect((await register(node.url, { name, base_url: "http://x:1" })).status).toBe(200);
    }
    const full = await register(node.url, { name: "d", base_url: "http://x:1" });
    expect(full.status).toBe(429);
    expect(JSON.parse(full.text)).toMatchObject({ code: "resource_exhausted" });
    expect(JSON.parse(full.text).message).toContain("REGISTRY_MAX_ENTRIES");
    const client = createGrpcJsClient(RegistryService, node.address);
    cleanups.push(() => client.close());
    const error = await client
      .registerService({ name: "d", baseUrl: "http://x:1" })
      .catch((e: unknown) => e);
    expect((error as grpc.ServiceError).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    // What it holds still renews and changes; a deregistration makes room.
    expect((await fetch(`${node.url}/registry/a/heartbeat`, { method: "POST" })).status).toBe(200);
    expect((await register(node.url, { name: "b", base_url: "http://y:2" })).status).toBe(200);
    expect((await fetch(`${node.url}/registry/c`, { method: "DELETE" })).status).toBe(200);
    expect((await register(node.url, { name: "d", base_url: "http://x:1" })).status).toBe(200);
  });

  it("refuses growth past REGISTRY_MAX_BYTES with 429", async () => {
    const node = await startNode({ REGISTRY_MAX_BYTES: "1048576" });
    let status = 200;
    let accepted = 0;
    for (let i = 0; i < 200 && status === 200; i++) {
      status = (await register(node.url, largestValid(`big-${i}`, i))).status;
      if (status === 200) accepted++;
    }
    expect(status).toBe(429);
    // 1 MiB holds 65 registrations of about 15.9 KB (declared bytes plus 512 each), not more.
    expect(accepted).toBeGreaterThanOrEqual(60);
    expect(accepted).toBeLessThanOrEqual(66);
  });
});

describe("a flood of the largest registrations, watched by streams that never read", () => {
  let node: OrchestratorProcess | undefined;
  afterEach(async () => {
    await node?.stop();
    node = undefined;
  });

  // Before the change log was bounded in bytes, this load kept every version of every entry:
  // 10,000 versions of 16 KB, well over the 128 MB heap the node is given here.
  it("fits in a 128 MB heap: the node stays up and every write is answered", {
    timeout: 240_000,
  }, async () => {
    node = await startOrchestratorProcess({
      env: { HEALTH_CHECK_INTERVAL_MS: "3600000", REGISTRY_CHANGE_LOG_BYTES: "8388608" },
      nodeArgs: ["--max-old-space-size=128"],
    });
    const { url } = node;
    const watchers = new AbortController();
    cleanups.push(() => watchers.abort());
    for (let i = 0; i < 5; i++) {
      // Opened and never read: whatever is queued for them stays.
      void fetch(`${url}/registry/watch`, { signal: watchers.signal }).catch(() => {});
    }
    const total = 10_000;
    const statuses = new Map<number, number>();
    let next = 0;
    const writer = async () => {
      for (let i = next++; i < total; i = next++) {
        const { status } = await register(url, largestValid(`svc-${i % 10}`, i)).catch(() => ({
          status: 0,
        }));
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
      }
    };
    await Promise.all(Array.from({ length: 4 }, writer));
    expect(node.child.exitCode).toBeNull();
    expect(Object.fromEntries(statuses)).toEqual({ 200: total });
    expect((await fetch(`${url}/health`)).status).toBe(200);
    const listed = (await (await fetch(`${url}/registry`)).json()) as { count: number };
    expect(listed.count).toBe(10);
  });
});
