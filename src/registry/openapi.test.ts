import { describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import { DomainError } from "../errors/domain-error.js";
import {
  diffOpenApi,
  maxDiffListed,
  type OpenApiDocument,
  type OpenApiSummary,
  parseOpenApiDocument,
  summarizeOpenApi,
} from "./openapi.js";

type Json = Record<string, unknown>;

/** An OpenAPI 3.0 pet store, shaped like the ones services publish. */
function petStore(): Json {
  return {
    openapi: "3.0.3",
    info: { title: "Pets", version: "1.4.0", description: "Pets and their owners." },
    servers: [{ url: "https://pets.internal.example" }],
    paths: {
      "/pets": {
        parameters: [{ $ref: "#/components/parameters/Tenant" }],
        get: {
          operationId: "listPets",
          summary: "List pets",
          parameters: [
            { name: "limit", in: "query", required: false, schema: { type: "integer" } },
            { name: "cursor", in: "query", schema: { type: "string" } },
          ],
          responses: {
            "200": {
              description: "A page of pets",
              content: {
                "application/json": {
                  schema: {
                    type: "object",
                    required: ["items"],
                    properties: {
                      items: { type: "array", items: { $ref: "#/components/schemas/Pet" } },
                      next: { type: "string", nullable: true },
                    },
                  },
                },
              },
            },
            default: { $ref: "#/components/responses/Error" },
          },
        },
        post: {
          operationId: "createPet",
          requestBody: {
            required: true,
            content: { "application/json": { schema: { $ref: "#/components/schemas/NewPet" } } },
          },
          responses: {
            "201": {
              description: "Created",
              content: { "application/json": { schema: { $ref: "#/components/schemas/Pet" } } },
            },
            default: { $ref: "#/components/responses/Error" },
          },
        },
      },
      "/pets/{petId}": {
        parameters: [{ name: "petId", in: "path", required: true, schema: { type: "string" } }],
        get: {
          operationId: "getPet",
          responses: {
            "200": {
              description: "The pet",
              content: { "application/json": { schema: { $ref: "#/components/schemas/Pet" } } },
            },
            "404": { $ref: "#/components/responses/Error" },
          },
        },
        delete: { operationId: "deletePet", responses: { "204": { description: "Deleted" } } },
      },
      "x-internal-note": "not a route",
    },
    components: {
      parameters: {
        Tenant: { name: "X-Tenant", in: "header", required: false, schema: { type: "string" } },
      },
      responses: {
        Error: {
          description: "Problem",
          content: {
            "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" } },
          },
        },
      },
      schemas: {
        Pet: {
          type: "object",
          description: "A pet.",
          required: ["id", "name"],
          properties: {
            id: { type: "string", format: "uuid", example: "0b1c" },
            name: { type: "string" },
            kind: { type: "string", enum: ["cat", "dog", "fish"] },
            tags: { type: "array", items: { type: "string" } },
            owner: { $ref: "#/components/schemas/Owner" },
          },
        },
        NewPet: {
          type: "object",
          required: ["name"],
          properties: { name: { type: "string" }, kind: { type: "string" } },
        },
        Owner: {
          type: "object",
          properties: {
            name: { type: "string" },
            pets: { type: "array", items: { $ref: "#/components/schemas/Pet" } },
          },
        },
        Problem: {
          type: "object",
          properties: { title: { type: "string" }, status: { type: "integer" } },
        },
      },
    },
  };
}

/** A Swagger 2.0 document in YAML, with `#/parameters` and `#/definitions` refs. */
const swaggerYaml = `
swagger: "2.0"
info:
  title: Orders
  version: "2.1"
basePath: /v1
consumes: [application/json]
produces: [application/json]
parameters:
  OrderId:
    name: orderId
    in: path
    required: true
    type: string
paths:
  /orders:
    post:
      parameters:
        - name: body
          in: body
          required: true
          schema:
            $ref: "#/definitions/Order"
        - name: dryRun
          in: query
          type: boolean
      responses:
        201:
          description: Created
          schema:
            $ref: "#/definitions/Order"
  /orders/{orderId}:
    parameters:
      - $ref: "#/parameters/OrderId"
    get:
      produces: [application/json, application/xml]
      responses:
        200:
          description: The order
          schema:
            $ref: "#/definitions/Order"
definitions:
  Order:
    type: object
    required: [sku]
    properties:
      sku: {type: string}
      quantity: {type: integer, format: int32}
      status: {type: string, enum: [placed, shipped]}
`;

