// Generators of hostile requests, derived from protobuf descriptors at run time: a new RPC, field
// or route is covered without editing a test. Two families: JSON in the proto3 JSON shape of a
// message, with boundary values (valid in type, not in content), and the same spoiled (wrong
// types, unknown fields, bad enums, deep nesting, duplicate keys, huge lists and maps).
import {
  type DescField,
  type DescMessage,
  fromJson,
  getOption,
  hasOption,
  type JsonValue,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";
import fc from "fast-check";
import { type FieldRules, field as fieldRules } from "../../gen/orchestrator/v1/options_pb.js";

/**
 * Strings longer than this that a request carried must never come back in an error: that would be
 * an echo of unbounded input.
 */
export const echoThreshold = 256;

/** JSON text inserted as is by {@link jsonText}: deep nesting, numbers JSON.stringify cannot write. */
export class RawJson {
  constructor(readonly text: string) {}
}

/** An object whose keys may repeat, as JSON text can say and a JS object cannot. */
export class DuplicateKeys {
  constructor(readonly entries: readonly (readonly [string, unknown])[]) {}
}

/** A generated JSON value, which may hold {@link RawJson} and {@link DuplicateKeys} anywhere. */
export type HostileJson = unknown;

/**
 * The JSON text of a generated value. Iterative over the generated structure only (that is at most
 * a few levels deep); the deep nesting lives in {@link RawJson} texts, never built recursively.
 */
export function jsonText(value: HostileJson): string {
  if (value instanceof RawJson) return value.text;
  if (value instanceof DuplicateKeys) {
    return `{${value.entries.map(([k, v]) => `${JSON.stringify(k)}:${jsonText(v)}`).join(",")}}`;
  }
  if (Array.isArray(value)) return `[${value.map(jsonText).join(",")}]`;
  if (typeof value === "object" && value !== null) {
    const entries = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}:${jsonText(v)}`);
    return `{${entries.join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** Every string of a generated value longer than {@link echoThreshold}, keys included. */
export function longStringsIn(value: HostileJson, found: string[] = []): string[] {
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const item = pending.pop();
    if (typeof item === "string") {
      if (item.length > echoThreshold) found.push(item);
    } else if (item instanceof DuplicateKeys) {
      for (const [k, v] of item.entries) pending.push(k, v);
    } else if (Array.isArray(item)) {
      pending.push(...item);
    } else if (typeof item === "object" && item !== null && !(item instanceof RawJson)) {
      for (const [k, v] of Object.entries(item)) pending.push(k, v);
    }
  }
  return found;
}

/**
 * Whether `text` repeats one of `strings`: its first echoThreshold + 1 characters, as sent or as
 * JSON escapes them. A bounded message may quote the start of an input (64 characters); more than
 * the threshold is an echo.
 */
export function echoedIn(text: string, strings: readonly string[]): string | undefined {
  for (const s of strings) {
    const head = s.slice(0, echoThreshold + 1);
    if (text.includes(head) || text.includes(JSON.stringify(head).slice(1, -1))) return s;
  }
  return undefined;
}

const longLengths = [101, 257, 513, 1025, 4097, 70_000] as const;

/** A long string with a random head (so an echo of it is recognised), of a boundary length. */
export const longString: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom(...longLengths), fc.uuid(), fc.constantFrom("a", "é", "\u0000", "😀"))
  .map(([length, head, fill]) => `${head}${fill.repeat(length)}`.slice(0, length));

/** Strings at the edges: empty, names that exist, NUL, lone surrogates, paths, long ones. */
export const boundaryString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "",
    " ",
    "svc-a",
    "billing",
    "http://127.0.0.1:9/x",
    "\u0000",
    "\uD800",
    "a\uDC00b",
    "../..",
    "%00",
    "watch",
    "__proto__",
    "constructor",
    "1970-01-01T00:00:00Z",
  ),
  fc.string({ maxLength: 40, unit: "binary" }),
  fc.string({ maxLength: 20, unit: "grapheme" }),
  longString,
);

