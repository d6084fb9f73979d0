import { describe, expect, it } from "vitest";
import type { IdSource } from "../ids.js";
import { isWellFormedCorrelationId, resolveCallMeta, traceparentOf } from "./call-meta.js";

const ids: IdSource = {
  uuid: () => "00000000-0000-4000-8000-000000000001",
  traceId: () => "11111111111111111111111111111111",
  spanId: () => "2222222222222222",
};

describe("resolveCallMeta", () => {
  it("keeps a well-formed correlation id and continues the caller's trace", () => {
    const meta = resolveCallMeta(
      "order-42:retry.1",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      ids,
      "10.1.2.3",
    );
    expect(meta).toEqual({
      correlationId: "order-42:retry.1",
      traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
      spanId: "2222222222222222",
      parentSpanId: "00f067aa0ba902b7",
      traceFlags: 1,
      clientAddress: "10.1.2.3",
    });
    expect(traceparentOf(meta)).toBe("00-4bf92f3577b34da6a3ce929d0e0e4736-2222222222222222-01");
  });

  it.each([
    ["empty", ""],
    ["too long", "a".repeat(129)],
    ["a space", "a b"],
    ["markup", "<script>"],
    ["a newline", "a\nb"],
  ])("replaces a correlation id with %s", (_, value) => {
    expect(isWellFormedCorrelationId(value)).toBe(false);
    expect(resolveCallMeta(value, undefined, ids).correlationId).toBe(ids.uuid());
  });

  it.each([
    "garbage",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
  ])("starts a new trace for the invalid traceparent %s", (traceparent) => {
    const meta = resolveCallMeta(undefined, traceparent, ids);
    expect(meta.traceId).toBe(ids.traceId());
    expect(meta.parentSpanId).toBe("");
  });
});
