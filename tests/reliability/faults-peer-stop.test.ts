import { setTimeout as delay } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import {
  freePort,
  type OrchestratorProcess,
  startOrchestratorProcess,
} from "../support/process.js";
import { byProfile, recordReliability } from "../support/reliability-report.js";
import { listPeers, quietEnv, untilConverged, untilPeer } from "../support/replication.js";
import { deregister, register, registration, rest } from "../support/rest.js";

// Fault: one of two replicating orchestrator processes SIGSTOPped (20 s in the full profile, 4 s
// in the short one) while the other takes writes, then SIGCONT. tests/e2e/replication.test.ts
// ("a peer stopped with SIGSTOP, then continued") proves the link's state, last contact and logs
// around a stop with no writes. New here: writes (registrations, deletes, heartbeats) and reads
// on the running node all through the stop, answered without an error; and once continued, both
// links LIVE again (the stopped node's stream to the running one included) and one registry.

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The log lines at error or fatal level. */
function errorLines(log: string): string[] {
  return log.split("\n").filter((line) => /"level":"(error|fatal)"/.test(line));
}

describe("faults: a replicating peer SIGSTOPped, then continued", () => {
  it("keeps the running node answering writes and reads, then both converge with links LIVE", {
    timeout: byProfile(90_000, 240_000),
  }, async () => {
    const ports = [await freePort(), await freePort()];
    const urls = ports.map((port) => `http://127.0.0.1:${port}`);
    const nodes: OrchestratorProcess[] = [];
    for (const i of [0, 1]) {
      const node = await startOrchestratorProcess({
        env: {
          ...quietEnv,
          NODE_ID: `stop-${i}`,
          PORT: String(ports[i]),
          ORCHESTRATOR_PEERS: urls[1 - i] ?? "",
          LOG_LEVEL: "warn",
        },
      });
      // A node left stopped by a failed test is continued first, so that SIGKILL ends it.
      cleanups.push(async () => {
        node.child.kill("SIGCONT");
        await node.stop("SIGKILL");
      });
      nodes.push(node);
    }
    const [running, sleeper] = nodes as [OrchestratorProcess, OrchestratorProcess];
    await register(running.url, registration("before-stop"));
    await untilConverged(urls);

    const stopMs = byProfile(4_000, 20_000);
    const errors: string[] = [];
    let requests = 0;
    sleeper.child.kill("SIGSTOP");
    const stoppedAt = Date.now();
    let n = 0;
    const expected = new Set<string>();
    // Writes of every kind and reads on the running node for as long as its peer is stopped.
    while (Date.now() - stoppedAt < stopMs) {
      const name = `during-${n}`;
      const calls = [
        rest(running.url, "POST", "/registry/register", registration(name, { ttl_seconds: 60 })),
        rest(running.url, "GET", "/registry"),
        rest(running.url, "GET", "/peers"),
      ];
      if (n > 0) calls.push(rest(running.url, "POST", `/registry/during-${n - 1}/heartbeat`, {}));
      if (n > 1 && n % 3 === 0)
        calls.push(rest(running.url, "DELETE", `/registry/during-${n - 2}`));
      expected.add(name);
      if (n > 1 && n % 3 === 0) expected.delete(`during-${n - 2}`);
      for (const reply of await Promise.all(calls)) {
        requests++;
        if (reply.status !== 200) errors.push(`${reply.status} ${reply.text}`);
      }
      n++;
      await delay(100);
    }
    // The running node noticed: its link to the stopped peer is not LIVE (pings, or silence).
    const seen = await listPeers(running.url);
    requests++;
    sleeper.child.kill("SIGCONT");
    expect(errors).toEqual([]);
    await deregister(running.url, "before-stop");

    // Both registries agree and every link (the continued node's own stream included) is LIVE.
    const registry = await untilConverged(urls);
    await untilPeer(sleeper.url, running.url, (peer) => peer.state === "PEER_STATE_LIVE");
    expect(registry.map((entry) => entry.name)).not.toContain("before-stop");
    expect(registry.map((entry) => entry.name)).toEqual([...expected].sort());
    // Nothing at error level on either node: losing a peer for a while is a warning, no more.
    for (const node of nodes) expect(errorLines(node.stdout()), node.url).toEqual([]);

    recordReliability({
      suite: "faults",
      name: `peer SIGSTOP ${stopMs / 1000} s + SIGCONT under writes`,
      faults: 1,
      requests,
      errors: errors.length,
      note: `${n} rounds; running node's link while stopped: ${seen[0]?.state ?? "?"}; converged, links LIVE`,
    });
  });
});
