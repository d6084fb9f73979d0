import type { DescField, DescMessage } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { Access } from "../../gen/orchestrator/v1/options_pb.js";
import { codeName } from "../gateway/http-status.js";
import type { RestRoute } from "../gateway/rest-gateway.js";
import { accessOf } from "../interceptors/auth.js";
import { type JsonSchema, MessageSchemas } from "./message-schemas.js";

/** An OpenAPI 3.1 document, as plain JSON. */
export type OpenApiDocument = { readonly [key: string]: unknown };

/** What the document says of the API itself. */
export interface OpenApiInfo {
  readonly title: string;
  readonly version: string;
  readonly description: string;
}

/** The key of the shared error response and of its body's schema. */
export const errorComponent = "Error";

/**
 * The OpenAPI 3.1 document of the REST gateway, derived from the routes it serves (which come from
 * the google.api.http rules): nothing here is written per RPC, so a proto change is a document
 * change. Bodies are described as the gateway writes and reads them (proto3 JSON, proto names);
 * a server-streaming route answers newline-delimited JSON. Deterministic: the same routes give
 * the same document, byte for byte once serialised, so that polling it shows no drift.
 */
export function openApiDocumentOf(
  routes: readonly RestRoute[],
  info: OpenApiInfo,
): OpenApiDocument {
  const schemas = new MessageSchemas();
  const paths: Record<string, Record<string, unknown>> = {};
  const bindingsSeen = new Map<string, number>();
  const tags = new Map<string, string>();
  for (const route of routes) {
    const method = route.target.method;
    const service = method.parent;
    tags.set(service.name, service.typeName);
    const baseId = `${service.name}_${method.name}`;
    const nth = (bindingsSeen.get(baseId) ?? 0) + 1;
    bindingsSeen.set(baseId, nth);
    const operationId = nth === 1 ? baseId : `${baseId}_${nth}`;
    const path = openApiPathOf(route.path);
    paths[path] ??= {};
    paths[path][route.method.toLowerCase()] = operationOf(route, operationId, schemas);
  }
  return {
    openapi: "3.1.0",
    info,
    tags: [...tags].map(([name, description]) => ({ name, description })),
    paths,
    components: {
      schemas: { ...schemas.schemas, [errorComponent]: errorBodySchema() },
      responses: {
        [errorComponent]: {
          description: "The call failed: the status comes from its gRPC code.",
          content: { "application/json": { schema: ref("schemas", errorComponent) } },
        },
      },
      securitySchemes: {
        bearer: {
          type: "http",
          scheme: "bearer",
          description:
            "A token from AUTH_TOKENS (or PEER_TOKEN for peer RPCs); only asked for when tokens are configured.",
        },
      },
    },
  };
}

/** `{name=*}` is the router's `{name}`: OpenAPI templates have no `=*`. */
function openApiPathOf(template: string): string {
  return template.replace(/\{([^}=]+)=\*\}/g, "{$1}");
}

function operationOf(route: RestRoute, operationId: string, schemas: MessageSchemas) {
  const method = route.target.method;
  const access = accessOf(method);
  const parameters = [...pathParameters(route, schemas), ...queryParameters(route, schemas)];
  const body = requestBodyOf(route, schemas);
  return {
    operationId,
    tags: [method.parent.name],
    summary: `${method.parent.typeName}.${method.name}`,
    "x-access": Access[access],
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(body === undefined ? {} : { requestBody: body }),
    responses: responsesOf(route, schemas, access),
    ...(access === Access.PUBLIC ? {} : { security: [{ bearer: [] }] }),
  };
}

function pathParameters(route: RestRoute, schemas: MessageSchemas) {
  return [...route.mapping.path.variables.values()].map((fieldPath) => {
    const field = leafField(route.mapping.input, fieldPath);
    return {
      name: fieldPath.join("."),
      in: "path",
      required: true,
      schema: schemas.fieldSchema(field),
    };
  });
}

/**
 * The request fields the gateway reads from the query string: those neither in the body nor in
 * the path, nested messages as dotted names (`a.b`), repeated fields as repeated keys. A body of
 * "*" leaves none (the gateway refuses query parameters there); maps cannot be set from a query.
 */
