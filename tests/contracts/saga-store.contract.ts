import { afterEach, describe, expect, it } from "vitest";
import type { Clock } from "../../src/clock.js";
import { DomainError, type DomainErrorKind } from "../../src/errors/domain-error.js";
import type { IdSource } from "../../src/ids.js";
import {
  type NewSaga,
  type Saga,
  type SagaStatus,
  type SagaStepStatus,
  sagaStatuses,
  sagaStepStatuses,
} from "../../src/sagas/model.js";
import { sagaRule, sagaRules, stepRule, stepRules } from "../../src/sagas/saga-machine.js";
import { type SagaStoreLimits, sagaWeight } from "../../src/sagas/saga-records.js";
import type { SagaStore } from "../../src/sagas/saga-store.js";
import { createManualClock } from "../support/manual-clock.js";

/** How a store implementation is brought up for the contract suite. */
export interface SagaStoreHarness {
  /** A new, empty store of its own (for Redis: a fresh key prefix), opened. */
  create(
    options?: Partial<SagaStoreLimits>,
    deps?: { clock?: Clock; ids?: IdSource },
  ): Promise<SagaStore>;
  /** A second store over the same data, as another process would open it. */
  twin?(store: SagaStore): Promise<SagaStore>;
  /** The same data opened anew after `store` was closed: a restart. */
  reopen?(store: SagaStore): Promise<SagaStore>;
  /** Releases everything created since the last cleanup. */
  cleanup(): Promise<void>;
}

/** A saga of three steps: two in parallel (group 0), then one (group 1). */
export function newSaga(sagaId: string, overrides: Partial<NewSaga> = {}): NewSaga {
  return {
    sagaId,
    name: "ingestion",
    runId: `run-${sagaId}`,
    correlationId: `corr-${sagaId}`,
    steps: [
      {
        name: "github",
        action: "POST github-agent /ingest",
        compensation: "DELETE github",
        group: 0,
      },
      { name: "jira", action: "POST jira-agent /ingest", compensation: "DELETE jira", group: 0 },
      { name: "index", action: "POST indexer /build", compensation: "DELETE index", group: 1 },
    ],
    ...overrides,
  };
}

/** A saga of one step. */
function oneStep(sagaId: string): NewSaga {
  return newSaga(sagaId, { steps: [{ name: "only", action: "do", compensation: "undo" }] });
}

/** The DomainError `promise` rejects with (the test fails if it resolves or rejects otherwise). */
export async function failureOf(promise: Promise<unknown>): Promise<DomainError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DomainError);
  return error as DomainError;
}

async function expectKind(promise: Promise<unknown>, kind: DomainErrorKind): Promise<string> {
  const failure = await failureOf(promise);
  expect(failure.kind, failure.message).toBe(kind);
  return failure.message;
}

async function read(store: SagaStore, sagaId: string): Promise<Saga> {
  const saga = await store.get(sagaId);
  if (saga === undefined) throw new Error(`saga ${sagaId} is not stored`);
  return saga;
}

/** Moves the saga to `to` from the version it has now. */
export async function moveSaga(store: SagaStore, sagaId: string, to: SagaStatus, error?: string) {
  const saga = await read(store, sagaId);
  return store.transition(sagaId, {
    expectedVersion: saga.version,
    to,
    ...(error === undefined ? {} : { error }),
  });
}

/** Moves step `index` to `to` from the version it has now. */
export async function moveStep(
  store: SagaStore,
  sagaId: string,
  index: number,
  to: SagaStepStatus,
  extra: { error?: string; output?: Record<string, never> | Record<string, unknown> } = {},
) {
  const step = (await read(store, sagaId)).steps[index];
  if (step === undefined) throw new Error(`no step ${index}`);
  return store.transitionStep(sagaId, index, {
    expectedVersion: step.version,
    to,
    ...(extra.error === undefined ? {} : { error: extra.error }),
    ...(extra.output === undefined ? {} : { output: extra.output as never }),
  });
}

/** A move in the joint machine of a one-step saga. */
type Move =
  | { readonly of: "saga"; readonly to: SagaStatus }
  | { readonly of: "step"; readonly to: SagaStepStatus };

/** Where a one-step saga can be: its status and its step's. */
interface Joint {
  readonly saga: SagaStatus;
  readonly step: SagaStepStatus;
}

const jointKey = (joint: Joint) => `${joint.saga}/${joint.step}`;

/**
 * Every state a one-step saga can reach from PENDING/PENDING by the table, with the shortest path
 * there (breadth first). Derived from the table here, independently of the stores.
 */
