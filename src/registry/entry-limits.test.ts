import { getOption } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { field as fieldRulesOption } from "../../gen/orchestrator/v1/options_pb.js";
import { RegisterServiceRequestSchema } from "../../gen/orchestrator/v1/registry_pb.js";
import {
  checkDeclaredSize,
  declaredBytes,
  entryLimits,
  problemWithDeclaration,
} from "./entry-limits.js";
import type { DeclaredService } from "./model.js";

function declared(overrides: Partial<DeclaredService> = {}): DeclaredService {
  return {
    name: "billing",
    baseUrl: "http://billing:8080",
    openapiUrl: "",
    healthUrl: "",
    endpoints: ["/a"],
    metadata: { team: "core" },
    tags: ["prod"],
    version: "1.0.0",
    ttlSeconds: 30,
    ...overrides,
  };
}

const rulesOf = (name: string) => {
  const found = RegisterServiceRequestSchema.fields.find((f) => f.name === name);
  if (found === undefined) throw new Error(`no field ${name}`);
  return getOption(found, fieldRulesOption);
};

describe("entryLimits", () => {
  // Replicated entries are held to these; registrations to the proto's field rules: one set.
  it("agrees with the field rules of RegisterServiceRequest", () => {
    expect(rulesOf("name").maxLen).toBe(entryLimits.nameLength);
    for (const url of ["base_url", "openapi_url", "health_url"]) {
      expect(rulesOf(url).maxLen, url).toBe(entryLimits.urlLength);
    }
    expect(rulesOf("endpoints").maxItems).toBe(entryLimits.endpoints);
    expect(rulesOf("endpoints").items?.maxLen).toBe(entryLimits.endpointLength);
    expect(rulesOf("metadata").maxItems).toBe(entryLimits.metadataPairs);
    expect(rulesOf("metadata").keys?.maxLen).toBe(entryLimits.metadataKeyLength);
    expect(rulesOf("metadata").items?.maxLen).toBe(entryLimits.metadataValueLength);
    expect(rulesOf("tags").maxItems).toBe(entryLimits.tags);
    expect(rulesOf("tags").items?.maxLen).toBe(entryLimits.tagLength);
    expect(rulesOf("version").maxLen).toBe(entryLimits.versionLength);
    expect(rulesOf("ttl_seconds").lte).toBe(entryLimits.ttlSeconds);
  });

  it("counts UTF-8 bytes of every declared string", () => {
    const service = declared({
      openapiUrl: "http://billing:8080/openapi.json",
      metadata: { é: "ü€" },
      endpoints: ["/a", "/bb"],
      tags: ["x"],
    });
    const expected =
      "billing".length +
      "http://billing:8080".length +
      "http://billing:8080/openapi.json".length +
      "1.0.0".length +
      "/a/bb".length +
      "x".length +
      2 + // é
      2 + // ü
      3; // €
    expect(declaredBytes(service)).toBe(expected);
  });

  it("refuses a declaration heavier than 16 KiB as invalid, and passes one at the limit", () => {
    const base = declaredBytes(declared({ metadata: {} }));
    const fits = declared({ metadata: { k: "v".repeat(entryLimits.declaredBytes - base - 1) } });
    expect(declaredBytes(fits)).toBe(entryLimits.declaredBytes);
    expect(() => checkDeclaredSize(fits)).not.toThrow();
    const over = declared({ metadata: { k: "v".repeat(entryLimits.declaredBytes - base) } });
    expect(() => checkDeclaredSize(over)).toThrow(/declares 16385 bytes; at most 16384/);
  });
});

describe("problemWithDeclaration", () => {
  it("passes a registration the API would accept", () => {
    expect(problemWithDeclaration(declared())).toBeUndefined();
    // Code points, as the field rules count: 512 emoji are 1,024 UTF-16 units.
    expect(problemWithDeclaration(declared({ metadata: { k: "😀".repeat(512) } }))).toBeUndefined();
  });

  it.each([
    ["a base_url that is not http(s)", { baseUrl: "ftp://x" }, "base_url"],
    ["a bad health_url", { healthUrl: "nope" }, "health_url"],
    ["a bad openapi_url", { openapiUrl: "file:///etc/passwd" }, "openapi_url"],
    [
      "too many endpoints",
      { endpoints: Array.from({ length: 101 }, (_, i) => `/${i}`) },
      "too many",
    ],
    ["a long endpoint", { endpoints: [`/${"e".repeat(512)}`] }, "endpoint is too long"],
    ["an empty tag", { tags: [""] }, "tag"],
    ["a long metadata key", { metadata: { ["k".repeat(129)]: "v" } }, "metadata key"],
    ["a long metadata value", { metadata: { k: "v".repeat(513) } }, "metadata value"],
    [
      "too much metadata",
      { metadata: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"])) },
      "too much metadata",
    ],
    ["a long version", { version: "v".repeat(65) }, "version"],
    ["a ttl over a day", { ttlSeconds: 86_401 }, "ttl"],
    [
      "over 16 KiB in all",
      {
        metadata: Object.fromEntries(
          Array.from({ length: 40 }, (_, i) => [`k${i}`, "v".repeat(500)]),
        ),
      },
      "too large",
    ],
  ] as const)("refuses %s", (_, overrides, reason) => {
    expect(problemWithDeclaration(declared(overrides as Partial<DeclaredService>))).toContain(
      reason,
    );
  });
});

describe("problemWithDeclaration's URL check", () => {
  // The check as it was, building a URL for every one: the quick path must agree with it.
  const reference = (text: string) => {
    if (text.length > entryLimits.urlLength) return false;
    try {
      const url = new URL(text);
      return (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "";
    } catch {
      return false;
    }
  };
  const urls = [
    "http://billing:8080",
    "https://billing.example.com/openapi.json?x=1#f",
    "http://",
    "https://",
    "http:///path",
    "http://:80",
    "http://[::1]:8080/",
    "http://[::1",
    "http://a b",
    "http://a\tb",
    "http://a%20b",
    "http://xn--nxasmq6b",
    "http://ex ample.com",
    "http://exa%mple.com",
    "http://@host",
    "http://user:pass@host/",
    "http://host:99999",
    "http://1.2.3.4.5",
    "http://0x7f.1",
    "http://256.256.256.256",
    "http://host/\u0000",
    "http://\u00e9xample.com",
    "http://\ud800.com",
    "https://host\\path",
    "HTTP://billing",
    " http://billing",
    "http:billing",
    "ftp://billing",
    "file:///etc/passwd",
    "billing:8080",
    "",
    `http://${"a".repeat(entryLimits.urlLength)}`,
    `http://${"a".repeat(entryLimits.urlLength - 7)}`,
  ];
  it("agrees with parsing each URL", () => {
    for (const url of urls) {
      const problem = problemWithDeclaration(declared({ baseUrl: url }));
      expect(problem === undefined, JSON.stringify(url)).toBe(reference(url));
    }
  });
});
