import type { Redis } from "ioredis";
import { baselinesFull, type OpenApiBaseline } from "./model.js";
import type { RegistryStore } from "./registry-store.js";

// The OpenAPI baselines of the Redis registry store, in the hash `registry:baselines` (name →
// record), tied to the live entries in `registry:entries`.

// The bytes of every record, in KEYS[3] beside the hash; counted once here when missing (a hash
// written before the count existed).
const totalOf = `
local function total()
  local counted = redis.call('GET', KEYS[3])
  if counted then return tonumber(counted) end
  local sum = 0
  for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
    sum = sum + redis.call('HSTRLEN', KEYS[2], name)
  end
  redis.call('SET', KEYS[3], sum)
  return sum
end
`;

// Records a baseline only while the entry is live, and only within the bytes all baselines may
// take: atomic, so that a poll ending after a removal cannot leave a baseline behind.
// KEYS: 1 entries, 2 baselines, 3 their bytes. ARGV: 1 name, 2 record, 3 max bytes of all.
// Returns 1 stored, 0 not live, -1 over the bytes (a record that does not grow always fits).
const putBaselineScript = `${totalOf}
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local grown = #ARGV[2] - redis.call('HSTRLEN', KEYS[2], ARGV[1])
if grown > 0 and total() + grown > tonumber(ARGV[3]) then return -1 end
total()
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('INCRBY', KEYS[3], grown)
return 1
`;

// Forgets the baseline of ARGV[1]. KEYS as above.
const deleteBaselineScript = `${totalOf}
local bytes = redis.call('HSTRLEN', KEYS[2], ARGV[1])
if bytes == 0 then return 0 end
total()
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DECRBY', KEYS[3], bytes)
return 1
`;

// Forgets the baselines of names without a live entry; returns how many. KEYS as above.
const purgeBaselinesScript = `${totalOf}
total()
local forgotten = 0
for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
  if redis.call('HEXISTS', KEYS[1], name) == 0 then
    redis.call('DECRBY', KEYS[3], redis.call('HSTRLEN', KEYS[2], name))
    redis.call('HDEL', KEYS[2], name)
    forgotten = forgotten + 1
  end
end
return forgotten
`;

type Script = (...args: (string | Buffer)[]) => Promise<unknown>;

/** Runs one Redis round trip, turning its failure into the domain's words. */
type Command = <T>(send: () => Promise<T>) => Promise<T>;

/**
 * How the store runs a read, and a write without a fence (sent and unanswered, it fails with
 * "timeout": a baseline written or forgotten late does no harm).
 */
export interface BaselineCommands {
  readonly read: Command;
  readonly write: Command;
}

/** The baseline methods of the store. */
export type RedisBaselines = Pick<
  RegistryStore,
  "getBaseline" | "putBaseline" | "deleteBaseline" | "purgeBaselines"
>;

/**
 * The baseline methods of the Redis registry store. A record is a line of JSON (hash, operation
 * count, recorded at) then the summary's bytes as they are: no JSON or base64 of the summary.
 */
export function createRedisBaselines(
  redis: Redis,
  keys: { readonly entries: string; readonly baselines: string; readonly bytes: string },
  { read, write }: BaselineCommands,
  maxBytes: number,
): RedisBaselines {
  const putScript = defineScript(redis, "PutBaseline", putBaselineScript);
  const deleteScript = defineScript(redis, "DeleteBaseline", deleteBaselineScript);
  const purgeScript = defineScript(redis, "PurgeBaselines", purgeBaselinesScript);
  const keyList = [keys.entries, keys.baselines, keys.bytes];
  return {
    async getBaseline(name) {
      const record = await read(() => redis.hgetBuffer(keys.baselines, name));
      return record === null ? undefined : decodeBaseline(record);
    },
    async putBaseline(name, baseline) {
      const stored = await write(() =>
        putScript(...keyList, name, encodeBaseline(baseline), String(maxBytes)),
      );
      if (stored === -1) throw baselinesFull(maxBytes);
      return stored === 1;
    },
    async deleteBaseline(name) {
      await write(() => deleteScript(...keyList, name));
    },
    async purgeBaselines() {
      const forgotten = await write(() => purgeScript(...keyList));
      return typeof forgotten === "number" ? forgotten : 0;
    },
  };
}

function defineScript(redis: Redis, name: string, lua: string): Script {
  const command = `orchestratorRegistry${name}`;
  redis.defineCommand(command, { lua, numberOfKeys: 3 });
  const defined = (redis as unknown as Record<string, Script | undefined>)[command];
  if (defined === undefined) throw new Error(`ioredis did not define ${command}`);
  return defined.bind(redis);
}

const newline = 0x0a;

function encodeBaseline(baseline: OpenApiBaseline): Buffer {
  const header = JSON.stringify({
    hash: baseline.hash,
    operationCount: baseline.operationCount,
    recordedAt: baseline.recordedAt,
  });
  // JSON.stringify never writes a raw newline: the first one ends the header.
  return Buffer.concat([Buffer.from(`${header}\n`), baseline.summary]);
}

/**
 * Reads a record back; undefined for one it cannot read, such as the JSON record of an earlier
 * version (no newline): the next poll then records a new baseline over it.
 */
function decodeBaseline(record: Buffer): OpenApiBaseline | undefined {
  const end = record.indexOf(newline);
  if (end < 0) return undefined;
  let header: unknown;
  try {
    header = JSON.parse(record.subarray(0, end).toString("utf8"));
  } catch {
    return undefined;
  }
  if (typeof header !== "object" || header === null) return undefined;
  const { hash, operationCount, recordedAt } = header as Record<string, unknown>;
  if (typeof hash !== "string" || typeof operationCount !== "number") return undefined;
  if (typeof recordedAt !== "number") return undefined;
  return { hash, operationCount, summary: record.subarray(end + 1), recordedAt };
}
