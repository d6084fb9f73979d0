import { setTimeout as delay } from "node:timers/promises";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import { untilReady } from "../redis/redis-connection.js";
import { redisKeyspace } from "../redis/redis-keys.js";
import { redisStoreErrors } from "../redis/redis-store-errors.js";
import {
  type AppendKey,
  type EventClearSelection,
  type EventPage,
  type EventQuery,
  type EventRetention,
  type EventStore,
  eventStoreDefaults,
} from "./event-store.js";
import { selectionRequired } from "./memory-event-store.js";
import {
  type EventDraft,
  eventFromBody,
  firstEventId,
  formatEventId,
  matchesFilter,
  type OrchestratorEvent,
  parseEventId,
} from "./model.js";
import {
  encodeEvent,
  type RedisEventTarget,
  redisEventTarget,
  storeEventLua,
} from "./redis-event-scripts.js";

/** What the Redis event store works with; the caller creates, connects and closes both. */
export interface RedisEventStoreDeps {
  /**
   * Connection for commands, configured to fail fast (no offline queue) as `createRedisClient`
   * does. Must not use ioredis' own `keyPrefix` (give `options.keyPrefix`).
   */
  readonly redis: Redis;
  /**
   * A connection for `XREAD BLOCK` only (a blocked connection serves nothing else meanwhile), for
   * `follow`. Configured as `redis`.
   */
  readonly blocking: Redis;
  /** This process' clock: the age retention's "now". */
  readonly clock: Clock;
  /** Where follow failures and recoveries are reported. Default: nowhere. */
  readonly logger?: Logger;
}

/** How the Redis event store names and keeps its data. */
export interface RedisEventStoreOptions {
  /** Prepended to every key, e.g. "orchestrator:". Required. */
  readonly keyPrefix: string;
  /**
   * Count and age retention. Default 100,000 events, 7 days. The count is trimmed with
   * `XADD MAXLEN ~`: Redis removes whole stream nodes, so it keeps up to 100 more (its
   * `stream-node-max-entries`); reads hide nothing for that.
   */
  readonly retention?: Partial<EventRetention>;
  /** Events one read examines at most. Default 10,000. */
  readonly maxScan?: number;
  /** Channel every stored event is published on ("" for none). Default "orchestrator.events". */
  readonly channel?: string;
  /** How long `open()` waits for both connections. Default 10,000 ms. */
  readonly openTimeoutMs?: number;
}

const errors = redisStoreErrors({ store: "the event store", record: "the history" });
const { command } = errors;

/** Entries fetched by one XRANGE or XREAD. */
const pageSize = 1_000;
/** How long a follower's XREAD blocks: below the connection's 5 s command timeout. */
const blockMs = 2_000;
/** How long a retried batch is recognised (the producer's last sequence is kept this long). */
const producerMemoryMs = 24 * 3_600_000;

// Appends a batch. KEYS: 1 stream, 2 last id, 3 the producer's last sequence. ARGV: 1 MAXLEN,
// 2 channel, 3 the batch's sequence ("" without a key), 4 events, then per event its ms, body, own
// channel and message. Returns the ids given, or {} when the producer stored this batch already.
const appendScript = `${storeEventLua}
if ARGV[3] ~= '' then
  local stored = tonumber(redis.call('GET', KEYS[3]) or '-1')
  if stored >= tonumber(ARGV[3]) then return {} end
end
eventIds(KEYS[1], KEYS[2])
local ids = {}
for i = 0, tonumber(ARGV[4]) - 1 do
  local at = 5 + i * 4
  local id = nextEventId(tonumber(ARGV[at]))
  storeEvent(KEYS[1], ARGV[1], ARGV[2], id, ARGV[at + 1], ARGV[at + 2], ARGV[at + 3])
  ids[#ids + 1] = id
end
saveEventId(KEYS[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3], 'PX', ${producerMemoryMs}) end
return ids
`;

// The last id ever given: KEYS 1 stream, 2 last id.
const lastIdScript = `
local last = redis.call('GET', KEYS[2])
if last then return last end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
return top and top[1] or '0-0'
`;

type ScriptCall = (...args: (string | number)[]) => Promise<unknown>;

function defineScripts(redis: Redis): { append: ScriptCall; lastId: ScriptCall } {
  const define = (name: string, lua: string, numberOfKeys: number): ScriptCall => {
    const command = `orchestratorEvents${name}`;
    redis.defineCommand(command, { lua, numberOfKeys });
    const defined = (redis as unknown as Record<string, ScriptCall | undefined>)[command];
    if (defined === undefined) throw new Error(`ioredis did not define ${command}`);
    return defined.bind(redis);
  };
  return { append: define("Append", appendScript, 3), lastId: define("LastId", lastIdScript, 2) };
}

type StreamEntry = [id: string, fields: string[]];

