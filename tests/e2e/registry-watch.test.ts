import http2 from "node:http2";
import { create, toJson } from "@bufbuild/protobuf";
import {
  type ClientReadableStream,
  credentials,
  Metadata,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  RegistryService,
  WatchEventType,
  WatchServicesRequestSchema,
  type WatchServicesResponse,
  WatchServicesResponseSchema,
} from "../../gen/orchestrator/v1/registry_pb.js";
import {
  createGrpcJsClient,
  type GrpcJsClient,
  grpcJsServiceDefinition,
} from "../../src/clients/grpc-js-client.js";
import { lineReader } from "../support/line-reader.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";

// GET /registry/watch (NDJSON) and WatchServices (gRPC) against a real node on loopback: the
// snapshot, live changes, resuming, compaction, slow watchers, many watchers and shutdown.

type JsonRecord = Record<string, unknown>;

const waitLong = { timeout: 15_000, interval: 50 };
const jsonOptions = { useProtoFieldName: true, alwaysEmitImplicit: true } as const;
// Probes would write status changes into the change log: none unless a test asks.
const quiet = { HEALTH_CHECK_INTERVAL_MS: "3600000" };

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startNode(env: Record<string, string> = {}): Promise<RunningOrchestrator> {
  const node = await startOrchestrator({ env: { ...quiet, ...env } });
  cleanups.push(() => node.close());
  return node;
}

/**
 * A grpc-js client. `ownConnection`: not shared with other clients (grpc-js shares connections to
 * the same address by default), so that a watcher stalled on it cannot use up the HTTP/2
 * connection window that other clients' streams need.
 */
function grpcClientOf(
  node: RunningOrchestrator,
  ownConnection = false,
): GrpcJsClient<typeof RegistryService> {
  const client = createGrpcJsClient(
    RegistryService,
    node.address,
    credentials.createInsecure(),
    ownConnection ? { "grpc.use_local_subchannel_pool": 1 } : {},
  );
  cleanups.push(() => client.close());
  return client;
}

async function register(
  node: RunningOrchestrator,
  name: string,
  extra: JsonRecord = {},
): Promise<JsonRecord> {
  const response = await fetch(`${node.url}/registry/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name, base_url: `http://${name}.internal`, ...extra }),
  });
  const text = await response.text();
  expect(response.status, text).toBe(200);
  return JSON.parse(text) as JsonRecord;
}

async function deregister(node: RunningOrchestrator, name: string): Promise<void> {
  const response = await fetch(`${node.url}/registry/${name}`, { method: "DELETE" });
  expect(response.status, await response.text()).toBe(200);
}

/**
 * A REST watch over HTTP/1.1, read a line at a time. The request is sent at once, but its answer
 * is awaited only by `next()`: a watch that resumes at the current revision sends nothing, not
 * even its headers, until the next change.
 */
function restWatch(node: RunningOrchestrator, query = "") {
  const controller = new AbortController();
  cleanups.push(() => controller.abort());
  const response = fetch(`${node.url}/registry/watch${query}`, { signal: controller.signal });
  let lines: ReturnType<typeof lineReader> | undefined;
  return {
    response,
    async next(): Promise<JsonRecord | undefined> {
      if (lines === undefined) {
        const answer = await response;
        expect(answer.status).toBe(200);
        expect(answer.headers.get("content-type")).toMatch(/^application\/x-ndjson/);
        const body = answer.body as AsyncIterable<Uint8Array> | null;
        expect(body).not.toBeNull();
        lines = lineReader((body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]());
      }
      const line = await lines.next();
      return line === undefined ? undefined : (JSON.parse(line) as JsonRecord);
    },
  };
}

/** Reads `count` lines of a REST watch. */
async function restLines(watch: ReturnType<typeof restWatch>, count: number) {
  const lines: JsonRecord[] = [];
  for (let i = 0; i < count; i++) {
    const line = await watch.next();
    expect(line, `line ${i + 1} of ${count}`).toBeDefined();
    lines.push(line as JsonRecord);
  }
  return lines;
}

