import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import type { EventDraft } from "../events/model.js";
import {
  encodeEventAroundRevision,
  type RedisEventTarget,
  storeEventLua,
} from "../events/redis-event-scripts.js";
import { type IdSource, randomIds } from "../ids.js";
import { untilReady } from "../redis/redis-connection.js";
import { redisKeyspace } from "../redis/redis-keys.js";
import { redisStoreErrors } from "../redis/redis-store-errors.js";
import { createRedisWriteFence, type RedisWriteFence } from "../redis/redis-write-fence.js";
import {
  defaultBaselinesMaxBytes,
  type EntryWrite,
  type RegistryChange,
  type RegistryEntry,
  type ReplicationCursor,
  type Tombstone,
  type TombstoneWrite,
  withRevision,
} from "./model.js";
import { createRedisBaselines } from "./redis-baselines.js";
import type { RegistryStore } from "./registry-store.js";
import { RegistryView, type RegistryViewLimits, registryViewDefaults } from "./registry-view.js";

/** What the Redis registry store works with; the caller creates, connects and closes both. */
export interface RedisRegistryStoreDeps {
  /**
   * Connection for writes and reads, configured to fail fast (no offline queue) as
   * `createRedisClient` does. Must not use ioredis' own `keyPrefix` (give `options.keyPrefix`).
   */
  readonly redis: Redis;
  /** A second connection, for pub/sub only (a subscribed connection takes no other command). */
  readonly subscriber: Redis;
  /** Where sync failures and recoveries are reported. Default: nowhere. */
  readonly logger?: Logger;
  /** Where a new history id comes from (its `uuid()`). Default: `randomIds`. */
  readonly ids?: IdSource;
  /** This process' clock, for the write fence. Default: `systemClock`. */
  readonly clock?: Clock;
  /**
   * What gives each entry write its deadline. Default: `createRedisWriteFence` over `redis` and
   * `clock`, with `options.writeTimeoutMs`.
   */
  readonly fence?: RedisWriteFence;
}

/**
 * How the Redis registry store names and keeps its data. The change log's bounds
 * (`changeLogSize`, `changeLogBytes`) hold in Redis and in memory alike: watchers that resume and
 * processes that catch up are served from it, and a process that falls further behind reloads a
 * full snapshot. The registry's bounds (`maxEntries`, `maxBytes`) are checked against this
 * process's view before a write is sent. Defaults: see {@link RegistryViewLimits}.
 */
export interface RedisRegistryStoreOptions extends Partial<RegistryViewLimits> {
  /** Prepended to every key and to the channel, e.g. "orchestrator:". Required. */
  readonly keyPrefix: string;
  /** How long `open()` waits for both connections to be ready. Default 10,000 ms. */
  readonly openTimeoutMs?: number;
  /**
   * Bytes all OpenAPI baselines may take in Redis together (their records, counted in
   * `registry:baselines:bytes`). Default 64 MiB.
   */
  readonly baselinesMaxBytes?: number;
  /**
   * How long an entry write (put, remove) may go unanswered before it is given up: it carries a
   * deadline shortly before that, and Redis does not apply it after. Default 5,000 ms (the
   * connection's command timeout).
   */
  readonly writeTimeoutMs?: number;
  /**
   * Where the events of entry writes go, in the same script as the change (`recordsEvents`).
   * Default: none (the caller emits them).
   */
  readonly events?: RedisEventTarget;
}

const defaults = Object.freeze({ openTimeoutMs: 10_000 });

/** Changes read from the log in one round trip when catching up: the read stays short. */
const catchUpPage = 500;

const errors = redisStoreErrors({ store: "the registry store", record: "the entry" });
const { command, unreadable } = errors;

// Every registry script takes the same keys in the same order, so the key list is built once.
// KEYS: 1 revision counter, 2 entries, 3 revisions, 4 tombstones, 5 change log, 6 history id,
// 7 bytes of the change log's records, 8 the events' stream, 9 the events' last id.
const keyCount = 9;

// Stores the change's event, if the write brought one, in the same script as the change: a
// change Redis acknowledged has its event. ARGV: 8 and 9 the event's JSON before and after its
// payload's revision ("" and "": no event), 10 its time (ms), 11 the stream's MAXLEN, 12 the
// events channel. `text` is the change's revision.
const storeChangeEvent = `
if ARGV[8] ~= '' then
  eventIds(KEYS[8], KEYS[9])
  storeEvent(KEYS[8], ARGV[11], ARGV[12], nextEventId(tonumber(ARGV[10])), ARGV[8] .. text .. ARGV[9], '', '')
  saveEventId(KEYS[9])
end
`;

