import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { type ReplicatedEntry, ReplicatedEntrySchema } from "../../gen/orchestrator/v1/peer_pb.js";
import {
  type ServiceEntry,
  ServiceEntrySchema,
  ServiceStatus as ServiceStatusMessage,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { sealMessage } from "../encoding/message-encoding.js";
import { DomainError } from "../errors/domain-error.js";
import { forgottenWhenSuperseded } from "../registry/derived.js";
import type { RegistryChange, RegistryEntry, ServiceStatus, Tombstone } from "../registry/model.js";

const statusMessages: Readonly<Record<ServiceStatus, ServiceStatusMessage>> = Object.freeze({
  UNKNOWN: ServiceStatusMessage.UNKNOWN,
  HEALTHY: ServiceStatusMessage.HEALTHY,
  UNHEALTHY: ServiceStatusMessage.UNHEALTHY,
  DOWN: ServiceStatusMessage.DOWN,
});

// The same table the other way round (UNSPECIFIED, which names no status, is not in it).
const statusesByMessage: ReadonlyMap<ServiceStatusMessage, ServiceStatus> = new Map(
  (Object.keys(statusMessages) as ServiceStatus[]).map((status) => [
    statusMessages[status],
    status,
  ]),
);

export function statusOf(status: ServiceStatusMessage): ServiceStatus {
  const found = statusesByMessage.get(status);
  // Proto enums are open: a number the enum does not define is the caller's mistake.
  if (found === undefined) throw new DomainError("invalid", `status: unknown value ${status}`);
  return found;
}

// Entries never change once written (a change is a new object), so each one's message is built
// once, sealed, and shared by every response that shows it: listings of thousands of entries,
// every watcher. It is kept on the entry under a symbol of this module's: a WeakMap lookup and
// insertion per registration cost more than the message saves on a single use.
const messageKey: unique symbol = Symbol("ServiceEntry message");
forgottenWhenSuperseded(messageKey);

/** The entry as the API shows it. */
export function entryMessage(entry: RegistryEntry): ServiceEntry {
  const carrier = entry as RegistryEntry & { [messageKey]?: ServiceEntry };
  let message = carrier[messageKey];
  if (message === undefined) {
    // Timestamps that are equal share one message (a registration's three times usually are).
    const registeredAt = timestampFromMs(entry.registeredAt);
    const lastHeartbeat =
      entry.lastHeartbeat === entry.registeredAt
        ? registeredAt
        : timestampFromMs(entry.lastHeartbeat);
    const updatedAt =
      entry.updatedAt === entry.lastHeartbeat ? lastHeartbeat : timestampFromMs(entry.updatedAt);
    message = create(ServiceEntrySchema, {
      name: entry.name,
      baseUrl: entry.baseUrl,
      openapiUrl: entry.openapiUrl,
      healthUrl: entry.healthUrl,
      endpoints: entry.endpoints as string[],
      metadata: entry.metadata,
      tags: entry.tags as string[],
      version: entry.version,
      ttlSeconds: entry.ttlSeconds,
      status: statusMessages[entry.status],
      registeredAt,
      lastHeartbeat,
      updatedAt,
      revision: BigInt(entry.revision),
      originNodeId: entry.origin,
      hlc: entry.hlc,
    });
    if (entry.leaseExpiresAt) message.leaseExpiresAt = timestampFromMs(entry.leaseExpiresAt);
    carrier[messageKey] = sealMessage(message);
  }
  return message;
}

/** A change as peers exchange it. */
export function replicatedEntryMessage(change: RegistryChange): ReplicatedEntry {
  if (change.type === "put") {
    return create(ReplicatedEntrySchema, {
      entry: entryMessage(change.entry),
      revision: BigInt(change.revision),
    });
  }
  const { tombstone } = change;
  return create(ReplicatedEntrySchema, {
    entry: tombstoneEntryMessage(tombstone),
    deleted: true,
    revision: BigInt(tombstone.revision),
  });
}

/** A tombstone as a ServiceEntry: its name, when it was deleted, and its stamp. */
export function tombstoneEntryMessage(
  tombstone: Tombstone,
): MessageInitShape<typeof ServiceEntrySchema> {
  return {
    name: tombstone.name,
    updatedAt: timestampFromMs(tombstone.deletedAt),
    originNodeId: tombstone.origin,
    hlc: tombstone.hlc,
  };
}

/**
 * A change a peer sent, back in the domain's terms.
 * @throws DomainError "invalid" when it lacks what every change has (a name, a stamp).
 */
export function changeOfReplicated(message: ReplicatedEntry): RegistryChange {
  const entry = message.entry;
  if (entry === undefined || entry.name === "" || entry.originNodeId === "" || entry.hlc === 0n) {
    throw new DomainError("invalid", "a replicated entry lacks its name or stamp");
  }
  const revision = Number(message.revision);
  const ms = (t: ServiceEntry["updatedAt"]) => (t ? millisOf(t) : 0);
  if (message.deleted) {
    return {
      type: "delete",
      revision,
      tombstone: {
        name: entry.name,
        deletedAt: ms(entry.updatedAt),
        origin: entry.originNodeId,
        hlc: entry.hlc,
        revision,
      },
    };
  }
  return {
    type: "put",
    revision,
    entry: {
      name: entry.name,
      baseUrl: entry.baseUrl,
      openapiUrl: entry.openapiUrl,
      healthUrl: entry.healthUrl,
      endpoints: entry.endpoints,
      metadata: entry.metadata,
      tags: entry.tags,
      version: entry.version,
      ttlSeconds: entry.ttlSeconds,
      status: statusOfReplicated(entry.status),
      registeredAt: ms(entry.registeredAt),
      lastHeartbeat: ms(entry.lastHeartbeat),
      updatedAt: ms(entry.updatedAt),
      leaseExpiresAt: ms(entry.leaseExpiresAt),
      origin: entry.originNodeId,
      hlc: entry.hlc,
      revision,
    },
  };
}

// The most a Date holds either side of 1970 (ECMAScript's time range).
const maxDateMs = 8.64e15;

/**
 * A timestamp in Unix ms, NaN beyond a Date's range, as `timestampDate(t).getTime()` gives it,
 * without building the Date: four per replicated entry, tens of thousands in a snapshot.
 */
function millisOf(timestamp: Timestamp): number {
  const ms = timestampMs(timestamp);
  return Math.abs(ms) <= maxDateMs ? ms : Number.NaN;
}

// A peer's learned status is not ours (merging ignores it): an unknown number is no error here.
function statusOfReplicated(status: ServiceStatusMessage): ServiceStatus {
  try {
    return statusOf(status);
  } catch {
    return "UNKNOWN";
  }
}
