import { setTimeout as delay } from "node:timers/promises";
import type { JsonObject } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import type { DeadLetterHandler, DeadLetters } from "../dlq/dead-letters.js";
import { DomainError } from "../errors/domain-error.js";
import type { EventLog } from "../events/event-log.js";
import type { HttpClient, OutboundCall } from "../http-client/http-client.js";
import type { TargetResolver } from "../http-client/service-targets.js";
import type { IdSource } from "../ids.js";
import type { Saga, SagaStatus, SagaStep } from "../sagas/model.js";
import type { SagaStore } from "../sagas/saga-store.js";
import { type StepCall, stepMethods, type WorkflowDefinition } from "./definitions.js";
import {
  callText,
  groupsOf,
  idempotentRunId,
  type PlannedStep,
  planSteps,
  undoOrder,
} from "./run-plan.js";
import { callStep, StepFailure } from "./step-call.js";

/** Options of {@link createWorkflowEngine}. */
export interface WorkflowEngineOptions {
  /** Runs executing at once on this node; more wait for a slot. Default: 256. */
  maxRunning: number;
  /** Accepted runs waiting for a slot; a start beyond them is refused. Default: 10,000. */
  maxWaiting: number;
  /** Wait before a step's second attempt, in ms, doubling with each further one. Default: 100. */
  retryBaseDelayMs: number;
  /** Longest wait between two attempts of a step, in ms. Default: 2,000. */
  retryMaxDelayMs: number;
  /** Runs whose trace id and scope this node remembers (for GetWorkflowRun). Default: 10,000. */
  maxRemembered: number;
}

/** The defaults {@link createWorkflowEngine} merges its options over. */
export const workflowEngineDefaults: Readonly<WorkflowEngineOptions> = Object.freeze({
  maxRunning: 256,
  maxWaiting: 10_000,
  retryBaseDelayMs: 100,
  retryMaxDelayMs: 2_000,
  maxRemembered: 10_000,
});

/** What the engine is built from. */
export interface WorkflowEngineDeps {
  readonly definitions: readonly WorkflowDefinition[];
  /** Where runs live, as sagas (saga id = run id); it emits the `saga.*` events. */
  readonly store: SagaStore;
  /** The one outbound client. */
  readonly http: HttpClient;
  readonly targets: TargetResolver;
  readonly events: EventLog;
  readonly deadLetters: DeadLetters;
  readonly ids: IdSource;
  readonly logger: Logger;
}

/** What a run is started with. */
export interface RunRequest {
  /** "" for "ingestion". */
  readonly workflow: string;
  readonly sources: readonly string[];
  readonly scope: JsonObject;
  /** "" for the call's. */
  readonly correlationId: string;
  /** "" for none: every start is then a new run. */
  readonly idempotencyKey: string;
}

/** The call that starts a run: its ids go with every step call and every event. */
export interface RunOrigin {
  readonly correlationId: string;
  readonly traceId: string;
  /** The call's span, the parent of the step calls' spans. */
  readonly traceparent: string;
}

/** A run as stored (its saga) and what this node remembers of how it was started. */
export interface WorkflowRunRecord {
  readonly saga: Saga;
  /** "" when this node did not start it or no longer remembers it. */
  readonly traceId: string;
  readonly scope: JsonObject | undefined;
}

/** The DLQ type of a step that failed for good; retrying the entry re-runs the step's action. */
export const workflowStepDeadLetter = "workflow.step";

/** Runs workflows as sagas; see {@link createWorkflowEngine}. */
export interface WorkflowEngine {
  /**
   * Creates the run's saga and answers at once; the run goes on in the background. The same
   * idempotency key (for the same workflow) answers the run it started first.
   * @throws DomainError "invalid" (an unknown workflow, naming `workflow`; `sources` missing or
   *   foreign, naming `sources`), "resource_exhausted" (too many runs waiting), and the saga
   *   store's errors.
   */
  start(request: RunRequest, origin: RunOrigin): Promise<WorkflowRunRecord>;
  /** The run, or undefined when no run has that id. */
  get(runId: string): Promise<WorkflowRunRecord | undefined>;
  /** What this node remembers of a run it started, for listings. */
  remembered(runId: string): { traceId: string; scope: JsonObject | undefined };
  /** Stops: waiting runs are dropped, running ones are cut where they are (left for resume). */
  stop(): Promise<void>;
}

/** What a run needs while it executes. */
interface RunState {
  readonly runId: string;
  readonly workflow: string;
  readonly steps: readonly PlannedStep[];
  readonly scope: JsonObject;
  readonly origin: RunOrigin;
  /** Each step's version, as the last transition this node made left it. */
  readonly versions: number[];
}

/** How a step ended. */
type StepOutcome = { readonly ok: true } | { readonly ok: false; readonly error: string };

