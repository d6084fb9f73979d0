import { setMaxListeners } from "node:events";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import type { DescFile, DescService } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { Redis } from "ioredis";
import type { DestinationStream, Logger } from "pino";
import {
  file_grpc_reflection_v1_reflection,
  ServerReflection as ServerReflectionV1,
} from "../gen/grpc/reflection/v1/reflection_pb.js";
import {
  file_grpc_reflection_v1alpha_reflection,
  ServerReflection as ServerReflectionV1alpha,
} from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { file_health_v1_health, Health } from "../gen/health/v1/health_pb.js";
import {
  file_orchestrator_v1_infrastructure,
  InfrastructureService,
} from "../gen/orchestrator/v1/infrastructure_pb.js";
import { file_orchestrator_v1_jobs, JobsService } from "../gen/orchestrator/v1/jobs_pb.js";
import { file_orchestrator_v1_peer, PeerService } from "../gen/orchestrator/v1/peer_pb.js";
import {
  file_orchestrator_v1_registry,
  RegistryService,
} from "../gen/orchestrator/v1/registry_pb.js";
import { file_orchestrator_v1_system, SystemService } from "../gen/orchestrator/v1/system_pb.js";
import {
  file_orchestrator_v1_workflow,
  WorkflowService,
} from "../gen/orchestrator/v1/workflow_pb.js";
import { createPeerClient } from "./clients/peer-client.js";
import { type Clock, systemClock } from "./clock.js";
import type { AppConfig, EffectiveConfigValue } from "./config/index.js";
import { createMemoryEventLog, type EventLog } from "./events/event-log.js";
import { publishEventsToRedis } from "./events/redis-event-publisher.js";
import { shadowedPathValues } from "./gateway/http-bindings.js";
import { restRoutesOf } from "./gateway/rest-gateway.js";
import { createHttpClient } from "./http-client/http-client.js";
import { type IdSource, randomIds } from "./ids.js";
import { createAccessCheck, createAuthInterceptor } from "./interceptors/auth.js";
import { resolveCallMeta } from "./interceptors/call-meta.js";
import { type Interceptor, wrapService } from "./interceptors/chain.js";
import { createDrainInterceptor } from "./interceptors/drain.js";
import { createTelemetryInterceptor } from "./interceptors/telemetry.js";
import { createValidationInterceptor } from "./interceptors/validation.js";
import { createLogShipper, type LogShipper } from "./observability/log-shipper.js";
import { createLogger, flushLogger } from "./observability/logger.js";
import { createMetrics, type Metrics, registerPeerMetrics } from "./observability/metrics.js";
import { closeRedisClient, createRedisClient, redisReadinessCheck } from "./redis/redis-client.js";
import { createBaselineRetention } from "./registry/baseline-retention.js";
import { HealthChecker, type SystemHealth } from "./registry/health-checker.js";
import { createMemoryRegistryStore } from "./registry/memory-registry-store.js";
import { createOpenApiAnalyzer } from "./registry/openapi-analyzer.js";
import { createOpenApiPoller, type OpenApiPoller } from "./registry/openapi-poller.js";
import { createRedisRegistryStore } from "./registry/redis-registry-store.js";
import { Registry } from "./registry/registry.js";
import type { RegistryStore } from "./registry/registry-store.js";
import { HybridLogicalClock } from "./replication/hybrid-logical-clock.js";
import { ReplicationMerger } from "./replication/merge.js";
import { PeerLink, type PeerTransport } from "./replication/peer-link.js";
import { createGrpcFastPath } from "./server/grpc-fast-path.js";
import { createHttpApp } from "./server/http-app.js";
import { createOnePortListener } from "./server/one-port-listener.js";
import { createGrpcHealthService } from "./services/grpc-health-service.js";
import { createPeerService } from "./services/peer-service.js";
import { createRegistryService } from "./services/registry-service.js";
import { createServerReflectionServices } from "./services/server-reflection-service.js";
import { createSystemService } from "./services/system-service.js";
import { unimplementedService } from "./services/unimplemented.js";
import { type NodeInfo, packageInfo } from "./system/node-info.js";
import type { ReadinessCheck } from "./system/readiness.js";
import { createServingStatus, type ServingStatus } from "./system/serving-status.js";

