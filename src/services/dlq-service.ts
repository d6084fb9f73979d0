import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type DlqEntrySchema,
  DlqState as DlqStateMessage,
  type InfrastructureService,
  type RetryDlqRequest,
} from "../../gen/orchestrator/v1/infrastructure_pb.js";
import type { DeadLetterQueue, DlqRetrySelection } from "../dlq/dead-letter-queue.js";
import type { ClaimableState, DlqEntry, DlqState } from "../dlq/model.js";
import type { FieldViolation } from "../interceptors/field-rules.js";
import { invalidRequestError } from "../interceptors/validation.js";

/** The InfrastructureService methods of the dead-letter queue. */
export type DlqServiceMethods = Pick<
  ServiceImpl<typeof InfrastructureService>,
  "getDlqStats" | "listDlqEntries" | "retryDlq"
>;

/**
 * GetDlqStats, ListDlqEntries and RetryDlq over `queue`: messages to domain calls and back. What
 * the protos' field rules cannot say (a state a retry cannot start from, ids given together with
 * a filter) is refused here as INVALID_ARGUMENT naming the field.
 */
export function createDlqService(queue: DeadLetterQueue): DlqServiceMethods {
  return {
    async getDlqStats() {
      const stats = await queue.stats();
      return {
        totalEvents: int32(stats.pendingRetry + stats.retrying + stats.dead),
        pendingRetry: int32(stats.pendingRetry),
        retrying: int32(stats.retrying),
        deadEvents: int32(stats.dead),
        resolved: int32(stats.resolved),
        retriedEvents: int32(stats.retried),
        byType: int32Map(stats.byType),
        byService: int32Map(stats.byService),
        ...(stats.oldestFailedAt > 0
          ? { oldestFailedAt: timestampFromMs(stats.oldestFailedAt) }
          : {}),
      };
    },

    async listDlqEntries(request) {
      const state = stateOf(request.state);
      if (state === null) throw invalidRequestError([unknownState]);
      const page = await queue.list(
        {
          states: state === undefined ? [] : [state],
          eventType: request.eventType,
          serviceName: request.serviceName,
        },
        request.pageToken,
        request.pageSize,
      );
      return { entries: page.entries.map(entryMessage), nextPageToken: page.nextPageToken };
    },

    async retryDlq(request) {
      const report = await queue.retry(selectionOf(request));
      return {
        retriedEvents: report.retried,
        totalEvents: report.total,
        failedEvents: report.failed,
        results: report.results.map((result) => ({
          dlqId: result.dlqId,
          outcome: result.outcome,
          state:
            result.state === undefined
              ? DlqStateMessage.UNSPECIFIED
              : DlqStateMessage[result.state],
          error: result.error,
        })),
      };
    },
  };
}

const unknownState: FieldViolation = {
  field: "state",
  description:
    "must be one of DLQ_STATE_PENDING_RETRY, DLQ_STATE_RETRYING, DLQ_STATE_DEAD, DLQ_STATE_RESOLVED (or unset)",
};

/** The domain state of an enum value: undefined for UNSPECIFIED, null for a value not defined. */
function stateOf(value: DlqStateMessage): DlqState | undefined | null {
  if (value === DlqStateMessage.UNSPECIFIED) return undefined;
  const name = DlqStateMessage[value] as DlqState | undefined;
  return name ?? null;
}

/** The selection a RetryDlq request makes. @throws ConnectError INVALID_ARGUMENT naming fields. */
function selectionOf(request: RetryDlqRequest): DlqRetrySelection {
  const violations: FieldViolation[] = [];
  const state = stateOf(request.state);
  if (state !== undefined && state !== "PENDING_RETRY" && state !== "DEAD") {
    violations.push({
      field: "state",
      description: "must be DLQ_STATE_PENDING_RETRY or DLQ_STATE_DEAD (or unset for both)",
    });
  }
  if (request.dlqIds.length > 0) {
    const filters = [
      ["event_type", request.eventType !== ""],
      ["service_name", request.serviceName !== ""],
      ["state", request.state !== DlqStateMessage.UNSPECIFIED],
      ["limit", request.limit !== 0],
    ] as const;
    for (const [field, given] of filters) {
      if (given)
        violations.push({
          field,
          description: "applies to a filter: give dlq_ids or a filter, not both",
        });
    }
  }
  if (violations.length > 0) throw invalidRequestError(violations);
  if (request.dlqIds.length > 0) return { dlqIds: request.dlqIds };
  return {
    eventType: request.eventType,
    serviceName: request.serviceName,
    states: state === undefined ? [] : [state as ClaimableState],
    limit: request.limit,
  };
}

function entryMessage(entry: DlqEntry): MessageInitShape<typeof DlqEntrySchema> {
  // Unset when 0: an entry not PENDING_RETRY has no next retry, one not RESOLVED no resolution.
  const at = (field: string, ms: number) => (ms > 0 ? { [field]: timestampFromMs(ms) } : {});
  return {
    dlqId: entry.dlqId,
    eventId: entry.eventId,
    eventType: entry.eventType,
    payload: entry.payload,
    failureReason: entry.failureReason,
    serviceName: entry.serviceName,
    correlationId: entry.correlationId,
    attempts: entry.attempts,
    maxAttempts: entry.maxAttempts,
    state: DlqStateMessage[entry.state],
    ...at("nextRetryAt", entry.nextRetryAt),
    ...at("firstFailedAt", entry.firstFailedAt),
    ...at("lastFailedAt", entry.lastFailedAt),
    ...at("resolvedAt", entry.resolvedAt),
  };
}

const int32Max = 2_147_483_647;

/** Counts are int32 in the API: a count past it (years of retries) shows as the largest one. */
function int32(count: number): number {
  return Math.min(count, int32Max);
}

function int32Map(counts: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(counts)) out[key] = int32(value);
  return out;
}
