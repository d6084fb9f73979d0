import { randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type Downstream, type DownstreamRequest, startDownstream } from "../support/downstream.js";
import { type OrchestratorProcess, startOrchestratorProcess } from "../support/process.js";
import { type RedisServer, startRedisServer } from "../support/redis-server.js";
import { expectStatus, type Json, rest, until } from "../support/rest.js";

// Workflow runs across real orchestrator processes (`src/main.ts`) sharing one throwaway
// redis-server: a node killed mid-run whose run another node takes over when the lease expires,
// two live nodes running many runs without a step reaching its target twice, and a cancel through
// one node of a run another node executes. The agents (one stand-in: github under /github, jira
// under /jira) and the consistency engine are loopback stand-ins in this test process, which see
// every call of every node with its Idempotency-Key: "called once" is counted from outside.

/** Short, so that a take-over happens within a test; the scans run this often too. */
const leaseMs = 1_000;

let redis: RedisServer;
beforeAll(async () => {
  redis = await startRedisServer();
});
afterAll(async () => {
  await redis?.stop();
});

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface StandIns {
  readonly agents: Downstream;
  readonly engine: Downstream;
  /** What every node of a test is started with: one Redis prefix, the stand-ins' URLs. */
  readonly env: Record<string, string>;
}

async function startStandIns(): Promise<StandIns> {
  const [agents, engine] = await Promise.all([startDownstream(), startDownstream()]);
  cleanups.push(() => Promise.all([agents.close(), engine.close()]));
  return {
    agents,
    engine,
    env: {
      REDIS_URL: redis.url,
      REDIS_KEY_PREFIX: `wf-runs:${randomUUID()}:`,
      WORKFLOW_LEASE_MS: String(leaseMs),
      OUTBOUND_TIMEOUT_MS: "5000",
      // The stand-ins are not registered, and nothing here must open their circuits.
      OUTBOUND_BREAKER_THRESHOLD: "100",
      HEALTH_CHECK_INTERVAL_MS: "3600000",
      GITHUB_AGENT_URL: `${agents.url}/github`,
      JIRA_AGENT_URL: `${agents.url}/jira`,
      CONSISTENCY_ENGINE_URL: engine.url,
      // Info: a node says when it lost a run's lease (the cancel test reads it).
      LOG_LEVEL: "info",
    },
  };
}

async function startNode(env: Record<string, string>): Promise<OrchestratorProcess> {
  const node = await startOrchestratorProcess({ env });
  cleanups.push(() => node.stop("SIGKILL"));
  return node;
}

async function startRun(node: OrchestratorProcess, body: Json): Promise<string> {
  const started = await expectStatus(rest(node.url, "POST", "/workflows/run", body), 200);
  expect(started.status).toBe("started");
  return String(started.run_id);
}

async function getRun(node: OrchestratorProcess, runId: string): Promise<Json> {
  return expectStatus(rest(node.url, "GET", `/workflows/runs/${runId}`), 200, `GET ${runId}`);
}

/** Polls the run through `node` until it is in `status`; returns it. */
function runInStatus(node: OrchestratorProcess, runId: string, status: string): Promise<Json> {
  let last: Json = {};
  return until(
    `run ${runId} is ${status} on ${node.url}`,
    async () => {
      last = await getRun(node, runId);
      return last.status === status ? last : undefined;
    },
    { timeoutMs: 60_000, describe: () => `${JSON.stringify(last)}\n${node.stdout().slice(-3000)}` },
  );
}

function ofRun(requests: readonly DownstreamRequest[], runId: string): DownstreamRequest[] {
  return requests.filter((r) => (r.body as Json | undefined)?.run_id === runId);
}

function keysOf(requests: readonly DownstreamRequest[]): string[] {
  return requests.map((r) => String(r.headers["idempotency-key"]));
}

function stepsByName(run: Json): Map<string, Json> {
  return new Map((run.steps as Json[]).map((step) => [String(step.name), step]));
}

