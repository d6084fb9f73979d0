import { describe, expect, it } from "vitest";
import { entryWrite } from "../../tests/contracts/registry-store.contract.js";
import { DomainError } from "../errors/domain-error.js";
import { createMemoryRegistryStore } from "./memory-registry-store.js";
import { type WatchEvent, watchRegistry } from "./registry-watch.js";

/** Takes `n` events from a watch, then stops it. */
async function take(events: AsyncGenerator<WatchEvent>, n: number): Promise<WatchEvent[]> {
  const taken: WatchEvent[] = [];
  for await (const event of events) {
    taken.push(event);
    if (taken.length === n) break;
  }
  return taken;
}

const summary = (e: WatchEvent) =>
  e.type === "put"
    ? `put ${e.entry.name}@${e.revision}${e.snapshot ? " snap" : ""}${e.compacted ? " compacted" : ""}`
    : e.type === "delete"
      ? `delete ${e.tombstone.name}@${e.revision}`
      : `end@${e.revision}${e.compacted ? " compacted" : ""}`;

describe("watchRegistry", () => {
  it("sends a sorted snapshot, a marker, then live changes", async () => {
    const store = createMemoryRegistryStore();
    await store.put(entryWrite("b"), 0);
    await store.put(entryWrite("a"), 0);
    const controller = new AbortController();
    const watch = watchRegistry(store, {
      startRevision: 0,
      namePrefix: "",
      maxQueue: 100,
      signal: controller.signal,
    });
    const first = await take(watch, 3);
    expect(first.map(summary)).toEqual(["put a@2 snap", "put b@1 snap", "end@2"]);
    const next = watchRegistry(store, {
      startRevision: 0,
      namePrefix: "",
      maxQueue: 100,
      signal: controller.signal,
    });
    const pending = take(next, 5);
    await store.put(entryWrite("c"), 0);
    await store.remove({ name: "a", deletedAt: 1, origin: "n", hlc: 1n }, 2);
    expect((await pending).map(summary)).toEqual([
      "put a@2 snap",
      "put b@1 snap",
      "end@2",
      "put c@3",
      "delete a@4",
    ]);
  });

  it("resumes after a revision without a snapshot while the log covers it", async () => {
    const store = createMemoryRegistryStore();
    for (const name of ["a", "b", "c"]) await store.put(entryWrite(name), 0);
    const events = await take(
      watchRegistry(store, {
        startRevision: 1,
        namePrefix: "",
        maxQueue: 100,
        signal: new AbortController().signal,
      }),
      2,
    );
    expect(events.map(summary)).toEqual(["put b@2", "put c@3"]);
  });

  it("sends a fresh snapshot, marked compacted, when the log no longer covers the revision", async () => {
    const store = createMemoryRegistryStore({ changeLogSize: 2 });
    for (const name of ["a", "b", "c", "d"]) await store.put(entryWrite(name), 0);
    const events = await take(
      watchRegistry(store, {
        startRevision: 1,
        namePrefix: "",
        maxQueue: 100,
        signal: new AbortController().signal,
      }),
      5,
    );
    expect(events.map(summary)).toEqual([
      "put a@1 snap compacted",
      "put b@2 snap compacted",
      "put c@3 snap compacted",
      "put d@4 snap compacted",
      "end@4 compacted",
    ]);
  });

  it("filters by name prefix", async () => {
    const store = createMemoryRegistryStore();
    for (const name of ["api-a", "web-a", "api-b"]) await store.put(entryWrite(name), 0);
    const events = await take(
      watchRegistry(store, {
        startRevision: 0,
        namePrefix: "api-",
        maxQueue: 100,
        signal: new AbortController().signal,
      }),
      3,
    );
    expect(events.map(summary)).toEqual(["put api-a@1 snap", "put api-b@3 snap", "end@3"]);
  });

  it("cuts off a watcher that falls behind, naming where to resume", async () => {
    const store = createMemoryRegistryStore();
    const watch = watchRegistry(store, {
      startRevision: 0,
      namePrefix: "",
      maxQueue: 3,
      signal: new AbortController().signal,
    });
    expect((await watch.next()).value).toMatchObject({ type: "snapshot_end", revision: 0 });
    for (let i = 0; i < 10; i++) await store.put(entryWrite(`s${i}`), 0);
    const received: WatchEvent[] = [];
    const error = await (async () => {
      for await (const event of watch) received.push(event);
    })().catch((e: unknown) => e);
    // Ten changes behind, more than the three it may lag: cut before it reads on, at its place.
    expect(received).toEqual([]);
    expect(error).toBeInstanceOf(DomainError);
    expect((error as DomainError).kind).toBe("resource_exhausted");
    expect((error as DomainError).message).toBe(
      "the watcher fell behind by more than 3 changes: watch again from revision 0",
    );
  });

  it("reads on at its own pace while it lags by no more than maxQueue", async () => {
    const store = createMemoryRegistryStore();
    const watch = watchRegistry(store, {
      startRevision: 0,
      namePrefix: "",
      maxQueue: 5,
      signal: new AbortController().signal,
    });
    expect((await watch.next()).value).toMatchObject({ type: "snapshot_end", revision: 0 });
    for (let i = 0; i < 4; i++) await store.put(entryWrite(`s${i}`), 0);
    expect((await take(watch, 4)).map((e) => e.revision)).toEqual([1, 2, 3, 4]);
  });

  it("keeps only its place: a stalled watcher is cut once the log drops what it has not read", async () => {
    const store = createMemoryRegistryStore({ changeLogSize: 10 });
    const watch = watchRegistry(store, {
      startRevision: 0,
      namePrefix: "",
      maxQueue: 1_000,
      signal: new AbortController().signal,
    });
    expect((await watch.next()).value).toMatchObject({ type: "snapshot_end", revision: 0 });
    // Far more than the log keeps, while the watcher reads nothing.
    for (let i = 0; i < 50; i++) await store.put(entryWrite(`s${i}`), 0);
    const error = await watch.next().catch((e: unknown) => e);
    expect((error as DomainError).kind).toBe("resource_exhausted");
    expect((error as DomainError).message).toBe(
      "the watcher fell behind what the change log still holds: watch again from revision 0",
    );
  });

  it("ends when its signal aborts, and unsubscribes", async () => {
    const store = createMemoryRegistryStore();
    const controller = new AbortController();
    const watch = watchRegistry(store, {
      startRevision: 0,
      namePrefix: "",
      maxQueue: 10,
      signal: controller.signal,
    });
    await watch.next();
    const ended = watch.next();
    controller.abort();
    expect(await ended).toEqual({ done: true, value: undefined });
  });
});
