import http2 from "node:http2";
import { afterEach, describe, expect, it, vi } from "vitest";
import { lineReader } from "../support/line-reader.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";

// The event store's REST routes against a real node (memory store) on loopback: history with
// filters and cursor paging, replay, clear, watch (resume, live, slow watchers), and every route's
// bad input.

type JsonRecord = Record<string, unknown>;

const waitLong = { timeout: 20_000, interval: 50 };
// Probes would emit health events: none unless a test asks.
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

interface Reply {
  readonly status: number;
  readonly text: string;
  readonly body: JsonRecord;
}

async function call(
  node: RunningOrchestrator,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const response = await fetch(`${node.url}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { "content-type": "application/json" }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = {};
  }
  return { status: response.status, text, body: parsed as JsonRecord };
}

async function ok(reply: Promise<Reply>): Promise<JsonRecord> {
  const { status, text, body } = await reply;
  expect(status, text).toBe(200);
  return body;
}

async function register(
  node: RunningOrchestrator,
  name: string,
  correlationId?: string,
  extra: JsonRecord = {},
): Promise<void> {
  await ok(
    call(
      node,
      "POST",
      "/registry/register",
      { name, base_url: `http://${name}.internal`, ...extra },
      correlationId ? { "x-correlation-id": correlationId } : {},
    ),
  );
}

/** GET /infrastructure/events/history with `query`; the events of one page and its cursor. */
async function history(node: RunningOrchestrator, query = "") {
  const body = await ok(call(node, "GET", `/infrastructure/events/history${query}`));
  const events = body.events as JsonRecord[];
  expect(body.count).toBe(events.length);
  return { events, next: String(body.next_cursor) };
}

/** Every event of the history (a page of `limit` at a time), once the outbox has stored them. */
async function untilHistory(node: RunningOrchestrator, expected: number, query = "") {
  let events: JsonRecord[] = [];
  await vi.waitFor(async () => {
    events = (await history(node, `?limit=1000${query}`)).events;
    expect(events).toHaveLength(expected);
  }, waitLong);
  return events;
}

const subjects = (events: JsonRecord[]) => events.map((e) => e.subject);

/** A REST watch over HTTP/1.1, read a line at a time. */
function restWatch(node: RunningOrchestrator, query = "") {
  const controller = new AbortController();
  cleanups.push(() => controller.abort());
  const response = fetch(`${node.url}/infrastructure/events/watch${query}`, {
    signal: controller.signal,
  });
  response.catch(() => undefined);
  let lines: ReturnType<typeof lineReader> | undefined;
  return {
    async next(): Promise<JsonRecord> {
      if (lines === undefined) {
        const answer = await response;
        expect(answer.status).toBe(200);
        expect(answer.headers.get("content-type")).toMatch(/^application\/x-ndjson/);
        const body = answer.body as AsyncIterable<Uint8Array> | null;
        if (body === null) throw new Error("no body");
        lines = lineReader(body[Symbol.asyncIterator]());
      }
      const line = await lines.next();
      if (line === undefined) throw new Error("the watch ended");
      return JSON.parse(line) as JsonRecord;
    },
  };
}

/** The next `count` events of a watch (past its first line, which says where it starts). */
async function watchLines(watch: ReturnType<typeof restWatch>, count: number) {
  const lines: JsonRecord[] = [];
  while (lines.length < count) {
    const line = await watch.next();
    if (line.started_after === undefined) lines.push(line.event as JsonRecord);
  }
  return lines;
}