/** A raw grpc-js WatchServices call, which a test may pause and resume. */
function grpcWatchCall(
  client: GrpcJsClient<typeof RegistryService>,
  request: { startRevision?: bigint; namePrefix?: string } = {},
): ClientReadableStream<WatchServicesResponse> {
  const method = grpcJsServiceDefinition(RegistryService).watchServices;
  if (method === undefined) throw new Error("no watchServices method");
  const call = client.raw.makeServerStreamRequest(
    method.path,
    method.requestSerialize,
    (bytes: Buffer) => method.responseDeserialize(bytes) as WatchServicesResponse,
    create(WatchServicesRequestSchema, request),
    new Metadata(),
    {},
  );
  call.on("error", () => {}); // each test listens for what it expects
  cleanups.push(() => call.cancel());
  return call;
}

/** Collects a raw call's messages and its end: OK (`error` undefined) or an error status. */
function collect(call: ClientReadableStream<WatchServicesResponse>) {
  const state = {
    messages: [] as WatchServicesResponse[],
    ended: false,
    error: undefined as ServiceError | undefined,
  };
  call.on("data", (message: WatchServicesResponse) => state.messages.push(message));
  call.on("error", (error: ServiceError) => {
    state.error = error;
    state.ended = true;
  });
  call.on("end", () => {
    state.ended = true;
  });
  return state;
}

const isSnapshotEnd = (m: WatchServicesResponse) => m.type === WatchEventType.SNAPSHOT_END;

/** `n` metadata entries of ~1000 characters: large entries fill flow-control windows fast. */
/** About `n` KB of metadata, in values of 500 characters (the limit is 512). */
function bulkyMetadata(n: number): Record<string, string> {
  return Object.fromEntries(Array.from({ length: 2 * n }, (_, i) => [`blob${i}`, "x".repeat(500)]));
}

describe("snapshot, then live changes", () => {
  it("REST: the current entries sorted by name, SNAPSHOT_END, then PUT and DELETE as they happen", async () => {
    const node = await startNode();
    const registered = [];
    for (const name of ["charlie", "alpha", "bravo"]) registered.push(await register(node, name));
    const watch = restWatch(node);
    const snapshot = await restLines(watch, 4);
    expect(snapshot.map((l) => (l.service as JsonRecord | undefined)?.name)).toEqual([
      "alpha",
      "bravo",
      "charlie",
      undefined,
    ]);
    for (const line of snapshot.slice(0, 3)) {
      expect(Object.keys(line).sort()).toEqual([
        "compacted",
        "revision",
        "service",
        "snapshot",
        "type",
      ]);
      expect(line).toMatchObject({
        type: "WATCH_EVENT_TYPE_PUT",
        snapshot: true,
        compacted: false,
      });
      const service = line.service as JsonRecord;
      expect(line.revision).toBe(service.revision);
      expect(registered.map((r) => r.service)).toContainEqual(service);
    }
    expect(snapshot[3]).toEqual({
      type: "WATCH_EVENT_TYPE_SNAPSHOT_END",
      revision: "3",
      snapshot: true,
      compacted: false,
    });

    await register(node, "delta", { tags: ["new"] });
    await register(node, "alpha", { version: "2" });
    await deregister(node, "bravo");
    const live = await restLines(watch, 3);
    expect(live[0]).toMatchObject({
      type: "WATCH_EVENT_TYPE_PUT",
      revision: "4",
      snapshot: false,
      compacted: false,
      service: { name: "delta", tags: ["new"], revision: "4" },
    });
    expect(live[1]).toMatchObject({
      type: "WATCH_EVENT_TYPE_PUT",
      revision: "5",
      service: { name: "alpha", version: "2", revision: "5" },
    });
    expect(live[2]).toMatchObject({
      type: "WATCH_EVENT_TYPE_DELETE",
      revision: "6",
      service: { name: "bravo", revision: "6" },
    });
  });

  it("gRPC: the same events as REST, message for message", async () => {
    const node = await startNode();
    for (const name of ["svc-b", "svc-a", "other"]) await register(node, name);
    const client = grpcClientOf(node);
    const grpc = client.watchServices({})[Symbol.asyncIterator]();
    const rest = restWatch(node);
    const nextGrpc = async () => {
      const next = await grpc.next();
      expect(next.done).toBe(false);
      return next.value as WatchServicesResponse;
    };
    const grpcSnapshot = [await nextGrpc(), await nextGrpc(), await nextGrpc(), await nextGrpc()];
    expect(grpcSnapshot.map((m) => m.type)).toEqual([
      WatchEventType.PUT,
      WatchEventType.PUT,
      WatchEventType.PUT,
      WatchEventType.SNAPSHOT_END,
    ]);
    expect(grpcSnapshot.map((m) => m.service?.name ?? "")).toEqual(["other", "svc-a", "svc-b", ""]);
    expect(grpcSnapshot.map((m) => toJson(WatchServicesResponseSchema, m, jsonOptions))).toEqual(
      await restLines(rest, 4),
    );

    await register(node, "svc-c");
    await deregister(node, "svc-a");
    const grpcLive = [await nextGrpc(), await nextGrpc()];
    expect(grpcLive.map((m) => [m.type, m.service?.name, m.revision])).toEqual([
      [WatchEventType.PUT, "svc-c", 4n],
      [WatchEventType.DELETE, "svc-a", 5n],
    ]);
    expect(grpcLive.map((m) => toJson(WatchServicesResponseSchema, m, jsonOptions))).toEqual(
      await restLines(rest, 2),
    );
    await grpc.return?.();
  });
});