/** What tests and embedders may replace. */
export interface AppDeps {
  readonly clock?: Clock;
  readonly ids?: IdSource;
  /** Where log lines go. Default: standard output. */
  readonly logDestination?: DestinationStream;
  /** More conditions readiness waits for, beside the node's own (serving, Redis). */
  readonly readinessChecks?: readonly ReadinessCheck[];
}

/** A composed orchestrator node, not yet listening. */
export interface App {
  readonly node: NodeInfo;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly status: ServingStatus;
  /** Starts serving on the configured host and port (0 picks a free port). */
  listen(): Promise<AddressInfo>;
  /**
   * Graceful shutdown: turns NOT_SERVING, ends streams, stops accepting, drains the connections
   * already open (GOAWAY on HTTP/2; on HTTP/1.1 every request still read is answered with
   * `Connection: close`, idle connections are closed after SHUTDOWN_KEEP_ALIVE_MS), lets calls in
   * flight finish within SHUTDOWN_TIMEOUT_MS, then closes Redis and the log shipper. Idempotent.
   */
  close(): Promise<void>;
}

/** Wire protocols on the one port, as Info reports them. */
const rpcProtocols = ["grpc", "grpc-web", "connect", "rest"] as const;

/** The services of the API, whose google.api.http rules make the REST routes. */
export const apiServices: readonly DescService[] = [
  SystemService,
  RegistryService,
  PeerService,
  WorkflowService,
  InfrastructureService,
  JobsService,
];

/**
 * Path-variable values that another route takes first (`GET /registry/watch` is the watch stream,
 * so no service can be read at `GET /registry/{name}` under the name "watch"): refused as field
 * values on every protocol, and, for the registry's `{name}`, as service names.
 */
const shadowedValues = shadowedPathValues(apiServices);

/** The names no service may take, with the reason: the values its `{name}` routes lose. */
function reservedServiceNames(): ReadonlyMap<string, string> {
  const reserved = new Map<string, string>();
  for (const { method, fieldPath, value, reason } of shadowedValues) {
    if (method.parent.typeName !== RegistryService.typeName) continue;
    if (fieldPath.length === 1 && fieldPath[0]?.name === "name") reserved.set(value, reason);
  }
  return reserved;
}

/**
 * The composition root: builds every module from the configuration and wires them to the one
 * port. Nothing here knows a wire format; nothing below knows the configuration.
 */