// Appends the change record to the log, then drops the oldest records while the log holds more
// than ARGV[4] records or ARGV[6] bytes (the newest stays). The byte count lives beside the list;
// a log written before it existed is counted once, here.
const appendToLog = `
local function appendToLog(record)
  local length = redis.call('RPUSH', KEYS[5], record)
  local counted = redis.call('GET', KEYS[7])
  local bytes
  if counted then
    bytes = redis.call('INCRBY', KEYS[7], #record)
  else
    bytes = 0
    for _, old in ipairs(redis.call('LRANGE', KEYS[5], 0, -1)) do bytes = bytes + #old end
    redis.call('SET', KEYS[7], bytes)
  end
  local keep = tonumber(ARGV[4])
  local maxBytes = tonumber(ARGV[6])
  while length > 1 and (length > keep or bytes > maxBytes) do
    bytes = redis.call('DECRBY', KEYS[7], #redis.call('LPOP', KEYS[5]))
    length = length - 1
  end
end
`;

// The write fence, first in every entry write: a script run after its deadline (Redis held it, or
// ioredis sent it again after a reconnection, when this process had already answered that it
// failed) changes nothing and says so. TIME is allowed before writes: scripts replicate effects.
const fencedOut = -1;
const fenceCheck = (argv: number) => `
local clock = redis.call('TIME')
if tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) > tonumber(ARGV[${argv}]) then
  return {${fencedOut}, 0}
end`;

// Compare-and-set on the entry's revision, then the next global revision, the entry, its revision,
// the change record (JSON concatenated here, as only here the revision is known), the log trim and
// the notification and the change's event, all in one atomic step, so that no two writers share
// or skip a revision. ARGV: 1 name, 2 expected revision, 3 entry JSON without revision, 4 log
// size, 5 channel, 6 log bytes, 7 deadline (Unix ms, Redis' clock), 8-12 the event.
const putScript = `${appendToLog}${storeEventLua}${fenceCheck(7)}
local current = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if current ~= tonumber(ARGV[2]) then return {0, current} end
local revision = redis.call('INCR', KEYS[1])
local text = string.format('%d', revision)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], text)
redis.call('HDEL', KEYS[4], ARGV[1])
appendToLog('{"revision":' .. text .. ',"type":"put","entry":' .. ARGV[3] .. '}')
redis.call('PUBLISH', ARGV[5], text)
${storeChangeEvent}
return {1, revision}
`;

// As putScript, leaving a tombstone. ARGV 3 is the tombstone JSON without revision. With expected
// revision 0 and no live entry it records (or replaces) the tombstone alone, as a change of its
// own: a replicated delete of an entry this store never had must still reach other processes and
// block older writes that arrive later by another path.
const removeScript = `${appendToLog}${storeEventLua}${fenceCheck(7)}
local current = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if current ~= tonumber(ARGV[2]) then return {0, current} end
local revision = redis.call('INCR', KEYS[1])
local text = string.format('%d', revision)
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], '{"revision":' .. text .. ',' .. string.sub(ARGV[3], 2))
appendToLog('{"revision":' .. text .. ',"type":"delete","tombstone":' .. ARGV[3] .. '}')
redis.call('PUBLISH', ARGV[5], text)
${storeChangeEvent}
return {1, revision}
`;

// The current revision and the first ARGV[2] changes after ARGV[1], read together, with the
// history they belong to ("" when there is none: the data was lost since). The log holds the
// latest revisions without gaps, so the position of a revision follows from the counter and the
// length. Returns {current, 1, changes, history} or {current, 0, {}, history} when the log does not
// reach back far enough (or the counter is below the caller's revision: the data was lost and
// restarted).
const changesAfterScript = `
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local history = redis.call('GET', KEYS[6]) or ''
local from = tonumber(ARGV[1])
if from == current then return {current, 1, {}, history} end
if from > current then return {current, 0, {}, history} end
local first = current - redis.call('LLEN', KEYS[5]) + 1
if from + 1 < first then return {current, 0, {}, history} end
local start = from + 1 - first
return {current, 1, redis.call('LRANGE', KEYS[5], start, start + tonumber(ARGV[2]) - 1), history}
`;

// Everything at one revision: {revision, entries, revisions, tombstones, history, log} (hashes
// flattened). The history id is created here, from ARGV[1], when there is none: at the first open
// of a prefix, and again after Redis lost its data, so that it changes exactly when the revisions
// start over. With ARGV[2] = '1' the log is the change log's records (the latest changes, up to
// this revision, bounded as the log is), read in the same step; else it is empty.
const snapshotScript = `
redis.call('SET', KEYS[6], ARGV[1], 'NX')
return {
  redis.call('GET', KEYS[1]) or '0',
  redis.call('HGETALL', KEYS[2]),
  redis.call('HGETALL', KEYS[3]),
  redis.call('HGETALL', KEYS[4]),
  redis.call('GET', KEYS[6]),
  ARGV[2] == '1' and redis.call('LRANGE', KEYS[5], 0, -1) or {}
}
`;

