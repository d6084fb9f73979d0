import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { builtInWorkflows, type WorkflowDefinition } from "../../src/workflows/definitions.js";
import { type Downstream, type DownstreamRequest, startDownstream } from "../support/downstream.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { expectStatus, type Json, patience, rest, until } from "../support/rest.js";

// Workflow runs on a real node (memory stores) against real loopback stand-ins: the agents (one
// fastify app, github under /github and jira under /jira, so that one request log orders them
// all), the consistency engine, and a "reporting" service that hangs.

let agents: Downstream;
let engine: Downstream;
let slow: Downstream;
let node: RunningOrchestrator;

/** A workflow whose one step hangs: its timeout is short, and it has two attempts. */
const hangCheck: WorkflowDefinition = {
  name: "hang_check",
  description: "One call that hangs.",
  sources: [],
  steps: [
    {
      name: "wait",
      target: "reporting",
      action: { method: "POST", path: "/hang" },
      group: 0,
      perSource: false,
      timeoutMs: 300,
      maxAttempts: 2,
    },
  ],
};

beforeAll(async () => {
  [agents, engine, slow] = await Promise.all([
    startDownstream(),
    startDownstream(),
    startDownstream(),
  ]);
  node = await startOrchestrator({
    env: {
      GITHUB_AGENT_URL: `${agents.url}/github`,
      JIRA_AGENT_URL: `${agents.url}/jira`,
      CONSISTENCY_ENGINE_URL: engine.url,
      REPORTING_URL: slow.url,
      OUTBOUND_TIMEOUT_MS: "2000",
      OUTBOUND_RETRY_BASE_DELAY_MS: "1",
      // The failures below must not open the stand-ins' circuits for the tests after them.
      OUTBOUND_BREAKER_THRESHOLD: "100",
    },
    deps: { workflows: [...builtInWorkflows, hangCheck] },
  });
});
afterAll(async () => {
  await node?.close();
  await Promise.all([agents?.close(), engine?.close(), slow?.close()]);
});

const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";

async function startRun(body: Json): Promise<Json> {
  const response = await fetch(`${node.url}/workflows/run`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
    },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(patience),
  });
  const text = await response.text();
  expect(response.status, text).toBe(200);
  return JSON.parse(text) as Json;
}

/** Polls the run until it is in `status`; returns it. */
function runInStatus(runId: string, status: string): Promise<Json> {
  let last = "";
  return until(
    `run ${runId} is ${status}`,
    async () => {
      const reply = await rest(node.url, "GET", `/workflows/runs/${runId}`);
      last = reply.text;
      return reply.body.status === status ? reply.body : undefined;
    },
    { describe: () => last },
  );
}

function ofRun(requests: readonly DownstreamRequest[], runId: string): DownstreamRequest[] {
  return requests.filter((r) => (r.body as Json | undefined)?.run_id === runId);
}

function stepsByName(saga: Json): Map<string, Json> {
  return new Map((saga.steps as Json[]).map((step) => [String(step.name), step]));
}

const ms = (time: unknown) => Date.parse(String(time));

