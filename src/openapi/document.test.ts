import { compileErrors, validate } from "@readme/openapi-parser";
import { describe, expect, it } from "vitest";
import { restRoutesOf } from "../gateway/rest-gateway.js";
import { wrapService } from "../interceptors/chain.js";
import { summarizeOpenApi } from "../registry/openapi.js";
import { apiServices } from "../services/api-services.js";
import { unimplementedService } from "../services/unimplemented.js";
import { type OpenApiDocument, openApiDocumentOf } from "./document.js";

// The document is derived from the same routes the gateway registers: built here from the API's
// descriptors, as the app does, and checked by a validator that knows the OpenAPI 3.1 schema.

const routes = restRoutesOf(
  apiServices.map((service) => wrapService(service, unimplementedService(service, "test"), [])),
);
const info = { title: "Orchestrator", version: "0.0.0-test", description: "test" };
const document = openApiDocumentOf(routes, info);

type Json = Record<string, unknown>;

function at(value: unknown, ...keys: string[]): Json {
  let current = value;
  for (const key of keys) current = (current as Json | undefined)?.[key];
  if (typeof current !== "object" || current === null) throw new Error(`no ${keys.join(" ")}`);
  return current as Json;
}

const schema = (name: string) => at(document, "components", "schemas", name);

describe("openApiDocumentOf", () => {
  it("is a valid OpenAPI 3.1 document", async () => {
    // validate() dereferences in place: it gets a copy.
    const result = await validate(structuredClone(document) as never);
    expect(result.valid, result.valid ? "" : compileErrors(result)).toBe(true);
    expect(document.openapi).toBe("3.1.0");
  });

  it("has every REST route of the gateway, with its method, once", () => {
    let operations = 0;
    for (const route of routes) {
      const path = route.path.replace(/=\*\}/g, "}");
      expect(at(document, "paths", path, route.method.toLowerCase())).toBeDefined();
    }
    for (const item of Object.values(at(document, "paths"))) {
      operations += Object.keys(item as Json).length;
    }
    expect(operations).toBe(routes.length);
    const ids = Object.values(at(document, "paths")).flatMap((item) =>
      Object.values(item as Json).map((op) => (op as Json).operationId),
    );
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("writes 64-bit integers as strings, enums by name, timestamps as date-times", () => {
    const entry = at(schema("orchestrator.v1.ServiceEntry"), "properties");
    expect(entry.revision).toMatchObject({ type: "string", format: "uint64" });
    expect(entry.ttl_seconds).toMatchObject({ type: "integer" });
    expect(entry.registered_at).toEqual({ $ref: "#/components/schemas/google.protobuf.Timestamp" });
    expect(schema("google.protobuf.Timestamp")).toEqual({ type: "string", format: "date-time" });
    expect(entry.status).toEqual({ $ref: "#/components/schemas/orchestrator.v1.ServiceStatus" });
    expect(schema("orchestrator.v1.ServiceStatus").enum).toContain("SERVICE_STATUS_HEALTHY");
    expect(entry.metadata).toMatchObject({
      type: "object",
      additionalProperties: { type: "string" },
    });
    expect(entry.tags).toMatchObject({ type: "array", items: { type: "string" } });
  });

  it("lets at most one member of a oneof be set, and writes bytes and Structs as proto3 JSON does", () => {
    const watch = schema("orchestrator.v1.WatchEventsResponse");
    expect(watch.allOf).toEqual([{ not: { required: ["event", "started_after"] } }]);
    const anyValue = at(schema("orchestrator.v1.AnyValue"), "properties");
    expect(anyValue.bytes_value).toEqual({ type: "string", contentEncoding: "base64" });
    expect(anyValue.int_value).toMatchObject({ type: "string", format: "int64" });
    expect(schema("google.protobuf.Struct")).toEqual({
      type: "object",
      additionalProperties: true,
    });
    expect(schema("google.protobuf.Value")).toEqual({});
  });

  it("carries field rules as JSON Schema keywords", () => {
    const register = schema("orchestrator.v1.RegisterServiceRequest");
    expect(at(register, "properties", "name")).toMatchObject({
      type: "string",
      maxLength: 100,
      minLength: 1,
      pattern: "^[a-z0-9][a-z0-9._-]*$",
    });
    expect(at(register, "properties", "base_url")).toMatchObject({ format: "uri" });
    expect(register.required).toEqual(expect.arrayContaining(["name", "base_url"]));
  });

  it("describes the error body, and asks for a token where the method is not public", () => {
    expect(schema("Error")).toMatchObject({
      type: "object",
      required: ["code", "message", "details"],
    });
    expect(at(schema("Error"), "properties", "code").enum).toContain("not_found");
    const register = at(document, "paths", "/registry/register", "post");
    expect(register.security).toEqual([{ bearer: [] }]);
    expect(at(register, "responses", "401")).toEqual({ $ref: "#/components/responses/Error" });
    expect(at(register, "responses", "5XX")).toEqual({ $ref: "#/components/responses/Error" });
    const health = operationNamed(document, "SystemService_Health");
    expect(health.security).toBeUndefined();
    expect(at(health, "responses")["401"]).toBeUndefined();
  });

  it("answers server-streaming routes with NDJSON, and reads query parameters", () => {
    const watch = operationNamed(document, "RegistryService_WatchServices");
    expect(Object.keys(at(watch, "responses", "200", "content"))).toEqual(["application/x-ndjson"]);
    const names = (watch.parameters as Json[]).map((p) => `${p.in}:${p.name}`);
    expect(names).toEqual(["query:start_revision", "query:name_prefix"]);
  });

  it("is read whole by the registry's own poller: one operation per route", () => {
    const summary = summarizeOpenApi(structuredClone(document) as never);
    const keys = routes.map((r) => `${r.method} ${r.path.replace(/=\*\}/g, "}")}`);
    expect(Object.keys(summary.operations).sort()).toEqual([...new Set(keys)].sort());
    expect(summary.operations["GET /registry/{name}"]).toContain("uint64");
  });

  it("is the same document every time it is built", () => {
    expect(JSON.stringify(openApiDocumentOf(routes, info))).toBe(JSON.stringify(document));
  });
});

function operationNamed(doc: OpenApiDocument, operationId: string): Json {
  for (const item of Object.values(at(doc, "paths"))) {
    for (const op of Object.values(item as Json)) {
      if ((op as Json).operationId === operationId) return op as Json;
    }
  }
  throw new Error(`no operation ${operationId}`);
}
