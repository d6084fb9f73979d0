import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  ListServicesResponseSchema,
  type RegisterServiceRequest,
  type RegistryService,
  ServiceStatus as ServiceStatusMessage,
  WatchEventType,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { DomainError } from "../errors/domain-error.js";
import type { EventLog } from "../events/event-log.js";
import {
  type CallMeta,
  callMetaOf,
  correlationHeader,
  traceparentHeader,
  traceparentOf,
} from "../interceptors/call-meta.js";
import type { DeclaredService } from "../registry/model.js";
import type { OpenApiPoller, OpenApiPollResult } from "../registry/openapi-poller.js";
import type { CallInfo, Registry } from "../registry/registry.js";
import type { RegistryStore } from "../registry/registry-store.js";
import { type WatchEvent, watchRegistry } from "../registry/registry-watch.js";
import { entryMessage, statusOf, tombstoneEntryMessage } from "./registry-messages.js";

export interface RegistryServiceDeps {
  readonly registry: Registry;
  readonly store: RegistryStore;
  readonly poller: OpenApiPoller;
  readonly events: EventLog;
  /** Changes a watcher may fall behind by before it is cut off. */
  readonly watchQueueSize: number;
}

/** RegistryService: the registry's RPCs, mapped to the domain and back. */
export function createRegistryService(
  deps: RegistryServiceDeps,
): ServiceImpl<typeof RegistryService> {
  const { registry } = deps;
  return {
    async registerService(request, context) {
      const { entry } = await registry.register(declaredOf(request), callOf(context));
      return { status: "registered", count: registry.size, service: entryMessage(entry) };
    },

    async listServices(request) {
      const page = registry.list({
        tag: request.tag,
        ...(request.status === ServiceStatusMessage.UNSPECIFIED
          ? {}
          : { status: statusOf(request.status) }),
        namePrefix: request.namePrefix,
        pageSize: request.pageSize,
        pageToken: request.pageToken,
      });
      return create(ListServicesResponseSchema, {
        services: page.entries.map(entryMessage),
        count: page.entries.length,
        nextPageToken: page.nextPageToken,
        revision: BigInt(page.revision),
        totalSize: page.totalSize,
      });
    },

    async getService(request) {
      const entry = registry.get(request.name);
      if (entry === undefined) throw notFound(request.name);
      return { service: entryMessage(entry) };
    },

    async deregisterService(request, context) {
      const tombstone = await registry.deregister(request.name, callOf(context));
      return {
        status: "deregistered",
        name: tombstone.name,
        revision: BigInt(tombstone.revision),
      };
    },

    async heartbeat(request, context) {
      const entry = await registry.heartbeat(request.name, callOf(context));
      return {
        status: "ok",
        name: entry.name,
        ...(entry.leaseExpiresAt ? { leaseExpiresAt: timestampFromMs(entry.leaseExpiresAt) } : {}),
      };
    },

    async pollOpenApi(request, context) {
      const targets: { service: string; url: string }[] = [];
      const refused: OpenApiPollResult[] = [];
      const names =
        request.names.length > 0 ? request.names : registry.list().entries.map((e) => e.name);
      for (const name of new Set(names)) {
        const entry = registry.get(name);
        // Only documents of registered services are fetched: the request names services, not URLs.
        if (entry === undefined) refused.push(failed(name, "not registered"));
        else if (entry.openapiUrl) targets.push({ service: name, url: entry.openapiUrl });
        else if (request.names.length > 0) refused.push(failed(name, "no openapi_url registered"));
      }
      const meta = callMetaOf(context);
      const polled = await deps.poller.poll(targets, {
        headers: {
          [correlationHeader]: meta.correlationId,
          [traceparentHeader]: traceparentOf(meta),
        },
      });
      const call = callInfoOf(meta);
      for (const result of polled) if (result.changed) emitDrift(deps.events, result, call);
      return { results: [...polled, ...refused].map(pollResultMessage) };
    },

    async *watchServices(request, context) {
      const events = watchRegistry(deps.store, {
        startRevision: Number(request.startRevision),
        namePrefix: request.namePrefix,
        maxQueue: deps.watchQueueSize,
        signal: context.signal,
      });
      for await (const event of events) yield watchMessage(event);
    },
  };
}

function callOf(context: HandlerContext): CallInfo {
  return callInfoOf(callMetaOf(context));
}

function callInfoOf(meta: CallMeta): CallInfo {
  return { correlationId: meta.correlationId, traceId: meta.traceId };
}

function declaredOf(request: RegisterServiceRequest): DeclaredService {
  // The request message is this call's own: its lists and map are taken as they are.
  return {
    name: request.name,
    baseUrl: request.baseUrl,
    openapiUrl: request.openapiUrl,
    healthUrl: request.healthUrl,
    endpoints: request.endpoints,
    metadata: request.metadata,
    tags: hasDuplicates(request.tags) ? [...new Set(request.tags)] : request.tags,
    version: request.version,
    ttlSeconds: request.ttlSeconds,
  };
}

function hasDuplicates(values: readonly string[]): boolean {
  return new Set(values).size !== values.length;
}

function watchMessage(event: WatchEvent) {
  switch (event.type) {
    case "put":
      return {
        type: WatchEventType.PUT,
        service: entryMessage(event.entry),
        revision: BigInt(event.revision),
        snapshot: event.snapshot,
        compacted: event.compacted,
      };
    case "delete":
      return {
        type: WatchEventType.DELETE,
        service: { ...tombstoneEntryMessage(event.tombstone), revision: BigInt(event.revision) },
        revision: BigInt(event.revision),
      };
    default:
      return {
        type: WatchEventType.SNAPSHOT_END,
        revision: BigInt(event.revision),
        snapshot: true,
        compacted: event.compacted,
      };
  }
}

function failed(service: string, error: string): OpenApiPollResult {
  return { service, changed: false, baseline: false, hash: "", error };
}

function pollResultMessage(result: OpenApiPollResult) {
  return {
    service: result.service,
    changed: result.changed,
    baseline: result.baseline,
    hash: result.hash,
    error: result.error ?? "",
    ...(result.diff
      ? {
          diff: {
            added: [...result.diff.added],
            removed: [...result.diff.removed],
            changed: [...result.diff.changed],
            breaking: result.diff.breaking,
            addedCount: result.diff.addedCount,
            removedCount: result.diff.removedCount,
            changedCount: result.diff.changedCount,
          },
        }
      : {}),
  };
}

/** A drift finding for the ecosystem: the shape its existing subscribers read. */
function emitDrift(events: EventLog, result: OpenApiPollResult, call: CallInfo): void {
  const diff = result.diff;
  if (diff === undefined) return;
  const count = diff.addedCount + diff.removedCount + diff.changedCount;
  events.append({
    type: "findings.created",
    subject: result.service,
    correlationId: call.correlationId,
    traceId: call.traceId,
    payload: {
      type: "api_drift_candidate",
      service: result.service,
      correlation_id: call.correlationId,
      count,
      severity_counts: {
        high: diff.removedCount,
        medium: diff.changedCount,
        low: diff.addedCount,
      },
      breaking: diff.breaking,
      hash: result.hash,
    },
  });
}

function notFound(name: string): DomainError {
  return new DomainError("not_found", `service ${name} is not registered`);
}
