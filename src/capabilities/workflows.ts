import { WorkflowService } from "../../gen/orchestrator/v1/workflow_pb.js";
import type { EventLog } from "../events/event-log.js";
import { createWorkflowService } from "../services/workflow-service.js";
import {
  builtInWorkflows,
  definitionProblems,
  type WorkflowDefinition,
} from "../workflows/definitions.js";
import { type Capability, servicePart } from "./capability.js";

/**
 * Workflows: the definitions (built in, validated when the node is built), ingestion requests,
 * and, next, the durable runs (RunWorkflow and the run routes answer 501 until they land).
 * @throws Error listing every problem when a definition is invalid: a node with a broken
 *   workflow does not start.
 */
export function createWorkflowsCapability(deps: {
  readonly events: EventLog;
  readonly definitions?: readonly WorkflowDefinition[];
}): Capability {
  const definitions = deps.definitions ?? builtInWorkflows;
  const problems = definitionProblems(definitions);
  if (problems.length > 0) throw new Error(`invalid workflows: ${problems.join("; ")}`);
  return {
    names: ["workflows", "ingest"],
    services: [
      servicePart(WorkflowService, createWorkflowService({ definitions, events: deps.events })),
    ],
    readiness: [],
    async start() {},
    async stop() {},
  };
}
