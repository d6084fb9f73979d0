import { gzipSync } from "node:zlib";
import { Code, type ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { encodeFrame, framePayload, GrpcFrameReader } from "./grpc-frames.js";

const payload = (n: number) => Buffer.alloc(n, 7);

describe("GrpcFrameReader", () => {
  it("reads whole frames from any split of the byte stream", () => {
    const stream = Buffer.concat([
      encodeFrame(payload(3)),
      encodeFrame(payload(0)),
      encodeFrame(payload(300)),
    ]);
    for (const size of [1, 2, 5, 7, 64, stream.length]) {
      const reader = new GrpcFrameReader(1024);
      const lengths: number[] = [];
      for (let at = 0; at < stream.length; at += size) {
        for (const frame of reader.push(stream.subarray(at, at + size)))
          lengths.push(frame.data.length);
      }
      expect(lengths).toEqual([3, 0, 300]);
      expect(reader.hasPartialFrame).toBe(false);
    }
  });

  it("refuses an oversize message from its prefix alone", () => {
    const reader = new GrpcFrameReader(100);
    const prefix = encodeFrame(payload(101)).subarray(0, 5);
    expect(() => reader.push(prefix)).toThrow(
      expect.objectContaining({ code: Code.ResourceExhausted }) as ConnectError,
    );
  });
});

describe("framePayload", () => {
  it("inflates gzip within the limit and refuses a bomb", async () => {
    const small = gzipSync(payload(50));
    expect((await framePayload({ compressed: true, data: small }, "gzip", 100)).length).toBe(50);
    const bomb = gzipSync(Buffer.alloc(1_000_000));
    await expect(
      framePayload({ compressed: true, data: bomb }, "gzip", 1000),
    ).rejects.toMatchObject({
      code: Code.ResourceExhausted,
    });
    await expect(
      framePayload({ compressed: true, data: Buffer.from("not gzip") }, "gzip", 1000),
    ).rejects.toMatchObject({ code: Code.InvalidArgument });
  });
});