describe("resuming", () => {
  it("?start_revision=N sends the changes after N without a snapshot, then live ones", async () => {
    const node = await startNode();
    for (const name of ["one", "two", "three", "four"]) await register(node, name);
    await deregister(node, "two"); // revision 5

    const rest = restWatch(node, "?start_revision=2");
    const resumed = await restLines(rest, 3);
    expect(resumed.map((l) => [l.type, l.revision, (l.service as JsonRecord).name])).toEqual([
      ["WATCH_EVENT_TYPE_PUT", "3", "three"],
      ["WATCH_EVENT_TYPE_PUT", "4", "four"],
      ["WATCH_EVENT_TYPE_DELETE", "5", "two"],
    ]);
    for (const line of resumed) expect(line.snapshot).toBe(false);

    const client = grpcClientOf(node);
    const grpc = client.watchServices({ startRevision: 3n })[Symbol.asyncIterator]();
    const first = await grpc.next();
    expect(first.value?.type).toBe(WatchEventType.PUT);
    expect(first.value?.revision).toBe(4n);
    expect(first.value?.snapshot).toBe(false);

    // From the current revision: nothing until the next change, which comes first.
    const current = restWatch(node, "?start_revision=5");
    const prefixed = restWatch(node, "?start_revision=1&name_prefix=f");
    await register(node, "five");
    const [live] = await restLines(rest, 1);
    expect(live).toMatchObject({ type: "WATCH_EVENT_TYPE_PUT", revision: "6" });
    expect(await current.next()).toMatchObject({
      type: "WATCH_EVENT_TYPE_PUT",
      revision: "6",
      snapshot: false,
      service: { name: "five" },
    });
    expect((await restLines(prefixed, 2)).map((l) => (l.service as JsonRecord).name)).toEqual([
      "four",
      "five",
    ]);
    const second = await grpc.next();
    expect(second.value?.revision).toBe(5n);
    expect((await grpc.next()).value?.revision).toBe(6n);
    await grpc.return?.();
  });

  it("a revision the change log no longer covers gets a fresh snapshot marked compacted", async () => {
    const logSize = 10;
    const node = await startNode({ REGISTRY_CHANGE_LOG_SIZE: String(logSize) });
    const name = (i: number) => `s${String(i).padStart(2, "0")}`;
    for (let i = 1; i <= 45; i++) await register(node, name(i));
    for (let i = 1; i <= 5; i++) await deregister(node, name(i));
    // 50 changes. The log keeps at least the last 10 and, bounded, not all 50: revision 2 is gone.
    const live = Array.from({ length: 40 }, (_, i) => name(i + 6));

    const stale = restWatch(node, "?start_revision=2");
    const snapshot = await restLines(stale, live.length + 1);
    expect(snapshot.slice(0, -1).map((l) => (l.service as JsonRecord).name)).toEqual(live);
    for (const line of snapshot.slice(0, -1)) {
      expect(line).toMatchObject({ type: "WATCH_EVENT_TYPE_PUT", snapshot: true, compacted: true });
    }
    expect(snapshot.at(-1)).toEqual({
      type: "WATCH_EVENT_TYPE_SNAPSHOT_END",
      revision: "50",
      snapshot: true,
      compacted: true,
    });

    const client = grpcClientOf(node);
    const grpcStale = client.watchServices({ startRevision: 1n })[Symbol.asyncIterator]();
    const first = await grpcStale.next();
    expect(first.value).toMatchObject({ snapshot: true, compacted: true });
    expect(first.value?.service?.name).toBe("s06");
    await grpcStale.return?.();

    // REGISTRY_CHANGE_LOG_SIZE changes back is always covered: a plain resume, no snapshot.
    const covered = restWatch(node, `?start_revision=${50 - logSize}`);
    const changes = await restLines(covered, logSize);
    expect(changes.map((l) => [l.type, l.revision, (l.service as JsonRecord).name])).toEqual([
      ...[41, 42, 43, 44, 45].map((i) => ["WATCH_EVENT_TYPE_PUT", String(i), name(i)]),
      ...[1, 2, 3, 4, 5].map((i) => ["WATCH_EVENT_TYPE_DELETE", String(45 + i), name(i)]),
    ]);
    for (const line of changes) expect(line).toMatchObject({ snapshot: false, compacted: false });
  });

  // A start_revision from the future (a node whose revisions restarted) is not a resume point:
  // the watcher gets a fresh snapshot, marked compacted, rather than silently missing changes.
  it("a start_revision beyond the current revision does not hide later changes", async () => {
    const node = await startNode();
    const client = grpcClientOf(node);
    const state = collect(grpcWatchCall(client, { startRevision: 1000n }));
    await register(node, "after-restart-a");
    await register(node, "after-restart-b");
    // The watch ends cleanly on shutdown: whatever it was sent is in by then.
    await node.app.close();
    await vi.waitFor(() => expect(state.ended).toBe(true), waitLong);
    const names = state.messages.map((m) => m.service?.name);
    expect(names).toContain("after-restart-a");
    expect(names).toContain("after-restart-b");
  });
});

