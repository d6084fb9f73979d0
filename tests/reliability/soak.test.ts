import { readdir, readFile } from "node:fs/promises";
import { setTimeout as delay } from "node:timers/promises";
import { Agent, type Dispatcher, getGlobalDispatcher, setGlobalDispatcher } from "undici";
import { afterAll, describe, expect, it } from "vitest";
import { type Downstream, startDownstream } from "../support/downstream.js";
import { metricValue } from "../support/orchestrator.js";
import {
  type OrchestratorProcess,
  repoRoot,
  startOrchestratorProcess,
} from "../support/process.js";
import { byProfile, recordReliability } from "../support/reliability-report.js";
import { openWatch, registration, rest } from "../support/rest.js";

// Soak: one orchestrator process (src/main.ts, memory stores) under mixed traffic from several
// clients at once: registrations with leases and their heartbeats, lists and reads, watch streams
// opened and cancelled in churn, and workflow runs against a loopback stand-in. Its resident
// memory and open descriptors are sampled twice in the same quiet state (clients stopped, runs
// finished, a full GC through bench/gc-on-signal.ts): after a warm-up, and after the soak.
// 15 s in the short profile, 3 min in the full one.

const MiB = 1024 * 1024;

/**
 * The stores that grow with this traffic, capped well below their defaults so that the bound on
 * growth is about them: once full they evict, whatever the duration.
 */
const caps = {
  EVENT_LOG_BYTES: 1 * MiB,
  EVENT_STORE_MAX_BYTES: 2 * MiB,
  SAGA_STORE_MAX_BYTES: 4 * MiB,
  REGISTRY_CHANGE_LOG_BYTES: 2 * MiB,
  TRACE_STORE_MAX_BYTES: 2 * MiB,
};
const storeCaps = Object.values(caps).reduce((sum, cap) => sum + cap, 0);
/**
 * The heap retained after a full GC may grow by what the capped stores can hold (filled during the
 * soak, possibly not yet by the warm-up), plus 8 MiB of caches that fill once (compiled code,
 * encodings of entries). This is the leak check: a leak of even a few hundred bytes per request
 * exceeds it over the full soak's requests.
 */
const heapBound = storeCaps + 8 * MiB;
/**
 * RSS is looser: besides the heap, V8 keeps pages it does not return at once (its young generation
 * alone may grow by tens of MiB under load) and allocator arenas; 15 s runs were seen at +12 to
 * +34 MiB with the heap at +4 to +6 MiB. So the stores' caps plus 64 MiB: what catches a leak of
 * memory outside the heap (buffers, sockets) rather than the heap's ups and downs.
 */
const rssBound = storeCaps + 64 * MiB;
/**
 * Descriptors: the same quiet state at both samples (the clients' connections closed), so only
 * what the node opens by itself may differ: its keep-alive connections to the stand-in (up to
 * one per run in flight), a probe's socket. A leak of one per request, or per watch, exceeds it.
 */
const fdBound = 8;

/**
 * A client's pause between two rounds of its traffic. In the short form (part of `npm test`,
 * beside other suites on two cores) the clients leave CPU to the rest: steady traffic, not the
 * most a node can take; the full form runs them flat out.
 */
const pauseMs = byProfile(25, 0);

/** Names the registering clients cycle over: the registry holds at most these. */
const namePool = 40;

interface Sample {
  readonly rssBytes: number;
  readonly fds: number;
  readonly heapUsedBytes: number;
}

async function sample(node: OrchestratorProcess): Promise<Sample> {
  // A full collection first (bench/gc-on-signal.ts), so that what is sampled is what is retained.
  node.child.kill("SIGUSR2");
  await delay(1_000);
  const pid = node.child.pid ?? 0;
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const rssKiB = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? Number.NaN);
  const fds = (await readdir(`/proc/${pid}/fd`)).length;
  const heapUsedBytes = await metricValue(node, "nodejs_heap_size_used_bytes", {});
  return { rssBytes: rssKiB * 1024, fds, heapUsedBytes };
}

interface Traffic {
  readonly errors: string[];
  requests(): number;
  /** Stops every client and waits for them and for every run they started to finish. */
  stop(): Promise<void>;
}

/**
 * Several clients, each doing one kind of traffic as fast as it gets answers, until stopped. Their
 * fetches go through a connection pool of their own, closed when they stop: the node's
 * descriptors are then its own, not the idle keep-alive connections of this test process.
 */
