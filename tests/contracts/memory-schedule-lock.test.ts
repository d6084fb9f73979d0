import { createMemoryScheduleLock } from "../../src/schedules/schedule-lock.js";
import { scheduleLockContract } from "./schedule-lock.contract.js";

// In one process, "another orchestrator" is the same map: a node alone shares nothing.
scheduleLockContract("memory", {
  create: async () => createMemoryScheduleLock(),
  twin: async (lock) => lock,
});
