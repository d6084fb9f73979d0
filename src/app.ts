import { setMaxListeners } from "node:events";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import type { DescFile, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
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
import { type Capability, composeServices } from "./capabilities/capability.js";
import { createDlqCapability } from "./capabilities/dlq.js";
import { createEventsCapability } from "./capabilities/events.js";
import { createJobsCapability } from "./capabilities/jobs.js";
import {
  claimNodeId,
  createRegistryCapability,
  createRegistryStore,
} from "./capabilities/registry.js";
import { createSagasCapability } from "./capabilities/sagas.js";
import { createSchedulesCapability } from "./capabilities/schedules.js";
import { createSystemCapability } from "./capabilities/system.js";
import { createTracingCapability } from "./capabilities/tracing.js";
import { createWorkflowsCapability } from "./capabilities/workflows.js";
import { type Clock, systemClock } from "./clock.js";
import type { AppConfig, EffectiveConfigValue } from "./config/index.js";
import type { DeadLetters } from "./dlq/dead-letters.js";
import { createDeadLettersLink } from "./dlq/dead-letters.js";
import { refusalResponseOf } from "./gateway/error-body.js";
import { shadowedPathValues } from "./gateway/http-bindings.js";
import { restRoutesOf } from "./gateway/rest-gateway.js";
import { createHttpClient } from "./http-client/http-client.js";
import {
  configuredTargets,
  createTargetResolver,
  registeredTarget,
} from "./http-client/service-targets.js";
import { type IdSource, randomIds } from "./ids.js";
import {
  createAccessCheck,
  createAuthInterceptor,
  createCallerLookup,
} from "./interceptors/auth.js";
import { createDenialRecorder } from "./interceptors/auth-denials.js";
import { resolveCallMeta } from "./interceptors/call-meta.js";
import { type Interceptor, wrapService } from "./interceptors/chain.js";
import { createDrainInterceptor } from "./interceptors/drain.js";
import { createRateLimitInterceptor } from "./interceptors/rate-limit.js";
import { createTelemetryInterceptor } from "./interceptors/telemetry.js";
import { createTracingInterceptor } from "./interceptors/tracing.js";
import { createValidationInterceptor } from "./interceptors/validation.js";
import { createWatchLimitInterceptor } from "./interceptors/watch-limit.js";
import { createLogShipper, type LogShipper } from "./observability/log-shipper.js";
import { createLogger, flushLogger } from "./observability/logger.js";
import {
  createMetrics,
  type Metrics,
  registerEventMetrics,
  registerPeerMetrics,
} from "./observability/metrics.js";
import type { SagaStore } from "./sagas/saga-store.js";
import type { ScheduledJob } from "./schedules/scheduler.js";
import { createGrpcFastPath } from "./server/grpc-fast-path.js";
import { createHttpApp } from "./server/http-app.js";
import { refusalOfParserError } from "./server/http-errors.js";
import { createOnePortListener } from "./server/one-port-listener.js";
import { apiFiles, apiServices } from "./services/api-services.js";
import { createGrpcHealthService } from "./services/grpc-health-service.js";
import { createServerReflectionServices } from "./services/server-reflection-service.js";
import { type NodeInfo, packageInfo } from "./system/node-info.js";
import type { ReadinessCheck } from "./system/readiness.js";
import { createServingStatus, type ServingStatus } from "./system/serving-status.js";
import type { WorkflowDefinition } from "./workflows/definitions.js";
import { builtInWorkflows } from "./workflows/definitions.js";

/** What tests and embedders may replace. */
export interface AppDeps {
  readonly clock?: Clock;
  readonly ids?: IdSource;
  /** Where log lines go. Default: standard output. */
  readonly logDestination?: DestinationStream;
  /** More conditions readiness waits for, beside the node's own (serving, Redis). */
  readonly readinessChecks?: readonly ReadinessCheck[];
  /**
   * Test hook: called once with the node's dead-letter queue while the app is built, before it
   * starts, to register handlers for test types and keep it to add entries as a capability would.
   */
  readonly withDeadLetters?: (deadLetters: DeadLetters) => void;
  /** Numbers in [0, 1) for retry jitter. Default `Math.random`. */
  readonly random?: () => number;
  /**
   * Test hook: more jobs `SCHEDULED_JOBS` may name, beside the node's own (a test counts the
   * firings of a job of its own across nodes).
   */
  readonly scheduledJobs?: ReadonlyMap<string, ScheduledJob>;
  /** Test hook: the workflows the node runs instead of the built-in ones (checked the same way). */
  readonly workflows?: readonly WorkflowDefinition[];
}

/** A composed orchestrator node, not yet listening. */
export interface App {
  readonly node: NodeInfo;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly status: ServingStatus;
  /**
   * The saga store the node runs its sagas in (memory, or Redis when configured), emitting the
   * `saga.*` events of the transitions made through it: for the workflow engine and for tests.
   */
  readonly sagas: SagaStore;
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

/** What the server itself serves, whatever the capabilities: listed first by `/info`. */
const serverCapabilities = ["grpc-health", "grpc-reflection", "rest-gateway", "metrics"];

/**
 * The composition root: builds the shared parts (logger, metrics, Redis connections, the event
 * log) and the capabilities from the configuration, serves every capability's methods on the one
 * port, and starts and stops them in order. Nothing here knows a wire format; nothing below knows
 * the configuration.
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
        // Its own client (no retries, no spans of its own calls), under the node's OUTBOUND_ALLOW.
        http: createHttpClient({
          timeoutMs: config.outboundTimeoutMs,
          maxAttempts: 1,
          allow: config.outbound.allow,
        }),
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
  const redis = config.redis ? await openRedis(config.redis, rootLogger) : undefined;
  if (redis) readinessChecks.push(redis.readiness);

  // The registry's store first: it keeps the node id, which every event and log line carries.
  const store = createRegistryStore(config, { clock, logger: rootLogger }, redis);
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
  const shadowedValues = shadowedPathValues(apiServices);
  const tracing = await createTracingCapability({ config, node });
  // One outbound client for the node: its circuit breakers (one per origin) are shared by every
  // capability that calls the same service.
  const outbound = createHttpClient(
    { timeoutMs: config.outboundTimeoutMs, ...config.outbound },
    { tracer: tracing.outboundTracer },
  );
  // The event log and the dead-letter queue need each other (the queue emits its events into the
  // log; failed deliveries of replays go to the queue): the log comes first, linked to the queue.
  const deadLetters = createDeadLettersLink();
  const events = createEventsCapability({
    config,
    clock,
    logger,
    source: node.nodeId,
    incarnationId: node.incarnationId,
    redis: redis?.commands,
    deadLetters: deadLetters.deadLetters,
  });
  const registry = createRegistryCapability({
    config,
    store,
    clock,
    logger,
    events: events.log,
    node,
    shadowedValues,
    http: outbound,
  });
  registerPeerMetrics(metrics, () => registry.peerStatuses());
  const sagas = createSagasCapability({
    config,
    clock,
    ids,
    logger,
    events: events.log,
    redis: redis?.commands,
    shadowedValues,
  });
  const dlq = createDlqCapability({
    config,
    clock,
    ids,
    logger,
    events: events.log,
    redis: redis?.commands,
    ...(deps.random ? { random: deps.random } : {}),
  });
  deadLetters.bind(dlq.deadLetters);
  // Services called by name: a HEALTHY registration first, else the configured URL.
  const targets = createTargetResolver({
    registered: (name) => registeredTarget(store.get(name)),
    configured: configuredTargets(config),
  });
  const jobs = createJobsCapability({ http: outbound, targets, clock });
  deps.withDeadLetters?.(dlq.deadLetters);
  registerEventMetrics(metrics, () => events.stats());
  const workflows = createWorkflowsCapability({
    events: events.log,
    store: sagas.store,
    http: outbound,
    targets,
    deadLetters: dlq.deadLetters,
    ids,
    logger,
    nodeId: node.nodeId,
    engine: {
      leaseMs: config.workflowLeaseMs,
      maxRunning: config.workflowMaxRunning,
      maxWaiting: config.workflowMaxWaiting,
    },
    definitions: deps.workflows ?? [...builtInWorkflows, ...config.workflows],
  });
  const schedules = createSchedulesCapability({
    config,
    nodeId: node.nodeId,
    logger,
    redis: redis?.commands,
    jobs: new Map([...jobs.scheduledJobs, ...(deps.scheduledJobs ?? [])]),
  });
  // Tracing first: it stops last, so the spans of the others' shutdown are still exported.
  const domain: Capability[] = [tracing, events, registry, sagas, dlq, jobs, workflows, schedules];
  for (const capability of domain) readinessChecks.push(...capability.readiness);
  const system = createSystemCapability({
    node,
    clock,
    startedAt,
    status,
    readinessChecks,
    effectiveConfig,
    capabilityNames: [...serverCapabilities, ...domain.flatMap((c) => c.names)],
    protocols: [...rpcProtocols, ...(config.tls ? ["http/1.1", "h2"] : ["http/1.1", "h2c"])],
    systemHealth: async () => registry.systemHealth(),
    scheduledJobs: () => schedules.status(),
    authEnabled: config.authTokens.length > 0,
  });
  const capabilities = [system, ...domain];

  const auth = {
    tokens: config.authTokens,
    peerToken: config.peerToken,
    onDenied: createDenialRecorder({ events: events.log, failures: metrics.authFailures, clock }),
  };
  const interceptors: Interceptor[] = [
    createTelemetryInterceptor(logger, metrics),
    ...(tracing.tracing ? [createTracingInterceptor(tracing.tracing)] : []),
    createRateLimitInterceptor({
      settings: config.rateLimits,
      identify: createCallerLookup(auth),
      tokensConfigured: config.authTokens.length > 0,
      onLimited: ({ limit, role, method }) => metrics.rateLimited.inc({ limit, role, method }),
    }),
    createAuthInterceptor(auth),
    createWatchLimitInterceptor({
      maxWatches: config.connectionLimits.maxWatches,
      maxWatchesPerClient: config.connectionLimits.maxWatchesPerClient,
      onRefused: ({ limit, method }) => metrics.watchesRefused.inc({ limit, method }),
    }),
    createValidationInterceptor({ refusedValues: shadowedValues }),
    createDrainInterceptor(status.drainSignal),
  ];
  const services = servedServices(capabilities, status).map(({ service, impl }) =>
    wrapService(service, impl, interceptors),
  );

  const listener = createOnePortListener({
    onRequest: (request, response) => http.handler(request, response),
    onStream: createGrpcFastPath(services, {
      readMaxBytes: config.bodyLimitBytes,
      shutdownSignal: kill.signal,
      resolveCallMeta: (correlationId, traceparent, clientAddress) =>
        resolveCallMeta(correlationId, traceparent, ids, clientAddress),
    }),
    keepAliveTimeoutMs: config.keepAliveTimeoutMs,
    drainKeepAliveMs: config.shutdownKeepAliveMs,
    maxHeaderBytes: config.connectionLimits.headerBytes,
    maxConcurrentStreams: config.connectionLimits.http2MaxConcurrentStreams,
    maxConnections: config.connectionLimits.maxConnections,
    maxConnectionsPerClient: config.connectionLimits.maxConnectionsPerClient,
    onRefused: (reason) => metrics.connectionsRefused.inc({ reason }),
    refuseUnreadable: (error) => {
      const { status, body } = refusalResponseOf(refusalOfParserError(error.code));
      return { status, body: JSON.stringify(body) };
    },
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
    checkAccess: createAccessCheck(auth),
    apiInfo: {
      title: packageInfo.name,
      version: packageInfo.version,
      description: packageInfo.description,
    },
  });

  let closing: Promise<void> | undefined;
  return {
    node,
    logger,
    metrics,
    status,
    sagas: sagas.store,
    async listen() {
      for (const capability of capabilities) await capability.start();
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
        for (const capability of [...capabilities].reverse()) await capability.stop();
        await redis?.close();
        logger.info("shut down");
        await flushLogger(logger);
        await shipper?.close();
      })();
      return closing;
    },
  };
}

/**
 * The node's two Redis connections: one for commands, one subscribed to notifications. The
 * driver is loaded here, only when Redis is configured.
 */
async function openRedis(options: NonNullable<AppConfig["redis"]>, logger: Logger) {
  const { closeRedisClient, createRedisClient, redisReadinessCheck } = await import(
    "./redis/redis-client.js"
  );
  // A subscribed connection takes no other command: notifications get their own.
  const commands = createRedisClient(options, logger);
  const subscriber = createRedisClient(options, logger);
  return {
    commands,
    subscriber,
    readiness: redisReadinessCheck(commands),
    async close() {
      await closeRedisClient(subscriber);
      await closeRedisClient(commands);
    },
  };
}

/**
 * Every service the node serves through the interceptor chain, in order: the API's, then gRPC
 * health and reflection. Tests derive their coverage (the auth matrix) from this list.
 */
export const servedServiceTypes: readonly DescService[] = [
  ...apiServices,
  Health,
  ServerReflectionV1,
  ServerReflectionV1alpha,
];

interface ServedService {
  readonly service: DescService;
  readonly impl: ServiceImpl<DescService>;
  readonly file: DescFile;
}

/**
 * Every service on the port, with the files reflection describes: the API, whose methods the
 * capabilities implement (the others answer UNIMPLEMENTED), then gRPC health and reflection.
 */
function servedServices(
  capabilities: readonly Capability[],
  status: ServingStatus,
): ServedService[] {
  const composed = composeServices(apiServices, capabilities);
  const api: ServedService[] = apiServices.map((service, index) => ({
    service,
    impl: composed.get(service) as ServiceImpl<DescService>,
    file: apiFiles[index] as DescFile,
  }));
  const names = servedServiceTypes.map((s) => s.typeName);
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
    entry(Health, createGrpcHealthService(status, names), file_health_v1_health),
    entry(ServerReflectionV1, reflection.v1, file_grpc_reflection_v1_reflection),
    entry(ServerReflectionV1alpha, reflection.v1alpha, file_grpc_reflection_v1alpha_reflection),
  ];
}

/** Pairs a service with its implementation, checked here, then erased for the list. */
function entry<S extends DescService>(
  service: S,
  impl: ServiceImpl<S>,
  file: DescFile,
): ServedService {
  return { service, impl: impl as unknown as ServiceImpl<DescService>, file };
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
