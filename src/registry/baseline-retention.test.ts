import { pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { entryWrite } from "../../tests/contracts/registry-store.contract.js";
import { DomainError } from "../errors/domain-error.js";
import { type BaselineRetention, createBaselineRetention } from "./baseline-retention.js";
import { createMemoryRegistryStore } from "./memory-registry-store.js";
import type { EntryWrite, OpenApiBaseline } from "./model.js";
import type { RegistryStore } from "./registry-store.js";

const logger = pino({ level: "silent" });
const baseline: OpenApiBaseline = {
  hash: "h",
  operationCount: 1,
  summary: Buffer.from([1, 2, 3]),
  recordedAt: 1,
};

function entry(name: string): EntryWrite {
  return entryWrite(name, { openapiUrl: `http://${name}.internal/openapi.json` });
}

/** A store with live entries `names`, each with a baseline. */
async function storeWith(...names: string[]): Promise<RegistryStore> {
  const store = createMemoryRegistryStore();
  for (const name of names) {
    await store.put(entry(name), 0);
    expect(await store.putBaseline(name, baseline)).toBe(true);
  }
  return store;
}

async function removeEntry(store: RegistryStore, name: string): Promise<void> {
  const revision = store.get(name)?.revision ?? 0;
  await store.remove({ name, deletedAt: 2, origin: "node-test", hlc: 2n }, revision);
}

const started: BaselineRetention[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((retention) => retention.stop()));
});

function start(
  store: Pick<RegistryStore, "onChange" | "deleteBaseline" | "purgeBaselines">,
  retryMs = 60_000,
): BaselineRetention {
  const retention = createBaselineRetention({ store, logger }, { retryMs });
  retention.start();
  started.push(retention);
  return retention;
}

describe("createBaselineRetention", () => {
  it("deletes the baseline of every removed entry, and only theirs", async () => {
    const store = await storeWith("gone", "kept");
    start(store);
    await removeEntry(store, "gone");
    await vi.waitFor(async () => expect(await store.getBaseline("gone")).toBeUndefined());
    expect(await store.getBaseline("kept")).toEqual(baseline);
  });

  it("purges leftovers at start", async () => {
    const store = await storeWith("left", "live");
    await removeEntry(store, "left");
    expect(await store.getBaseline("left")).toEqual(baseline);
    start(store);
    await vi.waitFor(async () => expect(await store.getBaseline("left")).toBeUndefined());
    expect(await store.getBaseline("live")).toEqual(baseline);
  });

  it("catches up a failed delete with a later purge", async () => {
    const store = await storeWith("gone");
    const purges = vi.fn(() => store.purgeBaselines());
    const flaky = {
      onChange: store.onChange,
      deleteBaseline: async () => {
        throw new DomainError("unavailable", "the registry store is unavailable");
      },
      purgeBaselines: purges,
    };
    start(flaky, 50);
    await vi.waitFor(() => expect(purges).toHaveBeenCalledTimes(1)); // at start
    await removeEntry(store, "gone");
    await vi.waitFor(async () => expect(await store.getBaseline("gone")).toBeUndefined());
    expect(purges.mock.calls.length).toBeGreaterThanOrEqual(2);
  });

  it("stops following removals on stop", async () => {
    const store = await storeWith("after-stop");
    const retention = start(store);
    await retention.stop();
    await removeEntry(store, "after-stop");
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await store.getBaseline("after-stop")).toEqual(baseline);
  });
});