const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

function summaryOf(value: Json): OpenApiSummary {
  return summarizeOpenApi(parseOpenApiDocument(json(value), "application/json"));
}

function operation(summary: OpenApiSummary, key: string): Json {
  const text = summary.operations[key];
  if (text === undefined) throw new Error(`no operation ${key}`);
  return JSON.parse(text) as Json;
}

/** Applies `edit` to a fresh pet store and diffs the result against the original. */
function diffAfter(edit: (document: Json & { paths: Json; components: Json }) => void) {
  const edited = petStore() as Json & { paths: Json; components: Json };
  edit(edited);
  return diffOpenApi(summaryOf(petStore()), summaryOf(edited));
}

function at(value: unknown, ...keys: string[]): Json {
  let current = value;
  for (const key of keys) current = (current as Json)[key];
  return current as Json;
}

function invalidError(body: string | Buffer, contentType: string | null = null): DomainError {
  try {
    parseOpenApiDocument(typeof body === "string" ? Buffer.from(body) : body, contentType);
  } catch (error) {
    if (error instanceof DomainError && error.kind === "invalid") return error;
    throw error;
  }
  throw new Error("expected DomainError invalid");
}

describe("parseOpenApiDocument", () => {
  it("reads JSON and YAML into the same document", () => {
    const fromJson = parseOpenApiDocument(json(petStore()), "application/json");
    const fromYaml = parseOpenApiDocument(Buffer.from(toYaml(petStore())), "application/yaml");
    expect(fromYaml).toEqual(fromJson);
  });

  it("sniffs JSON and YAML whatever the content type says", () => {
    expect(parseOpenApiDocument(json(petStore()), "text/plain").openapi).toBe("3.0.3");
    expect(parseOpenApiDocument(Buffer.from(swaggerYaml), null).swagger).toBe("2.0");
    expect(
      parseOpenApiDocument(Buffer.from(`\uFEFF${JSON.stringify(petStore())}`), null),
    ).toBeDefined();
  });

  it("accepts unquoted YAML versions", () => {
    expect(parseOpenApiDocument(Buffer.from("openapi: 3.1\npaths: {}\n"), null).openapi).toBe(3.1);
    expect(parseOpenApiDocument(Buffer.from("swagger: 2.0\npaths: {}\n"), null).swagger).toBe(2);
  });

  it.each([
    ["neither JSON nor YAML", "{ openapi: [3.0, paths: {", null],
    ["YAML while claiming JSON", "openapi: 3.0.0\npaths: {}\n", "application/json"],
    ["an array", '[{"openapi":"3.0.0","paths":{}}]', null],
    ["a scalar", "just some words from secret-host.internal", null],
    ["empty", "", null],
    ["missing paths", '{"openapi":"3.0.0","info":{}}', null],
    ["paths not an object", '{"openapi":"3.0.0","paths":["/a"]}', null],
    ["no version", '{"info":{},"paths":{}}', null],
    ["OpenAPI 4", '{"openapi":"4.0.0","paths":{}}', null],
    ["Swagger 1.2", '{"swagger":"1.2","paths":{}}', null],
    ["several YAML documents", "openapi: 3.0.0\npaths: {}\n---\nopenapi: 3.0.0\n", null],
    ["duplicate YAML keys", "openapi: 3.0.0\npaths: {}\npaths: {}\n", null],
  ])("refuses %s", (_name, body, contentType) => {
    const error = invalidError(body, contentType);
    expect(error.message).not.toContain("secret-host");
    expect(error.message).not.toContain("/a");
  });

  it("refuses text that is not UTF-8", () => {
    invalidError(Buffer.from([0x6f, 0x70, 0xff, 0xfe, 0x3a]));
  });

  it("refuses a YAML alias bomb", () => {
    const names = "abcdefghij";
    let bomb =
      'openapi: 3.0.0\npaths: {}\na: &a ["lol","lol","lol","lol","lol","lol","lol","lol"]\n';
    for (let index = 1; index < names.length; index++) {
      const alias = `*${names[index - 1]}`;
      bomb += `${names[index]}: &${names[index]} [${Array(8).fill(alias).join(",")}]\n`;
    }
    expect(invalidError(bomb).message).toBe("OpenAPI document is neither JSON nor YAML");
  });

  it("refuses a YAML alias cycle", () => {
    invalidError("openapi: 3.0.0\npaths: {}\nloop: &loop [*loop, *loop]\n");
  });

  it("refuses huge nesting in JSON and YAML", () => {
    const deepJson = `{"openapi":"3.0.0","paths":{},"x":${"[".repeat(100_000)}${"]".repeat(100_000)}}`;
    const deepYaml = `openapi: 3.0.0\npaths: {}\nx: ${"[".repeat(50_000)}${"]".repeat(50_000)}\n`;
    invalidError(deepJson);
    invalidError(deepYaml);
    const moderate = `{"openapi":"3.0.0","paths":{},"x":${"[".repeat(100)}${"]".repeat(100)}}`;
    expect(invalidError(moderate).message).toBe("OpenAPI document nests deeper than 64 levels");
  });
});

