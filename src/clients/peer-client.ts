import { timestampDate } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import {
  PeerService,
  type ReplicatedBatch,
  type ReplicateResponse,
} from "../../gen/orchestrator/v1/peer_pb.js";
import { DomainError } from "../errors/domain-error.js";
import type { RegistryChange } from "../registry/model.js";
import {
  maxReceivedBatchChanges,
  PeerCallError,
  type PeerTransport,
} from "../replication/peer-link.js";
import type { ReplicationMessage } from "../replication/replication-feed.js";
import { changeOfReplicated, replicatedEntryMessage } from "../services/registry-messages.js";
import { createGrpcJsClient } from "./grpc-js-client.js";

export interface PeerClientOptions {
  /** Sent as a bearer token on every call (PEER_TOKEN). Default: none. */
  token?: string | undefined;
  /** Timeout of the unary calls (digests, entries). Default 10 s. */
  timeoutMs?: number;
  /** HTTP/2 keepalive ping interval: a dead peer is noticed within about twice this. Default 2 s. */
  pingIntervalMs?: number;
}

/**
 * The transport of a replication link: gRPC over HTTP/2 to the peer's one port, through grpc-js,
 * whose channel reconnects, answers GOAWAY and sends keepalive pings robustly; with the peer
 * token, and failures classified for the link (a peer refusing our token is shown as
 * UNAUTHENTICATED). Error messages are the peer's own status messages or fixed text, never
 * socket details. Only http:// peer URLs (h2c) are supported; https:// uses TLS with the system's
 * roots.
 */
export function createPeerClient(url: string, options: PeerClientOptions = {}): PeerTransport {
  const target = new URL(url);
  const pingIntervalMs = options.pingIntervalMs ?? 2_000;
  const client = createGrpcJsClient(
    PeerService,
    target.host,
    target.protocol === "https:" ? grpc.credentials.createSsl() : grpc.credentials.createInsecure(),
    {
      "grpc.keepalive_time_ms": pingIntervalMs,
      "grpc.keepalive_timeout_ms": pingIntervalMs,
      "grpc.keepalive_permit_without_calls": 1,
      // Our own backoff paces reconnects; the channel should try at once when asked.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 1_000,
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      "grpc-node.flow_control_window": 1024 * 1024,
    },
  );
  const metadata: Record<string, string> = options.token
    ? { authorization: `Bearer ${options.token}` }
    : {};
  const timeoutMs = options.timeoutMs ?? 10_000;
  const unaryOptions = () => ({ metadata, deadline: new Date(Date.now() + timeoutMs) });
  const call = async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (error) {
      throw classify(error);
    }
  };
  return {
    async *replicate(request, signal) {
      try {
        const stream = client.replicate(
          {
            nodeId: request.nodeId,
            incarnationId: request.incarnationId,
            fromIncarnationId: request.fromHistoryId,
            fromRevision: BigInt(request.fromRevision),
            acceptsBatches: true,
          },
          { metadata, signal },
        );
        for await (const response of stream) {
          if (response.event.case === "batch") {
            yield* batchMessages(response.event.value);
            continue;
          }
          const message = messageOf(response);
          if (message) yield message;
        }
      } catch (error) {
        throw classify(error);
      }
    },
    getDigest: (bucketCount) =>
      call(async () => {
        const response = await client.getDigest({ buckets: bucketCount }, unaryOptions());
        return { nodeId: response.nodeId, bucketHashes: response.bucketHashes };
      }),
    getEntries: (buckets, bucketCount) =>
      call(async () => {
        const response = await client.getEntries(
          { buckets: [...buckets], bucketCount },
          unaryOptions(),
        );
        return response.entries.map(changeOfReplicated);
      }),
    pushEntries: (nodeId, changes) =>
      call(async () => {
        const response = await client.pushEntries(
          { nodeId, entries: changes.map(replicatedEntryMessage) },
          unaryOptions(),
        );
        return response.applied;
      }),
    close: () => client.close(),
  };
}

/** A grpc-js failure, in the terms the link shows: its kind and a message safe to show. */
function classify(error: unknown): PeerCallError {
  if (error instanceof PeerCallError) return error;
  if (error instanceof DomainError) {
    return new PeerCallError("invalid", `the peer sent an invalid change: ${error.message}`, {
      cause: error,
    });
  }
  const status = (error as Partial<grpc.ServiceError>).code;
  const details = String((error as Partial<grpc.ServiceError>).details ?? "");
  switch (status) {
    case grpc.status.UNAUTHENTICATED:
    case grpc.status.PERMISSION_DENIED:
      return new PeerCallError(
        "unauthenticated",
        `${grpc.status[status]}: the peer refused our token (${details})`.slice(0, 300),
        { cause: error },
      );
    case grpc.status.UNAVAILABLE:
      // grpc-js puts socket details (addresses) in these messages: say only what happened.
      return new PeerCallError("unavailable", "the peer is unreachable", { cause: error });
    case grpc.status.CANCELLED:
      return new PeerCallError("unavailable", "the call was cancelled", { cause: error });
    case grpc.status.DEADLINE_EXCEEDED:
      return new PeerCallError("unavailable", "the peer did not answer in time", { cause: error });
    case undefined:
      return new PeerCallError("other", "the peer sent something that is not a valid answer", {
        cause: error,
      });
    default:
      return new PeerCallError(
        status === grpc.status.INVALID_ARGUMENT ? "invalid" : "other",
        `${grpc.status[status] ?? "UNKNOWN"}: ${details}`.slice(0, 300),
        { cause: error },
      );
  }
}

/**
 * A batch from the peer as the link takes it. A malformed change fails the stream as it would
 * alone: after the changes before it are handed on, with the same error.
 * @throws PeerCallError "invalid" for a batch of more than `maxReceivedBatchChanges` changes;
 *   DomainError "invalid" for a malformed change.
 */
function* batchMessages(batch: ReplicatedBatch): Generator<ReplicationMessage> {
  if (batch.changes.length > maxReceivedBatchChanges) {
    throw new PeerCallError(
      "invalid",
      `the peer sent a batch of ${batch.changes.length} changes, more than the ${maxReceivedBatchChanges} accepted`,
    );
  }
  const changes: RegistryChange[] = [];
  let malformed: unknown;
  for (const entry of batch.changes) {
    try {
      changes.push(changeOfReplicated(entry));
    } catch (error) {
      malformed = error;
      break;
    }
  }
  if (changes.length > 0 || malformed === undefined) yield { kind: "batch", changes };
  if (malformed !== undefined) throw malformed;
}

function messageOf(response: ReplicateResponse): ReplicationMessage | undefined {
  const event = response.event;
  switch (event.case) {
    case "hello":
      return {
        kind: "hello",
        nodeId: event.value.nodeId,
        historyId: event.value.incarnationId,
        revision: Number(event.value.revision),
        snapshot: event.value.snapshot,
      };
    case "change":
      return { kind: "change", change: changeOfReplicated(event.value) };
    case "snapshotEnd":
      return { kind: "snapshot_end", revision: Number(event.value.revision) };
    case "keepalive":
      return {
        kind: "keepalive",
        revision: Number(event.value.revision),
        timestamp: event.value.timestamp ? timestampDate(event.value.timestamp).getTime() : 0,
      };
    default:
      return undefined;
  }
}
