import { create, fromBinary, toBinary, toJson } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  GetServiceResponseSchema,
  ListServicesResponseSchema,
  ServiceEntrySchema,
  WatchServicesResponseSchema,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { encodeBinary, encodeJsonText, sealMessage } from "./message-encoding.js";

const jsonOptions = { useProtoFieldName: true, alwaysEmitImplicit: true };

function entry(name: string, sealed: boolean) {
  const message = create(ServiceEntrySchema, {
    name,
    baseUrl: `http://${name}:8080`,
    endpoints: ["/a", "/b"],
    metadata: { team: "core", "zone.id": "eu" },
    tags: ["blue"],
    ttlSeconds: 30,
    status: 2,
    registeredAt: timestampFromMs(1_700_000_000_000),
    revision: 9_007_199_254_740_993n,
    hlc: 117_684_903_530_921_984n,
  });
  return sealed ? sealMessage(message) : message;
}

describe("encodeBinary", () => {
  it("encodes messages carrying sealed entries exactly as protobuf-es decodes them back", () => {
    const sealed = [entry("a", true), entry("b", true), entry("c", true)];
    const plain = [entry("a", false), entry("b", false), entry("c", false)];
    const response = create(ListServicesResponseSchema, {
      services: sealed,
      count: 3,
      nextPageToken: "t",
      revision: 42n,
    });
    const decoded = fromBinary(
      ListServicesResponseSchema,
      encodeBinary(ListServicesResponseSchema, response),
    );
    const expected = create(ListServicesResponseSchema, {
      services: plain,
      count: 3,
      nextPageToken: "t",
      revision: 42n,
    });
    expect(decoded).toEqual(
      fromBinary(ListServicesResponseSchema, toBinary(ListServicesResponseSchema, expected)),
    );
    expect(response.services).toHaveLength(3); // the response itself is left untouched
  });

  it("encodes a sealed message once and reuses the bytes", () => {
    const sealed = entry("a", true);
    const first = encodeBinary(ServiceEntrySchema, sealed);
    expect(encodeBinary(ServiceEntrySchema, sealed)).toBe(first);
    const watch = create(WatchServicesResponseSchema, { type: 1, service: sealed, revision: 3n });
    const decoded = fromBinary(
      WatchServicesResponseSchema,
      encodeBinary(WatchServicesResponseSchema, watch),
    );
    expect(decoded.service?.name).toBe("a");
    expect(decoded.revision).toBe(3n);
  });

  it("leaves messages without sealed parts to protobuf-es", () => {
    const response = create(GetServiceResponseSchema, { service: entry("a", false) });
    expect(encodeBinary(GetServiceResponseSchema, response)).toEqual(
      toBinary(GetServiceResponseSchema, response),
    );
  });
});

describe("encodeJsonText", () => {
  it("writes the same JSON as toJson, with sealed entries from their cache", () => {
    const response = create(ListServicesResponseSchema, {
      services: [entry("a", true), entry("b", true)],
      count: 2,
      revision: 7n,
    });
    const plain = create(ListServicesResponseSchema, {
      services: [entry("a", false), entry("b", false)],
      count: 2,
      revision: 7n,
    });
    const text = encodeJsonText(ListServicesResponseSchema, response);
    const expected = toJson(ListServicesResponseSchema, plain, jsonOptions) as object;
    expect(JSON.parse(text)).toEqual(expected);
    // Keys come in field order, as toJson writes them.
    expect(Object.keys(JSON.parse(text) as object)).toEqual(Object.keys(expected));
  });

  it("writes an empty list as [] and an absent message as absent", () => {
    const empty = create(ListServicesResponseSchema, {});
    expect(JSON.parse(encodeJsonText(ListServicesResponseSchema, empty))).toEqual({
      services: [],
      count: 0,
      next_page_token: "",
      revision: "0",
      total_size: 0,
    });
    const watch = create(WatchServicesResponseSchema, { service: entry("x", true), revision: 1n });
    const json = JSON.parse(encodeJsonText(WatchServicesResponseSchema, watch)) as Record<
      string,
      unknown
    >;
    expect((json.service as Record<string, unknown>).name).toBe("x");
    expect(json.revision).toBe("1");
  });
});
