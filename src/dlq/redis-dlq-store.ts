import type { JsonObject } from "@bufbuild/protobuf";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import { redisKeyspace } from "../redis/redis-keys.js";
import { redisStoreErrors } from "../redis/redis-store-errors.js";
import { createRedisWriteFence, type RedisWriteFence } from "../redis/redis-write-fence.js";
import { type DlqStore, type DlqStoreLimits, dlqStoreDefaults } from "./dlq-store.js";
import {
  type ClaimResult,
  type DlqEntry,
  type DlqPage,
  type DlqPageRequest,
  type DlqQuery,
  type DlqRef,
  type DlqState,
  type DlqStats,
  dlqBodyJson,
  dlqEntryWeight,
  dlqStates,
  type ExpiredClaim,
  indexNameFor,
  initialEntry,
  type NewDlqEntry,
  type TransitionResult,
} from "./model.js";

/** What the Redis DLQ store works with; the caller creates, connects and closes the connection. */
export interface RedisDlqStoreDeps {
  /**
   * The connection, configured to fail fast (no offline queue) as `createRedisClient` does, without
   * ioredis' own `keyPrefix` (give `options.keyPrefix`).
   */
  readonly redis: Redis;
  /** Where fence measurements that failed are reported. Default: nowhere. */
  readonly logger?: Logger;
  /** This process' clock, for the write fence. Default: `systemClock`. */
  readonly clock?: Clock;
  /** What gives each write its deadline. Default: `createRedisWriteFence` over `redis`. */
  readonly fence?: RedisWriteFence;
}

/** How the Redis DLQ store names and bounds its data. */
export interface RedisDlqStoreOptions extends Partial<DlqStoreLimits> {
  /** Prepended to every key, e.g. "orchestrator:". Required. */
  readonly keyPrefix: string;
  /** How long a write may go unanswered before it is given up. Default 5,000 ms. */
  readonly writeTimeoutMs?: number;
}

// Every script takes the same keys in the same order. KEYS: 1 records (id → record JSON: state,
// counters, times), 2 bodies (id → the parts that never change, JSON), 3 all ids, 4 unresolved ids,
// 5-8 ids by state (sorted sets of score 0: in id order, which is the order entries were added),
// 9 claims (id by claim expiry), 10 resolutions (id by resolution time), 11 counters, 12 unresolved
// entries by type, 13 by service, 14 the prefix of the due sets (one per type: id by due time).
const keyNames = [
  "records",
  "bodies",
  "all",
  "open",
  "state:PENDING_RETRY",
  "state:RETRYING",
  "state:DEAD",
  "state:RESOLVED",
  "claims",
  "resolved-at",
  "counts",
  "by-type",
  "by-service",
  "due:",
] as const;

