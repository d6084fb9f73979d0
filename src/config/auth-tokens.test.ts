import { describe, expect, it } from "vitest";
import { parseAuthTokens } from "./auth-tokens.js";
import { ConfigError } from "./keys.js";

function parseError(text: string): ConfigError {
  try {
    parseAuthTokens(text, "env");
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("expected a ConfigError");
}

describe("parseAuthTokens", () => {
  it("reads role:token pairs, spaces around them ignored", () => {
    expect(parseAuthTokens(" admin:t1, operator:t2 ,viewer:t3,service/billing:t4 ", "env")).toEqual(
      [
        { role: { kind: "admin" }, token: "t1" },
        { role: { kind: "operator" }, token: "t2" },
        { role: { kind: "viewer" }, token: "t3" },
        { role: { kind: "service", service: "billing" }, token: "t4" },
      ],
    );
  });

  it("reads an empty text as no tokens", () => {
    expect(parseAuthTokens("", "default")).toEqual([]);
    expect(parseAuthTokens("  ", "env")).toEqual([]);
  });

  it("keeps a colon inside a token", () => {
    expect(parseAuthTokens("admin:a:b", "env")).toEqual([
      { role: { kind: "admin" }, token: "a:b" },
    ]);
  });

  it.each([
    ["admin:s3cret-a,s3cret-b", /^AUTH_TOKENS from env: pair 2 is not "role:token"$/],
    ["root:s3cret-a", /^AUTH_TOKENS from env: pair 1: unknown role; expected viewer/],
    ["s3cret-a:admin", /^AUTH_TOKENS from env: pair 1: unknown role/],
    ["admin:", /^AUTH_TOKENS from env: pair 1 \(admin\) has an empty token$/],
    ["viewer:s3cret-a,admin:s3cret-a", /^AUTH_TOKENS from env: pair 2 \(admin\) repeats a token/],
    ["viewer:s3cret-a,,admin:s3cret-b", /^AUTH_TOKENS from env: pair 2 is not "role:token"$/],
    ["service/:s3cret-a", /^AUTH_TOKENS from env: pair 1: "service\/<name>" needs a service name/],
    ["service/Bil ling:s3cret-a", /pair 1: "service\/<name>" needs a service name/],
    [`service/${"a".repeat(101)}:s3cret-a`, /pair 1: "service\/<name>" needs a service name/],
    ["admin:s3cret a", /^AUTH_TOKENS from env: pair 1 \(admin\) has a token with spaces$/],
  ])("refuses %j, without echoing any token", (text, message) => {
    const error = parseError(text);
    expect(error.key).toBe("AUTH_TOKENS");
    expect(error.message).toMatch(message);
    expect(error.message).not.toContain("s3cret");
  });
});
