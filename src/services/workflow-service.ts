import type { JsonObject } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type { WorkflowService } from "../../gen/orchestrator/v1/workflow_pb.js";
import type { EventLog } from "../events/event-log.js";
import { callMetaOf } from "../interceptors/call-meta.js";
import type { StepCall, WorkflowDefinition } from "../workflows/definitions.js";

/** The workflow methods served so far: the definitions, and ingestion requests. */
export type WorkflowServicePart = Pick<
  ServiceImpl<typeof WorkflowService>,
  "listWorkflows" | "ingest"
>;

/** What {@link createWorkflowService} is built from. */
export interface WorkflowServiceDeps {
  readonly definitions: readonly WorkflowDefinition[];
  /** Where `ingestion.requested` goes (stored, then published to its channel). */
  readonly events: EventLog;
}

/**
 * ListWorkflows answers the definitions with their steps; Ingest records an
 * `ingestion.requested` event (published on its Redis channel for the agents) carrying the
 * source, the scope and the call's correlation and trace ids, and answers at once.
 */
export function createWorkflowService(deps: WorkflowServiceDeps): WorkflowServicePart {
  return {
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