// Stores ARGV[1] under KEYS[1] unless a value is there already; returns the stored value. (SET NX
// GET would do, from Redis 7.0 only.)
const claimScript = `
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
`;

// Forgets tombstones deleted before ARGV[1] (Unix ms); returns {how many, the revision it ran at}.
// When it forgot some it says so on the channel ARGV[2], as "purge:<revision>:<ARGV[1]>:<history>",
// so that every process sharing the data forgets them too: a purge is not a change (it takes no
// revision), so nothing in the log tells them. What it forgot is exactly the tombstones of that
// revision or below deleted before the cut-off: later ones, even deleted earlier (a replicated
// delete), were written after it.
const purgeScript = `
local cutoff = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[4])
local forgotten = 0
for i = 1, #all, 2 do
  if cjson.decode(all[i + 1]).deletedAt < cutoff then
    redis.call('HDEL', KEYS[4], all[i])
    forgotten = forgotten + 1
  end
end
local revision = redis.call('GET', KEYS[1]) or '0'
if forgotten > 0 then
  redis.call('PUBLISH', ARGV[2], 'purge:' .. revision .. ':' .. ARGV[1] .. ':' .. (redis.call('GET', KEYS[6]) or ''))
end
return {forgotten, tonumber(revision)}
`;

/** A purge another process made, as its notification says it (see purgeScript). */
interface PurgeNotice {
  readonly revision: number;
  readonly deletedBefore: number;
  readonly historyId: string;
}

function parsePurgeNotice(message: string): PurgeNotice | undefined {
  const [kind, revision, deletedBefore, historyId] = message.split(":");
  if (kind !== "purge" || historyId === undefined) return undefined;
  const notice = { revision: Number(revision), deletedBefore: Number(deletedBefore), historyId };
  return Number.isInteger(notice.revision) && Number.isFinite(notice.deletedBefore)
    ? notice
    : undefined;
}

type ScriptCall = (...args: (string | number)[]) => Promise<unknown>;

interface RegistryScripts {
  readonly put: ScriptCall;
  readonly remove: ScriptCall;
  readonly changesAfter: ScriptCall;
  readonly snapshot: ScriptCall;
  readonly purge: ScriptCall;
  /** Takes one key of its own, not the registry's. */
  readonly claim: ScriptCall;
}

// Names on the client are namespaced: other modules define their own scripts on the same
// connection, and two registry stores on one connection define identical ones (harmless).
function defineScripts(redis: Redis): RegistryScripts {
  const define = (name: string, lua: string, numberOfKeys = keyCount): ScriptCall => {
    const command = `orchestratorRegistry${name}`;
    redis.defineCommand(command, { lua, numberOfKeys });
    const defined = (redis as unknown as Record<string, ScriptCall | undefined>)[command];
    if (defined === undefined) throw new Error(`ioredis did not define ${command}`);
    return defined.bind(redis);
  };
  return {
    put: define("Put", putScript),
    remove: define("Remove", removeScript),
    changesAfter: define("ChangesAfter", changesAfterScript),
    snapshot: define("Snapshot", snapshotScript),
    purge: define("Purge", purgeScript),
    claim: define("Claim", claimScript, 1),
  };
}

/**
 * The registry in Redis, shared by every orchestrator process on the same Redis and prefix, with
 * an in-memory view in each that serves all reads (also while Redis is down).
 *
 * Keys, under `<keyPrefix>{registry}:` (one hash tag, shared with the event stream: one cluster
 * slot, src/redis/redis-keys.ts): `revision` (the global counter), `entries` (name → entry
 * JSON), `revisions` (name → revision), `tombstones` (name → tombstone JSON), `changes` (the
 * change log, a list trimmed to `changeLogSize` records and `changeLogBytes` bytes, counted in
 * `changes:bytes`), `history` (the history id), `baselines` (see redis-baselines.ts), `node:id`
 * and `replication:cursors` (peer URL → cursor JSON); every write publishes its revision on the
 * channel `<keyPrefix>registry:changes`, and a tombstone purge that forgot some publishes
 * `purge:<revision>:<deletedBefore>:<history id>` there, so that every process forgets them. Each write is one Lua script: one round trip, atomic.
 *
 * The history id is a random UUID created with the data, at the first `open()`, and read back at
 * every one after, so that it lasts across restarts of the process and changes only when Redis
 * loses the data (the view then reloads and takes the new one). It is "" until `open()`.
 *
 * The view follows Redis: a write applies its own change; a notification from another process,
 * and every reconnection of either connection, catches up from the change log, or from a full
 * snapshot when the log no longer reaches back far enough (listeners are then told the
 * differences). `open()` loads the change log with the snapshot, so that a restarted process
 * serves resumes (watches, peers) from what the log in Redis still holds.
 *
 * Writes answer honestly about their outcome. An entry write carries a deadline on Redis' clock
 * (see `createRedisWriteFence`) that its script checks first. It fails with "unavailable" when it
 * did not happen: never sent (not connected), or run after its deadline. It fails with "timeout"
 * when it was sent and no reply came in time: it happened if Redis ran it before the deadline
 * the message names, and it will not happen after; the error is thrown only once that deadline
 * has passed. Other writes (cursor, baseline, node id, tombstone purge) carry no deadline: sent
 * and unanswered, they fail with "timeout" saying they may still be applied.
 *
 * @throws RangeError when a bound is not a positive integer, or `writeTimeoutMs` is not above
 *   the fence's margin (100 ms).
 * Methods throw DomainError "unavailable" when Redis cannot be reached (connection down, closed,
 * or a read timed out) or a write did not happen, "timeout" as above, "conflict" on a failed
 * compare-and-set, "resource_exhausted" when a write would take the registry past its bounds,
 * and "internal" when Redis refuses a command or holds a record this code cannot read.
 */
