// Every RPC of every service the node serves, called with every kind of caller over REST (the
// routes the google.api.http rules make) and over gRPC (grpc-js): the access rules come from the
// descriptors, so a new RPC is covered as soon as it exists, and one without a rule fails here.
import { randomUUID } from "node:crypto";
import { create, type DescMethod } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { Access } from "../../gen/orchestrator/v1/options_pb.js";
import { servedServiceTypes } from "../../src/app.js";
import { grpcJsServiceDefinition } from "../../src/clients/grpc-js-client.js";
import { forEachLimited } from "../../src/for-each-limited.js";
import { restRoutesOf } from "../../src/gateway/rest-gateway.js";
import { accessOf } from "../../src/interceptors/auth.js";
import { wrapService } from "../../src/interceptors/chain.js";
import { unimplementedService } from "../../src/services/unimplemented.js";
import {
  metricValue,
  type RunningOrchestrator,
  startOrchestrator,
} from "../support/orchestrator.js";

const tokens = {
  admin: `admin-${randomUUID()}`,
  operator: `operator-${randomUUID()}`,
  viewer: `viewer-${randomUUID()}`,
  billing: `billing-${randomUUID()}`,
  peer: `peer-${randomUUID()}`,
  unknown: `unknown-${randomUUID()}`,
};

type CallerKind = "none" | "unknown" | "viewer" | "operator" | "admin" | "own" | "other" | "peer";

interface Caller {
  readonly kind: CallerKind;
  readonly label: string;
  readonly token?: string;
  /** The service the request names (ACCESS_SERVICE methods read it). */
  readonly service: string;
}

const callers: readonly Caller[] = [
  { kind: "none", label: "no token", service: "billing" },
  { kind: "unknown", label: "an unknown token", token: tokens.unknown, service: "billing" },
  { kind: "viewer", label: "viewer", token: tokens.viewer, service: "billing" },
  { kind: "operator", label: "operator", token: tokens.operator, service: "billing" },
  { kind: "admin", label: "admin", token: tokens.admin, service: "billing" },
  { kind: "own", label: "service/billing on billing", token: tokens.billing, service: "billing" },
  {
    kind: "other",
    label: "service/billing on payments",
    token: tokens.billing,
    service: "payments",
  },
  { kind: "peer", label: "the peer token", token: tokens.peer, service: "billing" },
];

/** Who each rule lets in, written out here rather than taken from the code under test. */
const allowed: Readonly<Record<Access, readonly CallerKind[]>> = {
  [Access.UNSPECIFIED]: [],
  [Access.PUBLIC]: ["none", "unknown", "viewer", "operator", "admin", "own", "other", "peer"],
  [Access.VIEWER]: ["viewer", "operator", "admin"],
  [Access.OPERATOR]: ["operator", "admin"],
  [Access.ADMIN]: ["admin"],
  [Access.PEER]: ["peer"],
  [Access.SERVICE]: ["operator", "admin", "own"],
};

type Verdict = "allowed" | "unauthenticated" | "permission_denied";

function expected(level: Access, caller: Caller): Verdict {
  if (allowed[level].includes(caller.kind)) return "allowed";
  return caller.kind === "none" || caller.kind === "unknown"
    ? "unauthenticated"
    : "permission_denied";
}

const methods: readonly DescMethod[] = servedServiceTypes.flatMap((s) => s.methods);

describe("access rules", () => {
  it.each(methods.map((m) => [`${m.parent.typeName}.${m.name}`, m] as const))(
    "%s has one",
    (_, method) => {
      expect(accessOf(method)).not.toBe(Access.UNSPECIFIED);
    },
  );
});

let node: RunningOrchestrator;
const clients = new Map<string, grpc.Client>();

beforeAll(async () => {
  node = await startOrchestrator({
    env: {
      AUTH_TOKENS: [
        `admin:${tokens.admin}`,
        `operator:${tokens.operator}`,
        `viewer:${tokens.viewer}`,
        `service/billing:${tokens.billing}`,
      ].join(","),
      PEER_TOKEN: tokens.peer,
      // Jobs an operator may start call out: fail them fast.
      OUTBOUND_TIMEOUT_MS: "1000",
      OUTBOUND_MAX_ATTEMPTS: "1",
    },
  });
  for (const service of servedServiceTypes) {
    const Client = grpc.makeGenericClientConstructor(
      grpcJsServiceDefinition(service),
      service.name,
    );
    clients.set(service.typeName, new Client(node.address, grpc.credentials.createInsecure()));
  }
});

