import {
  type DescEnum,
  type DescField,
  type DescMessage,
  getOption,
  hasOption,
  ScalarType,
} from "@bufbuild/protobuf";
import {
  type FieldRules,
  field as fieldRulesOption,
} from "../../gen/orchestrator/v1/options_pb.js";

/** A JSON Schema (OpenAPI 3.1 dialect), as plain JSON. */
export type JsonSchema = { readonly [key: string]: unknown };

/**
 * Builds the JSON Schemas of messages and enums as the REST gateway writes and reads them: the
 * proto3 JSON mapping with proto field names (the gateway writes `useProtoFieldName`, see
 * jsonWriteOptions), 64-bit integers as decimal strings, enums by name, bytes as base64, maps as
 * objects. Each message and enum reached is one entry of `schemas`, keyed by its full name, so
 * that recursive messages are references, never infinite.
 */
export class MessageSchemas {
  /** components/schemas: full proto name → schema, in the order first reached. */
  readonly schemas: Record<string, JsonSchema> = {};

  /** A reference to the schema of `message`, adding it (and what it reaches) when new. */
  refOf(message: DescMessage): JsonSchema {
    if (!(message.typeName in this.schemas)) {
      // Reserved before it is built: a field of the message may refer back to it.
      this.schemas[message.typeName] = {};
      this.schemas[message.typeName] = this.messageSchema(message);
    }
    return ref(message.typeName);
  }

  private enumRefOf(desc: DescEnum): JsonSchema {
    if (!(desc.typeName in this.schemas)) this.schemas[desc.typeName] = enumSchema(desc);
    return ref(desc.typeName);
  }

  private messageSchema(message: DescMessage): JsonSchema {
    const wellKnown = wellKnownSchema(message);
    if (wellKnown !== undefined) return wellKnown;
    const properties: Record<string, JsonSchema> = {};
    const required: string[] = [];
    for (const field of message.fields) {
      const rules = rulesOf(field);
      properties[field.name] = this.fieldSchema(field, rules);
      if (rules?.required) required.push(field.name);
    }
    return {
      type: "object",
      properties,
      ...(required.length > 0 ? { required } : {}),
      ...oneofConstraints(message),
    };
  }

  /** The schema of one field, with its `(orchestrator.v1.field)` rules where JSON Schema has them. */
  fieldSchema(field: DescField, rules = rulesOf(field)): JsonSchema {
    switch (field.fieldKind) {
      case "scalar":
        return withRules(scalarSchema(field.scalar), rules);
      case "enum":
        return withRules(this.enumRefOf(field.enum), rules);
      case "message":
        return withRules(this.refOf(field.message), rules);
      case "list": {
        const items =
          field.listKind === "scalar"
            ? withRules(scalarSchema(field.scalar), rules?.items)
            : field.listKind === "enum"
              ? this.enumRefOf(field.enum)
              : this.refOf(field.message);
        return { type: "array", items, ...countRules(rules, "maxItems") };
      }
      case "map": {
        const values =
          field.mapKind === "scalar"
            ? withRules(scalarSchema(field.scalar), rules?.items)
            : field.mapKind === "enum"
              ? this.enumRefOf(field.enum)
              : this.refOf(field.message);
        const keys =
          rules?.keys === undefined ? undefined : withRules({ type: "string" }, rules.keys);
        return {
          type: "object",
          additionalProperties: values,
          ...(keys === undefined ? {} : { propertyNames: keys }),
          ...countRules(rules, "maxProperties"),
        };
      }
    }
  }
}

function ref(typeName: string): JsonSchema {
  return { $ref: `#/components/schemas/${typeName}` };
}

function rulesOf(field: DescField): FieldRules | undefined {
  return hasOption(field, fieldRulesOption) ? getOption(field, fieldRulesOption) : undefined;
}

function enumSchema(desc: DescEnum): JsonSchema {
  if (desc.typeName === "google.protobuf.NullValue") return { type: "null" };
  return { type: "string", enum: desc.values.map((v) => v.name) };
}

