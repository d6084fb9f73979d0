import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  InfrastructureService,
  SagaStatus,
  SagaStepStatus,
} from "../../gen/orchestrator/v1/infrastructure_pb.js";
import { createGrpcJsClient, type GrpcJsClient } from "../../src/clients/grpc-js-client.js";
import type { SagaStore } from "../../src/sagas/saga-store.js";
import { createManualClock } from "../support/manual-clock.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { expectStatus, type Json, rest, until } from "../support/rest.js";

// The saga routes as their users meet them: a real node on loopback (memory store), its sagas
// made through the node's own saga store (the workflow engine's way in), read over REST and
// gRPC; unknown ids are 404 / NOT_FOUND, bad input 400 / INVALID_ARGUMENT naming the field.

const clock = createManualClock(Date.UTC(2026, 11, 1, 9, 0, 0));
let node: RunningOrchestrator;
let infrastructure: GrpcJsClient<typeof InfrastructureService>;
let sagas: SagaStore;

beforeAll(async () => {
  node = await startOrchestrator({ deps: { clock } });
  infrastructure = createGrpcJsClient(InfrastructureService, node.address);
  sagas = node.app.sagas;
  await seed();
});
afterAll(async () => {
  infrastructure?.close();
  await node?.close();
});

// As proto3 JSON writes a Timestamp: no fraction when the milliseconds are 0.
const iso = (ms: number) => new Date(ms).toISOString().replace(".000Z", "Z");
const t0 = clock.now();

/** One saga in each of COMPLETED, COMPENSATED, FAILED, RUNNING and PENDING. */
async function seed(): Promise<void> {
  const steps = [
    { name: "github", action: "POST github-agent /ingest", compensation: "DELETE github" },
    { name: "jira", action: "POST jira-agent /ingest", compensation: "DELETE jira" },
    { name: "index", action: "POST indexer /build", compensation: "DELETE index", group: 1 },
  ];
  for (const sagaId of ["done", "undone", "failed", "running", "pending"]) {
    await sagas.create({ sagaId, name: "ingestion", runId: `run-${sagaId}`, steps });
  }
  for (const sagaId of ["done", "undone", "failed", "running"]) {
    await sagas.transition(sagaId, { expectedVersion: 1, to: "RUNNING" });
  }
  // done: every step completes, 4 s after creation.
  for (const index of [0, 1, 2]) {
    await sagas.transitionStep("done", index, { expectedVersion: 1, to: "RUNNING" });
    clock.advance(1_000);
    await sagas.transitionStep("done", index, {
      expectedVersion: 2,
      to: "COMPLETED",
      output: { documents: 10 + index, source: steps[index]?.name ?? "" },
    });
  }
  clock.advance(1_000);
  await sagas.transition("done", { expectedVersion: 8, to: "COMPLETED" });
  // undone: github completes, jira fails, github is compensated; 2 s.
  await sagas.transitionStep("undone", 0, { expectedVersion: 1, to: "RUNNING" });
  await sagas.transitionStep("undone", 1, { expectedVersion: 1, to: "RUNNING" });
  await sagas.transitionStep("undone", 0, { expectedVersion: 2, to: "COMPLETED" });
  await sagas.transitionStep("undone", 1, { expectedVersion: 2, to: "FAILED", error: "502" });
  await sagas.transition("undone", { expectedVersion: 6, to: "COMPENSATING", error: "jira: 502" });
  await sagas.transitionStep("undone", 0, { expectedVersion: 3, to: "COMPENSATING" });
  await sagas.transitionStep("undone", 0, { expectedVersion: 4, to: "COMPENSATED" });
  await sagas.transition("undone", { expectedVersion: 9, to: "COMPENSATED" });
  // failed: the first step fails with nothing to undo; 0 s... then 1 s for the running one.
  await sagas.transitionStep("failed", 0, { expectedVersion: 1, to: "RUNNING" });
  await sagas.transitionStep("failed", 0, { expectedVersion: 2, to: "FAILED", error: "timeout" });
  await sagas.transition("failed", { expectedVersion: 4, to: "FAILED", error: "github: timeout" });
  await sagas.transitionStep("running", 0, { expectedVersion: 1, to: "RUNNING" });
}