afterAll(async () => {
  for (const client of clients.values()) client.close();
  await node?.close();
});

interface Case {
  readonly name: string;
  readonly method: DescMethod;
  readonly caller: Caller;
  readonly verdict: Verdict;
}

function cases(): Case[] {
  return methods.flatMap((method) =>
    callers.map((caller) => ({
      name: `${method.parent.name}.${method.name} as ${caller.label}`,
      method,
      caller,
      verdict: expected(accessOf(method), caller),
    })),
  );
}

/** Calls run many at a time, each bounded: an allowed stream is cut after its deadline. */
const callDeadlineMs = 3000;
const parallelCalls = 16;

describe("over gRPC (grpc-js)", () => {
  it("every method answers every caller as its rule says", async () => {
    const mismatches: string[] = [];
    await forEachLimited(cases(), parallelCalls, async (c) => {
      const code = await grpcCall(c.method, c.caller);
      const verdict = verdictOfCode(code);
      if (verdict !== c.verdict) mismatches.push(`${c.name}: ${verdict} (${Code[code] ?? code})`);
    });
    expect(mismatches).toEqual([]);
  });
});

describe("over REST", () => {
  const routes = restRoutesOf(
    servedServiceTypes.map((s) => wrapService(s, unimplementedService(s, "test"), [])),
  );

  it("every route answers every caller as its method's rule says", async () => {
    const restCases = cases().flatMap((c) =>
      routes
        .filter((r) => r.target.method === c.method || sameMethod(r.target.method, c.method))
        .map((route) => ({ ...c, route })),
    );
    expect(restCases.length).toBeGreaterThan(callers.length * 40);
    const mismatches: string[] = [];
    await forEachLimited(restCases, parallelCalls, async (c) => {
      const { status, challenge } = await restCall(
        c.route.method,
        c.route.path,
        c.method,
        c.caller,
      );
      const verdict =
        status === 401 ? "unauthenticated" : status === 403 ? "permission_denied" : "allowed";
      if (verdict !== c.verdict)
        mismatches.push(`${c.route.method} ${c.route.path} ${c.name}: ${status}`);
      if (status === 401 && challenge !== "Bearer")
        mismatches.push(`${c.name}: 401 without a challenge`);
    });
    expect(mismatches).toEqual([]);
  });

  it("GET /metrics takes a viewer token, and counts the refusals by reason and method", async () => {
    const status = async (token?: string) =>
      (
        await fetch(`${node.url}/metrics`, {
          headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
        })
      ).status;
    expect(await status()).toBe(401);
    expect(await status(tokens.unknown)).toBe(401);
    expect(await status(tokens.billing)).toBe(403);
    expect(await status(tokens.peer)).toBe(403);
    expect(await status(tokens.viewer)).toBe(200);
    const failures = (labels: Record<string, string>) =>
      metricValue(node, "orchestrator_auth_failures_total", labels, { token: tokens.viewer });
    expect(await failures({ reason: "missing_token", method: "/metrics" })).toBeGreaterThan(0);
    expect(await failures({ reason: "wrong_service", method: "RegisterService" })).toBeGreaterThan(
      0,
    );
    expect(await failures({ reason: "wrong_role", method: "ClearEvents" })).toBeGreaterThan(0);
  });

  it("records refusals as auth.denied events, without the token", async () => {
    // Events are rate-limited: try again until one of ours got through.
    await vi.waitFor(
      async () => {
        await fetch(`${node.url}/infrastructure/events/clear`, {
          method: "POST",
          headers: { authorization: `Bearer ${tokens.viewer}`, "content-type": "application/json" },
          body: "{}",
        });
        const history = await fetch(
          `${node.url}/infrastructure/events/history?event_types=auth.denied&subject=ClearEvents`,
          { headers: { authorization: `Bearer ${tokens.viewer}` } },
        );
        const text = await history.text();
        expect(history.status, text).toBe(200);
        const events = (JSON.parse(text) as { events: { payload: Record<string, unknown> }[] })
          .events;
        expect(events.map((e) => e.payload)).toContainEqual(
          // The peer address of the connection, as the server saw it: an RPC knows it too.
          expect.objectContaining({
            method: "ClearEvents",
            reason: "wrong_role",
            role: "viewer",
            client_address: expect.stringMatching(/^(::ffff:)?127\.0\.0\.1$/),
          }),
        );
        for (const token of Object.values(tokens)) expect(text).not.toContain(token);
      },
      { timeout: 15_000, interval: 300 },
    );
  });
});

