import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { builtInWorkflows, type WorkflowDefinition } from "../../src/workflows/definitions.js";
import { type Downstream, type DownstreamAnswer, startDownstream } from "../support/downstream.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { byProfile, recordReliability } from "../support/reliability-report.js";
import { expectStatus, type Json, register, registration, rest, until } from "../support/rest.js";

// Fault: downstreams that hang, are slow, or answer garbage (invalid JSON, an HTML page where
// JSON was expected, a body over the client's 5 MiB cap, a reset connection), met as a workflow
// step's target and as a health-probe target, all at once on one node. Already proven elsewhere,
// one at a time: a hanging step fails at its timeout (tests/e2e/workflow-runs.test.ts), the jobs
// map a hanging or garbage-answering downstream to 504 / 503 (tests/e2e/jobs.test.ts). New here:
// every kind together, the node answering other RPCs while they are in flight, each failed step
// reaching the DLQ with its mapped reason, the probes marking each kind as the product says, and
// a job meeting each kind (an HTML page, an oversized body and a reset included) answered with
// the mapped 503 / 504, never a 500.

const healthy = { status: "healthy", error: "" };
const unhealthy = (error: string) => ({ status: "unhealthy", error });
const unreadable: [number, string, string] = [
  503,
  "unavailable",
  "reporting answered an unreadable report",
];

/**
 * Each fault: the answer the stand-in gives, the error a step meeting it must end with ("" = it
 * succeeds), and the health a probe meeting it must give.
 */
const stepFaults: {
  name: string;
  answer: DownstreamAnswer;
  error: string;
  probe: { status: string; error: string };
  /** What POST /report/request answers when reporting meets it: status, code, message. */
  job: [number, string, string] | [200];
}[] = [
  {
    name: "hang",
    answer: { kind: "hang" },
    error: "timed out after 2000 ms",
    probe: unhealthy("timed out after 2000 ms"),
    job: [504, "deadline_exceeded", "reporting: timed out after 2000 ms"],
  },
  {
    name: "slow",
    answer: { kind: "json", body: { slow: true }, delayMs: 300 },
    error: "",
    probe: healthy,
    job: [200],
  },
  {
    name: "garbage",
    answer: { kind: "garbage" },
    error: "the answer is not JSON",
    probe: healthy,
    job: unreadable,
  },
  {
    name: "html",
    answer: { kind: "raw", contentType: "text/html", body: "<html><body>502 Bad Gateway</body>" },
    error: "the answer is not JSON",
    probe: healthy,
    job: unreadable,
  },
  {
    name: "huge",
    answer: {
      kind: "raw",
      contentType: "application/json",
      body: Buffer.alloc(6 * 1024 * 1024, 0x20),
    },
    error: "response larger than 5242880 bytes",
    probe: unhealthy("response larger than 65536 bytes"),
    job: [503, "unavailable", "reporting: response larger than 5242880 bytes"],
  },
  {
    name: "reset",
    answer: { kind: "reset" },
    error: "connection closed unexpectedly",
    probe: unhealthy("connection closed unexpectedly"),
    job: [503, "unavailable", "reporting: connection closed unexpectedly"],
  },
];

/** One workflow per fault: one step calling POST reporting /<fault>, 2 s per attempt, 2 attempts. */
const workflows: WorkflowDefinition[] = stepFaults.map(({ name }) => ({
  name: `fault_${name}`,
  description: `One call to a downstream that answers ${name}.`,
  sources: [],
  steps: [
    {
      name: "call",
      target: "reporting",
      action: { method: "POST", path: `/${name}` },
      group: 0,
      perSource: false,
      timeoutMs: 2_000,
      maxAttempts: 2,
    },
  ],
}));

let downstream: Downstream;
let node: RunningOrchestrator;

beforeAll(async () => {
  downstream = await startDownstream();
  node = await startOrchestrator({
    env: {
      REPORTING_URL: downstream.url,
      OUTBOUND_RETRY_BASE_DELAY_MS: "1",
      // A job's calls (POST /report/request) time out per attempt at this.
      OUTBOUND_TIMEOUT_MS: "2000",
      // Each fault fails on its own route: no circuit may open for the others.
      OUTBOUND_BREAKER_THRESHOLD: "1000",
      HEALTH_CHECK_INTERVAL_MS: "300",
      HEALTH_CHECK_TIMEOUT_MS: "2000",
      HEALTH_CHECK_FAILURE_THRESHOLD: "2",
      LOG_LEVEL: "warn",
    },
    deps: { workflows: [...builtInWorkflows, ...workflows] },
  });
});
afterAll(async () => {
  await node?.close();
  await downstream?.close();
});