const int64Text = fc.oneof(
  fc.constantFrom("0", "-1", "9223372036854775807", "-9223372036854775808"),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String),
);
const uint64Text = fc.oneof(
  fc.constantFrom("0", "1", "18446744073709551615"),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map(String),
);

/** A value of a scalar type in its proto3 JSON form, at or near the type's edges. */
function scalarJson(type: ScalarType): fc.Arbitrary<JsonValue> {
  switch (type) {
    case ScalarType.STRING:
      return boundaryString;
    case ScalarType.BYTES:
      return fc
        .oneof(fc.uint8Array({ maxLength: 64 }), fc.constant(new Uint8Array(4096)))
        .map((bytes) => Buffer.from(bytes).toString("base64"));
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.DOUBLE:
      return fc.oneof(
        fc.double({ noNaN: true, noDefaultInfinity: true }),
        fc.constantFrom("NaN", "Infinity", "-Infinity", 1e308, -1e308, 5e-324),
      );
    case ScalarType.FLOAT:
      return fc.oneof(
        fc.float({ noNaN: true, noDefaultInfinity: true }),
        fc.constantFrom("NaN", "Infinity", 3.4e38),
      );
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return int64Text;
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return uint64Text;
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return fc.oneof(fc.constantFrom(0, 1, 4294967295), fc.nat({ max: 4294967295 }));
    default:
      return fc.oneof(
        fc.constantFrom(0, -1, 1, 2147483647, -2147483648),
        fc.integer({ min: -2147483648, max: 2147483647 }),
      );
  }
}

/** A JSON value of any shape, a few levels deep. */
const anyJson: fc.Arbitrary<JsonValue> = fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<JsonValue>;

/** A value of a well-known type, or undefined when the type is not one the generators know. */
function wellKnownJson(message: DescMessage): fc.Arbitrary<JsonValue> | undefined {
  switch (message.typeName) {
    case "google.protobuf.Timestamp":
      return fc.oneof(
        fc
          .date({
            min: new Date("0001-01-01T00:00:00Z"),
            max: new Date("9999-12-31T23:59:59Z"),
            noInvalidDate: true,
          })
          .map((d) => d.toISOString()),
        fc.constantFrom("1970-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z"),
      );
    case "google.protobuf.Duration":
      return fc.constantFrom("0s", "1.5s", "-315576000000s", "315576000000s");
    case "google.protobuf.Struct":
      return fc.dictionary(fc.string({ maxLength: 12 }), anyJson, { maxKeys: 5 });
    case "google.protobuf.Value":
      return anyJson;
    case "google.protobuf.ListValue":
      return fc.array(anyJson, { maxLength: 5 });
    case "google.protobuf.Empty":
      return fc.constant({});
    default:
      return message.typeName.startsWith("google.protobuf.") ? fc.constant(null) : undefined;
  }
}

/** Huge lists and maps: far past any count limit, small items so that the body stays sendable. */
const hugeCounts = [1001, 10_001] as const;

/**
 * A list: a few items, or (at the top level only, so that sizes do not multiply) one small item
 * repeated past any count limit.
 */
function listJson(item: fc.Arbitrary<JsonValue>, depth: number): fc.Arbitrary<JsonValue> {
  if (depth > 0) return fc.array(item, { maxLength: 3 });
  return fc.oneof(
    { weight: 5, arbitrary: fc.array(item, { maxLength: 4 }) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(small(item), fc.constantFrom(...hugeCounts))
        .map(([value, count]) => Array.from({ length: count }, () => value)),
    },
  );
}

function mapKey(type: ScalarType): fc.Arbitrary<string> {
  switch (type) {
    case ScalarType.STRING:
      return boundaryString;
    case ScalarType.BOOL:
      return fc.constantFrom("true", "false");
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return int64Text;
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return uint64Text;
    default:
      return fc.integer({ min: 0, max: 2147483647 }).map(String);
  }
}