function queryParameters(route: RestRoute, schemas: MessageSchemas) {
  const { input, body, path } = route.mapping;
  if (body === "*") return [];
  const bound = new Set([...path.variables.values()].map((p) => p.join(".")));
  if (body !== "") bound.add(body);
  const parameters: Record<string, unknown>[] = [];
  const visit = (message: DescMessage, prefix: string, seen: ReadonlySet<DescMessage>) => {
    for (const field of message.fields) {
      const name = `${prefix}${field.name}`;
      if (bound.has(name) || field.fieldKind === "map") continue;
      if (field.fieldKind === "message" && !isQueryText(field.message)) {
        if (!seen.has(field.message))
          visit(field.message, `${name}.`, new Set([...seen, field.message]));
        continue;
      }
      if (field.fieldKind === "list" && field.listKind === "message") continue;
      parameters.push({ name, in: "query", schema: schemas.fieldSchema(field) });
    }
  };
  visit(input, "", new Set([input]));
  return parameters;
}

/** Well-known types whose JSON is one string, which a query value can carry. */
function isQueryText(message: DescMessage): boolean {
  const name = message.typeName;
  return (
    name === "google.protobuf.Timestamp" ||
    name === "google.protobuf.Duration" ||
    name === "google.protobuf.FieldMask" ||
    (name.startsWith("google.protobuf.") &&
      name.endsWith("Value") &&
      name !== "google.protobuf.Value" &&
      name !== "google.protobuf.ListValue")
  );
}

function requestBodyOf(route: RestRoute, schemas: MessageSchemas) {
  const { input, body } = route.mapping;
  if (body === "") return undefined;
  const schema =
    body === "*" ? schemas.refOf(input) : schemas.fieldSchema(leafField(input, [body]));
  return { content: { "application/json": { schema } } };
}

function responsesOf(route: RestRoute, schemas: MessageSchemas, access: Access) {
  const output = route.target.method.output;
  const message =
    route.responseField === undefined
      ? schemas.refOf(output)
      : schemas.fieldSchema(route.responseField);
  const errorResponse = ref("responses", errorComponent);
  return {
    "200": route.target.streaming ? streamResponse(message) : jsonResponse(message),
    ...(access === Access.PUBLIC ? {} : { "401": errorResponse, "403": errorResponse }),
    "4XX": errorResponse,
    "5XX": errorResponse,
  };
}

function jsonResponse(schema: JsonSchema) {
  return { description: "OK", content: { "application/json": { schema } } };
}

/**
 * A server-streaming route answers 200 with one JSON value a line (as registerRestGateway
 * writes them); an error after the first message ends the stream as `{"error": {...}}`.
 */
function streamResponse(schema: JsonSchema) {
  const errorLine = {
    type: "object",
    properties: { error: ref("schemas", errorComponent) },
    required: ["error"],
  };
  return {
    description:
      'Newline-delimited JSON: one response message a line; a failure after the first ends the stream with {"error": {code, message, details}}.',
    content: { "application/x-ndjson": { schema: { anyOf: [schema, errorLine] } } },
  };
}

/** The body of every REST error (see errorResponseOf): `{code, message, details}`. */
function errorBodySchema(): JsonSchema {
  const codes = Object.values(Code)
    .filter((c): c is Code => typeof c === "number")
    .map(codeName);
  return {
    type: "object",
    properties: {
      code: { type: "string", enum: codes },
      message: { type: "string" },
      details: {
        type: "array",
        items: { type: "object", properties: { "@type": { type: "string" } }, required: ["@type"] },
      },
    },
    required: ["code", "message", "details"],
  };
}

function leafField(input: DescMessage, fieldPath: readonly string[]): DescField {
  let message: DescMessage | undefined = input;
  let field: DescField | undefined;
  for (const name of fieldPath) {
    field = message?.fields.find((f) => f.name === name);
    message = field?.fieldKind === "message" ? field.message : undefined;
  }
  // restRoutesOf compiled these paths against the same message: a miss is a bug of ours.
  if (field === undefined) throw new Error(`${input.typeName} has no field ${fieldPath.join(".")}`);
  return field;
}

function ref(kind: "schemas" | "responses", name: string): JsonSchema {
  return { $ref: `#/components/${kind}/${name}` };
}
