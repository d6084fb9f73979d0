import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { expectStatus, type Json, patience, rest, until } from "../support/rest.js";

// The workflow routes served so far, on a real node (memory store) over REST: the definitions
// with their steps, and ingestion requests recorded as `ingestion.requested` events.

let node: RunningOrchestrator;
beforeAll(async () => {
  node = await startOrchestrator();
});
afterAll(async () => {
  await node?.close();
});

describe("GET /workflows", () => {
  it("lists the definitions with their steps", async () => {
    const body = await expectStatus(rest(node.url, "GET", "/workflows"), 200);
    expect(body.count).toBe(4);
    const ingestion = (body.workflows as Json[]).find((w) => w.name === "ingestion");
    expect(ingestion).toMatchObject({
      sources: ["github", "jira", "confluence", "swagger"],
      steps: [
        {
          name: "ingest",
          target: "{source}-agent",
          action: "POST /ingest",
          compensation: "POST /ingest/rollback",
          group: 0,
          per_source: true,
          timeout_ms: 30000,
          max_attempts: 3,
        },
        { name: "analyze", target: "consistency-engine", action: "POST /analyze", group: 1 },
      ],
    });
  });
});

describe("workflows from the configuration file", () => {
  it("lists a workflow written in the file beside the built-in ones", async () => {
    const dir = await mkdtemp(join(tmpdir(), "workflows-yaml-"));
    const path = join(dir, "app.yaml");
    await writeFile(
      path,
      [
        "workflows:",
        "  - name: security_scan",
        "    description: Scans, then reports.",
        "    sources: [github]",
        "    steps:",
        '      - {name: scan, target: "{source}-agent", action: POST /scan, per_source: true}',
        "      - {name: report, target: reporting, action: POST /reports/generate, group: 1}",
        "",
      ].join("\n"),
    );
    const withFile = await startOrchestrator({ env: { APP_CONFIG_PATH: path } });
    try {
      const body = await expectStatus(rest(withFile.url, "GET", "/workflows"), 200);
      expect(body.count).toBe(5);
      expect((body.workflows as Json[]).at(-1)).toMatchObject({
        name: "security_scan",
        sources: ["github"],
        steps: [
          { name: "scan", target: "{source}-agent", action: "POST /scan", per_source: true },
          { name: "report", target: "reporting", action: "POST /reports/generate", group: 1 },
        ],
      });
    } finally {
      await withFile.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("POST /ingest", () => {
  async function storedRequests(correlationId: string): Promise<Json[]> {
    return until(`the ingestion.requested event of ${correlationId}`, async () => {
      const body = await expectStatus(
        rest(
          node.url,
          "GET",
          `/infrastructure/events/history?event_types=ingestion.requested&correlation_id=${correlationId}`,
        ),
        200,
      );
      const events = body.events as Json[];
      return events.length > 0 ? events : undefined;
    });
  }

  it("accepts a source, records the request with the caller's trace, and answers at once", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const response = await fetch(`${node.url}/ingest`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
      },
      body: JSON.stringify({ source: "jira", scope: { project: "OPS" }, correlation_id: "ing-1" }),
      signal: AbortSignal.timeout(patience),
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      status: "accepted",
      source: "jira",
      correlation_id: "ing-1",
      trace_id: traceId,
      run_id: "",
    });
    const [event] = await storedRequests("ing-1");
    expect(event).toMatchObject({
      type: "ingestion.requested",
      subject: "jira",
      correlation_id: "ing-1",
      trace_id: traceId,
      payload: {
        source: "jira",
        scope: { project: "OPS" },
        correlation_id: "ing-1",
        trace_id: traceId,
      },
    });
  });

  it("takes the correlation id of the header, or makes one, when the body has none", async () => {
    const response = await fetch(`${node.url}/ingest`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-correlation-id": "from-header-7" },
      body: JSON.stringify({ source: "github" }),
      signal: AbortSignal.timeout(patience),
    });
    expect(await response.json()).toMatchObject({ correlation_id: "from-header-7" });
    await storedRequests("from-header-7");
    const made = await expectStatus(rest(node.url, "POST", "/ingest", { source: "swagger" }), 200);
    expect(made.correlation_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(made.trace_id).toMatch(/^[0-9a-f]{32}$/);
  });

  it.each([
    [{ source: "svn" }, "source"],
    [{}, "source"],
    [{ source: "github", correlation_id: "has spaces" }, "correlation_id"],
  ])("refuses %j with 400 naming %s", async (body, field) => {
    const reply = await rest(node.url, "POST", "/ingest", body);
    expect(reply.status, reply.text).toBe(400);
    expect(String(reply.body.message)).toContain(field);
  });
});
