import type { Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Access } from "../../gen/orchestrator/v1/options_pb.js";
import { OpenCounts } from "../open-counts.js";
import { accessOf } from "./auth.js";
import { callMetaOf } from "./call-meta.js";
import type { Interceptor, StreamingCall } from "./chain.js";

export interface WatchLimitOptions {
  /** Watches open at once on this node, from every client. */
  readonly maxWatches: number;
  /** Watches open at once from one client address. */
  readonly maxWatchesPerClient: number;
  /** Told of each refused watch. Default none. */
  readonly onRefused?: (refusal: { method: string; limit: "total" | "per_client" }) => void;
  /** As for the auth interceptor: rules of services whose protos are not ours. */
  readonly externalAccess?: ReadonlyMap<string, Access>;
}

/**
 * Bounds the streams a response flows on for as long as the client keeps them open — every watch
 * (registry, events, a run, health) on every protocol — in total (WATCH_MAX_SUBSCRIBERS) and per
 * client address (WATCH_MAX_SUBSCRIBERS_PER_CLIENT): each holds a connection's stream, a place in
 * a change log and a timer, so a client opening them in a loop must not exhaust the node. A watch
 * past a limit fails with RESOURCE_EXHAUSTED (429 on REST). The peers' replication streams are
 * not counted: the number of peers is configuration.
 *
 * A watch counts from its first read to its end, whichever way it ends (the transports return
 * the iterator when the client goes away), so a stream the transport never read never counts.
 */
export function createWatchLimitInterceptor(options: WatchLimitOptions): Interceptor {
  const perClient = new OpenCounts();
  let total = 0;
  const onRefused = options.onRefused ?? (() => {});

  return (method) => {
    if (method.methodKind !== "server_streaming" && method.methodKind !== "bidi_streaming") {
      return undefined;
    }
    if (accessOf(method, options.externalAccess) === Access.PEER) return undefined;
    return {
      streaming: (next) =>
        async function* (requests, context): AsyncIterable<Message> {
          const address = callMetaOf(context).clientAddress;
          const fromClient = perClient.of(address);
          const limit =
            total >= options.maxWatches
              ? "total"
              : fromClient >= options.maxWatchesPerClient
                ? "per_client"
                : undefined;
          if (limit !== undefined) {
            onRefused({ method: method.name, limit });
            throw refusal(limit, options);
          }
          total++;
          perClient.open(address);
          try {
            yield* (next as StreamingCall)(requests, context);
          } finally {
            total--;
            perClient.close(address);
          }
        },
    };
  };
}

function refusal(limit: "total" | "per_client", options: WatchLimitOptions): ConnectError {
  return limit === "total"
    ? new ConnectError(
        `too many watches open on this node (${options.maxWatches}); retry later`,
        Code.ResourceExhausted,
      )
    : new ConnectError(
        `too many watches open from this client address (${options.maxWatchesPerClient}); close some first`,
        Code.ResourceExhausted,
      );
}