// Record fields, short because every transition decodes and encodes one: s state, a attempts,
// m max attempts, n next retry at, t claim token, x claim expires at, o the state it was claimed
// from, f first failed at, l last failed at, z resolved at, r failure reason, y type, v service,
// c correlation id, w weight.
// `leave` and `enter` keep every index and counter in step with the state: each transition calls
// `leave` before changing the state and `enter` after.
const common = `
local records, bodies, all, open = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local stateKey = {PENDING_RETRY = KEYS[5], RETRYING = KEYS[6], DEAD = KEYS[7], RESOLVED = KEYS[8]}
local claims, resolvedAt, counts = KEYS[9], KEYS[10], KEYS[11]
local byType, byService, duePrefix = KEYS[12], KEYS[13], KEYS[14]

-- Counter changes are summed while a script runs and written once at its end (flush), so that a
-- script moving hundreds of entries writes each counter once.
local deltas, typeDeltas, serviceDeltas = {}, {}, {}
local function count(field, delta) deltas[field] = (deltas[field] or 0) + delta end
local function countOpen(r, delta)
  typeDeltas[r.y] = (typeDeltas[r.y] or 0) + delta
  if r.v ~= '' then serviceDeltas[r.v] = (serviceDeltas[r.v] or 0) + delta end
end
local function flush()
  for field, delta in pairs(deltas) do
    if delta ~= 0 then redis.call('HINCRBY', counts, field, delta) end
  end
  for hash, changes in pairs({[byType] = typeDeltas, [byService] = serviceDeltas}) do
    for field, delta in pairs(changes) do
      if delta ~= 0 and redis.call('HINCRBY', hash, field, delta) <= 0 then
        redis.call('HDEL', hash, field)
      end
    end
  end
end
local function leave(id, r)
  redis.call('ZREM', stateKey[r.s], id)
  count(r.s, -1)
  if r.s == 'PENDING_RETRY' then redis.call('ZREM', duePrefix .. r.y, id)
  elseif r.s == 'RETRYING' then redis.call('ZREM', claims, id)
  elseif r.s == 'RESOLVED' then redis.call('ZREM', resolvedAt, id) end
end
local function enter(id, r)
  redis.call('ZADD', stateKey[r.s], 0, id)
  count(r.s, 1)
  if r.s == 'PENDING_RETRY' then redis.call('ZADD', duePrefix .. r.y, r.n, id)
  elseif r.s == 'RETRYING' then redis.call('ZADD', claims, r.x, id)
  elseif r.s == 'RESOLVED' then
    redis.call('ZADD', resolvedAt, r.z, id)
    redis.call('ZREM', open, id)
    countOpen(r, -1)
  end
end
local function load(id)
  local json = redis.call('HGET', records, id)
  if json then return cjson.decode(json) end
  return nil
end
local function save(id, r)
  local json = cjson.encode(r)
  redis.call('HSET', records, id, json)
  return json
end
local function forget(id)
  local r = load(id)
  if not r then return 0 end
  leave(id, r)
  if r.s ~= 'RESOLVED' then
    redis.call('ZREM', open, id)
    countOpen(r, -1)
  end
  redis.call('HDEL', records, id)
  redis.call('HDEL', bodies, id)
  redis.call('ZREM', all, id)
  count('entries', -1)
  count('bytes', -r.w)
  return r.w
end
local function afterFailure(id, r, reason, now, nextRetryAt, owed)
  leave(id, r)
  r.t = ''
  r.x = 0
  r.o = ''
  r.l = now
  r.r = reason
  if r.a >= r.m and not owed then
    r.s = 'DEAD'
    r.n = 0
  else
    r.s = 'PENDING_RETRY'
    r.n = nextRetryAt
  end
  enter(id, r)
  return save(id, r)
end
`;

// The write fence, first in every write that must not land late: a script run after its deadline
// (Redis held it, or ioredis sent it again after a reconnection) changes nothing and says so.
const errors = redisStoreErrors({ store: "the dead-letter store", record: "the entry" });

const fencedOut = -1;
const fenceCheck = (argv: number) => `
local clock = redis.call('TIME')
if tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) > tonumber(ARGV[${argv}]) then
  return {${fencedOut}}
end`;

// ARGV: 1 id, 2 record JSON, 3 body JSON, 4 max entries, 5 max bytes, 6 deadline. Makes room by
// forgetting the oldest resolved entries (at most 1,000 per add: the rest at the next one).
const addScript = `${common}${fenceCheck(6)}
local id = ARGV[1]
if redis.call('HEXISTS', records, id) == 1 then return {0, 'exists'} end
local r = cjson.decode(ARGV[2])
local maxEntries, maxBytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local entries = tonumber(redis.call('HGET', counts, 'entries') or '0')
local bytes = tonumber(redis.call('HGET', counts, 'bytes') or '0')
local forgotten = 0
while (entries + 1 > maxEntries or bytes + r.w > maxBytes) and forgotten < 1000 do
  local oldest = redis.call('ZRANGE', resolvedAt, 0, 0)[1]
  if not oldest then break end
  bytes = bytes - forget(oldest)
  entries = entries - 1
  forgotten = forgotten + 1
end
if entries + 1 > maxEntries or bytes + r.w > maxBytes then
  flush()
  if entries + 1 > maxEntries then return {0, 'entries'} end
  return {0, 'bytes'}
end
redis.call('HSET', records, id, ARGV[2])
redis.call('HSET', bodies, id, ARGV[3])
redis.call('ZADD', all, 0, id)
redis.call('ZADD', open, 0, id)
countOpen(r, 1)
enter(id, r)
count('entries', 1)
count('bytes', r.w)
flush()
return {1, forgotten}
`;

