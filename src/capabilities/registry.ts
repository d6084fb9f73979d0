import { type Timestamp, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { PeerService } from "../../gen/orchestrator/v1/peer_pb.js";
import { RegistryService } from "../../gen/orchestrator/v1/registry_pb.js";
import { createPeerClient } from "../clients/peer-client.js";
import type { Clock } from "../clock.js";
import type { AppConfig } from "../config/index.js";
import type { EventLog } from "../events/event-log.js";
import { redisEventTarget } from "../events/redis-event-scripts.js";
import type { ShadowedValue } from "../gateway/http-bindings.js";
import type { HttpClient } from "../http-client/http-client.js";
import { createBaselineRetention } from "../registry/baseline-retention.js";
import { HealthChecker, type SystemHealth } from "../registry/health-checker.js";
import { createMemoryRegistryStore } from "../registry/memory-registry-store.js";
import { createOpenApiAnalyzer } from "../registry/openapi-analyzer.js";
import { createOpenApiPoller } from "../registry/openapi-poller.js";
import { createRedisRegistryStore } from "../registry/redis-registry-store.js";
import { Registry } from "../registry/registry.js";
import type { RegistryStore } from "../registry/registry-store.js";
import { HybridLogicalClock } from "../replication/hybrid-logical-clock.js";
import { ReplicationMerger } from "../replication/merge.js";
import { PeerLink, type PeerStatus } from "../replication/peer-link.js";
import { createPeerService } from "../services/peer-service.js";
import { createRegistryService } from "../services/registry-service.js";
import type { NodeInfo } from "../system/node-info.js";
import { type Capability, servicePart } from "./capability.js";

/** What the registry capability adds to the others: the fleet's health and the peers' state. */
export interface RegistryCapability extends Capability {
  /** The fleet's health, as `GET /health/system` answers it. */
  systemHealth(): ReturnType<typeof systemHealthMessage>;
  /** Each configured peer's replication link, for the metrics. */
  peerStatuses(): PeerStatus[];
}

/** What {@link createRegistryCapability} is built from. */
export interface RegistryCapabilityDeps {
  readonly config: AppConfig;
  readonly store: RegistryStore;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly events: EventLog;
  readonly node: NodeInfo;
  /** Path-variable values other routes take: the registry's `{name}` ones are reserved names. */
  readonly shadowedValues: readonly ShadowedValue[];
  /** The node's one outbound client: health probes and OpenAPI fetches go through it. */
  readonly http: HttpClient;
}

/**
 * The service registry (RegistryService: registrations, leases, watch, health checks, OpenAPI
 * drift) and peer replication (PeerService), over one store. It serves while its store is still
 * loading (Redis down at start), not ready, and loads it when it can.
 */
export function createRegistryCapability(deps: RegistryCapabilityDeps): RegistryCapability {
  const { config, clock, logger, store, events, node } = deps;
  const settings = config.registry;
  // One clock for local writes and merged ones: every local stamp is above every stamp seen.
  const hlc = new HybridLogicalClock(clock);
  const reservedNames = reservedServiceNames(deps.shadowedValues);
  const registry = new Registry(
    { store, clock, hlc, events, nodeId: node.nodeId, logger },
    {
      leaseGraceMs: settings.leaseGraceMs,
      tombstoneRetentionMs: settings.tombstoneRetentionMs,
      maxTombstones: settings.maxTombstones,
      reservedNames,
    },
  );
  const { http } = deps;
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
    events,
    nodeId: node.nodeId,
    reservedNames,
  });
  const links = config.peers.map((url) => {
    const transport = createPeerClient(url, { token: config.peerToken });
    const link = new PeerLink(url, {
      transport,
      store,
      merger,
      clock,
      events,
      logger,
      nodeId: node.nodeId,
      incarnationId: node.incarnationId,
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
    names: ["registry", "health-checks", "openapi-drift", "replication"],
    services: [
      servicePart(
        RegistryService,
        createRegistryService({
          registry,
          store,
          poller,
          events,
          watchQueueSize: settings.watchQueueSize,
        }),
      ),
      servicePart(
        PeerService,
        createPeerService({
          store,
          merger,
          clock,
          nodeId: node.nodeId,
          links,
          maxQueue: settings.watchQueueSize,
        }),
      ),
    ],
    readiness: [
      {
        name: "registry",
        probe: () => (opened ? undefined : "the registry store has not loaded its state yet"),
      },
    ],
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
    systemHealth: () => systemHealthMessage(healthChecker.systemHealth()),
    peerStatuses: () => links.map(({ link }) => link.status()),
  };
}

/**
 * The registry's store: in Redis when configured (on the two connections given: one for commands,
 * one subscribed to notifications; each write stores its event in the event store's stream in
 * the same script), else in this process.
 */
export function createRegistryStore(
  config: AppConfig,
  { clock, logger }: { clock: Clock; logger: Logger },
  redis?: { readonly commands: Redis; readonly subscriber: Redis },
): RegistryStore {
  const { changeLogSize, changeLogBytes, maxEntries, maxBytes } = config.registry;
  const baselinesMaxBytes = config.registry.openapiBaselinesMaxBytes;
  const limits = { changeLogSize, changeLogBytes, maxEntries, maxBytes, baselinesMaxBytes };
  if (redis === undefined) return createMemoryRegistryStore(limits);
  const keyPrefix = config.redis?.keyPrefix ?? "";
  return createRedisRegistryStore(
    { redis: redis.commands, subscriber: redis.subscriber, logger, clock },
    {
      keyPrefix,
      ...limits,
      // The events of registry writes go into the event store's stream in the same script.
      events: redisEventTarget(keyPrefix, { maxEvents: config.events.retentionMaxEvents }),
    },
  );
}

/**
 * The node id kept with the store's data (so that a restarted node is the same node to its
 * peers), or `candidate` when the store cannot say within a few seconds (Redis down at start).
 */
export async function claimNodeId(store: RegistryStore, candidate: string): Promise<string> {
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

/** The names no service may take, with the reason: the values its `{name}` routes lose. */
function reservedServiceNames(shadowed: readonly ShadowedValue[]): ReadonlyMap<string, string> {
  const reserved = new Map<string, string>();
  for (const { method, fieldPath, value, reason } of shadowed) {
    if (method.parent.typeName !== RegistryService.typeName) continue;
    if (fieldPath.length === 1 && fieldPath[0]?.name === "name") reserved.set(value, reason);
  }
  return reserved;
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
