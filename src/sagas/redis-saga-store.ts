import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { type Clock, systemClock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import { type IdSource, randomIds } from "../ids.js";
import { untilReady } from "../redis/redis-connection.js";
import { redisKeyspace } from "../redis/redis-keys.js";
import { redisStoreErrors } from "../redis/redis-store-errors.js";
import { createRedisWriteFence, type RedisWriteFence } from "../redis/redis-write-fence.js";
import {
  emptyCounts,
  type Saga,
  type SagaLease,
  type SagaStatus,
  type SagaStep,
  type SagaStepStatus,
  type SagaSummary,
  sagaStatuses,
  sagaStepStatuses,
} from "./model.js";
import {
  illegalSagaTransition,
  illegalStepTransition,
  sagaRules,
  sagaStepsNotReady,
  stepRule,
  stepRules,
  stepTransitionNotNow,
} from "./saga-machine.js";
import {
  boundedSagaError,
  checkLease,
  checkVersion,
  decodeOutput,
  draftSaga,
  draftStepChange,
  leaseHeld,
  leaseLost,
  leaseOfFinished,
  noSuchStep,
  outputNotTaken,
  pageOf,
  pageTokenAfter,
  type SagaStoreLimits,
  sagaChanged,
  sagaExists,
  sagaNotFound,
  sagaStoreLimits,
  sagaTooLarge,
  stepChanged,
  storeFull,
} from "./saga-records.js";
import type { SagaStore } from "./saga-store.js";

/** What the Redis saga store works with; the caller creates, connects and closes the connection. */
export interface RedisSagaStoreDeps {
  /**
   * The connection, configured to fail fast (no offline queue) as `createRedisClient` does, and
   * without ioredis' own `keyPrefix` (give `options.keyPrefix`).
   */
  readonly redis: Redis;
  /** Times of creation and transitions, and the retention cutoff. Default: `systemClock`. */
  readonly clock?: Clock;
  /** Where a saga's id comes from when the caller gives none. Default: `randomIds`. */
  readonly ids?: IdSource;
  /** Where the write fence reports failed clock measurements. Default: nowhere. */
  readonly logger?: Logger;
  /**
   * What gives each write its deadline. Default: `createRedisWriteFence` over `redis` (on the
   * system's monotonic clock, whatever `clock` is: deadlines are about real time).
   */
  readonly fence?: RedisWriteFence;
}

/** How the Redis saga store names its keys, and its bounds (see {@link SagaStoreLimits}). */
export interface RedisSagaStoreOptions extends Partial<SagaStoreLimits> {
  /** Prepended to every key, e.g. "orchestrator:". Required. */
  readonly keyPrefix: string;
  /** How long `open()` waits for the connection to be ready. Default 10,000 ms. */
  readonly openTimeoutMs?: number;
}

/** Finished sagas forgotten per script run by `sweep`, so that no run holds Redis for long. */
const sweepBatch = 500;

const errors = redisStoreErrors({ store: "the saga store", record: "the saga" });
const { command, unreadable } = errors;

// --- Lua. Every script takes ARGV[1] = the key prefix; keys of other sagas (retention, room) and
// of the listings are built from it, so the scripts suit a standalone Redis, not a cluster. ---

const luaSet = (items: readonly string[]) => `{${items.map((i) => `${i} = true`).join(", ")}}`;

// The table of saga-machine.ts, as Lua tables: the scripts decide legality on the stored state.
// Each script builds only the half it uses (they are rebuilt at every run).
const sagaRulesLua = `
local sagaRules = {
${sagaRules
  .map(
    (r) =>
      `  ['${r.from}>${r.to}'] = {finish = ${r.effects.finish}, stepsIn = ${r.stepsIn ? luaSet(r.stepsIn) : "nil"}},`,
  )
  .join("\n")}
}
`;
const stepRulesLua = `
local stepRules = {
${stepRules
  .map(
    (r) =>
      `  ['${r.from}>${r.to}'] = {sagaIn = ${luaSet(r.sagaIn)}, attempt = ${r.effects.attempt}, finish = ${r.effects.finish}, compensate = ${r.effects.compensate}, clearError = ${r.effects.clearError}, output = ${r.effects.output}},`,
  )
  .join("\n")}
}
`;

// Keys, and forgetting a saga with everything it counts for: its listing, the finished index,
// the counts by status, the finished durations and the bytes.
const preludeLua = `
local prefix = ARGV[1]
local statsKey = prefix .. 'sagas:stats'
local finishedKey = prefix .. 'sagas:finished'
local function sagaKey(id) return prefix .. 'saga:' .. id end
local function listingOf(status) return prefix .. 'sagas:status:' .. status end
local function int(x) return string.format('%d', x) end

local function forget(id)
  local key = sagaKey(id)
  redis.call('ZREM', finishedKey, id)
  local f = redis.call('HMGET', key, 'status', 'bytes', 'listing', 'createdAt', 'finishedAt')
  if not f[1] then return end
  redis.call('DEL', key)
  redis.call('ZREM', listingOf(f[1]), f[3])
  redis.call('HINCRBY', statsKey, f[1], -1)
  redis.call('HINCRBY', statsKey, 'bytes', int(-tonumber(f[2])))
  if f[5] and f[5] ~= '' then
    redis.call('HINCRBY', statsKey, 'durationMs', int(-math.max(0, tonumber(f[5]) - tonumber(f[4]))))
  end
end

local function oldestFinished(keep)
  local two = redis.call('ZRANGE', finishedKey, 0, 1)
  if two[1] == keep then return two[2] end
  return two[1]
end

-- The oldest finished sagas (never 'keep') make room for 'extra' more bytes; false when running
-- sagas alone fill the store. A change that does not grow the store always passes.
local function makeRoom(extra, keep, maxBytes)
  if extra <= 0 then return true end
  while tonumber(redis.call('HGET', statsKey, 'bytes') or '0') + extra > maxBytes do
    local victim = oldestFinished(keep)
    if not victim then return false end
    forget(victim)
  end
  return true
end

local function markFinished(id, finishedAt, createdAt, maxFinished)
  redis.call('ZADD', finishedKey, finishedAt, id)
  redis.call('HINCRBY', statsKey, 'durationMs', int(math.max(0, finishedAt - createdAt)))
  while redis.call('ZCARD', finishedKey) > maxFinished do
    local victim = oldestFinished(id)
    if not victim then break end
    forget(victim)
  end
end

local function stepName(key, index)
  return cjson.decode(redis.call('HGET', key, 'd' .. index)).name
end
`;

// The write fence, first in every write: a script run after its deadline (held by a frozen Redis,
// or sent again by ioredis after a reconnection once this process had answered) changes nothing.
const fencedOut = -1;
const fenceLua = `
local clock = redis.call('TIME')
if tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) > tonumber(ARGV[2]) then
  return {${fencedOut}}
end
`;

// Reply codes of the writes.
const reply = {
  ok: 1,
  notFound: 0,
  exists: 2,
  full: 3,
  versionChanged: 4,
  illegal: 5,
  notNow: 6,
  tooLarge: 7,
  noStep: 8,
  outputNotTaken: 9,
  leaseLost: 10,
  leaseHeld: 11,
  finished: 12,
} as const;

// Checks the lease a transition carries (ARGV[i] its holder, '' for none; ARGV[i + 1] its token).
const leaseCheckLua = `
local function leaseLost(key, i)
  if ARGV[i] == '' then return false end
  local l = redis.call('HMGET', key, 'leaseHolder', 'leaseToken')
  if l[1] ~= ARGV[i] or l[2] ~= ARGV[i + 1] then return tonumber(l[2] or '0') or 0 end
  return false
end
`;

// KEYS[1] the saga. ARGV: 1 prefix, 2 deadline, 3 id, 4 weight, 5 max bytes of the store,
// 6 listing key, 7… the saga's fields and values.
const createLua = `${preludeLua}${fenceLua}
if redis.call('EXISTS', KEYS[1]) == 1 then return {${reply.exists}} end
if not makeRoom(tonumber(ARGV[4]), ARGV[3], tonumber(ARGV[5])) then return {${reply.full}} end
for i = 7, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('ZADD', listingOf('PENDING'), 0, ARGV[6])
redis.call('HINCRBY', statsKey, 'PENDING', 1)
redis.call('HINCRBY', statsKey, 'bytes', ARGV[4])
return {${reply.ok}}
`;

// KEYS[1] the saga. ARGV: 1 prefix, 2 deadline, 3 id, 4 expected version, 5 to, 6 now,
// 7 '1' when an error is given, 8 the error, 9 max bytes of a saga, 10 of the store,
// 11 finished sagas kept, 12 the lease holder ('' unchecked), 13 its token. Returns {1, the saga's
// hash} or a code with what explains it.
const transitionLua = `${preludeLua}${sagaRulesLua}${leaseCheckLua}${fenceLua}
local key = KEYS[1]
local h = redis.call('HMGET', key, 'status', 'version', 'n', 'bytes', 'error', 'createdAt', 'listing')
if not h[1] then return {${reply.notFound}} end
local lost = leaseLost(key, 12)
if lost then return {${reply.leaseLost}, lost} end
local from, version = h[1], tonumber(h[2])
if version ~= tonumber(ARGV[4]) then return {${reply.versionChanged}, version} end
local to = ARGV[5]
local rule = sagaRules[from .. '>' .. to]
if not rule then return {${reply.illegal}, from} end
local n = tonumber(h[3])
if rule.stepsIn then
  for i = 0, n - 1 do
    local status = redis.call('HGET', key, 's' .. i)
    if not rule.stepsIn[status] then return {${reply.notNow}, from, stepName(key, i), status} end
  end
end
local oldError = h[5] or ''
local newError = oldError
if ARGV[7] == '1' then newError = ARGV[8] end
local bytes = tonumber(h[4])
local newBytes = bytes + #newError - #oldError
if newBytes > tonumber(ARGV[9]) then return {${reply.tooLarge}, newBytes} end
if not makeRoom(newBytes - bytes, ARGV[3], tonumber(ARGV[10])) then return {${reply.full}} end
redis.call('HSET', key, 'status', to, 'version', int(version + 1), 'updatedAt', ARGV[6],
  'error', newError, 'bytes', int(newBytes))
redis.call('ZREM', listingOf(from), h[7])
redis.call('ZADD', listingOf(to), 0, h[7])
redis.call('HINCRBY', statsKey, from, -1)
redis.call('HINCRBY', statsKey, to, 1)
redis.call('HINCRBY', statsKey, 'bytes', int(newBytes - bytes))
if rule.finish then
  redis.call('HSET', key, 'finishedAt', ARGV[6])
  for i = 0, n - 1 do
    if redis.call('HGET', key, 's' .. i) == 'PENDING' then
      redis.call('HSET', key, 's' .. i, 'SKIPPED')
      redis.call('HINCRBY', key, 'v' .. i, 1)
    end
  end
  markFinished(ARGV[3], tonumber(ARGV[6]), tonumber(h[6]), tonumber(ARGV[11]))
end
return {${reply.ok}, redis.call('HGETALL', key)}
`;

const summaryFields = [
  "name",
  "runId",
  "correlationId",
  "status",
  "createdAt",
  "updatedAt",
  "finishedAt",
  "error",
  "version",
  "n",
  "context",
  "leaseHolder",
  "leaseToken",
  "leaseExpiresAt",
] as const;
const summaryFieldsLua = `{${summaryFields.map((f) => `'${f}'`).join(", ")}}`;

// KEYS[1] the saga. ARGV: 1 prefix, 2 deadline, 3 id, 4 step index (-1: none), 5 expected step
// version, 6 to, 7 now, 8 '1' when an error is given, 9 the error, 10 '1' when an output is
// given, 11 the output, 12 max bytes of a saga, 13 of the store, 14 the lease holder ('':
// unchecked), 15 its token. Returns {1, the saga's summary fields, the step's fields} or a code
// with what explains it.
const transitionStepLua = `${preludeLua}${stepRulesLua}${leaseCheckLua}${fenceLua}
local key = KEYS[1]
local h = redis.call('HMGET', key, 'status', 'version', 'n', 'bytes')
if not h[1] then return {${reply.notFound}} end
local index = tonumber(ARGV[4])
if index < 0 or index >= tonumber(h[3]) then return {${reply.noStep}} end
local lost = leaseLost(key, 14)
if lost then return {${reply.leaseLost}, lost} end
local p = ARGV[4]
local f = redis.call('HMGET', key, 's' .. p, 'v' .. p, 'a' .. p, 'e' .. p, 'o' .. p)
local from, version = f[1], tonumber(f[2])
if version ~= tonumber(ARGV[5]) then return {${reply.versionChanged}, version, stepName(key, index)} end
local to = ARGV[6]
local rule = stepRules[from .. '>' .. to]
if not rule then return {${reply.illegal}, from, stepName(key, index)} end
if not rule.sagaIn[h[1]] then return {${reply.notNow}, from, stepName(key, index), h[1]} end
if ARGV[10] == '1' and not rule.output then return {${reply.outputNotTaken}, from} end
local oldError = f[4] or ''
local newError = oldError
if ARGV[8] == '1' then newError = ARGV[9] elseif rule.clearError then newError = '' end
local oldOutput = f[5] or ''
local newOutput = oldOutput
if ARGV[10] == '1' then newOutput = ARGV[11] end
local bytes = tonumber(h[4])
local newBytes = bytes + #newError - #oldError + #newOutput - #oldOutput
if newBytes > tonumber(ARGV[12]) then return {${reply.tooLarge}, newBytes} end
if not makeRoom(newBytes - bytes, ARGV[3], tonumber(ARGV[13])) then return {${reply.full}} end
redis.call('HSET', key, 's' .. p, to, 'v' .. p, int(version + 1), 'e' .. p, newError,
  'o' .. p, newOutput)
if rule.attempt then
  redis.call('HSET', key, 'a' .. p, int(tonumber(f[3] or '0') + 1), 't' .. p, ARGV[7], 'f' .. p, '')
elseif rule.finish then
  redis.call('HSET', key, 'f' .. p, ARGV[7])
end
if rule.compensate then redis.call('HSET', key, 'c' .. p, ARGV[7]) end
redis.call('HSET', key, 'version', int(tonumber(h[2]) + 1), 'updatedAt', ARGV[7],
  'bytes', int(newBytes))
redis.call('HINCRBY', statsKey, 'bytes', int(newBytes - bytes))
return {
  ${reply.ok},
  redis.call('HMGET', key, unpack(${summaryFieldsLua})),
  redis.call('HMGET', key, 's' .. p, 'v' .. p, 'a' .. p, 't' .. p, 'f' .. p, 'c' .. p, 'e' .. p, 'o' .. p, 'd' .. p)
}
`;

// KEYS[1] the saga. ARGV: 1 prefix, 2 deadline, 3 holder, 4 ttl, 5 '1' to force, 6 now, 7 the
// token of the lease to renew ('' to take one). Returns {1, holder, token, expiresAt} or a code.
const leaseLua = `${preludeLua}${fenceLua}
local key = KEYS[1]
local h = redis.call('HMGET', key, 'status', 'finishedAt', 'leaseHolder', 'leaseToken', 'leaseExpiresAt')
if not h[1] then return {${reply.notFound}} end
local now = tonumber(ARGV[6])
local token = tonumber(h[4] or '0') or 0
if ARGV[7] ~= '' then
  if h[3] ~= ARGV[3] or h[4] ~= ARGV[7] then return {${reply.leaseLost}, token} end
  if h[2] and h[2] ~= '' then return {${reply.finished}, h[1]} end
else
  if h[2] and h[2] ~= '' then return {${reply.finished}, h[1]} end
  if h[3] and h[3] ~= '' and tonumber(h[5]) > now and ARGV[5] ~= '1' then
    return {${reply.leaseHeld}}
  end
  token = token + 1
end
local expiresAt = int(now + tonumber(ARGV[4]))
redis.call('HSET', key, 'leaseHolder', ARGV[3], 'leaseToken', int(token), 'leaseExpiresAt', expiresAt)
return {${reply.ok}, ARGV[3], int(token), expiresAt}
`;

// KEYS[1] the stats (routing only). ARGV: 1 prefix, 2 status, 3 the listing key to continue after ('' from the start), 4 how many.
// Returns {listing key, summary fields, ...}: one consistent page.
const listLua = `${preludeLua}
local min = '-'
if ARGV[3] ~= '' then min = '(' .. ARGV[3] end
local keys = redis.call('ZRANGEBYLEX', listingOf(ARGV[2]), min, '+', 'LIMIT', 0, tonumber(ARGV[4]))
local page = {}
for _, listing in ipairs(keys) do
  local id = string.sub(listing, 18)
  table.insert(page, listing)
  table.insert(page, redis.call('HMGET', sagaKey(id), unpack(${summaryFieldsLua})))
end
return page
`;

// KEYS[1] the stats (routing only). ARGV: 1 prefix, 2 cutoff (Unix ms), 3 batch. Forgets up to a batch of the sagas finished
// before the cutoff; returns how many.
const sweepLua = `${preludeLua}
local ids = redis.call('ZRANGEBYSCORE', finishedKey, '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do forget(id) end
return #ids
`;

type ScriptCall = (...args: (string | number)[]) => Promise<unknown>;

interface SagaScripts {
  readonly create: ScriptCall;
  readonly transition: ScriptCall;
  readonly transitionStep: ScriptCall;
  readonly list: ScriptCall;
  readonly sweep: ScriptCall;
  readonly lease: ScriptCall;
}

// Names are namespaced on the client: other modules define their own scripts on the connection,
// and two saga stores on one connection define identical ones (harmless).
function defineScripts(redis: Redis): SagaScripts {
  const define = (name: string, lua: string, numberOfKeys: number): ScriptCall => {
    const commandName = `orchestratorSaga${name}`;
    redis.defineCommand(commandName, { lua, numberOfKeys });
    const defined = (redis as unknown as Record<string, ScriptCall | undefined>)[commandName];
    if (defined === undefined) throw new Error(`ioredis did not define ${commandName}`);
    return defined.bind(redis);
  };
  return {
    create: define("Create", createLua, 1),
    transition: define("Transition", transitionLua, 1),
    transitionStep: define("TransitionStep", transitionStepLua, 1),
    // KEYS[1] is unused by the Lua: declared so that a cluster sends the script to the node that
    // holds the sagas' slot (a script without keys goes to any node).
    list: define("List", listLua, 1),
    sweep: define("Sweep", sweepLua, 1),
    lease: define("Lease", leaseLua, 1),
  };
}

/**
 * Sagas in Redis, shared by every orchestrator process on the same Redis and prefix. Reads go to
 * Redis (no copy is kept here); every write is one Lua script, atomic: it checks the fence, the
 * version (compare-and-set), the table of `saga-machine.ts` (from which its Lua is generated) and
 * the bounds against the stored state, then changes the saga, its listing, the counts by status
 * and the bytes together, so the counts never drift from the stored sagas, even when a process
 * dies mid-run.
 *
 * Keys, under `<keyPrefix>{sagas}:` (one hash tag: one cluster slot, src/redis/redis-keys.ts):
 * `saga:<id>` (a hash: the saga's fields, and per step i its status
 * `s<i>`, version `v<i>`, attempts `a<i>`, times `t<i>` `f<i>` `c<i>`, error `e<i>`, output
 * `o<i>`), `sagas:status:<STATUS>` (the listing of each status, a sorted set ordered by creation
 * time then id), `sagas:finished` (finished sagas by finish time: retention's order) and
 * `sagas:stats` (counts by status, `durationMs` of the finished ones, `bytes` of all).
 *
 * Writes (create, transitions) carry a deadline on Redis' clock (`createRedisWriteFence`): one
 * not answered in time fails with "timeout" once that deadline has passed, and is never applied
 * after it. `sweep` carries none (forgetting expired sagas late does no harm).
 *
 * @throws RangeError when a bound is not a positive integer.
 * Methods throw as {@link SagaStore} says, and "internal" when Redis refuses a command or holds a
 * record this code cannot read.
 */
export function createRedisSagaStore(
  deps: RedisSagaStoreDeps,
  options: RedisSagaStoreOptions,
): SagaStore {
  const { redis, clock = systemClock, ids = randomIds, logger } = deps;
  const { keyPrefix, openTimeoutMs = 10_000, ...bounds } = options;
  // Every key the scripts build starts here: one slot on a cluster.
  const prefix = redisKeyspace(keyPrefix, "sagas");
  const limits = sagaStoreLimits(bounds);
  const fence = deps.fence ?? createRedisWriteFence({ redis, ...(logger ? { logger } : {}) });
  const scripts = defineScripts(redis);
  const sagaKey = (sagaId: string) => `${prefix}saga:${sagaId}`;
  const statsKey = `${prefix}sagas:stats`;
  const now = () => Math.floor(clock.now());

  const leaseReply = (sagaId: string, answer: unknown): SagaLease => {
    const [code, ...rest] = codeOf(answer);
    switch (code) {
      case reply.ok:
        return { holder: String(rest[0]), token: Number(rest[1]), expiresAt: Number(rest[2]) };
      case reply.notFound:
        throw sagaNotFound(sagaId);
      case reply.leaseLost:
        throw leaseLost(sagaId, Number(rest[0]));
      case reply.leaseHeld:
        throw leaseHeld(sagaId);
      case reply.finished:
        throw leaseOfFinished(sagaId, String(rest[0]));
      default:
        throw failure(code);
    }
  };

  const fenced = (send: (deadline: number) => Promise<unknown>): Promise<unknown> =>
    command(() => fence.send(send), "write");

  const failure = (code: number): Error =>
    code === fencedOut
      ? new DomainError(
          "unavailable",
          "the saga store ran the write after its deadline: it was not applied",
        )
      : unreadable(new Error(`unexpected reply code ${code}`));

  return {
    async open() {
      await command(() => untilReady(redis, openTimeoutMs));
      fence.start();
    },

    async close() {
      fence.stop();
    },

    async create(input) {
      const draft = draftSaga(input, limits, now(), ids);
      const { saga } = draft;
      const [code] = codeOf(
        await fenced((deadline) =>
          scripts.create(
            sagaKey(saga.sagaId),
            prefix,
            deadline,
            saga.sagaId,
            draft.weight,
            limits.maxBytes,
            draft.listingKey,
            ...createdFields(saga, draft.definitions, draft.weight, draft.listingKey),
          ),
        ),
      );
      if (code === reply.exists) throw sagaExists(saga.sagaId);
      if (code === reply.full) throw storeFull(limits.maxBytes);
      if (code !== reply.ok) throw failure(code);
      return saga;
    },

    async get(sagaId) {
      const fields = await command(() => redis.hgetall(sagaKey(sagaId)));
      if (Object.keys(fields).length === 0) return undefined;
      return decodeSaga(sagaId, new Map(Object.entries(fields)));
    },

    async transition(sagaId, change) {
      checkVersion(change.expectedVersion);
      const error = boundedSagaError(change.error);
      const answer = await fenced((deadline) =>
        scripts.transition(
          sagaKey(sagaId),
          prefix,
          deadline,
          sagaId,
          change.expectedVersion,
          change.to,
          now(),
          error === undefined ? "0" : "1",
          error ?? "",
          limits.maxSagaBytes,
          limits.maxBytes,
          limits.maxFinished,
          change.lease?.holder ?? "",
          change.lease?.token ?? 0,
        ),
      );
      const [code, ...rest] = codeOf(answer);
      switch (code) {
        case reply.ok:
          return decodeSaga(sagaId, pairs(rest[0]));
        case reply.notFound:
          throw sagaNotFound(sagaId);
        case reply.leaseLost:
          throw leaseLost(sagaId, Number(rest[0]));
        case reply.versionChanged:
          throw sagaChanged(sagaId, Number(rest[0]));
        case reply.illegal:
          throw illegalSagaTransition(sagaStatusOf(rest[0]), change.to);
        case reply.notNow:
          throw sagaStepsNotReady(sagaStatusOf(rest[0]), change.to, {
            name: String(rest[1]),
            status: stepStatusOf(rest[2]),
          });
        case reply.tooLarge:
          throw sagaTooLarge(Number(rest[0]), limits.maxSagaBytes);
        case reply.full:
          throw storeFull(limits.maxBytes);
        default:
          throw failure(code);
      }
    },

    async transitionStep(sagaId, stepIndex, change) {
      const draft = draftStepChange(change, limits);
      const index = Number.isSafeInteger(stepIndex) && stepIndex >= 0 ? stepIndex : -1;
      const answer = await fenced((deadline) =>
        scripts.transitionStep(
          sagaKey(sagaId),
          prefix,
          deadline,
          sagaId,
          index,
          change.expectedVersion,
          change.to,
          now(),
          draft.error === undefined ? "0" : "1",
          draft.error ?? "",
          draft.output === undefined ? "0" : "1",
          draft.output ?? "",
          limits.maxSagaBytes,
          limits.maxBytes,
          change.lease?.holder ?? "",
          change.lease?.token ?? 0,
        ),
      );
      const [code, ...rest] = codeOf(answer);
      switch (code) {
        case reply.ok:
          return decodeStepResult(sagaId, stepIndex, rest[0], rest[1]);
        case reply.notFound:
          throw sagaNotFound(sagaId);
        case reply.noStep:
          throw noSuchStep(sagaId, stepIndex);
        case reply.leaseLost:
          throw leaseLost(sagaId, Number(rest[0]));
        case reply.versionChanged:
          throw stepChanged(sagaId, String(rest[1]), Number(rest[0]));
        case reply.illegal:
          throw illegalStepTransition(String(rest[1]), stepStatusOf(rest[0]), change.to);
        case reply.notNow:
          throw stepTransitionNotNow(
            String(rest[1]),
            stepStatusOf(rest[0]),
            change.to,
            sagaStatusOf(rest[2]),
          );
        case reply.outputNotTaken: {
          const rule = stepRule(stepStatusOf(rest[0]), change.to);
          if (rule === undefined) throw failure(code);
          throw outputNotTaken(rule);
        }
        case reply.tooLarge:
          throw sagaTooLarge(Number(rest[0]), limits.maxSagaBytes);
        case reply.full:
          throw storeFull(limits.maxBytes);
        default:
          throw failure(code);
      }
    },

    async takeLease(sagaId, request) {
      checkLease(request.holder, request.ttlMs);
      return leaseReply(
        sagaId,
        await fenced((deadline) =>
          scripts.lease(
            sagaKey(sagaId),
            prefix,
            deadline,
            request.holder,
            request.ttlMs,
            request.force === true ? "1" : "0",
            now(),
            "",
          ),
        ),
      );
    },

    async renewLease(sagaId, proof, ttlMs) {
      checkLease(proof.holder, ttlMs);
      return leaseReply(
        sagaId,
        await fenced((deadline) =>
          scripts.lease(
            sagaKey(sagaId),
            prefix,
            deadline,
            proof.holder,
            ttlMs,
            "0",
            now(),
            String(proof.token),
          ),
        ),
      );
    },

    async list(query) {
      const { pageSize, after } = pageOf(query);
      const answer = await command(() =>
        scripts.list(statsKey, prefix, query.status, after, pageSize + 1),
      );
      if (!Array.isArray(answer)) throw unreadable(new Error("unexpected reply to a listing"));
      const sagas: SagaSummary[] = [];
      const keys: string[] = [];
      for (let i = 0; i + 1 < answer.length; i += 2) {
        const listing = String(answer[i]);
        keys.push(listing);
        const fields = answer[i + 1];
        // Gone between the listing and the read: never, within one script, but be safe.
        if (!Array.isArray(fields) || fields[0] === null) continue;
        sagas.push(decodeSummary(listing.slice(17), zip(summaryFields, fields)));
      }
      const page = sagas.slice(0, pageSize);
      const last = keys[pageSize - 1];
      return {
        sagas: page,
        nextPageToken: keys.length > pageSize && last !== undefined ? pageTokenAfter(last) : "",
      };
    },

    async counts() {
      const fields = await command(() => redis.hgetall(statsKey));
      const byStatus = emptyCounts();
      for (const status of sagaStatuses) byStatus[status] = Number(fields[status] ?? 0);
      return { byStatus, finishedDurationMs: Number(fields.durationMs ?? 0) };
    },

    async sweep() {
      const cutoff = now() - limits.retentionMs;
      let forgotten = 0;
      for (;;) {
        const count = await errors.unfencedWrite(redis, () =>
          scripts.sweep(statsKey, prefix, cutoff, sweepBatch),
        );
        if (typeof count !== "number") throw unreadable(new Error("unexpected reply to a sweep"));
        forgotten += count;
        if (count < sweepBatch) return forgotten;
      }
    },
  };
}

/** The hash fields of a new saga, as HSET takes them (empty fields are left out). */
function createdFields(
  saga: Saga,
  definitions: readonly string[],
  weight: number,
  listing: string,
): string[] {
  const fields = [
    "id",
    saga.sagaId,
    "name",
    saga.name,
    "runId",
    saga.runId,
    "correlationId",
    saga.correlationId,
    "status",
    saga.status,
    "createdAt",
    String(saga.createdAt),
    "updatedAt",
    String(saga.updatedAt),
    "finishedAt",
    "",
    "error",
    "",
    "version",
    String(saga.version),
    "n",
    String(saga.steps.length),
    "bytes",
    String(weight),
    "listing",
    listing,
    "context",
    saga.context === undefined ? "" : JSON.stringify(saga.context),
  ];
  if (saga.lease !== undefined) {
    const { holder, token, expiresAt } = saga.lease;
    fields.push(
      "leaseHolder",
      holder,
      "leaseToken",
      String(token),
      "leaseExpiresAt",
      String(expiresAt),
    );
  }
  for (const step of saga.steps) {
    const i = step.index;
    fields.push(`d${i}`, definitions[i] ?? "", `s${i}`, step.status, `v${i}`, "1", `a${i}`, "0");
  }
  return fields;
}

function codeOf(answer: unknown): [number, ...unknown[]] {
  if (!Array.isArray(answer) || typeof answer[0] !== "number") {
    throw unreadable(new Error("unexpected reply to a write"));
  }
  return answer as [number, ...unknown[]];
}

/** A flattened hash (HGETALL as a script returns it) as a map. */
function pairs(flat: unknown): Map<string, string> {
  if (!Array.isArray(flat)) throw unreadable(new Error("unexpected hash"));
  const map = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) map.set(String(flat[i]), String(flat[i + 1]));
  return map;
}