/** The proto3 JSON form of each scalar, as protobuf-es's toJson writes it. */
export function scalarSchema(scalar: ScalarType): JsonSchema {
  switch (scalar) {
    case ScalarType.STRING:
      return { type: "string" };
    case ScalarType.BYTES:
      return { type: "string", contentEncoding: "base64" };
    case ScalarType.BOOL:
      return { type: "boolean" };
    case ScalarType.DOUBLE:
      return { type: "number", format: "double" };
    case ScalarType.FLOAT:
      return { type: "number", format: "float" };
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return { type: "integer", format: "int32" };
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return { type: "integer", format: "uint32", minimum: 0, maximum: 4_294_967_295 };
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      // JSON numbers lose precision past 2^53: proto3 JSON writes 64-bit integers as strings.
      return { type: "string", format: "uint64", pattern: "^[0-9]+$" };
    default:
      return { type: "string", format: "int64", pattern: "^-?[0-9]+$" };
  }
}

/** Schemas of the well-known types, whose JSON forms are their own (RFC 3339, "1.5s", any JSON). */
function wellKnownSchema(message: DescMessage): JsonSchema | undefined {
  switch (message.typeName) {
    case "google.protobuf.Timestamp":
      return { type: "string", format: "date-time" };
    case "google.protobuf.Duration":
      return { type: "string", pattern: "^-?[0-9]+(\\.[0-9]{1,9})?s$" };
    case "google.protobuf.Struct":
      return { type: "object", additionalProperties: true };
    case "google.protobuf.Value":
      return {};
    case "google.protobuf.ListValue":
      return { type: "array" };
    case "google.protobuf.Empty":
      return { type: "object", additionalProperties: false };
    case "google.protobuf.FieldMask":
      return { type: "string" };
    case "google.protobuf.Any":
      return { type: "object", properties: { "@type": { type: "string" } }, required: ["@type"] };
  }
  // Wrappers (Int64Value, StringValue, ...) are their one field's JSON.
  const value = message.fields[0];
  if (message.typeName.startsWith("google.protobuf.") && message.typeName.endsWith("Value")) {
    if (value?.fieldKind === "scalar") return scalarSchema(value.scalar);
  }
  return undefined;
}

/** A oneof's members are plain properties in JSON, at most one of them set. */
function oneofConstraints(message: DescMessage): JsonSchema {
  const exclusions: JsonSchema[] = [];
  for (const oneof of message.oneofs) {
    const names = oneof.fields.map((f) => f.name);
    names.forEach((a, i) => {
      for (const b of names.slice(i + 1)) exclusions.push({ not: { required: [a, b] } });
    });
  }
  return exclusions.length > 0 ? { allOf: exclusions } : {};
}

/** The rules JSON Schema can say of one value; the others (http_url, max_bytes) are described. */
function withRules(schema: JsonSchema, rules: FieldRules | undefined): JsonSchema {
  if (rules === undefined) return schema;
  const out: Record<string, unknown> = { ...schema };
  const isString = schema.type === "string" && schema.format === undefined;
  if (isString) {
    if (rules.maxLen !== undefined) out.maxLength = rules.maxLen;
    const minLen = Math.max(rules.minLen ?? 0, rules.required ? 1 : 0);
    if (minLen > 0) out.minLength = minLen;
    if (rules.pattern !== "") out.pattern = rules.pattern;
    if (rules.httpUrl) out.format = "uri";
    // An empty string passes an `in` rule unless the field is required.
    if (rules.in.length > 0) out.enum = rules.required ? rules.in : [...new Set([...rules.in, ""])];
  }
  // Bounds on 64-bit integers would be on strings: JSON Schema cannot say them.
  if (schema.type === "integer" || schema.type === "number") {
    if (rules.gte !== undefined) out.minimum = rules.gte;
    if (rules.lte !== undefined) out.maximum = rules.lte;
  }
  if (rules.maxBytes !== undefined) {
    out.description = `At most ${rules.maxBytes} bytes in its binary encoding.`;
  }
  return out;
}

function countRules(rules: FieldRules | undefined, key: "maxItems" | "maxProperties"): JsonSchema {
  return rules?.maxItems === undefined ? {} : { [key]: rules.maxItems };
}
