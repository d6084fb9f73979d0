import { createHash } from "node:crypto";
import type { RegistryChange } from "../registry/model.js";
import type { RegistryStore } from "../registry/registry-store.js";
import type { ReplicationMerger } from "./merge.js";

/** Buckets of a digest by default: enough that a few differences pull few entries. */
export const defaultBucketCount = 256;

/** The bucket a name falls in, the same on every node. */
export function bucketOf(name: string, bucketCount: number): number {
  return createHash("sha1").update(name).digest().readUInt32BE(0) % bucketCount;
}

/**
 * A digest of the registry: for each bucket, a hash of the (name, stamp, live or deleted) of every
 * entry and tombstone in it. Two nodes holding the same state have the same digest.
 */
export function digestOf(store: RegistryStore, bucketCount: number): string[] {
  const lines: string[][] = Array.from({ length: bucketCount }, () => []);
  const add = (name: string, line: string) => lines[bucketOf(name, bucketCount)]?.push(line);
  for (const e of store.entries()) add(e.name, `${e.name}\u0000${e.hlc}\u0000${e.origin}\u0000+`);
  for (const t of store.tombstones()) {
    add(t.name, `${t.name}\u0000${t.hlc}\u0000${t.origin}\u0000-`);
  }
  return lines.map((bucket) =>
    createHash("sha256").update(bucket.sort().join("\n")).digest("base64url"),
  );
}

/** The entries and tombstones in the given buckets, as changes. */
export function changesInBuckets(
  store: RegistryStore,
  buckets: readonly number[],
  bucketCount: number,
): RegistryChange[] {
  const wanted = new Set(buckets);
  const changes: RegistryChange[] = [];
  for (const entry of store.entries()) {
    if (wanted.has(bucketOf(entry.name, bucketCount))) {
      changes.push({ type: "put", revision: entry.revision, entry });
    }
  }
  for (const tombstone of store.tombstones()) {
    if (wanted.has(bucketOf(tombstone.name, bucketCount))) {
      changes.push({ type: "delete", revision: tombstone.revision, tombstone });
    }
  }
  return changes;
}

/** What anti-entropy needs from a peer, whatever carries the calls. */
export interface AntiEntropyPeer {
  getDigest(bucketCount: number): Promise<{ nodeId: string; bucketHashes: readonly string[] }>;
  getEntries(buckets: readonly number[], bucketCount: number): Promise<RegistryChange[]>;
  /** @returns how many of them changed the peer's registry. */
  pushEntries(nodeId: string, changes: readonly RegistryChange[]): Promise<number>;
}

/** The outcome of one anti-entropy round with one peer. */
export interface AntiEntropyResult {
  readonly nodeId: string;
  /** Entries of ours the peer merged. */
  readonly sent: number;
  /** Entries of the peer's we merged. */
  readonly received: number;
}

/**
 * One anti-entropy round with a peer: compare digests, then for the buckets that differ pull the
 * peer's entries and merge them, and push ours for the peer to merge. It repairs whatever a stream
 * missed (a peer that was down past the change log, a partition) without sending what both have.
 */
export async function syncWithPeer(
  peer: AntiEntropyPeer,
  deps: {
    readonly store: RegistryStore;
    readonly merger: ReplicationMerger;
    readonly nodeId: string;
  },
  bucketCount = defaultBucketCount,
): Promise<AntiEntropyResult> {
  const remote = await peer.getDigest(bucketCount);
  const local = digestOf(deps.store, bucketCount);
  const differing = local.flatMap((hash, i) => (remote.bucketHashes[i] === hash ? [] : [i]));
  if (differing.length === 0) return { nodeId: remote.nodeId, sent: 0, received: 0 };
  let received = 0;
  for (const change of await peer.getEntries(differing, bucketCount)) {
    if ((await deps.merger.merge(change)) === "applied") received++;
  }
  const sent = await peer.pushEntries(
    deps.nodeId,
    changesInBuckets(deps.store, differing, bucketCount),
  );
  return { nodeId: remote.nodeId, sent, received };
}
