// Hostile input over REST (issue 11): malformed and boundary requests for every route the
// gateway derives from the google.api.http rules, against a real node with auth on. Properties:
// never a 5xx (503 included: no dependency is down here), errors shaped {code, message, details},
// small, and never repeating a long input; the node still answers /health; a rejected write
// stores nothing. fast-check prints the seed and the shrunk case of a failure, to replay it.
import { randomUUID } from "node:crypto";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Access } from "../../gen/orchestrator/v1/options_pb.js";
import { servedServiceTypes } from "../../src/app.js";
import { type RestRoute, restRoutesOf } from "../../src/gateway/rest-gateway.js";
import { accessOf } from "../../src/interceptors/auth.js";
import { wrapService } from "../../src/interceptors/chain.js";
import { unimplementedService } from "../../src/services/unimplemented.js";
import {
  callsDownstream,
  HostileTally,
  hostileNodeEnv,
  restAnswerProblems,
  sketch,
} from "../support/hostile-checks.js";
import {
  createRestClient,
  type RestAnswer,
  type RestCase,
  restCaseOf,
} from "../support/hostile-rest.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { byProfile, recordReliability } from "../support/reliability-report.js";

const adminToken = `admin-${randomUUID()}`;
const peerToken = `peer-${randomUUID()}`;

/** Every route of every served service, from the same derivation the gateway uses. */
const routes: readonly RestRoute[] = restRoutesOf(
  servedServiceTypes.map((s) => wrapService(s, unimplementedService(s, "hostile"), [])),
);

function tokenFor(route: RestRoute): string {
  return accessOf(route.target.method) === Access.PEER ? peerToken : adminToken;
}

function label(route: RestRoute): string {
  return `${route.method} ${route.path}`;
}

/** A route (by index, so that a failure prints short) and a hostile request for it. */
function routeCases(token: (route: RestRoute) => string | undefined) {
  return fc.nat({ max: routes.length - 1 }).chain((index) => {
    const route = routes[index] as RestRoute;
    return restCaseOf(route, token(route)).map((c) => [index, c] as const);
  });
}

let node: RunningOrchestrator;
let client: ReturnType<typeof createRestClient>;

beforeAll(async () => {
  node = await startOrchestrator({
    env: hostileNodeEnv({ admin: adminToken, peer: peerToken }),
  });
  client = createRestClient(node.url, { streamWaitMs: 500, patienceMs: 30_000 });
});

afterAll(async () => {
  await client?.close();
  await node?.close();
});

/** Inputs per route: the short form keeps `npm test` quick, the full form digs. */
const runsPerRoute = byProfile(8, 300);
/** A health check every so many inputs: the node must still be there. */
const healthEvery = 25;

async function expectAlive(tally: HostileTally): Promise<void> {
  const answer = await client.send(
    { verb: "GET", url: "/health", headers: {}, longStrings: [] },
    false,
  );
  tally.requests++;
  if (answer?.status !== 200)
    tally.fail(`GET /health answered ${answer?.status}: the node is gone`);
}

/** Sends one case and checks its answer; a stream still silent when left counts as served. */
async function sendChecked(
  tally: HostileTally,
  route: RestRoute,
  c: RestCase,
  streamWaitMs?: number,
): Promise<number | undefined> {
  tally.inputs++;
  const answer = await client.send(c, route.target.streaming, streamWaitMs);
  tally.requests++;
  if (tally.inputs % healthEvery === 0) await expectAlive(tally);
  if (answer === undefined) return undefined;
  if (answer.status < 400) tally.accepted++;
  const problems = answerProblems(route, c, answer);
  if (problems.length > 0) {
    tally.fail(
      `${c.verb} ${sketch(c.url, 120)} (${label(route)}) answered ${answer.status}: ${problems.join("; ")}`,
    );
  }
  return answer.status;
}

/** What is wrong with an answer; a stream's status comes with its first line. */
function answerProblems(route: RestRoute, c: RestCase, answer: RestAnswer): string[] {
  if (route.target.streaming && answer.status === 200) {
    // Once a stream has started, an error is its last line: `{"error": {code, message, details}}`.
    const firstLine = answer.text.split("\n")[0] ?? "";
    if (!firstLine.startsWith('{"error"')) return [];
    const error = JSON.stringify((JSON.parse(firstLine) as { error: unknown }).error);
    return restAnswerProblems(400, error, c.longStrings, { hasBody: true, dependencyDown: false });
  }
  return restAnswerProblems(answer.status, answer.text, c.longStrings, {
    hasBody: c.verb !== "HEAD",
    dependencyDown: callsDownstream(route.target.method),
  });
}

function record(name: string, tally: HostileTally, note?: string): void {
  recordReliability({
    suite: "hostile-input",
    name,
    inputs: tally.inputs,
    requests: tally.requests,
    errors: tally.problems.length,
    ...(note === undefined ? {} : { note }),
  });
}