export function createRedisRegistryStore(
  deps: RedisRegistryStoreDeps,
  options: RedisRegistryStoreOptions,
): RegistryStore {
  const { redis, subscriber, logger, ids = randomIds } = deps;
  const {
    keyPrefix: prefix,
    openTimeoutMs = defaults.openTimeoutMs,
    writeTimeoutMs,
    baselinesMaxBytes = defaultBaselinesMaxBytes,
    events,
    ...limits
  } = options;
  // Checks the bounds (RangeError) before anything touches Redis.
  const view = new RegistryView(limits);
  const changeLogSize = limits.changeLogSize ?? registryViewDefaults.changeLogSize;
  const changeLogBytes = limits.changeLogBytes ?? registryViewDefaults.changeLogBytes;
  const fence =
    deps.fence ??
    createRedisWriteFence(
      { redis, ...(deps.clock ? { clock: deps.clock } : {}), ...(logger ? { logger } : {}) },
      writeTimeoutMs === undefined ? {} : { writeTimeoutMs },
    );
  // One slot on a cluster for every key a script touches, the event stream's included.
  const space = redisKeyspace(prefix, "registry");
  const keys = [
    "revision",
    "entries",
    "revisions",
    "tombstones",
    "changes",
    "history",
    "changes:bytes",
  ]
    .map((key) => `${space}${key}`)
    // Present whether or not events are recorded here: every script takes the same keys.
    .concat(
      events ? [events.stream, events.lastId] : [`${space}events:stream`, `${space}events:last-id`],
    );
  const baselines = createRedisBaselines(
    redis,
    {
      entries: `${space}entries`,
      baselines: `${space}baselines`,
      bytes: `${space}baselines:bytes`,
    },
    // Looked up at call time: the write wrapper is defined below.
    { read: command, write: (send) => unfencedWrite(send) },
    baselinesMaxBytes,
  );
  const nodeIdKey = `${space}node:id`;
  const cursorsKey = `${space}replication:cursors`;
  const channel = `${prefix}registry:changes`;
  const scripts = defineScripts(redis);
  const follower = createFollower({ scripts, keys, view, logger, ids });

  let listening = false;
  let resubscribing: Promise<void> | undefined;

  const onMessage = (from: string, message: string) => {
    if (from !== channel) return;
    const purge = parsePurgeNotice(message);
    if (purge !== undefined) {
      follower.purged(purge);
      return;
    }
    const revision = Number(message);
    if (Number.isFinite(revision) && revision > view.revision) follower.inBackground(revision);
  };
  // Notifications sent while a connection was down are lost: every reconnection catches up.
  const onReady = () => follower.inBackground();
  const onSubscriberReady = () => {
    // Subscribe (again) before reading, so that no write falls between the read and the
    // subscription: anything after the read is then notified.
    resubscribing = subscriber.subscribe(channel).then(
      () => follower.inBackground(),
      (error: unknown) => logger?.warn({ err: errorSummary(error) }, "registry resubscribe failed"),
    );
  };

  const write = async (
    script: ScriptCall,
    name: string,
    expectedRevision: number,
    json: string,
    event: EventDraft | undefined,
  ): Promise<number> => {
    const encoded =
      event && events ? encodeEventAroundRevision(event, events) : { head: "", tail: "", ms: 0 };
    const reply = await command(() =>
      fence.send((deadline) =>
        script(
          ...keys,
          name,
          expectedRevision,
          json,
          changeLogSize,
          channel,
          changeLogBytes,
          deadline,
          encoded.head,
          encoded.tail,
          encoded.ms,
          events?.maxEvents ?? 0,
          events?.channel ?? "",
        ),
      ),
    );
    const [written, revision] = numberPair(reply);
    if (written === 1) return revision;
    if (written === fencedOut) {
      throw new DomainError(
        "unavailable",
        "the registry store ran the write after its deadline: it was not applied",
      );
    }
    if (revision === 0) throw new DomainError("conflict", `${name} is not registered`);
    throw new DomainError("conflict", `${name} changed meanwhile (revision ${revision})`);
  };

  // A write applies its own change when it follows the view; when another process wrote in
  // between, the view catches up first, so that the caller reads its own write. The write is
  // durable either way: a failed catch-up is reported, not thrown, and retried on reconnection.
  const settle = async (change: RegistryChange): Promise<void> => {
    if (view.apply(change)) return;
    try {
      await follower.catchUpTo(change.revision);
    } catch (error) {
      logger?.warn({ err: errorSummary(error) }, "registry catch-up after a write failed");
    }
  };

  // Writes without a deadline: sent and unanswered, they may still land ("timeout", not
  // "unavailable"). Each is idempotent or harmless late (a cursor or baseline written again, a node
  // id claimed if none, tombstones past retention forgotten), so none is worth a fence.
  const unfencedWrite = <T>(send: () => Promise<T>): Promise<T> =>
    errors.unfencedWrite(redis, send);

  const open = async (): Promise<void> => {
    if (listening) return;
    await command(() =>
      Promise.all([untilReady(redis, openTimeoutMs), untilReady(subscriber, openTimeoutMs)]),
    );
    await command(() => subscriber.subscribe(channel));
    subscriber.on("message", onMessage);
    subscriber.on("ready", onSubscriberReady);
    redis.on("ready", onReady);
    fence.start();
    listening = true;
    try {
      await follower.loadSnapshot();
    } catch (error) {
      await close();
      throw error;
    }
  };

  const close = async (): Promise<void> => {
    if (!listening) return;
    listening = false;
    subscriber.off("message", onMessage);
    subscriber.off("ready", onSubscriberReady);
    redis.off("ready", onReady);
    fence.stop();
    await resubscribing;
    try {
      await subscriber.unsubscribe(channel);
    } catch {
      // Not connected: the subscription went with the connection.
    }
    await follower.settled();
  };

  return {
    open,
    close,
    get revision() {
      return view.revision;
    },
    get compactedRevision() {
      return view.compactedRevision;
    },
    get size() {
      return view.size;
    },
    get bytes() {
      return view.bytes;
    },
    get: (name) => view.get(name),
    entries: () => view.entries(),
    tombstone: (name) => view.tombstone(name),
    tombstones: () => view.tombstones(),

    recordsEvents: events !== undefined,

    async put(entryWrite, expectedRevision, event): Promise<RegistryEntry> {
      view.checkCapacity(entryWrite);
      const json = encodeEntry(entryWrite);
      const revision = await write(scripts.put, entryWrite.name, expectedRevision, json, event);
      const entry = withRevision(entryWrite, revision);
      await settle({ type: "put", revision, entry });
      return entry;
    },

    async remove(tombstoneWrite, expectedRevision, event): Promise<Tombstone> {
      const json = encodeTombstone(tombstoneWrite);
      const revision = await write(
        scripts.remove,
        tombstoneWrite.name,
        expectedRevision,
        json,
        event,
      );
      const tombstone: Tombstone = { ...tombstoneWrite, revision };
      await settle({ type: "delete", revision, tombstone });
      return tombstone;
    },

    async purgeTombstones(deletedBefore: number): Promise<number> {
      // Every node's sweep calls this (each second by default), and the script reads and decodes
      // the whole tombstone hash: it runs only when the view holds a tombstone old enough. The view
      // holds every tombstone it has caught up with, so the only ones skipped here are those it has
      // not seen yet (another process wrote them a moment ago); the process that wrote one holds
      // it in its own view and purges it, and this one does at its first sweep after catching up.
      // A purge made here is notified to the other processes, which forget the same tombstones
      // (so their sweeps need not run the script for them); one they missed (a subscription that
      // was down) their own sweep still forgets, as before.
      if (!view.hasTombstoneBefore(deletedBefore)) return 0;
      const [forgotten, revision] = numberPair(
        await unfencedWrite(() => scripts.purge(...keys, deletedBefore, channel)),
      );
      view.dropTombstones(deletedBefore, revision);
      return forgotten;
    },

    sync: () => follower.sync(),
    changesSince: (revision, limit) => view.changesSince(revision, limit),
    tombstoneCutoff: (max) => view.tombstoneCutoff(max),
    onChange: (listener) => view.onChange(listener),

    get historyId() {
      return follower.historyId;
    },

    async ensureNodeId(candidate: string): Promise<string> {
      const stored = await unfencedWrite(() => scripts.claim(nodeIdKey, candidate));
      if (typeof stored !== "string") throw unreadable(new Error("unexpected node id"));
      return stored;
    },

    async getCursor(peer: string): Promise<ReplicationCursor | undefined> {
      const json = await command(() => redis.hget(cursorsKey, peer));
      return json === null ? undefined : decodeCursor(json);
    },

    async putCursor(peer: string, cursor: ReplicationCursor): Promise<void> {
      const stored: ReplicationCursor = { historyId: cursor.historyId, revision: cursor.revision };
      await unfencedWrite(() => redis.hset(cursorsKey, peer, JSON.stringify(stored)));
    },

    ...baselines,
  };
}