describe("faults: downstreams that hang, are slow, or answer garbage", () => {
  it("fails each step with its mapped error into the DLQ, marks probes, and keeps answering", {
    timeout: byProfile(90_000, 240_000),
  }, async () => {
    for (const { name, answer } of stepFaults) downstream.answer("POST", `/${name}`, answer);
    const rounds = byProfile(1, 5);
    let requests = 0;
    const errors: string[] = [];
    const runs: { fault: (typeof stepFaults)[number]; runId: string }[] = [];
    for (let round = 0; round < rounds; round++) {
      for (const fault of stepFaults) {
        const started = await expectStatus(
          rest(node.url, "POST", "/workflows/run", { workflow: `fault_${fault.name}` }),
          200,
        );
        requests++;
        runs.push({ fault, runId: String(started.run_id) });
      }
    }
    // The probes meet the same faults, on GET.
    for (const { name, answer } of stepFaults) {
      downstream.answer("GET", `/health/${name}`, answer);
      await register(
        node.url,
        registration(`probe-${name}`, { health_url: `${downstream.url}/health/${name}` }),
      );
      requests++;
    }

    // While the steps and probes are in flight, the node answers everything else.
    const calls = [
      ["GET", "/health"],
      ["GET", "/registry"],
      ["GET", "/workflows"],
      ["GET", "/peers"],
    ];
    const pending = () =>
      Promise.all(
        runs.map(async ({ runId }) => {
          const run = await expectStatus(rest(node.url, "GET", `/workflows/runs/${runId}`), 200);
          requests++;
          return String(run.status);
        }),
      );
    let statuses = await pending();
    while (statuses.includes("RUN_STATUS_RUNNING") || statuses.includes("RUN_STATUS_PENDING")) {
      for (const [method, path] of calls) {
        const reply = await rest(node.url, method ?? "GET", path ?? "/");
        requests++;
        if (reply.status !== 200) errors.push(`${method} ${path}: ${reply.status} ${reply.text}`);
      }
      const beat = await rest(node.url, "POST", "/registry/register", registration("bystander"));
      requests++;
      if (beat.status !== 200) errors.push(`register: ${beat.status} ${beat.text}`);
      statuses = await pending();
    }
    expect(errors).toEqual([]);

    // Each step ended as its fault says: the slow one in time, every other after its two
    // attempts with the client's mapped reason, and a dead letter naming that reason.
    const dlq = await expectStatus(
      rest(node.url, "GET", "/infrastructure/dlq?event_type=workflow.step&page_size=100"),
      200,
    );
    requests += 2;
    const letters = new Map(
      (dlq.entries as Json[]).map((entry) => [String((entry.payload as Json).run_id), entry]),
    );
    for (const { fault, runId } of runs) {
      const run = await expectStatus(rest(node.url, "GET", `/workflows/runs/${runId}`), 200);
      requests++;
      const step = (run.steps as Json[])[0] ?? {};
      if (fault.error === "") {
        expect(run.status, fault.name).toBe("RUN_STATUS_SUCCEEDED");
        expect(step.attempts, fault.name).toBe(1);
        expect(letters.has(runId), fault.name).toBe(false);
        continue;
      }
      expect(run.status, fault.name).toBe("RUN_STATUS_FAILED");
      expect(step, fault.name).toMatchObject({ status: "RUN_STATUS_FAILED", attempts: 2 });
      expect(String(step.error)).toBe(`POST reporting /${fault.name}: ${fault.error}`);
      expect(letters.get(runId), fault.name).toMatchObject({
        state: "DLQ_STATE_DEAD",
        service_name: "reporting",
        failure_reason: step.error,
        payload: { step: "call", target: "reporting", path: `/${fault.name}` },
      });
    }

    // The probes judge by status only: a 200 with garbage is healthy; a probe that hangs, is
    // reset, or answers more than 64 KiB fails, with the same mapped reasons.
    const expected = new Map(stepFaults.map(({ name, probe }) => [`probe-${name}`, probe]));
    let last: Json = {};
    await until(
      "every probe settled as its fault says",
      async () => {
        const system = await expectStatus(rest(node.url, "GET", "/health/system"), 200);
        requests++;
        last = system.services as Json;
        const seen = [...expected.keys()].map((name) => {
          const health = last[name] as Json | undefined;
          return { status: health?.status, error: health?.error };
        });
        return JSON.stringify(seen) === JSON.stringify([...expected.values()]) ? true : undefined;
      },
      { describe: () => JSON.stringify(last) },
    );

    // The same faults met by a job (POST /report/request proxies to reporting): the answers.
    for (const { name, answer, job } of stepFaults) {
      downstream.answer("POST", "/reports/generate", answer);
      const reply = await rest(node.url, "POST", "/report/request", { kind: "generate" });
      requests++;
      const seen =
        reply.status === 200 ? [200] : [reply.status, reply.body.code, reply.body.message];
      expect(seen, name).toEqual(job);
    }

    recordReliability({
      suite: "faults",
      name: "downstream hang/slow/garbage as step and probe target",
      faults: stepFaults.length * (rounds + 1),
      requests,
      errors: errors.length,
      note: "steps failed with mapped reasons into the DLQ; probes marked; other RPCs answered",
    });
  });
});