function sameMethod(a: DescMethod, b: DescMethod): boolean {
  return a.parent.typeName === b.parent.typeName && a.name === b.name;
}

function verdictOfCode(code: number): Verdict {
  if (code === Code.Unauthenticated) return "unauthenticated";
  if (code === Code.PermissionDenied) return "permission_denied";
  return "allowed";
}

function requestOf(method: DescMethod, caller: Caller) {
  const named = method.input.fields.some((f) => f.localName === "name");
  return create(method.input, named ? ({ name: caller.service } as never) : {});
}

function metadataOf(caller: Caller): grpc.Metadata {
  const metadata = new grpc.Metadata();
  if (caller.token !== undefined) metadata.set("authorization", `Bearer ${caller.token}`);
  return metadata;
}

/** The call's status code; an allowed stream that is still open at its deadline counts as OK. */
function grpcCall(method: DescMethod, caller: Caller): Promise<number> {
  const client = clients.get(method.parent.typeName);
  if (client === undefined) throw new Error(`no client for ${method.parent.typeName}`);
  const handlers = client as unknown as Record<string, (...args: unknown[]) => unknown>;
  const invoke = handlers[method.localName];
  if (invoke === undefined) throw new Error(`no grpc-js method ${method.localName}`);
  const options = { deadline: new Date(Date.now() + callDeadlineMs) };
  const metadata = metadataOf(caller);
  return new Promise((resolve) => {
    const settle = (error: grpc.ServiceError | null) => resolve(error ? error.code : 0);
    switch (method.methodKind) {
      case "unary":
        invoke.call(client, requestOf(method, caller), metadata, options, settle);
        return;
      case "server_streaming": {
        const call = invoke.call(
          client,
          requestOf(method, caller),
          metadata,
          options,
        ) as grpc.ClientReadableStream<unknown>;
        endOfStream(call, resolve);
        return;
      }
      default: {
        const call = invoke.call(client, metadata, options) as grpc.ClientDuplexStream<
          unknown,
          unknown
        >;
        endOfStream(call, resolve);
        call.end();
      }
    }
  });
}

/** A stream's verdict comes with its first message (it passed) or its status. */
function endOfStream(
  call: grpc.ClientReadableStream<unknown> | grpc.ClientDuplexStream<unknown, unknown>,
  resolve: (code: number) => void,
): void {
  call.on("data", () => {
    resolve(0);
    call.cancel();
  });
  call.on("status", (status: grpc.StatusObject) => resolve(status.code));
  call.on("error", () => {});
}

async function restCall(
  verb: string,
  template: string,
  method: DescMethod,
  caller: Caller,
): Promise<{ status: number; challenge: string | null }> {
  const path = template.replace(/\{[^}]+\}/g, (variable) =>
    variable.startsWith("{name") ? caller.service : "x",
  );
  const headers: Record<string, string> =
    caller.token === undefined ? {} : { authorization: `Bearer ${caller.token}` };
  const hasBody = verb !== "GET" && verb !== "DELETE";
  const named =
    method.input.fields.some((f) => f.localName === "name") && !template.includes("{name");
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), callDeadlineMs);
  try {
    const response = await fetch(`${node.url}${path}`, {
      method: verb,
      headers: hasBody ? { ...headers, "content-type": "application/json" } : headers,
      ...(hasBody ? { body: JSON.stringify(named ? { name: caller.service } : {}) } : {}),
      signal: controller.signal,
    });
    const challenge = response.headers.get("www-authenticate");
    // A stream that was let in goes on: its status line is the answer.
    await response.body?.cancel();
    return { status: response.status, challenge };
  } finally {
    clearTimeout(timer);
  }
}
