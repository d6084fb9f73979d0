import { describe, expect, it } from "vitest";
import { entryWrite } from "../../tests/contracts/registry-store.contract.js";
import { createReplicaNode, type ReplicaNode } from "../../tests/support/replica-node.js";
import type { DeclaredService, RegistryChange, RegistryEntry } from "../registry/model.js";
import type { RegistryStore } from "../registry/registry-store.js";
import {
  type AntiEntropyPeer,
  bucketOf,
  changesInBuckets,
  defaultBucketCount,
  digestOf,
  syncWithPeer,
} from "./anti-entropy.js";

function declared(name: string): DeclaredService {
  const { baseUrl, openapiUrl, healthUrl, endpoints, metadata, tags, version, ttlSeconds } =
    entryWrite(name);
  return { name, baseUrl, openapiUrl, healthUrl, endpoints, metadata, tags, version, ttlSeconds };
}

function putOf(name: string, hlc: bigint, origin: string): RegistryChange {
  const entry: RegistryEntry = { ...entryWrite(name, { origin, hlc }), revision: 7 };
  return { type: "put", revision: 7, entry };
}

function deleteOf(name: string, hlc: bigint, origin: string): RegistryChange {
  return {
    type: "delete",
    revision: 8,
    tombstone: { name, revision: 8, deletedAt: 1_700_000_000_000, origin, hlc },
  };
}

async function mergeAll(node: ReplicaNode, changes: readonly RegistryChange[]): Promise<void> {
  for (const change of changes) await node.merger.merge(change);
}

function stateOf(store: RegistryStore): string[] {
  const lines = [...store.entries()].map((e) => `${e.name} + ${e.hlc}@${e.origin}`);
  for (const t of store.tombstones()) lines.push(`${t.name} - ${t.hlc}@${t.origin}`);
  return lines.sort();
}

/**
 * Node `peer` answering anti-entropy in process, as PeerService does over gRPC: its digest, its
 * entries and its merger, with the calls counted.
 */
function peerOver(peer: ReplicaNode): AntiEntropyPeer & { readonly calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async getDigest(bucketCount) {
      calls.push("getDigest");
      return { nodeId: peer.nodeId, bucketHashes: digestOf(peer.store, bucketCount) };
    },
    async getEntries(buckets, bucketCount) {
      calls.push("getEntries");
      return changesInBuckets(peer.store, buckets, bucketCount);
    },
    async pushEntries(_nodeId, changes) {
      calls.push("pushEntries");
      let applied = 0;
      for (const change of changes) {
        if ((await peer.merger.merge(change)) === "applied") applied++;
      }
      return applied;
    },
  };
}

const shared = Array.from({ length: 20 }, (_, i) =>
  putOf(`shared-${i}`, BigInt(100 + i), "node-c"),
);

describe("bucketOf", () => {
  it("puts a name in the same bucket every time, within range, spreading names over buckets", () => {
    expect(bucketOf("payments", 256)).toBe(bucketOf("payments", 256));
    const hit = new Set<number>();
    for (let i = 0; i < 1_000; i++) {
      const bucket = bucketOf(`svc-${i}`, 16);
      expect(bucket).toBeGreaterThanOrEqual(0);
      expect(bucket).toBeLessThan(16);
      hit.add(bucket);
    }
    expect(hit.size).toBe(16);
  });
});

describe("digestOf", () => {
  it("is the same for two stores holding the same state, whatever their revisions and statuses", async () => {
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    const changes = [...shared, deleteOf("gone", 50n, "node-c")];
    await mergeAll(a, changes);
    // B gets there by another road: a write of its own, later deleted, and the reverse order.
    const { entry } = await b.registry.register(
      { ...declared("local"), ttlSeconds: 0 },
      { correlationId: "", traceId: "" },
    );
    await mergeAll(b, [...changes].reverse());
    const deleteLocal = deleteOf("local", entry.hlc + 1n, "node-b");
    await mergeAll(b, [deleteLocal]);
    await mergeAll(a, [deleteLocal]);
    // Health is learned by each node on its own: not part of the digest.
    await b.registry.setHealth("shared-3", "HEALTHY", {});
    expect(a.store.revision).not.toBe(b.store.revision);

    const digest = digestOf(a.store, defaultBucketCount);
    expect(digest).toHaveLength(defaultBucketCount);
    expect(digestOf(b.store, defaultBucketCount)).toEqual(digest);
  });

  it("differs in exactly the bucket of the one entry that differs", async () => {
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    await mergeAll(a, shared);
    await mergeAll(b, shared);
    await b.merger.merge(putOf("shared-7", 999n, "node-b"));
    const left = digestOf(a.store, 64);
    const right = digestOf(b.store, 64);
    const differing = left.flatMap((hash, i) => (right[i] === hash ? [] : [i]));
    expect(differing).toEqual([bucketOf("shared-7", 64)]);
  });

  it("tells a live entry from a tombstone with the same stamp", async () => {
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    await a.merger.merge(putOf("svc", 10n, "node-c"));
    await b.merger.merge(deleteOf("svc", 10n, "node-c"));
    expect(digestOf(a.store, 8)).not.toEqual(digestOf(b.store, 8));
  });
});

