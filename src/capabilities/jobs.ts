import { JobsService } from "../../gen/orchestrator/v1/jobs_pb.js";
import type { Clock } from "../clock.js";
import type { HttpClient } from "../http-client/http-client.js";
import type { TargetResolver } from "../http-client/service-targets.js";
import { notifyConsolidation } from "../jobs/notify-consolidation.js";
import { recalcQuality } from "../jobs/recalc-quality.js";
import type { ScheduledJob } from "../schedules/scheduler.js";
import { createJobsService } from "../services/jobs-service.js";
import { type Capability, servicePart } from "./capability.js";

/** What {@link createJobsCapability} is built from. */
export interface JobsCapabilityDeps {
  /** The node's one outbound client: its breakers are shared with every other caller. */
  readonly http: HttpClient;
  /** Finds doc-store, reporting, notification-service and secure-analyzer by name. */
  readonly targets: TargetResolver;
  readonly clock: Clock;
}

/** The jobs capability, and the jobs `SCHEDULED_JOBS` may name. */
export interface JobsCapability extends Capability {
  readonly scheduledJobs: ReadonlyMap<string, ScheduledJob>;
}

/**
 * The jobs a schedule may run, each firing on behalf of a correlation id naming the job and its
 * firing (so a firing's calls are found together in logs, events and traces, and a retried
 * notice of the same firing is recognised by its idempotency key). A consolidation notice on a
 * schedule keeps candidates of confidence 0.8 or more, at most the default limit, on the
 * notification service's default channel.
 */
function scheduledJobsOf(deps: JobsCapabilityDeps): ReadonlyMap<string, ScheduledJob> {
  const callOf = (job: string, firingMs: number) => ({
    correlationId: `schedule:${job}:${firingMs}`,
  });
  return new Map<string, ScheduledJob>([
    ["recalc-quality", ({ firingMs }) => recalcQuality(deps, callOf("recalc-quality", firingMs))],
    [
      "notify-consolidation",
      ({ firingMs }) =>
        notifyConsolidation(deps, callOf("notify-consolidation", firingMs), {
          minConfidence: 0.8,
          limit: 0,
        }),
    ],
  ]);
}

/**
 * JobsService: operational jobs on the doc store, reporting, the notification service and the
 * secure analyzer. It holds no state and runs nothing in the background; a service that is not
 * set up fails (or skips) only the jobs that need it, so it adds no readiness check.
 */
export function createJobsCapability(deps: JobsCapabilityDeps): JobsCapability {
  return {
    names: ["jobs"],
    scheduledJobs: scheduledJobsOf(deps),
    services: [servicePart(JobsService, createJobsService(deps))],
    readiness: [],
    start: async () => {},
    stop: async () => {},
  };
}
