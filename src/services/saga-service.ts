import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type InfrastructureService,
  SagaStatus as SagaStatusMessage,
  SagaStepStatus as SagaStepStatusMessage,
} from "../../gen/orchestrator/v1/infrastructure_pb.js";
import type { Saga, SagaStep } from "../sagas/model.js";
import { sagaStats } from "../sagas/model.js";
import { sagaNotFound } from "../sagas/saga-records.js";
import type { SagaStore } from "../sagas/saga-store.js";

/** The saga methods of InfrastructureService. */
export type SagaServicePart = Pick<
  ServiceImpl<typeof InfrastructureService>,
  "getSaga" | "getSagaStats"
>;

/**
 * GetSaga and GetSagaStats over the saga store: the saga with its steps (NOT_FOUND for an unknown
 * id), and the stats computed from the stored counts.
 */
export function createSagaService(deps: { readonly store: SagaStore }): SagaServicePart {
  const { store } = deps;
  return {
    async getSaga(request) {
      const saga = await store.get(request.sagaId);
      if (saga === undefined) throw sagaNotFound(request.sagaId);
      return { saga: sagaMessage(saga) };
    },

    async getSagaStats() {
      const stats = sagaStats(await store.counts());
      return {
        totalSagas: stats.totalSagas,
        running: stats.running,
        completedSagas: stats.completed,
        failedSagas: stats.failed,
        compensatedSagas: stats.compensated,
        abortedSagas: stats.aborted,
        successRate: stats.successRate,
        avgDurationMs: stats.avgDurationMs,
        byStatus: { ...stats.byStatus },
      };
    },
  };
}

function sagaMessage(saga: Saga) {
  return {
    sagaId: saga.sagaId,
    name: saga.name,
    runId: saga.runId,
    correlationId: saga.correlationId,
    status: SagaStatusMessage[saga.status],
    steps: saga.steps.map(stepMessage),
    createdAt: timestampFromMs(saga.createdAt),
    updatedAt: timestampFromMs(saga.updatedAt),
    ...(saga.finishedAt === undefined ? {} : { finishedAt: timestampFromMs(saga.finishedAt) }),
    error: saga.error,
    version: BigInt(saga.version),
  };
}

function stepMessage(step: SagaStep) {
  return {
    name: step.name,
    action: step.action,
    compensation: step.compensation,
    status: SagaStepStatusMessage[step.status],
    attempts: step.attempts,
    error: step.error,
    ...(step.startedAt === undefined ? {} : { startedAt: timestampFromMs(step.startedAt) }),
    ...(step.finishedAt === undefined ? {} : { finishedAt: timestampFromMs(step.finishedAt) }),
    ...(step.compensatedAt === undefined
      ? {}
      : { compensatedAt: timestampFromMs(step.compensatedAt) }),
    ...(step.output === undefined ? {} : { output: step.output }),
    group: step.group,
  };
}