describe("changesInBuckets", () => {
  it("returns the entries and tombstones of the given buckets, and only those", async () => {
    const a = createReplicaNode("node-a");
    await mergeAll(a, [...shared, deleteOf("gone", 50n, "node-c")]);
    const buckets = [bucketOf("gone", 8), bucketOf("shared-0", 8)];
    const changes = changesInBuckets(a.store, buckets, 8);
    const names = changes.map((c) => (c.type === "put" ? c.entry.name : c.tombstone.name));
    const expected = [...shared.map((c) => (c.type === "put" ? c.entry.name : "")), "gone"].filter(
      (name) => buckets.includes(bucketOf(name, 8)),
    );
    expect(names.sort()).toEqual(expected.sort());
    expect(changes.find((c) => c.type === "delete")).toMatchObject({
      tombstone: { name: "gone", hlc: 50n },
    });
  });
});

describe("syncWithPeer", () => {
  async function divergedNodes(): Promise<{ a: ReplicaNode; b: ReplicaNode }> {
    const a = createReplicaNode("node-a");
    const b = createReplicaNode("node-b");
    await mergeAll(a, shared);
    await mergeAll(b, shared);
    // Only on A: one entry. Newer on A: "d" (a put) and "t" (a delete of what B has live).
    await mergeAll(a, [
      putOf("a-only", 10n, "node-a"),
      putOf("d", 200n, "node-a"),
      deleteOf("t", 300n, "node-a"),
    ]);
    // Only on B: three entries. Newer on B: "c".
    await mergeAll(b, [
      putOf("b-1", 10n, "node-b"),
      putOf("b-2", 11n, "node-b"),
      putOf("b-3", 12n, "node-b"),
      putOf("c", 200n, "node-b"),
      putOf("d", 100n, "node-b"),
      putOf("t", 150n, "node-b"),
    ]);
    await a.merger.merge(putOf("c", 100n, "node-a"));
    return { a, b };
  }

  for (const bucketCount of [defaultBucketCount, 4]) {
    it(`makes two stores identical and counts what each side merged (${bucketCount} buckets)`, async () => {
      const { a, b } = await divergedNodes();
      const peer = peerOver(b);
      const result = await syncWithPeer(peer, a, bucketCount);
      expect(result).toEqual({ nodeId: "node-b", sent: 3, received: 4 });
      expect(stateOf(a.store)).toEqual(stateOf(b.store));
      expect(a.store.get("c")?.origin).toBe("node-b");
      expect(b.store.get("d")?.origin).toBe("node-a");
      expect(b.store.get("t")).toBeUndefined();
      expect(b.store.tombstone("t")?.origin).toBe("node-a");
      expect(digestOf(a.store, bucketCount)).toEqual(digestOf(b.store, bucketCount));

      peer.calls.length = 0;
      expect(await syncWithPeer(peer, a, bucketCount)).toEqual({
        nodeId: "node-b",
        sent: 0,
        received: 0,
      });
      // Equal digests: nothing is pulled or pushed at all.
      expect(peer.calls).toEqual(["getDigest"]);
    });
  }

  it("syncs the other way round to the same state", async () => {
    const { a, b } = await divergedNodes();
    expect(await syncWithPeer(peerOver(a), b)).toEqual({ nodeId: "node-a", sent: 4, received: 3 });
    expect(stateOf(a.store)).toEqual(stateOf(b.store));
  });
});
