import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { httpStatusOfCode } from "../gateway/http-status.js";
import { codeOfKind, toConnectError } from "./connect-errors.js";
import { DomainError, domainErrorKinds } from "./domain-error.js";

describe("error tables", () => {
  it.each(domainErrorKinds)("maps the domain kind %s to a Connect code", (kind) => {
    expect(Object.values(Code)).toContain(codeOfKind[kind]);
  });

  it("gives every Connect code an HTTP status", () => {
    const codes = Object.values(Code).filter((c): c is Code => typeof c === "number");
    for (const code of codes) expect(httpStatusOfCode[code]).toBeGreaterThanOrEqual(400);
    expect(httpStatusOfCode[Code.InvalidArgument]).toBe(400);
    expect(httpStatusOfCode[Code.NotFound]).toBe(404);
    expect(httpStatusOfCode[Code.AlreadyExists]).toBe(409);
    expect(httpStatusOfCode[Code.PermissionDenied]).toBe(403);
    expect(httpStatusOfCode[Code.Unauthenticated]).toBe(401);
    expect(httpStatusOfCode[Code.ResourceExhausted]).toBe(429);
    expect(httpStatusOfCode[Code.Unimplemented]).toBe(501);
    expect(httpStatusOfCode[Code.Unavailable]).toBe(503);
    expect(httpStatusOfCode[Code.DeadlineExceeded]).toBe(504);
    expect(httpStatusOfCode[Code.Internal]).toBe(500);
  });

  it("keeps a domain error's message but never its cause", () => {
    const cause = new Error("connect ECONNREFUSED 10.0.0.7:6379");
    const converted = toConnectError(
      new DomainError("unavailable", "the store is down", { cause }),
    );
    expect(converted).toBeInstanceOf(ConnectError);
    expect((converted as ConnectError).code).toBe(Code.Unavailable);
    expect((converted as ConnectError).rawMessage).toBe("the store is down");
    expect(JSON.stringify(converted)).not.toContain("10.0.0.7");
  });

  it("hides an internal error's message", () => {
    const converted = toConnectError(new DomainError("internal", "index 7 out of range in shard"));
    expect((converted as ConnectError).rawMessage).toBe("internal error");
  });
});
