import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  ClearEventsRequestSchema,
  GetEventHistoryRequestSchema,
  RetryDlqRequestSchema,
} from "../../gen/orchestrator/v1/infrastructure_pb.js";
import {
  HeartbeatRequestSchema,
  ListServicesRequestSchema,
  ServiceStatus,
  WatchServicesRequestSchema,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { compilePathTemplate } from "./path-template.js";
import { type RequestMapping, requestMessageOf } from "./request-message.js";

const list: RequestMapping = {
  input: ListServicesRequestSchema,
  path: compilePathTemplate("/registry"),
  body: "",
};
const heartbeat: RequestMapping = {
  input: HeartbeatRequestSchema,
  path: compilePathTemplate("/registry/{name}/heartbeat"),
  body: "*",
};

function invalid(fn: () => unknown): ConnectError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.InvalidArgument);
    return error as ConnectError;
  }
  throw new Error("expected INVALID_ARGUMENT");
}

describe("requestMessageOf", () => {
  it("reads typed query parameters, in proto or JSON names", () => {
    const message = requestMessageOf(list, {
      params: {},
      query: { tag: "blue", pageSize: "25", status: "SERVICE_STATUS_HEALTHY" },
      body: undefined,
    });
    expect(message).toMatchObject({ tag: "blue", pageSize: 25, status: ServiceStatus.HEALTHY });
  });

  it("accepts enum numbers and timestamps in the query", () => {
    const message = requestMessageOf(
      { input: GetEventHistoryRequestSchema, path: compilePathTemplate("/h"), body: "" },
      { params: {}, query: { since: "2026-01-02T03:04:05Z", limit: "3" }, body: undefined },
    );
    expect(message).toMatchObject({ limit: 3, since: { seconds: 1767323045n } });
  });

  it("names a message-typed field (a timestamp) that does not decode, from the query or the body", () => {
    const history: RequestMapping = {
      input: GetEventHistoryRequestSchema,
      path: compilePathTemplate("/h"),
      body: "",
    };
    const fromQuery = invalid(() =>
      requestMessageOf(history, {
        params: {},
        query: { since: "2026-01-02T03:04:05Z", until: "tomorrow" },
        body: undefined,
      }),
    );
    expect(fromQuery.rawMessage).toMatch(/^until: cannot decode message google.protobuf.Timestamp/);
    const clear: RequestMapping = {
      input: ClearEventsRequestSchema,
      path: compilePathTemplate("/c"),
      body: "*",
    };
    const fromBody = invalid(() =>
      requestMessageOf(clear, { params: {}, query: {}, body: { event_type: "t", before: 12 } }),
    );
    expect(fromBody.rawMessage).toMatch(/^before: cannot decode message google.protobuf.Timestamp/);
  });

  it("names the field of an unknown enum name, in the query and in the body", () => {
    const fromQuery = invalid(() =>
      requestMessageOf(list, {
        params: {},
        query: { status: "SERVICE_STATUS_GONE" },
        body: undefined,
      }),
    );
    expect(fromQuery.rawMessage).toBe(
      'query parameter status: "SERVICE_STATUS_GONE" is not a value of orchestrator.v1.ServiceStatus',
    );
    const retry: RequestMapping = {
      input: RetryDlqRequestSchema,
      path: compilePathTemplate("/infrastructure/dlq/retry"),
      body: "*",
    };
    const fromBody = invalid(() =>
      requestMessageOf(retry, { params: {}, query: {}, body: { state: "DEAD_OR_ALIVE" } }),
    );
    expect(fromBody.rawMessage).toBe(
      'state: cannot decode enum orchestrator.v1.DlqState from JSON: "DEAD_OR_ALIVE"',
    );
    // Known names and numbers pass (an unknown number is the method's to judge: enums are open).
    expect(
      requestMessageOf(retry, { params: {}, query: {}, body: { state: "DLQ_STATE_DEAD" } }),
    ).toMatchObject({ state: 3 });
    expect(
      requestMessageOf(list, { params: {}, query: { status: "7" }, body: undefined }),
    ).toMatchObject({ status: 7 });
  });

  it("reads integers in the query as decimal only, 64-bit ones included", () => {
    const watch: RequestMapping = {
      input: WatchServicesRequestSchema,
      path: compilePathTemplate("/registry/watch"),
      body: "",
    };
    const read = (startRevision: string) =>
      requestMessageOf(watch, { params: {}, query: { startRevision }, body: undefined });
    expect(read("16")).toMatchObject({ startRevision: 16n });
    expect(read("+16")).toMatchObject({ startRevision: 16n });
    for (const text of ["0x10", "0o20", "0b10000", "1.6e1", "16.0", ""]) {
      expect(invalid(() => read(text)).rawMessage, text).toBe(
        "query parameter startRevision: expected a decimal integer (optional sign, then digits)",
      );
    }
  });

  it("lets the path variable win over the body", () => {
    const message = requestMessageOf(heartbeat, {
      params: { p0: "from-path" },
      query: {},
      body: { name: "from-body" },
    });
    expect(message).toMatchObject({ name: "from-path" });
  });

  it.each([
    ["an unknown query parameter", { bogus: "1" }],
    ["a number that is not one", { page_size: "abc" }],
    ["two values for a single field", { tag: ["a", "b"] }],
  ])("refuses %s", (_, query) => {
    invalid(() => requestMessageOf(list, { params: {}, query, body: undefined }));
  });

  it("refuses a body that is not an object, and query parameters where the body is the message", () => {
    invalid(() => requestMessageOf(heartbeat, { params: {}, query: {}, body: [1, 2] }));
    invalid(() => requestMessageOf(heartbeat, { params: {}, query: { name: "x" }, body: {} }));
  });

  it("never echoes an unbounded field name, in the body or the query", () => {
    const key = "k".repeat(10_000);
    const inBody = invalid(() =>
      requestMessageOf(heartbeat, { params: {}, query: {}, body: { [key]: 1 } }),
    );
    const inQuery = invalid(() =>
      requestMessageOf(list, { params: {}, query: { [key]: "1" }, body: undefined }),
    );
    const nested = invalid(() =>
      requestMessageOf(list, { params: {}, query: { [`${key}.x`]: "1" }, body: undefined }),
    );
    const whereBodyIsMessage = invalid(() =>
      requestMessageOf(heartbeat, { params: {}, query: { [key]: "1" }, body: {} }),
    );
    for (const error of [inBody, inQuery, nested, whereBodyIsMessage]) {
      // A message may quote the start of an input (64 characters), never more.
      expect(error.rawMessage).not.toContain("k".repeat(65));
      expect(error.rawMessage).toContain("(10000 characters)");
    }
  });
});
