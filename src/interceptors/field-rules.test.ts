import {
  create,
  createFileRegistry,
  type DescMessage,
  type MessageInitShape,
  setExtension,
} from "@bufbuild/protobuf";
import {
  type FieldDescriptorProto,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FieldDescriptorProtoSchema,
  FieldOptionsSchema,
  FileDescriptorProtoSchema,
  file_google_protobuf_struct,
} from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { InfrastructureService } from "../../gen/orchestrator/v1/infrastructure_pb.js";
import { JobsService, RequestReportRequestSchema } from "../../gen/orchestrator/v1/jobs_pb.js";
import { FieldRulesSchema, field } from "../../gen/orchestrator/v1/options_pb.js";
import { GetDigestRequestSchema, PeerService } from "../../gen/orchestrator/v1/peer_pb.js";
import {
  type RegisterServiceRequest,
  RegisterServiceRequestSchema,
  RegistryService,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { PingRequestSchema, SystemService } from "../../gen/orchestrator/v1/system_pb.js";
import {
  IngestRequestSchema,
  RunWorkflowRequestSchema,
  WorkflowService,
} from "../../gen/orchestrator/v1/workflow_pb.js";
import { compileValidator, type FieldViolation, type MessageValidator } from "./field-rules.js";

function validatorOf(schema: DescMessage): MessageValidator {
  const validate = compileValidator(schema);
  if (validate === undefined) throw new Error(`${schema.typeName} has no rules`);
  return validate;
}

const validateRegister = validatorOf(RegisterServiceRequestSchema);

type RegistrationFields = Partial<Omit<RegisterServiceRequest, "$typeName" | "$unknown">>;

const validRegistration: RegistrationFields = {
  name: "billing-api.v2",
  baseUrl: "https://billing.internal:8443/api",
  openapiUrl: "http://billing.internal/openapi.json",
  endpoints: ["/invoices", "/customers"],
  metadata: { env: "prod", team: "payments" },
  tags: ["payments", "tier:1"],
  version: "2.3.1",
  ttlSeconds: 30,
};

function register(overrides: RegistrationFields): FieldViolation[] {
  return validateRegister(
    create(RegisterServiceRequestSchema, { ...validRegistration, ...overrides }),
  );
}

function violation(path: string, description: string): FieldViolation {
  return { field: path, description };
}

describe("compileValidator", () => {
  it("returns undefined for a message without rules", () => {
    expect(compileValidator(PingRequestSchema)).toBeUndefined();
  });

  it("compiles every request of every service: each rule in the protos fits its field", () => {
    const services = [
      RegistryService,
      WorkflowService,
      JobsService,
      PeerService,
      InfrastructureService,
      SystemService,
    ];
    for (const service of services) {
      for (const method of service.methods) {
        expect(() => compileValidator(method.input), method.input.typeName).not.toThrow();
      }
    }
  });

  it("passes a valid request with no violations", () => {
    expect(register({})).toEqual([]);
  });

  describe("required", () => {
    it("reports missing strings in field order", () => {
      expect(register({ name: "", baseUrl: "" })).toEqual([
        violation("name", "is required"),
        violation("base_url", "is required"),
      ]);
    });

    it("reports only required on a missing string, not its other rules", () => {
      expect(validatorOf(IngestRequestSchema)(create(IngestRequestSchema))).toEqual([
        violation("source", "is required"),
      ]);
    });
  });

  describe("strings", () => {
    it("checks the pattern", () => {
      expect(register({ name: "Billing_API" })).toEqual([
        violation("name", "must match ^[a-z0-9][a-z0-9._-]*$"),
      ]);
    });

    it("checks the maximum length", () => {
      expect(register({ name: "a".repeat(100) })).toEqual([]);
      expect(register({ name: "a".repeat(101) })).toEqual([
        violation("name", "must be at most 100 characters"),
      ]);
    });

    it("reports the first broken rule of a value only", () => {
      expect(register({ name: "A".repeat(101) })).toEqual([
        violation("name", "must be at most 100 characters"),
      ]);
    });

    it("counts Unicode code points, not UTF-16 units", () => {
      // Each rocket is two UTF-16 units.
      expect(register({ version: "🚀".repeat(64) })).toEqual([]);
      expect(register({ version: "🚀".repeat(65) })).toEqual([
        violation("version", "must be at most 64 characters"),
      ]);
    });

    it("skips the rules of an empty string that is not required", () => {
      expect(register({ openapiUrl: "", healthUrl: "", version: "" })).toEqual([]);
      const validateIngest = validatorOf(IngestRequestSchema);
      expect(validateIngest(create(IngestRequestSchema, { source: "jira" }))).toEqual([]);
    });

    it("checks `in`", () => {
      const validateIngest = validatorOf(IngestRequestSchema);
      expect(validateIngest(create(IngestRequestSchema, { source: "gitlab" }))).toEqual([
        violation("source", "must be one of: github, jira, confluence, swagger"),
      ]);
    });
  });

  describe("http_url", () => {
    it.each([
      ["a missing base_url", "", "is required"],
      ["an ftp URL", "ftp://files.internal/pub", "must be an absolute http or https URL"],
      [
        "a URL with credentials",
        "https://admin:secret@billing.internal",
        "must be an absolute http or https URL",
      ],
      [
        "a URL with a user name only",
        "https://admin@billing.internal",
        "must be an absolute http or https URL",
      ],
      ["a relative URL", "/api/v1", "must be an absolute http or https URL"],
      ["a URL without a host", "http://", "must be an absolute http or https URL"],
      ["a non-URL", "billing.internal", "must be an absolute http or https URL"],
    ])("rejects %s", (_, baseUrl, description) => {
      expect(register({ baseUrl })).toEqual([violation("base_url", description)]);
    });

    it("never puts the value in the description", () => {
      const [found] = register({ baseUrl: "https://admin:secret@billing.internal" });
      expect(JSON.stringify(found)).not.toContain("secret");
    });

    it("accepts http and https URLs with ports, paths and IP hosts", () => {
      expect(register({ baseUrl: "http://10.0.0.7:8080" })).toEqual([]);
      expect(register({ baseUrl: "https://[::1]/api?x=1" })).toEqual([]);
    });
  });

  describe("lists and maps", () => {
    it("checks the size of a map", () => {
      const metadata = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`key${i}`, "v"]));
      expect(register({ metadata })).toEqual([violation("metadata", "must have at most 64 items")]);
      delete metadata.key64;
      expect(register({ metadata })).toEqual([]);
    });

    it("checks map keys, showing a key only when it is short and safe", () => {
      expect(
        register({ metadata: { "": "empty", ["k".repeat(129)]: "long", "bad key\n": "x" } }),
      ).toEqual([
        violation('metadata[""]', "key must be at least 1 characters"),
        violation("metadata[…]", "key must be at most 128 characters"),
      ]);
    });

    it("checks map values under the key's path", () => {
      expect(register({ metadata: { env: "x".repeat(513) } })).toEqual([
        violation('metadata["env"]', "must be at most 512 characters"),
      ]);
      expect(register({ metadata: { "a b": "x".repeat(513) } })).toEqual([
        violation("metadata[…]", "must be at most 512 characters"),
      ]);
    });

    it("checks each list element under its index, empty elements included", () => {
      expect(register({ tags: ["ok", "not ok", ""] })).toEqual([
        violation("tags[1]", "must match ^[A-Za-z0-9._:-]+$"),
        violation("tags[2]", "must be at least 1 characters"),
      ]);
    });

    it("checks `in` on list elements", () => {
      const validateRun = validatorOf(RunWorkflowRequestSchema);
      const run = create(RunWorkflowRequestSchema, { sources: ["github", "gitlab"] });
      expect(validateRun(run)).toEqual([
        violation("sources[1]", "must be one of: github, jira, confluence, swagger"),
      ]);
    });

    it("checks the length of a list and then skips its elements", () => {
      const validateRun = validatorOf(RunWorkflowRequestSchema);
      const run = create(RunWorkflowRequestSchema, { sources: Array(17).fill("gitlab") });
      expect(validateRun(run)).toEqual([violation("sources", "must have at most 16 items")]);
    });
  });

  describe("numbers", () => {
    it("checks an inclusive upper bound", () => {
      expect(register({ ttlSeconds: 86400 })).toEqual([]);
      expect(register({ ttlSeconds: 86401 })).toEqual([
        violation("ttl_seconds", "must be ≤ 86400"),
      ]);
    });

    it("checks an inclusive lower bound, also on zero", () => {
      const validateDigest = validatorOf(GetDigestRequestSchema);
      expect(validateDigest(create(GetDigestRequestSchema, { buckets: 1 }))).toEqual([]);
      expect(validateDigest(create(GetDigestRequestSchema, { buckets: 4096 }))).toEqual([]);
      expect(validateDigest(create(GetDigestRequestSchema, { buckets: 0 }))).toEqual([
        violation("buckets", "must be ≥ 1"),
      ]);
      expect(validateDigest(create(GetDigestRequestSchema, { buckets: 4097 }))).toEqual([
        violation("buckets", "must be ≤ 4096"),
      ]);
    });
  });

  describe("max_bytes", () => {
    const validateReport = validatorOf(RequestReportRequestSchema);

    it("accepts a Struct payload within the limit", () => {
      const request = create(RequestReportRequestSchema, {
        kind: "generate",
        payload: { since: "2024-01-01", repos: ["a", "b"], nested: { depth: 2 } },
      });
      expect(validateReport(request)).toEqual([]);
    });

    it("rejects a Struct payload over the limit", () => {
      const request = create(RequestReportRequestSchema, {
        kind: "pr_confidence",
        payload: { blob: "x".repeat(65536) },
      });
      expect(validateReport(request)).toEqual([
        violation("payload", "must be at most 65536 bytes"),
      ]);
    });
  });
});

