import { randomUUID } from "node:crypto";
import {
  type DescField,
  type DescMessage,
  type JsonObject,
  type Message,
  toBinary,
  toJson,
} from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";

/**
 * Messages that never change once built, whose encodings are computed once and then reused by
 * every response of the gRPC fast path (binary) and the REST gateway (JSON) that carries them: a
 * registry entry appears in every listing and every watch event, and encoding it anew each time
 * was most of what a listing of ten thousand entries cost. Only messages handed to
 * {@link sealMessage} are cached, and they must not be mutated afterwards. Caches are looked up
 * only in the fields outside oneofs of the response itself and of sealed messages: a sealed message
 * anywhere else is encoded anew, as the entries peers exchange are (each in a ReplicatedEntry,
 * which is never sealed, in a oneof of ReplicateResponse or a list of GetEntriesResponse).
 */
// The caches live on the messages themselves, under symbols that protobuf-es never looks at (it
// reads messages field by field): WeakMaps and WeakSets cost more per fresh message than the
// encoding they would save on a single use. Each encoding has one slot: absent, then `seen` once
// the message went out in a response (see sealedValues), then the encoding itself.
const sealedKey = Symbol("sealed");
const binaryKey = Symbol("binary");
const jsonKey = Symbol("json");
const seen = Symbol("seen");

interface Sealed {
  [sealedKey]?: true;
  [binaryKey]?: Uint8Array | typeof seen;
  [jsonKey]?: string | typeof seen;
}

const isSealed = (message: Message): boolean => (message as Sealed)[sealedKey] === true;

/** Promises that `message` will never change, so that its encodings may be cached. */
export function sealMessage<T extends Message>(message: T): T {
  (message as Sealed)[sealedKey] = true;
  return message;
}

/**
 * Proto field names (snake_case) and fields at their defaults, as every REST response and error
 * body has. The JSON cached here is written with them, so everything else REST writes must be too.
 */
export const jsonWriteOptions = Object.freeze({
  useProtoFieldName: true,
  alwaysEmitImplicit: true,
});

/** Fields (outside oneofs) that hold messages: the only ones whose values may be sealed. */
const messageFieldsOf = new WeakMap<DescMessage, readonly DescField[]>();

function messageFields(schema: DescMessage): readonly DescField[] {
  let fields = messageFieldsOf.get(schema);
  if (fields === undefined) {
    fields = schema.fields.filter(
      (f) =>
        f.oneof === undefined &&
        (f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")),
    );
    messageFieldsOf.set(schema, fields);
  }
  return fields;
}

type CacheKey = typeof binaryKey | typeof jsonKey;

/**
 * The values of `field` in `message` when every one of them is sealed (at least one) and worth
 * taking from a cache. A value is cached from its second encoding on: a message encoded once (the
 * entry a registration returns) is encoded whole, as cheaply as protobuf-es can, while one that
 * goes out again (in listings, to every watcher) is encoded once more and then never again.
 */
function sealedValues(
  message: Message,
  field: DescField,
  cacheKey: CacheKey,
): readonly Message[] | undefined {
  const value = (message as unknown as Record<string, unknown>)[field.localName];
  const values = (
    field.fieldKind === "list" ? value : value === undefined ? [] : [value]
  ) as Message[];
  if (values.length === 0) return undefined;
  let worth = true;
  for (const v of values) {
    if (!isSealed(v)) return undefined;
    const cache = v as Sealed;
    if (cache[cacheKey] === undefined) {
      cache[cacheKey] = seen;
      worth = false;
    }
  }
  return worth ? values : undefined;
}

/**
 * The fields of `message` whose values are all sealed and worth caching, with their values;
 * undefined when there are none (nothing is allocated then).
 */
function sealedFields(
  schema: DescMessage,
  message: Message,
  cacheKey: CacheKey,
): [DescField, readonly Message[]][] | undefined {
  let found: [DescField, readonly Message[]][] | undefined;
  for (const field of messageFields(schema)) {
    const values = sealedValues(message, field, cacheKey);
    if (values === undefined) continue;
    found ??= [];
    found.push([field, values]);
  }
  return found;
}

/** A shallow copy of `message` with the given fields cleared. */
function without(message: Message, fields: readonly [DescField, unknown][]): Message {
  const copy = Object.assign(Object.create(Object.getPrototypeOf(message) as object), message);
  for (const [field] of fields) {
    (copy as Record<string, unknown>)[field.localName] =
      field.fieldKind === "list" ? [] : undefined;
  }
  return copy as Message;
}

/**
 * The protobuf binary encoding of `message`, reusing the cached encodings of sealed messages it
 * carries. The sealed fields are written after the others: the wire order of fields is free, and
 * repeated values keep their order.
 */
export function encodeBinary(schema: DescMessage, message: Message): Uint8Array {
  if (!isSealed(message)) return encodeCarried(schema, message);
  const cache = message as Sealed;
  const cached = cache[binaryKey];
  if (cached !== undefined && cached !== seen) return cached;
  const encoded = encodeCarried(schema, message);
  cache[binaryKey] = encoded;
  return encoded;
}

/** `message`'s own fields by protobuf-es, then its sealed fields from their caches. */
function encodeCarried(schema: DescMessage, message: Message): Uint8Array {
  const fields = sealedFields(schema, message, binaryKey);
  if (fields === undefined) return toBinary(schema, message);
  // The parts are already encoded: only the framing of the sealed fields is added.
  const writer = new BinaryWriter().raw(toBinary(schema, without(message, fields)));
  for (const [field, values] of fields) {
    const child = field.message as DescMessage;
    for (const value of values) {
      writer.tag(field.number, WireType.LengthDelimited).bytes(encodeBinary(child, value));
    }
  }
  return writer.finish();
}

/**
 * The JSON text of `message` as REST responses write it ({@link jsonWriteOptions}), reusing the
 * cached JSON of sealed messages it carries.
 */
export function encodeJsonText(schema: DescMessage, message: Message): string {
  if (!isSealed(message)) return jsonCarried(schema, message);
  const cache = message as Sealed;
  const cached = cache[jsonKey];
  if (cached !== undefined && cached !== seen) return cached;
  const encoded = jsonCarried(schema, message);
  cache[jsonKey] = encoded;
  return encoded;
}

function jsonCarried(schema: DescMessage, message: Message): string {
  const fields = sealedFields(schema, message, jsonKey);
  if (fields === undefined) return JSON.stringify(toJson(schema, message, jsonWriteOptions));
  const json = toJson(schema, without(message, fields), jsonWriteOptions) as JsonObject;
  // Each sealed field gets a placeholder where toJson put the field, so that keys keep their order;
  // the placeholder's quoted text is then replaced by the cached JSON.
  const texts = new Map<string, string>();
  fields.forEach(([field, values], i) => {
    const child = field.message as DescMessage;
    const encoded = values.map((value) => encodeJsonText(child, value));
    const placeholder = `${placeholderPrefix}${i}`;
    json[field.name] = placeholder; // field.name: the JSON has proto field names
    texts.set(
      JSON.stringify(placeholder),
      field.fieldKind === "list" ? `[${encoded.join(",")}]` : (encoded[0] as string),
    );
  });
  let text = JSON.stringify(json);
  for (const [quoted, encoded] of texts) text = text.replace(quoted, () => encoded);
  return text;
}

// Unguessable per process, so that no string a client stored can pass for a placeholder.
const placeholderPrefix = `sealed:${randomUUID()}:`;