interface Follower {
  /** The history the view's revisions belong to; "" before the first snapshot. */
  readonly historyId: string;
  /** Catches up now (after whatever catch-up is under way); rejects as the store's methods. */
  sync(): Promise<void>;
  /** Catches up unless the view has reached `revision` by the time it is this one's turn. */
  catchUpTo(revision: number): Promise<void>;
  /** `catchUpTo` (or `sync` without a revision) whose failure is logged, not thrown. */
  inBackground(revision?: number): void;
  /** Replaces the view with a full snapshot and the change log, in turn with catch-ups. */
  loadSnapshot(): Promise<void>;
  /**
   * Forgets the tombstones another process purged, once the view has caught up to the purge's
   * revision (so that none it purged arrives after); a failure is logged, not thrown.
   */
  purged(notice: PurgeNotice): void;
  /** Resolves when no catch-up is running or queued. */
  settled(): Promise<void>;
}

/**
 * Keeps the view in step with Redis. One catch-up runs at a time; requests that arrive meanwhile
 * share a single follow-up run (which starts after the running one, so it sees their writes).
 */
function createFollower(parts: {
  scripts: RegistryScripts;
  keys: readonly string[];
  view: RegistryView;
  logger: Logger | undefined;
  ids: IdSource;
}): Follower {
  const { scripts, keys, view, logger, ids } = parts;
  let historyId = "";
  let running: Promise<void> | undefined;
  let queued: Promise<void> | undefined;
  // What the queued run must do: read in any case (`forced`), reach a notified revision, or start
  // from a snapshot.
  let forced = false;
  let target = 0;
  let snapshotWanted = false;

  // The snapshot at open also takes the change log Redis holds, so that a watcher or a peer
  // resuming from a revision of before this process started gets the changes after it, not a
  // snapshot, as from a process that never stopped. A reload later (this view fell behind what
  // the log holds, or Redis lost its data) starts the log afresh, as it always did: the readers it
  // would serve were cut already, and the log's whole length is not worth reading again then.
  const snapshot = async (withLog = false): Promise<void> => {
    const reply = await command(() => scripts.snapshot(...keys, ids.uuid(), withLog ? "1" : "0"));
    const state = decodeSnapshot(reply);
    historyId = state.historyId;
    view.reset(state.revision, state.entries, state.tombstones, state.log);
    // Should the counter have gone back (Redis lost its data), notified revisions above it mean
    // nothing any more.
    target = Math.min(target, state.revision);
  };

  const catchUp = async (): Promise<void> => {
    const force = forced;
    const wantSnapshot = snapshotWanted;
    forced = false;
    snapshotWanted = false;
    if (wantSnapshot) return snapshot(true);
    if (!force && view.revision >= target) return;
    // A page at a time, so that no single reply (nor its decoding) is the whole log.
    for (;;) {
      const from = view.revision;
      const { current, covered, changes, history } = decodeChanges(
        await command(() => scripts.changesAfter(...keys, from, catchUpPage)),
      );
      // Revisions from another history mean nothing here, even where the numbers line up.
      if (history !== historyId) {
        logger?.warn({ history, known: historyId }, "registry history changed: reloading");
        return snapshot();
      }
      if (covered && changes.every((change) => view.apply(change))) {
        if (view.revision >= current) return;
        if (changes.length === catchUpPage) continue;
      }
      if (current < from) {
        logger?.warn({ revision: current, known: from }, "registry revision went back: reloading");
      }
      return snapshot();
    }
  };

  const request = (): Promise<void> => {
    if (running === undefined) {
      running = catchUp().finally(() => {
        running = undefined;
      });
      return running;
    }
    queued ??= running
      .catch(() => undefined)
      .then(() => {
        queued = undefined;
        return request();
      });
    return queued;
  };

  const catchUpTo = (revision: number): Promise<void> => {
    target = Math.max(target, revision);
    return request();
  };

  const sync = (): Promise<void> => {
    forced = true;
    return request();
  };

  return {
    get historyId() {
      return historyId;
    },
    sync,
    catchUpTo,
    inBackground(revision) {
      const done = revision === undefined ? sync() : catchUpTo(revision);
      done.catch((error: unknown) => {
        logger?.warn({ err: errorSummary(error) }, "registry sync failed");
      });
    },
    loadSnapshot() {
      snapshotWanted = true;
      return request();
    },
    purged({ revision, deletedBefore, historyId: purgedIn }) {
      catchUpTo(revision).then(
        () => {
          // Revisions of another history (Redis lost its data since) say nothing about this view.
          if (purgedIn === historyId) view.dropTombstones(deletedBefore, revision);
        },
        (error: unknown) => {
          logger?.warn({ err: errorSummary(error) }, "registry sync after a purge failed");
        },
      );
    },
    async settled() {
      while (running !== undefined || queued !== undefined) {
        await Promise.allSettled([running, queued]);
      }
    },
  };
}