describe("GET /infrastructure/events/history", () => {
  it("lists stored events oldest first, with every field, filtered, a page at a time", async () => {
    const node = await startNode();
    const before = new Date().toISOString();
    await register(node, "alpha", "corr-a");
    await register(node, "beta", "corr-b");
    await register(node, "alpha", "corr-a", { version: "2" });
    await ok(call(node, "DELETE", "/registry/beta", undefined, { "x-correlation-id": "corr-b" }));
    const all = await untilHistory(node, 4);
    expect(all.map((e) => [e.type, e.subject])).toEqual([
      ["registry.service.registered", "alpha"],
      ["registry.service.registered", "beta"],
      ["registry.service.registered", "alpha"],
      ["registry.service.deregistered", "beta"],
    ]);
    expect(Object.keys(all[0] ?? {}).sort()).toEqual([
      "correlation_id",
      "id",
      "payload",
      "replay_of",
      "source",
      "subject",
      "timestamp",
      "trace_id",
      "type",
    ]);
    expect(all[0]).toMatchObject({
      correlation_id: "corr-a",
      source: node.app.node.nodeId,
      replay_of: "",
      payload: { service: "alpha", created: true, revision: 1 },
    });
    expect(String(all[0]?.id)).toMatch(/^\d+-\d+$/);
    expect(Date.parse(String(all[0]?.timestamp))).toBeGreaterThanOrEqual(Date.parse(before));

    // Filters: types (any of), subject, correlation id, time.
    expect(subjects((await history(node, "?subject=alpha")).events)).toEqual(["alpha", "alpha"]);
    const deregistered = await history(node, "?event_types=registry.service.deregistered");
    expect(subjects(deregistered.events)).toEqual(["beta"]);
    const both = await history(
      node,
      "?event_types=registry.service.deregistered&event_types=registry.service.registered&correlation_id=corr-b",
    );
    expect(subjects(both.events)).toEqual(["beta", "beta"]);
    const since = encodeURIComponent(String(all[2]?.timestamp));
    expect((await history(node, `?since=${since}`)).events.length).toBeGreaterThanOrEqual(2);
    expect((await history(node, `?until=${encodeURIComponent(before)}`)).events).toEqual([]);

    // Cursor paging: pages of 1 give each event once, in order; the last page says no more.
    const paged: JsonRecord[] = [];
    let cursor = "";
    for (let page = 0; page < 10; page++) {
      const { events, next } = await history(node, `?limit=1&cursor=${cursor}`);
      paged.push(...events);
      if (next === "") break;
      expect(next).toBe(events.at(-1)?.id);
      cursor = next;
    }
    expect(paged).toEqual(all);
  });
});

describe("POST /infrastructure/events/replay", () => {
  it("delivers the selected events again in their original order; a dry run only lists them", async () => {
    const node = await startNode();
    for (const name of ["one", "two", "three"]) await register(node, name, "replayed");
    await register(node, "other", "not-replayed");
    const stored = await untilHistory(node, 4);
    const dry = await ok(
      call(node, "POST", "/infrastructure/events/replay", {
        correlation_id: "replayed",
        dry_run: true,
      }),
    );
    expect(dry).toMatchObject({ count: 3, dry_run: true });
    expect(dry.replayed_events).toEqual(stored.slice(0, 3));
    const byIds = await ok(
      call(node, "POST", "/infrastructure/events/replay", {
        event_ids: [stored[2]?.id, stored[0]?.id, "1-0"],
        limit: 5,
      }),
    );
    expect(byIds).toMatchObject({ count: 2, dry_run: false });
    expect(byIds.replayed_events).toEqual([stored[0], stored[2]]);
    const limited = await ok(
      call(node, "POST", "/infrastructure/events/replay", {
        event_types: ["registry.service.registered"],
        limit: 2,
      }),
    );
    expect(limited.replayed_events).toEqual(stored.slice(0, 2));
    // A replay is a delivery, not a new stored event.
    expect((await history(node)).events).toEqual(stored);
  });
});

