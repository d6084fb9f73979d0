import type { Logger } from "pino";
import { WorkflowService } from "../../gen/orchestrator/v1/workflow_pb.js";
import type { DeadLetters } from "../dlq/dead-letters.js";
import type { EventLog } from "../events/event-log.js";
import type { HttpClient } from "../http-client/http-client.js";
import type { TargetResolver } from "../http-client/service-targets.js";
import type { IdSource } from "../ids.js";
import type { SagaStore } from "../sagas/saga-store.js";
import { createWorkflowService } from "../services/workflow-service.js";
import {
  builtInWorkflows,
  definitionProblems,
  type WorkflowDefinition,
} from "../workflows/definitions.js";
import {
  createWorkflowEngine,
  type WorkflowEngineOptions,
  workflowStepDeadLetter,
} from "../workflows/engine.js";
import { type Capability, servicePart } from "./capability.js";

/** What {@link createWorkflowsCapability} is built from. */
export interface WorkflowsCapabilityDeps {
  readonly events: EventLog;
  /** Default: the built-in workflows. */
  readonly definitions?: readonly WorkflowDefinition[];
  /** The sagas capability's store: runs are sagas there. */
  readonly store: SagaStore;
  /** The node's one outbound client. */
  readonly http: HttpClient;
  readonly targets: TargetResolver;
  /** Failed steps go there; its "workflow.step" entries are retried by this capability. */
  readonly deadLetters: DeadLetters;
  readonly ids: IdSource;
  readonly logger: Logger;
  /** This node's id: the holder of the run leases it takes. */
  readonly nodeId: string;
  readonly engine?: Partial<WorkflowEngineOptions>;
}

/**
 * Workflows: the definitions (validated when the node is built), ingestion requests, and runs
 * executed by the engine as sagas (RunWorkflow, GetWorkflowRun, ListWorkflowHistory); a failed
 * step is dead-lettered as "workflow.step", whose retry re-runs the step. Runs are leased: once
 * started, the node scans every lease period for runs whose lease expired and takes them over;
 * CancelWorkflowRun cancels one. WatchWorkflowRun answers 501 until the next increment.
 * @throws Error listing every problem when a definition is invalid: a node with a broken
 *   workflow does not start.
 */
export function createWorkflowsCapability(deps: WorkflowsCapabilityDeps): Capability {
  const definitions = deps.definitions ?? builtInWorkflows;
  const problems = definitionProblems(definitions);
  if (problems.length > 0) throw new Error(`invalid workflows: ${problems.join("; ")}`);
  const engine = createWorkflowEngine(
    {
      definitions,
      store: deps.store,
      http: deps.http,
      targets: deps.targets,
      events: deps.events,
      deadLetters: deps.deadLetters,
      ids: deps.ids,
      logger: deps.logger,
      nodeId: deps.nodeId,
    },
    deps.engine,
  );
  deps.deadLetters.handle(workflowStepDeadLetter, engine.stepRetry);
  return {
    names: ["workflows", "workflow-runs", "ingest"],
    services: [
      servicePart(
        WorkflowService,
        createWorkflowService({ definitions, events: deps.events, engine, store: deps.store }),
      ),
    ],
    readiness: [],
    async start() {
      engine.startScans();
    },
    async stop() {
      await engine.stop();
    },
  };
}
