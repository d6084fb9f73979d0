import { gunzip } from "node:zlib";
import { Code, ConnectError } from "@connectrpc/connect";

/** One length-prefixed gRPC message as it arrived: its flags byte and payload. */
export interface GrpcFrame {
  readonly compressed: boolean;
  readonly data: Uint8Array;
}

/**
 * Splits a byte stream into gRPC length-prefixed messages. Refuses a message whose declared length
 * exceeds `readMaxBytes` as soon as its 5-byte prefix arrives, before buffering it.
 */
export class GrpcFrameReader {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly readMaxBytes: number) {}

  /** Adds bytes and returns the messages they complete. Throws a ConnectError on a bad prefix. */
  push(chunk: Buffer): GrpcFrame[] {
    if (this.pendingBytes === 0 && isExactlyOneFrame(chunk)) {
      // The common unary case: one DATA chunk carries exactly one whole message, parsed in place.
      this.checkPrefix(chunk);
      return [{ compressed: chunk[0] === 1, data: chunk.subarray(5) }];
    }
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    const frames: GrpcFrame[] = [];
    for (;;) {
      if (this.pendingBytes < 5) break;
      const head = this.peek(5);
      this.checkPrefix(head);
      const length = head.readUInt32BE(1);
      if (this.pendingBytes < 5 + length) break;
      const whole = this.take(5 + length);
      frames.push({ compressed: whole[0] === 1, data: whole.subarray(5) });
    }
    return frames;
  }

  /** True when bytes of an incomplete message are left over. */
  get hasPartialFrame(): boolean {
    return this.pendingBytes > 0;
  }

  private checkPrefix(head: Buffer): void {
    const flags = head[0] ?? 0;
    if (flags > 1) {
      throw new ConnectError("invalid gRPC message flags", Code.Internal);
    }
    const length = head.readUInt32BE(1);
    if (length > this.readMaxBytes) {
      throw new ConnectError(
        `message of ${length} bytes exceeds the limit of ${this.readMaxBytes} bytes`,
        Code.ResourceExhausted,
      );
    }
  }

  private peek(n: number): Buffer {
    const first = this.pending[0];
    if (first !== undefined && first.length >= n) return first;
    this.pending = [Buffer.concat(this.pending)];
    return this.pending[0] as Buffer;
  }

  private take(n: number): Buffer {
    const all =
      this.pending.length === 1 ? (this.pending[0] as Buffer) : Buffer.concat(this.pending);
    const taken = all.subarray(0, n);
    const rest = all.subarray(n);
    this.pending = rest.length > 0 ? [rest] : [];
    this.pendingBytes = rest.length;
    return taken;
  }
}

function isExactlyOneFrame(chunk: Buffer): boolean {
  return chunk.length >= 5 && chunk.readUInt32BE(1) === chunk.length - 5;
}

/** Prefixes a serialized message with the 5-byte gRPC frame header (uncompressed). */
export function encodeFrame(data: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + data.length);
  frame[0] = 0;
  frame.writeUInt32BE(data.length, 1);
  frame.set(data, 5);
  return frame;
}

/**
 * Returns a frame's payload, gunzipped when the frame is compressed. The decompressed size is
 * bounded too, so that a small compressed bomb cannot allocate without limit.
 */
export function framePayload(
  frame: GrpcFrame,
  encoding: "identity" | "gzip",
  readMaxBytes: number,
): Uint8Array | Promise<Uint8Array> {
  if (!frame.compressed) return frame.data;
  if (encoding === "identity") {
    throw new ConnectError("compressed message without grpc-encoding", Code.Internal);
  }
  return new Promise((resolve, reject) => {
    gunzip(frame.data, { maxOutputLength: readMaxBytes }, (error, result) => {
      if (!error) return resolve(result);
      if (error instanceof RangeError) {
        return reject(
          new ConnectError(
            `decompressed message exceeds the limit of ${readMaxBytes} bytes`,
            Code.ResourceExhausted,
          ),
        );
      }
      reject(new ConnectError("message is not valid gzip", Code.InvalidArgument));
    });
  });
}