function reachableStates(): { joint: Joint; path: Move[] }[] {
  const start: Joint = { saga: "PENDING", step: "PENDING" };
  const found = new Map<string, { joint: Joint; path: Move[] }>([
    [jointKey(start), { joint: start, path: [] }],
  ]);
  const queue = [found.get(jointKey(start)) as { joint: Joint; path: Move[] }];
  while (queue.length > 0) {
    const { joint, path } = queue.shift() as { joint: Joint; path: Move[] };
    const next: { joint: Joint; move: Move }[] = [];
    for (const rule of sagaRules) {
      if (rule.from !== joint.saga) continue;
      if (rule.stepsIn !== undefined && !rule.stepsIn.includes(joint.step)) continue;
      const step = rule.effects.finish && joint.step === "PENDING" ? "SKIPPED" : joint.step;
      next.push({ joint: { saga: rule.to, step }, move: { of: "saga", to: rule.to } });
    }
    for (const rule of stepRules) {
      if (rule.from !== joint.step || !rule.sagaIn.includes(joint.saga)) continue;
      next.push({ joint: { saga: joint.saga, step: rule.to }, move: { of: "step", to: rule.to } });
    }
    for (const candidate of next) {
      if (found.has(jointKey(candidate.joint))) continue;
      const entry = { joint: candidate.joint, path: [...path, candidate.move] };
      found.set(jointKey(candidate.joint), entry);
      queue.push(entry);
    }
  }
  return [...found.values()];
}

async function drive(store: SagaStore, sagaId: string, path: readonly Move[]): Promise<Saga> {
  await store.create(oneStep(sagaId));
  for (const move of path) {
    if (move.of === "saga") await moveSaga(store, sagaId, move.to);
    else await moveStep(store, sagaId, 0, move.to);
  }
  return read(store, sagaId);
}