// ARGV: 1 token, 2 now, 3 expires at, 4 due by ('' for any), 5 states it may be claimed from
// (comma-separated), 6 deadline, 7... ids. One reply per id: {id, 'claimed', record, body},
// {id, 'refused', state} or {id, 'missing'}.
const claimScript = `${common}${fenceCheck(6)}
local token, expiresAt = ARGV[1], tonumber(ARGV[3])
local dueBy = tonumber(ARGV[4])
local from = {}
for state in string.gmatch(ARGV[5], '[^,]+') do from[state] = true end
local out = {}
for i = 7, #ARGV do
  local id = ARGV[i]
  local r = load(id)
  if not r then
    out[#out + 1] = {id, 'missing'}
  elseif not from[r.s] or (dueBy and (r.s ~= 'PENDING_RETRY' or r.n > dueBy)) then
    out[#out + 1] = {id, 'refused', r.s}
  else
    local claimedFrom = r.s
    leave(id, r)
    r.s = 'RETRYING'
    r.o = claimedFrom
    r.a = r.a + 1
    r.n = 0
    r.t = token
    r.x = expiresAt
    enter(id, r)
    count('retried', 1)
    out[#out + 1] = {id, 'claimed', save(id, r), redis.call('HGET', bodies, id)}
  end
end
flush()
return out
`;

// ARGV: 1 token, 2 now, 3 deadline, 4... ids. One reply per id: {id, 'done', state} or {id, 'lost'}.
const completeScript = `${common}${fenceCheck(3)}
local token, now = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local r = load(id)
  if not r or r.s ~= 'RETRYING' or r.t ~= token then
    out[#out + 1] = {id, 'lost'}
  else
    leave(id, r)
    r.s = 'RESOLVED'
    r.z = now
    r.t = ''
    r.o = ''
    r.x = 0
    enter(id, r)
    save(id, r)
    out[#out + 1] = {id, 'done', r.s}
  end
end
flush()
return out
`;

// ARGV: 1 token, 2 now, 3 deadline, then triples: id, reason, next retry at. Replies as complete.
const failScript = `${common}${fenceCheck(3)}
local token, now = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  local r = load(id)
  if not r or r.s ~= 'RETRYING' or r.t ~= token then
    out[#out + 1] = {id, 'lost'}
  else
    afterFailure(id, r, ARGV[i + 1], now, tonumber(ARGV[i + 2]), false)
    out[#out + 1] = {id, 'done', r.s}
  end
end
flush()
return out
`;

// ARGV: 1 now, 2 limit, 3 reason, 4 deadline. One reply per expired claim:
// {id, state, type, correlation id, attempts}.
const expireScript = `${common}${fenceCheck(4)}
local now = tonumber(ARGV[1])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', claims, '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))) do
  local r = load(id)
  if r and r.s == 'RETRYING' then
    afterFailure(id, r, ARGV[3], now, now, r.o == 'DEAD')
    out[#out + 1] = {id, r.s, r.y, r.c, r.a}
  else
    redis.call('ZREM', claims, id)
  end
end
flush()
return out
`;

// ARGV: 1 before, 2 limit. Forgets resolved entries resolved before ARGV[1]; returns how many.
const purgeScript = `${common}
local old = redis.call('ZRANGEBYSCORE', resolvedAt, '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(old) do forget(id) end
flush()
return #old
`;

// ARGV: 1 now, 2 limit, 3... types. Replies {id, due time, id, due time, ...}, per type in order.
const dueScript = `${common}
local out = {}
for i = 3, #ARGV do
  local found = redis.call('ZRANGEBYSCORE', duePrefix .. ARGV[i], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
  for _, value in ipairs(found) do out[#out + 1] = value end
end
return out
`;

