import { createMemorySagaStore } from "../../src/sagas/memory-saga-store.js";
import { sagaStoreContract } from "./saga-store.contract.js";

sagaStoreContract("memory", {
  create: async (options, deps) => {
    const store = createMemorySagaStore(deps, options);
    await store.open();
    return store;
  },
  cleanup: async () => {},
});
