import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type PeerService,
  PeerState as PeerStateMessage,
  type ReplicateResponse,
  ReplicateResponseSchema,
} from "../../gen/orchestrator/v1/peer_pb.js";
import type { Clock } from "../clock.js";
import { sealMessage } from "../encoding/message-encoding.js";
import { forgottenWhenSuperseded } from "../registry/derived.js";
import type { RegistryChange, RegistryEntry, Tombstone } from "../registry/model.js";
import type { RegistryStore } from "../registry/registry-store.js";
import { changesInBuckets, digestOf, syncWithPeer } from "../replication/anti-entropy.js";
import type { ReplicationMerger } from "../replication/merge.js";
import type { PeerLink, PeerState, PeerTransport } from "../replication/peer-link.js";
import { type ReplicationMessage, replicationFeed } from "../replication/replication-feed.js";
import { changeOfReplicated, replicatedEntryMessage } from "./registry-messages.js";

export interface PeerServiceDeps {
  readonly store: RegistryStore;
  readonly merger: ReplicationMerger;
  readonly clock: Clock;
  readonly nodeId: string;
  /** The links to the configured peers, with the transport each uses. */
  readonly links: readonly { readonly link: PeerLink; readonly transport: PeerTransport }[];
  /** Changes a slow peer's stream may fall behind by before it is cut. */
  readonly maxQueue: number;
}

const states: Readonly<Record<PeerState, PeerStateMessage>> = Object.freeze({
  CONNECTING: PeerStateMessage.CONNECTING,
  SYNCING: PeerStateMessage.SYNCING,
  LIVE: PeerStateMessage.LIVE,
  BACKOFF: PeerStateMessage.BACKOFF,
  UNAUTHENTICATED: PeerStateMessage.UNAUTHENTICATED,
});

/** PeerService: the peers' view for operators, and the replication RPCs peers call. */
export function createPeerService(deps: PeerServiceDeps): ServiceImpl<typeof PeerService> {
  return {
    listPeers() {
      const peers = deps.links.map(({ link }) => {
        const s = link.status();
        return {
          url: s.url,
          nodeId: s.nodeId,
          state: states[s.state],
          ...(s.lastContact ? { lastContact: timestampFromMs(s.lastContact) } : {}),
          appliedRevision: BigInt(s.appliedRevision),
          lagChanges: BigInt(s.lagChanges),
          lagMs: s.lagMs,
          lastError: s.lastError,
          incarnationId: s.historyId,
        };
      });
      return { peers, count: peers.length };
    },

    async syncPeers() {
      const results = await Promise.all(
        deps.links.map(async ({ link, transport }) => {
          try {
            const result = await syncWithPeer(transport, deps);
            return {
              url: link.url,
              nodeId: result.nodeId,
              ok: true,
              sent: result.sent,
              received: result.received,
              error: "",
            };
          } catch (error) {
            return {
              url: link.url,
              nodeId: link.status().nodeId,
              ok: false,
              sent: 0,
              received: 0,
              error: messageOf(error),
            };
          }
        }),
      );
      return {
        sent: results.reduce((sum, r) => sum + r.sent, 0),
        received: results.reduce((sum, r) => sum + r.received, 0),
        peers: results,
      };
    },

    async *replicate(request, context) {
      const feed = replicationFeed(
        { ...deps, learnedFrom: (change) => deps.merger.learnedFrom(change) },
        {
          peerNodeId: request.nodeId,
          fromHistoryId: request.fromIncarnationId,
          fromRevision: Number(request.fromRevision),
          acceptsBatches: request.acceptsBatches,
          signal: context.signal,
        },
        { maxQueue: deps.maxQueue },
      );
      for await (const message of feed) yield replicateMessage(message, deps.clock);
    },

    getDigest(request) {
      return { nodeId: deps.nodeId, bucketHashes: digestOf(deps.store, request.buckets) };
    },

    getEntries(request) {
      const buckets = request.buckets.filter((b) => b < request.bucketCount);
      return {
        entries: changesInBuckets(deps.store, buckets, request.bucketCount).map(
          replicatedEntryMessage,
        ),
      };
    },

    async pushEntries(request) {
      let applied = 0;
      for (const entry of request.entries) {
        if ((await deps.merger.merge(changeOfReplicated(entry))) === "applied") applied++;
      }
      return { applied };
    },
  };
}

function replicateMessage(message: ReplicationMessage, clock: Clock) {
  switch (message.kind) {
    case "hello":
      return create(ReplicateResponseSchema, {
        event: {
          case: "hello",
          value: {
            nodeId: message.nodeId,
            incarnationId: message.historyId,
            revision: BigInt(message.revision),
            snapshot: message.snapshot,
          },
        },
      });
    case "change":
      return changeMessage(message.change);
    case "batch":
      // Built for this stream alone (its echo-free filtering is its own): not sealed, not shared.
      return create(ReplicateResponseSchema, {
        event: { case: "batch", value: { changes: message.changes.map(replicatedEntryMessage) } },
      });
    case "snapshot_end":
      return create(ReplicateResponseSchema, {
        event: { case: "snapshotEnd", value: { revision: BigInt(message.revision) } },
      });
    default:
      return create(ReplicateResponseSchema, {
        event: {
          case: "keepalive",
          value: {
            revision: BigInt(message.revision),
            timestamp: timestampFromMs(message.timestamp || clock.now()),
          },
        },
      });
  }
}

// A change goes to every peer's stream as the same message, sealed, so that it is encoded once
// for all of them (the fast path caches a sealed response's bytes on it). Kept on what the change
// carries (its entry or tombstone: one change each), and forgotten once a newer change of the
// name supersedes it.
const changeMessageKey: unique symbol = Symbol("ReplicateResponse message");
forgottenWhenSuperseded(changeMessageKey);

function changeMessage(change: RegistryChange): ReplicateResponse {
  const carrier: (RegistryEntry | Tombstone) & { [changeMessageKey]?: ReplicateResponse } =
    change.type === "put" ? change.entry : change.tombstone;
  let message = carrier[changeMessageKey];
  if (message === undefined) {
    message = sealMessage(
      create(ReplicateResponseSchema, {
        event: { case: "change", value: replicatedEntryMessage(change) },
      }),
    );
    carrier[changeMessageKey] = message;
  }
  return message;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : "sync failed";
}
