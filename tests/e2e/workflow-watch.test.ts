import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WorkflowService } from "../../gen/orchestrator/v1/workflow_pb.js";
import { createGrpcJsClient } from "../../src/clients/grpc-js-client.js";
import { type Downstream, startDownstream } from "../support/downstream.js";
import { lineReader } from "../support/line-reader.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { expectStatus, type Json, patience, rest } from "../support/rest.js";

// WatchWorkflowRun on a real node (memory stores) against loopback stand-ins: over REST (NDJSON)
// and gRPC, a watch sends the run now and at each change until it finishes, then ends.

let agents: Downstream;
let engine: Downstream;
let node: RunningOrchestrator;

beforeAll(async () => {
  [agents, engine] = await Promise.all([startDownstream(), startDownstream()]);
  // The engine's step takes a while, so that a watch opened after the start sees it run.
  agents.answer("POST", "/github/ingest", { kind: "json", body: { documents: 3 } });
  engine.answer("POST", "/analyze", { kind: "json", body: { findings: 1 }, delayMs: 800 });
  node = await startOrchestrator({
    env: {
      GITHUB_AGENT_URL: `${agents.url}/github`,
      CONSISTENCY_ENGINE_URL: engine.url,
      OUTBOUND_TIMEOUT_MS: "5000",
    },
  });
});
afterAll(async () => {
  await node?.close();
  await Promise.all([agents?.close(), engine?.close()]);
});

async function startRun(): Promise<string> {
  const body = await expectStatus(
    rest(node.url, "POST", "/workflows/run", { workflow: "ingestion", sources: ["github"] }),
    200,
  );
  return String(body.run_id);
}

describe("WatchWorkflowRun", () => {
  it("streams a run as NDJSON from now to its end, then ends the stream", async () => {
    const runId = await startRun();
    const response = await fetch(`${node.url}/workflows/runs/${runId}/watch`, {
      signal: AbortSignal.timeout(patience),
    });
    expect(response.status).toBe(200);
    const lines = lineReader((response.body as ReadableStream<Uint8Array>)[Symbol.asyncIterator]());
    const runs: Json[] = [];
    for (let line = await lines.next(); line !== undefined; line = await lines.next()) {
      runs.push((JSON.parse(line) as { run: Json }).run);
    }
    const statuses = runs.map((run) => run.status);
    expect(statuses.at(-1)).toBe("RUN_STATUS_SUCCEEDED");
    expect(statuses.slice(0, -1).every((s) => s !== "RUN_STATUS_SUCCEEDED")).toBe(true);
    // Every message is a new state: no state sent twice.
    const versions = runs.map((run) => JSON.stringify(run));
    expect(new Set(versions).size).toBe(versions.length);
    expect(runs.at(-1)).toMatchObject({ run_id: runId, workflow: "ingestion" });
  });

  it("over gRPC, sends a finished run once and ends", async () => {
    const runId = await startRun();
    const client = createGrpcJsClient(WorkflowService, node.address);
    try {
      const seen: string[] = [];
      for await (const message of client.watchWorkflowRun({ runId })) {
        seen.push(String(message.run?.status));
      }
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.at(-1)).toBe("3"); // RUN_STATUS_SUCCEEDED
      // Watching it again once finished: one message, the final state.
      const again: number[] = [];
      for await (const message of client.watchWorkflowRun({ runId })) {
        again.push(Number(message.run?.status));
      }
      expect(again).toEqual([3]);
    } finally {
      client.close();
    }
  });

  it("answers 404 for a run that does not exist", async () => {
    const reply = await rest(node.url, "GET", "/workflows/runs/run-nope/watch");
    expect(reply.status).toBe(404);
    expect(reply.body).toMatchObject({
      code: "not_found",
      message: "workflow run run-nope not found",
    });
  });
});