// ARGV: 1 index (all, open or a state), 2 after ('' from the first), 3 limit, 4 scan limit,
// 5 states (comma-separated, '' for any), 6 type ('' any), 7 service ('' any), 8 '1' with bodies,
// 9 bytes of bodies that end the page. Replies {{id, record, body} (with bodies) or {id, state,
// type, service}..., last examined, more}.
const scanScript = `${common}
local index = ({all = all, open = open})[ARGV[1]] or stateKey[ARGV[1]]
local limit, maxBytes = tonumber(ARGV[3]), tonumber(ARGV[9])
local states = {}
local anyState = ARGV[5] == ''
for state in string.gmatch(ARGV[5], '[^,]+') do states[state] = true end
local min = '-'
if ARGV[2] ~= '' then min = '(' .. ARGV[2] end
local items, taken, bytes, last = {}, 0, 0, ''
for _, id in ipairs(redis.call('ZRANGEBYLEX', index, min, '+', 'LIMIT', 0, tonumber(ARGV[4]))) do
  last = id
  local json = redis.call('HGET', records, id)
  if json then
    local r = cjson.decode(json)
    if (anyState or states[r.s]) and (ARGV[6] == '' or r.y == ARGV[6]) and (ARGV[7] == '' or r.v == ARGV[7]) then
      if ARGV[8] == '1' then
        local body = redis.call('HGET', bodies, id)
        items[#items + 1] = {id, json, body}
        bytes = bytes + r.w
      else
        items[#items + 1] = {id, r.s, r.y, r.v}
      end
      taken = taken + 1
      if taken >= limit or bytes >= maxBytes then break end
    end
  end
end
local more = 0
if last ~= '' and #redis.call('ZRANGEBYLEX', index, '(' .. last, '+', 'LIMIT', 0, 1) > 0 then more = 1 end
return {items, last, more}
`;

// Replies {counts, by type, by service (hashes flattened), first failure of the oldest unresolved}.
const statsScript = `${common}
local oldest = redis.call('ZRANGE', open, 0, 0)[1]
local firstFailedAt = 0
if oldest then
  local r = load(oldest)
  if r then firstFailedAt = r.f end
end
return {redis.call('HGETALL', counts), redis.call('HGETALL', byType), redis.call('HGETALL', byService), firstFailedAt}
`;

type ScriptCall = (...args: (string | number)[]) => Promise<unknown>;

const scripts = {
  Add: addScript,
  Claim: claimScript,
  Complete: completeScript,
  Fail: failScript,
  Expire: expireScript,
  Purge: purgeScript,
  Due: dueScript,
  Scan: scanScript,
  Stats: statsScript,
} as const;

type Scripts = Record<keyof typeof scripts, ScriptCall>;

// Names on the client are namespaced: other modules define their own scripts on the connection.
function defineScripts(redis: Redis): Scripts {
  const defined = {} as Record<string, ScriptCall>;
  for (const [name, lua] of Object.entries(scripts)) {
    const command = `orchestratorDlq${name}`;
    redis.defineCommand(command, { lua, numberOfKeys: keyNames.length });
    const call = (redis as unknown as Record<string, ScriptCall | undefined>)[command];
    if (call === undefined) throw new Error(`ioredis did not define ${command}`);
    defined[name] = call.bind(redis);
  }
  return defined as Scripts;
}

/**
 * The DLQ in Redis, shared by every orchestrator on the same Redis and prefix. Keys, under
 * `<keyPrefix>{dlq}:` (one hash tag: one cluster slot, src/redis/redis-keys.ts): `records` and `bodies` (hashes by id), `all`, `open` and `state:<STATE>`
 * (ids in order), `claims` (by claim expiry), `resolved-at`, `due:<type>` (by due time), `counts`
 * (entries, bytes, per state, retried), `by-type` and `by-service` (unresolved counts). Every
 * transition is one Lua script that checks the state it starts from and updates the entry, its
 * indexes and the counters together, so that stats are read, not computed, and one claim of an
 * entry wins however many processes race for it.
 *
 * Writes carry a deadline on Redis' clock (`createRedisWriteFence`): a write refused with
 * "unavailable" was not applied, one that failed with "timeout" may have been applied before the
 * deadline its message names, never after. Purging resolved entries carries none (harmless late).
 *
 * @throws RangeError when a limit is not a positive integer.
 */
