import { toJson } from "@bufbuild/protobuf";
import { status as grpcStatus, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  DlqState,
  GetDlqStatsResponseSchema,
  InfrastructureService,
  ListDlqEntriesResponseSchema,
} from "../../gen/orchestrator/v1/infrastructure_pb.js";
import { createGrpcJsClient, type GrpcJsClient } from "../../src/clients/grpc-js-client.js";
import type { DeadLetterInput, DeadLetters } from "../../src/dlq/dead-letters.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import type { Json, Reply } from "../support/rest.js";

// The dead-letter queue as operators meet it: a real node on loopback (memory store), entries
// added through the node's own DeadLetters as a capability would add them (the `withDeadLetters`
// test hook of AppDeps), REST over HTTP/1.1 and gRPC over grpc-js.

const token = "op-secret";
const operator = { authorization: `Bearer ${token}` };
const jsonOptions = { useProtoFieldName: true, alwaysEmitImplicit: true } as const;

let node: RunningOrchestrator;
let deadLetters: DeadLetters;
let grpc: GrpcJsClient<typeof InfrastructureService>;
const handled: string[] = [];

beforeAll(async () => {
  node = await startOrchestrator({
    env: {
      OPERATOR_TOKEN: token,
      // No automatic retry during the tests: every retry here is asked for.
      DLQ_RETRY_BASE_DELAY_MS: "3600000",
    },
    deps: {
      withDeadLetters(queue) {
        deadLetters = queue;
        queue.handle("test.ok", async (entry) => {
          handled.push(entry.dlqId);
        });
        queue.handle("test.fail", async (entry) => {
          handled.push(entry.dlqId);
          throw new Error("downstream said no");
        });
      },
    },
  });
  grpc = createGrpcJsClient(InfrastructureService, node.address);
});
afterAll(async () => {
  grpc?.close();
  await node?.close();
});

