import type { DescFile, DescService } from "@bufbuild/protobuf";
import {
  file_orchestrator_v1_infrastructure,
  InfrastructureService,
} from "../../gen/orchestrator/v1/infrastructure_pb.js";
import { file_orchestrator_v1_jobs, JobsService } from "../../gen/orchestrator/v1/jobs_pb.js";
import { file_orchestrator_v1_peer, PeerService } from "../../gen/orchestrator/v1/peer_pb.js";
import {
  file_orchestrator_v1_registry,
  RegistryService,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { file_orchestrator_v1_system, SystemService } from "../../gen/orchestrator/v1/system_pb.js";
import {
  file_orchestrator_v1_workflow,
  WorkflowService,
} from "../../gen/orchestrator/v1/workflow_pb.js";

/** The services of the API, whose google.api.http rules make the REST routes. */
export const apiServices: readonly DescService[] = [
  SystemService,
  RegistryService,
  PeerService,
  WorkflowService,
  InfrastructureService,
  JobsService,
];

/** The files that declare them, for reflection. */
export const apiFiles: readonly DescFile[] = [
  file_orchestrator_v1_system,
  file_orchestrator_v1_registry,
  file_orchestrator_v1_peer,
  file_orchestrator_v1_workflow,
  file_orchestrator_v1_infrastructure,
  file_orchestrator_v1_jobs,
];