function zip(names: readonly string[], values: unknown[]): Map<string, string> {
  const map = new Map<string, string>();
  names.forEach((name, i) => {
    const value = values[i];
    if (value !== null && value !== undefined) map.set(name, String(value));
  });
  return map;
}

function text(fields: Map<string, string>, name: string): string {
  return fields.get(name) ?? "";
}

function integer(fields: Map<string, string>, name: string): number {
  const value = Number(fields.get(name));
  if (!Number.isSafeInteger(value)) throw unreadable(new Error(`${name} is not an integer`));
  return value;
}

function time(fields: Map<string, string>, name: string): number | undefined {
  const value = fields.get(name);
  return value === undefined || value === "" ? undefined : integer(fields, name);
}

function sagaStatusOf(value: unknown): SagaStatus {
  const status = sagaStatuses.find((s) => s === value);
  if (status === undefined) throw unreadable(new Error(`unknown saga status ${String(value)}`));
  return status;
}

function stepStatusOf(value: unknown): SagaStepStatus {
  const status = sagaStepStatuses.find((s) => s === value);
  if (status === undefined) throw unreadable(new Error(`unknown step status ${String(value)}`));
  return status;
}

function decodeSummary(sagaId: string, fields: Map<string, string>): SagaSummary {
  return {
    sagaId,
    name: text(fields, "name"),
    runId: text(fields, "runId"),
    correlationId: text(fields, "correlationId"),
    status: sagaStatusOf(fields.get("status")),
    createdAt: integer(fields, "createdAt"),
    updatedAt: integer(fields, "updatedAt"),
    finishedAt: time(fields, "finishedAt"),
    error: text(fields, "error"),
    version: integer(fields, "version"),
    stepCount: integer(fields, "n"),
    context: contextOf(fields.get("context")),
    lease: leaseOf(fields),
  };
}

