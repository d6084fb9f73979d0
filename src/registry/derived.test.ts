import { describe, expect, it } from "vitest";
import { forgetDerived, forgottenWhenSuperseded } from "./derived.js";
import type { RegistryEntry, Tombstone } from "./model.js";
import { RegistryView } from "./registry-view.js";

// What outer layers keep on an entry or tombstone (its API message, its encodings) is dropped
// when a newer change of the name supersedes it, and only then.

const cached: unique symbol = Symbol("test: derived");
forgottenWhenSuperseded(cached);

type Carrier = { [cached]?: string };

function entry(name: string, revision: number): RegistryEntry & Carrier {
  return {
    name,
    baseUrl: "http://127.0.0.1:1",
    openapiUrl: "",
    healthUrl: "http://127.0.0.1:1/health",
    endpoints: [],
    metadata: {},
    tags: [],
    version: "",
    ttlSeconds: 0,
    status: "UNKNOWN",
    registeredAt: 1,
    lastHeartbeat: 1,
    updatedAt: 1,
    leaseExpiresAt: 0,
    origin: "node-a",
    hlc: BigInt(revision),
    revision,
  };
}

function tombstone(name: string, revision: number): Tombstone & Carrier {
  return { name, revision, deletedAt: 1, origin: "node-a", hlc: BigInt(revision) };
}

describe("derived values kept on entries and tombstones", () => {
  it("are forgotten when a newer put or delete supersedes their carrier, and kept until then", () => {
    const view = new RegistryView();
    const first = entry("svc", 1);
    view.apply({ type: "put", revision: 1, entry: first });
    first[cached] = "message of revision 1";
    const other = entry("other", 2);
    view.apply({ type: "put", revision: 2, entry: other });
    other[cached] = "message of other";
    expect(first[cached]).toBe("message of revision 1");

    const second = entry("svc", 3);
    view.apply({ type: "put", revision: 3, entry: second });
    second[cached] = "message of revision 3";
    expect(first[cached]).toBeUndefined();
    expect(other[cached]).toBe("message of other");

    const deleted = tombstone("svc", 4);
    view.apply({ type: "delete", revision: 4, tombstone: deleted });
    deleted[cached] = "message of the tombstone";
    expect(second[cached]).toBeUndefined();

    view.apply({ type: "put", revision: 5, entry: entry("svc", 5) });
    expect(deleted[cached]).toBeUndefined();
    // The superseded versions stay in the change log, for readers resuming from a revision.
    expect(view.changesSince(0)?.map((change) => change.revision)).toEqual([1, 2, 3, 4, 5]);
  });

  it("leaves an object without derived values as it is", () => {
    const plain = entry("svc", 1);
    forgetDerived(plain);
    expect(Object.getOwnPropertySymbols(plain)).toEqual([]);
  });
});