export function createRedisDlqStore(
  deps: RedisDlqStoreDeps,
  options: RedisDlqStoreOptions,
): DlqStore {
  const { redis, logger } = deps;
  const { keyPrefix, writeTimeoutMs, ...given } = options;
  const limits = { ...dlqStoreDefaults, ...given };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value < 1) {
      throw new RangeError(`${name} must be a positive integer, not ${value}`);
    }
  }
  const fence =
    deps.fence ??
    createRedisWriteFence(
      { redis, ...(deps.clock ? { clock: deps.clock } : {}), ...(logger ? { logger } : {}) },
      writeTimeoutMs === undefined ? {} : { writeTimeoutMs },
    );
  const space = redisKeyspace(keyPrefix, "dlq");
  const keys = keyNames.map((name) => `${space}${name}`);
  const { command, unreadable } = errors;
  const run = defineScripts(redis);

  /** A fenced write: the script gets its deadline as its last fixed argument. */
  const write = async (
    script: ScriptCall,
    before: readonly (string | number)[],
    after: readonly (string | number)[] = [],
  ): Promise<unknown> => {
    const reply = await command(() =>
      fence.send((deadline) => script(...keys, ...before, deadline, ...after)),
    );
    if (Array.isArray(reply) && reply[0] === fencedOut) {
      throw new DomainError(
        "unavailable",
        "the dead-letter store ran the write after its deadline: it was not applied",
      );
    }
    return reply;
  };

  const decodeEntry = (dlqId: string, record: unknown, body: unknown): DlqEntry => {
    if (typeof record !== "string" || typeof body !== "string") {
      throw unreadable(new Error(`dlq entry ${dlqId} is incomplete`));
    }
    return entryOf(dlqId, readRecord(record, unreadable), readBody(body, unreadable));
  };

  const scan = async (
    query: DlqQuery,
    page: DlqPageRequest,
    withBodies: boolean,
  ): Promise<{ rows: unknown[][]; next: string }> => {
    const reply = await command(() =>
      run.Scan(
        ...keys,
        indexNameFor(query),
        page.after,
        page.limit,
        limits.scanLimit,
        (query.states ?? []).join(","),
        query.eventType ?? "",
        query.serviceName ?? "",
        withBodies ? "1" : "0",
        page.maxBytes ?? Number.MAX_SAFE_INTEGER,
      ),
    );
    if (!Array.isArray(reply) || !Array.isArray(reply[0]) || typeof reply[1] !== "string") {
      throw unreadable(new Error("unexpected reply to a scan"));
    }
    const rows = (reply[0] as unknown[]).map((row) => (Array.isArray(row) ? row : []));
    return { rows, next: reply[2] === 1 ? reply[1] : "" };
  };

  return {
    async open() {
      fence.start();
    },
    async close() {
      fence.stop();
    },

    async add(input: NewDlqEntry): Promise<DlqEntry> {
      const entry = initialEntry(input);
      const record = encodeRecord(entry, dlqEntryWeight(input));
      const reply = await write(run.Add, [
        input.dlqId,
        record,
        dlqBodyJson(input),
        limits.maxEntries,
        limits.maxBytes,
      ]);
      if (!Array.isArray(reply)) throw unreadable(new Error("unexpected reply to add"));
      if (reply[0] === 1) return entry;
      if (reply[1] === "exists") {
        throw new DomainError("already_exists", `dlq entry ${input.dlqId} exists already`);
      }
      throw new DomainError(
        "resource_exhausted",
        `the dead-letter queue is full (${reply[1] === "entries" ? "entries" : "bytes"}): resolve or retry entries first`,
      );
    },

    async get(dlqId) {
      const [record, body] = await command(() =>
        Promise.all([redis.hget(keys[0] as string, dlqId), redis.hget(keys[1] as string, dlqId)]),
      );
      return record === null ? undefined : decodeEntry(dlqId, record, body);
    },

    async refs(dlqIds) {
      if (dlqIds.length === 0) return [];
      const records = await command(() => redis.hmget(keys[0] as string, ...dlqIds));
      return records.map((record, i) =>
        record === null ? undefined : refOf(dlqIds[i] as string, readRecord(record, unreadable)),
      );
    },

    async list(query, page): Promise<DlqPage<DlqEntry>> {
      const { rows, next } = await scan(query, page, true);
      return {
        items: rows.map(([id, record, body]) => decodeEntry(String(id), record, body)),
        next,
      };
    },

    async select(query, page): Promise<DlqPage<DlqRef>> {
      const { rows, next } = await scan(query, page, false);
      return {
        items: rows.map(([id, state, type, service]) => ({
          dlqId: String(id),
          state: stateOf(state, unreadable),
          eventType: String(type),
          serviceName: String(service),
        })),
        next,
      };
    },

    async claim(dlqIds, request): Promise<ClaimResult[]> {
      if (dlqIds.length === 0) return [];
      const reply = await write(
        run.Claim,
        [
          request.token,
          request.now,
          request.expiresAt,
          request.dueBy ?? "",
          request.from.join(","),
        ],
        dlqIds,
      );
      return rowsOf(reply, unreadable).map(([id, outcome, record, body]): ClaimResult => {
        const dlqId = String(id);
        if (outcome === "claimed") {
          return { dlqId, outcome, entry: decodeEntry(dlqId, record, body) };
        }
        if (outcome === "refused") return { dlqId, outcome, state: stateOf(record, unreadable) };
        return { dlqId, outcome: "missing" };
      });
    },

    async complete(token, dlqIds, now): Promise<TransitionResult[]> {
      if (dlqIds.length === 0) return [];
      const reply = await write(run.Complete, [token, now], dlqIds);
      return rowsOf(reply, unreadable).map(transitionOf(unreadable));
    },

    async fail(token, failures, now): Promise<TransitionResult[]> {
      if (failures.length === 0) return [];
      const triples = failures.flatMap((f) => [f.dlqId, f.reason, f.nextRetryAt]);
      const reply = await write(run.Fail, [token, now], triples);
      return rowsOf(reply, unreadable).map(transitionOf(unreadable));
    },

    async due(eventTypes, now, limit): Promise<string[]> {
      const types = [...new Set(eventTypes)];
      if (types.length === 0) return [];
      const reply = await command(() => run.Due(...keys, now, limit, ...types));
      if (!Array.isArray(reply)) throw unreadable(new Error("unexpected reply to due"));
      const found: { id: string; at: number }[] = [];
      for (let i = 0; i + 1 < reply.length; i += 2) {
        found.push({ id: String(reply[i]), at: Number(reply[i + 1]) });
      }
      found.sort((a, b) => a.at - b.at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      return found.slice(0, limit).map((f) => f.id);
    },

    async expireClaims(now, limit, reason): Promise<ExpiredClaim[]> {
      const reply = await write(run.Expire, [now, limit, reason]);
      return rowsOf(reply, unreadable).map(([id, state, type, correlation, attempts]) => ({
        dlqId: String(id),
        state: stateOf(state, unreadable),
        eventType: String(type),
        correlationId: String(correlation),
        attempts: Number(attempts),
      }));
    },

    async purgeResolved(before, limit): Promise<number> {
      // Unfenced: forgetting resolved entries late, or twice, does no harm.
      const reply = await command(() => run.Purge(...keys, before, limit), "write");
      return typeof reply === "number" ? reply : 0;
    },

    async stats(): Promise<DlqStats> {
      const reply = await command(() => run.Stats(...keys));
      if (!Array.isArray(reply) || reply.length !== 4) {
        throw unreadable(new Error("unexpected reply to stats"));
      }
      const counts = pairs(reply[0]);
      const count = (name: string) => Number(counts[name] ?? 0);
      return {
        pendingRetry: count("PENDING_RETRY"),
        retrying: count("RETRYING"),
        dead: count("DEAD"),
        resolved: count("RESOLVED"),
        retried: count("retried"),
        byType: numbers(pairs(reply[1])),
        byService: numbers(pairs(reply[2])),
        oldestFailedAt: Number(reply[3]) || 0,
        entries: count("entries"),
        bytes: count("bytes"),
      };
    },
  };
}

