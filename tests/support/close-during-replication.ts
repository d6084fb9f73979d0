/**
 * A script run in a process of its own by tests/e2e/replication.test.ts (an uncaught exception
 * must not take the test runner down with it): two in-process nodes replicate with each other;
 * node a is closed while its Replicate stream to node b is open; the process then waits well past
 * the HTTP/2 ping interval (2 s) and closes node b. It writes a line per step to stdout and exits
 * 0 after "clean"; an exception thrown meanwhile ends it with code 1 and the error on stderr.
 */
import { setTimeout as delay } from "node:timers/promises";
import { type RunningOrchestrator, startOrchestrator } from "./orchestrator.js";
import { freePort } from "./process.js";

const [portA, portB] = [await freePort(), await freePort()];
const node = (id: string, port: number, peerPort: number): Promise<RunningOrchestrator> =>
  startOrchestrator({
    env: {
      NODE_ID: id,
      PORT: String(port),
      ORCHESTRATOR_PEERS: `http://127.0.0.1:${peerPort}`,
      HEALTH_CHECK_INTERVAL_MS: "3600000",
      LOG_LEVEL: "silent",
    },
  });
const a = await node("a", portA, portB);
const b = await node("b", portB, portA);

/** Whether every link of the node is LIVE. */
async function live(url: string): Promise<boolean> {
  const response = await fetch(`${url}/peers`);
  const body = (await response.json()) as { peers?: { state?: string }[] };
  const peers = body.peers ?? [];
  return peers.length > 0 && peers.every((peer) => peer.state === "PEER_STATE_LIVE");
}

const deadline = Date.now() + 30_000;
while (!((await live(a.url)) && (await live(b.url)))) {
  if (Date.now() > deadline) {
    process.stdout.write("the links did not go LIVE\n");
    process.exit(3);
  }
  await delay(100);
}
process.stdout.write("live\n");
await a.close();
process.stdout.write("closed a\n");
await delay(6_000);
await b.close();
process.stdout.write("clean\n");
process.exit(0);
