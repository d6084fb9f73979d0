import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues, type HandlerContext } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { Health } from "../../gen/health/v1/health_pb.js";
import { Access } from "../../gen/orchestrator/v1/options_pb.js";
import { RegistryService } from "../../gen/orchestrator/v1/registry_pb.js";
import { createGrpcHealthService } from "../services/grpc-health-service.js";
import { unimplementedService } from "../services/unimplemented.js";
import { createServingStatus } from "../system/serving-status.js";
import { type AuthDenial, accessOf, createAccessCheck, createAuthInterceptor } from "./auth.js";
import { wrapService } from "./chain.js";

const tokens = [
  { role: { kind: "admin" }, token: "adm" },
  { role: { kind: "operator" }, token: "op" },
  { role: { kind: "viewer" }, token: "view" },
  { role: { kind: "service", service: "billing" }, token: "bill" },
] as const;

function codeOf(run: () => void): Code | "ok" {
  try {
    run();
    return "ok";
  } catch (error) {
    if (error instanceof ConnectError) return error.code;
    throw error;
  }
}

describe("createAccessCheck", () => {
  const denials: AuthDenial[] = [];
  const check = createAccessCheck({ tokens, peerToken: "peer", onDenied: (d) => denials.push(d) });
  const call = (access: Access, token?: string, service?: string) =>
    codeOf(() =>
      check({
        access,
        authorization: token === undefined ? undefined : `Bearer ${token}`,
        what: "M",
        ...(service === undefined ? {} : { service }),
        clientAddress: "10.0.0.7",
      }),
    );

  it("orders viewer < operator < admin", () => {
    expect([Access.VIEWER, Access.OPERATOR, Access.ADMIN].map((a) => call(a, "view"))).toEqual([
      "ok",
      Code.PermissionDenied,
      Code.PermissionDenied,
    ]);
    expect([Access.VIEWER, Access.OPERATOR, Access.ADMIN].map((a) => call(a, "op"))).toEqual([
      "ok",
      "ok",
      Code.PermissionDenied,
    ]);
    expect([Access.VIEWER, Access.OPERATOR, Access.ADMIN].map((a) => call(a, "adm"))).toEqual([
      "ok",
      "ok",
      "ok",
    ]);
  });

  it("lets a service token act on its own service only, and on nothing else", () => {
    expect(call(Access.SERVICE, "bill", "billing")).toBe("ok");
    expect(call(Access.SERVICE, "bill", "payments")).toBe(Code.PermissionDenied);
    expect(call(Access.VIEWER, "bill")).toBe(Code.PermissionDenied);
    expect(call(Access.SERVICE, "op", "payments")).toBe("ok");
    expect(call(Access.SERVICE, "view", "billing")).toBe(Code.PermissionDenied);
  });

  it("keeps peer methods to the peer token, and the peer token to them", () => {
    expect(call(Access.PEER, "peer")).toBe("ok");
    expect(call(Access.PEER, "adm")).toBe(Code.PermissionDenied);
    expect(call(Access.VIEWER, "peer")).toBe(Code.PermissionDenied);
  });

  it("is UNAUTHENTICATED without a token or with an unknown one; public needs none", () => {
    expect(call(Access.VIEWER)).toBe(Code.Unauthenticated);
    expect(call(Access.VIEWER, "nope")).toBe(Code.Unauthenticated);
    expect(
      codeOf(() => check({ access: Access.VIEWER, authorization: "Basic adm", what: "M" })),
    ).toBe(Code.Unauthenticated);
    expect(call(Access.PUBLIC)).toBe("ok");
  });

  it("tells of each refusal without the token", () => {
    denials.length = 0;
    call(Access.ADMIN, "view");
    call(Access.SERVICE, "bill", "payments");
    call(Access.VIEWER, "nope");
    expect(denials).toEqual([
      { what: "M", reason: "wrong_role", role: "viewer", clientAddress: "10.0.0.7" },
      { what: "M", reason: "wrong_service", role: "service/billing", clientAddress: "10.0.0.7" },
      { what: "M", reason: "unknown_token", clientAddress: "10.0.0.7" },
    ]);
  });

  it("is open with no tokens, except peer methods while PEER_TOKEN is set", () => {
    const open = createAccessCheck({ peerToken: "peer" });
    const run = (access: Access, authorization?: string) =>
      codeOf(() => open({ access, authorization, what: "M" }));
    expect(run(Access.ADMIN)).toBe("ok");
    expect(run(Access.PEER)).toBe(Code.Unauthenticated);
    expect(run(Access.PEER, "Bearer peer")).toBe("ok");
  });

  it("closes peer methods when auth is on and PEER_TOKEN is not set", () => {
    const noPeer = createAccessCheck({ tokens });
    expect(
      codeOf(() => noPeer({ access: Access.PEER, authorization: "Bearer adm", what: "M" })),
    ).toBe(Code.PermissionDenied);
  });
});

describe("createAuthInterceptor", () => {
  it("refuses at start a method without a rule", () => {
    const impl = createGrpcHealthService(createServingStatus(), []);
    expect(() =>
      wrapService(Health, impl, [createAuthInterceptor({ externalAccess: new Map() })]),
    ).toThrow("grpc.health.v1.Health.Check has no (orchestrator.v1.access) option");
    expect(() => accessOf(Health.method.check, new Map())).toThrow(/declare who may call it/);
  });

  it("reads the service name from the decoded request", async () => {
    const wrapped = wrapService(RegistryService, unimplementedService(RegistryService, "test"), [
      createAuthInterceptor({ tokens }),
    ]);
    const heartbeat = wrapped.methods.get("Heartbeat");
    if (heartbeat === undefined || heartbeat.streaming) throw new Error("no unary Heartbeat");
    const context = contextWith("Bearer bill");
    const call = (name: string) =>
      heartbeat.call(create(RegistryService.method.heartbeat.input, { name }), context).then(
        () => "ok" as const,
        (error: unknown) => ConnectError.from(error).code,
      );
    await expect(call("payments")).resolves.toBe(Code.PermissionDenied);
    // Past the check, the stand-in implementation answers UNIMPLEMENTED.
    await expect(call("billing")).resolves.toBe(Code.Unimplemented);
  });
});

function contextWith(authorization: string): HandlerContext {
  return {
    requestHeader: new Headers({ authorization }),
    values: createContextValues(),
    signal: new AbortController().signal,
  } as unknown as HandlerContext;
}
