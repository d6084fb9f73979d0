import type { DescMessage } from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import {
  type ReplicatedEntry,
  ReplicatedEntrySchema,
  type ReplicateResponse,
  ReplicateResponseSchema,
  type ReplicationHello,
  ReplicationHelloSchema,
  type ReplicationKeepalive,
  ReplicationKeepaliveSchema,
  type ReplicationSnapshotEnd,
  ReplicationSnapshotEndSchema,
} from "../../gen/orchestrator/v1/peer_pb.js";
import { type ServiceEntry, ServiceEntrySchema } from "../../gen/orchestrator/v1/registry_pb.js";

/**
 * Decodes a ReplicateResponse as `fromBinary(ReplicateResponseSchema, bytes, { readUnknownFields:
 * false })` does, to the same message, for the one stream that carries thousands of them: a new
 * node pulls every entry of its peer through it. protobuf-es' reflective reader builds each
 * message through its descriptors, which a process that has just started runs unoptimized: a
 * snapshot of 10,000 entries cost ~20 µs an entry to decode, a good part of a catch-up. Here each
 * message is an object literal, each field a case of a switch, tags are read without an array
 * each and strings by Node's native UTF-8 decoder; field numbers come from the descriptors, and a
 * test decodes every field, repeated and unknown fields, and truncated and malformed input both
 * ways and compares. Unknown fields are skipped; strings must be valid UTF-8 (proto3).
 * @throws Error when the bytes are not a valid encoding (protobuf-es' own errors, mostly).
 */
export function decodeReplicateResponse(bytes: Uint8Array): ReplicateResponse {
  const wire: Wire = {
    reader: new BinaryReader(bytes),
    text: Buffer.isBuffer(bytes)
      ? bytes
      : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
  };
  return readResponse(wire, bytes.byteLength);
}

/** The bytes being read: protobuf-es' reader for numbers, and a Buffer over them for text. */
interface Wire {
  readonly reader: BinaryReader;
  readonly text: Buffer;
}

/**
 * The next tag, checked as protobuf-es' `BinaryReader.tag()` checks it, without the array it
 * returns: `tag >>> 3` is the field number, `tag & 7` the wire type.
 */
