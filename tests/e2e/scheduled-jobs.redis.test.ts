import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ScheduledJob } from "../../src/schedules/scheduler.js";
import { startDownstream } from "../support/downstream.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { type RedisServer, startRedisServer } from "../support/redis-server.js";
import { expectStatus, type Json, rest, until } from "../support/rest.js";

// Scheduled jobs on real nodes: two orchestrators on one (throwaway) redis-server, both with the
// same every-second schedule of a job of the test's own; every firing runs on one node only, and
// /info shows what each node ran and skipped. A node alone (memory) runs every firing itself.

let server: RedisServer;
const nodes: RunningOrchestrator[] = [];
beforeAll(async () => {
  server = await startRedisServer();
});
afterAll(async () => {
  for (const node of nodes) await node.close();
  await server?.stop();
});

/** A job that records which node ran which firing. */
function recorder(node: string, runs: { node: string; firingMs: number }[]): ScheduledJob {
  return async ({ firingMs }) => {
    runs.push({ node, firingMs });
  };
}

async function scheduleOf(node: RunningOrchestrator): Promise<Json> {
  const info = await expectStatus(rest(node.url, "GET", "/info"), 200);
  return (info.scheduled_jobs as Json[])[0] as Json;
}

describe("scheduled jobs", () => {
  it("runs each firing once across two orchestrators sharing a Redis", async () => {
    const runs: { node: string; firingMs: number }[] = [];
    for (const name of ["a", "b"]) {
      nodes.push(
        await startOrchestrator({
          env: {
            REDIS_URL: server.url,
            REDIS_KEY_PREFIX: "schedules-test:",
            NODE_ID: `node-${name}`,
            SCHEDULED_JOBS: "tick=* * * * * *",
            HEALTH_CHECK_INTERVAL_MS: "3600000",
          },
          deps: { scheduledJobs: new Map([["tick", recorder(name, runs)]]) },
        }),
      );
    }
    const [a, b] = nodes as [RunningOrchestrator, RunningOrchestrator];
    // Both nodes fire every second; wait until both have seen at least four firings.
    await until("four firings seen by both nodes", async () => {
      const [sa, sb] = [await scheduleOf(a), await scheduleOf(b)];
      const seen = (s: Json) => Number(s.runs) + Number(s.skipped);
      return seen(sa) >= 4 && seen(sb) >= 4 ? true : undefined;
    });
    const firings = runs.map((r) => r.firingMs);
    expect(new Set(firings).size).toBe(firings.length);
    expect(firings.every((ms) => ms % 1000 === 0)).toBe(true);
    const [sa, sb] = [await scheduleOf(a), await scheduleOf(b)];
    expect(Number(sa.runs) + Number(sb.runs)).toBeGreaterThanOrEqual(runs.length);
    expect(sa).toMatchObject({ job: "tick", cron: "* * * * * *" });
    expect(String(sa.next_run_at)).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it("runs every firing on a node alone, and shows its outcome in /info", async () => {
    const runs: { node: string; firingMs: number }[] = [];
    let failNext = true;
    const alone = await startOrchestrator({
      env: { SCHEDULED_JOBS: "tick=* * * * * *; flaky=* * * * * *" },
      deps: {
        scheduledJobs: new Map<string, ScheduledJob>([
          ["tick", recorder("alone", runs)],
          [
            "flaky",
            async () => {
              if (failNext) {
                failNext = false;
                throw new Error("downstream said no");
              }
            },
          ],
        ]),
      },
    });
    nodes.push(alone);
    await until("three firings", async () => (runs.length >= 3 ? true : undefined));
    const info = await expectStatus(rest(alone.url, "GET", "/info"), 200);
    expect(info.capabilities).toContain("scheduled-jobs");
    const [tick, flaky] = info.scheduled_jobs as Json[];
    expect(tick).toMatchObject({
      job: "tick",
      skipped: 0,
      last_outcome: expect.stringMatching(/^(ok|running)$/),
    });
    expect(flaky?.job).toBe("flaky");
    expect(Number(flaky?.runs)).toBeGreaterThanOrEqual(1);
  });

  it("runs the node's own recalc-quality on its schedule against the doc store", async () => {
    const docStore = await startDownstream();
    try {
      docStore.answer("GET", "/documents/quality", {
        kind: "json",
        body: {
          documents: [
            { id: "a", flagged: true },
            { id: "b", flagged: false },
          ],
        },
      });
      const node = await startOrchestrator({
        env: { DOC_STORE_URL: docStore.url, SCHEDULED_JOBS: "recalc-quality=* * * * * *" },
      });
      nodes.push(node);
      const [first] = await until("the doc store asked for its quality", async () => {
        const seen = docStore.requestsTo("GET", "/documents/quality");
        return seen.length > 0 ? seen : undefined;
      });
      expect(String(first?.headers["x-correlation-id"])).toMatch(
        /^schedule:recalc-quality:\d+000$/,
      );
      await until("the outcome ok in /info", async () =>
        (await scheduleOf(node)).last_outcome === "ok" ? true : undefined,
      );
    } finally {
      await docStore.close();
    }
  });

  it("refuses to start with a schedule of a job it does not know", async () => {
    await expect(
      startOrchestrator({ env: { SCHEDULED_JOBS: "nightly-magic=0 3 * * *" } }),
    ).rejects.toThrow(/SCHEDULED_JOBS names unknown jobs: nightly-magic/);
  });
});