describe("hostile REST requests", () => {
  it("every route answers every generated request without a server error or an echo", async () => {
    const tally = new HostileTally();
    try {
      await fc.assert(
        fc.asyncProperty(
          routeCases((route) => tokenFor(route)),
          async ([index, c]) => {
            const route = routes[index] as RestRoute;
            await sendChecked(tally, route, c);
          },
        ),
        { numRuns: routes.length * runsPerRoute },
      );
      await expectAlive(tally);
    } finally {
      record(
        `REST: ${routes.length} routes, admin or peer token`,
        tally,
        `${tally.accepted} accepted`,
      );
    }
    expect(tally.problems).toEqual([]);
  }, 600_000);

  it("without a token, every route refuses (or serves if public), never with a server error", async () => {
    const tally = new HostileTally();
    let refused = 0;
    try {
      await fc.assert(
        fc.asyncProperty(
          routeCases(() => undefined),
          async ([index, c]) => {
            const route = routes[index] as RestRoute;
            // A refusal comes at once: a stream that must refuse is given all the time it needs,
            // so that a slow refusal on a loaded machine is never taken for a stream left open.
            const isPublic = accessOf(route.target.method) === Access.PUBLIC;
            const status = await sendChecked(tally, route, c, isPublic ? undefined : 30_000);
            if (status === 401 || status === 403) refused++;
            if (!isPublic && status !== undefined && status < 400) {
              tally.fail(
                `${c.verb} ${sketch(c.url, 120)} (${label(route)}) served ${status} without a token`,
              );
            }
          },
        ),
        { numRuns: routes.length * Math.ceil(runsPerRoute / 2) },
      );
    } finally {
      record("REST: no token", tally, `${refused} refused 401/403`);
    }
    expect(tally.problems).toEqual([]);
    expect(refused).toBeGreaterThan(0);
  }, 600_000);

  it("a rejected write leaves the stored state as it was", async () => {
    const tally = new HostileTally();
    const writes = routes
      .map((route, index) => ({ route, index }))
      .filter(({ route }) => route.method !== "GET");
    let rejected = 0;
    try {
      await fc.assert(
        fc.asyncProperty(
          fc
            .constantFrom(...writes)
            .chain(({ route, index }) =>
              restCaseOf(route, tokenFor(route)).map((c) => [index, c] as const),
            ),
          async ([index, c]) => {
            const route = routes[index] as RestRoute;
            const before = await storedState(tally);
            const status = await sendChecked(tally, route, c);
            if (status === undefined || status < 400) return;
            rejected++;
            const after = await storedState(tally);
            const changed = changesBetween(before, after);
            if (changed !== undefined) {
              tally.fail(
                `${c.verb} ${sketch(c.url, 120)} answered ${status} but changed ${changed}`,
              );
            }
          },
        ),
        { numRuns: writes.length * runsPerRoute },
      );
    } finally {
      record(
        "REST: rejected writes store nothing",
        tally,
        `${rejected} rejected writes compared, ${tally.accepted} accepted`,
      );
    }
    expect(tally.problems).toEqual([]);
  }, 600_000);
});

/** What the node stores that a write could change, read cheaply and deterministically. */
interface StoredState {
  /** Each registry entry's declared fields (not its health or timestamps, which move on their own). */
  readonly services: ReadonlyMap<string, string>;
  readonly totalSagas: number;
}

const declaredFields = [
  "name",
  "base_url",
  "openapi_url",
  "health_url",
  "endpoints",
  "metadata",
  "tags",
  "version",
  "ttl_seconds",
] as const;

async function storedState(tally: HostileTally): Promise<StoredState> {
  const read = async (url: string) => {
    const answer = await client.send(
      { verb: "GET", url, headers: { authorization: `Bearer ${adminToken}` }, longStrings: [] },
      false,
    );
    tally.requests++;
    if (answer?.status !== 200) tally.fail(`GET ${url} answered ${answer?.status}`);
    return JSON.parse(answer.text) as Record<string, unknown>;
  };
  const registry = await read("/registry?page_size=1000");
  const services = new Map<string, string>();
  for (const entry of (registry.services ?? []) as Record<string, unknown>[]) {
    services.set(String(entry.name), JSON.stringify(declaredFields.map((f) => entry[f])));
  }
  const sagas = await read("/infrastructure/saga/stats");
  return { services, totalSagas: Number(sagas.total_sagas ?? 0) };
}

/**
 * What changed from `before` to `after`, or undefined. An entry that is gone is not a change a
 * write made: a lease runs out on its own.
 */
function changesBetween(before: StoredState, after: StoredState): string | undefined {
  for (const [name, declared] of after.services) {
    const was = before.services.get(name);
    if (was === undefined) return `the registry: ${sketch(name, 40)} appeared`;
    if (was !== declared) return `the registry: ${sketch(name, 40)} changed`;
  }
  if (after.totalSagas !== before.totalSagas) {
    return `the sagas: ${before.totalSagas} then ${after.totalSagas}`;
  }
  return undefined;
}