function errorSummary(error: unknown): { message: string; cause?: string } {
  if (!(error instanceof Error)) return { message: String(error) };
  return error.cause instanceof Error
    ? { message: error.message, cause: error.cause.message }
    : { message: error.message };
}

// --- Records as stored: JSON, with the bigint stamp as a decimal string. ---

type StoredEntry = Omit<EntryWrite, "hlc"> & { readonly hlc: string };
type StoredTombstone = Omit<TombstoneWrite, "hlc"> & { readonly hlc: string };
type StoredChange =
  | { readonly revision: number; readonly type: "put"; readonly entry: StoredEntry }
  | { readonly revision: number; readonly type: "delete"; readonly tombstone: StoredTombstone };

// Field by field, so that a field added to the model is a compile error here rather than
// silently stored or not, and nothing else the caller's object carries is stored.
function encodeEntry(entry: EntryWrite): string {
  const stored: StoredEntry = {
    name: entry.name,
    baseUrl: entry.baseUrl,
    openapiUrl: entry.openapiUrl,
    healthUrl: entry.healthUrl,
    endpoints: entry.endpoints,
    metadata: entry.metadata,
    tags: entry.tags,
    version: entry.version,
    ttlSeconds: entry.ttlSeconds,
    status: entry.status,
    registeredAt: entry.registeredAt,
    lastHeartbeat: entry.lastHeartbeat,
    updatedAt: entry.updatedAt,
    leaseExpiresAt: entry.leaseExpiresAt,
    origin: entry.origin,
    hlc: entry.hlc.toString(),
  };
  return JSON.stringify(stored);
}

