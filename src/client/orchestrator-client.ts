import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import { InfrastructureService } from "../../gen/orchestrator/v1/infrastructure_pb.js";
import { JobsService } from "../../gen/orchestrator/v1/jobs_pb.js";
import { PeerService } from "../../gen/orchestrator/v1/peer_pb.js";
import {
  RegistryService,
  type WatchServicesResponse,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { SystemService } from "../../gen/orchestrator/v1/system_pb.js";
import { WorkflowService } from "../../gen/orchestrator/v1/workflow_pb.js";
import { type FollowRegistryOptions, followRegistry } from "./follow-registry.js";
import {
  type KeepRegisteredOptions,
  keepRegistered,
  type RegistrationEntry,
  type RegistrationHandle,
} from "./keep-registered.js";

/** What {@link createOrchestratorClient} takes. */
export interface OrchestratorClientOptions {
  /** The node's URL, e.g. `http://127.0.0.1:8080` (gRPC, Connect and REST share its one port). */
  readonly baseUrl: string;
  /** Sent as `authorization: Bearer <token>` on every call. Default: none (auth off). */
  readonly token?: string;
  /** `"grpc"` (default, binary over HTTP/2) or `"connect"` (Connect protocol, JSON, over HTTP/2). */
  readonly protocol?: "grpc" | "connect";
  /** Deadline of each unary call, in ms, sent to the node as the call's timeout. Default: none. */
  readonly timeoutMs?: number;
  /** More interceptors, run after the one that adds the token. Default: none. */
  readonly interceptors?: readonly Interceptor[];
}

/** A typed client per service of the orchestrator, on one HTTP/2 connection. */
export interface OrchestratorClient {
  readonly registry: Client<typeof RegistryService>;
  readonly workflows: Client<typeof WorkflowService>;
  readonly infrastructure: Client<typeof InfrastructureService>;
  readonly jobs: Client<typeof JobsService>;
  readonly system: Client<typeof SystemService>;
  readonly peers: Client<typeof PeerService>;
  /** The transport the clients share, to make clients of other services on it. */
  readonly transport: Transport;
  /** Registers `entry` and keeps it registered until `stop()`: see {@link keepRegistered}. */
  keepRegistered(
    entry: RegistrationEntry,
    options?: KeepRegisteredOptions,
  ): Promise<RegistrationHandle>;
  /** The registry's changes, resumed across reconnections: see {@link followRegistry}. */
  followRegistry(
    options?: FollowRegistryOptions,
  ): AsyncGenerator<WatchServicesResponse, void, undefined>;
  /** Closes the HTTP/2 connection and its open streams. Idempotent. */
  close(): void;
}

/**
 * Makes the typed clients of an orchestrator node: gRPC by default, or the Connect protocol with
 * JSON. Both run over one HTTP/2 session held by this client (not connect-node's process-wide
 * one), so `close()` really closes it and a program that is done can exit.
 */
export function createOrchestratorClient(options: OrchestratorClientOptions): OrchestratorClient {
  const baseUrl = validBaseUrl(options.baseUrl);
  const sessionManager = new Http2SessionManager(baseUrl);
  const interceptors = [
    ...(options.token === undefined ? [] : [bearer(options.token)]),
    ...(options.interceptors ?? []),
  ];
  const common = {
    baseUrl,
    httpVersion: "2" as const,
    sessionManager,
    interceptors,
    ...(options.timeoutMs === undefined ? {} : { defaultTimeoutMs: options.timeoutMs }),
  };
  const transport =
    (options.protocol ?? "grpc") === "grpc"
      ? createGrpcTransport(common)
      : createConnectTransport({ ...common, useBinaryFormat: false });
  const client = <S extends DescService>(service: S) => createClient(service, transport);
  const registry = client(RegistryService);
  return {
    registry,
    workflows: client(WorkflowService),
    infrastructure: client(InfrastructureService),
    jobs: client(JobsService),
    system: client(SystemService),
    peers: client(PeerService),
    transport,
    keepRegistered: (entry, keepOptions) => keepRegistered(registry, entry, keepOptions),
    followRegistry: (followOptions) => followRegistry(registry, followOptions),
    close: () => sessionManager.abort(),
  };
}

function bearer(token: string): Interceptor {
  return (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}

/** Fails early, with the option's name, rather than at the first call. */
function validBaseUrl(baseUrl: string): string {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new TypeError(`baseUrl must be an absolute http(s) URL, got ${JSON.stringify(baseUrl)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(`baseUrl must be an http or https URL, got ${url.protocol}`);
  }
  return url.href.replace(/\/$/, "");
}
