// Rate limits per token (by role) and per client address, on REST and gRPC, through a real node.
// No timing is asserted: each limit is set to 1 a second (plus a burst of 1 per 10 s), and 30
// calls are made in a row, which the loopback serves well within the seconds that would let them
// all through; a call past the limit must be refused with RESOURCE_EXHAUSTED and a Retry-After.
import { randomUUID } from "node:crypto";
import type * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { PeerService } from "../../gen/orchestrator/v1/peer_pb.js";
import { RegistryService } from "../../gen/orchestrator/v1/registry_pb.js";
import { createGrpcJsClient } from "../../src/clients/grpc-js-client.js";
import {
  metricValue,
  type RunningOrchestrator,
  startOrchestrator,
} from "../support/orchestrator.js";

const calls = 30;
const tokens = {
  viewer: `viewer-${randomUUID()}`,
  operator: `operator-${randomUUID()}`,
  peer: `peer-${randomUUID()}`,
};
const authTokens = `viewer:${tokens.viewer},operator:${tokens.operator}`;

let node: RunningOrchestrator | undefined;
afterEach(async () => {
  await node?.close();
  node = undefined;
});

interface Answer {
  readonly status: number;
  readonly retryAfter: string | null;
  readonly body: { code?: string; message?: string };
}

async function listRegistry(url: string, token?: string): Promise<Answer> {
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  return answerOf(await fetch(`${url}/registry`, { headers }));
}

async function answerOf(response: Response): Promise<Answer> {
  return {
    status: response.status,
    retryAfter: response.headers.get("retry-after"),
    body: (await response.json()) as Answer["body"],
  };
}

async function inARow(count: number, call: () => Promise<Answer>): Promise<Answer[]> {
  const answers: Answer[] = [];
  for (let i = 0; i < count; i++) answers.push(await call());
  return answers;
}

/**
 * Some answers refused with 429 and a Retry-After, the others 200. `someAllowed`: the first call
 * of the run had a full allowance, so at least one went through.
 */
function expectLimited(
  answers: readonly Answer[],
  whose: string,
  { someAllowed = true } = {},
): void {
  const limited = answers.filter((a) => a.status === 429);
  if (someAllowed) expect(answers.filter((a) => a.status === 200).length).toBeGreaterThan(0);
  expect(limited.length).toBeGreaterThan(0);
  expect(answers.every((a) => a.status === 200 || a.status === 429)).toBe(true);
  for (const answer of limited) {
    expect(answer.body.code).toBe("resource_exhausted");
    expect(answer.body.message).toContain(whose);
    expect(Number(answer.retryAfter)).toBeGreaterThanOrEqual(1);
    expect(Number.isInteger(Number(answer.retryAfter))).toBe(true);
  }
}

