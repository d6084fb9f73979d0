import {
  type DescEnum,
  type DescField,
  type DescMessage,
  fromJson,
  type JsonObject,
  type JsonValue,
  type Message,
  ScalarType,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { boundedMessage, maxQuotedInputLength, quotedInput } from "../server/bounded-message.js";
import type { PathTemplate } from "./path-template.js";

/** What an HTTP request carries for one RPC: router params, query and parsed JSON body. */
export interface RestRequestParts {
  readonly params: Readonly<Record<string, string | undefined>>;
  readonly query: Readonly<Record<string, string | string[] | undefined>>;
  /** The parsed JSON body, or undefined when there was none. */
  readonly body: unknown;
}

/** How one HTTP rule maps a request onto the RPC's input message. */
export interface RequestMapping {
  readonly input: DescMessage;
  readonly path: PathTemplate;
  /** "*" (the whole body is the message), a field name, or "" (no body). */
  readonly body: string;
}

/**
 * Builds the RPC's request message as google.api.http transcoding does: the body (or one field of
 * it), then query parameters for the fields the body does not carry, then path variables, which
 * win. Field names may be written in proto (snake_case) or JSON (camelCase) form.
 * @throws ConnectError INVALID_ARGUMENT naming what is wrong, never echoing unbounded input.
 */
export function requestMessageOf(mapping: RequestMapping, parts: RestRequestParts): Message {
  const json: JsonObject = {};
  applyBody(json, mapping, parts.body);
  applyQuery(json, mapping, parts.query);
  for (const [param, fieldPath] of mapping.path.variables) {
    const value = parts.params[param];
    if (value === undefined) continue;
    setPath(json, mapping.input, fieldPath, [value], `path variable ${fieldPath.join(".")}`);
  }
  try {
    return fromJson(mapping.input, json, { ignoreUnknownFields: false });
  } catch (error) {
    const said = error instanceof Error ? error.message : "request does not match its schema";
    throw invalid(fieldNamed(mapping.input, json, withKeyQuoted(said)));
  }
}

const unknownKeyMessage = /^(cannot decode .* from JSON: key )"(.*)"( is unknown)$/s;

/**
 * protobuf-es quotes an unknown key whole, however long: the key is quoted here as every piece of
 * input is, cut to a few dozen characters, so that an error never repeats a key the client made up.
 */
function withKeyQuoted(message: string): string {
  const parts = unknownKeyMessage.exec(message);
  if (parts === null) return message;
  return `${parts[1]}${quotedInput(parts[2] ?? "")}${parts[3]}`;
}

/**
 * Names the field protobuf-es did not: only on this failure path, so a valid request pays
 * nothing. An unknown enum name names the enum; a message-typed field that does not decode (a
 * timestamp) names its type.
 */
function fieldNamed(input: DescMessage, json: JsonObject, message: string): string {
  if (message.startsWith("cannot decode enum ")) {
    const field = unknownEnumField(input, json, 0);
    return field === undefined ? message : `${field}: ${message}`;
  }
  return withFieldNamed(input, json, message);
}

/**
 * protobuf-es names the field when a scalar does not decode, but not when a message-typed field
 * does ("cannot decode message google.protobuf.Timestamp from JSON: ..."): the field is found
 * here by decoding each message-typed field of the request alone, and named first.
 */
function withFieldNamed(input: DescMessage, json: JsonObject, message: string): string {
  if (!message.startsWith("cannot decode message ")) return message;
  for (const field of input.fields) {
    if (field.fieldKind !== "message") continue;
    const value = json[field.name] ?? json[field.jsonName];
    if (value === undefined) continue;
    try {
      fromJson(field.message, value, { ignoreUnknownFields: false });
    } catch {
      return `${field.name}: ${message}`;
    }
  }
  return message;
}

/** The path of the first enum field of `json` whose value is not one of its enum's, if any. */
function unknownEnumField(schema: DescMessage, json: unknown, depth: number): string | undefined {
  if (!isObject(json) || depth > 32) return undefined;
  for (const field of schema.fields) {
    const value = json[field.name] ?? json[field.jsonName];
    if (value === undefined || value === null) continue;
    const bad = unknownEnumIn(field, value, depth);
    if (bad !== undefined) return bad === "" ? field.name : `${field.name}.${bad}`;
  }
  return undefined;
}

/** "" when `value` itself is a bad enum value of `field`, a sub-path below it, or undefined. */
function unknownEnumIn(field: DescField, value: unknown, depth: number): string | undefined {
  const items = (): unknown[] =>
    field.fieldKind === "list" && Array.isArray(value)
      ? value
      : field.fieldKind === "map" && isObject(value)
        ? Object.values(value)
        : [value];
  const enumOf =
    field.fieldKind === "enum"
      ? field.enum
      : field.fieldKind === "list" && field.listKind === "enum"
        ? field.enum
        : field.fieldKind === "map" && field.mapKind === "enum"
          ? field.enum
          : undefined;
  if (enumOf !== undefined) return items().some((v) => !isEnumValue(enumOf, v)) ? "" : undefined;
  const message =
    field.fieldKind === "message" ||
    (field.fieldKind === "list" && field.listKind === "message") ||
    (field.fieldKind === "map" && field.mapKind === "message")
      ? field.message
      : undefined;
  // Well-known types have JSON forms of their own (a Struct is any JSON): nothing to look into.
  if (message === undefined || message.typeName.startsWith("google.protobuf.")) return undefined;
  for (const item of items()) {
    const bad = unknownEnumField(message, item, depth + 1);
    if (bad !== undefined) return bad;
  }
  return undefined;
}

function isEnumValue(desc: DescEnum, value: unknown): boolean {
  if (typeof value === "number") return Number.isInteger(value);
  return typeof value === "string" && desc.values.some((v) => v.name === value);
}

function applyBody(json: JsonObject, mapping: RequestMapping, body: unknown): void {
  if (body === undefined || body === null) return;
  if (mapping.body === "") {
    if (isObject(body) && Object.keys(body).length === 0) return;
    throw invalid("this endpoint takes no request body");
  }
  if (mapping.body === "*") {
    if (!isObject(body)) throw invalid("the request body must be a JSON object");
    Object.assign(json, body);
    return;
  }
  json[mapping.body] = body as JsonValue;
}

function applyQuery(
  json: JsonObject,
  mapping: RequestMapping,
  query: RestRequestParts["query"],
): void {
  for (const [key, raw] of Object.entries(query)) {
    if (raw === undefined) continue;
    if (mapping.body === "*") {
      throw invalid(
        `query parameter ${keyText(key)} is not accepted here: send fields in the JSON body`,
      );
    }
    const values = Array.isArray(raw) ? raw : [raw];
    setPath(json, mapping.input, key.split("."), values, `query parameter ${keyText(key)}`);
  }
}

/** Sets a (possibly nested) field from text values, converted to the JSON its type expects. */
function setPath(
  json: JsonObject,
  schema: DescMessage,
  path: readonly string[],
  values: readonly string[],
  what: string,
): void {
  let target = json;
  let message = schema;
  for (let i = 0; i < path.length; i++) {
    const name = path[i] as string;
    const field = findField(message, name);
    if (field === undefined) {
      throw invalid(`${what}: no field ${keyText(name)} in ${message.typeName}`);
    }
    delete target[field.jsonName];
    if (i === path.length - 1) {
      target[field.name] = jsonOfText(field, values, what);
      return;
    }
    if (field.fieldKind !== "message") throw invalid(`${what}: ${name} is not a message`);
    const next = target[field.name];
    const child: JsonObject = isObject(next) ? (next as JsonObject) : {};
    target[field.name] = child;
    target = child;
    message = field.message;
  }
}

/**
 * A query key (or a part of one) as a message names it: as written when short, else quoted and
 * cut, so that an error never repeats a long key the client made up.
 */
function keyText(key: string): string {
  return key.length <= maxQuotedInputLength ? key : quotedInput(key);
}

function findField(message: DescMessage, name: string): DescField | undefined {
  return message.fields.find((f) => f.name === name || f.jsonName === name);
}

function jsonOfText(field: DescField, values: readonly string[], what: string): JsonValue {
  switch (field.fieldKind) {
    case "list":
      return values.map((v) =>
        field.listKind === "scalar"
          ? scalarJson(field.scalar, v, what)
          : field.listKind === "enum"
            ? enumJson(field.enum, v, what)
            : v,
      );
    case "map":
      throw invalid(`${what}: maps cannot be set from the query string`);
    default: {
      if (values.length !== 1) throw invalid(`${what}: a single value is expected`);
      const value = values[0] as string;
      if (field.fieldKind === "scalar") return scalarJson(field.scalar, value, what);
      if (field.fieldKind === "enum") return enumJson(field.enum, value, what);
      return value; // well-known types written as JSON strings: Timestamp, Duration, wrappers
    }
  }
}

// Query text is decimal: protobuf-es reads number strings with Number(), which would also take
// "0x10", "0b1", "0o7" and "1e1" for an integer.
const decimalInteger = /^[+-]?\d+$/;
const decimalNumber = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const namedFloats = new Set(["NaN", "Infinity", "-Infinity"]);

function scalarJson(type: ScalarType, text: string, what: string): JsonValue {
  switch (type) {
    case ScalarType.BOOL:
      if (text === "true" || text === "1") return true;
      if (text === "false" || text === "0") return false;
      throw invalid(`${what}: expected true or false`);
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return text;
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      if (decimalNumber.test(text) || namedFloats.has(text)) return text;
      throw invalid(`${what}: expected a decimal number`);
    default:
      // Proto JSON accepts numbers as strings for every integer type, 64-bit included.
      if (decimalInteger.test(text)) return text;
      throw invalid(`${what}: expected a decimal integer (optional sign, then digits)`);
  }
}

function enumJson(desc: DescEnum, text: string, what: string): JsonValue {
  if (/^-?\d+$/.test(text)) return Number(text);
  if (desc.values.some((v) => v.name === text)) return text;
  throw invalid(`${what}: ${JSON.stringify(text.slice(0, 64))} is not a value of ${desc.typeName}`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function invalid(message: string): ConnectError {
  return new ConnectError(boundedMessage(message), Code.InvalidArgument);
}
