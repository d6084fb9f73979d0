import { randomUUID } from "node:crypto";
import { DomainError } from "../errors/domain-error.js";
import {
  baselinesFull,
  baselineWeight,
  defaultBaselinesMaxBytes,
  type EntryWrite,
  type OpenApiBaseline,
  type RegistryChange,
  type RegistryEntry,
  type ReplicationCursor,
  type Tombstone,
  type TombstoneWrite,
  withRevision,
} from "./model.js";
import type { RegistryStore } from "./registry-store.js";
import { RegistryView, type RegistryViewLimits } from "./registry-view.js";

/** The bounds of the memory store: see {@link RegistryViewLimits} for each and its default. */
export interface MemoryRegistryStoreOptions extends Partial<RegistryViewLimits> {
  /** Bytes all OpenAPI baselines may take together (see `baselineWeight`). Default 64 MiB. */
  readonly baselinesMaxBytes?: number;
}

/**
 * The embedded default: the registry lives in this process and is gone when it stops.
 * @throws RangeError when a limit is not a positive integer.
 */
export function createMemoryRegistryStore(options: MemoryRegistryStoreOptions = {}): RegistryStore {
  const { baselinesMaxBytes = defaultBaselinesMaxBytes, ...limits } = options;
  const view = new RegistryView(limits);
  let baselineBytes = 0;
  const baselines = new Map<string, OpenApiBaseline>();
  const cursors = new Map<string, ReplicationCursor>();
  // The revisions of a memory store start over at every start: so does its history.
  const historyId = randomUUID();
  let nodeId: string | undefined;

  const forgetBaseline = (name: string): boolean => {
    const baseline = baselines.get(name);
    if (baseline === undefined) return false;
    baselineBytes -= baselineWeight(baseline);
    return baselines.delete(name);
  };

  const checkRevision = (name: string, expected: number) => {
    const actual = view.get(name)?.revision ?? 0;
    if (actual !== expected) {
      throw new DomainError("conflict", `${name} changed meanwhile (revision ${actual})`);
    }
  };

  return {
    open: async () => {},
    close: async () => {},
    get revision() {
      return view.revision;
    },
    get compactedRevision() {
      return view.compactedRevision;
    },
    get size() {
      return view.size;
    },
    get bytes() {
      return view.bytes;
    },
    get: (name) => view.get(name),
    entries: () => view.entries(),
    tombstone: (name) => view.tombstone(name),
    tombstones: () => view.tombstones(),
    // Nothing here outlives the process: the caller emits events after the write.
    recordsEvents: false,

    async put(write: EntryWrite, expectedRevision: number): Promise<RegistryEntry> {
      checkRevision(write.name, expectedRevision);
      view.checkCapacity(write);
      const entry = withRevision(write, view.revision + 1);
      view.apply({ type: "put", revision: entry.revision, entry });
      return entry;
    },

    async remove(write: TombstoneWrite, expectedRevision: number): Promise<Tombstone> {
      checkRevision(write.name, expectedRevision);
      const tombstone: Tombstone = { ...write, revision: view.revision + 1 };
      const change: RegistryChange = { type: "delete", revision: tombstone.revision, tombstone };
      view.apply(change);
      return tombstone;
    },

    purgeTombstones: async (deletedBefore) => view.dropTombstones(deletedBefore),
    sync: async () => {},
    changesSince: (revision, limit) => view.changesSince(revision, limit),
    tombstoneCutoff: (max) => view.tombstoneCutoff(max),
    onChange: (listener) => view.onChange(listener),
    historyId,
    ensureNodeId: async (candidate) => {
      nodeId ??= candidate;
      return nodeId;
    },
    getCursor: async (peer) => cursors.get(peer),
    putCursor: async (peer, cursor) => {
      cursors.set(peer, cursor);
    },
    getBaseline: async (name) => baselines.get(name),
    putBaseline: async (name, baseline) => {
      if (view.get(name) === undefined) return false;
      const previous = baselines.get(name);
      const grown = baselineWeight(baseline) - (previous ? baselineWeight(previous) : 0);
      if (grown > 0 && baselineBytes + grown > baselinesMaxBytes) {
        throw baselinesFull(baselinesMaxBytes);
      }
      baselines.set(name, baseline);
      baselineBytes += grown;
      return true;
    },
    deleteBaseline: async (name) => {
      forgetBaseline(name);
    },
    purgeBaselines: async () => {
      let forgotten = 0;
      for (const name of [...baselines.keys()]) {
        if (view.get(name) === undefined && forgetBaseline(name)) forgotten += 1;
      }
      return forgotten;
    },
  };
}