/**
 * The workflow engine of this increment: a run is a saga in the saga store (saga id = run id),
 * executed by the node that started it, group by group (a group's steps at once). A step moves
 * to RUNNING (compare-and-set), calls its target with `{run_id, step, source, scope,
 * correlation_id}`, the run's correlation id and traceparent, `Idempotency-Key:
 * <run_id>:<step>` and the step's timeout; its answer (a JSON object) is its output. After
 * `maxAttempts` failed attempts (at once for a 4xx refusal) it is FAILED; then the completed
 * steps are compensated in reverse order of completion (`<run_id>:<step>:undo`), the run ends
 * COMPENSATED (FAILED if a compensation failed, or if nothing had completed), and the failure is
 * dead-lettered as "workflow.step". Runs are not resumed after a restart yet (next increment).
 */
export function createWorkflowEngine(
  deps: WorkflowEngineDeps,
  options: Partial<WorkflowEngineOptions> = {},
): WorkflowEngine & { readonly stepRetry: DeadLetterHandler } {
  const settings = Object.freeze({ ...workflowEngineDefaults, ...options });
  const { store, logger } = deps;
  const stopping = new AbortController();
  const memory = new Map<string, { traceId: string; scope: JsonObject }>();
  const active = new Set<Promise<void>>();
  const waiting: (() => void)[] = [];
  let running = 0;

  const remember = (runId: string, traceId: string, scope: JsonObject) => {
    memory.set(runId, { traceId, scope });
    if (memory.size > settings.maxRemembered) memory.delete(memory.keys().next().value as string);
  };
  const recordOf = (saga: Saga): WorkflowRunRecord => {
    const known = memory.get(saga.runId);
    return { saga, traceId: known?.traceId ?? "", scope: known?.scope };
  };

  const emit = (run: RunState, type: string, saga: Saga) => {
    deps.events.append({
      type,
      subject: run.runId,
      correlationId: run.origin.correlationId,
      traceId: run.origin.traceId,
      payload: {
        run_id: run.runId,
        workflow: run.workflow,
        saga_id: saga.sagaId,
        status: saga.status,
        ...(saga.error === "" ? {} : { error: saga.error.slice(0, 256) }),
      },
    });
  };

  /** Moves the saga to `to`, reading it again when a step moved meanwhile. */
  const moveSaga = async (runId: string, to: SagaStatus, error?: string): Promise<Saga> => {
    for (let tries = 0; ; tries++) {
      const saga = await store.get(runId);
      if (saga === undefined) throw new DomainError("not_found", `workflow run ${runId} is gone`);
      try {
        return await store.transition(runId, {
          expectedVersion: saga.version,
          to,
          ...(error === undefined ? {} : { error }),
        });
      } catch (failure) {
        if (!(failure instanceof DomainError && failure.kind === "conflict") || tries >= 20) {
          throw failure;
        }
      }
    }
  };

  const stepRequest = (run: RunState, step: PlannedStep, call: StepCall, undo: boolean) => ({
    target: step.target,
    call,
    body: stepBody(run.runId, step, run.scope, run.origin.correlationId),
    origin: outboundCall(run.origin),
    idempotencyKey: `${run.runId}:${step.name}${undo ? ":undo" : ""}`,
    timeoutMs: step.timeoutMs,
    signal: stopping.signal,
  });

  const backoff = (attempt: number) =>
    delay(
      Math.min(settings.retryMaxDelayMs, settings.retryBaseDelayMs * 2 ** (attempt - 2)),
      undefined,
      { signal: stopping.signal },
    );

  const transitionStep = async (
    run: RunState,
    step: PlannedStep,
    change: { to: SagaStep["status"]; error?: string; output?: JsonObject },
  ) => {
    const expectedVersion = run.versions[step.index] ?? 1;
    const result = await store.transitionStep(run.runId, step.index, {
      expectedVersion,
      ...change,
    });
    run.versions[step.index] = result.step.version;
    return result;
  };

  const complete = async (run: RunState, step: PlannedStep, output: JsonObject) => {
    try {
      await transitionStep(run, step, { to: "COMPLETED", output });
    } catch (error) {
      // An output the store refuses (too large) must not fail a step whose call succeeded.
      if (!(error instanceof DomainError && error.kind === "invalid")) throw error;
      await transitionStep(run, step, { to: "COMPLETED", output: { output_dropped: true } });
    }
  };

  /** Attempts a step until it succeeds, is refused, or has used its attempts. */
  const runStep = async (run: RunState, step: PlannedStep): Promise<StepOutcome> => {
    let lastError = "";
    for (let attempt = 1; attempt <= step.maxAttempts; attempt++) {
      if (attempt > 1) await backoff(attempt);
      await transitionStep(run, step, {
        to: "RUNNING",
        ...(lastError === "" ? {} : { error: lastError }),
      });
      try {
        const output = await callStep(deps, stepRequest(run, step, step.action, false));
        await complete(run, step, output);
        return { ok: true };
      } catch (error) {
        if (!(error instanceof StepFailure)) throw error;
        lastError = error.message;
        if (error.permanent) break;
      }
    }
    await transitionStep(run, step, { to: "FAILED", error: lastError });
    return { ok: false, error: `step ${step.name} failed: ${lastError}` };
  };

  /** Undoes one completed step; a step without a compensation needs none and is just marked. */
  const undoStep = async (run: RunState, sagaStep: SagaStep): Promise<string | undefined> => {
    const step = run.steps[sagaStep.index];
    if (step === undefined) return `step ${sagaStep.name} is not in the plan`;
    run.versions[step.index] = sagaStep.version;
    await transitionStep(run, step, { to: "COMPENSATING" });
    const compensation = step.compensation;
    let lastError = "";
    for (let attempt = 1; compensation && attempt <= step.maxAttempts; attempt++) {
      if (attempt > 1) await backoff(attempt);
      try {
        await callStep(deps, stepRequest(run, step, compensation, true));
        lastError = "";
        break;
      } catch (error) {
        if (!(error instanceof StepFailure)) throw error;
        lastError = error.message;
        if (error.permanent) break;
      }
    }
    if (lastError === "") {
      await transitionStep(run, step, { to: "COMPENSATED" });
      return undefined;
    }
    await transitionStep(run, step, { to: "FAILED", error: lastError });
    return `compensation of ${step.name} failed: ${lastError}`;
  };

  const deadLetter = async (run: RunState, step: PlannedStep, error: string) => {
    try {
      await deps.deadLetters.add({
        eventType: workflowStepDeadLetter,
        payload: stepLetter(run, step),
        failureReason: error,
        serviceName: step.target,
        correlationId: run.origin.correlationId,
        // Retried by hand only: the run was compensated, an automatic re-run would redo what
        // the compensation undid behind the operator's back.
        maxAttempts: 0,
      });
    } catch (failure) {
      logger.warn({ err: failure, run_id: run.runId, step: step.name }, "step not dead-lettered");
    }
  };

  /** A step failed for good: undo what completed, finish the saga, dead-letter the step. */
  const settleFailure = async (run: RunState, failed: PlannedStep, error: string) => {
    const saga = await store.get(run.runId);
    const completed = undoOrder(saga?.steps ?? []);
    if (completed.length === 0) {
      emit(run, "workflow.run.failed", await moveSaga(run.runId, "FAILED", error));
    } else {
      await moveSaga(run.runId, "COMPENSATING", error);
      let undoError: string | undefined;
      // Every completed step is undone, even after one compensation failed: best effort.
      for (const step of completed) {
        const failure = await undoStep(run, step);
        undoError ??= failure;
      }
      const end = undoError === undefined ? "COMPENSATED" : "FAILED";
      const finished = await moveSaga(run.runId, end, undoError ?? error);
      emit(run, end === "FAILED" ? "workflow.run.failed" : "workflow.run.compensated", finished);
    }
    await deadLetter(run, failed, error);
  };

  const execute = async (run: RunState): Promise<void> => {
    emit(run, "workflow.run.started", await moveSaga(run.runId, "RUNNING"));
    for (const group of groupsOf(run.steps)) {
      const outcomes = await Promise.all(group.map((step) => runStep(run, step)));
      const index = outcomes.findIndex((outcome) => !outcome.ok);
      const failed = outcomes[index];
      const step = group[index];
      if (failed !== undefined && !failed.ok && step !== undefined) {
        return settleFailure(run, step, failed.error);
      }
    }
    emit(run, "workflow.run.completed", await moveSaga(run.runId, "COMPLETED"));
  };

  const launch = (run: RunState) => {
    running++;
    const task = execute(run)
      .catch((error: unknown) => {
        if (stopping.signal.aborted) {
          logger.info({ run_id: run.runId }, "workflow run cut by shutdown; left for resume");
        } else {
          logger.error({ err: error, run_id: run.runId }, "workflow run stopped by an error");
        }
      })
      .finally(() => {
        running--;
        active.delete(task);
        if (!stopping.signal.aborted) waiting.shift()?.();
      });
    active.add(task);
  };

  const schedule = (run: RunState) => {
    if (running < settings.maxRunning) launch(run);
    else waiting.push(() => launch(run));
  };

  const definitionOf = (name: string): WorkflowDefinition => {
    const definition = deps.definitions.find((workflow) => workflow.name === name);
    if (definition === undefined) {
      const known = deps.definitions.map((workflow) => workflow.name).join(", ");
      throw new DomainError("invalid", `workflow: no workflow ${JSON.stringify(name)} (${known})`);
    }
    return definition;
  };

  const engine: WorkflowEngine = {
    async start(request, origin) {
      const workflow = definitionOf(request.workflow || "ingestion");
      const steps = planSteps(workflow, request.sources);
      if (stopping.signal.aborted) throw new DomainError("unavailable", "the node is stopping");
      if (waiting.length >= settings.maxWaiting) {
        throw new DomainError("resource_exhausted", "too many workflow runs waiting; retry later");
      }
      const runId = request.idempotencyKey
        ? idempotentRunId(workflow.name, request.idempotencyKey)
        : `run-${deps.ids.uuid()}`;
      const correlationId = request.correlationId || origin.correlationId;
      let saga: Saga;
      try {
        saga = await store.create({
          sagaId: runId,
          runId,
          name: workflow.name,
          correlationId,
          steps: steps.map((step) => ({
            name: step.name,
            action: callText(step.target, step.action),
            compensation: callText(step.target, step.compensation),
            group: step.group,
          })),
        });
      } catch (error) {
        if (!(error instanceof DomainError && error.kind === "already_exists")) throw error;
        const existing = await store.get(runId);
        if (existing === undefined) throw error;
        return recordOf(existing);
      }
      remember(runId, origin.traceId, request.scope);
      const run: RunState = {
        runId,
        workflow: workflow.name,
        steps,
        scope: request.scope,
        origin: { ...origin, correlationId },
        versions: steps.map(() => 1),
      };
      schedule(run);
      return recordOf(saga);
    },

    async get(runId) {
      const saga = await store.get(runId);
      return saga === undefined || saga.runId === "" ? undefined : recordOf(saga);
    },

    remembered(runId) {
      const known = memory.get(runId);
      return { traceId: known?.traceId ?? "", scope: known?.scope };
    },

    async stop() {
      stopping.abort(new DomainError("unavailable", "the node is stopping"));
      waiting.length = 0;
      await Promise.all([...active]);
    },
  };

  return { ...engine, stepRetry: createStepRetry(deps) };
}