export async function createApp(
  config: AppConfig,
  effectiveConfig: readonly EffectiveConfigValue[],
  deps: AppDeps = {},
): Promise<App> {
  const clock = deps.clock ?? systemClock;
  const ids = deps.ids ?? randomIds;
  const startedAt = clock.monotonic();
  const metrics = createMetrics();
  const shipper: LogShipper | undefined = config.logCollectorUrl
    ? createLogShipper({
        url: config.logCollectorUrl,
        service: "orchestrator",
        timeoutMs: config.outboundTimeoutMs,
        onDrop: (count, reason) => metrics.logRecordsDropped.inc({ reason }, count),
      })
    : undefined;
  // The node id may come from the store: the root logger has none yet, its child below has it.
  const rootLogger = createLogger({
    level: config.logLevel,
    service: "orchestrator",
    nodeId: config.nodeId ?? "",
    version: packageInfo.version,
    ...(deps.logDestination ? { destination: deps.logDestination } : {}),
    ...(shipper ? { shipper } : {}),
  });

  const status = createServingStatus();
  const kill = new AbortController();
  // Every call on the Connect router listens on it: many calls in flight are normal, not a leak.
  setMaxListeners(0, kill.signal);
  const readinessChecks: ReadinessCheck[] = [...(deps.readinessChecks ?? [])];
  let redis: Redis | undefined;
  let redisSubscriber: Redis | undefined;
  if (config.redis) {
    redis = createRedisClient(config.redis, rootLogger);
    // A subscribed connection takes no other command: registry notifications get their own.
    redisSubscriber = createRedisClient(config.redis, rootLogger);
    readinessChecks.push(redisReadinessCheck(redis));
  }
  const store = createStore(config, { clock, logger: rootLogger }, redis, redisSubscriber);
  const nodeId = config.nodeId ?? (await claimNodeId(store, `node-${ids.uuid().slice(0, 8)}`));
  const logger = config.nodeId ? rootLogger : rootLogger.child({ node_id: nodeId });
  const node: NodeInfo = {
    service: "orchestrator",
    version: packageInfo.version,
    description: packageInfo.description,
    nodeId,
    incarnationId: ids.uuid(),
    environment: config.environment,
  };
  const events = createMemoryEventLog(
    { clock, ids, source: node.nodeId },
    {
      capacity: config.events.logSize,
      maxBytes: config.events.logBytes,
      onSubscriberError: (error) => logger.warn({ err: error }, "event subscriber failed"),
    },
  );
  const stopPublishing = redis ? publishEventsToRedis(events, redis, logger) : undefined;
  const registryParts = composeRegistry({
    store,
    config,
    clock,
    logger,
    events,
    nodeId: node.nodeId,
    incarnationId: node.incarnationId,
  });
  readinessChecks.push(registryParts.readiness);
  registerPeerMetrics(metrics, () => registryParts.links.map(({ link }) => link.status()));

  const tokens = { operatorToken: config.operatorToken, peerToken: config.peerToken };
  const interceptors: Interceptor[] = [
    createTelemetryInterceptor(logger, metrics),
    createAuthInterceptor(tokens),
    createValidationInterceptor({ refusedValues: shadowedValues }),
    createDrainInterceptor(status.drainSignal),
  ];
  const served = servedServices({
    system: createSystemService({
      node,
      clock,
      startedAt,
      status,
      readinessChecks,
      effectiveConfig,
      capabilities: [
        "system",
        "grpc-health",
        "grpc-reflection",
        "rest-gateway",
        "metrics",
        "registry",
        "health-checks",
        "openapi-drift",
        "events",
        "replication",
      ],
      systemHealth: async () => systemHealthMessage(registryParts.healthChecker.systemHealth()),
      protocols: [...rpcProtocols, ...(config.tls ? ["http/1.1", "h2"] : ["http/1.1", "h2c"])],
    }),
    peer: createPeerService({
      store: registryParts.store,
      merger: registryParts.merger,
      clock,
      nodeId: node.nodeId,
      links: registryParts.links,
      maxQueue: config.registry.watchQueueSize,
    }),
    registry: createRegistryService({
      registry: registryParts.registry,
      store: registryParts.store,
      poller: registryParts.poller,
      events,
      watchQueueSize: config.registry.watchQueueSize,
    }),
    status,
  });
  const services = served.map(({ service, impl }) => wrapService(service, impl, interceptors));

  const listener = createOnePortListener({
    onRequest: (request, response) => http.handler(request, response),
    onStream: createGrpcFastPath(services, {
      readMaxBytes: config.bodyLimitBytes,
      shutdownSignal: kill.signal,
      resolveCallMeta: (correlationId, traceparent) =>
        resolveCallMeta(correlationId, traceparent, ids),
    }),
    keepAliveTimeoutMs: config.keepAliveTimeoutMs,
    drainKeepAliveMs: config.shutdownKeepAliveMs,
    ...(config.tls ? { tls: readTls(config.tls) } : {}),
  });
  const http = await createHttpApp({
    logger,
    metrics,
    ids,
    services,
    restRoutes: restRoutesOf(services),
    server: listener.server,
    bodyLimitBytes: config.bodyLimitBytes,
    shutdownSignal: kill.signal,
    checkAccess: createAccessCheck(tokens),
  });

  let closing: Promise<void> | undefined;
  return {
    node,
    logger,
    metrics,
    status,
    async listen() {
      await registryParts.start();
      const address = await listener.listen(config.port, config.host);
      logger.info(
        { port: address.port, host: address.address, tls: !!config.tls },
        "orchestrator listening",
      );
      return address;
    },
    close() {
      closing ??= (async () => {
        logger.info("shutting down: draining");
        status.startDraining();
        await listener.close(config.shutdownTimeoutMs);
        // Calls still running are cut with this reason, on every protocol.
        kill.abort(new ConnectError("the server is shutting down", Code.Unavailable));
        await http.fastify.close();
        await registryParts.stop();
        stopPublishing?.();
        if (redisSubscriber) await closeRedisClient(redisSubscriber);
        if (redis) await closeRedisClient(redis);
        logger.info("shut down");
        await flushLogger(logger);
        await shipper?.close();
      })();
      return closing;
    },
  };
}

interface ServedService {
  readonly service: DescService;
  readonly impl: ServiceImpl<DescService>;
  readonly file: DescFile;
}