describe("POST /workflows/run", () => {
  it("runs an ingestion: the agents in parallel with the run's body and headers, then the engine", async () => {
    agents.answer("POST", "/github/ingest", { kind: "json", body: { documents: 3 }, delayMs: 500 });
    agents.answer("POST", "/jira/ingest", { kind: "json", body: { issues: 2 } });
    engine.answer("POST", "/analyze", { kind: "json", body: [1, 2] });

    const started = await startRun({
      sources: ["github", "jira"],
      scope: { project: "OPS" },
      correlation_id: "wf-full-1",
    });
    const runId = String(started.run_id);
    expect(started).toMatchObject({
      status: "started",
      saga_id: runId,
      correlation_id: "wf-full-1",
      workflow: "ingestion",
    });
    expect(runId).toMatch(/^run-/);
    expect((started.steps as Json[]).map((s) => s.name)).toEqual([
      "ingest:github",
      "ingest:jira",
      "analyze",
    ]);

    const run = await runInStatus(runId, "RUN_STATUS_SUCCEEDED");
    expect(run).toMatchObject({
      run_id: runId,
      workflow: "ingestion",
      correlation_id: "wf-full-1",
      trace_id: traceId,
      sources: ["github", "jira"],
      scope: { project: "OPS" },
    });
    const steps = stepsByName(run);
    expect(steps.get("ingest:github")).toMatchObject({
      status: "RUN_STATUS_SUCCEEDED",
      attempts: 1,
      output: { documents: 3 },
    });
    expect(steps.get("analyze")?.output).toEqual({ value: [1, 2] });
    // In parallel: jira started before github (planned first, answering late) had finished.
    const github = steps.get("ingest:github") as Json;
    const jira = steps.get("ingest:jira") as Json;
    const analyze = steps.get("analyze") as Json;
    expect(ms(jira.started_at)).toBeLessThan(ms(github.finished_at));
    expect(ms(analyze.started_at)).toBeGreaterThanOrEqual(ms(github.finished_at));
    expect(ms(analyze.started_at)).toBeGreaterThanOrEqual(ms(jira.finished_at));

    const [ingest] = ofRun(agents.requestsTo("POST", "/github/ingest"), runId);
    expect(ingest?.body).toEqual({
      run_id: runId,
      step: "ingest:github",
      source: "github",
      scope: { project: "OPS" },
      correlation_id: "wf-full-1",
    });
    expect(ingest?.headers["idempotency-key"]).toBe(`${runId}:ingest:github`);
    expect(ingest?.headers["x-correlation-id"]).toBe("wf-full-1");
    expect(ingest?.headers.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
    const [analyzed] = ofRun(engine.requestsTo("POST", "/analyze"), runId);
    expect(analyzed?.body).toEqual({
      run_id: runId,
      step: "analyze",
      scope: { project: "OPS" },
      correlation_id: "wf-full-1",
    });
    expect(analyzed?.headers["idempotency-key"]).toBe(`${runId}:analyze`);

    const saga = await expectStatus(rest(node.url, "GET", `/infrastructure/saga/${runId}`), 200);
    expect(saga.status).toBe("SAGA_STATUS_COMPLETED");

    const events = await until("the run's events", async () => {
      const body = await expectStatus(
        rest(node.url, "GET", "/infrastructure/events/history?correlation_id=wf-full-1"),
        200,
      );
      const list = body.events as Json[];
      return list.some((e) => e.type === "workflow.run.completed") ? list : undefined;
    });
    const completed = events.find((e) => e.type === "workflow.run.completed");
    expect(completed).toMatchObject({ subject: runId, trace_id: traceId });
    expect(events.map((e) => e.type)).toContain("workflow.run.started");
  });

  it("compensates the agents in reverse order when the engine fails, and dead-letters the step for a retry", async () => {
    agents.answer("POST", "/github/ingest", { kind: "json", body: { documents: 1 }, delayMs: 300 });
    agents.answer("POST", "/jira/ingest", { kind: "json", body: { issues: 1 } });
    agents.answer("POST", "/github/ingest/rollback", { kind: "json", body: { undone: true } });
    agents.answer("POST", "/jira/ingest/rollback", { kind: "json", body: { undone: true } });
    engine.answer("POST", "/analyze", { kind: "fail", status: 500 });

    const started = await startRun({ sources: ["github", "jira"], correlation_id: "wf-fail-1" });
    const runId = String(started.run_id);
    const run = await runInStatus(runId, "RUN_STATUS_COMPENSATED");
    expect(String(run.error)).toContain("step analyze failed");
    expect(stepsByName(run).get("analyze")).toMatchObject({
      status: "RUN_STATUS_FAILED",
      attempts: 3,
    });
    expect(ofRun(engine.requestsTo("POST", "/analyze"), runId)).toHaveLength(3);

    // Undone last completed first, as the saga's completion times order them.
    const saga = await expectStatus(rest(node.url, "GET", `/infrastructure/saga/${runId}`), 200);
    expect(saga.status).toBe("SAGA_STATUS_COMPENSATED");
    const ingests = (saga.steps as Json[]).filter((s) => String(s.name).startsWith("ingest:"));
    expect(ingests.every((s) => s.status === "SAGA_STEP_STATUS_COMPENSATED")).toBe(true);
    const expected = ingests
      .map((step, index) => ({ step, index }))
      .sort((a, b) => ms(b.step.finished_at) - ms(a.step.finished_at) || b.index - a.index)
      .map(({ step }) => `/${String(step.name).split(":")[1]}/ingest/rollback`);
    const rollbacks = ofRun(agents.requests, runId).filter((r) => r.path.endsWith("/rollback"));
    expect(rollbacks.map((r) => r.path)).toEqual(expected);
    expect(rollbacks[0]?.headers["idempotency-key"]).toMatch(
      new RegExp(`^${runId}:ingest:\\w+:undo$`),
    );
    expect(rollbacks[0]?.headers["x-correlation-id"]).toBe("wf-fail-1");

    const entry = await until("the step's dead letter", async () => {
      const body = await expectStatus(
        rest(node.url, "GET", "/infrastructure/dlq?event_type=workflow.step"),
        200,
      );
      return (body.entries as Json[]).find((e) => (e.payload as Json).run_id === runId);
    });
    expect(entry).toMatchObject({
      state: "DLQ_STATE_DEAD",
      service_name: "consistency-engine",
      correlation_id: "wf-fail-1",
      payload: { step: "analyze", target: "consistency-engine", path: "/analyze" },
    });
    expect(String(entry.failure_reason)).toContain("HTTP 500");
    // The failed step names its entry, for an operator reading the run.
    expect(stepsByName(run).get("analyze")?.output).toEqual({ dlq_id: entry.dlq_id });

    engine.answer("POST", "/analyze", { kind: "json", body: { findings: 0 } });
    const retried = await expectStatus(
      rest(node.url, "POST", "/infrastructure/dlq/retry", { dlq_ids: [entry.dlq_id] }),
      200,
    );
    expect(retried.results).toMatchObject([{ dlq_id: entry.dlq_id, outcome: "resolved" }]);
    const calls = ofRun(engine.requestsTo("POST", "/analyze"), runId);
    expect(calls).toHaveLength(4);
    expect(calls[3]?.headers["idempotency-key"]).toBe(`${runId}:analyze`);
    expect(calls[3]?.headers["x-correlation-id"]).toBe("wf-fail-1");
  });

  it("fails a hanging step at its timeout, after its attempts", async () => {
    slow.answer("POST", "/hang", { kind: "hang" });
    const started = await startRun({ workflow: "hang_check", correlation_id: "wf-hang-1" });
    const run = await runInStatus(String(started.run_id), "RUN_STATUS_FAILED");
    const step = stepsByName(run).get("wait");
    expect(step).toMatchObject({ status: "RUN_STATUS_FAILED", attempts: 2 });
    expect(String(step?.error)).toContain("timed out after 300 ms");
    expect(String(run.error)).toContain("step wait failed");
  });

  it("answers the same run for the same idempotency key, and runs it once", async () => {
    agents.answer("POST", "/github/ingest", { kind: "json", body: {} });
    engine.answer("POST", "/analyze", { kind: "json", body: {} });
    const body = { sources: ["github"], idempotency_key: "idem-1", correlation_id: "wf-idem-1" };
    const first = await startRun(body);
    const second = await startRun(body);
    expect(second.run_id).toBe(first.run_id);
    const runId = String(first.run_id);
    await runInStatus(runId, "RUN_STATUS_SUCCEEDED");
    const third = await startRun(body);
    expect(third.run_id).toBe(runId);
    expect(ofRun(agents.requestsTo("POST", "/github/ingest"), runId)).toHaveLength(1);
    expect(ofRun(engine.requestsTo("POST", "/analyze"), runId)).toHaveLength(1);
  });

  it.each([
    [{}, "sources"],
    [{ sources: ["svn"] }, "sources"],
    [{ workflow: "consistency_analysis", sources: ["github"] }, "sources"],
    [{ workflow: "nope", sources: ["github"] }, "workflow"],
    [{ sources: ["github"], correlation_id: "has spaces" }, "correlation_id"],
  ])("refuses %j with 400 naming %s", async (body, field) => {
    const reply = await rest(node.url, "POST", "/workflows/run", body);
    expect(reply.status, reply.text).toBe(400);
    expect(String(reply.body.message)).toContain(field);
  });
});

describe("GET /workflows/runs/{run_id} and /workflows/history", () => {
  it("answers 404 for an unknown run", async () => {
    const reply = await rest(node.url, "GET", "/workflows/runs/run-unknown");
    expect(reply.status, reply.text).toBe(404);
  });

  it("lists runs filtered by correlation id and status, a page at a time", async () => {
    const byCorrelation = await expectStatus(
      rest(node.url, "GET", "/workflows/history?correlation_id=wf-full-1"),
      200,
    );
    expect(byCorrelation.items).toMatchObject([
      { workflow: "ingestion", status: "RUN_STATUS_SUCCEEDED", correlation_id: "wf-full-1" },
    ]);
    const compensated = await expectStatus(
      rest(node.url, "GET", "/workflows/history?status=RUN_STATUS_COMPENSATED"),
      200,
    );
    expect((compensated.items as Json[]).map((r) => r.correlation_id)).toEqual(["wf-fail-1"]);

    const seen: string[] = [];
    let token = "";
    for (let page = 0; page < 20; page++) {
      const body = await expectStatus(
        rest(node.url, "GET", `/workflows/history?page_size=1&page_token=${token}`),
        200,
      );
      seen.push(...(body.items as Json[]).map((r) => String(r.run_id)));
      token = String(body.next_page_token ?? "");
      if (token === "") break;
    }
    expect(token).toBe("");
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen.length).toBeGreaterThanOrEqual(4);

    const bad = await rest(node.url, "GET", "/workflows/history?page_token=nope");
    expect(bad.status, bad.text).toBe(400);
    expect(String(bad.body.message)).toContain("page_token");
  });
});