describe("slow watchers", () => {
  it("gRPC: a paused watcher is cut off with RESOURCE_EXHAUSTED naming the revision to resume from", async () => {
    const node = await startNode({ WATCH_QUEUE_SIZE: "10" });
    const client = grpcClientOf(node);
    const call = grpcWatchCall(client);
    const state = collect(call);
    await vi.waitFor(() => expect(state.messages.some(isSnapshotEnd)).toBe(true), waitLong);
    call.pause();

    // ~4 KB per change: far more than HTTP/2 flow control and the socket buffers hold.
    const total = 200;
    for (let i = 0; i < total; i += 10) {
      await Promise.all(
        Array.from({ length: 10 }, (_, j) =>
          register(node, `bulk-${i + j}`, { metadata: bulkyMetadata(4) }),
        ),
      );
    }
    // Writes went on while the watcher stalled, and the node still answers.
    expect((await fetch(`${node.url}/health`)).status).toBe(200);

    call.resume();
    await vi.waitFor(() => expect(state.ended).toBe(true), waitLong);
    expect(state.error?.code).toBe(status.RESOURCE_EXHAUSTED);
    const message = state.error?.details ?? "";
    expect(message).toMatch(/fell behind by more than 10 changes/);
    const resumeFrom = /watch again from revision (\d+)/.exec(message)?.[1];
    expect(resumeFrom).toBeDefined();
    const cutAt = BigInt(resumeFrom ?? "0");

    // Every change up to the cut arrived, in order, without a gap; later ones did not.
    const live = state.messages.filter((m) => !m.snapshot).map((m) => m.revision);
    expect(live.length).toBeGreaterThan(0);
    expect(live.at(-1)).toBe(cutAt);
    expect(live).toEqual(Array.from({ length: live.length }, (_, i) => BigInt(i + 1)));
    expect(cutAt).toBeLessThan(BigInt(total));

    // Resuming where the message says gives the rest, so the watcher lost nothing.
    const rest = grpcWatchCall(client, { startRevision: cutAt });
    const resumed = collect(rest);
    await vi.waitFor(() => expect(resumed.messages.at(-1)?.revision).toBe(BigInt(total)), waitLong);
    expect(resumed.messages.map((m) => m.revision)).toEqual(
      Array.from({ length: total - Number(cutAt) }, (_, i) => cutAt + BigInt(i + 1)),
    );
    expect(resumed.messages.every((m) => !m.snapshot)).toBe(true);
    await register(node, "after-the-storm");
    await vi.waitFor(
      () => expect(resumed.messages.at(-1)?.service?.name).toBe("after-the-storm"),
      waitLong,
    );
  });

  it("REST over h2c: a stream that stops being read ends with a resource_exhausted line", async () => {
    const node = await startNode({ WATCH_QUEUE_SIZE: "10" });
    await register(node, "existing");
    const session = http2.connect(node.url);
    session.on("error", () => {});
    cleanups.push(() => session.destroy());
    const stream = session.request({ ":method": "GET", ":path": "/registry/watch" });
    stream.on("error", () => {});
    stream.setEncoding("utf8");
    let text = "";
    let ended = false;
    stream.on("data", (chunk: string) => {
      text += chunk;
    });
    stream.on("end", () => {
      ended = true;
    });
    stream.on("close", () => {
      ended = true;
    });
    await vi.waitFor(() => expect(text).toContain("WATCH_EVENT_TYPE_SNAPSHOT_END"), waitLong);
    stream.pause();

    const total = 150;
    for (let i = 0; i < total; i += 10) {
      await Promise.all(
        Array.from({ length: 10 }, (_, j) =>
          register(node, `h2-${i + j}`, { metadata: bulkyMetadata(4) }),
        ),
      );
    }
    stream.resume();
    await vi.waitFor(() => expect(ended).toBe(true), waitLong);
    const lines = text
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => JSON.parse(line) as JsonRecord);
    const last = lines.at(-1) as JsonRecord;
    expect(Object.keys(last)).toEqual(["error"]);
    const error = last.error as JsonRecord;
    expect(error.code).toBe("resource_exhausted");
    const resumeFrom = /watch again from revision (\d+)/.exec(String(error.message))?.[1];
    const changes = lines.slice(2, -1).map((l) => Number(l.revision));
    expect(changes.length).toBeGreaterThan(0);
    expect(String(changes.at(-1))).toBe(resumeFrom);
    expect(changes).toEqual(Array.from({ length: changes.length }, (_, i) => i + 2));
    expect((await fetch(`${node.url}/registry?page_size=1`)).status).toBe(200);
  });

  it("50 watchers, half of them stalled, do not hold up registrations", async () => {
    const node = await startNode();
    const client = grpcClientOf(node);
    const stalledClient = grpcClientOf(node, true);
    const grpcWatchers = Array.from({ length: 25 }, (_, i) => {
      const call = grpcWatchCall(i % 2 === 0 ? stalledClient : client);
      return { call, state: collect(call) };
    });
    const restWatchers = Array.from({ length: 25 }, () => restWatch(node));
    await vi.waitFor(() => {
      for (const { state } of grpcWatchers) expect(state.messages.some(isSnapshotEnd)).toBe(true);
    }, waitLong);
    for (const watch of restWatchers) {
      expect(await watch.next()).toMatchObject({ type: "WATCH_EVENT_TYPE_SNAPSHOT_END" });
    }
    const stalled = grpcWatchers.filter((_, i) => i % 2 === 0);
    for (const { call } of stalled) call.pause();

    const total = 100;
    for (let i = 0; i < total; i += 20) {
      await Promise.all(
        Array.from({ length: 20 }, (_, j) => register(node, `svc-${i + j}`, { tags: ["load"] })),
      );
    }
    const list = await fetch(`${node.url}/registry?tag=load`);
    expect(((await list.json()) as JsonRecord).count).toBe(total);

    const reading = grpcWatchers.filter((_, i) => i % 2 === 1);
    await vi.waitFor(() => {
      for (const { state } of reading) expect(state.messages.length).toBe(total + 1);
    }, waitLong);
    for (const { state } of reading) {
      expect(state.messages.slice(1).map((m) => m.revision)).toEqual(
        Array.from({ length: total }, (_, i) => BigInt(i + 1)),
      );
    }
    // Half the REST watchers read everything; the others never read again.
    for (const watch of restWatchers.filter((_, i) => i % 2 === 1)) {
      const lines = await restLines(watch, total);
      expect(lines.at(-1)?.revision).toBe(String(total));
    }
  });
});