describe("workflow runs across orchestrator processes on one Redis", () => {
  it("goes on with a run on a second node after the first is killed mid-step, calling the step again with its key", {
    timeout: 180_000,
  }, async () => {
    const { agents, engine, env } = await startStandIns();
    agents.answer("POST", "/github/ingest", { kind: "json", body: { documents: 2 } });
    agents.answer("POST", "/jira/ingest", { kind: "json", body: { issues: 1 } });
    engine.answer("POST", "/analyze", { kind: "hang" });

    const first = await startNode(env);
    const runId = await startRun(first, {
      sources: ["github", "jira"],
      scope: { project: "OPS" },
      correlation_id: "wf-takeover-1",
    });
    await until(`run ${runId}'s analyze reached the engine`, async () =>
      ofRun(engine.requestsTo("POST", "/analyze"), runId).length > 0 ? true : undefined,
    );
    const before = await getRun(first, runId);
    expect(before.status).toBe("RUN_STATUS_RUNNING");
    expect(stepsByName(before).get("analyze")?.status).toBe("RUN_STATUS_RUNNING");

    await first.stop("SIGKILL");
    engine.answer("POST", "/analyze", { kind: "json", body: { findings: 0 } });
    const second = await startNode(env);

    const run = await runInStatus(second, runId, "RUN_STATUS_SUCCEEDED");
    expect(run).toMatchObject({
      run_id: runId,
      workflow: "ingestion",
      correlation_id: "wf-takeover-1",
      sources: ["github", "jira"],
      scope: { project: "OPS" },
    });
    const steps = stepsByName(run);
    expect([...steps.values()].map((s) => s.status)).toEqual([
      "RUN_STATUS_SUCCEEDED",
      "RUN_STATUS_SUCCEEDED",
      "RUN_STATUS_SUCCEEDED",
    ]);
    // Completed before the kill: kept, not called again.
    expect(steps.get("ingest:github")).toMatchObject({ output: { documents: 2 }, attempts: 1 });
    expect(steps.get("ingest:jira")).toMatchObject({ output: { issues: 1 }, attempts: 1 });
    expect(steps.get("analyze")).toMatchObject({ output: { findings: 0 }, attempts: 2 });

    // Each key's side effects, seen by the stand-ins: the agents once each, the engine twice
    // with the same key (the call in flight when the first node died, and the second node's).
    expect(keysOf(ofRun(agents.requestsTo("POST", "/github/ingest"), runId))).toEqual([
      `${runId}:ingest:github`,
    ]);
    expect(keysOf(ofRun(agents.requestsTo("POST", "/jira/ingest"), runId))).toEqual([
      `${runId}:ingest:jira`,
    ]);
    const analyzed = ofRun(engine.requestsTo("POST", "/analyze"), runId);
    expect(keysOf(analyzed)).toEqual([`${runId}:analyze`, `${runId}:analyze`]);
    expect(analyzed[1]?.body).toEqual(analyzed[0]?.body);
    expect(analyzed[1]?.headers["x-correlation-id"]).toBe("wf-takeover-1");
    expect(ofRun(agents.requests, runId).filter((r) => r.path.endsWith("/rollback"))).toEqual([]);
    expect(ofRun(engine.requests, runId)).toHaveLength(2);
  });

  it("keeps a failed step's dead letter when the node dies while compensating: the next node finishes the compensation, one entry", {
    timeout: 180_000,
  }, async () => {
    const { agents, engine, env } = await startStandIns();
    agents.answer("POST", "/github/ingest", { kind: "json", body: { documents: 1 } });
    agents.answer("POST", "/github/ingest/rollback", { kind: "hang" });
    engine.answer("POST", "/analyze", { kind: "fail", status: 400 });

    const first = await startNode(env);
    const runId = await startRun(first, { sources: ["github"], correlation_id: "wf-dlq-crash" });
    // The rollback hangs: the step has failed for good and the run is compensating.
    await until(`run ${runId}'s rollback reached the agent`, async () =>
      ofRun(agents.requestsTo("POST", "/github/ingest/rollback"), runId).length > 0
        ? true
        : undefined,
    );
    await first.stop("SIGKILL");
    agents.answer("POST", "/github/ingest/rollback", { kind: "json", body: { undone: true } });
    const second = await startNode(env);

    const run = await runInStatus(second, runId, "RUN_STATUS_COMPENSATED");
    const steps = stepsByName(run);
    expect(steps.get("ingest:github")?.status).toBe("RUN_STATUS_COMPENSATED");
    expect(steps.get("analyze")?.status).toBe("RUN_STATUS_FAILED");
    const listed = await expectStatus(
      rest(second.url, "GET", "/infrastructure/dlq?event_type=workflow.step&page_size=1000"),
      200,
    );
    const entries = (listed.entries as Json[]).filter((e) => (e.payload as Json).run_id === runId);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({
      state: "DLQ_STATE_DEAD",
      correlation_id: "wf-dlq-crash",
      payload: { step: "analyze" },
    });
    expect(steps.get("analyze")?.output).toEqual({ dlq_id: entries[0]?.dlq_id });
    // The step was refused (400): called once, never again by the second node.
    expect(ofRun(engine.requestsTo("POST", "/analyze"), runId)).toHaveLength(1);
  });

  it("runs 40 runs started alternately on two live nodes, each step's key reaching its target once", {
    timeout: 180_000,
  }, async () => {
    const { agents, engine, env } = await startStandIns();
    agents.answer("POST", "/github/ingest", { kind: "json", body: { documents: 1 }, delayMs: 20 });
    agents.answer("POST", "/jira/ingest", { kind: "json", body: { issues: 1 }, delayMs: 20 });
    engine.answer("POST", "/analyze", { kind: "json", body: { findings: 0 }, delayMs: 20 });
    // A longer lease than the other tests: nothing here is taken over, and a node stalled by a
    // loaded machine must not lose a run (another node would then call a step again, allowed
    // behaviour, but not what this test counts).
    const longLease = { ...env, WORKFLOW_LEASE_MS: "10000" };
    const nodes = await Promise.all([startNode(longLease), startNode(longLease)]);

    const runIds: string[] = [];
    for (let i = 0; i < 40; i++) {
      const node = nodes[i % 2] as OrchestratorProcess;
      runIds.push(
        await startRun(node, {
          sources: ["github", "jira"],
          idempotency_key: `many-${i}`,
          correlation_id: `wf-many-${i}`,
        }),
      );
    }
    expect(new Set(runIds).size).toBe(40);

    for (const node of nodes) {
      for (const runId of runIds) await runInStatus(node, runId, "RUN_STATUS_SUCCEEDED");
    }
    // Read alike from both nodes.
    for (const runId of runIds) {
      const [a, b] = await Promise.all(nodes.map((node) => getRun(node, runId)));
      expect(b).toEqual(a);
    }

    // The same key on the other node answers the same run, and runs nothing again.
    const again = await startRun(nodes[1] as OrchestratorProcess, {
      sources: ["github", "jira"],
      idempotency_key: "many-0",
      correlation_id: "wf-many-0",
    });
    expect(again).toBe(runIds[0]);

    // Nothing failed: every step's key reached its target exactly once, from one node or the other.
    const seen = keysOf([...agents.requests, ...engine.requests]);
    const expected = runIds.flatMap((runId) =>
      ["ingest:github", "ingest:jira", "analyze"].map((step) => `${runId}:${step}`),
    );
    expect([...seen].sort()).toEqual([...expected].sort());
  });

  it("cancels through one node a run another node executes: the executor stops, the completed steps are undone once", {
    timeout: 180_000,
  }, async () => {
    const { agents, engine, env } = await startStandIns();
    agents.answer("POST", "/github/ingest", { kind: "json", body: { documents: 1 } });
    agents.answer("POST", "/jira/ingest", { kind: "json", body: { issues: 1 } });
    agents.answer("POST", "/github/ingest/rollback", { kind: "json", body: { undone: true } });
    agents.answer("POST", "/jira/ingest/rollback", { kind: "json", body: { undone: true } });
    engine.answer("POST", "/analyze", { kind: "hang" });
    const [a, b] = (await Promise.all([startNode(env), startNode(env)])) as [
      OrchestratorProcess,
      OrchestratorProcess,
    ];

    const runId = await startRun(a, {
      sources: ["github", "jira"],
      correlation_id: "wf-xcancel-1",
    });
    await until(`run ${runId}'s analyze reached the engine`, async () =>
      ofRun(engine.requestsTo("POST", "/analyze"), runId).length > 0 ? true : undefined,
    );
    const cancelled = await expectStatus(
      rest(b.url, "POST", `/workflows/runs/${runId}/cancel`, {}),
      200,
      "cancel through B",
    );
    expect((cancelled.run as Json).run_id).toBe(runId);

    const run = await runInStatus(b, runId, "RUN_STATUS_COMPENSATED");
    expect(run.error).toBe("cancelled");
    const steps = stepsByName(run);
    expect(steps.get("ingest:github")?.status).toBe("RUN_STATUS_COMPENSATED");
    expect(steps.get("ingest:jira")?.status).toBe("RUN_STATUS_COMPENSATED");
    expect(steps.get("analyze")?.status).toBe("RUN_STATUS_FAILED");
    expect(String(steps.get("analyze")?.error)).toContain("cancelled while running");

    // A stops: it finds the lease another's and goes no further with the run.
    await until(
      `node A gives run ${runId} up`,
      async () =>
        a
          .stdout()
          .split("\n")
          .some((line) => line.includes(runId) && line.includes("lease lost"))
          ? true
          : undefined,
      { describe: () => a.stdout().slice(-3000) },
    );
    // Whatever A had in flight, it wrote nothing after: both nodes read the run as B left it.
    const [fromA, fromB] = await Promise.all([getRun(a, runId), getRun(b, runId)]);
    expect(fromA).toEqual(run);
    expect(fromB).toEqual(run);
    const saga = await expectStatus(rest(a.url, "GET", `/infrastructure/saga/${runId}`), 200);
    expect(saga.status).toBe("SAGA_STATUS_COMPENSATED");

    // The completed steps were undone once each, with their undo keys; analyze was called once
    // (by A) and, cancelled while running, not undone.
    const rollbacks = ofRun(agents.requests, runId).filter((r) => r.path.endsWith("/rollback"));
    expect(keysOf(rollbacks).sort()).toEqual([
      `${runId}:ingest:github:undo`,
      `${runId}:ingest:jira:undo`,
    ]);
    expect(keysOf(ofRun(engine.requests, runId))).toEqual([`${runId}:analyze`]);

    const again = await rest(a.url, "POST", `/workflows/runs/${runId}/cancel`, {});
    expect(again.status, again.text).toBe(400);
    expect(again.text).toContain("is COMPENSATED");
  });
});
