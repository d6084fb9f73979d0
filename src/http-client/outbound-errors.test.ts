import { describe, expect, it } from "vitest";
import { DomainError, domainErrorKinds } from "../errors/domain-error.js";
import {
  OutboundError,
  outboundErrorKinds,
  toDomainError,
  upstreamStatusError,
} from "./outbound-errors.js";

describe("toDomainError", () => {
  it.each(outboundErrorKinds)("maps %s to a domain kind other than internal", (kind) => {
    const error = toDomainError(new OutboundError(kind, "what happened"), "doc-store");

    expect(domainErrorKinds).toContain(error.kind);
    expect(error.kind).not.toBe("internal");
  });

  it.each([
    ["invalid_url", "failed_precondition"],
    ["destination_refused", "failed_precondition"],
    ["timeout", "timeout"],
    ["circuit_open", "unavailable"],
    ["network", "unavailable"],
    ["too_large", "unavailable"],
    ["redirect_refused", "unavailable"],
    ["too_many_redirects", "unavailable"],
  ] as const)("maps %s to %s", (kind, domainKind) => {
    expect(toDomainError(new OutboundError(kind, "x"), "doc-store").kind).toBe(domainKind);
  });

  it("names the target before the client's message and keeps the cause", () => {
    const outbound = new OutboundError("network", "connection refused", {
      cause: new Error("connect ECONNREFUSED 10.0.0.7:8080"),
    });

    const error = toDomainError(outbound, "github-agent");

    expect(error).toBeInstanceOf(DomainError);
    expect(error.message).toBe("github-agent: connection refused");
    expect(error.cause).toBe(outbound);
  });
});

describe("upstreamStatusError", () => {
  it.each([
    [500, "unavailable"],
    [502, "unavailable"],
    [503, "unavailable"],
    [429, "unavailable"],
    [404, "failed_precondition"],
    [400, "failed_precondition"],
    [401, "failed_precondition"],
    [409, "failed_precondition"],
    [302, "failed_precondition"],
  ] as const)("reads %i as %s", (status, kind) => {
    const error = upstreamStatusError(status, "reporting");

    expect(error.kind).toBe(kind);
    expect(error.message).toBe(`reporting answered ${status}`);
    expect(error.cause).toBeUndefined();
  });

  it.each([200, 204, 99, 600, 404.5])("refuses %s, which is no failed answer", (status) => {
    expect(() => upstreamStatusError(status, "reporting")).toThrow(RangeError);
  });
});