/** A map: a few entries, or (at the top level only) one small value under many keys. */
function mapJson(
  key: ScalarType,
  value: fc.Arbitrary<JsonValue>,
  depth: number,
): fc.Arbitrary<JsonValue> {
  if (depth > 0) return fc.dictionary(mapKey(key), value, { maxKeys: 3 });
  return fc.oneof(
    { weight: 5, arbitrary: fc.dictionary(mapKey(key), value, { maxKeys: 4 }) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(small(value), fc.constantFrom(...hugeCounts))
        .map(([v, count]) =>
          Object.fromEntries(
            Array.from({ length: count }, (_, i) => [key === ScalarType.STRING ? `k${i}` : i, v]),
          ),
        ),
    },
  );
}

/** Values whose JSON is short: what a huge list or map repeats. */
function small(value: fc.Arbitrary<JsonValue>): fc.Arbitrary<JsonValue> {
  return value.filter((v) => JSON.stringify(v).length <= 64);
}

/** How deep nested messages are generated; deeper fields are left unset. */
const maxMessageDepth = 3;

/** One field's value, in its JSON form. */
function fieldJson(field: DescField, depth: number): fc.Arbitrary<JsonValue> {
  const enumValue = (values: readonly { name: string; number: number }[]) =>
    fc.oneof(
      fc.constantFrom(...values.map((v) => v.name)),
      fc.constantFrom(...values.map((v) => v.number)),
    );
  switch (field.fieldKind) {
    case "scalar":
      return scalarJson(field.scalar);
    case "enum":
      return enumValue(field.enum.values);
    case "message":
      return messageJson(field.message, depth + 1);
    case "list":
      return listJson(
        field.listKind === "scalar"
          ? scalarJson(field.scalar)
          : field.listKind === "enum"
            ? enumValue(field.enum.values)
            : messageJson(field.message, depth + 1),
        depth,
      );
    case "map":
      return mapJson(
        field.mapKey,
        field.mapKind === "scalar"
          ? scalarJson(field.scalar)
          : field.mapKind === "enum"
            ? enumValue(field.enum.values)
            : messageJson(field.message, depth + 1),
        depth,
      );
  }
}

const messageArbitraries = new Map<string, fc.Arbitrary<JsonValue>>();

/**
 * A message in its proto3 JSON form: any subset of its fields (at most one per oneof), each with a
 * boundary value of its type. Type-correct, so most of these decode; whether they are valid is
 * the server's to say.
 */
export function messageJson(message: DescMessage, depth = 0): fc.Arbitrary<JsonValue> {
  const known = wellKnownJson(message);
  if (known !== undefined) return known;
  if (depth > maxMessageDepth) return fc.constant({});
  const cacheKey = `${message.typeName}@${depth}`;
  const cached = messageArbitraries.get(cacheKey);
  if (cached !== undefined) return cached;
  const plain = message.fields.filter((f) => f.oneof === undefined);
  const record: Record<string, fc.Arbitrary<JsonValue>> = {};
  for (const field of plain) record[field.name] = fieldJson(field, depth);
  const oneofs = message.oneofs.map((oneof) =>
    fc.option(
      fc.oneof(
        ...oneof.fields.map((f) => fieldJson(f, depth).map((value) => [f.name, value] as const)),
      ),
      { nil: undefined },
    ),
  );
  const arbitrary = fc
    .tuple(fc.record(record, { requiredKeys: [] }), fc.tuple(...oneofs))
    .map(([fields, chosen]) => {
      const json = { ...fields } as Record<string, JsonValue>;
      for (const pick of chosen) if (pick !== undefined) json[pick[0]] = pick[1];
      return json as JsonValue;
    });
  messageArbitraries.set(cacheKey, arbitrary);
  return arbitrary;
}

/** JSON nested `depth` levels deep, as text: arrays, objects, or both. */
export const deepJson: fc.Arbitrary<RawJson> = fc
  .tuple(fc.constantFrom(64, 1000, 10_000, 100_000), fc.constantFrom("array", "object"))
  .map(([depth, kind]) =>
    kind === "array"
      ? new RawJson(`${"[".repeat(depth)}${"]".repeat(depth)}`)
      : new RawJson(`${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`),
  );