describe("POST /workflows/runs/{run_id}/cancel", () => {
  it("cancels a run whose agents answered and whose engine step hangs: the agents' steps are undone", async () => {
    agents.answer("POST", "/github/ingest", { kind: "json", body: { documents: 1 } });
    agents.answer("POST", "/github/ingest/rollback", { kind: "json", body: {} });
    engine.answer("POST", "/analyze", { kind: "json", body: {}, delayMs: 60_000 });
    const started = await startRun({ sources: ["github"], correlation_id: "wf-cancel-1" });
    const runId = String(started.run_id);
    await until(`run ${runId}'s analyze is running`, async () => {
      const reply = await rest(node.url, "GET", `/workflows/runs/${runId}`);
      const step = stepsByName(reply.body).get("analyze");
      return step?.status === "RUN_STATUS_RUNNING" ? true : undefined;
    });
    const cancelled = await rest(node.url, "POST", `/workflows/runs/${runId}/cancel`, {});
    expect(cancelled.status, cancelled.text).toBe(200);
    expect((cancelled.body.run as Json).run_id).toBe(runId);
    const run = await runInStatus(runId, "RUN_STATUS_COMPENSATED");
    expect(run.error).toBe("cancelled");
    const steps = stepsByName(run);
    expect(steps.get("ingest:github")?.status).toBe("RUN_STATUS_COMPENSATED");
    expect(steps.get("analyze")?.status).toBe("RUN_STATUS_FAILED");
    const undo = ofRun(agents.requests, runId).filter((r) => r.path === "/github/ingest/rollback");
    expect(undo).toHaveLength(1);
    expect(undo[0]?.headers["idempotency-key"]).toBe(`${runId}:ingest:github:undo`);

    const again = await rest(node.url, "POST", `/workflows/runs/${runId}/cancel`, {});
    expect(again.status, again.text).toBe(400);
    expect(again.text).toContain("is COMPENSATED");
    const unknown = await rest(node.url, "POST", "/workflows/runs/run-nope/cancel", {});
    expect(unknown.status, unknown.text).toBe(404);
  });
});
