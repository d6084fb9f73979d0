import { createMemoryRegistryStore } from "../../src/registry/memory-registry-store.js";
import { registryStoreContract } from "./registry-store.contract.js";

registryStoreContract("memory", {
  create: async (options) => {
    const store = createMemoryRegistryStore(options);
    await store.open();
    return store;
  },
  cleanup: async () => {},
});
