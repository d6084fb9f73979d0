/**
 * The hash-tag groups of the Redis keys. Redis Cluster runs a command or a Lua script only when
 * every key it touches lies in one slot; a key's slot is computed from its `{tag}` alone when it
 * has one. So each store's keys share one tag (its scripts stay in one slot) while the stores
 * spread over the cluster. The registry writes its change events in the same script that changes
 * an entry, so the events live in the registry's slot. Schedule claims are single keys (one
 * `SET NX` each) and carry no tag, so that they spread.
 */
export type RedisKeyGroup = "registry" | "dlq" | "sagas";

/**
 * The start of every key of `group` under the configured prefix: `<prefix>{<group>}:`. The
 * prefix (REDIS_KEY_PREFIX) admits no braces, so the group's tag is the key's only tag.
 */
export function redisKeyspace(prefix: string, group: RedisKeyGroup): string {
  return `${prefix}{${group}}:`;
}