function readTag(wire: Wire): number {
  const start = wire.reader.pos;
  const tag = wire.reader.uint32();
  const length = wire.reader.pos - start;
  if (length > 5 || (length === 5 && (wire.text[wire.reader.pos - 1] as number) > 0x0f)) {
    throw new Error("illegal tag: varint overflows uint32");
  }
  const fieldNo = tag >>> 3;
  const wireType = tag & 7;
  if (fieldNo <= 0 || wireType > 5) {
    throw new Error(`illegal tag: field no ${fieldNo} wire type ${wireType}`);
  }
  return tag;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * A string field: valid UTF-8 only (proto3), a leading U+FEFF kept, as protobuf-es reads it. Node
 * decodes it natively; the strict decoder is asked only when the text holds a replacement
 * character, which is how invalid bytes show (or a genuine U+FFFD).
 */
function readString({ reader, text }: Wire): string {
  const length = reader.uint32();
  const start = reader.pos;
  reader.pos += length;
  if (reader.pos > reader.len) throw new RangeError("premature EOF");
  const value = text.toString("utf8", start, reader.pos);
  if (value.includes("\uFFFD")) return strictUtf8.decode(text.subarray(start, reader.pos));
  return value;
}

function skip({ reader }: Wire, tag: number, depth: number): void {
  reader.skip(tag & 7, tag >>> 3, recursionLimit - depth);
}

/** The field numbers of a message, by local name, from its descriptor. */
function numbersOf<Name extends string>(
  schema: DescMessage,
  names: readonly Name[],
): Record<Name, number> {
  const numbers = {} as Record<Name, number>;
  for (const name of names) {
    const field = schema.fields.find((f) => f.localName === name);
    if (field === undefined) throw new Error(`${schema.typeName} has no field ${name}`);
    numbers[name] = field.number;
  }
  return numbers;
}

const responseFields = numbersOf(ReplicateResponseSchema, [
  "hello",
  "change",
  "snapshotEnd",
  "keepalive",
]);
const helloFields = numbersOf(ReplicationHelloSchema, [
  "nodeId",
  "incarnationId",
  "revision",
  "snapshot",
]);
const changeFields = numbersOf(ReplicatedEntrySchema, ["entry", "deleted", "revision"]);
const snapshotEndFields = numbersOf(ReplicationSnapshotEndSchema, ["revision"]);
const keepaliveFields = numbersOf(ReplicationKeepaliveSchema, ["revision", "timestamp"]);
const entryFields = numbersOf(ServiceEntrySchema, [
  "name",
  "baseUrl",
  "openapiUrl",
  "healthUrl",
  "endpoints",
  "metadata",
  "tags",
  "version",
  "ttlSeconds",
  "status",
  "registeredAt",
  "lastHeartbeat",
  "updatedAt",
  "revision",
  "leaseExpiresAt",
  "originNodeId",
  "hlc",
]);
// google.protobuf.Timestamp is fixed: seconds = 1, nanos = 2.

/** protobuf-es' default: how deep unknown groups may nest below the message being read. */
const recursionLimit = 100;

type Event = ReplicateResponse["event"];

function readResponse(wire: Wire, length: number): ReplicateResponse {
  const end = wire.reader.pos + length;
  let event: Event = { case: undefined };
  while (wire.reader.pos < end) {
    const tag = readTag(wire);
    switch (tag >>> 3) {
      case responseFields.change: {
        // A message field seen again is merged into what came before, as protobuf-es does.
        const into: ReplicatedEntry | undefined = event.case === "change" ? event.value : undefined;
        event = { case: "change", value: readChange(wire, wire.reader.uint32(), 2, into) };
        break;
      }
      case responseFields.hello: {
        const into: ReplicationHello | undefined = event.case === "hello" ? event.value : undefined;
        event = { case: "hello", value: readHello(wire, wire.reader.uint32(), 2, into) };
        break;
      }
      case responseFields.snapshotEnd: {
        const into: ReplicationSnapshotEnd | undefined =
          event.case === "snapshotEnd" ? event.value : undefined;
        event = {
          case: "snapshotEnd",
          value: readSnapshotEnd(wire, wire.reader.uint32(), 2, into),
        };
        break;
      }
      case responseFields.keepalive: {
        const into: ReplicationKeepalive | undefined =
          event.case === "keepalive" ? event.value : undefined;
        event = { case: "keepalive", value: readKeepalive(wire, wire.reader.uint32(), 2, into) };
        break;
      }
      default:
        skip(wire, tag, 1);
    }
  }
  return { $typeName: "orchestrator.v1.ReplicateResponse", event };
}

function readChange(
  wire: Wire,
  length: number,
  depth: number,
  into: ReplicatedEntry | undefined,
): ReplicatedEntry {
  const change: ReplicatedEntry = into ?? {
    $typeName: "orchestrator.v1.ReplicatedEntry",
    deleted: false,
    revision: 0n,
  };
  const end = wire.reader.pos + length;
  while (wire.reader.pos < end) {
    const tag = readTag(wire);
    switch (tag >>> 3) {
      case changeFields.entry:
        change.entry = readEntry(wire, wire.reader.uint32(), depth + 1, change.entry);
        break;
      case changeFields.deleted:
        change.deleted = wire.reader.bool();
        break;
      case changeFields.revision:
        change.revision = wire.reader.uint64() as bigint;
        break;
      default:
        skip(wire, tag, depth);
    }
  }
  return change;
}

function readEntry(
  wire: Wire,
  length: number,
  depth: number,
  into: ServiceEntry | undefined,
): ServiceEntry {
  const entry: ServiceEntry = into ?? {
    $typeName: "orchestrator.v1.ServiceEntry",
    name: "",
    baseUrl: "",
    openapiUrl: "",
    healthUrl: "",
    endpoints: [],
    metadata: {},
    tags: [],
    version: "",
    ttlSeconds: 0,
    status: 0,
    revision: 0n,
    originNodeId: "",
    hlc: 0n,
  };
  const end = wire.reader.pos + length;
  while (wire.reader.pos < end) {
    const tag = readTag(wire);
    switch (tag >>> 3) {
      case entryFields.name:
        entry.name = readString(wire);
        break;
      case entryFields.baseUrl:
        entry.baseUrl = readString(wire);
        break;
      case entryFields.openapiUrl:
        entry.openapiUrl = readString(wire);
        break;
      case entryFields.healthUrl:
        entry.healthUrl = readString(wire);
        break;
      case entryFields.endpoints:
        entry.endpoints.push(readString(wire));
        break;
      case entryFields.metadata:
        readMetadataPair(wire, depth, entry.metadata);
        break;
      case entryFields.tags:
        entry.tags.push(readString(wire));
        break;
      case entryFields.version:
        entry.version = readString(wire);
        break;
      case entryFields.ttlSeconds:
        entry.ttlSeconds = wire.reader.uint32();
        break;
      case entryFields.status:
        entry.status = wire.reader.int32();
        break;
      case entryFields.registeredAt:
        entry.registeredAt = readTimestamp(
          wire,
          wire.reader.uint32(),
          depth + 1,
          entry.registeredAt,
        );
        break;
      case entryFields.lastHeartbeat:
        entry.lastHeartbeat = readTimestamp(
          wire,
          wire.reader.uint32(),
          depth + 1,
          entry.lastHeartbeat,
        );
        break;
      case entryFields.updatedAt:
        entry.updatedAt = readTimestamp(wire, wire.reader.uint32(), depth + 1, entry.updatedAt);
        break;
      case entryFields.revision:
        entry.revision = wire.reader.uint64() as bigint;
        break;
      case entryFields.leaseExpiresAt:
        entry.leaseExpiresAt = readTimestamp(
          wire,
          wire.reader.uint32(),
          depth + 1,
          entry.leaseExpiresAt,
        );
        break;
      case entryFields.originNodeId:
        entry.originNodeId = readString(wire);
        break;
      case entryFields.hlc:
        entry.hlc = wire.reader.uint64() as bigint;
        break;
      default:
        skip(wire, tag, depth);
    }
  }
  return entry;
}

/**
 * One `map<string, string>` entry (key 1, value 2, each "" when absent; a later key wins), read at
 * the depth of the message that holds the map.
 */
function readMetadataPair(wire: Wire, depth: number, into: Record<string, string>) {
  let key = "";
  let value = "";
  const end = wire.reader.uint32() + wire.reader.pos;
  while (wire.reader.pos < end) {
    const tag = readTag(wire);
    if (tag >>> 3 === 1) key = readString(wire);
    else if (tag >>> 3 === 2) value = readString(wire);
    else skip(wire, tag, depth);
  }
  // "__proto__" is a key like any other (protobuf-es sets it as an own property too).
  if (key === "__proto__") {
    Object.defineProperty(into, key, {
      value,
      enumerable: true,
      configurable: true,
      writable: true,
    });
  } else {
    into[key] = value;
  }
}

function readTimestamp(
  wire: Wire,
  length: number,
  depth: number,
  into: Timestamp | undefined,
): Timestamp {
  const timestamp: Timestamp = into ?? {
    $typeName: "google.protobuf.Timestamp",
    seconds: 0n,
    nanos: 0,
  };
  const end = wire.reader.pos + length;
  while (wire.reader.pos < end) {
    const tag = readTag(wire);
    if (tag >>> 3 === 1) timestamp.seconds = wire.reader.int64() as bigint;
    else if (tag >>> 3 === 2) timestamp.nanos = wire.reader.int32();
    else skip(wire, tag, depth);
  }
  return timestamp;
}

function readHello(
  wire: Wire,
  length: number,
  depth: number,
  into: ReplicationHello | undefined,
): ReplicationHello {
  const hello: ReplicationHello = into ?? {
    $typeName: "orchestrator.v1.ReplicationHello",
    nodeId: "",
    incarnationId: "",
    revision: 0n,
    snapshot: false,
  };
  const end = wire.reader.pos + length;
  while (wire.reader.pos < end) {
    const tag = readTag(wire);
    switch (tag >>> 3) {
      case helloFields.nodeId:
        hello.nodeId = readString(wire);
        break;
      case helloFields.incarnationId:
        hello.incarnationId = readString(wire);
        break;
      case helloFields.revision:
        hello.revision = wire.reader.uint64() as bigint;
        break;
      case helloFields.snapshot:
        hello.snapshot = wire.reader.bool();
        break;
      default:
        skip(wire, tag, depth);
    }
  }
  return hello;
}

function readSnapshotEnd(
  wire: Wire,
  length: number,
  depth: number,
  into: ReplicationSnapshotEnd | undefined,
): ReplicationSnapshotEnd {
  const snapshotEnd: ReplicationSnapshotEnd = into ?? {
    $typeName: "orchestrator.v1.ReplicationSnapshotEnd",
    revision: 0n,
  };
  const end = wire.reader.pos + length;
  while (wire.reader.pos < end) {
    const tag = readTag(wire);
    if (tag >>> 3 === snapshotEndFields.revision)
      snapshotEnd.revision = wire.reader.uint64() as bigint;
    else skip(wire, tag, depth);
  }
  return snapshotEnd;
}

function readKeepalive(
  wire: Wire,
  length: number,
  depth: number,
  into: ReplicationKeepalive | undefined,
): ReplicationKeepalive {
  const keepalive: ReplicationKeepalive = into ?? {
    $typeName: "orchestrator.v1.ReplicationKeepalive",
    revision: 0n,
  };
  const end = wire.reader.pos + length;
  while (wire.reader.pos < end) {
    const tag = readTag(wire);
    switch (tag >>> 3) {
      case keepaliveFields.revision:
        keepalive.revision = wire.reader.uint64() as bigint;
        break;
      case keepaliveFields.timestamp:
        keepalive.timestamp = readTimestamp(
          wire,
          wire.reader.uint32(),
          depth + 1,
          keepalive.timestamp,
        );
        break;
      default:
        skip(wire, tag, depth);
    }
  }
  return keepalive;
}
