import { createMemoryTraceStore } from "../../src/tracing/memory-trace-store.js";
import { traceStoreContract } from "./trace-store.contract.js";

traceStoreContract("memory", { create: (limits) => createMemoryTraceStore(limits) });
