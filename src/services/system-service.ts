import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type GetSystemHealthResponseSchema,
  ReadyResponseSchema,
  ServingStatus as ServingStatusMessage,
  type SystemService,
} from "../../gen/orchestrator/v1/system_pb.js";
import type { Clock } from "../clock.js";
import type { EffectiveConfigValue } from "../config/index.js";
import type { ScheduleStatus } from "../schedules/scheduler.js";
import type { NodeInfo } from "../system/node-info.js";
import {
  evaluateReadiness,
  type ReadinessCheck,
  type ReadinessResult,
} from "../system/readiness.js";
import type { ServingState, ServingStatus } from "../system/serving-status.js";

export interface SystemServiceDeps {
  readonly node: NodeInfo;
  readonly clock: Clock;
  /** `clock.monotonic()` when the node started. */
  readonly startedAt: number;
  readonly status: ServingStatus;
  /** Dependencies readiness waits for (Redis, ...); draining is always checked. */
  readonly readinessChecks: readonly ReadinessCheck[];
  /** Time each readiness check has to answer. Default 2000 ms. */
  readonly readinessTimeoutMs?: number;
  readonly effectiveConfig: readonly EffectiveConfigValue[];
  /** Features this node serves, shown by Info. */
  readonly capabilities: readonly string[];
  /** Protocols served on the port, shown by Info. */
  readonly protocols: readonly string[];
  /** Whether calls need a bearer token (`auth_enabled` of Info). */
  readonly authEnabled: boolean;
  /** The jobs on a schedule, shown by Info. */
  readonly scheduledJobs?: () => readonly ScheduleStatus[];
  /** The registry's view of the fleet's health; absent until the registry exists. */
  readonly systemHealth?: () => Promise<MessageInitShape<typeof GetSystemHealthResponseSchema>>;
}

/** SystemService: liveness, readiness, identity and configuration of this node. */
export function createSystemService(deps: SystemServiceDeps): ServiceImpl<typeof SystemService> {
  const uptimeSeconds = () => (deps.clock.monotonic() - deps.startedAt) / 1000;
  const serving = (): ReadinessResult =>
    deps.status.draining
      ? { name: "serving", ok: false, detail: "the node is shutting down" }
      : { name: "serving", ok: true, detail: "" };
  return {
    health: () => ({
      status: "healthy",
      service: deps.node.service,
      version: deps.node.version,
      uptimeSeconds: uptimeSeconds(),
      timestamp: timestampFromMs(deps.clock.now()),
      nodeId: deps.node.nodeId,
    }),

    async getSystemHealth() {
      if (deps.systemHealth === undefined) {
        throw new ConnectError(
          "system health comes from the service registry, which is not implemented yet (issue 3)",
          Code.Unimplemented,
        );
      }
      return deps.systemHealth();
    },

    async ready() {
      const evaluated = await evaluateReadiness(
        deps.readinessChecks,
        deps.readinessTimeoutMs ?? 2000,
      );
      // Serving is read after the other checks, so that a drain begun meanwhile is not missed.
      const results = [serving(), ...evaluated];
      const response = create(ReadyResponseSchema, {
        ready: results.every((r) => r.ok),
        checks: results,
      });
      if (response.ready) return response;
      const failing = results.filter((r) => !r.ok).map((r) => r.name);
      throw new ConnectError(`not ready: ${failing.join(", ")}`, Code.Unavailable, undefined, [
        { desc: ReadyResponseSchema, value: response },
      ]);
    },

    info: () => ({
      service: deps.node.service,
      version: deps.node.version,
      description: deps.node.description,
      nodeId: deps.node.nodeId,
      uptimeSeconds: uptimeSeconds(),
      capabilities: [...deps.capabilities],
      protocols: [...deps.protocols],
      authEnabled: deps.authEnabled,
      environment: deps.node.environment,
      incarnationId: deps.node.incarnationId,
      scheduledJobs: (deps.scheduledJobs?.() ?? []).map((job) => ({
        job: job.job,
        cron: job.cron,
        ...(job.nextRunAt === undefined ? {} : { nextRunAt: timestampFromMs(job.nextRunAt) }),
        ...(job.lastRunAt === undefined ? {} : { lastRunAt: timestampFromMs(job.lastRunAt) }),
        lastOutcome: job.lastOutcome,
        runs: job.runs,
        skipped: job.skipped,
      })),
    }),

    getEffectiveConfig: () => ({ values: deps.effectiveConfig.map((value) => ({ ...value })) }),

    async *watchHealth(_request, context) {
      const { status } = deps;
      const message = (state: ServingState) => ({
        status:
          state === "SERVING" ? ServingStatusMessage.SERVING : ServingStatusMessage.NOT_SERVING,
        timestamp: timestampFromMs(deps.clock.now()),
      });
      let state = status.state;
      yield message(state);
      while (!status.draining) {
        const next = await nextState(status, state, context.signal);
        if (next === undefined) return;
        state = next;
        yield message(state);
      }
    },

    ping: () => ({}),
  };
}

/** Resolves at the next change of state, or undefined when `signal` aborts first. */
function nextState(
  status: ServingStatus,
  current: ServingState,
  signal: AbortSignal,
): Promise<ServingState | undefined> {
  if (status.state !== current) return Promise.resolve(status.state);
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const finish = (state: ServingState | undefined) => {
      unsubscribe();
      signal.removeEventListener("abort", onAbort);
      resolve(state);
    };
    const onAbort = () => finish(undefined);
    const unsubscribe = status.onChange((state) => finish(state));
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
