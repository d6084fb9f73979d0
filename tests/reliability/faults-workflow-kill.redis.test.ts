import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { type DownstreamRequest, startDownstream } from "../support/downstream.js";
import { type OrchestratorProcess, startOrchestratorProcess } from "../support/process.js";
import { type RedisServer, startRedisServer } from "../support/redis-server.js";
import { byProfile, recordReliability } from "../support/reliability-report.js";
import { expectStatus, type Json, rest, until, untilStatus } from "../support/rest.js";

// Fault: the orchestrator process SIGKILLed, again and again, while many workflow runs are in
// flight on Redis, and restarted with the same NODE_ID each time. tests/e2e/workflow-runs.redis
// proves a second node taking over one run; bench/workflows-resume.ts one kill of node A with
// node B taking over. New here: the same node coming back (its own leases, its own resume scan),
// several kills landing at random points of many runs (a start being written, a step in flight,
// a step's result being stored), and every run finishing with each step applied exactly once.
// "Applied" is counted as the stand-ins would apply a side effect: once per Idempotency-Key, so
// a step called again with its key after a kill applies nothing new; a step reached under two
// keys, or a run's step never reached, fails the test.

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The steps of the built-in ingestion workflow with sources github and jira. */
const stepNames = ["ingest:github", "ingest:jira", "analyze"];

function runOf(request: DownstreamRequest): string {
  return String((request.body as Json | undefined)?.run_id ?? "");
}

describe("faults: the orchestrator SIGKILLed during workflow runs and restarted", () => {
  it("resumes every run to success, each step applied once at the downstream", {
    timeout: byProfile(120_000, 600_000),
  }, async () => {
    const redis: RedisServer = await startRedisServer();
    cleanups.push(() => redis.stop());
    const [agents, engine] = await Promise.all([startDownstream(), startDownstream()]);
    cleanups.push(() => Promise.all([agents.close(), engine.close()]));
    // Slow enough that a kill finds steps in flight, quick enough that runs finish.
    agents.answer("POST", "/github/ingest", { kind: "json", body: { documents: 1 }, delayMs: 200 });
    agents.answer("POST", "/jira/ingest", { kind: "json", body: { issues: 1 }, delayMs: 400 });
    engine.answer("POST", "/analyze", { kind: "json", body: { findings: 0 }, delayMs: 300 });
    const env = {
      REDIS_URL: redis.url,
      REDIS_KEY_PREFIX: `faults-wf:${randomUUID()}:`,
      NODE_ID: "faults-wf",
      // A short lease: the restarted node takes its own runs back within a second or two.
      WORKFLOW_LEASE_MS: "1000",
      OUTBOUND_TIMEOUT_MS: "5000",
      OUTBOUND_BREAKER_THRESHOLD: "100",
      HEALTH_CHECK_INTERVAL_MS: "3600000",
      GITHUB_AGENT_URL: `${agents.url}/github`,
      JIRA_AGENT_URL: `${agents.url}/jira`,
      CONSISTENCY_ENGINE_URL: engine.url,
      LOG_LEVEL: "warn",
    };
    /** Starts the node and waits until it is ready (its stores reached). */
    const start = async () => {
      const started = await startOrchestratorProcess({ env });
      await untilStatus(started.url, "/ready", 200);
      return started;
    };
    let node: OrchestratorProcess = await start();
    cleanups.push(() => node.stop("SIGKILL"));

    const kills = byProfile(2, 5);
    const runsPerRound = byProfile(8, 40);
    const runIds: string[] = [];
    let requests = 0;
    for (let kill = 0; kill < kills; kill++) {
      // Starts acknowledged before the kill must finish; starts cut by it were never promised.
      for (let i = 0; i < runsPerRound; i++) {
        const reply = await rest(node.url, "POST", "/workflows/run", {
          sources: ["github", "jira"],
          correlation_id: `faults-wf-${kill}-${i}`,
        });
        requests++;
        expect(reply.status, reply.text).toBe(200);
        runIds.push(String(reply.body.run_id));
      }
      // Kill once some of this round's runs have reached their last step, so that the kill lands
      // with runs at every stage.
      const round = new Set(runIds.slice(-runsPerRound));
      await until("a run of the round at its analyze step", async () =>
        engine.requests.some((r) => round.has(runOf(r))) ? true : undefined,
      );
      await node.stop("SIGKILL");
      node = await start();
    }

    const statuses = new Map<string, string>();
    await until(
      `all ${runIds.length} runs succeeded`,
      async () => {
        for (const runId of runIds) {
          if (statuses.get(runId) === "RUN_STATUS_SUCCEEDED") continue;
          const run = await expectStatus(rest(node.url, "GET", `/workflows/runs/${runId}`), 200);
          requests++;
          statuses.set(runId, String(run.status));
        }
        return [...statuses.values()].every((s) => s === "RUN_STATUS_SUCCEEDED") &&
          statuses.size === runIds.length
          ? true
          : undefined;
      },
      {
        timeoutMs: byProfile(90_000, 300_000),
        describe: () => JSON.stringify(Object.fromEntries(statuses)),
      },
    );

    // Each step of each run reached its target under one key, its own: applied once.
    const calls = [...agents.requests, ...engine.requests];
    const keysByStep = new Map<string, Set<string>>();
    for (const call of calls) {
      const step = `${runOf(call)}:${call.path}`;
      const keys = keysByStep.get(step) ?? new Set<string>();
      keys.add(String(call.headers["idempotency-key"]));
      keysByStep.set(step, keys);
    }
    const problems: string[] = [];
    for (const runId of runIds) {
      for (const step of stepNames) {
        const path = step === "analyze" ? "/analyze" : `/${step.split(":")[1]}/ingest`;
        const keys = [...(keysByStep.get(`${runId}:${path}`) ?? [])];
        if (keys.length !== 1 || keys[0] !== `${runId}:${step}`) {
          problems.push(`${runId} ${step}: keys ${JSON.stringify(keys)}`);
        }
      }
    }
    expect(problems).toEqual([]);
    // No compensation, no call of a run that was not started here.
    const known = new Set(runIds);
    expect(calls.filter((c) => c.path.endsWith("/rollback") || !known.has(runOf(c)))).toEqual([]);
    const applied = runIds.length * stepNames.length;
    const repeated = calls.length - applied;

    recordReliability({
      suite: "faults",
      name: "orchestrator SIGKILL + restart during workflow runs",
      faults: kills,
      requests,
      errors: problems.length,
      note: `${runIds.length} runs all SUCCEEDED; ${applied} steps applied once; ${repeated} repeat calls with the same key`,
    });
  });
});
