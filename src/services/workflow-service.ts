import type { JsonObject } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { RunStatus, type WorkflowService } from "../../gen/orchestrator/v1/workflow_pb.js";
import { DomainError } from "../errors/domain-error.js";
import type { EventLog } from "../events/event-log.js";
import { callMetaOf, traceparentOf } from "../interceptors/call-meta.js";
import type { SagaStatus, SagaStep, SagaStepStatus } from "../sagas/model.js";
import type { SagaStore } from "../sagas/saga-store.js";
import type { StepCall, WorkflowDefinition } from "../workflows/definitions.js";
import type { WorkflowEngine, WorkflowRunRecord } from "../workflows/engine.js";
import { runHistory } from "../workflows/run-history.js";

/** The workflow methods. */
export type WorkflowServicePart = Pick<
  ServiceImpl<typeof WorkflowService>,
  | "listWorkflows"
  | "ingest"
  | "runWorkflow"
  | "getWorkflowRun"
  | "listWorkflowHistory"
  | "cancelWorkflowRun"
  | "watchWorkflowRun"
>;

/** What {@link createWorkflowService} is built from. */
export interface WorkflowServiceDeps {
  readonly definitions: readonly WorkflowDefinition[];
  /** Where `ingestion.requested` goes (stored, then published to its channel). */
  readonly events: EventLog;
  readonly engine: WorkflowEngine;
  /** The saga store the engine runs in: the history is read from it. */
  readonly store: SagaStore;
}

/**
 * ListWorkflows answers the definitions with their steps; Ingest records an
 * `ingestion.requested` event (published on its Redis channel for the agents) carrying the
 * source, the scope and the call's correlation and trace ids, and answers at once. RunWorkflow
 * starts a run (the engine), GetWorkflowRun reads one (NOT_FOUND when unknown),
 * CancelWorkflowRun cancels one (FAILED_PRECONDITION naming the status of a finished one), and
 * ListWorkflowHistory pages through the saga store.
 */
export function createWorkflowService(deps: WorkflowServiceDeps): WorkflowServicePart {
  return {
    async runWorkflow(request, context) {
      const meta = callMetaOf(context);
      const record = await deps.engine.start(
        {
          workflow: request.workflow,
          sources: request.sources,
          scope: request.scope ?? {},
          correlationId: request.correlationId,
          idempotencyKey: request.idempotencyKey,
        },
        {
          correlationId: meta.correlationId,
          traceId: meta.traceId,
          traceparent: traceparentOf(meta),
        },
      );
      const run = runMessage(record);
      return {
        status: "started",
        runId: run.runId,
        sagaId: run.sagaId,
        correlationId: run.correlationId,
        workflow: run.workflow,
        steps: run.steps,
      };
    },

    async getWorkflowRun(request) {
      const record = await deps.engine.get(request.runId);
      if (record === undefined) {
        throw new DomainError("not_found", `workflow run ${request.runId} not found`);
      }
      return { run: runMessage(record) };
    },

    /**
     * The run now, then again at each change of its saga (woken by the run's events, which any
     * node sharing the store emits; read again every `watchRecheckMs` in case one was missed),
     * until it finishes. A state is sent once: an event that changed nothing sends nothing.
     */
    async *watchWorkflowRun(request, context) {
      const { runId } = request;
      const wakeup = createWakeup();
      const unsubscribe = deps.events.subscribe((event) => {
        if (event.subject === runId) wakeup.wake();
      });
      const onAbort = () => wakeup.wake();
      context.signal.addEventListener("abort", onAbort, { once: true });
      try {
        let sentVersion = -1;
        for (;;) {
          const record = await deps.engine.get(runId);
          if (record === undefined) {
            throw new DomainError("not_found", `workflow run ${runId} not found`);
          }
          if (record.saga.version !== sentVersion) {
            sentVersion = record.saga.version;
            yield { run: runMessage(record) };
          }
          if (record.saga.finishedAt !== undefined || context.signal.aborted) return;
          await wakeup.wait(watchRecheckMs);
        }
      } finally {
        unsubscribe();
        context.signal.removeEventListener("abort", onAbort);
      }
    },

    async cancelWorkflowRun(request) {
      return { run: runMessage(await deps.engine.cancel(request.runId)) };
    },

    async listWorkflowHistory(request) {
      const page = await runHistory(deps.store, {
        statuses: sagaStatusesOf(request.status),
        workflow: request.workflow,
        correlationId: request.correlationId,
        since: request.since ? timestampDate(request.since).getTime() : 0,
        pageSize: request.pageSize || 100,
        pageToken: request.pageToken,
      });
      const items = page.runs.map((saga) => runMessage({ saga, ...deps.engine.remembered(saga) }));
      return { items, count: items.length, nextPageToken: page.nextPageToken };
    },

    listWorkflows() {
      return {
        workflows: deps.definitions.map((workflow) => ({
          name: workflow.name,
          description: workflow.description,
          sources: [...workflow.sources],
          steps: workflow.steps.map((step) => ({
            name: step.name,
            target: step.target,
            action: callText(step.action),
            compensation: step.compensation ? callText(step.compensation) : "",
            group: step.group,
            perSource: step.perSource,
            timeoutMs: step.timeoutMs,
            maxAttempts: step.maxAttempts,
          })),
        })),
        count: deps.definitions.length,
      };
    },

    ingest(request, context) {
      const meta = callMetaOf(context);
      // The body's correlation id wins; else the call's (its header's, or one made for it).
      const correlationId = request.correlationId || meta.correlationId;
      const scope: JsonObject = request.scope ?? {};
      deps.events.append({
        type: "ingestion.requested",
        subject: request.source,
        correlationId,
        traceId: meta.traceId,
        payload: {
          source: request.source,
          scope,
          correlation_id: correlationId,
          trace_id: meta.traceId,
        },
      });
      return {
        status: "accepted",
        source: request.source,
        correlationId,
        traceId: meta.traceId,
      };
    },
  };
}