async function call(method: string, path: string, body?: unknown, auth = true): Promise<Reply> {
  const response = await fetch(`${node.url}${path}`, {
    method,
    headers: {
      ...(auth ? operator : {}),
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: response.status, text, body: (parsed ?? {}) as Json };
}

function add(overrides: Partial<DeadLetterInput> = {}): Promise<string> {
  return deadLetters.add({
    eventType: "test.ok",
    payload: { order: 42, tags: ["a", "b"], nested: { ok: false } },
    failureReason: "connection refused",
    serviceName: "billing",
    correlationId: "corr-e2e",
    maxAttempts: 0,
    ...overrides,
  });
}

async function grpcFailure(call: Promise<unknown>): Promise<ServiceError> {
  const error: unknown = await call.then(
    () => undefined,
    (failure: unknown) => failure,
  );
  expect(error, "the call succeeded").toBeInstanceOf(Error);
  return error as ServiceError;
}

/** Every entry the listing holds, page by page over REST. */
async function listAll(query: string, pageSize: number): Promise<Json[]> {
  const entries: Json[] = [];
  let pageToken = "";
  for (let pages = 0; pages < 100; pages++) {
    const tokenPart = pageToken ? `&page_token=${pageToken}` : "";
    const reply = await call(
      "GET",
      `/infrastructure/dlq?page_size=${pageSize}${query}${tokenPart}`,
    );
    expect(reply.status, reply.text).toBe(200);
    entries.push(...(reply.body.entries as Json[]));
    pageToken = String(reply.body.next_page_token);
    if (pageToken === "") return entries;
  }
  throw new Error("the pages never ended");
}

describe("DLQ over REST and gRPC", () => {
  const ids = {
    ok: [] as string[],
    fail: [] as string[],
    pending: [] as string[],
    orphan: [] as string[],
  };

  it("starts empty (a read needs a token too)", async () => {
    const refused = await call("GET", "/infrastructure/dlq/stats", undefined, false);
    expect(refused.status).toBe(401);
    const stats = await call("GET", "/infrastructure/dlq/stats");
    expect(stats.status).toBe(200);
    expect(stats.body).toEqual({
      total_events: 0,
      pending_retry: 0,
      retrying: 0,
      dead_events: 0,
      resolved: 0,
      retried_events: 0,
      by_type: {},
      by_service: {},
    });
  });

  it("counts what was added, by state, type and service", async () => {
    for (let i = 0; i < 3; i++) ids.ok.push(await add());
    for (let i = 0; i < 2; i++) {
      ids.fail.push(await add({ eventType: "test.fail", serviceName: "jira-agent" }));
    }
    ids.pending.push(await add({ maxAttempts: 3, serviceName: "" }));
    ids.orphan.push(await add({ eventType: "no.handler" }));
    const stats = await call("GET", "/infrastructure/dlq/stats");
    expect(stats.body).toMatchObject({
      total_events: 7,
      pending_retry: 1,
      retrying: 0,
      dead_events: 6,
      resolved: 0,
      retried_events: 0,
      by_type: { "test.ok": 4, "test.fail": 2, "no.handler": 1 },
      by_service: { billing: 4, "jira-agent": 2 },
    });
    const first = await listAll("", 1);
    expect(stats.body.oldest_failed_at).toBe(first[0]?.first_failed_at);
    // The same over gRPC.
    const viaGrpc = await grpc.getDlqStats({}, { metadata: operator });
    expect(toJson(GetDlqStatsResponseSchema, viaGrpc, jsonOptions)).toEqual(stats.body);
  });

  it("lists entries oldest first, a page at a time, filtered", async () => {
    const all = [...ids.ok, ...ids.fail, ...ids.pending, ...ids.orphan] as string[];
    const listed = await listAll("", 3);
    expect(listed.map((e) => e.dlq_id)).toEqual(all);
    expect(listed[0]).toEqual({
      dlq_id: ids.ok[0],
      event_id: "",
      event_type: "test.ok",
      payload: { order: 42, tags: ["a", "b"], nested: { ok: false } },
      failure_reason: "connection refused",
      service_name: "billing",
      correlation_id: "corr-e2e",
      attempts: 0,
      max_attempts: 0,
      state: "DLQ_STATE_DEAD",
      first_failed_at: expect.any(String),
      last_failed_at: listed[0]?.first_failed_at,
    });
    const pending = listed.find((e) => e.dlq_id === ids.pending[0]);
    expect(pending).toMatchObject({
      state: "DLQ_STATE_PENDING_RETRY",
      next_retry_at: expect.any(String),
    });
    expect((await listAll("&state=DLQ_STATE_PENDING_RETRY", 10)).map((e) => e.dlq_id)).toEqual(
      ids.pending,
    );
    expect((await listAll("&event_type=test.fail", 1)).map((e) => e.dlq_id)).toEqual(ids.fail);
    expect(
      (await listAll("&service_name=billing&state=DLQ_STATE_DEAD", 2)).map((e) => e.dlq_id),
    ).toEqual([...ids.ok, ...ids.orphan]);
    // gRPC pages the same way, with the same tokens.
    const page = await grpc.listDlqEntries(
      { pageSize: 4, state: DlqState.DEAD },
      { metadata: operator },
    );
    expect(page.entries.map((e) => e.dlqId)).toEqual(
      all.filter((id) => id !== ids.pending[0]).slice(0, 4),
    );
    const rest2 = await call(
      "GET",
      `/infrastructure/dlq?page_size=4&state=DLQ_STATE_DEAD&page_token=${page.nextPageToken}`,
    );
    const viaGrpc = await grpc.listDlqEntries(
      { pageSize: 4, state: DlqState.DEAD, pageToken: page.nextPageToken },
      { metadata: operator },
    );
    expect(toJson(ListDlqEntriesResponseSchema, viaGrpc, jsonOptions)).toEqual(rest2.body);
  });

  it("needs the operator token to retry", async () => {
    const refused = await call("POST", "/infrastructure/dlq/retry", { dlq_ids: ids.ok }, false);
    expect(refused.status).toBe(401);
    expect(handled).toEqual([]);
  });

  it("retries entries by id over REST, each once, and says what happened to each", async () => {
    const wanted = [ids.ok[0], ids.fail[0], ids.orphan[0], "0000000000000-0000000000000000"];
    const reply = await call("POST", "/infrastructure/dlq/retry", { dlq_ids: wanted });
    expect(reply.status, reply.text).toBe(200);
    expect(reply.body).toEqual({
      retried_events: 2,
      total_events: 4,
      failed_events: 1,
      results: [
        { dlq_id: wanted[0], outcome: "resolved", state: "DLQ_STATE_RESOLVED", error: "" },
        {
          dlq_id: wanted[1],
          outcome: "failed",
          state: "DLQ_STATE_DEAD",
          error: "downstream said no",
        },
        {
          dlq_id: wanted[2],
          outcome: "skipped",
          state: "DLQ_STATE_DEAD",
          error: "no handler for event type no.handler on this node: left as it was",
        },
        {
          dlq_id: wanted[3],
          outcome: "skipped",
          state: "DLQ_STATE_UNSPECIFIED",
          error: "no such entry",
        },
      ],
    });
    expect(handled).toEqual([wanted[0], wanted[1]]);
    const [failed] = await listAll("&event_type=test.fail", 1);
    expect(failed).toMatchObject({
      state: "DLQ_STATE_DEAD",
      attempts: 1,
      failure_reason: "downstream said no",
    });
  });

  it("retries the entries a filter selects over gRPC, up to the limit", async () => {
    handled.length = 0;
    const reply = await grpc.retryDlq(
      { eventType: "test.ok", state: DlqState.DEAD, limit: 1 },
      { metadata: operator },
    );
    // The oldest DEAD test.ok entry left: the first one was resolved above.
    expect(reply.results.map((r) => [r.dlqId, r.outcome])).toEqual([[ids.ok[1], "resolved"]]);
    expect(reply).toMatchObject({ retriedEvents: 1, totalEvents: 1, failedEvents: 0 });
    // Every PENDING_RETRY or DEAD entry of billing: the orphan has no handler here, and says so.
    const all = await grpc.retryDlq({ serviceName: "billing" }, { metadata: operator });
    expect(all.results.map((r) => [r.dlqId, r.outcome])).toEqual([
      [ids.ok[2], "resolved"],
      [ids.orphan[0], "skipped"],
    ]);
    const stats = await call("GET", "/infrastructure/dlq/stats");
    expect(stats.body).toMatchObject({
      total_events: 4,
      pending_retry: 1,
      resolved: 3,
      dead_events: 3,
      retried_events: 4,
      by_type: { "test.fail": 2, "no.handler": 1, "test.ok": 1 },
      by_service: { "jira-agent": 2, billing: 1 },
    });
  });

  const long = (n: number) => "x".repeat(n);
  const badGets: [string, string][] = [
    ["page_size=1001", "page_size"],
    ["page_size=-1", "page_size"],
    ["page_size=abc", "page_size"],
    ["page_size=1.5", "page_size"],
    ["state=DLQ_STATE_BOGUS", "state"],
    ["state=99", "state"],
    ["page_token=bm90LWEtdG9rZW4", "page_token"],
    [`page_token=${long(513)}`, "page_token"],
    [`event_type=${long(129)}`, "event_type"],
    [`service_name=${long(101)}`, "service_name"],
  ];
  it.each(badGets)("GET /infrastructure/dlq?%s answers 400 naming %s", async (query, field) => {
    const reply = await call("GET", `/infrastructure/dlq?${query}`);
    expect(reply.status, reply.text).toBe(400);
    expect(reply.body.code).toBe("invalid_argument");
    expect(String(reply.body.message)).toContain(field);
  });

  const badRetries: [string, unknown, string][] = [
    ["an empty id", { dlq_ids: [""] }, "dlq_ids"],
    ["an id too long", { dlq_ids: [long(129)] }, "dlq_ids"],
    ["too many ids", { dlq_ids: Array.from({ length: 1_001 }, (_, i) => `id-${i}`) }, "dlq_ids"],
    ["ids that are not a list", { dlq_ids: "abc" }, "dlq_ids"],
    ["a limit too high", { limit: 10_001 }, "limit"],
    ["a negative limit", { limit: -1 }, "limit"],
    ["a RESOLVED state", { state: "DLQ_STATE_RESOLVED" }, "state"],
    ["a RETRYING state", { state: "DLQ_STATE_RETRYING" }, "state"],
    ["an unknown state number", { state: 99 }, "state"],
    ["an unknown state name", { state: "DEAD_OR_ALIVE" }, "state"],
    ["ids with a type filter", { dlq_ids: ["a"], event_type: "test.ok" }, "event_type"],
    ["ids with a limit", { dlq_ids: ["a"], limit: 5 }, "limit"],
    ["ids with a state", { dlq_ids: ["a"], state: "DLQ_STATE_DEAD" }, "state"],
    ["a type too long", { event_type: long(129) }, "event_type"],
    ["a service too long", { service_name: long(101) }, "service_name"],
    ["an unknown field", { dlq_idz: ["a"] }, "dlq_idz"],
  ];
  it.each(badRetries)(
    "POST /infrastructure/dlq/retry with %s answers 400 naming the field",
    async (_, body, field) => {
      const reply = await call("POST", "/infrastructure/dlq/retry", body);
      expect(reply.status, reply.text).toBe(400);
      expect(reply.body.code).toBe("invalid_argument");
      expect(String(reply.body.message)).toContain(field);
    },
  );

  it("answers malformed JSON with 400, never 500", async () => {
    const reply = await call("POST", "/infrastructure/dlq/retry", "{");
    expect(reply.status, reply.text).toBe(400);
  });

  it("refuses bad input over gRPC with INVALID_ARGUMENT naming the field", async () => {
    const cases: [Promise<unknown>, string][] = [
      [grpc.retryDlq({ state: DlqState.RESOLVED }, { metadata: operator }), "state"],
      [grpc.retryDlq({ state: 42 as DlqState }, { metadata: operator }), "state"],
      [grpc.retryDlq({ dlqIds: ["a"], serviceName: "b" }, { metadata: operator }), "service_name"],
      [grpc.listDlqEntries({ state: 42 as DlqState }, { metadata: operator }), "state"],
      [grpc.listDlqEntries({ pageToken: "garbage" }, { metadata: operator }), "page_token"],
      [grpc.listDlqEntries({ pageSize: 5_000 }, { metadata: operator }), "page_size"],
    ];
    for (const [failing, field] of cases) {
      const failure = await grpcFailure(failing);
      expect(failure.code).toBe(grpcStatus.INVALID_ARGUMENT);
      expect(failure.details).toContain(field);
    }
  });
});