/** The behaviour every SagaStore must have. */
export function sagaStoreContract(name: string, harness: SagaStoreHarness): void {
  describe(`SagaStore contract: ${name}`, () => {
    afterEach(() => harness.cleanup());

    describe("context and leases", () => {
      it("keeps a saga's context, in listings too, and refuses one over maxContextBytes", async () => {
        const store = await harness.create({ maxContextBytes: 100 });
        const context = { sources: ["github"], scope: { repo: "a/b" }, trace_id: "t" };
        expect((await store.create(newSaga("c1", { context }))).context).toEqual(context);
        expect((await store.get("c1"))?.context).toEqual(context);
        const page = await store.list({ status: "PENDING" });
        expect(page.sagas[0]?.context).toEqual(context);
        const refused = await failureOf(
          store.create(newSaga("c2", { context: { big: "x".repeat(200) } })),
        );
        expect(refused.kind).toBe("invalid");
        expect(refused.message).toMatch(/^context would take \d+ bytes/);
      });

      it("gives a lease to one node until it expires, then to another with a higher token", async () => {
        const clock = createManualClock();
        const store = await harness.create({}, { clock });
        await store.create(newSaga("l1"));
        const first = await store.takeLease("l1", { holder: "a", ttlMs: 1_000 });
        expect(first).toEqual({ holder: "a", token: 1, expiresAt: clock.now() + 1_000 });
        expect((await store.get("l1"))?.lease).toEqual(first);
        expect((await store.get("l1"))?.version).toBe(1);
        expect((await failureOf(store.takeLease("l1", { holder: "b", ttlMs: 1_000 }))).kind).toBe(
          "conflict",
        );
        clock.advance(500);
        const renewed = await store.renewLease("l1", { holder: "a", token: 1 }, 1_000);
        expect(renewed).toEqual({ holder: "a", token: 1, expiresAt: clock.now() + 1_000 });
        clock.advance(1_001);
        const second = await store.takeLease("l1", { holder: "b", ttlMs: 1_000 });
        expect(second.token).toBe(2);
        const lost = await failureOf(store.renewLease("l1", { holder: "a", token: 1 }, 1_000));
        expect(lost.kind).toBe("failed_precondition");
        expect(lost.message).toBe("the lease of saga l1 is lost: it was taken over (token 2)");
        const forced = await store.takeLease("l1", { holder: "c", ttlMs: 1_000, force: true });
        expect(forced.token).toBe(3);
        expect((await store.list({ status: "PENDING" })).sagas[0]?.lease).toEqual(forced);
      });

      it("takes a lease in the create itself when asked: token 1, held against other takers until it expires", async () => {
        const clock = createManualClock();
        const store = await harness.create({}, { clock });
        const created = await store.create(
          newSaga("lc1", { lease: { holder: "a", ttlMs: 1_000 } }),
        );
        const lease = { holder: "a", token: 1, expiresAt: clock.now() + 1_000 };
        expect(created.lease).toEqual(lease);
        expect((await store.get("lc1"))?.lease).toEqual(lease);
        expect((await store.get("lc1"))?.version).toBe(1);
        expect((await failureOf(store.takeLease("lc1", { holder: "b", ttlMs: 1_000 }))).kind).toBe(
          "conflict",
        );
        const running = await store.transition("lc1", {
          expectedVersion: 1,
          to: "RUNNING",
          lease: { holder: "a", token: 1 },
        });
        expect(running.status).toBe("RUNNING");
        clock.advance(1_001);
        expect((await store.takeLease("lc1", { holder: "b", ttlMs: 1_000 })).token).toBe(2);
        const refused = await failureOf(
          store.create(newSaga("lc2", { lease: { holder: "", ttlMs: 1_000 } })),
        );
        expect(refused.kind).toBe("invalid");
        expect(await store.get("lc2")).toBeUndefined();
      });

      it("passes a transition carrying a lease only while it is the saga's", async () => {
        const store = await harness.create();
        await store.create(newSaga("f1"));
        const a = await store.takeLease("f1", { holder: "a", ttlMs: 60_000 });
        const proofA = { holder: "a", token: a.token };
        const running = await store.transition("f1", {
          expectedVersion: 1,
          to: "RUNNING",
          lease: proofA,
        });
        const moved = await store.transitionStep("f1", 0, {
          expectedVersion: 1,
          to: "RUNNING",
          lease: proofA,
        });
        await store.takeLease("f1", { holder: "b", ttlMs: 60_000, force: true });
        const refusals = await Promise.all(
          [
            store.transitionStep("f1", 0, {
              expectedVersion: moved.step.version,
              to: "COMPLETED",
              lease: proofA,
            }),
            store.transition("f1", {
              expectedVersion: running.version + 1,
              to: "ABORTED",
              lease: proofA,
            }),
          ].map(failureOf),
        );
        for (const refused of refusals) {
          expect(refused.kind).toBe("failed_precondition");
          expect(refused.message).toBe("the lease of saga f1 is lost: it was taken over (token 2)");
        }
        expect((await store.get("f1"))?.steps[0]?.status).toBe("RUNNING");
        const done = await store.transitionStep("f1", 0, {
          expectedVersion: moved.step.version,
          to: "COMPLETED",
          lease: { holder: "b", token: 2 },
        });
        expect(done.step.status).toBe("COMPLETED");
      });

      it("refuses a lease on a finished saga, and on an unknown one", async () => {
        const store = await harness.create();
        await store.create(newSaga("d1"));
        await store.transition("d1", { expectedVersion: 1, to: "ABORTED" });
        const finished = await failureOf(store.takeLease("d1", { holder: "a", ttlMs: 10 }));
        expect(finished.kind).toBe("failed_precondition");
        expect(finished.message).toBe("saga d1 is ABORTED: it takes no lease");
        expect((await failureOf(store.takeLease("nope", { holder: "a", ttlMs: 10 }))).kind).toBe(
          "not_found",
        );
        expect((await failureOf(store.takeLease("d1", { holder: "", ttlMs: 10 }))).kind).toBe(
          "invalid",
        );
      });
    });

    describe("create and get", () => {
      it("stores a new saga PENDING at version 1, each step PENDING at version 1", async () => {
        const clock = createManualClock();
        const store = await harness.create({}, { clock });
        const created = await store.create(newSaga("s1"));
        const expected: Saga = {
          sagaId: "s1",
          name: "ingestion",
          runId: "run-s1",
          correlationId: "corr-s1",
          status: "PENDING",
          createdAt: clock.now(),
          updatedAt: clock.now(),
          finishedAt: undefined,
          error: "",
          version: 1,
          context: undefined,
          lease: undefined,
          steps: newSaga("s1").steps.map((s, index) => ({
            index,
            name: s.name,
            action: s.action ?? "",
            compensation: s.compensation ?? "",
            group: s.group ?? 0,
            status: "PENDING",
            attempts: 0,
            error: "",
            startedAt: undefined,
            finishedAt: undefined,
            compensatedAt: undefined,
            output: undefined,
            version: 1,
          })),
        };
        expect(created).toEqual(expected);
        expect(await store.get("s1")).toEqual(expected);
        expect(await store.get("nope")).toBeUndefined();
      });

      it("gives a saga an id from the id source when the caller gives none, and fills defaults", async () => {
        const ids: IdSource = {
          uuid: () => "11111111-2222-4333-8444-555555555555",
          traceId: () => `${"0".repeat(31)}1`,
          spanId: () => `${"0".repeat(15)}1`,
        };
        const store = await harness.create({}, { ids });
        const created = await store.create({ name: "bare", steps: [{ name: "a" }] });
        expect(created.sagaId).toBe("11111111-2222-4333-8444-555555555555");
        expect(created.runId).toBe("");
        expect(created.correlationId).toBe("");
        expect(created.steps[0]).toMatchObject({ action: "", compensation: "", group: 0 });
        expect(await store.get(created.sagaId)).toEqual(created);
      });

      it("refuses a saga id that is taken", async () => {
        const store = await harness.create();
        await store.create(newSaga("s1"));
        const message = await expectKind(store.create(newSaga("s1")), "already_exists");
        expect(message).toContain("s1");
      });

      it("refuses a reserved saga id, saying why", async () => {
        const store = await harness.create({
          reservedIds: new Map([["stats", "GET /infrastructure/saga/stats is a route of its own"]]),
        });
        const message = await expectKind(store.create(newSaga("stats")), "invalid");
        expect(message).toContain("GET /infrastructure/saga/stats");
      });

      const long = (n: number) => "x".repeat(n);
      it.each<[string, NewSaga, string]>([
        ["an empty id", newSaga(""), "saga_id"],
        ["an id with a slash", newSaga("a/b"), "saga_id"],
        ["an id of 129 characters", newSaga(long(129)), "saga_id"],
        ["an empty name", newSaga("s", { name: "" }), "name"],
        ["a name of 129 characters", newSaga("s", { name: long(129) }), "name"],
        ["a run id of 129 characters", newSaga("s", { runId: long(129) }), "run_id"],
        ["a correlation id of 129", newSaga("s", { correlationId: long(129) }), "correlation_id"],
        ["no steps", newSaga("s", { steps: [] }), "steps"],
        ["a step without a name", newSaga("s", { steps: [{ name: "" }] }), "steps[0].name"],
        [
          "two steps of one name",
          newSaga("s", { steps: [{ name: "a" }, { name: "a" }] }),
          "steps[1].name",
        ],
        [
          "an action of 513",
          newSaga("s", { steps: [{ name: "a", action: long(513) }] }),
          "steps[0].action",
        ],
        [
          "a compensation of 513",
          newSaga("s", { steps: [{ name: "a", compensation: long(513) }] }),
          "steps[0].compensation",
        ],
        ["a negative group", newSaga("s", { steps: [{ name: "a", group: -1 }] }), "steps[0].group"],
        [
          "a fractional group",
          newSaga("s", { steps: [{ name: "a", group: 1.5 }] }),
          "steps[0].group",
        ],
        [
          "a group less than the one before",
          newSaga("s", {
            steps: [
              { name: "a", group: 2 },
              { name: "b", group: 1 },
            ],
          }),
          "steps[1].group",
        ],
      ])("refuses %s, naming the field", async (_, saga, field) => {
        const store = await harness.create();
        const message = await expectKind(store.create(saga), "invalid");
        expect(message).toContain(field);
        expect((await store.counts()).byStatus.PENDING).toBe(0);
      });

      it("refuses more steps than maxSteps, and a saga over maxSagaBytes", async () => {
        const store = await harness.create({ maxSteps: 3, maxSagaBytes: 4096 });
        const four = newSaga("s", { steps: ["a", "b", "c", "d"].map((n) => ({ name: n })) });
        expect(await expectKind(store.create(four), "invalid")).toContain("steps");
        const big = newSaga("s", { steps: [{ name: "a", action: "x".repeat(512) }] });
        await store.create({ ...big, sagaId: "fits" });
        const tooBig = newSaga("s", {
          steps: ["a", "b", "c"].map((n) => ({
            name: n,
            action: "é".repeat(512),
            compensation: "x".repeat(512),
          })),
        });
        expect(await expectKind(store.create(tooBig), "invalid")).toContain("4096");
        expect(await store.get("s")).toBeUndefined();
      });
    });

    describe("the state machine, exhaustively from the table", () => {
      const states = reachableStates();

      it("reaches every status of a saga and of a step", () => {
        expect(new Set(states.map((s) => s.joint.saga))).toEqual(new Set(sagaStatuses));
        expect(new Set(states.map((s) => s.joint.step))).toEqual(new Set(sagaStepStatuses));
        // And every rule of the table applies in some reachable state: none is dead.
        for (const rule of sagaRules) {
          const usable = states.some(
            ({ joint }) =>
              joint.saga === rule.from &&
              (rule.stepsIn === undefined || rule.stepsIn.includes(joint.step)),
          );
          expect(usable, `saga ${rule.from} → ${rule.to}`).toBe(true);
        }
        for (const rule of stepRules) {
          const usable = states.some(
            ({ joint }) => joint.step === rule.from && rule.sagaIn.includes(joint.saga),
          );
          expect(usable, `step ${rule.from} → ${rule.to}`).toBe(true);
        }
      });

      it.each(states.map((s) => [jointKey(s.joint), s] as const))(
        "from %s: every saga move is legal exactly when the table allows it",
        async (key, { joint, path }) => {
          const clock = createManualClock();
          const store = await harness.create({}, { clock });
          const sagaId = `s-${key.replace("/", "-")}`.toLowerCase();
          const before = await drive(store, sagaId, path);
          for (const to of sagaStatuses) {
            const rule = sagaRule(joint.saga, to);
            const legal =
              rule !== undefined &&
              (rule.stepsIn === undefined || rule.stepsIn.includes(joint.step));
            if (!legal) {
              const message = await expectKind(
                store.transition(sagaId, { expectedVersion: before.version, to }),
                "failed_precondition",
              );
              expect(message).toContain(`from ${joint.saga} to ${to}`);
              if (rule !== undefined) expect(message).toContain(`step only is ${joint.step}`);
              continue;
            }
            // A fresh saga in the same state for each legal move.
            const fresh = `${sagaId}-to-${to.toLowerCase()}`;
            const from = await drive(store, fresh, path);
            clock.advance(1_000);
            const moved = await store.transition(fresh, {
              expectedVersion: from.version,
              to,
              error: `why ${to}`,
            });
            const finish = rule.effects.finish;
            const stepAfter = finish && joint.step === "PENDING" ? "SKIPPED" : joint.step;
            expect(moved).toEqual({
              ...from,
              status: to,
              error: `why ${to}`,
              updatedAt: clock.now(),
              finishedAt: finish ? clock.now() : from.finishedAt,
              version: from.version + 1,
              steps: [
                {
                  ...from.steps[0],
                  status: stepAfter,
                  version: (from.steps[0]?.version ?? 0) + (stepAfter === joint.step ? 0 : 1),
                },
              ],
            });
            expect(await store.get(fresh)).toEqual(moved);
          }
          // The refused moves changed nothing.
          expect(await store.get(sagaId)).toEqual(before);
        },
      );

      it.each(states.map((s) => [jointKey(s.joint), s] as const))(
        "from %s: every step move is legal exactly when the table allows it",
        async (key, { joint, path }) => {
          const clock = createManualClock();
          const store = await harness.create({}, { clock });
          const sagaId = `t-${key.replace("/", "-")}`.toLowerCase();
          const before = await drive(store, sagaId, path);
          const step = before.steps[0];
          if (step === undefined) throw new Error("no step");
          for (const to of sagaStepStatuses) {
            const rule = stepRule(joint.step, to);
            if (rule === undefined || !rule.sagaIn.includes(joint.saga)) {
              const message = await expectKind(
                store.transitionStep(sagaId, 0, { expectedVersion: step.version, to }),
                "failed_precondition",
              );
              expect(message).toContain(`step only cannot go from ${joint.step} to ${to}`);
              if (rule !== undefined) expect(message).toContain(`while the saga is ${joint.saga}`);
              continue;
            }
            const fresh = `${sagaId}-to-${to.toLowerCase()}`;
            const from = await drive(store, fresh, path);
            const fromStep = from.steps[0];
            if (fromStep === undefined) throw new Error("no step");
            clock.advance(1_000);
            const now = clock.now();
            const output = rule.effects.output ? { rows: 3, note: "ok" } : undefined;
            const result = await store.transitionStep(fresh, 0, {
              expectedVersion: fromStep.version,
              to,
              ...(output === undefined ? {} : { output }),
            });
            const { effects } = rule;
            const expectedStep = {
              ...fromStep,
              status: to,
              attempts: fromStep.attempts + (effects.attempt ? 1 : 0),
              startedAt: effects.attempt ? now : fromStep.startedAt,
              finishedAt: effects.attempt ? undefined : effects.finish ? now : fromStep.finishedAt,
              compensatedAt: effects.compensate ? now : fromStep.compensatedAt,
              error: effects.clearError ? "" : fromStep.error,
              output: output ?? fromStep.output,
              version: fromStep.version + 1,
            };
            expect(result.step).toEqual(expectedStep);
            const { steps: _, ...header } = from;
            expect(result.saga).toEqual({
              ...header,
              stepCount: 1,
              updatedAt: now,
              version: from.version + 1,
            });
            expect(await store.get(fresh)).toEqual({
              ...from,
              updatedAt: now,
              version: from.version + 1,
              steps: [expectedStep],
            });
          }
          expect(await store.get(sagaId)).toEqual(before);
        },
      );

      it("names the step that holds a saga transition back", async () => {
        const store = await harness.create();
        await store.create(newSaga("s"));
        await moveSaga(store, "s", "RUNNING");
        await moveStep(store, "s", 0, "RUNNING");
        await moveStep(store, "s", 0, "COMPLETED");
        await moveStep(store, "s", 1, "RUNNING");
        const message = await expectKind(moveSaga(store, "s", "COMPLETED"), "failed_precondition");
        expect(message).toBe(
          "a saga cannot go from RUNNING to COMPLETED while its step jira is RUNNING",
        );
        expect(await expectKind(moveSaga(store, "s", "FAILED"), "failed_precondition")).toBe(
          "a saga cannot go from RUNNING to FAILED while its step github is COMPLETED",
        );
      });

      it("skips every pending step of a saga that finishes, and only those", async () => {
        const store = await harness.create();
        await store.create(newSaga("s"));
        await moveSaga(store, "s", "RUNNING");
        await moveStep(store, "s", 0, "RUNNING");
        const aborted = await moveSaga(store, "s", "ABORTED", "cancelled by the operator");
        expect(aborted.steps.map((s) => [s.status, s.version])).toEqual([
          ["RUNNING", 2],
          ["SKIPPED", 2],
          ["SKIPPED", 2],
        ]);
        expect(aborted.error).toBe("cancelled by the operator");
        // The attempt in flight still lands, and is undone, while the saga stays ABORTED.
        await moveStep(store, "s", 0, "COMPLETED", { output: { id: 7 } });
        await moveStep(store, "s", 0, "COMPENSATING");
        const undone = await moveStep(store, "s", 0, "COMPENSATED");
        expect(undone.saga.status).toBe("ABORTED");
        expect(undone.step.output).toEqual({ id: 7 });
      });

      it("keeps the last error until a rule clears it, and cuts errors at 1,024 characters", async () => {
        const store = await harness.create();
        await store.create(oneStep("s"));
        await moveSaga(store, "s", "RUNNING");
        await moveStep(store, "s", 0, "RUNNING");
        const failed = await moveStep(store, "s", 0, "FAILED", { error: "é".repeat(2_000) });
        expect(failed.step.error).toBe(`${"é".repeat(1_023)}…`);
        expect((await moveStep(store, "s", 0, "RUNNING")).step.error).toBe(failed.step.error);
        expect((await moveStep(store, "s", 0, "COMPLETED")).step.error).toBe("");
        const saga = await moveSaga(store, "s", "COMPLETED", "x".repeat(5_000));
        expect(saga.error).toHaveLength(1_024);
      });

      it("refuses output where the rule takes none, and output over maxOutputBytes", async () => {
        const store = await harness.create({ maxOutputBytes: 100 });
        await store.create(oneStep("s"));
        await moveSaga(store, "s", "RUNNING");
        const message = await expectKind(
          moveStep(store, "s", 0, "RUNNING", { output: { a: 1 } }),
          "invalid",
        );
        expect(message).toContain("PENDING to RUNNING takes no output");
        await moveStep(store, "s", 0, "RUNNING");
        expect(
          await expectKind(
            moveStep(store, "s", 0, "COMPLETED", { output: { text: "x".repeat(100) } }),
            "invalid",
          ),
        ).toContain("100");
        const done = await moveStep(store, "s", 0, "COMPLETED", {
          output: {
            nested: { list: [1, "two", null, true], big: 2 ** 53 - 1 },
            empty: {},
            none: [],
          },
        });
        expect(done.step.output).toEqual({
          nested: { list: [1, "two", null, true], big: 2 ** 53 - 1 },
          empty: {},
          none: [],
        });
        expect((await read(store, "s")).steps[0]?.output).toEqual(done.step.output);
      });

      it("answers not_found for an unknown saga and invalid for a step it does not have", async () => {
        const store = await harness.create();
        await expectKind(
          store.transition("nope", { expectedVersion: 1, to: "RUNNING" }),
          "not_found",
        );
        await expectKind(
          store.transitionStep("nope", 0, { expectedVersion: 1, to: "RUNNING" }),
          "not_found",
        );
        await store.create(oneStep("s"));
        for (const index of [1, -1, 0.5]) {
          const message = await expectKind(
            store.transitionStep("s", index, { expectedVersion: 1, to: "RUNNING" }),
            "invalid",
          );
          expect(message).toContain(`no step ${index}`);
        }
        for (const version of [0, -1, 1.5]) {
          await expectKind(
            store.transition("s", { expectedVersion: version, to: "RUNNING" }),
            "invalid",
          );
          await expectKind(
            store.transitionStep("s", 0, { expectedVersion: version, to: "RUNNING" }),
            "invalid",
          );
        }
      });
    });

    describe("compare-and-set", () => {
      it("moves a saga only from the version it was read at", async () => {
        const store = await harness.create();
        const created = await store.create(oneStep("s"));
        const stale = await expectKind(
          store.transition("s", { expectedVersion: created.version + 1, to: "RUNNING" }),
          "conflict",
        );
        expect(stale).toContain("version 1");
        await store.transition("s", { expectedVersion: 1, to: "RUNNING" });
        await expectKind(store.transition("s", { expectedVersion: 1, to: "ABORTED" }), "conflict");
        expect((await read(store, "s")).status).toBe("RUNNING");
      });

      it("lets exactly one of two concurrent moves of the same step win", async () => {
        const store = await harness.create();
        await store.create(newSaga("s"));
        await moveSaga(store, "s", "RUNNING");
        for (let round = 0; round < 20; round++) {
          const step = (await read(store, "s")).steps[0];
          if (step === undefined) throw new Error("no step");
          const outcomes = await Promise.allSettled([
            store.transitionStep("s", 0, { expectedVersion: step.version, to: "RUNNING" }),
            store.transitionStep("s", 0, { expectedVersion: step.version, to: "RUNNING" }),
          ]);
          expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
          const lost = outcomes.find((o) => o.status === "rejected");
          expect((lost as PromiseRejectedResult).reason).toMatchObject({ kind: "conflict" });
        }
        const saga = await read(store, "s");
        expect(saga.steps[0]?.attempts).toBe(20);
        expect(saga.steps[0]?.version).toBe(21);
        expect(saga.version).toBe(22);
      });

      it("never conflicts between parallel steps, and bumps the saga's version for each", async () => {
        const store = await harness.create();
        await store.create(newSaga("s"));
        const running = await moveSaga(store, "s", "RUNNING");
        // Both read at the same saga version: each step has its own.
        await Promise.all([
          store.transitionStep("s", 0, { expectedVersion: 1, to: "RUNNING" }),
          store.transitionStep("s", 1, { expectedVersion: 1, to: "RUNNING" }),
        ]);
        await Promise.all([
          store.transitionStep("s", 0, { expectedVersion: 2, to: "COMPLETED" }),
          store.transitionStep("s", 1, { expectedVersion: 2, to: "FAILED", error: "boom" }),
        ]);
        const saga = await read(store, "s");
        expect(saga.version).toBe(running.version + 4);
        // A saga move decided before those step moves is refused: it did not see them.
        await expectKind(
          store.transition("s", { expectedVersion: running.version, to: "COMPENSATING" }),
          "conflict",
        );
        await store.transition("s", { expectedVersion: saga.version, to: "COMPENSATING" });
      });

      it("refuses a step move once the saga moved where it is not allowed", async () => {
        const store = await harness.create();
        await store.create(newSaga("s"));
        await moveSaga(store, "s", "RUNNING");
        const step = (await read(store, "s")).steps[2];
        await moveSaga(store, "s", "COMPENSATING");
        const message = await expectKind(
          store.transitionStep("s", 2, { expectedVersion: step?.version ?? 0, to: "RUNNING" }),
          "failed_precondition",
        );
        expect(message).toBe(
          "step index cannot go from PENDING to RUNNING while the saga is COMPENSATING",
        );
      });
    });

    describe("stats", () => {
      it("counts the stored sagas by status, and the durations of the finished ones", async () => {
        const clock = createManualClock();
        const store = await harness.create({}, { clock });
        const empty = await store.counts();
        expect(empty.finishedDurationMs).toBe(0);
        expect(Object.values(empty.byStatus).every((n) => n === 0)).toBe(true);
        await store.create(oneStep("pending"));
        await store.create(oneStep("running"));
        await moveSaga(store, "running", "RUNNING");
        await store.create(oneStep("done"));
        await moveSaga(store, "done", "RUNNING");
        await moveStep(store, "done", 0, "RUNNING");
        await moveStep(store, "done", 0, "COMPLETED");
        clock.advance(3_000);
        await moveSaga(store, "done", "COMPLETED");
        await store.create(oneStep("aborted"));
        clock.advance(1_000);
        await moveSaga(store, "aborted", "ABORTED");
        const counts = await store.counts();
        expect(counts.byStatus).toEqual({
          PENDING: 1,
          RUNNING: 1,
          COMPLETED: 1,
          FAILED: 0,
          COMPENSATING: 0,
          COMPENSATED: 0,
          ABORTED: 1,
        });
        expect(counts.finishedDurationMs).toBe(3_000 + 1_000);
      });
    });

    describe("retention and bounds", () => {
      async function finishedSaga(store: SagaStore, sagaId: string): Promise<Saga> {
        await store.create(oneStep(sagaId));
        return moveSaga(store, sagaId, "ABORTED");
      }

      it("forgets finished sagas older than retentionMs, never running ones", async () => {
        const clock = createManualClock();
        const store = await harness.create({ retentionMs: 60_000 }, { clock });
        await finishedSaga(store, "old");
        await store.create(oneStep("running-old"));
        await moveSaga(store, "running-old", "RUNNING");
        clock.advance(30_000);
        await finishedSaga(store, "newer");
        expect(await store.sweep()).toBe(0);
        clock.advance(30_001);
        expect(await store.sweep()).toBe(1);
        expect(await store.get("old")).toBeUndefined();
        expect(await store.get("newer")).toBeDefined();
        expect(await store.get("running-old")).toBeDefined();
        expect((await store.counts()).byStatus).toMatchObject({ ABORTED: 1, RUNNING: 1 });
        expect((await store.counts()).finishedDurationMs).toBe(0);
        clock.advance(30_000);
        expect(await store.sweep()).toBe(1);
        expect(await store.list({ status: "ABORTED" })).toEqual({ sagas: [], nextPageToken: "" });
        expect(await store.sweep()).toBe(0);
      });

      it("sweeps more finished sagas than one batch", async () => {
        const clock = createManualClock();
        const store = await harness.create({ retentionMs: 0, maxFinished: 10_000 }, { clock });
        for (let i = 0; i < 1_203; i++) await finishedSaga(store, `f${i}`);
        clock.advance(1);
        expect(await store.sweep()).toBe(1_203);
        expect((await store.counts()).byStatus.ABORTED).toBe(0);
      });

      it("keeps at most maxFinished finished sagas: the oldest finished go first", async () => {
        const clock = createManualClock();
        const store = await harness.create({ maxFinished: 2 }, { clock });
        await store.create(oneStep("first-created"));
        await finishedSaga(store, "a");
        clock.advance(1);
        await finishedSaga(store, "b");
        clock.advance(1);
        await moveSaga(store, "first-created", "ABORTED");
        expect(await store.get("a")).toBeUndefined();
        expect(await store.get("b")).toBeDefined();
        expect(await store.get("first-created")).toBeDefined();
        expect((await store.counts()).byStatus.ABORTED).toBe(2);
      });

      it("makes room with the oldest finished sagas, and refuses growth when running ones fill it", async () => {
        const clock = createManualClock();
        const sample = await harness.create({}, { clock });
        const weight = sagaWeight(await sample.create(oneStep("w0")));
        // Room for three such sagas, not four.
        const store = await harness.create({ maxBytes: Math.floor(weight * 3.5) }, { clock });
        await finishedSaga(store, "w0");
        clock.advance(1);
        await finishedSaga(store, "w1");
        await store.create(oneStep("w2"));
        await store.create(oneStep("w3"));
        expect(await store.get("w0")).toBeUndefined();
        expect(await store.get("w1")).toBeDefined();
        await store.create(oneStep("w4"));
        expect(await store.get("w1")).toBeUndefined();
        const message = await expectKind(store.create(oneStep("w5")), "resource_exhausted");
        expect(message).toContain("full");
        await moveSaga(store, "w2", "RUNNING");
        await moveStep(store, "w2", 0, "RUNNING");
        await expectKind(
          moveStep(store, "w2", 0, "COMPLETED", { output: { text: "x".repeat(weight) } }),
          "resource_exhausted",
        );
        // A move that does not grow the store always passes.
        await moveStep(store, "w2", 0, "COMPLETED");
        await moveSaga(store, "w2", "COMPLETED");
        await store.create(oneStep("w5"));
        expect(await store.get("w2")).toBeUndefined();
      });

      it("refuses a step move that would take the saga over maxSagaBytes", async () => {
        const store = await harness.create({ maxSagaBytes: 4_096, maxOutputBytes: 3_000 });
        await store.create(newSaga("s"));
        await moveSaga(store, "s", "RUNNING");
        await moveStep(store, "s", 0, "RUNNING");
        await moveStep(store, "s", 1, "RUNNING");
        await moveStep(store, "s", 0, "COMPLETED", { output: { text: "x".repeat(2_000) } });
        const message = await expectKind(
          moveStep(store, "s", 1, "COMPLETED", { output: { text: "x".repeat(2_000) } }),
          "invalid",
        );
        expect(message).toContain("4096");
        expect((await read(store, "s")).steps[1]?.status).toBe("RUNNING");
      });
    });

    describe("listing", () => {
      it("pages through the sagas of one status, oldest created first, each once", async () => {
        const clock = createManualClock();
        const store = await harness.create({}, { clock });
        const created: string[] = [];
        for (let i = 0; i < 25; i++) {
          // Two at each millisecond: ties are ordered by id.
          if (i % 2 === 0) clock.advance(1);
          const sagaId = `r-${String(24 - i).padStart(2, "0")}`;
          await store.create(oneStep(sagaId));
          if (i % 5 !== 0) await moveSaga(store, sagaId, "RUNNING");
          created.push(sagaId);
        }
        const seen: string[] = [];
        let pageToken = "";
        let pages = 0;
        do {
          const page = await store.list({ status: "RUNNING", pageSize: 7, pageToken });
          expect(page.sagas.length).toBeLessThanOrEqual(7);
          for (const summary of page.sagas) {
            expect(summary.status).toBe("RUNNING");
            expect(summary.stepCount).toBe(1);
            expect(summary).toMatchObject({ name: "ingestion", runId: `run-${summary.sagaId}` });
          }
          seen.push(...page.sagas.map((s) => s.sagaId));
          pageToken = page.nextPageToken;
          pages++;
        } while (pageToken !== "");
        const running = await Promise.all(created.map((id) => read(store, id)));
        const expected = running
          .filter((s) => s.status === "RUNNING")
          .sort((a, b) => a.createdAt - b.createdAt || (a.sagaId < b.sagaId ? -1 : 1))
          .map((s) => s.sagaId);
        expect(seen).toEqual(expected);
        expect(pages).toBe(3);
        const pending = await store.list({ status: "PENDING" });
        expect(pending.sagas.map((s) => s.sagaId).sort()).toEqual(
          created.filter((_, i) => i % 5 === 0).sort(),
        );
        expect(pending.nextPageToken).toBe("");
      });

      it("follows sagas as they move, and refuses a bad page size or token", async () => {
        const store = await harness.create();
        await store.create(oneStep("a"));
        await store.create(oneStep("b"));
        await moveSaga(store, "a", "RUNNING");
        expect((await store.list({ status: "RUNNING" })).sagas.map((s) => s.sagaId)).toEqual(["a"]);
        expect((await store.list({ status: "PENDING" })).sagas.map((s) => s.sagaId)).toEqual(["b"]);
        expect((await store.list({ status: "COMPLETED" })).sagas).toEqual([]);
        for (const pageSize of [0, 1_001, 2.5]) {
          expect(
            await expectKind(store.list({ status: "RUNNING", pageSize }), "invalid"),
          ).toContain("page_size");
        }
        for (const pageToken of ["garbage", Buffer.from("0|a").toString("base64url")]) {
          expect(
            await expectKind(store.list({ status: "RUNNING", pageToken }), "invalid"),
          ).toContain("page_token");
        }
      });
    });

    if (harness.twin) {
      const twinOf = harness.twin.bind(harness);
      it("shares sagas between processes, and lets only one of them move a step", async () => {
        const a = await harness.create();
        const b = await twinOf(a);
        await a.create(newSaga("shared"));
        await moveSaga(b, "shared", "RUNNING");
        expect((await a.get("shared"))?.status).toBe("RUNNING");
        const step = (await read(a, "shared")).steps[0];
        const outcomes = await Promise.allSettled([
          a.transitionStep("shared", 0, { expectedVersion: step?.version ?? 0, to: "RUNNING" }),
          b.transitionStep("shared", 0, { expectedVersion: step?.version ?? 0, to: "RUNNING" }),
        ]);
        expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
        expect((await b.counts()).byStatus.RUNNING).toBe(1);
      });
    }

    if (harness.reopen) {
      const reopen = harness.reopen.bind(harness);
      it("keeps every saga, its steps and the counts across a restart", async () => {
        const clock = createManualClock();
        const store = await harness.create({}, { clock });
        await store.create(newSaga("kept"));
        await moveSaga(store, "kept", "RUNNING");
        await moveStep(store, "kept", 0, "RUNNING");
        await moveStep(store, "kept", 0, "COMPLETED", { output: { count: 12 } });
        await store.create(oneStep("done"));
        await moveSaga(store, "done", "ABORTED", "stopped");
        const before = { kept: await store.get("kept"), done: await store.get("done") };
        const counts = await store.counts();
        await store.close();
        const again = await reopen(store);
        expect({ kept: await again.get("kept"), done: await again.get("done") }).toEqual(before);
        expect(await again.counts()).toEqual(counts);
        await moveStep(again, "kept", 1, "RUNNING");
      });
    }
  });
}
