// The REST gateway as a test client sees it: calls that never throw for a status, polls with a
// generous deadline, and the registry's calls (register, delete, list, watch) in JSON.
import { setTimeout as delay } from "node:timers/promises";
import { expect } from "vitest";
import { lineReader } from "./line-reader.js";

/** A JSON object as the REST gateway answers it. */
export type Json = Record<string, unknown>;

/** One REST answer. */
export interface Reply {
  readonly status: number;
  readonly text: string;
  /** The body parsed as a JSON object; `{}` when it is not one. */
  readonly body: Json;
}

/** A registry entry as the REST gateway renders it (proto field names, uint64 as strings). */
export interface ServiceJson extends Json {
  readonly name: string;
  readonly version: string;
  readonly revision: string;
  readonly registered_at: string;
  readonly hlc: string;
  readonly origin_node_id: string;
}

/**
 * How long a call or a poll may take. Generous: the machine may be loaded, a replication link may
 * sit in backoff (up to 10 s) before it retries. Nothing asserts on how long anything took.
 */
export const patience = 30_000;

/** A REST call; never throws for an HTTP status. */
export async function rest(
  base: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<Reply> {
  const response = await fetch(`${base}${path}`, {
    method,
    ...(body === undefined
      ? {}
      : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(patience),
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const isObject = typeof parsed === "object" && parsed !== null && !Array.isArray(parsed);
  return { status: response.status, text, body: isObject ? (parsed as Json) : {} };
}

/** The body of a call that must answer `status`. @throws Error naming the call otherwise. */
export async function expectStatus(
  reply: Promise<Reply>,
  status: number,
  what = "the call",
): Promise<Json> {
  const { status: actual, text, body } = await reply;
  if (actual !== status) throw new Error(`${what}: expected ${status}, got ${actual}: ${text}`);
  return body;
}

/**
 * Polls `check` until it returns a value (not undefined) and returns it.
 * @throws Error naming `what` (and the last value seen, from `describe`) when time runs out.
 */
export async function until<T>(
  what: string,
  check: () => Promise<T | undefined>,
  options: { timeoutMs?: number; describe?: () => string } = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? patience;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      const last = options.describe ? `; last seen: ${options.describe()}` : "";
      throw new Error(`not within ${timeoutMs} ms: ${what}${last}`);
    }
    await delay(150);
  }
}

/** A registration body: a base URL nobody serves and no lease, unless `extra` says otherwise. */
export function registration(name: string, extra: Json = {}): Json {
  return { name, base_url: `http://127.0.0.1:9/${name}`, ttl_seconds: 0, ...extra };
}

export async function register(base: string, service: Json): Promise<ServiceJson> {
  const body = await expectStatus(
    rest(base, "POST", "/registry/register", service),
    200,
    `register ${String(service.name)} on ${base}`,
  );
  if (body.status !== "registered") throw new Error(`register answered ${JSON.stringify(body)}`);
  return body.service as ServiceJson;
}

export async function deregister(base: string, name: string): Promise<Json> {
  return expectStatus(rest(base, "DELETE", `/registry/${name}`), 200, `delete ${name} on ${base}`);
}

/** GET /registry: every live entry, by name, and the node's revision. */
export async function listRegistry(
  base: string,
): Promise<{ services: ServiceJson[]; revision: number }> {
  const body = await expectStatus(rest(base, "GET", "/registry"), 200, `GET ${base}/registry`);
  return {
    services: (body.services as ServiceJson[] | undefined) ?? [],
    revision: Number(body.revision ?? 0),
  };
}

/** Polls GET `path` until it answers `status`; returns that body. */
export function untilStatus(base: string, path: string, status: number): Promise<Json> {
  return until(`GET ${base}${path} answers ${status}`, async () => {
    const reply = await rest(base, "GET", path);
    return reply.status === status ? reply.body : undefined;
  });
}

/** One line of GET /registry/watch. */
export interface WatchLine {
  readonly type: string;
  readonly revision: string;
  readonly service?: ServiceJson;
  readonly snapshot?: boolean;
  readonly compacted?: boolean;
  readonly error?: Json;
}

/** An NDJSON watch; its status line comes with the first event, so the request starts at once. */
export interface Watch {
  next(): Promise<WatchLine>;
  close(): void;
}

export function openWatch(base: string, startRevision = 0): Watch {
  const controller = new AbortController();
  const response = fetch(`${base}/registry/watch?start_revision=${startRevision}`, {
    signal: controller.signal,
  });
  // Handled here too, so that a watch closed before it answered leaves no unhandled rejection.
  response.catch(() => undefined);
  let lines: ReturnType<typeof lineReader> | undefined;
  return {
    async next() {
      if (lines === undefined) {
        const answered = await response;
        expect(answered.status).toBe(200);
        const body = answered.body as AsyncIterable<Uint8Array> | null;
        if (body === null) throw new Error("the watch has no body");
        lines = lineReader(body[Symbol.asyncIterator]());
      }
      const line = await lines.next();
      if (line === undefined) throw new Error("the watch ended");
      const parsed = JSON.parse(line) as WatchLine;
      if (parsed.error !== undefined) throw new Error(`the watch failed: ${line}`);
      return parsed;
    },
    close: () => controller.abort(),
  };
}