/** A value of the wrong JSON type for most fields, or out of every range. */
const wrongValue: fc.Arbitrary<HostileJson> = fc.oneof(
  fc.constantFrom(
    null,
    true,
    -1,
    1.5,
    "",
    [],
    {},
    "NOT_A_VALUE",
    2 ** 31,
    -(2 ** 31) - 1,
    2 ** 64,
    "99999999999999999999999",
    "-9223372036854775809",
    "18446744073709551616",
    "0x10",
    "1e3",
    { "@type": "type.googleapis.com/x" },
  ),
  fc.constantFrom(new RawJson("1e400"), new RawJson("-0"), new RawJson("123456789012345678901234")),
  anyJson,
  deepJson,
  longString,
);

/**
 * A message spoiled one way: a field of the wrong type, an unknown field, a bad enum value,
 * duplicate keys, or deep nesting, on top of {@link messageJson}.
 */
export function hostileMessageJson(message: DescMessage): fc.Arbitrary<HostileJson> {
  const names = message.fields.map((f) => f.name);
  const fieldName =
    names.length === 0
      ? fc.string({ maxLength: 12 })
      : fc.constantFrom(...names, ...jsonNames(message));
  const base = messageJson(message).map((json) => json as Record<string, HostileJson>);
  return fc.oneof(
    base,
    fc
      .tuple(base, fieldName, wrongValue)
      .map(([json, name, value]) => ({ ...json, [name]: value })),
    fc
      .tuple(base, fc.oneof(fc.string({ maxLength: 20 }), longString), wrongValue)
      .map(([json, name, value]) => ({ ...json, [`x_${name}`]: value })),
    fc
      .tuple(base, fieldName, wrongValue)
      .map(
        ([json, name, value]) =>
          new DuplicateKeys([...Object.entries(json), [name, value], [name, value]]),
      ),
    deepJson,
    fc.constantFrom(null, [], "text", 1, true),
  );
}

function jsonNames(message: DescMessage): string[] {
  return message.fields
    .map((f) => f.jsonName)
    .filter((n) => !message.fields.some((f) => f.name === n));
}

/**
 * A message that decodes, as protobuf binary: the JSON of {@link messageJson} or
 * {@link plausibleMessageJson} through `fromJson`
 * and `toBinary`; the few generated values protobuf-es refuses (a float out of range) fall back to
 * the empty message.
 */
export function messageBinary(message: DescMessage): fc.Arbitrary<Uint8Array> {
  return fc.oneof(messageJson(message), plausibleMessageJson(message)).map((json) => {
    try {
      return toBinary(message, fromJson(message, json));
    } catch {
      return new Uint8Array(0);
    }
  });
}

/** Bytes that are rarely a valid message: random, truncated varints, huge length prefixes. */
export const garbageBytes: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 256 }),
  fc.constantFrom(
    Uint8Array.of(0xff),
    Uint8Array.of(0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f),
    Uint8Array.of(0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01),
    Uint8Array.of(0x0b),
    Uint8Array.of(0x0a, 0x05, 0x61),
  ),
);

/**
 * A message that keeps its fields' `(orchestrator.v1.field)` rules (required fields set, strings
 * within their lengths, patterns and `in` lists, numbers within bounds, lists within their
 * counts), at their edges: requests the server accepts, mostly, so that what lies behind
 * validation is reached too.
 */
export function plausibleMessageJson(message: DescMessage, depth = 0): fc.Arbitrary<JsonValue> {
  const known = wellKnownJson(message);
  if (known !== undefined) return known;
  if (depth > maxMessageDepth) return fc.constant({});
  const record: Record<string, fc.Arbitrary<JsonValue>> = {};
  const required: string[] = [];
  // One member per oneof at most: the first, which is as good as any for reaching code.
  const fields = message.fields.filter((f) => f.oneof === undefined || f.oneof.fields[0] === f);
  for (const field of fields) {
    const rules = hasOption(field, fieldRules) ? getOption(field, fieldRules) : undefined;
    if (rules?.required) required.push(field.name);
    record[field.name] = plausibleFieldJson(field, rules, depth);
  }
  return fc.record(record, { requiredKeys: required }) as fc.Arbitrary<JsonValue>;
}