function encodeTombstone(tombstone: TombstoneWrite): string {
  const stored: StoredTombstone = {
    name: tombstone.name,
    deletedAt: tombstone.deletedAt,
    origin: tombstone.origin,
    hlc: tombstone.hlc.toString(),
  };
  return JSON.stringify(stored);
}

function decodeEntry(stored: unknown, revision: number): RegistryEntry {
  if (!isStamped(stored, revision)) throw unreadable(new Error("not an entry"));
  const f = stored as StoredEntry;
  // Field by field, as withRevision does: spreading an object this wide is slow in V8.
  return {
    name: f.name,
    baseUrl: f.baseUrl,
    openapiUrl: f.openapiUrl,
    healthUrl: f.healthUrl,
    endpoints: f.endpoints,
    metadata: f.metadata,
    tags: f.tags,
    version: f.version,
    ttlSeconds: f.ttlSeconds,
    status: f.status,
    registeredAt: f.registeredAt,
    lastHeartbeat: f.lastHeartbeat,
    updatedAt: f.updatedAt,
    leaseExpiresAt: f.leaseExpiresAt,
    origin: f.origin,
    hlc: BigInt(f.hlc),
    revision,
  };
}

function decodeTombstone(stored: unknown, revision: number): Tombstone {
  if (!isStamped(stored, revision)) throw unreadable(new Error("not a tombstone"));
  const { name, deletedAt, origin, hlc } = stored as StoredTombstone;
  return { name, deletedAt, origin, hlc: BigInt(hlc), revision };
}

/** Enough of a check to fail clearly on foreign data under our keys. */
function isStamped(stored: unknown, revision: number): boolean {
  if (typeof stored !== "object" || stored === null || !Number.isInteger(revision)) return false;
  const { name, hlc } = stored as { name?: unknown; hlc?: unknown };
  return typeof name === "string" && typeof hlc === "string" && /^\d+$/.test(hlc);
}

