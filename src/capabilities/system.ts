import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type GetSystemHealthResponseSchema,
  SystemService,
} from "../../gen/orchestrator/v1/system_pb.js";
import type { Clock } from "../clock.js";
import type { EffectiveConfigValue } from "../config/index.js";
import type { ScheduleStatus } from "../schedules/scheduler.js";
import { createSystemService } from "../services/system-service.js";
import type { NodeInfo } from "../system/node-info.js";
import type { ReadinessCheck } from "../system/readiness.js";
import type { ServingStatus } from "../system/serving-status.js";
import { type Capability, servicePart } from "./capability.js";

/**
 * The node itself (SystemService: health, readiness, info, effective configuration, health
 * watch): it reports on every other capability, so it is built last, from what they declare.
 */
export function createSystemCapability(deps: {
  readonly node: NodeInfo;
  readonly clock: Clock;
  /** Monotonic ms at the start of the process, for the uptime. */
  readonly startedAt: number;
  readonly status: ServingStatus;
  /** Every condition `/ready` waits for (the other capabilities' and the node's own). */
  readonly readinessChecks: readonly ReadinessCheck[];
  readonly effectiveConfig: readonly EffectiveConfigValue[];
  /** Every capability name `/info` lists. */
  readonly capabilityNames: readonly string[];
  readonly protocols: readonly string[];
  /** Whether calls need a bearer token, as `/info` reports it. */
  readonly authEnabled: boolean;
  readonly scheduledJobs?: () => readonly ScheduleStatus[];
  readonly systemHealth?: () => Promise<MessageInitShape<typeof GetSystemHealthResponseSchema>>;
}): Capability {
  return {
    names: ["system"],
    services: [
      servicePart(
        SystemService,
        createSystemService({
          node: deps.node,
          clock: deps.clock,
          startedAt: deps.startedAt,
          status: deps.status,
          readinessChecks: deps.readinessChecks,
          effectiveConfig: deps.effectiveConfig,
          capabilities: ["system", ...deps.capabilityNames],
          protocols: deps.protocols,
          authEnabled: deps.authEnabled,
          ...(deps.scheduledJobs ? { scheduledJobs: deps.scheduledJobs } : {}),
          ...(deps.systemHealth ? { systemHealth: deps.systemHealth } : {}),
        }),
      ),
    ],
    readiness: [],
    start: async () => {},
    stop: async () => {},
  };
}
