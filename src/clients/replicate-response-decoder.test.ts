import {
  create,
  type DescField,
  type DescMessage,
  fromBinary,
  type Message,
  type MessageInitShape,
  type MessageShape,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { ReplicateResponseSchema } from "../../gen/orchestrator/v1/peer_pb.js";
import { decodeReplicateResponse } from "./replicate-response-decoder.js";

// The reference: protobuf-es' own reader, unknown fields skipped as the decoder skips them.
const reference = (bytes: Uint8Array) =>
  fromBinary(ReplicateResponseSchema, bytes, { readUnknownFields: false });

/** Both decode `bytes` to the same message, or both refuse it. */
function expectSameDecoding(bytes: Uint8Array): void {
  let expected: unknown;
  try {
    expected = reference(bytes);
  } catch {
    expect(() => decodeReplicateResponse(bytes)).toThrow();
    return;
  }
  expect(decodeReplicateResponse(bytes)).toStrictEqual(expected);
}

/** A small deterministic generator, so that a failure can be replayed. */
function randomSource(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  const int = (max: number) => Math.floor(next() * max);
  // A leading U+FEFF is text, not a byte-order mark; U+FFFD is a character like any other.
  const pieces = [
    "a",
    "0",
    "-",
    "/",
    "é",
    "ß",
    "→",
    "😀",
    "\u{10ffff}",
    "\u0000",
    "\ufeff",
    "\ufffd",
    " ",
  ];
  const text = () => {
    // Long enough, sometimes, to leave protobuf-es' ASCII fast path.
    const length = next() < 0.1 ? 40 + int(200) : int(12);
    let out = "";
    for (let i = 0; i < length; i++) out += next() < 0.8 ? "abcdefgh"[int(8)] : pieces[int(13)];
    return out;
  };
  return { next, int, text };
}

type Random = ReturnType<typeof randomSource>;

/** A value for every kind of scalar the schemas use, edges included. */
function scalarValue(type: ScalarType, random: Random): unknown {
  switch (type) {
    case ScalarType.STRING:
      return random.text();
    case ScalarType.BOOL:
      return random.next() < 0.5;
    case ScalarType.UINT32:
      return [0, 1, 300, 2 ** 32 - 1][random.int(4)];
    case ScalarType.INT32:
      return [0, 1, -1, 2 ** 31 - 1, -(2 ** 31)][random.int(5)];
    case ScalarType.UINT64:
      return [0n, 1n, 2n ** 63n - 1n, 2n ** 64n - 1n, BigInt(random.int(2 ** 30))][random.int(5)];
    case ScalarType.INT64:
      return [0n, -1n, 1_700_000_000n, -(2n ** 63n), 2n ** 63n - 1n][random.int(5)];
    default:
      throw new Error(`no generator for scalar type ${type}`);
  }
}

/**
 * A message of `schema` with a random subset of its fields set, every field kind drawn from the
 * descriptor: a field added to the protos is generated here, and fails the comparison until the
 * decoder reads it.
 */
function randomMessage<S extends DescMessage>(
  schema: S,
  random: Random,
  depth = 0,
): MessageShape<S> {
  const init: Record<string, unknown> = {};
  for (const field of schema.fields) {
    if (field.oneof !== undefined || random.next() < 0.2) continue;
    init[field.localName] = fieldValue(field, random, depth);
  }
  for (const oneof of schema.oneofs) {
    const field = oneof.fields[random.int(oneof.fields.length)];
    if (field === undefined || random.next() < 0.1) continue;
    init[oneof.localName] = { case: field.localName, value: fieldValue(field, random, depth) };
  }
  return create(schema, init as MessageInitShape<S>);
}

function fieldValue(field: DescField, random: Random, depth: number): unknown {
  switch (field.fieldKind) {
    case "scalar":
      return scalarValue(field.scalar, random);
    case "enum":
      return [0, 1, 2, 3, 4, 99][random.int(6)];
    case "message":
      return randomMessage(field.message, random, depth + 1);
    case "list":
      if (field.listKind !== "scalar") throw new Error(`no generator for ${field}`);
      return Array.from({ length: random.int(4) }, () => scalarValue(field.scalar, random));
    case "map": {
      const map: Record<string, unknown> = {};
      for (let i = random.int(4); i > 0; i--) {
        if (field.mapKind !== "scalar") throw new Error(`no generator for ${field}`);
        const key = random.next() < 0.1 ? "__proto__" : random.text();
        Object.defineProperty(map, key, {
          value: scalarValue(field.scalar, random),
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return map;
    }
  }
}

/** Fields no schema here declares, of every wire type, as another version of a peer may send. */
function unknownFields(): Uint8Array {
  const writer = new BinaryWriter();
  writer.tag(900, WireType.Varint).uint64(2n ** 63n);
  writer.tag(901, WireType.LengthDelimited).string("from a newer peer");
  writer.tag(902, WireType.Bit64).fixed64(7n);
  writer.tag(903, WireType.Bit32).fixed32(7);
  writer.tag(904, WireType.StartGroup).tag(1, WireType.Varint).uint32(1);
  writer.tag(904, WireType.EndGroup);
  return writer.finish();
}

const concat = (...parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((part) => [...part]));

describe("decodeReplicateResponse", () => {
  it("decodes what protobuf-es decodes, for every field of every event", () => {
    const random = randomSource(1);
    for (let i = 0; i < 2_000; i++) {
      expectSameDecoding(
        toBinary(ReplicateResponseSchema, randomMessage(ReplicateResponseSchema, random)),
      );
    }
  });

  it("merges a message seen twice, and lets a later event of another kind win", () => {
    const random = randomSource(2);
    for (let i = 0; i < 500; i++) {
      // Concatenated encodings are one message: fields merged, lists appended, the last wins.
      const first = toBinary(
        ReplicateResponseSchema,
        randomMessage(ReplicateResponseSchema, random),
      );
      const second = toBinary(
        ReplicateResponseSchema,
        randomMessage(ReplicateResponseSchema, random),
      );
      expectSameDecoding(concat(first, second));
    }
  });

  it("skips unknown fields at every level", () => {
    const random = randomSource(3);
    const extra = unknownFields();
    for (let i = 0; i < 200; i++) {
      const message = randomMessage(ReplicateResponseSchema, random);
      const event = message.event as { case?: string; value?: Message };
      const value = event.value;
      expectSameDecoding(concat(extra, toBinary(ReplicateResponseSchema, message), extra));
      if (value === undefined || event.case === undefined) continue;
      // Unknown fields inside the event's message, and inside the entry of a change.
      const field = ReplicateResponseSchema.fields.find((f) => f.localName === event.case);
      if (field?.message === undefined) continue;
      const inner = concat(toBinary(field.message, value), extra);
      const writer = new BinaryWriter();
      writer.tag(field.number, WireType.LengthDelimited).bytes(inner);
      expectSameDecoding(writer.finish());
    }
  });

  it("refuses truncated and malformed input as protobuf-es does", () => {
    const random = randomSource(4);
    for (let i = 0; i < 50; i++) {
      const bytes = toBinary(
        ReplicateResponseSchema,
        randomMessage(ReplicateResponseSchema, random),
      );
      for (let end = 0; end < bytes.length; end++) expectSameDecoding(bytes.subarray(0, end));
    }
    // A change whose entry's name is not UTF-8: stray bytes, an overlong encoding, a surrogate.
    for (const name of [
      [0x61, 0xff, 0xfe],
      [0xc0, 0x80],
      [0xed, 0xa0, 0x80],
      [0xe2, 0x82],
    ]) {
      const writer = new BinaryWriter();
      writer.tag(2, WireType.LengthDelimited).fork();
      writer.tag(1, WireType.LengthDelimited).fork();
      writer.tag(1, WireType.LengthDelimited).bytes(Uint8Array.from(name));
      writer.join().join();
      const invalidUtf8 = writer.finish();
      expect(() => reference(invalidUtf8)).toThrow();
      expect(() => decodeReplicateResponse(invalidUtf8)).toThrow();
    }
    expectSameDecoding(Uint8Array.of(0x00));
    expectSameDecoding(Uint8Array.of(0x12, 0x05, 0x0a));
  });
});