/** Pairs a service with its implementation, checked here, then erased for the list. */
function entry<S extends DescService>(
  service: S,
  impl: ServiceImpl<S>,
  file: DescFile,
): ServedService {
  return { service, impl: impl as unknown as ServiceImpl<DescService>, file };
}

/** Every service on the port, with the files reflection describes. */
function servedServices(parts: {
  system: ServiceImpl<typeof SystemService>;
  registry: ServiceImpl<typeof RegistryService>;
  peer: ServiceImpl<typeof PeerService>;
  status: ServingStatus;
}): ServedService[] {
  const api: ServedService[] = [
    entry(SystemService, parts.system, file_orchestrator_v1_system),
    entry(RegistryService, parts.registry, file_orchestrator_v1_registry),
    entry(PeerService, parts.peer, file_orchestrator_v1_peer),
    entry(
      WorkflowService,
      unimplementedService(WorkflowService, "a later issue"),
      file_orchestrator_v1_workflow,
    ),
    entry(
      InfrastructureService,
      unimplementedService(InfrastructureService, "a later issue"),
      file_orchestrator_v1_infrastructure,
    ),
    entry(
      JobsService,
      unimplementedService(JobsService, "a later issue"),
      file_orchestrator_v1_jobs,
    ),
  ];
  const names = [
    ...api.map((s) => s.service.typeName),
    Health.typeName,
    ServerReflectionV1.typeName,
    ServerReflectionV1alpha.typeName,
  ];
  const reflection = createServerReflectionServices(
    [
      ...api.map((s) => s.file),
      file_health_v1_health,
      file_grpc_reflection_v1_reflection,
      file_grpc_reflection_v1alpha_reflection,
    ],
    names,
  );
  return [
    ...api,
    entry(Health, createGrpcHealthService(parts.status, names), file_health_v1_health),
    entry(ServerReflectionV1, reflection.v1, file_grpc_reflection_v1_reflection),
    entry(ServerReflectionV1alpha, reflection.v1alpha, file_grpc_reflection_v1alpha_reflection),
  ];
}

/** The registry capability: its store, the registry, health checks and OpenAPI polling. */
interface RegistryParts {
  readonly store: RegistryStore;
  readonly registry: Registry;
  readonly healthChecker: HealthChecker;
  readonly poller: OpenApiPoller;
  /** Merges what peers send. */
  readonly merger: ReplicationMerger;
  /** One replication link per configured peer. */
  readonly links: readonly { readonly link: PeerLink; readonly transport: PeerTransport }[];
  /** Not ready until the store has loaded its state. */
  readonly readiness: ReadinessCheck;
  start(): Promise<void>;
  stop(): Promise<void>;
}

