import { JobsService } from "../../gen/orchestrator/v1/jobs_pb.js";
import type { Clock } from "../clock.js";
import type { HttpClient } from "../http-client/http-client.js";
import type { TargetResolver } from "../http-client/service-targets.js";
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

/**
 * JobsService: operational jobs on the doc store, reporting, the notification service and the
 * secure analyzer. It holds no state and runs nothing in the background; a service that is not
 * set up fails (or skips) only the jobs that need it, so it adds no readiness check.
 */
export function createJobsCapability(deps: JobsCapabilityDeps): Capability {
  return {
    names: ["jobs"],
    services: [servicePart(JobsService, createJobsService(deps))],
    readiness: [],
    start: async () => {},
    stop: async () => {},
  };
}
