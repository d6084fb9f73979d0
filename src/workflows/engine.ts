import { setMaxListeners } from "node:events";
import { setTimeout as delay } from "node:timers/promises";
import type { JsonObject } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { type Clock, systemClock } from "../clock.js";
import type { DeadLetterHandler, DeadLetters } from "../dlq/dead-letters.js";
import { DomainError } from "../errors/domain-error.js";
import type { EventLog } from "../events/event-log.js";
import type { HttpClient, OutboundCall } from "../http-client/http-client.js";
import type { TargetResolver } from "../http-client/service-targets.js";
import type { IdSource } from "../ids.js";
import type { Saga, SagaStatus, SagaStep, SagaSummary } from "../sagas/model.js";
import { isLeaseLost } from "../sagas/saga-records.js";
import type { LeaseProof, SagaStore } from "../sagas/saga-store.js";
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
  /**
   * How long a run's lease lasts, in ms (`WORKFLOW_LEASE_MS`): renewed every third of it while
   * the run executes; a run whose lease expired is taken over by the next scan (every this
   * long). Default: 15,000.
   */
  leaseMs: number;
}

/** The defaults {@link createWorkflowEngine} merges its options over. */
export const workflowEngineDefaults: Readonly<WorkflowEngineOptions> = Object.freeze({
  maxRunning: 256,
  maxWaiting: 10_000,
  retryBaseDelayMs: 100,
  retryMaxDelayMs: 2_000,
  leaseMs: 15_000,
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
  /** This node's id: the holder of the leases it takes. */
  readonly nodeId: string;
  /** Compared with the leases' expiry (which the store sets on its own clock). Default: system. */
  readonly clock?: Clock;
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

/** A run as stored (its saga), with what its context keeps of how it was started. */
export interface WorkflowRunRecord {
  readonly saga: Saga;
  /** "" when the run's context has none. */
  readonly traceId: string;
  readonly scope: JsonObject | undefined;
}

/** The DLQ type of a step that failed for good; retrying the entry re-runs the step's action. */
export const workflowStepDeadLetter = "workflow.step";

/** The error a cancelled run ends with. */
export const cancelledError = "cancelled";

/** Runs workflows as sagas; see {@link createWorkflowEngine}. */
export interface WorkflowEngine {
  /**
   * Creates the run's saga and answers at once; the run goes on in the background. The same
   * idempotency key (for the same workflow) answers the run it started first.
   * @throws DomainError "invalid" (an unknown workflow, naming `workflow`; `sources` missing or
   *   foreign, naming `sources`; a scope too large for the run's context), "resource_exhausted"
   *   (too many runs waiting), and the saga store's errors.
   */
  start(request: RunRequest, origin: RunOrigin): Promise<WorkflowRunRecord>;
  /** The run, or undefined when no run has that id. */
  get(runId: string): Promise<WorkflowRunRecord | undefined>;
  /** What a run's context keeps of its start (trace id, scope), for listings. */
  remembered(saga: Pick<SagaSummary, "context">): {
    traceId: string;
    scope: JsonObject | undefined;
  };
  /**
   * Cancels a run: takes its lease over (the holder stops at its next transition, and this node
   * cuts its own at once), then a PENDING run is ABORTED, a RUNNING one goes COMPENSATING (steps
   * in flight FAILED "cancelled", completed ones undone in the background, ending COMPENSATED or
   * FAILED), a COMPENSATING one goes on compensating.
   * @returns the run as the cancel left it.
   * @throws DomainError "not_found", "failed_precondition" (finished: names its status).
   */
  cancel(runId: string): Promise<WorkflowRunRecord>;
  /** Scans for runs whose lease expired (or that never had one) and takes them over. */
  resume(): Promise<number>;
  /**
   * Starts the resume scans: one now, then every `leaseMs`, or sooner when a scan saw another
   * node's lease that expires sooner (a quarter lease apart at least).
   */
  startScans(): void;
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
  /** The saga's version as the last transition this node made left it (a guess: steps race). */
  sagaVersion: number;
  /** The lease this node holds; every transition carries it. */
  readonly lease: LeaseProof;
  /** Aborted when the lease is lost, the run cancelled, or the node stops. */
  readonly cut: AbortController;
}

/** How a step ended. */
type StepOutcome = { readonly ok: true } | { readonly ok: false; readonly error: string };

/** The context kept with a run's saga: what any node needs to go on with it. */
function runContext(sources: readonly string[], scope: JsonObject, origin: RunOrigin): JsonObject {
  return {
    sources: [...sources],
    scope,
    trace_id: origin.traceId,
    traceparent: origin.traceparent,
  };
}

function contextText(context: JsonObject | undefined, name: string): string {
  const value = context?.[name];
  return typeof value === "string" ? value : "";
}

function contextScope(context: JsonObject | undefined): JsonObject | undefined {
  const scope = context?.scope;
  return typeof scope === "object" && scope !== null && !Array.isArray(scope) ? scope : undefined;
}

/**
 * The workflow engine: a run is a saga in the saga store (saga id = run id, its context the
 * sources, scope and trace), executed by the node holding its lease, group by group (a group's
 * steps at once). Every transition carries the lease (fencing: a node that lost it stops at its
 * next transition). A step moves to RUNNING (compare-and-set), calls its target with `{run_id,
 * step, source, scope, correlation_id}`, the run's correlation id and traceparent,
 * `Idempotency-Key: <run_id>:<step>` and the step's timeout; its answer (a JSON object) is its
 * output. After `maxAttempts` failed attempts (at once for a 4xx refusal) the failure is
 * dead-lettered as "workflow.step" and the step is FAILED (output `{dlq_id}`); then the completed
 * steps are compensated in reverse order of completion (`<run_id>:<step>:undo`), and the run ends
 * COMPENSATED (FAILED if a compensation failed, or if nothing had completed). A run whose lease expired is taken over where it
 * stands: completed steps stay, a RUNNING step is called again with the same idempotency key.
 */
export function createWorkflowEngine(
  deps: WorkflowEngineDeps,
  options: Partial<WorkflowEngineOptions> = {},
): WorkflowEngine & { readonly stepRetry: DeadLetterHandler } {
  const settings = Object.freeze({ ...workflowEngineDefaults, ...options });
  const { store, logger } = deps;
  const clock = deps.clock ?? systemClock;
  const stopping = new AbortController();
  /** The runs this node executes (or has scheduled), by run id. */
  const local = new Map<string, RunState | "waiting">();
  const active = new Set<Promise<void>>();
  const waiting: (() => void)[] = [];
  let running = 0;
  let scanTimer: NodeJS.Timeout | undefined;
  let scanning: Promise<number> | undefined;

  const recordOf = (saga: Saga): WorkflowRunRecord => ({
    saga,
    traceId: contextText(saga.context, "trace_id"),
    scope: contextScope(saga.context),
  });

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

  /**
   * Moves the saga to `to` under `lease`: first at `knownVersion` when given (the version this
   * node's last transition left, saving a read), then reading it again whenever a step moved
   * meanwhile.
   */
  const moveSaga = async (
    runId: string,
    lease: LeaseProof,
    to: SagaStatus,
    error?: string,
    knownVersion?: number,
  ): Promise<Saga> => {
    for (let tries = 0; ; tries++) {
      let version = tries === 0 ? knownVersion : undefined;
      if (version === undefined) {
        const saga = await store.get(runId);
        if (saga === undefined) throw new DomainError("not_found", `workflow run ${runId} is gone`);
        version = saga.version;
      }
      try {
        return await store.transition(runId, {
          expectedVersion: version,
          to,
          lease,
          ...(error === undefined ? {} : { error }),
        });
      } catch (failure) {
        if (!(failure instanceof DomainError && failure.kind === "conflict") || tries >= 20) {
          throw failure;
        }
      }
    }
  };

  /** Moves the run's saga, from the version this node last left it at. */
  const moveRun = async (run: RunState, to: SagaStatus, error?: string): Promise<Saga> => {
    const saga = await moveSaga(run.runId, run.lease, to, error, run.sagaVersion);
    run.sagaVersion = saga.version;
    return saga;
  };

  const stepRequest = (run: RunState, step: PlannedStep, call: StepCall, undo: boolean) => ({
    target: step.target,
    call,
    body: stepBody(run.runId, step, run.scope, run.origin.correlationId),
    origin: outboundCall(run.origin),
    idempotencyKey: `${run.runId}:${step.name}${undo ? ":undo" : ""}`,
    timeoutMs: step.timeoutMs,
    signal: run.cut.signal,
  });

  const backoff = (run: RunState, attempt: number) =>
    delay(
      Math.min(settings.retryMaxDelayMs, settings.retryBaseDelayMs * 2 ** (attempt - 2)),
      undefined,
      { signal: run.cut.signal },
    );

  const transitionStep = async (
    run: RunState,
    step: PlannedStep,
    change: { to: SagaStep["status"]; error?: string; output?: JsonObject },
  ) => {
    if (run.cut.signal.aborted) throw run.cut.signal.reason;
    const expectedVersion = run.versions[step.index] ?? 1;
    const result = await store.transitionStep(run.runId, step.index, {
      expectedVersion,
      lease: run.lease,
      ...change,
    });
    run.versions[step.index] = result.step.version;
    run.sagaVersion = result.saga.version;
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
      if (attempt > 1) await backoff(run, attempt);
      await transitionStep(run, step, {
        to: "RUNNING",
        ...(lastError === "" ? {} : { error: lastError }),
      });
      try {
        const output = await callStep(deps, stepRequest(run, step, step.action, false));
        await complete(run, step, output);
        return { ok: true };
      } catch (error) {
        if (!(error instanceof StepFailure) || run.cut.signal.aborted) throw error;
        lastError = error.message;
        if (error.permanent) break;
      }
    }
    // Dead-lettered before the step is FAILED, its entry's id kept in the step's output: a run
    // found with a FAILED step (resumed by another node after a crash) has its entry already.
    // A crash between the two leaves the step RUNNING, so a resume calls it again (the entry
    // is then stale, and a retry of it by hand repeats an idempotent call).
    const dlqId = await deadLetter(run, step, lastError);
    await transitionStep(run, step, {
      to: "FAILED",
      error: lastError,
      ...(dlqId === undefined ? {} : { output: { dlq_id: dlqId } }),
    });
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
      if (attempt > 1) await backoff(run, attempt);
      try {
        await callStep(deps, stepRequest(run, step, compensation, true));
        lastError = "";
        break;
      } catch (error) {
        if (!(error instanceof StepFailure) || run.cut.signal.aborted) throw error;
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

  /** Adds the step's failure to the DLQ; its entry id, or undefined when the queue refused it. */
  const deadLetter = async (
    run: RunState,
    step: PlannedStep,
    error: string,
  ): Promise<string | undefined> => {
    try {
      return await deps.deadLetters.add({
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
      return undefined;
    }
  };

  /**
   * Undoes what completed, the saga COMPENSATING (moved there from RUNNING if need be), and
   * finishes it. Steps still RUNNING (a cancel, or a node that died mid-cancel) are FAILED
   * first: their calls may still land, they are not undone.
   */
  const compensate = async (run: RunState, error: string): Promise<void> => {
    let saga = await store.get(run.runId);
    if (saga === undefined) return;
    for (const step of saga.steps) {
      const planned = run.steps[step.index];
      if (step.status !== "RUNNING" || planned === undefined) continue;
      run.versions[step.index] = step.version;
      await transitionStep(run, planned, { to: "FAILED", error: `${error} while running` });
    }
    saga = await store.get(run.runId);
    if (saga !== undefined) run.sagaVersion = saga.version;
    const completed = undoOrder(saga?.steps ?? []);
    if (saga?.status === "RUNNING" && completed.length === 0) {
      emit(run, "workflow.run.failed", await moveRun(run, "FAILED", error));
      return;
    }
    if (saga?.status === "RUNNING") await moveRun(run, "COMPENSATING", error);
    let undoError: string | undefined;
    // Every completed step is undone, even after one compensation failed: best effort.
    for (const step of completed) {
      const failure = await undoStep(run, step);
      undoError ??= failure;
    }
    const end = undoError === undefined ? "COMPENSATED" : "FAILED";
    const finished = await moveRun(run, end, undoError ?? error);
    emit(run, end === "FAILED" ? "workflow.run.failed" : "workflow.run.compensated", finished);
  };

  /** Runs (or goes on with) a run whose lease this node holds, from where its saga stands. */
  const execute = async (run: RunState, read: Saga): Promise<void> => {
    let saga: Saga | undefined = read;
    if (saga.finishedAt !== undefined) return;
    if (saga.status === "COMPENSATING") return compensate(run, saga.error || "resumed");
    if (saga.status === "PENDING") {
      saga = await moveRun(run, "RUNNING");
      emit(run, "workflow.run.started", saga);
    }
    for (const group of groupsOf(run.steps)) {
      const stored = group.map((step) => saga?.steps[step.index]);
      const failedBefore = stored.find((step) => step?.status === "FAILED");
      if (failedBefore !== undefined) {
        const error = `step ${failedBefore.name} failed: ${failedBefore.error}`;
        return compensate(run, error);
      }
      const todo = group.filter((step) => saga?.steps[step.index]?.status !== "COMPLETED");
      const outcomes = await Promise.all(todo.map((step) => runStep(run, step)));
      const failed = outcomes.find((outcome) => !outcome.ok);
      if (failed !== undefined && !failed.ok) return compensate(run, failed.error);
    }
    emit(run, "workflow.run.completed", await moveRun(run, "COMPLETED"));
  };

  /** The run's state from its saga and context; undefined when this node cannot plan it. */
  const stateOf = (saga: Saga, lease: LeaseProof): RunState | undefined => {
    const definition = deps.definitions.find((workflow) => workflow.name === saga.name);
    const sources = saga.context?.sources;
    if (definition === undefined || !Array.isArray(sources)) return undefined;
    let steps: PlannedStep[];
    try {
      steps = planSteps(definition, sources.map(String));
    } catch {
      return undefined;
    }
    if (steps.length !== saga.steps.length) return undefined;
    if (steps.some((step, i) => saga.steps[i]?.name !== step.name)) return undefined;
    return {
      runId: saga.runId,
      workflow: saga.name,
      steps,
      scope: contextScope(saga.context) ?? {},
      origin: {
        correlationId: saga.correlationId,
        traceId: contextText(saga.context, "trace_id"),
        traceparent: contextText(saga.context, "traceparent"),
      },
      versions: saga.steps.map((step) => step.version),
      sagaVersion: saga.version,
      lease,
      cut: cutController(),
    };
  };

  /** Renews the run's lease every third of `leaseMs`; a lost lease cuts the run. */
  const keepLease = (run: RunState): (() => void) => {
    let expiresAt = clock.now() + settings.leaseMs;
    const timer = setInterval(
      () => {
        store.renewLease(run.runId, run.lease, settings.leaseMs).then(
          (lease) => {
            expiresAt = lease.expiresAt;
          },
          (error: unknown) => {
            if (isLeaseLost(error) || clock.now() >= expiresAt) {
              run.cut.abort(new DomainError("failed_precondition", "the run's lease is lost"));
            }
          },
        );
      },
      Math.max(1, Math.floor(settings.leaseMs / 3)),
    );
    timer.unref();
    return () => clearInterval(timer);
  };

  const onStop = () => {
    for (const run of local.values()) {
      if (run !== "waiting") run.cut.abort(stopping.signal.reason);
    }
  };
  stopping.signal.addEventListener("abort", onStop, { once: true });

  /** Takes the run's lease (unless given one) and executes it; quiet when another holds it. */
  /**
   * `created` is the saga as this node just created it: taking the lease does not change what
   * the run needs of it (a lease leaves the version alone), so it is not read again; anything
   * that moved it meanwhile shows as a conflict at the first transition.
   */
  const take = async (runId: string, given?: LeaseProof, created?: Saga): Promise<void> => {
    let lease = given;
    if (lease === undefined) {
      try {
        const taken = await store.takeLease(runId, {
          holder: deps.nodeId,
          ttlMs: settings.leaseMs,
        });
        lease = { holder: taken.holder, token: taken.token };
      } catch (error) {
        if (error instanceof DomainError && error.kind !== "unavailable") return;
        throw error;
      }
    }
    const saga = created ?? (await store.get(runId));
    if (saga === undefined) return;
    const run = stateOf(saga, lease);
    if (run === undefined) {
      logger.error({ run_id: runId }, "workflow run not resumable here: its plan differs");
      return;
    }
    local.set(runId, run);
    const release = keepLease(run);
    try {
      await execute(run, saga);
    } finally {
      release();
      if (local.get(runId) === run) local.delete(runId);
    }
  };

  const launch = (runId: string, lease?: LeaseProof, created?: Saga) => {
    running++;
    const task = take(runId, lease, created)
      .catch((error: unknown) => {
        if (stopping.signal.aborted) {
          logger.info({ run_id: runId }, "workflow run cut by shutdown; left for resume");
        } else if (
          isLeaseLost(error) ||
          (error instanceof DomainError && /lease/.test(error.message))
        ) {
          logger.info({ run_id: runId }, "workflow run's lease lost: another node goes on");
        } else {
          logger.error({ err: error, run_id: runId }, "workflow run stopped by an error");
        }
      })
      .finally(() => {
        running--;
        active.delete(task);
        if (local.get(runId) === "waiting") local.delete(runId);
        if (!stopping.signal.aborted) waiting.shift()?.();
      });
    active.add(task);
  };

  const schedule = (runId: string, lease?: LeaseProof, created?: Saga) => {
    if (running < settings.maxRunning) launch(runId, lease, created);
    else {
      local.set(runId, "waiting");
      // A run that waited is read again when it starts: another node may have moved it.
      waiting.push(() => launch(runId, lease));
    }
  };

  const definitionOf = (name: string): WorkflowDefinition => {
    const definition = deps.definitions.find((workflow) => workflow.name === name);
    if (definition === undefined) {
      const known = deps.definitions.map((workflow) => workflow.name).join(", ");
      throw new DomainError("invalid", `workflow: no workflow ${JSON.stringify(name)} (${known})`);
    }
    return definition;
  };

  /** Whether a listed run is free to take: its lease expired, or it never had one for a lease. */
  const takeable = (saga: SagaSummary, now: number): boolean =>
    saga.runId !== "" &&
    !local.has(saga.runId) &&
    (saga.lease === undefined
      ? saga.createdAt + settings.leaseMs <= now
      : saga.lease.expiresAt <= now);

  /** When the next scan is due, and its timer (set once scans started). */
  let nextScanAt = Number.POSITIVE_INFINITY;
  let scansStarted = false;
  let lastScanAt = Number.NEGATIVE_INFINITY;

  /**
   * Brings the next scan forward to `at` (a foreign lease seen expiring then), but never closer
   * than a quarter lease to the last one: a dead node's runs are taken over soon after their
   * leases expire, not up to a whole lease later, while live nodes' renewed leases cost at most
   * four scans a lease.
   */
  const scanBy = (at: number) => {
    if (!scansStarted || stopping.signal.aborted) return;
    const due = Math.max(at, lastScanAt + settings.leaseMs / 4);
    if (due >= nextScanAt) return;
    nextScanAt = due;
    clearTimeout(scanTimer);
    scanTimer = setTimeout(scanTick, Math.max(1, due - clock.now()));
    scanTimer.unref();
  };

  const scanTick = () => {
    nextScanAt = Number.POSITIVE_INFINITY;
    scanBy(clock.now() + settings.leaseMs);
    engine.resume().catch((error: unknown) => {
      logger.warn({ err: error }, "workflow resume scan failed; next one later");
    });
  };

  const scan = async (): Promise<number> => {
    lastScanAt = clock.now();
    let taken = 0;
    for (const status of ["PENDING", "RUNNING", "COMPENSATING"] as const) {
      let pageToken = "";
      do {
        const page = await store.list({ status, pageSize: 100, pageToken });
        const now = clock.now();
        for (const saga of page.sagas) {
          if (stopping.signal.aborted || waiting.length >= settings.maxWaiting) return taken;
          if (!takeable(saga, now)) {
            if (!local.has(saga.runId)) {
              scanBy(saga.lease?.expiresAt ?? saga.createdAt + settings.leaseMs);
            }
            continue;
          }
          schedule(saga.runId);
          taken++;
        }
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
    }
    return taken;
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
          context: runContext(
            steps.some((step) => step.source !== undefined) ? request.sources : [],
            request.scope,
            origin,
          ),
          steps: steps.map((step) => ({
            name: step.name,
            action: callText(step.target, step.action),
            compensation: callText(step.target, step.compensation),
            group: step.group,
          })),
          // This node executes what it starts: the lease comes with the create, no take needed.
          lease: { holder: deps.nodeId, ttlMs: settings.leaseMs },
        });
      } catch (error) {
        if (
          error instanceof DomainError &&
          error.kind === "invalid" &&
          /^context/.test(error.message)
        ) {
          throw new DomainError(
            "invalid",
            `scope: too large to keep with the run (${error.message})`,
          );
        }
        if (!(error instanceof DomainError && error.kind === "already_exists")) throw error;
        const existing = await store.get(runId);
        if (existing === undefined) throw error;
        return recordOf(existing);
      }
      const lease = saga.lease;
      schedule(runId, lease && { holder: lease.holder, token: lease.token }, saga);
      return recordOf(saga);
    },

    async get(runId) {
      const saga = await store.get(runId);
      return saga === undefined || saga.runId === "" ? undefined : recordOf(saga);
    },

    remembered(saga) {
      return { traceId: contextText(saga.context, "trace_id"), scope: contextScope(saga.context) };
    },

    async cancel(runId) {
      const saga = await store.get(runId);
      if (saga === undefined || saga.runId === "") {
        throw new DomainError("not_found", `workflow run ${runId} not found`);
      }
      if (saga.finishedAt !== undefined) {
        throw new DomainError(
          "failed_precondition",
          `workflow run ${runId} is ${saga.status}: only an unfinished run can be cancelled`,
        );
      }
      let taken: LeaseProof;
      try {
        const lease = await store.takeLease(runId, {
          holder: deps.nodeId,
          ttlMs: settings.leaseMs,
          force: true,
        });
        taken = { holder: lease.holder, token: lease.token };
      } catch (error) {
        if (error instanceof DomainError && error.kind === "failed_precondition") {
          const now = await store.get(runId);
          throw new DomainError(
            "failed_precondition",
            `workflow run ${runId} is ${now?.status ?? "gone"}: only an unfinished run can be cancelled`,
          );
        }
        throw error;
      }
      // The holder is fenced out by the new token; if it is this node, cut its calls at once.
      const mine = local.get(runId);
      if (mine !== undefined && mine !== "waiting") {
        mine.cut.abort(new DomainError("unavailable", `workflow run ${runId} was cancelled`));
      }
      const current = (await store.get(runId)) ?? saga;
      if (current.status === "PENDING") {
        const aborted = await moveSaga(runId, taken, "ABORTED", cancelledError);
        const run = stateOf(aborted, taken);
        if (run !== undefined) emit(run, "workflow.run.cancelled", aborted);
        return recordOf(aborted);
      }
      const moved =
        current.status === "RUNNING"
          ? await moveSaga(runId, taken, "COMPENSATING", cancelledError)
          : current;
      // Compensation goes on in the background, under the lease just taken.
      schedule(runId, taken);
      return recordOf(moved);
    },

    resume() {
      scanning ??= scan().finally(() => {
        scanning = undefined;
      });
      return scanning;
    },

    startScans() {
      if (scansStarted || stopping.signal.aborted) return;
      scansStarted = true;
      scanTick();
    },

    async stop() {
      clearTimeout(scanTimer);
      stopping.abort(new DomainError("unavailable", "the node is stopping"));
      waiting.length = 0;
      await scanning?.catch(() => 0);
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

/**
 * The controller that cuts a run. Every call of every step in flight (and each of their retries)
 * listens to its signal: many listeners on it are the design, not a leak.
 */
function cutController(): AbortController {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  return controller;
}