function composeRegistry(parts: {
  store: RegistryStore;
  config: AppConfig;
  clock: Clock;
  logger: Logger;
  events: EventLog;
  nodeId: string;
  incarnationId: string;
}): RegistryParts {
  const { config, clock, logger, store } = parts;
  const settings = config.registry;
  // One clock for local writes and merged ones: every local stamp is above every stamp seen.
  const hlc = new HybridLogicalClock(clock);
  const reservedNames = reservedServiceNames();
  const registry = new Registry(
    {
      store,
      clock,
      hlc,
      events: parts.events,
      nodeId: parts.nodeId,
      logger,
    },
    {
      leaseGraceMs: settings.leaseGraceMs,
      tombstoneRetentionMs: settings.tombstoneRetentionMs,
      maxTombstones: settings.maxTombstones,
      reservedNames,
    },
  );
  const http = createHttpClient({ timeoutMs: config.outboundTimeoutMs });
  const healthChecker = new HealthChecker(
    { registry, entries: () => store.entries(), http, clock, logger },
    {
      intervalMs: settings.healthCheckIntervalMs,
      timeoutMs: settings.healthCheckTimeoutMs,
      failureThreshold: settings.healthCheckFailureThreshold,
      successThreshold: settings.healthCheckSuccessThreshold,
      concurrency: settings.healthCheckConcurrency,
    },
  );
  const analyzer = createOpenApiAnalyzer({
    workers: settings.openapiWorkers,
    maxOperations: settings.openapiMaxOperations,
    maxBaselineBytes: settings.openapiMaxBaselineBytes,
  });
  const poller = createOpenApiPoller(
    { baselines: store, http, clock, analyzer },
    {
      concurrency: settings.openapiConcurrency,
      maxBytes: settings.openapiMaxBytes,
      timeoutMs: config.outboundTimeoutMs,
    },
  );
  const baselineRetention = createBaselineRetention({ store, logger });
  const merger = new ReplicationMerger({
    store,
    hlc,
    clock,
    events: parts.events,
    nodeId: parts.nodeId,
    reservedNames,
  });
  const links = config.peers.map((url) => {
    const transport = createPeerClient(url, { token: config.peerToken });
    const link = new PeerLink(url, {
      transport,
      store,
      merger,
      clock,
      events: parts.events,
      logger,
      nodeId: parts.nodeId,
      incarnationId: parts.incarnationId,
    });
    return { link, transport };
  });
  let opened = false;
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;
  // Redis may be down when the node starts: it serves (not ready) and keeps trying.
  const open = async (): Promise<void> => {
    try {
      await store.open();
      opened = true;
      baselineRetention.start();
      registry.start();
      healthChecker.start();
      for (const { link } of links) link.start();
    } catch (error) {
      if (stopped) return;
      logger.warn({ err: error }, "registry store not loaded yet; retrying");
      retry = setTimeout(() => void open(), 1_000);
      retry.unref();
    }
  };
  return {
    store,
    registry,
    healthChecker,
    poller,
    merger,
    links,
    readiness: {
      name: "registry",
      probe: () => (opened ? undefined : "the registry store has not loaded its state yet"),
    },
    start: () => open(),
    async stop() {
      stopped = true;
      clearTimeout(retry);
      await Promise.all(links.map(({ link }) => link.stop()));
      registry.stop();
      await healthChecker.stop();
      await Promise.all([baselineRetention.stop(), analyzer.close()]);
      await store.close();
    },
  };
}

/** The registry's store: in Redis when configured, else in this process. */
function createStore(
  config: AppConfig,
  { clock, logger }: { clock: Clock; logger: Logger },
  redis: Redis | undefined,
  subscriber: Redis | undefined,
): RegistryStore {
  const { changeLogSize, changeLogBytes, maxEntries, maxBytes } = config.registry;
  const baselinesMaxBytes = config.registry.openapiBaselinesMaxBytes;
  const limits = { changeLogSize, changeLogBytes, maxEntries, maxBytes, baselinesMaxBytes };
  if (redis === undefined || subscriber === undefined) {
    return createMemoryRegistryStore(limits);
  }
  return createRedisRegistryStore(
    { redis, subscriber, logger, clock },
    { keyPrefix: config.redis?.keyPrefix ?? "", ...limits },
  );
}

/**
 * The node id kept with the store's data (so that a restarted node is the same node to its
 * peers), or `candidate` when the store cannot say within a few seconds (Redis down at start).
 */
async function claimNodeId(store: RegistryStore, candidate: string): Promise<string> {
  // The connection may still be opening (commands fail fast until it is): retry for a while.
  const deadline = Date.now() + 3_000;
  for (;;) {
    try {
      return await store.ensureNodeId(candidate);
    } catch {
      if (Date.now() >= deadline) return candidate;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/** The fleet's health as GET /health/system answers it. */
function systemHealthMessage(health: SystemHealth) {
  const services: Record<
    string,
    { status: string; latencyMs: number; error: string; checkedAt?: Timestamp }
  > = {};
  for (const [name, service] of health.services) {
    services[name] = {
      status: service.status,
      latencyMs: service.latencyMs,
      error: service.error,
      ...(service.checkedAt ? { checkedAt: timestampFromMs(service.checkedAt) } : {}),
    };
  }
  return {
    overallStatus: health.overallStatus,
    overallHealthy: health.overallStatus === "healthy",
    healthyCount: health.healthyCount,
    totalCount: health.totalCount,
    services,
  };
}

function readTls(tls: { certFile: string; keyFile: string }): { cert: Buffer; key: Buffer } {
  const read = (key: string, path: string) => {
    try {
      return readFileSync(path);
    } catch {
      throw new Error(`${key}: cannot read ${path}`);
    }
  };
  return { cert: read("TLS_CERT_FILE", tls.certFile), key: read("TLS_KEY_FILE", tls.keyFile) };
}