/** The record as stored: the entry's changing parts, with the fields the scripts read. */
interface StoredRecord {
  readonly s: DlqState;
  readonly a: number;
  readonly m: number;
  readonly n: number;
  readonly t: string;
  readonly x: number;
  readonly o: string;
  readonly f: number;
  readonly l: number;
  readonly z: number;
  readonly r: string;
  readonly y: string;
  readonly v: string;
  readonly c: string;
  readonly w: number;
}

interface StoredBody {
  readonly eventId: string;
  readonly eventType: string;
  readonly payload: JsonObject;
  readonly serviceName: string;
  readonly correlationId: string;
}

// Field by field, so that a field added to the model is a compile error here.
function encodeRecord(entry: DlqEntry, weight: number): string {
  const record: StoredRecord = {
    s: entry.state,
    a: entry.attempts,
    m: entry.maxAttempts,
    n: entry.nextRetryAt,
    t: "",
    x: entry.claimExpiresAt,
    o: "",
    f: entry.firstFailedAt,
    l: entry.lastFailedAt,
    z: entry.resolvedAt,
    r: entry.failureReason,
    y: entry.eventType,
    v: entry.serviceName,
    c: entry.correlationId,
    w: weight,
  };
  return JSON.stringify(record);
}

function entryOf(dlqId: string, r: StoredRecord, body: StoredBody): DlqEntry {
  return {
    dlqId,
    eventId: body.eventId,
    eventType: body.eventType,
    payload: body.payload,
    failureReason: r.r,
    serviceName: body.serviceName,
    correlationId: body.correlationId,
    attempts: r.a,
    maxAttempts: r.m,
    nextRetryAt: r.n,
    state: r.s,
    firstFailedAt: r.f,
    lastFailedAt: r.l,
    resolvedAt: r.z,
    claimExpiresAt: r.x,
  };
}