describe("GET /infrastructure/saga/{saga_id}", () => {
  it("answers the saga with its steps, in the proto's JSON", async () => {
    const body = await expectStatus(rest(node.url, "GET", "/infrastructure/saga/done"), 200);
    expect(body).toEqual({
      saga_id: "done",
      name: "ingestion",
      run_id: "run-done",
      correlation_id: "",
      status: "SAGA_STATUS_COMPLETED",
      created_at: iso(t0),
      updated_at: iso(t0 + 4_000),
      finished_at: iso(t0 + 4_000),
      error: "",
      version: "9",
      steps: ["github", "jira", "index"].map((name, index) => ({
        name,
        action: expect.stringContaining("/"),
        compensation: `DELETE ${name}`,
        status: "SAGA_STEP_STATUS_COMPLETED",
        attempts: 1,
        error: "",
        started_at: iso(t0 + index * 1_000),
        finished_at: iso(t0 + (index + 1) * 1_000),
        output: { documents: 10 + index, source: name },
        group: index === 2 ? 1 : 0,
      })),
    });
  });

  it("answers the same saga over gRPC", async () => {
    const { saga } = await infrastructure.getSaga({ sagaId: "undone" });
    expect(saga?.status).toBe(SagaStatus.COMPENSATED);
    expect(saga?.version).toBe(10n);
    expect(saga?.error).toBe("jira: 502");
    expect(saga?.steps.map((s) => [s.name, s.status, s.error])).toEqual([
      ["github", SagaStepStatus.COMPENSATED, ""],
      ["jira", SagaStepStatus.FAILED, "502"],
      ["index", SagaStepStatus.SKIPPED, ""],
    ]);
    expect(saga?.steps[0]?.compensatedAt).toBeDefined();
    expect(saga?.steps[2]?.startedAt).toBeUndefined();
    const rest404 = await rest(node.url, "GET", "/infrastructure/saga/undone");
    expect(rest404.body.version).toBe("10");
  });

  it("answers 404 / NOT_FOUND for an unknown saga id", async () => {
    const reply = await rest(node.url, "GET", "/infrastructure/saga/nope");
    expect(reply.status).toBe(404);
    expect(reply.body).toMatchObject({ code: "not_found", message: "saga nope not found" });
    // An id no saga can have (a slash) is merely unknown too.
    expect((await rest(node.url, "GET", "/infrastructure/saga/a%2Fb")).status).toBe(404);
    const failure = await grpcFailure(infrastructure.getSaga({ sagaId: "nope" }));
    expect([grpc.status[failure.code], failure.details]).toEqual([
      "NOT_FOUND",
      "saga nope not found",
    ]);
  });

  it("answers 400 naming saga_id for an id over 128 characters, on REST and gRPC", async () => {
    const long = "x".repeat(129);
    const reply = await rest(node.url, "GET", `/infrastructure/saga/${long}`);
    expect(reply.status).toBe(400);
    expect(reply.body.code).toBe("invalid_argument");
    expect(String(reply.body.message)).toContain("saga_id");
    const failure = await grpcFailure(infrastructure.getSaga({ sagaId: long }));
    expect(grpc.status[failure.code]).toBe("INVALID_ARGUMENT");
    expect(failure.details).toContain("saga_id");
  });

  it("answers INVALID_ARGUMENT naming saga_id for an empty id, and for the reserved id stats", async () => {
    const empty = await grpcFailure(infrastructure.getSaga({ sagaId: "" }));
    expect(grpc.status[empty.code]).toBe("INVALID_ARGUMENT");
    expect(empty.details).toContain("saga_id");
    const stats = await grpcFailure(infrastructure.getSaga({ sagaId: "stats" }));
    expect(grpc.status[stats.code]).toBe("INVALID_ARGUMENT");
    expect(stats.details).toContain("saga_id");
    expect(stats.details).toContain("GET /infrastructure/saga/stats");
    // And no saga can be made with that id, so none is ever out of reach of REST.
    await expect(
      sagas.create({ sagaId: "stats", name: "n", steps: [{ name: "a" }] }),
    ).rejects.toThrow("GET /infrastructure/saga/stats");
  });

  it.each([
    {
      what: "a query parameter it does not take",
      path: "/infrastructure/saga/done?bogus=1",
      status: 400,
      mentions: "bogus",
    },
    {
      what: "a bad percent-encoding",
      path: "/infrastructure/saga/%ZZ",
      status: 400,
      mentions: "percent",
    },
    {
      what: "a path segment over 512 characters",
      path: `/infrastructure/saga/${"y".repeat(513)}`,
      status: 414,
      mentions: "",
    },
  ])("answers $what with $status, never 500", async ({ path, status, mentions }) => {
    const reply = await rest(node.url, "GET", path);
    expect(reply.status, reply.text).toBe(status);
    expect(String(reply.body.message).toLowerCase()).toContain(mentions);
  });
});