describe("rate limits", () => {
  it("limit each token by its role's rate, on REST, and count the refusals", async () => {
    node = await startOrchestrator({
      env: {
        AUTH_TOKENS: authTokens,
        RATE_LIMIT_ROLES: "viewer:1",
        RATE_LIMIT_ADDRESS_RPS: "0",
      },
    });
    const url = node.url;
    expectLimited(await inARow(calls, () => listRegistry(url, tokens.viewer)), "this token");
    // Connect and a REST stream (a watch) are refused alike while the token is over its rate.
    const connect = await inARow(calls, async () => {
      const response = await fetch(`${url}/orchestrator.v1.RegistryService/ListServices`, {
        method: "POST",
        headers: { authorization: `Bearer ${tokens.viewer}`, "content-type": "application/json" },
        body: "{}",
      });
      return answerOf(response);
    });
    expectLimited(connect, "this token", { someAllowed: false });
    const watches = await inARow(calls, async () => {
      const watch = await fetch(`${url}/registry/watch`, {
        headers: { authorization: `Bearer ${tokens.viewer}` },
      });
      if (watch.status === 429) return answerOf(watch);
      // A new second may have let one through: that watch is dropped.
      await watch.body?.cancel();
      return { status: watch.status, retryAfter: null, body: {} };
    });
    expectLimited(watches, "this token", { someAllowed: false });
    // The operator's token has a bucket of its own (and the default operator rate).
    const operator = await inARow(calls, () => listRegistry(url, tokens.operator));
    expect(operator.map((a) => a.status)).toEqual(operator.map(() => 200));
    expect(
      await metricValue(
        node,
        "orchestrator_rate_limited_total",
        { limit: "token", role: "viewer", method: "ListServices" },
        { token: tokens.operator },
      ),
    ).toBeGreaterThan(0);
  });

  it("limit a token on gRPC too, with retry-after in the trailers", async () => {
    node = await startOrchestrator({
      env: { AUTH_TOKENS: authTokens, RATE_LIMIT_ROLES: "viewer:1", RATE_LIMIT_ADDRESS_RPS: "0" },
    });
    const client = createGrpcJsClient(RegistryService, node.address);
    try {
      const errors: grpc.ServiceError[] = [];
      for (let i = 0; i < calls; i++) {
        await client
          .listServices({}, { metadata: { authorization: `Bearer ${tokens.viewer}` } })
          .catch((error: grpc.ServiceError) => errors.push(error));
      }
      expect(errors.length).toBeGreaterThan(0);
      expect(errors.length).toBeLessThan(calls);
      for (const error of errors) {
        expect(error.code).toBe(8); // RESOURCE_EXHAUSTED
        expect(Number(error.metadata.get("retry-after")[0])).toBeGreaterThanOrEqual(1);
        expect(Number(error.metadata.get("grpc-retry-pushback-ms")[0])).toBeGreaterThanOrEqual(
          1000,
        );
      }
    } finally {
      client.close();
    }
  });

  it("limit a client address with no token, unless it is exempt", async () => {
    node = await startOrchestrator({
      env: { RATE_LIMIT_ADDRESS_RPS: "1", RATE_LIMIT_EXEMPT: "" },
    });
    const limitedUrl = node.url;
    expectLimited(await inARow(calls, () => listRegistry(limitedUrl)), "this client address");
    await node.close();
    // The default exempts loopback, where this test's client is.
    node = await startOrchestrator({ env: { RATE_LIMIT_ADDRESS_RPS: "1" } });
    const exemptUrl = node.url;
    const exempt = await inARow(calls, () => listRegistry(exemptUrl));
    expect(exempt.map((a) => a.status)).toEqual(exempt.map(() => 200));
  });

  it("count an unknown token against the address, so guessing tokens is slowed", async () => {
    node = await startOrchestrator({
      env: { AUTH_TOKENS: authTokens, RATE_LIMIT_ADDRESS_RPS: "1", RATE_LIMIT_EXEMPT: "" },
    });
    const url = node.url;
    const answers = await inARow(calls, () => listRegistry(url, `guess-${randomUUID()}`));
    expect(answers.filter((a) => a.status === 401).length).toBeGreaterThanOrEqual(1);
    expect(answers.filter((a) => a.status === 429).length).toBeGreaterThan(0);
    expect(answers.every((a) => a.status === 401 || a.status === 429)).toBe(true);
  });

  it("never limit the peers' methods", async () => {
    node = await startOrchestrator({
      env: {
        AUTH_TOKENS: authTokens,
        PEER_TOKEN: tokens.peer,
        RATE_LIMIT_ADDRESS_RPS: "1",
        RATE_LIMIT_EXEMPT: "",
      },
    });
    const client = createGrpcJsClient(PeerService, node.address);
    try {
      for (let i = 0; i < calls; i++) {
        await client.getDigest(
          { buckets: 16 },
          { metadata: { authorization: `Bearer ${tokens.peer}` } },
        );
      }
    } finally {
      client.close();
    }
    // The same address is limited on the other methods meanwhile.
    const url = node.url;
    expectLimited(
      await inARow(calls, () => listRegistry(url, tokens.operator)),
      "this client address",
    );
  });
});
