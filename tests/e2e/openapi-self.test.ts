import { randomUUID } from "node:crypto";
import { compileErrors, validate } from "@readme/openapi-parser";
import { afterEach, describe, expect, it } from "vitest";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";

// GET /openapi.json on a real node, and the node's own poll-openapi pointed at itself: a baseline,
// then no drift on a second poll, and the same document from a second start.

type Json = Record<string, unknown>;

const nodes: RunningOrchestrator[] = [];
afterEach(async () => {
  for (const node of nodes.splice(0)) await node.close();
});

async function startNode(env: Record<string, string> = {}): Promise<RunningOrchestrator> {
  const node = await startOrchestrator({ env: { HEALTH_CHECK_INTERVAL_MS: "3600000", ...env } });
  nodes.push(node);
  return node;
}

async function documentText(node: RunningOrchestrator): Promise<string> {
  const response = await fetch(`${node.url}/openapi.json`);
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  return response.text();
}

async function post(node: RunningOrchestrator, path: string, body: Json, token?: string) {
  const response = await fetch(`${node.url}${path}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  expect(response.status, text).toBe(200);
  return JSON.parse(text) as Json;
}

/** Registers the node as a service of its own registry, then polls its document twice. */
async function pollSelf(node: RunningOrchestrator, token?: string): Promise<Json[]> {
  const name = "orchestrator-self";
  await post(
    node,
    "/registry/register",
    { name, base_url: node.url, openapi_url: `${node.url}/openapi.json` },
    token,
  );
  const polls: Json[] = [];
  for (let i = 0; i < 2; i++) {
    const answer = await post(node, "/registry/poll-openapi", { names: [name] }, token);
    const results = answer.results as Json[];
    expect(results).toHaveLength(1);
    polls.push(results[0] as Json);
  }
  return polls;
}

describe("GET /openapi.json", () => {
  it("serves a valid OpenAPI 3.1 document of the REST routes", async () => {
    const node = await startNode();
    const document = JSON.parse(await documentText(node)) as Json;
    const result = await validate(document as never);
    expect(result.valid, result.valid ? "" : compileErrors(result)).toBe(true);
    const paths = document.paths as Json;
    expect(Object.keys(paths)).toEqual(expect.arrayContaining(["/health", "/registry/register"]));
  });

  it("shows no drift to the node's own poll-openapi, nor across two starts", async () => {
    const first = await startNode();
    const [baseline, again] = await pollSelf(first);
    expect(baseline).toMatchObject({ service: "orchestrator-self", baseline: true, error: "" });
    expect(again).toMatchObject({ baseline: false, changed: false, error: "" });
    expect(again?.hash).toBe(baseline?.hash);
    const firstText = await documentText(first);

    const second = await startNode();
    const [secondBaseline] = await pollSelf(second);
    expect(secondBaseline).toMatchObject({ baseline: true, error: "" });
    expect(secondBaseline?.hash).toBe(baseline?.hash);
    expect(await documentText(second)).toBe(firstText);
  });

  it("is public when tokens are set, as reflection is", async () => {
    const token = randomUUID();
    const node = await startNode({ AUTH_TOKENS: `operator:${token}` });
    const text = await documentText(node);
    expect(JSON.parse(text)).toMatchObject({ openapi: "3.1.0" });
    const [baseline, again] = await pollSelf(node, token);
    expect(baseline).toMatchObject({ baseline: true, error: "" });
    expect(again).toMatchObject({ changed: false, error: "" });
  });
});