function contextOf(json: string | undefined) {
  if (json === undefined || json === "") return undefined;
  try {
    return decodeOutput(json);
  } catch (error) {
    throw unreadable(error);
  }
}

function leaseOf(fields: Map<string, string>): SagaLease | undefined {
  const holder = fields.get("leaseHolder");
  if (holder === undefined || holder === "") return undefined;
  return {
    holder,
    token: integer(fields, "leaseToken"),
    expiresAt: integer(fields, "leaseExpiresAt"),
  };
}

interface StepDefinition {
  readonly name: string;
  readonly action: string;
  readonly compensation: string;
  readonly group: number;
}

function decodeDefinition(json: string | undefined): StepDefinition {
  try {
    const parsed: unknown = JSON.parse(json ?? "");
    if (typeof parsed === "object" && parsed !== null) return parsed as StepDefinition;
  } catch (error) {
    throw unreadable(error);
  }
  throw unreadable(new Error("a step definition is not an object"));
}

/** Step `index` from fields named as stored (`s<i>`...) or as `s`... when `suffix` is "". */
function decodeStep(index: number, fields: Map<string, string>, suffix: string): SagaStep {
  const definition = decodeDefinition(fields.get(`d${suffix}`));
  const output = fields.get(`o${suffix}`);
  try {
    return {
      index,
      name: definition.name,
      action: definition.action,
      compensation: definition.compensation,
      group: definition.group,
      status: stepStatusOf(fields.get(`s${suffix}`)),
      attempts: integer(fields, `a${suffix}`),
      error: text(fields, `e${suffix}`),
      startedAt: time(fields, `t${suffix}`),
      finishedAt: time(fields, `f${suffix}`),
      compensatedAt: time(fields, `c${suffix}`),
      output: output === undefined || output === "" ? undefined : decodeOutput(output),
      version: integer(fields, `v${suffix}`),
    };
  } catch (error) {
    throw error instanceof DomainError ? error : unreadable(error);
  }
}

function decodeSaga(sagaId: string, fields: Map<string, string>): Saga {
  const { stepCount, ...summary } = decodeSummary(sagaId, fields);
  const steps: SagaStep[] = [];
  for (let i = 0; i < stepCount; i++) steps.push(decodeStep(i, fields, String(i)));
  return { ...summary, steps };
}

function decodeStepResult(
  sagaId: string,
  index: number,
  summaryReply: unknown,
  stepReply: unknown,
): { saga: SagaSummary; step: SagaStep } {
  if (!Array.isArray(summaryReply) || !Array.isArray(stepReply)) {
    throw unreadable(new Error("unexpected reply to a step transition"));
  }
  const stepFields = zip(["s", "v", "a", "t", "f", "c", "e", "o", "d"], stepReply);
  return {
    saga: decodeSummary(sagaId, zip(summaryFields, summaryReply)),
    step: decodeStep(index, stepFields, ""),
  };
}