describe("compileValidator on nested and recursive messages", () => {
  const { Node, Tree, Loop, BadPattern, WrongRule } = testSchemas();
  const validateNode = validatorOf(Node);

  it("recurses into message fields, lists and maps of messages, naming the full path", () => {
    const node = create(Node, {
      name: "ok",
      child: { name: "toolong", child: { name: "" } },
      children: [{ name: "ok" }, { name: "toolong" }],
      byKey: { a: { name: "toolong" }, "b c": { name: "toolong" } },
    });
    expect(validateNode(node)).toEqual([
      violation("child.name", "must be at most 3 characters"),
      violation("child.child.name", "is required"),
      violation("children[1].name", "must be at most 3 characters"),
      violation('by_key["a"].name', "must be at most 3 characters"),
      violation("by_key[…].name", "must be at most 3 characters"),
    ]);
  });

  it("checks a required message field and 64-bit bounds", () => {
    const node = create(Node, { name: "ok", count: -1n });
    const required = validatorOf(Tree)(create(Tree));
    expect(validateNode(node)).toEqual([violation("count", "must be ≥ 0")]);
    expect(required).toEqual([violation("root", "is required")]);
  });

  it("returns undefined for a recursive message without rules", () => {
    expect(compileValidator(Loop)).toBeUndefined();
  });

  it("throws at compile time on an invalid pattern or a rule that does not fit", () => {
    expect(() => compileValidator(BadPattern)).toThrow(/test\.BadPattern\.name: invalid pattern/);
    expect(() => compileValidator(WrongRule)).toThrow(
      /test\.WrongRule\.count: rule max_len does not apply to number/,
    );
  });
});