describe("POST /infrastructure/events/clear", () => {
  it("clears what a filter selects or everything, and records each clearing as an event", async () => {
    const node = await startNode();
    await register(node, "keep", "corr-keep");
    await register(node, "drop-1", "corr-drop");
    await register(node, "drop-2", "corr-drop");
    await untilHistory(node, 3);

    const refused = await call(node, "POST", "/infrastructure/events/clear", {});
    expect(refused.status).toBe(400);
    expect(refused.body.code).toBe("invalid_argument");
    expect(String(refused.body.message)).toMatch(/^all: /);

    const cleared = await ok(
      call(
        node,
        "POST",
        "/infrastructure/events/clear",
        { correlation_id: "corr-drop" },
        {
          "x-correlation-id": "the-operator",
        },
      ),
    );
    expect(cleared).toEqual({ cleared_count: 2 });
    const after = await untilHistory(node, 2);
    expect(after.map((e) => [e.type, e.subject])).toEqual([
      ["registry.service.registered", "keep"],
      ["events.cleared", "events"],
    ]);
    expect(after[1]).toMatchObject({
      correlation_id: "the-operator",
      payload: {
        filter: { event_type: "", correlation_id: "corr-drop", before: "", all: false },
        cleared_count: 2,
      },
    });

    expect(await ok(call(node, "POST", "/infrastructure/events/clear", { all: true }))).toEqual({
      cleared_count: 2,
    });
    const last = await untilHistory(node, 1);
    expect(last[0]).toMatchObject({
      type: "events.cleared",
      payload: { filter: { all: true }, cleared_count: 2 },
    });
    // Ids go on after a clear: older cursors keep their meaning.
    expect(String(last[0]?.id) > String(after[1]?.id)).toBe(true);
  });
});

describe("GET /infrastructure/events/watch", () => {
  it("says where it starts at once, then follows live events, filtered", async () => {
    const node = await startNode();
    await register(node, "earlier");
    const [earlier] = await untilHistory(node, 1);
    const watch = restWatch(node, "?subject=watched");
    // The first line comes at once (the status line with it): the watch is in place.
    expect(await watch.next()).toEqual({ started_after: earlier?.id });
    await register(node, "ignored");
    await register(node, "watched");
    await ok(call(node, "DELETE", "/registry/watched"));
    const lines = await watchLines(watch, 2);
    expect(lines.map((e) => [e.type, e.subject, e.replay_of])).toEqual([
      ["registry.service.registered", "watched", ""],
      ["registry.service.deregistered", "watched", ""],
    ]);
    const all = await untilHistory(node, 4);
    expect(lines).toEqual(all.slice(2));
  });

  it("resumes after an id: the stored events after it first, then live ones, without a gap or a repeat", async () => {
    const node = await startNode();
    for (let i = 0; i < 5; i++) await register(node, `before-${i}`);
    const stored = await untilHistory(node, 5);
    const watch = restWatch(node, `?after_id=${stored[1]?.id}`);
    expect(await watch.next()).toEqual({ started_after: stored[1]?.id });
    const first = await watchLines(watch, 3);
    expect(first).toEqual(stored.slice(2));
    for (let i = 0; i < 3; i++) await register(node, `after-${i}`);
    const live = await watchLines(watch, 3);
    expect(subjects(live)).toEqual(["after-0", "after-1", "after-2"]);
    const everything = await untilHistory(node, 8);
    expect([...first, ...live]).toEqual(everything.slice(2));
  });

  it("cuts a watcher that stopped reading with resource_exhausted naming the id to resume after", async () => {
    const node = await startNode({ EVENT_LOG_SIZE: "10" });
    const session = http2.connect(node.url);
    session.on("error", () => {});
    cleanups.push(() => session.destroy());
    const stream = session.request({ ":method": "GET", ":path": "/infrastructure/events/watch" });
    stream.on("error", () => {});
    stream.setEncoding("utf8");
    let text = "";
    let ended = false;
    stream.on("data", (chunk: string) => {
      text += chunk;
    });
    for (const done of ["end", "close"]) stream.on(done, () => (ended = true));
    await vi.waitFor(() => expect(text).toContain("started_after"), waitLong);
    await register(node, "first");
    await vi.waitFor(() => expect(text).toContain('"first"'), waitLong);
    stream.pause();
    // ~2 KB per event (a long base_url): far more than flow control and socket buffers hold.
    const total = 400;
    for (let i = 0; i < total; i += 20) {
      await Promise.all(
        Array.from({ length: 20 }, (_, j) =>
          register(node, `bulk-${i + j}`, undefined, {
            base_url: `http://bulk.internal/${"x".repeat(2_000)}`,
          }),
        ),
      );
    }
    await untilHistory(node, total + 1);
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
    const resumeAfter = /watch again with after_id (\d+-\d+)/.exec(String(error.message))?.[1];
    const delivered = lines.slice(1, -1).map((line) => (line.event as JsonRecord).id);
    expect(delivered.length).toBeLessThan(total + 1);
    expect(resumeAfter).toBe(delivered.at(-1));
    // Resuming there gives the rest: the watcher lost nothing.
    const all = await untilHistory(node, total + 1);
    const rest = restWatch(node, `?after_id=${resumeAfter}`);
    const resumed = await watchLines(rest, all.length - delivered.length);
    expect([...delivered, ...resumed.map((e) => e.id)]).toEqual(all.map((e) => e.id));
  });
});

