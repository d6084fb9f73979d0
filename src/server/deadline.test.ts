import type { IncomingHttpHeaders } from "node:http";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { capDeadlineHeaders, longestDeadlineMs, parseGrpcTimeout } from "./deadline.js";

describe("parseGrpcTimeout", () => {
  it.each([
    ["1H", 3_600_000],
    ["48H", 172_800_000],
    ["2M", 120_000],
    ["10S", 10_000],
    ["250m", 250],
    ["1500u", 1.5],
    ["2000000n", 2],
    ["00000007S", 7_000],
  ])("reads %s as %d ms", (text, ms) => {
    expect(parseGrpcTimeout(text)).toBe(ms);
  });

  it("caps what a Node timer could not wait for", () => {
    expect(longestDeadlineMs).toBeLessThanOrEqual(2 ** 31 - 1);
    for (const text of ["99999999H", "99999999M", "99999999S", "597H", "2147484S"]) {
      expect(parseGrpcTimeout(text), text).toBe(longestDeadlineMs);
    }
    expect(parseGrpcTimeout("596H")).toBe(596 * 3_600_000);
  });

  it("is undefined without a header", () => {
    expect(parseGrpcTimeout(undefined)).toBeUndefined();
  });

  it.each(["", "soon", "10", "S", "123456789S", "1.5S", "-1S", "10s", " 10S", "10 S", "1h"])(
    "refuses %j with INVALID_ARGUMENT, without repeating it",
    (text) => {
      let caught: unknown;
      try {
        parseGrpcTimeout(text);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(ConnectError);
      expect((caught as ConnectError).code).toBe(Code.InvalidArgument);
      expect((caught as ConnectError).rawMessage).toBe(
        "invalid grpc-timeout: expected 1 to 8 digits and a unit (H, M, S, m, u or n)",
      );
    },
  );
});

describe("capDeadlineHeaders", () => {
  const capped = (headers: IncomingHttpHeaders) => {
    capDeadlineHeaders(headers);
    return headers;
  };

  it("writes a deadline beyond the longest one down to it, in both protocols' headers", () => {
    expect(capped({ "grpc-timeout": "99999999H", "connect-timeout-ms": "9999999999" })).toEqual({
      "grpc-timeout": `${longestDeadlineMs / 1000}S`,
      "connect-timeout-ms": String(longestDeadlineMs),
    });
    expect(parseGrpcTimeout(`${longestDeadlineMs / 1000}S`)).toBe(longestDeadlineMs);
  });

  it("leaves a deadline within reach as it is", () => {
    expect(capped({ "grpc-timeout": "48H", "connect-timeout-ms": "172800000" })).toEqual({
      "grpc-timeout": "48H",
      "connect-timeout-ms": "172800000",
    });
  });

  it("keeps a malformed value malformed, but short", () => {
    const headers = capped({ "grpc-timeout": "x".repeat(5000), "connect-timeout-ms": "soon" });
    expect(headers["grpc-timeout"]).toBe(`${"x".repeat(16)}...`);
    expect(headers["connect-timeout-ms"]).toBe("soon");
  });
});
