import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { PeerService, type ReplicateResponse } from "../../gen/orchestrator/v1/peer_pb.js";
import { PeerCallError, type PeerTransport } from "../replication/peer-link.js";
import type { ReplicationMessage } from "../replication/replication-feed.js";
import { changeOfReplicated, replicatedEntryMessage } from "../services/registry-messages.js";

export interface PeerClientOptions {
  /** Sent as a bearer token on every call (PEER_TOKEN). Default: none. */
  token?: string | undefined;
  /** Timeout of the unary calls (digests, entries). Default 10 s. */
  timeoutMs?: number;
  /** HTTP/2 PING interval: a dead peer is noticed within about twice this. Default 2 s. */
  pingIntervalMs?: number;
}

/**
 * The transport of a replication link: gRPC over HTTP/2 to the peer's one port (h2c or TLS), with
 * HTTP/2 keepalive pings, the peer token, and failures classified for the link (an UNAUTHENTICATED
 * peer is shown as such). Error messages are the peer's own status messages or fixed text, never
 * socket details.
 */
export function createPeerClient(url: string, options: PeerClientOptions = {}): PeerTransport {
  const pingIntervalMs = options.pingIntervalMs ?? 2_000;
  const sessions = new Http2SessionManager(url, {
    pingIntervalMs,
    pingTimeoutMs: pingIntervalMs,
    pingIdleConnection: true,
  });
  const auth: Interceptor = (next) => async (request) => {
    if (options.token) request.header.set("authorization", `Bearer ${options.token}`);
    return next(request);
  };
  const client = createClient(
    PeerService,
    createGrpcTransport({
      baseUrl: url,
      sessionManager: sessions,
      interceptors: [auth],
      defaultTimeoutMs: options.timeoutMs ?? 10_000,
    }),
  );
  const classify = (error: unknown): PeerCallError => {
    const connectError = ConnectError.from(error);
    const kind =
      connectError.code === Code.Unauthenticated || connectError.code === Code.PermissionDenied
        ? "unauthenticated"
        : connectError.code === Code.Unavailable || connectError.code === Code.Canceled
          ? "unavailable"
          : connectError.code === Code.InvalidArgument
            ? "invalid"
            : "other";
    const message =
      connectError.code === Code.Unavailable &&
      /ECONNREFUSED|connect|socket/i.test(connectError.rawMessage)
        ? "the peer is unreachable"
        : `${Code[connectError.code]}: ${connectError.rawMessage}`.slice(0, 300);
    return new PeerCallError(kind, message, { cause: error });
  };
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
          },
          { signal, timeoutMs: 0 },
        );
        for await (const response of stream) {
          const message = messageOf(response);
          if (message) yield message;
        }
      } catch (error) {
        throw classify(error);
      }
    },
    getDigest: (bucketCount) =>
      call(async () => {
        const response = await client.getDigest({ buckets: bucketCount });
        return { nodeId: response.nodeId, bucketHashes: response.bucketHashes };
      }),
    getEntries: (buckets, bucketCount) =>
      call(async () => {
        const response = await client.getEntries({ buckets: [...buckets], bucketCount });
        return response.entries.map(changeOfReplicated);
      }),
    pushEntries: (nodeId, changes) =>
      call(async () => {
        const response = await client.pushEntries({
          nodeId,
          entries: changes.map(replicatedEntryMessage),
        });
        return response.applied;
      }),
    close: () => sessions.abort(),
  };
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
