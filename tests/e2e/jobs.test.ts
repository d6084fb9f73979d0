import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Downstream, type DownstreamRequest, startDownstream } from "../support/downstream.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { type Json, patience } from "../support/rest.js";

// JobsService against real loopback stand-ins for the doc store, reporting, the notification
// service and the secure analyzer, configured by their *_URL settings: what each job sends (method,
// path, body, correlation id, trace context), what it answers, and how each downstream failure
// reaches the client. Every call carries its own correlation id: the stand-ins' records are
// filtered by it, so the tests never depend on one another's requests.

interface Answer {
  readonly status: number;
  readonly body: Json;
  readonly text: string;
}

/** The ids of one call, sent as headers and looked for downstream. */
interface Ids {
  readonly correlationId: string;
  readonly traceId: string;
}

let counter = 0;
function newIds(): Ids {
  counter += 1;
  return { correlationId: `jobs-test-${counter}`, traceId: randomBytes(16).toString("hex") };
}

async function post(base: string, path: string, body: unknown, ids = newIds()): Promise<Answer> {
  const response = await fetch(`${base}${path}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-correlation-id": ids.correlationId,
      traceparent: `00-${ids.traceId}-${randomBytes(8).toString("hex")}-01`,
    },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(patience),
  });
  const text = await response.text();
  // No answer, error or not, names a host.
  expect(text).not.toContain("127.0.0.1");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: response.status, text, body: (parsed ?? {}) as Json };
}

/** The requests `downstream` received on behalf of the call with `ids`. */
function received(downstream: Downstream, ids: Ids): DownstreamRequest[] {
  return downstream.requests.filter((r) => r.headers["x-correlation-id"] === ids.correlationId);
}

/** Checks the call's ids reached the downstream: the correlation id as is, the same trace. */
function expectPropagated(request: DownstreamRequest | undefined, ids: Ids): void {
  expect(request?.headers["x-correlation-id"]).toBe(ids.correlationId);
  expect(String(request?.headers.traceparent)).toMatch(
    new RegExp(`^00-${ids.traceId}-[0-9a-f]{16}-0[01]$`),
  );
}

function expectError(answer: Answer, status: number, code: string, text: string): void {
  expect(answer.status, answer.text).toBe(status);
  expect(answer.body.code).toBe(code);
  expect(String(answer.body.message)).toContain(text);
}

/** Settings that keep failure tests short and steady: a small timeout, near-zero backoff. */
const outboundEnv = {
  OUTBOUND_TIMEOUT_MS: "1000",
  OUTBOUND_RETRY_BASE_DELAY_MS: "1",
  OUTBOUND_RETRY_MAX_DELAY_MS: "5",
  OUTBOUND_MAX_ATTEMPTS: "3",
  // The breaker has its own tests: here, failing stand-ins must not cut the next tests' calls.
  OUTBOUND_BREAKER_THRESHOLD: "1000",
};

let docStore: Downstream;
let reporting: Downstream;
let notification: Downstream;
let analyzer: Downstream;
let node: RunningOrchestrator;
/**
 * A node without doc store and secure analyzer (both may be left unset), whose reporting and
 * notification service (which always have a URL) point at a closed port.
 */
let bare: RunningOrchestrator;

beforeAll(async () => {
  [docStore, reporting, notification, analyzer] = await Promise.all([
    startDownstream(),
    startDownstream(),
    startDownstream(),
    startDownstream(),
  ]);
  const gone = await startDownstream();
  await gone.close();
  const closed = gone.url;
  [node, bare] = await Promise.all([
    startOrchestrator({
      env: {
        ...outboundEnv,
        DOC_STORE_URL: docStore.url,
        REPORTING_URL: reporting.url,
        NOTIFICATION_URL: notification.url,
        SECURE_ANALYZER_URL: analyzer.url,
        // Room for a content one character over its limit, so that validation sees it.
        BODY_LIMIT_BYTES: "4194304",
      },
    }),
    startOrchestrator({
      env: { ...outboundEnv, REPORTING_URL: closed, NOTIFICATION_URL: closed },
    }),
  ]);
}, patience);

afterAll(async () => {
  await Promise.all([node?.close(), bare?.close()]);
  await Promise.all([docStore, reporting, notification, analyzer].map((d) => d?.close()));
});

describe("POST /jobs/recalc-quality", () => {
  const path = "/jobs/recalc-quality";

  it("counts the flagged documents of {documents: [...]}", async () => {
    docStore.answer("GET", "/documents/quality", {
      kind: "json",
      body: { documents: [{ id: "a", flagged: true }, { id: "b", flagged: false }, { id: "c" }] },
    });
    const ids = newIds();
    const answer = await post(node.url, path, {}, ids);
    expect(answer.status, answer.text).toBe(200);
    expect(answer.body).toMatchObject({ status: "completed", flagged: 1, total: 3 });
    expect(Number.isNaN(Date.parse(String(answer.body.timestamp)))).toBe(false);
    const calls = received(docStore, ids);
    expect(calls.map((c) => `${c.method} ${c.path}`)).toEqual(["GET /documents/quality"]);
    expectPropagated(calls[0], ids);
  });

  it("counts the flagged documents of a plain array", async () => {
    docStore.answer("GET", "/documents/quality", {
      kind: "json",
      body: [{ flagged: true }, { flagged: true }, { flagged: "yes" }],
    });
    const answer = await post(node.url, path, {});
    expect(answer.body).toMatchObject({ status: "completed", flagged: 2, total: 3 });
  });

  it("retries a 503 and completes", async () => {
    docStore.answer("GET", "/documents/quality", {
      kind: "sequence",
      steps: [
        { kind: "fail", status: 503 },
        { kind: "json", body: [] },
      ],
    });
    const ids = newIds();
    const answer = await post(node.url, path, {}, ids);
    expect(answer.body).toMatchObject({ status: "completed", flagged: 0, total: 0 });
    expect(received(docStore, ids)).toHaveLength(2);
  });

  it("answers 503 naming the doc store when it keeps failing, after every attempt", async () => {
    docStore.answer("GET", "/documents/quality", { kind: "fail", status: 503 });
    const ids = newIds();
    expectError(await post(node.url, path, {}, ids), 503, "unavailable", "doc-store answered 503");
    expect(received(docStore, ids)).toHaveLength(3);
  });

  it("answers 504 when the doc store hangs", async () => {
    docStore.answer("GET", "/documents/quality", { kind: "hang" });
    const ids = newIds();
    const answer = await post(node.url, path, {}, ids);
    expectError(answer, 504, "deadline_exceeded", "doc-store: timed out");
    expect(received(docStore, ids)).toHaveLength(3);
  });

  it.each([
    { name: "not JSON", answer: { kind: "garbage" } as const },
    { name: "not a list", answer: { kind: "json", body: { count: 3 } } as const },
  ])("answers 503 for an answer that is $name", async ({ answer }) => {
    docStore.answer("GET", "/documents/quality", answer);
    const reply = await post(node.url, path, {});
    expectError(reply, 503, "unavailable", "doc-store answered an unreadable quality list");
  });

  it("is skipped, naming the setting, without a doc store", async () => {
    const answer = await post(bare.url, path, {});
    expect(answer.status, answer.text).toBe(200);
    expect(answer.body.status).toBe("skipped");
    expect(String(answer.body.reason)).toContain("DOC_STORE_URL");
  });

  it("refuses an unknown field with 400", async () => {
    expectError(await post(node.url, path, { bogus: 1 }), 400, "invalid_argument", "bogus");
  });
});

describe("POST /jobs/notify-consolidation", () => {
  const path = "/jobs/notify-consolidation";
  const candidates = [
    { id: "c1", title: "Runbooks", confidence: 0.9 },
    { id: "c2", title: "Onboarding", confidence: 0.5 },
    { id: "c3", confidence: 0.95 },
    { id: "c4", confidence: "high" },
  ];

  it("notifies the candidates at or above min_confidence through the webhook channel", async () => {
    reporting.answer("GET", "/reports/confluence/consolidation", {
      kind: "json",
      body: { candidates },
    });
    notification.answer("POST", "/notify", { kind: "json", body: { queued: true } });
    const ids = newIds();
    const webhook = "https://hooks.example.com/consolidation";
    const answer = await post(node.url, path, { min_confidence: 0.8, webhook_url: webhook }, ids);
    expect(answer.status, answer.text).toBe(200);
    expect(answer.body).toEqual({ status: "ok", sent: 2, candidates: 2 });

    const read = received(reporting, ids);
    expect(read.map((r) => `${r.method} ${r.path}`)).toEqual([
      "GET /reports/confluence/consolidation",
    ]);
    expectPropagated(read[0], ids);
    const notices = received(notification, ids).sort((a, b) =>
      String(a.headers["idempotency-key"]).localeCompare(String(b.headers["idempotency-key"])),
    );
    expect(notices.map((n) => n.headers["idempotency-key"])).toEqual([
      `${ids.correlationId}:consolidation:c1`,
      `${ids.correlationId}:consolidation:c3`,
    ]);
    expectPropagated(notices[0], ids);
    expect(notices[0]?.body).toMatchObject({
      channel: "webhook",
      target: webhook,
      title: "Consolidation candidate: Runbooks",
      metadata: { candidate: candidates[0], confidence: 0.9, correlation_id: ids.correlationId },
    });
    expect(typeof (notices[0]?.body as Json | undefined)?.message).toBe("string");
  });

  it("takes at most `limit`, reads a plain array, and leaves the channel to the service", async () => {
    reporting.answer("GET", "/reports/confluence/consolidation", {
      kind: "json",
      body: candidates,
    });
    notification.answer("POST", "/notify", { kind: "json", body: {} });
    const ids = newIds();
    const answer = await post(node.url, path, { limit: 1 }, ids);
    expect(answer.body).toEqual({ status: "ok", sent: 1, candidates: 1 });
    const [notice, ...others] = received(notification, ids);
    expect(others).toEqual([]);
    expect(notice?.body).not.toHaveProperty("channel");
    expect(notice?.body).not.toHaveProperty("target");
    expect(notice?.headers["idempotency-key"]).toBe(`${ids.correlationId}:consolidation:c1`);
  });

  it("retries a notice answered 503 with the same idempotency key", async () => {
    reporting.answer("GET", "/reports/confluence/consolidation", {
      kind: "json",
      body: [{ id: "only", confidence: 1 }],
    });
    notification.answer("POST", "/notify", {
      kind: "sequence",
      steps: [
        { kind: "fail", status: 503 },
        { kind: "json", body: {} },
      ],
    });
    const ids = newIds();
    const answer = await post(node.url, path, {}, ids);
    expect(answer.body).toEqual({ status: "ok", sent: 1, candidates: 1 });
    const notices = received(notification, ids);
    expect(notices).toHaveLength(2);
    expect(new Set(notices.map((n) => n.headers["idempotency-key"]))).toEqual(
      new Set([`${ids.correlationId}:consolidation:only`]),
    );
  });

  it("counts only the notices answered 2xx", async () => {
    reporting.answer("GET", "/reports/confluence/consolidation", {
      kind: "json",
      body: { candidates },
    });
    notification.answer("POST", "/notify", { kind: "fail", status: 500 });
    const answer = await post(node.url, path, { min_confidence: 0.8 });
    expect(answer.body).toEqual({ status: "ok", sent: 0, candidates: 2 });
  });

  it("answers 503 when reporting answers garbage, and notifies nobody", async () => {
    reporting.answer("GET", "/reports/confluence/consolidation", { kind: "garbage" });
    const ids = newIds();
    expectError(
      await post(node.url, path, {}, ids),
      503,
      "unavailable",
      "reporting answered an unreadable consolidation list",
    );
    expect(received(notification, ids)).toEqual([]);
  });

  it("answers 504 when reporting hangs", async () => {
    reporting.answer("GET", "/reports/confluence/consolidation", { kind: "hang" });
    expectError(await post(node.url, path, {}), 504, "deadline_exceeded", "reporting");
  });

  it("answers 503 when reporting cannot be reached", async () => {
    const answer = await post(bare.url, path, {});
    expectError(answer, 503, "unavailable", "reporting: connection refused");
  });

  it.each([
    { body: { min_confidence: 1.5 }, field: "min_confidence" },
    { body: { min_confidence: -0.1 }, field: "min_confidence" },
    { body: { limit: 1001 }, field: "limit" },
    { body: { limit: -1 }, field: "limit" },
    { body: { webhook_url: "ftp://hooks.example.com/x" }, field: "webhook_url" },
    { body: { webhook_url: "not a url" }, field: "webhook_url" },
  ])("answers 400 naming $field for $body", async ({ body, field }) => {
    expectError(await post(node.url, path, body), 400, "invalid_argument", field);
  });
});

describe("POST /docstore/save", () => {
  const path = "/docstore/save";
  const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest("hex");

  it("saves through the doc store with the id as idempotency key", async () => {
    docStore.answer("POST", "/documents", {
      kind: "json",
      status: 201,
      body: { id: "doc-1", version: 3 },
    });
    const ids = newIds();
    const content = "Hello, doc store ✓";
    const answer = await post(
      node.url,
      path,
      { id: "doc-1", content, content_hash: sha256(content), metadata: { lang: "en" } },
      ids,
    );
    expect(answer.status, answer.text).toBe(200);
    expect(answer.body).toEqual({
      status: "saved",
      id: "doc-1",
      result: { id: "doc-1", version: 3 },
    });
    const [save, ...others] = received(docStore, ids);
    expect(others).toEqual([]);
    expect(save?.method).toBe("POST");
    expect(save?.path).toBe("/documents");
    expect(save?.body).toEqual({
      id: "doc-1",
      content,
      content_hash: sha256(content),
      metadata: { lang: "en" },
    });
    expect(save?.headers["idempotency-key"]).toBe("doc-1");
    expectPropagated(save, ids);
  });

  it("keys a save without id by the content's hash and answers the doc store's id", async () => {
    docStore.answer("POST", "/documents", { kind: "json", body: { id: "generated-7" } });
    const ids = newIds();
    const answer = await post(node.url, path, { content: "no id" }, ids);
    expect(answer.body).toMatchObject({ status: "saved", id: "generated-7" });
    const [save] = received(docStore, ids);
    expect(save?.headers["idempotency-key"]).toBe(sha256("no id"));
    expect(save?.body).toEqual({ content: "no id", content_hash: sha256("no id"), metadata: {} });
  });

  it("refuses a content_hash that does not match, before any save", async () => {
    const ids = newIds();
    const answer = await post(node.url, path, { content: "x", content_hash: sha256("y") }, ids);
    expectError(answer, 400, "invalid_argument", "content_hash");
    expect(received(docStore, ids)).toEqual([]);
  });

  // Found by the hostile-input suite: such an id made the Idempotency-Key header throw, a 500.
  it.each([
    ["a NUL", "\u0000"],
    ["a space", "a b"],
    ["a line break", "a\r\nx-injected: 1"],
    ["a character a header cannot carry", "doc-😀"],
  ])("refuses an id with %s (it is a header value), before any save", async (_, id) => {
    const ids = newIds();
    const answer = await post(node.url, path, { id, content: "x" }, ids);
    expectError(answer, 400, "invalid_argument", "id");
    expect(received(docStore, ids)).toEqual([]);
  });

  it("retries a 503 (the idempotency key makes it safe) and then saves", async () => {
    docStore.answer("POST", "/documents", {
      kind: "sequence",
      steps: [
        { kind: "fail", status: 503 },
        { kind: "json", body: { ok: true } },
      ],
    });
    const ids = newIds();
    const answer = await post(node.url, path, { id: "doc-2", content: "retry me" }, ids);
    expect(answer.body).toMatchObject({ status: "saved", id: "doc-2" });
    const saves = received(docStore, ids);
    expect(saves).toHaveLength(2);
    expect(saves.map((s) => s.headers["idempotency-key"])).toEqual(["doc-2", "doc-2"]);
  });

  it("never claims a save the doc store refused: 503 after every attempt", async () => {
    docStore.answer("POST", "/documents", { kind: "fail", status: 503 });
    const ids = newIds();
    const answer = await post(node.url, path, { id: "doc-3", content: "lost" }, ids);
    expectError(answer, 503, "unavailable", "doc-store answered 503");
    expect(received(docStore, ids)).toHaveLength(3);
  });

  it("answers 504 when the doc store hangs", async () => {
    docStore.answer("POST", "/documents", { kind: "hang" });
    const answer = await post(node.url, path, { id: "doc-4", content: "slow" });
    expectError(answer, 504, "deadline_exceeded", "doc-store: timed out");
  });

  it("answers 503 when the doc store answers garbage", async () => {
    docStore.answer("POST", "/documents", { kind: "garbage" });
    const answer = await post(node.url, path, { content: "x" });
    expectError(answer, 503, "unavailable", "doc-store answered an unreadable save receipt");
  });

  it("answers 503 naming the setting without a doc store", async () => {
    const answer = await post(bare.url, path, { content: "x" });
    expectError(answer, 503, "unavailable", "DOC_STORE_URL");
  });

  it.each([
    { name: "no content", body: {}, field: "content" },
    { name: "content over 1,000,000", body: { content: "x".repeat(1_000_001) }, field: "content" },
    {
      name: "a malformed hash",
      body: { content: "x", content_hash: "abc" },
      field: "content_hash",
    },
    { name: "an id over 256", body: { content: "x", id: "i".repeat(257) }, field: "id" },
    {
      name: "metadata over 64 KiB",
      body: { content: "x", metadata: { blob: "m".repeat(70_000) } },
      field: "metadata",
    },
  ])("answers 400 naming $field for $name", async ({ body, field }) => {
    expectError(await post(node.url, path, body), 400, "invalid_argument", field);
  });
});

describe("POST /report/request", () => {
  const path = "/report/request";

  it.each([
    { kind: "generate", route: "/reports/generate" },
    { kind: "life_of_ticket", route: "/reports/life-of-ticket" },
    { kind: "pr_confidence", route: "/reports/pr_confidence" },
  ])("proxies $kind to POST $route", async ({ kind, route }) => {
    reporting.answer("POST", route, { kind: "json", body: { title: `report ${kind}`, rows: [1] } });
    const ids = newIds();
    const answer = await post(
      node.url,
      path,
      { kind, format: "markdown", payload: { ticket: "ABC-1" } },
      ids,
    );
    expect(answer.status, answer.text).toBe(200);
    expect(answer.body).toEqual({ kind, report: { title: `report ${kind}`, rows: [1] } });
    const [call, ...others] = received(reporting, ids);
    expect(others).toEqual([]);
    expect(call?.method).toBe("POST");
    expect(call?.path).toBe(route);
    expect(call?.body).toEqual({ ticket: "ABC-1", format: "markdown" });
    expectPropagated(call, ids);
  });

  it("retries a 503", async () => {
    reporting.answer("POST", "/reports/generate", {
      kind: "sequence",
      steps: [
        { kind: "fail", status: 503 },
        { kind: "json", body: ["# Report"] },
      ],
    });
    const ids = newIds();
    const answer = await post(node.url, path, { kind: "generate" }, ids);
    expect(answer.body).toEqual({ kind: "generate", report: ["# Report"] });
    expect(received(reporting, ids)).toHaveLength(2);
  });

  it("answers 503 when reporting answers garbage", async () => {
    reporting.answer("POST", "/reports/generate", { kind: "garbage" });
    const answer = await post(node.url, path, { kind: "generate" });
    expectError(answer, 503, "unavailable", "reporting answered an unreadable report");
  });

  it("answers 400 when reporting refuses the request", async () => {
    reporting.answer("POST", "/reports/generate", { kind: "fail", status: 422 });
    const answer = await post(node.url, path, { kind: "generate" });
    expectError(answer, 400, "failed_precondition", "reporting answered 422");
  });

  it("answers 503 when reporting cannot be reached", async () => {
    const answer = await post(bare.url, path, { kind: "generate" });
    expectError(answer, 503, "unavailable", "reporting: connection refused");
  });

  it.each([
    { body: {}, field: "kind" },
    { body: { kind: "weekly" }, field: "kind" },
    { body: { kind: "generate", format: "Not A Format" }, field: "format" },
    { body: { kind: "generate", payload: [1] }, field: "payload" },
  ])("answers 400 naming $field for $body", async ({ body, field }) => {
    expectError(await post(node.url, path, body), 400, "invalid_argument", field);
  });
});

describe("POST /summarization/suggest", () => {
  const path = "/summarization/suggest";
  const suggestion = { allowed_providers: ["local"], providers: ["local", "cloud"], pii: true };

  it("summarizes with the providers the policy allows", async () => {
    analyzer.answer("POST", "/suggest", { kind: "json", body: suggestion });
    analyzer.answer("POST", "/summarize", { kind: "json", body: { summary: "short" } });
    const ids = newIds();
    const request = { content: "long text", keywords: ["ssn"], keyword_document: "ssn\niban" };
    const answer = await post(node.url, path, request, ids);
    expect(answer.status, answer.text).toBe(200);
    expect(answer.body).toEqual({
      suggestion,
      result: { summary: "short" },
      policy_override: false,
      providers_used: ["local"],
    });
    const calls = received(analyzer, ids);
    expect(calls.map((c) => `${c.method} ${c.path}`)).toEqual(["POST /suggest", "POST /summarize"]);
    expect(calls[0]?.body).toEqual({
      content: "long text",
      keywords: ["ssn"],
      keyword_document: "ssn\niban",
    });
    expect(calls[1]?.body).toEqual({
      content: "long text",
      providers: ["local"],
      override_policy: false,
    });
    for (const call of calls) expectPropagated(call, ids);
  });

  it("uses every provider when the policy is overridden", async () => {
    analyzer.answer("POST", "/suggest", { kind: "json", body: suggestion });
    analyzer.answer("POST", "/summarize", { kind: "json", body: { summary: "short" } });
    const ids = newIds();
    const answer = await post(node.url, path, { content: "t", override_policy: true }, ids);
    expect(answer.body).toMatchObject({
      policy_override: true,
      providers_used: ["local", "cloud"],
    });
    expect(received(analyzer, ids)[1]?.body).toEqual({
      content: "t",
      providers: ["local", "cloud"],
      override_policy: true,
    });
  });

  it("answers 503 for a suggestion without allowed providers, and summarizes nothing", async () => {
    analyzer.answer("POST", "/suggest", { kind: "json", body: { allowed: "local" } });
    const ids = newIds();
    const answer = await post(node.url, path, { content: "t" }, ids);
    expectError(answer, 503, "unavailable", "secure-analyzer answered an unreadable suggestion");
    expect(received(analyzer, ids).map((c) => c.path)).toEqual(["/suggest"]);
  });

  it("answers 504 when the summary hangs", async () => {
    analyzer.answer("POST", "/suggest", { kind: "json", body: suggestion });
    analyzer.answer("POST", "/summarize", { kind: "hang" });
    const answer = await post(node.url, path, { content: "t" });
    expectError(answer, 504, "deadline_exceeded", "secure-analyzer: timed out");
  });

  it("answers 400 naming the setting without a secure analyzer", async () => {
    const answer = await post(bare.url, path, { content: "t" });
    expectError(answer, 400, "failed_precondition", "SECURE_ANALYZER_URL");
  });

  it.each([
    { name: "no content", body: {}, field: "content" },
    {
      name: "101 keywords",
      body: { content: "t", keywords: Array(101).fill("k") },
      field: "keywords",
    },
    {
      name: "a long keyword",
      body: { content: "t", keywords: ["k".repeat(129)] },
      field: "keywords",
    },
    {
      name: "a long keyword document",
      body: { content: "t", keyword_document: "k".repeat(100_001) },
      field: "keyword_document",
    },
    {
      name: "a non-boolean override",
      body: { content: "t", override_policy: "yes" },
      field: "override_policy",
    },
  ])("answers 400 naming $field for $name", async ({ body, field }) => {
    expectError(await post(node.url, path, body), 400, "invalid_argument", field);
  });
});

describe("POST /demo/e2e", () => {
  const path = "/demo/e2e";

  it("bundles the summary and the log analysis, fetched from reporting", async () => {
    reporting.answer("POST", "/reports/generate", {
      kind: "json",
      body: { total: 4, by_severity: { high: 1 } },
    });
    reporting.answer("POST", "/reports/log_analysis", {
      kind: "json",
      body: { overview: { count: 2 }, sample: [] },
    });
    const ids = newIds();
    const request = {
      format: "markdown",
      log_service: "billing",
      log_level: "error",
      log_limit: 50,
    };
    const answer = await post(node.url, path, request, ids);
    expect(answer.status, answer.text).toBe(200);
    expect(answer.body).toEqual({
      summary: { total: 4, by_severity: { high: 1 } },
      log_analysis: { overview: { count: 2 }, sample: [] },
    });
    const calls = received(reporting, ids).sort((a, b) => a.path.localeCompare(b.path));
    expect(calls.map((c) => `${c.method} ${c.path} ${JSON.stringify(c.body)}`)).toEqual([
      'POST /reports/generate {"format":"markdown"}',
      'POST /reports/log_analysis {"format":"markdown","service":"billing","level":"error","limit":50}',
    ]);
    for (const call of calls) expectPropagated(call, ids);
  });

  it("asks for json and no filters by default", async () => {
    reporting.answer("POST", "/reports/generate", { kind: "json", body: {} });
    reporting.answer("POST", "/reports/log_analysis", { kind: "json", body: {} });
    const ids = newIds();
    expect((await post(node.url, path, {}, ids)).status).toBe(200);
    const bodies = received(reporting, ids).map((c) => c.body);
    expect(bodies).toEqual([{ format: "json" }, { format: "json" }]);
  });

  it("answers 503 when one of the two reports fails", async () => {
    reporting.answer("POST", "/reports/generate", { kind: "json", body: {} });
    reporting.answer("POST", "/reports/log_analysis", { kind: "fail", status: 503 });
    const ids = newIds();
    const answer = await post(node.url, path, {}, ids);
    expectError(answer, 503, "unavailable", "reporting answered 503");
    expect(received(reporting, ids).filter((c) => c.path === "/reports/log_analysis")).toHaveLength(
      3,
    );
  });

  it("answers 503 when reporting answers garbage", async () => {
    reporting.answer("POST", "/reports/generate", { kind: "garbage" });
    reporting.answer("POST", "/reports/log_analysis", { kind: "json", body: {} });
    const answer = await post(node.url, path, {});
    expectError(answer, 503, "unavailable", "reporting answered an unreadable summary");
  });

  it("answers 503 when reporting cannot be reached", async () => {
    const answer = await post(bare.url, path, {});
    expectError(answer, 503, "unavailable", "reporting: connection refused");
  });

  it.each([
    { body: { format: "xml" }, field: "format" },
    { body: { log_limit: 1001 }, field: "log_limit" },
    { body: { log_limit: -1 }, field: "log_limit" },
    { body: { log_level: "loud" }, field: "log_level" },
    { body: { log_service: "../etc" }, field: "log_service" },
  ])("answers 400 naming $field for $body", async ({ body, field }) => {
    expectError(await post(node.url, path, body), 400, "invalid_argument", field);
  });
});