function startTraffic(node: OrchestratorProcess): Traffic {
  const base = node.url;
  const previous: Dispatcher = getGlobalDispatcher();
  const pool = new Agent();
  setGlobalDispatcher(pool);
  const errors: string[] = [];
  let requests = 0;
  let stopping = false;
  const check = (what: string, status: number, text: string, expected = 200) => {
    requests++;
    if (status !== expected) errors.push(`${what}: ${status} ${text.slice(0, 300)}`);
  };
  const registrar = async (client: number) => {
    for (let n = 0; !stopping; n++) {
      const name = `soak-${(client * 7 + n) % namePool}`;
      const reply = await rest(base, "POST", "/registry/register", {
        ...registration(name, { ttl_seconds: 30, version: String(n) }),
        metadata: { client: String(client), round: String(n) },
      });
      check(`register ${name}`, reply.status, reply.text);
      const beat = await rest(base, "POST", `/registry/${name}/heartbeat`, {});
      // Another client may have deleted the name in between: 404 is its answer then.
      if (beat.status === 404) requests++;
      else check(`heartbeat ${name}`, beat.status, beat.text);
      if (n % 10 === 9) {
        const gone = await rest(base, "DELETE", `/registry/${name}`);
        if (gone.status === 404) requests++;
        else check(`delete ${name}`, gone.status, gone.text);
      }
      await delay(pauseMs);
    }
  };
  const reader = async () => {
    for (let n = 0; !stopping; n++) {
      const list = await rest(base, "GET", "/registry");
      check("list", list.status, list.text);
      const one = await rest(base, "GET", `/registry/soak-${n % namePool}`);
      if (one.status === 404) requests++;
      else check("get", one.status, one.text);
      const health = await rest(base, "GET", "/health/system");
      check("health/system", health.status, health.text);
      await delay(pauseMs);
    }
  };
  const watcher = async () => {
    while (!stopping) {
      // Opened, read to its first line (or more), and cancelled: churn, never a slow consumer.
      const watch = openWatch(base);
      try {
        await watch.next();
        requests++;
      } catch (error) {
        requests++;
        errors.push(`watch: ${String(error)}`);
      } finally {
        watch.close();
      }
      await delay(20 + pauseMs);
    }
  };
  const started: string[] = [];
  const runner = async () => {
    while (!stopping) {
      const reply = await rest(base, "POST", "/workflows/run", { sources: ["github"] });
      check("run", reply.status, reply.text);
      if (reply.status === 200) started.push(String(reply.body.run_id));
      await delay(50 + pauseMs);
    }
  };
  const clients = [
    registrar(0),
    registrar(1),
    registrar(2),
    reader(),
    reader(),
    watcher(),
    watcher(),
    runner(),
  ];
  const done = Promise.all(clients);
  return {
    errors,
    requests: () => requests,
    async stop() {
      stopping = true;
      await done;
      // Every run started finishes, successfully (the stand-ins answer at once).
      for (const runId of started.splice(0)) {
        for (;;) {
          const run = await rest(base, "GET", `/workflows/runs/${runId}`);
          check(`run ${runId}`, run.status, run.text);
          if (run.body.status === "RUN_STATUS_SUCCEEDED") break;
          if (
            run.body.status !== "RUN_STATUS_RUNNING" &&
            run.body.status !== "RUN_STATUS_PENDING"
          ) {
            errors.push(`run ${runId}: ${run.text.slice(0, 300)}`);
            break;
          }
          await delay(100);
        }
      }
      setGlobalDispatcher(previous);
      await pool.close();
    },
  };
}

let node: OrchestratorProcess | undefined;
let standIn: Downstream | undefined;
afterAll(async () => {
  await node?.stop("SIGKILL");
  await standIn?.close();
});

describe("soak: mixed traffic on one orchestrator process", () => {
  it("serves register, heartbeat, list, watch churn and workflow runs without errors or growth", {
    timeout: byProfile(90_000, 420_000),
  }, async () => {
    const agents = await startDownstream();
    standIn = agents;
    agents.answer("POST", "/github/ingest", { kind: "json", body: { documents: 1 } });
    agents.answer("POST", "/engine/analyze", { kind: "json", body: { findings: 0 } });
    const running = await startOrchestratorProcess({
      nodeArgs: ["--expose-gc"],
      imports: [`${repoRoot}bench/gc-on-signal.ts`],
      env: {
        ...Object.fromEntries(Object.entries(caps).map(([key, value]) => [key, String(value)])),
        GITHUB_AGENT_URL: `${agents.url}/github`,
        CONSISTENCY_ENGINE_URL: `${agents.url}/engine`,
        HEALTH_CHECK_INTERVAL_MS: "1000",
        HEALTH_CHECK_TIMEOUT_MS: "500",
        LOG_LEVEL: "warn",
      },
    });
    node = running;
    // The stand-in keeps every request it saw: the test process grows, not the node.

    const warmUp = startTraffic(running);
    await delay(byProfile(3_000, 20_000));
    await warmUp.stop();
    const first = await sample(running);

    const soakMs = byProfile(15_000, 180_000);
    const soak = startTraffic(running);
    await delay(soakMs);
    await soak.stop();
    const last = await sample(running);

    // Nothing logged at error level either (the node logs at warn here).
    const logged = running
      .stdout()
      .split("\n")
      .filter((line) => /"level":"(error|fatal)"/.test(line));
    const errors = [...warmUp.errors, ...soak.errors, ...logged];
    const rssGrowth = last.rssBytes - first.rssBytes;
    const fdGrowth = last.fds - first.fds;
    const heapGrowth = last.heapUsedBytes - first.heapUsedBytes;
    recordReliability({
      suite: "soak",
      name: `mixed traffic ${soakMs / 1000} s, one process`,
      requests: warmUp.requests() + soak.requests(),
      errors: errors.length,
      memoryGrowthBytes: rssGrowth,
      memoryMeasure: "rss",
      fdGrowth,
      note: `rss ${(first.rssBytes / MiB).toFixed(0)}→${(last.rssBytes / MiB).toFixed(0)} MiB (bound +${rssBound / MiB}), heap +${(heapGrowth / MiB).toFixed(1)} MiB (bound +${heapBound / MiB}), fds ${first.fds}→${last.fds} (bound +${fdBound})`,
    });
    expect(errors).toEqual([]);
    // The heap is read from /metrics (nodejs_heap_size_used_bytes): a missing sample reads 0.
    expect(first.heapUsedBytes).toBeGreaterThan(0);
    expect(heapGrowth).toBeLessThanOrEqual(heapBound);
    expect(rssGrowth).toBeLessThanOrEqual(rssBound);
    expect(fdGrowth).toBeLessThanOrEqual(fdBound);
    // The node is still whole: no crash, no restart.
    expect(running.child.exitCode).toBeNull();
  });
});