/** The JSON body of a step call. */
function stepBody(
  runId: string,
  step: PlannedStep,
  scope: JsonObject,
  correlationId: string,
): JsonObject {
  return {
    run_id: runId,
    step: step.name,
    ...(step.source === undefined ? {} : { source: step.source }),
    scope,
    correlation_id: correlationId,
  };
}

function outboundCall(origin: RunOrigin): OutboundCall {
  return { correlationId: origin.correlationId, traceparent: origin.traceparent };
}

/** What a "workflow.step" dead letter holds: all a retry needs, without the run's state. */
function stepLetter(run: RunState, step: PlannedStep): JsonObject {
  return {
    run_id: run.runId,
    workflow: run.workflow,
    step: step.name,
    target: step.target,
    method: step.action.method,
    path: step.action.path,
    ...(step.source === undefined ? {} : { source: step.source }),
    scope: run.scope,
    correlation_id: run.origin.correlationId,
    traceparent: run.origin.traceparent,
    timeout_ms: step.timeoutMs,
  };
}

/**
 * The DLQ handler of "workflow.step": calls the step's action once more, as the run did (same
 * body, headers and idempotency key), against the target as it resolves now. This increment
 * reports the outcome only: the run's saga is finished and stays as it ended.
 */
function createStepRetry(deps: Pick<WorkflowEngineDeps, "http" | "targets">): DeadLetterHandler {
  return async ({ payload, signal }) => {
    const text = (name: string) => {
      const value = payload[name];
      if (typeof value !== "string") throw new Error(`not a workflow step entry: no ${name}`);
      return value;
    };
    const method = stepMethods.find((known) => known === text("method"));
    const timeoutMs = payload.timeout_ms;
    if (method === undefined || typeof timeoutMs !== "number") {
      throw new Error("not a workflow step entry: bad method or timeout_ms");
    }
    const source = typeof payload.source === "string" ? payload.source : undefined;
    const scope = payload.scope;
    const runId = text("run_id");
    const step = text("step");
    try {
      await callStep(deps, {
        target: text("target"),
        call: { method, path: text("path") },
        body: {
          run_id: runId,
          step,
          ...(source === undefined ? {} : { source }),
          scope: typeof scope === "object" && scope !== null && !Array.isArray(scope) ? scope : {},
          correlation_id: text("correlation_id"),
        },
        origin: { correlationId: text("correlation_id"), traceparent: text("traceparent") },
        idempotencyKey: `${runId}:${step}`,
        timeoutMs,
        signal,
      });
    } catch (error) {
      if (error instanceof StepFailure) throw new Error(error.message);
      throw error;
    }
  };
}