describe("GET /infrastructure/saga/stats", () => {
  it("counts the stored sagas and derives the rates, on REST and gRPC alike", async () => {
    const body = await expectStatus(rest(node.url, "GET", "/infrastructure/saga/stats"), 200);
    const expected: Json = {
      total_sagas: 5,
      running: 2,
      completed_sagas: 1,
      failed_sagas: 1,
      compensated_sagas: 1,
      aborted_sagas: 0,
      success_rate: 1 / 3,
      // done took 4 s; undone and failed were finished at t0 + 4 s, created at t0.
      avg_duration_ms: (4_000 + 4_000 + 4_000) / 3,
      by_status: {
        PENDING: 1,
        RUNNING: 1,
        COMPLETED: 1,
        FAILED: 1,
        COMPENSATING: 0,
        COMPENSATED: 1,
        ABORTED: 0,
      },
    };
    expect(body).toEqual(expected);
    const reply = await infrastructure.getSagaStats({});
    expect({
      total: reply.totalSagas,
      running: reply.running,
      successRate: reply.successRate,
      avg: reply.avgDurationMs,
      byStatus: reply.byStatus,
    }).toEqual({
      total: 5,
      running: 2,
      successRate: 1 / 3,
      avg: 4_000,
      byStatus: expected.by_status,
    });
  });

  it("answers 400 naming a query parameter it does not take", async () => {
    const reply = await rest(node.url, "GET", "/infrastructure/saga/stats?saga_id=x");
    expect(reply.status).toBe(400);
    expect(String(reply.body.message)).toContain("saga_id");
  });
});

describe("retention", () => {
  it("forgets a finished saga once SAGA_RETENTION_MS has passed, and keeps running ones", async () => {
    const short = await startOrchestrator({ env: { SAGA_RETENTION_MS: "200" } });
    try {
      const store = short.app.sagas;
      for (const sagaId of ["gone", "kept"]) {
        await store.create({ sagaId, name: "n", steps: [{ name: "a" }] });
      }
      await store.transition("gone", { expectedVersion: 1, to: "ABORTED" });
      await store.transition("kept", { expectedVersion: 1, to: "RUNNING" });
      await until("the finished saga is forgotten", async () => {
        const reply = await rest(short.url, "GET", "/infrastructure/saga/gone");
        return reply.status === 404 ? true : undefined;
      });
      await expectStatus(rest(short.url, "GET", "/infrastructure/saga/kept"), 200);
      const stats = await expectStatus(rest(short.url, "GET", "/infrastructure/saga/stats"), 200);
      expect([stats.total_sagas, stats.aborted_sagas]).toEqual([1, 0]);
    } finally {
      await short.close();
    }
  });
});

async function grpcFailure(call: Promise<unknown>): Promise<grpc.ServiceError> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(Error);
  return error as grpc.ServiceError;
}