function decodeChange(json: string): RegistryChange {
  const stored = readRecord<StoredChange | null>(json);
  if (stored === null || !Number.isInteger(stored.revision)) {
    throw unreadable(new Error("not a change"));
  }
  if (stored.type === "put") {
    return {
      type: "put",
      revision: stored.revision,
      entry: decodeEntry(stored.entry, stored.revision),
    };
  }
  const tombstone = decodeTombstone(stored.tombstone, stored.revision);
  return { type: "delete", revision: stored.revision, tombstone };
}

function decodeChanges(reply: unknown): {
  current: number;
  covered: boolean;
  changes: RegistryChange[];
  history: string;
} {
  if (
    !Array.isArray(reply) ||
    typeof reply[0] !== "number" ||
    !Array.isArray(reply[2]) ||
    typeof reply[3] !== "string"
  ) {
    throw unreadable(new Error("unexpected reply to the change log read"));
  }
  const records: unknown[] = reply[2];
  return {
    current: reply[0],
    covered: reply[1] === 1,
    changes: records.map((record) => decodeChange(String(record))),
    history: reply[3],
  };
}

function decodeSnapshot(reply: unknown): {
  revision: number;
  entries: RegistryEntry[];
  tombstones: Tombstone[];
  historyId: string;
  log: RegistryChange[];
} {
  if (
    !Array.isArray(reply) ||
    reply.length !== 6 ||
    typeof reply[4] !== "string" ||
    !reply[4] ||
    !Array.isArray(reply[5])
  ) {
    throw unreadable(new Error("unexpected reply to the snapshot read"));
  }
  const [revision, entryPairs, revisionPairs, tombstonePairs, historyId, records] = reply as [
    unknown,
    unknown,
    unknown,
    unknown,
    string,
    unknown[],
  ];
  const entries = pairs(entryPairs);
  const revisions = pairs(revisionPairs);
  const tombstones = pairs(tombstonePairs);
  const decoded: RegistryEntry[] = [];
  for (const [name, json] of entries) {
    const entryRevision = Number(revisions.get(name));
    if (!Number.isInteger(entryRevision)) throw unreadable(new Error(`${name} has no revision`));
    decoded.push(decodeEntry(readRecord<unknown>(json), entryRevision));
  }
  const decodedTombstones = [...tombstones.values()].map((json) => {
    const stored = readRecord<{ revision?: unknown }>(json);
    return decodeTombstone(stored, Number(stored?.revision));
  });
  return {
    revision: Number(revision),
    historyId,
    log: decodeLog(records, decoded, decodedTombstones),
    entries: decoded,
    tombstones: decodedTombstones,
  };
}

/**
 * The change log's records. A record at the revision of a live entry or tombstone of the same
 * snapshot is that write (a revision is one change), so it is not decoded again: the change is
 * built on the object already decoded, which the view then shares between the log and its maps,
 * as it does for a change it applies. Only superseded versions are parsed.
 */
function decodeLog(
  records: readonly unknown[],
  entries: readonly RegistryEntry[],
  tombstones: readonly Tombstone[],
): RegistryChange[] {
  if (records.length === 0) return [];
  const current = new Map<number, RegistryChange>();
  for (const entry of entries)
    current.set(entry.revision, { type: "put", revision: entry.revision, entry });
  for (const tombstone of tombstones) {
    current.set(tombstone.revision, { type: "delete", revision: tombstone.revision, tombstone });
  }
  return records.map((record) => {
    const json = String(record);
    // Every record starts {"revision":<n>, (the scripts write it so).
    const known = current.get(Number(recordRevision.exec(json)?.[1]));
    return known ?? decodeChange(json);
  });
}

const recordRevision = /^\{"revision":(\d+),/;

/** A flattened hash (HGETALL as a script returns it) as a map. */
function pairs(flat: unknown): Map<string, string> {
  if (!Array.isArray(flat)) throw unreadable(new Error("unexpected hash in the snapshot"));
  const map = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) map.set(String(flat[i]), String(flat[i + 1]));
  return map;
}

function decodeCursor(json: string): ReplicationCursor {
  const stored = readRecord<{ historyId?: unknown; revision?: unknown } | null>(json);
  const { historyId, revision } = stored ?? {};
  if (typeof historyId !== "string" || typeof revision !== "number") {
    throw unreadable(new Error("not a replication cursor"));
  }
  return { historyId, revision };
}

function numberPair(reply: unknown): [number, number] {
  if (!Array.isArray(reply) || typeof reply[0] !== "number" || typeof reply[1] !== "number") {
    throw unreadable(new Error("unexpected reply to a write"));
  }
  return [reply[0], reply[1]];
}

function readRecord<T>(json: string): T {
  try {
    return JSON.parse(json) as T;
  } catch (error) {
    throw unreadable(error);
  }
}