describe("shutdown", () => {
  it("app.close() ends REST and gRPC watchers cleanly", async () => {
    // A long grace period: a watcher that held the shutdown up would time the test out.
    const node = await startNode({ SHUTDOWN_TIMEOUT_MS: "600000" });
    await register(node, "present");
    const rest = restWatch(node);
    const resumed = restWatch(node, "?start_revision=1");
    const grpc = collect(grpcWatchCall(grpcClientOf(node)));
    expect(await restLines(rest, 2)).toMatchObject([
      { type: "WATCH_EVENT_TYPE_PUT" },
      { type: "WATCH_EVENT_TYPE_SNAPSHOT_END" },
    ]);
    await vi.waitFor(() => expect(grpc.messages.some(isSnapshotEnd)).toBe(true), waitLong);
    await register(node, "latest");
    expect(await resumed.next()).toMatchObject({ revision: "2", service: { name: "latest" } });
    expect(await rest.next()).toMatchObject({ revision: "2" });
    await vi.waitFor(() => expect(grpc.messages.at(-1)?.revision).toBe(2n), waitLong);

    await node.app.close();
    expect(await rest.next()).toBeUndefined();
    expect(await resumed.next()).toBeUndefined();
    await vi.waitFor(() => expect(grpc.ended).toBe(true), waitLong);
    expect(grpc.error).toBeUndefined();
    expect(grpc.messages).toHaveLength(3);
  });

  // A watcher that stops reading keeps its HTTP/2 stream busy: close() waits the whole grace
  // period for it (see the report), then drops the connection. Bounded, but not prompt.
  it("a stalled watcher holds app.close() no longer than SHUTDOWN_TIMEOUT_MS", async () => {
    const node = await startNode({ SHUTDOWN_TIMEOUT_MS: "1000" });
    const stalledCall = grpcWatchCall(grpcClientOf(node, true));
    const stalled = collect(stalledCall);
    await vi.waitFor(() => expect(stalled.messages.some(isSnapshotEnd)).toBe(true), waitLong);
    stalledCall.pause();
    const total = 100;
    for (let i = 0; i < total; i += 10) {
      await Promise.all(
        Array.from({ length: 10 }, (_, j) =>
          register(node, `fill-${i + j}`, { metadata: bulkyMetadata(4) }),
        ),
      );
    }

    await node.app.close();
    stalledCall.resume();
    await vi.waitFor(() => expect(stalled.ended).toBe(true), waitLong);
    // It got a prefix of the changes, in order, and then lost its connection.
    const revisions = stalled.messages.slice(1).map((m) => m.revision);
    expect(revisions).toEqual(Array.from({ length: revisions.length }, (_, i) => BigInt(i + 1)));
    expect(revisions.length).toBeLessThan(total);
    expect(stalled.error?.code).toBe(status.UNAVAILABLE);
  });
});