/**
 * Events in a Redis Stream (`<prefix>{registry}:events:stream`, in the registry's cluster slot), shared by every orchestrator on the same
 * Redis and prefix. An append is one Lua script for a whole batch (one round trip): each event
 * gets the next id (see `storeEventLua`), is added with `XADD MAXLEN ~`, and is published on the
 * events channel (and its type's channel) in the same script. Reads page with `XRANGE` from the
 * cursor, filtering here, examining at most `maxScan` entries per read. Age retention is
 * `XTRIM MINID` (`trim`), and reads skip older events meanwhile. `follow` reads with
 * `XREAD BLOCK` on its own connection.
 *
 * @throws RangeError when a bound is not a positive integer.
 * Methods throw DomainError as `EventStore` says; a write sent and not answered is "timeout" (it
 * may still apply: an append retried with the same key is not stored twice).
 */
export function createRedisEventStore(
  deps: RedisEventStoreDeps,
  options: RedisEventStoreOptions,
): EventStore {
  const { redis, blocking, clock, logger } = deps;
  const retention = { ...eventStoreDefaults.retention, ...options.retention };
  const maxScan = options.maxScan ?? eventStoreDefaults.maxScan;
  for (const [name, value] of Object.entries({ maxEvents: retention.maxEvents, maxScan })) {
    if (!Number.isInteger(value) || value < 1) {
      throw new RangeError(`${name} must be a positive integer, not ${value}`);
    }
  }
  const target: RedisEventTarget = redisEventTarget(options.keyPrefix, {
    maxEvents: retention.maxEvents,
    ...(options.channel === undefined ? {} : { channel: options.channel }),
  });
  const scripts = defineScripts(redis);
  // In the stream's slot: the append script checks and sets it.
  const producerSpace = redisKeyspace(options.keyPrefix, "registry");
  const producerKey = (producer: string) => `${producerSpace}events:producer:${producer}`;

  const ageCutoff = (): number =>
    retention.maxAgeMs > 0 ? clock.now() - retention.maxAgeMs : Number.NEGATIVE_INFINITY;

  // A write refused before it is sent (not connected) did not happen: "unavailable".
  const write = <T>(send: () => Promise<T>): Promise<T> => errors.unfencedWrite(redis, send);

  const range = async (start: string, end: string, count: number): Promise<StreamEntry[]> =>
    entriesOf(await command(() => redis.xrange(target.stream, start, end, "COUNT", count)));

  /** XDELs `ids`, a chunk at a time; how many went. */
  const remove = async (ids: readonly string[]): Promise<number> => {
    let removed = 0;
    for (let i = 0; i < ids.length; i += pageSize) {
      const chunk = ids.slice(i, i + pageSize);
      removed += await write(() => redis.xdel(target.stream, ...chunk));
    }
    return removed;
  };

  return {
    async open() {
      const timeoutMs = options.openTimeoutMs ?? 10_000;
      await command(() =>
        Promise.all([untilReady(redis, timeoutMs), untilReady(blocking, timeoutMs)]),
      );
    },
    close: async () => {},

    async append(drafts: readonly EventDraft[], key?: AppendKey) {
      if (drafts.length === 0) return [];
      const args: (string | number)[] = [
        target.maxEvents,
        target.channel,
        key === undefined ? "" : key.sequence,
        drafts.length,
      ];
      for (const draft of drafts) {
        const encoded = encodeEvent(draft, target);
        args.push(encoded.ms, encoded.body, encoded.typeChannel, encoded.typeMessage);
      }
      const reply = await write(() =>
        scripts.append(target.stream, target.lastId, producerKey(key?.producer ?? ""), ...args),
      );
      if (!Array.isArray(reply)) throw unreadable("unexpected reply to an append");
      return reply.map((id, i) => Object.freeze({ ...(drafts[i] as EventDraft), id: String(id) }));
    },

    async read(query: EventQuery): Promise<EventPage> {
      const after = query.after ? formatEventId(parseEventId(query.after, "cursor")) : undefined;
      const since = Math.max(query.since ?? 0, ageCutoff(), 0);
      const until = query.until;
      if (until !== undefined && until <= since) return { events: [], next: "" };
      const end = until === undefined ? "+" : `(${Math.floor(until)}-0`;
      let start = startOf(after, since);
      const events: OrchestratorEvent[] = [];
      let scanned = 0;
      for (;;) {
        const count = Math.min(pageSize, maxScan - scanned);
        // One entry more than may be examined: it says whether there is more after them.
        const entries = await range(start, end, count + 1);
        const examined = Math.min(count, entries.length);
        for (let index = 0; index < examined; index++) {
          const [id, fields] = entries[index] as StreamEntry;
          scanned++;
          const event = eventFromBody(id, bodyOf(fields));
          if (matchesFilter(query, event, parseEventId(id).ms)) events.push(event);
          if (events.length >= query.limit) {
            return { events, next: index < entries.length - 1 ? id : "" };
          }
        }
        if (entries.length <= count) return { events, next: "" };
        const newest = (entries[count - 1] as StreamEntry)[0];
        if (scanned >= maxScan) return { events, next: newest };
        start = `(${newest}`;
      }
    },

    async readIds(ids) {
      const cutoff = ageCutoff();
      const unique = [...new Set(ids.map((id) => formatEventId(parseEventId(id, "event_ids"))))];
      const found = await Promise.all(unique.map((id) => range(id, id, 1)));
      return found
        .flat()
        .map(([id, fields]) => ({ event: eventFromBody(id, bodyOf(fields)), id: parseEventId(id) }))
        .filter(({ id }) => id.ms >= cutoff)
        .sort((a, b) => a.id.ms - b.id.ms || a.id.seq - b.id.seq)
        .map(({ event }) => event);
    },

    async lastId() {
      const reply = await command(() => scripts.lastId(target.stream, target.lastId));
      return typeof reply === "string" ? reply : firstEventId;
    },

    async clear(selection: EventClearSelection) {
      if (selection.all) return write(() => redis.xtrim(target.stream, "MAXLEN", 0));
      const { type, correlationId, before } = selection;
      if (!type && !correlationId && before === undefined) throw selectionRequired();
      if (!type && !correlationId && before !== undefined) {
        return write(() => redis.xtrim(target.stream, "MINID", `${Math.max(0, before)}-0`));
      }
      if (before !== undefined && before <= 0) return 0;
      const end = before === undefined ? "+" : `(${Math.floor(before)}-0`;
      let start = "-";
      let removed = 0;
      for (;;) {
        const entries = await range(start, end, pageSize);
        const selected = entries
          .filter(([id, fields]) => {
            const event = eventFromBody(id, bodyOf(fields));
            return (
              (!type || event.type === type) &&
              (!correlationId || event.correlationId === correlationId)
            );
          })
          .map(([id]) => id);
        removed += await remove(selected);
        const newest = entries.at(-1)?.[0];
        if (entries.length < pageSize || newest === undefined) return removed;
        start = `(${newest}`;
      }
    },

    async trim() {
      if (retention.maxAgeMs <= 0) return 0;
      const cutoff = Math.max(0, Math.floor(ageCutoff()));
      return write(() => redis.xtrim(target.stream, "MINID", `${cutoff}-0`));
    },

    follow: (afterId, signal) => followStream(blocking, target.stream, afterId, signal, logger),
  };
}