describe("bad input", () => {
  let node: RunningOrchestrator;
  const bad: readonly { method: string; path: string; body?: unknown; field: string }[] = [
    { method: "GET", path: "/infrastructure/events/history?limit=1001", field: "limit" },
    { method: "GET", path: "/infrastructure/events/history?limit=-1", field: "limit" },
    { method: "GET", path: "/infrastructure/events/history?limit=ten", field: "limit" },
    { method: "GET", path: "/infrastructure/events/history?cursor=abc", field: "cursor" },
    {
      method: "GET",
      path: "/infrastructure/events/history?cursor=99999999999999999999-0",
      field: "cursor",
    },
    { method: "GET", path: "/infrastructure/events/history?event_types=", field: "event_types" },
    {
      method: "GET",
      path: `/infrastructure/events/history?subject=${"s".repeat(257)}`,
      field: "subject",
    },
    {
      method: "GET",
      path: `/infrastructure/events/history?correlation_id=${"c".repeat(129)}`,
      field: "correlation_id",
    },
    { method: "GET", path: "/infrastructure/events/history?since=yesterday", field: "since" },
    {
      method: "GET",
      path: "/infrastructure/events/history?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
      field: "until",
    },
    {
      method: "GET",
      path: "/infrastructure/events/history?since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
      field: "until",
    },
    {
      method: "POST",
      path: "/infrastructure/events/replay",
      body: { event_ids: ["x"] },
      field: "event_ids",
    },
    {
      method: "POST",
      path: "/infrastructure/events/replay",
      body: { event_ids: ["99999999999999999999-1"] },
      field: "event_ids",
    },
    {
      method: "POST",
      path: "/infrastructure/events/replay",
      body: { limit: 1001 },
      field: "limit",
    },
    {
      method: "POST",
      path: "/infrastructure/events/replay",
      body: { event_types: [""] },
      field: "event_types",
    },
    {
      method: "POST",
      path: "/infrastructure/events/replay",
      body: { since: "2026-02-01T00:00:00Z", until: "2026-01-01T00:00:00Z" },
      field: "until",
    },
    {
      method: "POST",
      path: "/infrastructure/events/replay",
      body: { dry_run: "yes" },
      field: "dry_run",
    },
    { method: "POST", path: "/infrastructure/events/clear", body: {}, field: "all" },
    {
      method: "POST",
      path: "/infrastructure/events/clear",
      body: { all: true, event_type: "x" },
      field: "all",
    },
    { method: "POST", path: "/infrastructure/events/clear", body: { before: 12 }, field: "before" },
    {
      method: "POST",
      path: "/infrastructure/events/clear",
      body: { event_type: "t".repeat(129) },
      field: "event_type",
    },
    { method: "GET", path: "/infrastructure/events/watch?after_id=latest", field: "after_id" },
    {
      method: "GET",
      path: "/infrastructure/events/watch?after_id=1-99999999999999999999",
      field: "after_id",
    },
    { method: "GET", path: "/infrastructure/events/watch?event_types=", field: "event_types" },
  ];

  it.each(bad)(
    "$method $path $body answers 400 naming $field",
    async ({ method, path, body, field }) => {
      node ??= await startOrchestrator({ env: quiet });
      const reply = await call(node, method, path, body);
      expect(reply.status, reply.text).toBe(400);
      expect(reply.body.code).toBe("invalid_argument");
      expect(String(reply.body.message)).toContain(field);
      expect(reply.text).not.toMatch(/\bat \S+:\d+/);
    },
  );

  it("leaves the node serving", async () => {
    node ??= await startOrchestrator({ env: quiet });
    expect((await call(node, "GET", "/infrastructure/events/history")).status).toBe(200);
    await node.close();
  });
});
