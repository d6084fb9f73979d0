// The typed client of the orchestrator for other services (`orchestrator/client`): plain
// TypeScript on the generated descriptors and connect-node, with no server code.

// What a consumer needs to read the answers without reaching into gen/.
export {
  type ServiceEntry,
  ServiceStatus,
  WatchEventType,
  type WatchServicesResponse,
} from "../../gen/orchestrator/v1/registry_pb.js";
export {
  type FollowRegistryOptions,
  followRegistry,
} from "./follow-registry.js";
export {
  type KeepRegisteredOptions,
  keepRegistered,
  type RegistrationEntry,
  type RegistrationHandle,
  type RegistrationState,
} from "./keep-registered.js";
export {
  createOrchestratorClient,
  type OrchestratorClient,
  type OrchestratorClientOptions,
} from "./orchestrator-client.js";
export { isTransient } from "./transient.js";
