import { randomUUID } from "node:crypto";
import {
  type DescField,
  type DescMessage,
  type Message,
  toBinary,
  toJson,
} from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";

/**
 * Messages that never change once built, whose encodings are computed once and then reused by
 * every response that carries them: a registry entry appears in every listing, every watch event
 * and every peer's snapshot, and encoding it anew each time was most of what a listing of ten
 * thousand entries cost. Only messages handed to {@link sealMessage} are cached, and they must not
 * be mutated afterwards.
 */
// The caches live on the messages themselves, under symbols that protobuf-es never looks at (it
// reads messages field by field): WeakMaps and WeakSets cost more per fresh message than the
// encoding they would save on a single use.
const sealedKey = Symbol("sealed");
const binaryKey = Symbol("binary");
const jsonKey = Symbol("json");
const binarySeenKey = Symbol("binary seen");
const jsonSeenKey = Symbol("json seen");

interface Sealed {
  [sealedKey]?: true;
  [binaryKey]?: Uint8Array;
  [jsonKey]?: string;
  [binarySeenKey]?: true;
  [jsonSeenKey]?: true;
}

const isSealed = (message: Message): boolean => (message as Sealed)[sealedKey] === true;

/** Promises that `message` will never change, so that its encodings may be cached. */
export function sealMessage<T extends Message>(message: T): T {
  (message as Sealed)[sealedKey] = true;
  return message;
}

/** Proto field names and fields at their defaults, as every REST response has. */
const jsonOptions = Object.freeze({ useProtoFieldName: true, alwaysEmitImplicit: true });

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
type SeenKey = typeof binarySeenKey | typeof jsonSeenKey;

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
  seenKey: SeenKey,
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
    if (cache[cacheKey] === undefined && cache[seenKey] === undefined) {
      cache[seenKey] = true;
      worth = false;
    }
  }
  return worth ? values : undefined;
}

/** The fields of `message` whose values are all sealed and worth caching, with their values. */
function sealedFields(
  schema: DescMessage,
  message: Message,
  cacheKey: CacheKey,
  seenKey: SeenKey,
): [DescField, readonly Message[]][] {
  const found: [DescField, readonly Message[]][] = [];
  for (const field of messageFields(schema)) {
    const values = sealedValues(message, field, cacheKey, seenKey);
    if (values !== undefined) found.push([field, values]);
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
  cache[binaryKey] ??= encodeCarried(schema, message);
  return cache[binaryKey];
}

/** `message`'s own fields by protobuf-es, then its sealed fields from their caches. */
function encodeCarried(schema: DescMessage, message: Message): Uint8Array {
  const fields = sealedFields(schema, message, binaryKey, binarySeenKey);
  if (fields.length === 0) return toBinary(schema, message);
  // Sized once and filled in place: the parts are already encoded, only framing is added.
  const parts: Uint8Array[] = [toBinary(schema, without(message, fields))];
  let size = parts[0]?.length ?? 0;
  for (const [field, values] of fields) {
    const child = field.message as DescMessage;
    const tag = varint((field.number << 3) | WireType.LengthDelimited);
    for (const value of values) {
      const bytes = encodeBinary(child, value);
      const length = varint(bytes.length);
      parts.push(tag, length, bytes);
      size += tag.length + length.length + bytes.length;
    }
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function varint(value: number): Uint8Array {
  const bytes: number[] = [];
  let rest = value;
  while (rest > 0x7f) {
    bytes.push((rest & 0x7f) | 0x80);
    rest >>>= 7;
  }
  bytes.push(rest);
  return Uint8Array.from(bytes);
}

/**
 * The JSON text of `message` as REST responses write it (proto field names, defaults included),
 * reusing the cached JSON of sealed messages it carries.
 */
export function encodeJsonText(schema: DescMessage, message: Message): string {
  if (!isSealed(message)) return jsonCarried(schema, message);
  const cache = message as Sealed;
  cache[jsonKey] ??= jsonCarried(schema, message);
  return cache[jsonKey];
}

function jsonCarried(schema: DescMessage, message: Message): string {
  const fields = sealedFields(schema, message, jsonKey, jsonSeenKey);
  if (fields.length === 0) return JSON.stringify(toJson(schema, message, jsonOptions));
  const json = toJson(schema, without(message, fields), jsonOptions) as Record<string, unknown>;
  // Each sealed field gets a placeholder where toJson put the field, so that keys keep their order;
  // the placeholder's quoted text is then replaced by the cached JSON.
  const texts = new Map<string, string>();
  fields.forEach(([field, values], i) => {
    const child = field.message as DescMessage;
    const encoded = values.map((value) => encodeJsonText(child, value));
    const placeholder = `${placeholderPrefix}${i}`;
    json[field.name] = placeholder;
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