/** Schemas the real protos lack: nesting, recursion, a 64-bit bound and malformed rules. */
function testSchemas() {
  const { STRING, INT64, MESSAGE } = FieldDescriptorProto_Type;
  const file = create(FileDescriptorProtoSchema, {
    name: "test/nested.proto",
    package: "test",
    syntax: "proto3",
    dependency: [file_google_protobuf_struct.proto.name],
    messageType: [
      {
        name: "Node",
        field: [
          fieldProto("name", 1, STRING, { rules: { required: true, maxLen: 3 } }),
          fieldProto("child", 2, MESSAGE, { typeName: ".test.Node" }),
          fieldProto("children", 3, MESSAGE, { typeName: ".test.Node", repeated: true }),
          fieldProto("by_key", 4, MESSAGE, {
            typeName: ".test.Node.ByKeyEntry",
            repeated: true,
          }),
          fieldProto("count", 5, INT64, { rules: { gte: 0, lte: 10 } }),
          fieldProto("extra", 6, MESSAGE, { typeName: ".google.protobuf.Struct" }),
        ],
        nestedType: [
          {
            name: "ByKeyEntry",
            options: { mapEntry: true },
            field: [
              fieldProto("key", 1, STRING),
              fieldProto("value", 2, MESSAGE, { typeName: ".test.Node" }),
            ],
          },
        ],
      },
      {
        name: "Tree",
        field: [
          fieldProto("root", 1, MESSAGE, { typeName: ".test.Node", rules: { required: true } }),
        ],
      },
      {
        name: "Loop",
        field: [
          fieldProto("next", 1, MESSAGE, { typeName: ".test.Loop" }),
          fieldProto("extra", 2, MESSAGE, { typeName: ".google.protobuf.Struct" }),
        ],
      },
      {
        name: "BadPattern",
        field: [fieldProto("name", 1, STRING, { rules: { pattern: "([a-z" } })],
      },
      { name: "WrongRule", field: [fieldProto("count", 1, INT64, { rules: { maxLen: 3 } })] },
    ],
  });
  const registry = createFileRegistry(file, (name) =>
    name === file_google_protobuf_struct.proto.name ? file_google_protobuf_struct : undefined,
  );
  const get = (name: string): DescMessage => {
    const schema = registry.getMessage(`test.${name}`);
    if (schema === undefined) throw new Error(`test.${name} missing`);
    return schema;
  };
  return {
    Node: get("Node"),
    Tree: get("Tree"),
    Loop: get("Loop"),
    BadPattern: get("BadPattern"),
    WrongRule: get("WrongRule"),
  };
}

function fieldProto(
  name: string,
  number: number,
  type: FieldDescriptorProto_Type,
  shape: {
    typeName?: string;
    repeated?: boolean;
    rules?: MessageInitShape<typeof FieldRulesSchema>;
  } = {},
): FieldDescriptorProto {
  // Custom options travel as unknown fields of FieldOptions, exactly as protoc emits them.
  const options = create(FieldOptionsSchema);
  if (shape.rules !== undefined) {
    setExtension(options, field, create(FieldRulesSchema, shape.rules));
  }
  return create(FieldDescriptorProtoSchema, {
    name,
    number,
    type,
    label: shape.repeated
      ? FieldDescriptorProto_Label.REPEATED
      : FieldDescriptorProto_Label.OPTIONAL,
    typeName: shape.typeName ?? "",
    options,
  });
}