function refOf(dlqId: string, r: StoredRecord): DlqRef {
  return { dlqId, eventType: r.y, serviceName: r.v, state: r.s };
}

type Unreadable = (cause: unknown) => DomainError;

function readRecord(json: string, unreadable: Unreadable): StoredRecord {
  const record = parse(json, unreadable) as Partial<StoredRecord> | null;
  if (
    record === null ||
    typeof record !== "object" ||
    !(dlqStates as readonly unknown[]).includes(record.s) ||
    typeof record.a !== "number" ||
    typeof record.y !== "string"
  ) {
    throw unreadable(new Error("not a dlq record"));
  }
  return record as StoredRecord;
}

function readBody(json: string, unreadable: Unreadable): StoredBody {
  const body = parse(json, unreadable) as Partial<StoredBody> | null;
  if (body === null || typeof body !== "object" || typeof body.payload !== "object") {
    throw unreadable(new Error("not a dlq body"));
  }
  return body as StoredBody;
}

function parse(json: string, unreadable: Unreadable): unknown {
  try {
    return JSON.parse(json);
  } catch (error) {
    throw unreadable(error);
  }
}

function stateOf(value: unknown, unreadable: Unreadable): DlqState {
  const state = dlqStates.find((s) => s === value);
  if (state === undefined) throw unreadable(new Error(`unknown state ${String(value)}`));
  return state;
}

function rowsOf(reply: unknown, unreadable: Unreadable): unknown[][] {
  if (!Array.isArray(reply) || !reply.every(Array.isArray)) {
    throw unreadable(new Error("unexpected reply to a transition"));
  }
  return reply as unknown[][];
}

function transitionOf(unreadable: Unreadable) {
  return ([id, outcome, state]: unknown[]): TransitionResult =>
    outcome === "done"
      ? { dlqId: String(id), outcome: "done", state: stateOf(state, unreadable) }
      : { dlqId: String(id), outcome: "lost" };
}

/** A flattened hash (HGETALL as a script returns it) as a record. */
function pairs(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(flat)) return out;
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}

function numbers(record: Record<string, string>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(record)) out[key] = Number(value);
  return out;
}
