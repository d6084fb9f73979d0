// One orchestrator node's replication core on the memory store, wired as app.ts wires it: clock,
// store, event log, hybrid logical clock, registry and merger. For the replication unit tests,
// which put two or three of these side by side without any transport.
import pino from "pino";
import {
  createMemoryRegistryStore,
  type MemoryRegistryStoreOptions,
} from "../../src/registry/memory-registry-store.js";
import type { DeclaredService } from "../../src/registry/model.js";
import { Registry, type RegistryOptions } from "../../src/registry/registry.js";
import type { RegistryStore } from "../../src/registry/registry-store.js";
import { HybridLogicalClock } from "../../src/replication/hybrid-logical-clock.js";
import { ReplicationMerger } from "../../src/replication/merge.js";
import { createManualClock, type ManualClock } from "./manual-clock.js";
import { createRecordingEventLog, type RecordingEventLog } from "./recording-event-log.js";

export interface ReplicaNode {
  readonly nodeId: string;
  readonly clock: ManualClock;
  readonly store: RegistryStore;
  readonly events: RecordingEventLog;
  readonly hlc: HybridLogicalClock;
  readonly registry: Registry;
  readonly merger: ReplicationMerger;
}

const logger = pino({ level: "silent" });

export function createReplicaNode(
  nodeId: string,
  options: {
    clock?: ManualClock;
    registry?: Partial<RegistryOptions>;
    store?: MemoryRegistryStoreOptions;
  } = {},
): ReplicaNode {
  const clock = options.clock ?? createManualClock();
  const store = createMemoryRegistryStore(options.store);
  const events = createRecordingEventLog({ clock, source: nodeId });
  const hlc = new HybridLogicalClock(clock);
  return {
    nodeId,
    clock,
    store,
    events,
    hlc,
    registry: new Registry({ store, clock, hlc, events, nodeId, logger }, options.registry),
    merger: new ReplicationMerger({ store, hlc, clock, events, nodeId }),
  };
}

/** What a service declares when it registers: a base URL, no lease, nothing else. */
export function declaredService(
  name: string,
  overrides: Partial<DeclaredService> = {},
): DeclaredService {
  return {
    name,
    baseUrl: `http://${name}:8080`,
    openapiUrl: "",
    healthUrl: "",
    endpoints: [],
    metadata: {},
    tags: [],
    version: "1",
    ttlSeconds: 0,
    ...overrides,
  };
}