describe("summarizeOpenApi", () => {
  it("keys operations by method and path, skipping extensions", () => {
    expect(Object.keys(summaryOf(petStore()).operations)).toEqual([
      "GET /pets",
      "POST /pets",
      "GET /pets/{petId}",
      "DELETE /pets/{petId}",
    ]);
  });

  it("hashes the canonical document: key order and syntax do not matter", () => {
    const reordered = Object.fromEntries(Object.entries(petStore()).reverse());
    const yaml = parseOpenApiDocument(Buffer.from(toYaml(petStore())), "application/yaml");
    const original = summaryOf(petStore());

    expect(original.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(summaryOf(reordered)).toEqual(original);
    expect(summarizeOpenApi(yaml)).toEqual(original);
  });

  it("lets descriptions and examples change the hash but no operation", () => {
    const edited = petStore();
    at(edited, "info").description = "Pets, owners and vets.";
    at(edited, "components", "schemas", "Pet", "properties", "id").example = "ffff";
    at(edited, "paths", "/pets", "get").summary = "List all pets";

    const before = summaryOf(petStore());
    const after = summaryOf(edited);

    expect(after.hash).not.toBe(before.hash);
    expect(after.operations).toEqual(before.operations);
  });

  it("merges path-level parameters, resolving refs, operation-level ones winning", () => {
    const document = petStore();
    const list = at(document, "paths", "/pets", "get").parameters as Json[];
    list.push({ name: "X-Tenant", in: "header", required: true });

    const summary = summaryOf(document);

    expect(operation(summary, "GET /pets").parameters).toEqual([
      { name: "X-Tenant", in: "header", required: true },
      { name: "cursor", in: "query", required: false },
      { name: "limit", in: "query", required: false },
    ]);
    expect(operation(summary, "POST /pets").parameters).toEqual([
      { name: "X-Tenant", in: "header", required: false },
    ]);
    expect(operation(summary, "GET /pets/{petId}").parameters).toEqual([
      { name: "petId", in: "path", required: true },
    ]);
  });

  it("summarises request bodies and responses, resolving refs and dropping prose", () => {
    const post = operation(summaryOf(petStore()), "POST /pets");

    expect(post.requestBody).toEqual({
      required: true,
      content: {
        "application/json": {
          type: "object",
          required: ["name"],
          properties: { kind: { type: "string" }, name: { type: "string" } },
        },
      },
    });
    const responses = post.responses as Json;
    expect(Object.keys(responses)).toEqual(["201", "default"]);
    expect(at(responses, "default", "application/problem+json", "properties")).toEqual({
      status: { type: "integer" },
      title: { type: "string" },
    });
    const pet = at(responses, "201", "application/json");
    expect(pet.description).toBeUndefined();
    expect(at(pet, "properties", "id")).toEqual({ type: "string", format: "uuid" });
    expect(at(pet, "properties", "kind").enum).toEqual(["cat", "dog", "fish"]);
    expect(operation(summaryOf(petStore()), "DELETE /pets/{petId}").responses).toEqual({
      "204": {},
    });
  });

  it("ends $ref cycles with a marker", () => {
    const pet = at(operation(summaryOf(petStore()), "GET /pets/{petId}"), "responses", "200");
    // Pet → Owner → pets[] → Pet: the second Pet is a marker, not another expansion.
    expect(at(pet, "application/json", "properties", "owner", "properties", "pets").items).toEqual({
      $ref: "#/components/schemas/Pet",
    });
  });

  it("survives self-referencing schemas, parameters and path items", () => {
    const document: Json = {
      openapi: "3.1.0",
      paths: {
        "/tree": {
          get: {
            parameters: [{ $ref: "#/components/parameters/Loop" }],
            responses: {
              "200": {
                content: { "application/json": { schema: { $ref: "#/components/schemas/Node" } } },
              },
              "500": { $ref: "#/components/responses/Loop" },
            },
          },
        },
        "/alias": { $ref: "#/paths/~1alias" },
        "/proto": {
          get: {
            responses: {
              "200": { content: { "application/json": { schema: { $ref: "#/constructor" } } } },
            },
          },
        },
      },
      components: {
        parameters: { Loop: { $ref: "#/components/parameters/Loop" } },
        responses: { Loop: { $ref: "#/components/responses/Loop" } },
        schemas: {
          Node: {
            type: "object",
            properties: {
              children: { type: "array", items: { $ref: "#/components/schemas/Node" } },
              parent: { $ref: "#/components/schemas/Node" },
              self: { $ref: "#/components/schemas/Self" },
            },
          },
          Self: { $ref: "#/components/schemas/Self" },
        },
      },
    };

    const summary = summaryOf(document);

    expect(Object.keys(summary.operations)).toEqual(["GET /proto", "GET /tree"]);
    expect(operation(summary, "GET /proto").responses).toEqual({
      "200": { "application/json": { $ref: "#/constructor" } },
    });
    const tree = operation(summary, "GET /tree");
    expect(tree.parameters).toEqual([]);
    expect(at(tree, "responses", "200", "application/json", "properties", "parent")).toEqual({
      $ref: "#/components/schemas/Node",
    });
  });

  it("reads Swagger 2: body parameters, consumes and produces", () => {
    const summary = summarizeOpenApi(parseOpenApiDocument(Buffer.from(swaggerYaml), null));
    const order = {
      type: "object",
      required: ["sku"],
      properties: {
        quantity: { type: "integer", format: "int32" },
        sku: { type: "string" },
        status: { type: "string", enum: ["placed", "shipped"] },
      },
    };

    expect(operation(summary, "POST /orders")).toEqual({
      parameters: [{ name: "dryRun", in: "query", required: false }],
      requestBody: { required: true, content: { "application/json": order } },
      responses: { "201": { "application/json": order } },
    });
    expect(operation(summary, "GET /orders/{orderId}")).toEqual({
      parameters: [{ name: "orderId", in: "path", required: true }],
      responses: { "200": { "application/json": order, "application/xml": order } },
    });
  });

  it("refuses more operations than maxOperations, before summarising any", () => {
    const document = parseOpenApiDocument(Buffer.from(JSON.stringify(petStore())), null);
    expect(Object.keys(summarizeOpenApi(document, { maxOperations: 4 }).operations)).toHaveLength(
      4,
    );
    expect(() => summarizeOpenApi(document, { maxOperations: 3 })).toThrow(
      expect.objectContaining({
        kind: "invalid",
        message: "OpenAPI document has 4 operations, more than 3",
      }),
    );
  });

  it("refuses documents whose schemas expand beyond the node budget", () => {
    const properties = Object.fromEntries(
      Array.from({ length: 5000 }, (_, index) => [`p${index}`, { type: "string" }]),
    );
    const paths = Object.fromEntries(
      Array.from({ length: 60 }, (_, index) => [
        `/wide/${index}`,
        {
          get: {
            responses: {
              "200": {
                content: { "application/json": { schema: { $ref: "#/components/schemas/Wide" } } },
              },
            },
          },
        },
      ]),
    );
    const document = parseOpenApiDocument(
      json({
        openapi: "3.0.0",
        paths,
        components: { schemas: { Wide: { type: "object", properties } } },
      }),
      null,
    );

    expect(() => summarizeOpenApi(document)).toThrow(DomainError);
  });

  it("keeps __proto__ as a plain property name", () => {
    const document = parseOpenApiDocument(
      Buffer.from(
        '{"openapi":"3.0.0","paths":{"/p":{"get":{"responses":{"200":{"content":{"application/json":' +
          '{"schema":{"type":"object","properties":{"__proto__":{"type":"string"}}}}}}}}}}}',
      ),
      null,
    );
    const summary = operation(summarizeOpenApi(document as OpenApiDocument), "GET /p");
    expect(summary.responses).toEqual({
      "200": {
        "application/json": {
          type: "object",
          properties: JSON.parse('{"__proto__":{"type":"string"}}'),
        },
      },
    });
  });
});

describe("diffOpenApi", () => {
  it("reports nothing for the same document", () => {
    const summary = summaryOf(petStore());
    expect(diffOpenApi(summary, summary)).toEqual({
      added: [],
      removed: [],
      changed: [],
      addedCount: 0,
      removedCount: 0,
      changedCount: 0,
      breaking: false,
      breakingReasons: [],
    });
  });

  it("names the first 100 operations of each list and counts them all", () => {
    const operations = (from: number, contract: string) =>
      Object.fromEntries(
        Array.from({ length: 300 }, (_, i) => [
          `GET /r${String(from + i).padStart(4, "0")}`,
          contract,
        ]),
      );
    const before = { ...operations(0, "{}"), ...operations(1000, "{}") };
    const after = { ...operations(300, "{}"), ...operations(1000, '{"x":1}') };

    const diff = diffOpenApi({ operations: before }, { operations: after });

    expect(diff).toMatchObject({ addedCount: 300, removedCount: 300, changedCount: 300 });
    expect(diff.added).toEqual(Object.keys(after).slice(0, maxDiffListed));
    expect(diff.removed).toEqual(Object.keys(before).slice(0, maxDiffListed));
    expect(diff.changed).toEqual(Object.keys(after).slice(300, 300 + maxDiffListed));
    expect(diff.breakingReasons).toHaveLength(100);
  });

  it("lists added, removed and changed operations, sorted", () => {
    const diff = diffAfter((document) => {
      at(document, "paths", "/pets/{petId}").patch = {
        responses: { "200": { description: "ok" } },
      };
      at(document, "paths", "/pets").put = { responses: { "200": { description: "ok" } } };
      delete at(document, "paths", "/pets/{petId}").delete;
      (at(document, "paths", "/pets", "get").parameters as Json[]).push({
        name: "sort",
        in: "query",
      });
    });

    expect(diff.added).toEqual(["PATCH /pets/{petId}", "PUT /pets"]);
    expect(diff.removed).toEqual(["DELETE /pets/{petId}"]);
    expect(diff.changed).toEqual(["GET /pets"]);
    expect(diff.breaking).toBe(true);
    expect(diff.breakingReasons).toEqual(["DELETE /pets/{petId}: operation removed"]);
  });

  it.each([
    [
      "an optional parameter added",
      (d: Json) =>
        (at(d, "paths", "/pets", "get").parameters as Json[]).push({ name: "q", in: "query" }),
    ],
    [
      "a response property added",
      (d: Json) => {
        at(d, "components", "schemas", "Pet", "properties").age = { type: "integer" };
      },
    ],
    [
      "an enum value added",
      (d: Json) => {
        at(d, "components", "schemas", "Pet", "properties", "kind").enum = [
          "cat",
          "dog",
          "fish",
          "bird",
        ];
      },
    ],
    [
      "integer widened to number",
      (d: Json) => {
        at(d, "components", "schemas", "Problem", "properties", "status").type = "number";
      },
    ],
    [
      "a request body became optional",
      (d: Json) => {
        at(d, "paths", "/pets", "post", "requestBody").required = false;
      },
    ],
    [
      "an error response removed",
      (d: Json) => {
        delete at(d, "paths", "/pets/{petId}", "get", "responses")["404"];
      },
    ],
  ])("does not call %s breaking", (_name, edit) => {
    const diff = diffAfter(edit);
    expect(diff.changed.length).toBeGreaterThan(0);
    expect(diff.breakingReasons).toEqual([]);
    expect(diff.breaking).toBe(false);
  });

  it.each([
    [
      "a required parameter added",
      (d: Json) =>
        (at(d, "paths", "/pets", "get").parameters as Json[]).push({
          name: "owner",
          in: "query",
          required: true,
        }),
      'GET /pets: required query parameter "owner" added',
    ],
    [
      "an optional parameter made required",
      (d: Json) => {
        at(d, "components", "parameters", "Tenant").required = true;
      },
      'GET /pets: header parameter "X-Tenant" became required',
    ],
    [
      "a request body made required",
      (d: Json) => {
        at(d, "paths", "/pets/{petId}", "get").requestBody = {
          required: true,
          content: { "application/json": { schema: { type: "object" } } },
        };
      },
      "GET /pets/{petId}: request body became required",
    ],
    [
      "a request property made required",
      (d: Json) => {
        at(d, "components", "schemas", "NewPet").required = ["name", "kind"];
      },
      'POST /pets: request application/json: property "kind" became required at $',
    ],
    [
      "a 2xx response removed",
      (d: Json) => {
        const responses = at(d, "paths", "/pets", "post", "responses");
        responses["202"] = { description: "Accepted" };
        delete responses["201"];
      },
      "POST /pets: response 201 removed",
    ],
    [
      "a 2xx content type removed",
      (d: Json) => {
        at(d, "paths", "/pets/{petId}", "get", "responses", "200").content = {
          "application/xml": { schema: { type: "object" } },
        };
      },
      "GET /pets/{petId}: response 200 no longer offers application/json",
    ],
    [
      "a response property removed",
      (d: Json) => {
        delete at(d, "components", "schemas", "Pet", "properties").tags;
      },
      'GET /pets/{petId}: response 200 application/json: property "tags" removed at $',
    ],
    [
      "a response type changed",
      (d: Json) => {
        at(d, "components", "schemas", "Pet", "properties", "id").type = "integer";
      },
      "GET /pets/{petId}: response 200 application/json: type changed at $.id",
    ],
    [
      "enum values removed",
      (d: Json) => {
        at(d, "components", "schemas", "Pet", "properties", "kind").enum = ["cat", "dog"];
      },
      "GET /pets/{petId}: response 200 application/json: enum values removed at $.kind",
    ],
    [
      "an item type changed",
      (d: Json) => {
        at(d, "components", "schemas", "Pet", "properties", "tags").items = { type: "object" };
      },
      "GET /pets/{petId}: response 200 application/json: type changed at $.tags[]",
    ],
    [
      "a nested property removed in a list",
      (d: Json) => {
        delete at(d, "components", "schemas", "Pet", "properties").name;
      },
      'GET /pets: response 200 application/json: property "name" removed at $.items[]',
    ],
  ])("calls %s breaking", (_name, edit, reason) => {
    const diff = diffAfter(edit);
    expect(diff.breaking).toBe(true);
    expect(diff.breakingReasons).toContain(reason);
    expect([...diff.breakingReasons].sort()).toEqual(diff.breakingReasons);
  });

  it("reads Swagger 2 changes the same way", () => {
    const before = summarizeOpenApi(parseOpenApiDocument(Buffer.from(swaggerYaml), null));
    const edited = swaggerYaml
      .replace("      status: {type: string, enum: [placed, shipped]}\n", "")
      .replace("          type: boolean", "          type: boolean\n          required: true");
    const after = summarizeOpenApi(parseOpenApiDocument(Buffer.from(edited), null));

    const diff = diffOpenApi(before, after);

    expect(diff.changed).toEqual(["GET /orders/{orderId}", "POST /orders"]);
    expect(diff.breakingReasons).toEqual([
      'GET /orders/{orderId}: response 200 application/json: property "status" removed at $',
      'GET /orders/{orderId}: response 200 application/xml: property "status" removed at $',
      'POST /orders: query parameter "dryRun" became required',
      'POST /orders: response 201 application/json: property "status" removed at $',
    ]);
  });

  it("treats stored summaries it cannot read as changed, not breaking", () => {
    const diff = diffOpenApi(
      { operations: { "GET /a": "not json", "GET /b": '{"old":"format"}' } },
      { operations: { "GET /a": '{"parameters":[],"responses":{}}', "GET /b": "{}" } },
    );
    expect(diff.changed).toEqual(["GET /a", "GET /b"]);
    expect(diff.breaking).toBe(false);
  });
});
