import { createMemoryDlqStore } from "../../src/dlq/memory-dlq-store.js";
import { dlqStoreContract } from "./dlq-store.contract.js";

dlqStoreContract("memory", {
  create: async (limits) => {
    const store = createMemoryDlqStore(limits);
    await store.open();
    return store;
  },
  cleanup: async () => {},
});