function callText(call: StepCall): string {
  return `${call.method} ${call.path}`;
}

/** A run's status from its saga's. */
const runStatusOf: Readonly<Record<SagaStatus, RunStatus>> = Object.freeze({
  PENDING: RunStatus.PENDING,
  RUNNING: RunStatus.RUNNING,
  COMPENSATING: RunStatus.RUNNING,
  COMPLETED: RunStatus.SUCCEEDED,
  FAILED: RunStatus.FAILED,
  COMPENSATED: RunStatus.COMPENSATED,
  ABORTED: RunStatus.CANCELLED,
});

/** A run step's status from its saga step's (an undoing step is still running). */
const stepStatusOf: Readonly<Record<SagaStepStatus, RunStatus>> = Object.freeze({
  PENDING: RunStatus.PENDING,
  RUNNING: RunStatus.RUNNING,
  COMPENSATING: RunStatus.RUNNING,
  COMPLETED: RunStatus.SUCCEEDED,
  FAILED: RunStatus.FAILED,
  COMPENSATED: RunStatus.COMPENSATED,
  SKIPPED: RunStatus.SKIPPED,
});

/** The saga statuses a history status filter walks; every status when unset. */
function sagaStatusesOf(status: RunStatus): SagaStatus[] {
  if (status === RunStatus.UNSPECIFIED) return [];
  const statuses = (Object.keys(runStatusOf) as SagaStatus[]).filter(
    (saga) => runStatusOf[saga] === status,
  );
  if (statuses.length === 0) {
    throw new DomainError("invalid", `status: no run is ever ${RunStatus[status]}`);
  }
  return statuses;
}

/** How long a watch waits for an event of its run before it reads the run again anyway. */
const watchRecheckMs = 5_000;

/** A wake-up a waiter may have missed while busy: `wait` returns at once if one came since. */
function createWakeup(): { wake(): void; wait(timeoutMs: number): Promise<void> } {
  let woken = false;
  let resolve: (() => void) | undefined;
  return {
    wake() {
      woken = true;
      resolve?.();
    },
    async wait(timeoutMs) {
      if (!woken) {
        await new Promise<void>((done) => {
          const timer = setTimeout(done, timeoutMs);
          resolve = () => {
            clearTimeout(timer);
            done();
          };
        });
      }
      woken = false;
      resolve = undefined;
    },
  };
}

function runMessage(record: WorkflowRunRecord) {
  const { saga } = record;
  const sources = [...new Set(saga.steps.flatMap((step) => step.name.split(":").slice(1, 2)))];
  return {
    runId: saga.runId,
    workflow: saga.name,
    status: runStatusOf[saga.status],
    sagaId: saga.sagaId,
    correlationId: saga.correlationId,
    traceId: record.traceId,
    sources,
    steps: saga.steps.map(stepMessage),
    createdAt: timestampFromMs(saga.createdAt),
    updatedAt: timestampFromMs(saga.updatedAt),
    startedAt: timestampFromMs(saga.createdAt),
    ...(saga.finishedAt === undefined ? {} : { finishedAt: timestampFromMs(saga.finishedAt) }),
    error: saga.error,
    ...(record.scope === undefined ? {} : { scope: record.scope }),
  };
}

function stepMessage(step: SagaStep) {
  return {
    name: step.name,
    status: stepStatusOf[step.status],
    attempts: step.attempts,
    error: step.error,
    ...(step.startedAt === undefined ? {} : { startedAt: timestampFromMs(step.startedAt) }),
    ...(step.finishedAt === undefined ? {} : { finishedAt: timestampFromMs(step.finishedAt) }),
    ...(step.output === undefined ? {} : { output: step.output }),
  };
}
