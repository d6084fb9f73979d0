import type { Client } from "@connectrpc/connect";
import {
  type RegistryService,
  WatchEventType,
  type WatchServicesResponse,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { isTransient, pause } from "./transient.js";

/** What {@link followRegistry} takes. */
export interface FollowRegistryOptions {
  /** Only entries whose name starts with this. Default: every entry. */
  readonly namePrefix?: string;
  /**
   * Resume after this revision (a `revision` from ListServices or an earlier change). Default: 0,
   * which starts with a snapshot of the current entries and a SNAPSHOT_END marker.
   */
  readonly startRevision?: bigint;
  /** Aborting it ends the iteration (without an error). Default: none. */
  readonly signal?: AbortSignal;
  /** Longest wait between two reconnections, in ms. Default: 5,000. */
  readonly maxBackoffMs?: number;
}

/**
 * The registry's changes, as WatchServices sends them, across reconnections: when the stream ends
 * or fails transiently, it is opened again with `start_revision` set to the last change seen, so
 * no change is missed nor repeated while the node's change log still holds them. When it no
 * longer does, the node sends a fresh snapshot marked `compacted` (entries with `snapshot: true`,
 * then SNAPSHOT_END): a consumer holding a copy replaces it then. A failure that is not transient
 * (a missing role, a refused request) ends the iteration with that error.
 */
export async function* followRegistry(
  registry: Client<typeof RegistryService>,
  options: FollowRegistryOptions = {},
): AsyncGenerator<WatchServicesResponse, void, undefined> {
  const signal = options.signal ?? new AbortController().signal;
  const maxBackoffMs = options.maxBackoffMs ?? 5_000;
  let revision = options.startRevision ?? 0n;
  let backoffMs = 100;
  while (!signal.aborted) {
    try {
      const stream = registry.watchServices(
        { startRevision: revision, namePrefix: options.namePrefix ?? "" },
        { signal },
      );
      for await (const change of stream) {
        backoffMs = 100;
        // A snapshot's entries carry their own (older) revisions: only its end marker says
        // where the snapshot stands, and a cut before it means starting over.
        if (!change.snapshot || change.type === WatchEventType.SNAPSHOT_END) {
          revision = change.revision;
        }
        yield change;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (!isTransient(error)) throw error;
    }
    await pause(backoffMs, signal);
    backoffMs = Math.min(backoffMs * 2, maxBackoffMs);
  }
}