/** The XRANGE start for "after `after` and at or after `since`". */
function startOf(after: string | undefined, since: number): string {
  const fromSince = `${Math.floor(since)}-0`;
  if (after === undefined) return fromSince;
  const afterId = parseEventId(after);
  return afterId.ms >= since ? `(${after}` : fromSince;
}

/**
 * XREAD BLOCK from `afterId` until `signal` aborts. A failure (Redis down) is logged once per
 * outage and retried with backoff, from where it was. An abort returns at once; the XREAD still
 * blocked ends with its connection.
 */
async function* followStream(
  blocking: Redis,
  stream: string,
  afterId: string,
  signal: AbortSignal,
  logger: Logger | undefined,
): AsyncGenerator<readonly OrchestratorEvent[]> {
  let after = afterId ? formatEventId(parseEventId(afterId, "after_id")) : firstEventId;
  let failures = 0;
  const aborted = new Promise<"aborted">((resolve) => {
    if (signal.aborted) resolve("aborted");
    signal.addEventListener("abort", () => resolve("aborted"), { once: true });
  });
  while (!signal.aborted) {
    const read = blocking.xread("COUNT", pageSize, "BLOCK", blockMs, "STREAMS", stream, after);
    read.catch(() => undefined);
    let reply: Awaited<typeof read> | "aborted";
    try {
      reply = await Promise.race([read, aborted]);
    } catch (error) {
      if (failures++ === 0) {
        logger?.warn({ err: { message: String(error) } }, "event store not followed; retrying");
      }
      await Promise.race([delay(Math.min(5_000, 100 * 2 ** Math.min(failures, 6))), aborted]);
      continue;
    }
    if (reply === "aborted") return;
    if (failures > 0) logger?.info("event store followed again");
    failures = 0;
    const entries = reply?.[0]?.[1] ?? [];
    const newest = entries.at(-1)?.[0];
    if (newest === undefined) continue;
    after = newest;
    yield entries.map(([id, fields]) => eventFromBody(id, bodyOf(fields)));
  }
}

function entriesOf(reply: unknown): StreamEntry[] {
  if (!Array.isArray(reply)) throw unreadable("unexpected reply to a range read");
  return reply as StreamEntry[];
}

/** The `e` field of an entry. */
function bodyOf(fields: readonly string[]): string {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === "e") return fields[i + 1] ?? "";
  throw unreadable("an entry without an event");
}

function unreadable(message: string): DomainError {
  return new DomainError("internal", "the event store holds a record it cannot read", {
    cause: new Error(message),
  });
}