function plausibleFieldJson(
  field: DescField,
  rules: FieldRules | undefined,
  depth: number,
): fc.Arbitrary<JsonValue> {
  const one = (): fc.Arbitrary<JsonValue> => {
    switch (field.fieldKind) {
      case "scalar":
        return plausibleScalar(field.scalar, rules);
      case "enum":
        return fc.constantFrom(
          ...field.enum.values.filter((v) => v.number !== 0).map((v) => v.name),
        );
      case "message":
        return plausibleMessageJson(field.message, depth + 1);
      default:
        return fc.constant(null);
    }
  };
  if (field.fieldKind === "list") {
    const item =
      field.listKind === "scalar"
        ? plausibleScalar(field.scalar, rules?.items)
        : field.listKind === "message"
          ? plausibleMessageJson(field.message, depth + 1)
          : fc.constantFrom(...field.enum.values.map((v) => v.name));
    return fc.array(item, {
      minLength: rules?.required ? 1 : 0,
      maxLength: Math.min(rules?.maxItems ?? 3, 3),
    });
  }
  if (field.fieldKind === "map") {
    const value =
      field.mapKind === "scalar"
        ? plausibleScalar(field.scalar, rules?.items)
        : field.mapKind === "message"
          ? plausibleMessageJson(field.message, depth + 1)
          : fc.constantFrom(...field.enum.values.map((v) => v.name));
    const key =
      field.mapKey === ScalarType.STRING
        ? plausibleScalar(ScalarType.STRING, rules?.keys)
        : mapKey(field.mapKey);
    return fc.dictionary(key.map(String), value, { maxKeys: Math.min(rules?.maxItems ?? 3, 3) });
  }
  return one();
}

function plausibleScalar(type: ScalarType, rules: FieldRules | undefined): fc.Arbitrary<JsonValue> {
  if (type === ScalarType.STRING) return plausibleString(rules);
  if (type === ScalarType.BOOL || type === ScalarType.BYTES) return scalarJson(type);
  const min = rules?.gte;
  const max = rules?.lte;
  if (min === undefined && max === undefined) return scalarJson(type);
  const isInteger = type !== ScalarType.DOUBLE && type !== ScalarType.FLOAT;
  const low = min ?? (max as number) - 1000;
  const high = max ?? low + 1000;
  const inside = isInteger
    ? fc.integer({ min: Math.ceil(low), max: Math.floor(high) })
    : fc.double({ min: low, max: high, noNaN: true });
  return fc.oneof(fc.constantFrom(low, high), inside);
}

function plausibleString(rules: FieldRules | undefined): fc.Arbitrary<JsonValue> {
  if (rules === undefined) return boundaryString;
  if (rules.in.length > 0) return fc.constantFrom(...rules.in);
  if (rules.httpUrl) return fc.constantFrom("http://127.0.0.1:9/x", "https://127.0.0.1:9/");
  const minLength = rules.minLen ?? (rules.required ? 1 : 0);
  const maxLength = rules.maxLen ?? 64;
  if (rules.pattern !== "") return matching(rules.pattern, minLength, maxLength);
  return fc.oneof(
    fc.string({ minLength, maxLength: Math.min(maxLength, 40), unit: "grapheme" }),
    fc.constant("x".repeat(maxLength)),
  );
}

/**
 * Strings that match a rule's pattern within its lengths; fast-check cannot generate from every
 * regular expression (lookaheads), and such a field gets boundary strings instead.
 */
function matching(pattern: string, minLength: number, maxLength: number): fc.Arbitrary<JsonValue> {
  try {
    return fc
      .stringMatching(new RegExp(pattern))
      .filter((text) => text.length >= minLength && text.length <= maxLength);
  } catch {
    return boundaryString;
  }
}
