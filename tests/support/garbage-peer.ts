import http2, { type Http2Session, type ServerHttp2Stream } from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  type ReplicateResponse,
  ReplicateResponseSchema,
} from "../../gen/orchestrator/v1/peer_pb.js";

/**
 * What a garbage peer answers every call with:
 * - "html": 200 with `content-type: text/html` and a page (a web server at the peer's address);
 * - "junk-frames": 200 with a gRPC content type, then a length-prefixed frame of bytes that are no
 *   protobuf message, and the stream left open;
 * - "raw-junk": 200 with a gRPC content type, then bytes that are not even gRPC framing, and the
 *   end of the stream (no trailers);
 * - "bad-entries": a well-formed Replicate stream carrying `messages` as given (a hello, changes
 *   a real node would never send, a snapshot end: whatever the test builds), left open; unary calls
 *   get "junk-frames".
 */
export type GarbageKind =
  | { readonly kind: "html" }
  | { readonly kind: "junk-frames" }
  | { readonly kind: "raw-junk" }
  | { readonly kind: "bad-entries"; readonly messages: readonly ReplicateResponse[] };

/** An HTTP/2 (h2c) server on loopback that speaks gRPC badly or not at all. */
export interface GarbagePeer {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** The paths of the requests received so far, oldest first. */
  readonly paths: readonly string[];
  /** Drops every connection and stops listening. Idempotent. */
  close(): Promise<void>;
}

/** Starts a {@link GarbagePeer} on a free loopback port. */
export async function startGarbagePeer(garbage: GarbageKind): Promise<GarbagePeer> {
  const sessions = new Set<Http2Session>();
  const paths: string[] = [];
  const server = http2.createServer();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
    session.on("error", () => {});
  });
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    paths.push(String(headers[":path"] ?? ""));
    // The request body is read and dropped, so that flow control never stalls the caller.
    stream.resume();
    answer(stream, garbage, String(headers[":path"] ?? "").endsWith("/Replicate"));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  if (typeof address !== "object" || address === null) throw new Error("no port was assigned");
  let closing: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${address.port}`,
    paths,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const session of sessions) session.destroy();
      });
      return closing;
    },
  };
}

function answer(stream: ServerHttp2Stream, garbage: GarbageKind, replicate: boolean): void {
  const grpcHeaders = { ":status": 200, "content-type": "application/grpc+proto" };
  switch (garbage.kind) {
    case "html":
      stream.respond({ ":status": 200, "content-type": "text/html; charset=utf-8" });
      stream.end("<html><body>It works!</body></html>");
      return;
    case "raw-junk":
      stream.respond(grpcHeaders);
      // Ended at once: the caller is left with a truncated "frame" and no trailers.
      stream.end(
        Buffer.from("\u00ff\u00feHTTP/1.1 400 Bad Request\r\n\r\nnot grpc at all", "latin1"),
      );
      return;
    case "bad-entries":
      stream.respond(grpcHeaders);
      if (!replicate) {
        stream.write(junkFrame());
        return;
      }
      for (const message of garbage.messages)
        stream.write(frame(toBinary(ReplicateResponseSchema, message)));
      return;
    default:
      stream.respond(grpcHeaders);
      stream.write(junkFrame());
  }
}

/** A gRPC frame whose payload is no protobuf message (0xff starts a field with wire type 7). */
function junkFrame(): Buffer {
  return frame(Buffer.alloc(24, 0xff));
}

/** Length-prefixed, uncompressed. */
function frame(payload: Uint8Array): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt8(0, 0);
  prefix.writeUInt32BE(payload.length, 1);
  return Buffer.concat([prefix, payload]);
}

/** A Replicate hello from a node calling itself `nodeId`, announcing a snapshot. */
export function helloMessage(nodeId: string, revision: number): ReplicateResponse {
  return create(ReplicateResponseSchema, {
    event: {
      case: "hello",
      value: {
        nodeId,
        incarnationId: `${nodeId}-history`,
        revision: BigInt(revision),
        snapshot: true,
      },
    },
  });
}

/** A replicated put of an entry named `name`, stamped by `origin` at `hlc`, at `revision`. */
export function changeMessage(
  name: string,
  stamp: { origin: string; hlc: bigint },
  revision: number,
): ReplicateResponse {
  const now = timestampFromMs(Date.now());
  return create(ReplicateResponseSchema, {
    event: {
      case: "change",
      value: {
        revision: BigInt(revision),
        deleted: false,
        entry: {
          name,
          baseUrl: "http://127.0.0.1:9/garbage",
          healthUrl: "http://127.0.0.1:9/garbage/health",
          registeredAt: now,
          lastHeartbeat: now,
          updatedAt: now,
          revision: BigInt(revision),
          originNodeId: stamp.origin,
          hlc: stamp.hlc,
        },
      },
    },
  });
}

/** The end of a snapshot at `revision`. */
export function snapshotEndMessage(revision: number): ReplicateResponse {
  return create(ReplicateResponseSchema, {
    event: { case: "snapshotEnd", value: { revision: BigInt(revision) } },
  });
}

/** The changes of `changes` (built by {@link changeMessage}) as one batch, in the order given. */
export function batchMessage(changes: readonly ReplicateResponse[]): ReplicateResponse {
  return create(ReplicateResponseSchema, {
    event: {
      case: "batch",
      value: {
        changes: changes.flatMap((m) => (m.event.case === "change" ? [m.event.value] : [])),
      },
    },
  });
}
