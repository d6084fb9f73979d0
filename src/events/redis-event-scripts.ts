import { redisKeyspace } from "../redis/redis-keys.js";
import type { EventDraft } from "./model.js";
import { eventBodyJson } from "./model.js";

/**
 * Where events go in Redis, for every script that stores one: the event store's appends, and the
 * registry's writes, which store their event in the same script as the change (so that a change
 * Redis acknowledged always has its event).
 */
export interface RedisEventTarget {
  /** The stream: one entry per event, its id the event's, its one field `e` the event's JSON. */
  readonly stream: string;
  /** The last id ever given ("<ms>-<seq>"), kept apart so that ids never go back, cleared or not. */
  readonly lastId: string;
  /** Entries the stream keeps at least (`XADD MAXLEN ~`). */
  readonly maxEvents: number;
  /** Channel every stored event is published on; "" publishes nothing. */
  readonly channel: string;
  /** Types whose payload is also published on a channel of their own (type → channel). */
  readonly typeChannels: Readonly<Record<string, string>>;
}

/** The channels of the ecosystem's existing subscribers. */
export const defaultEventChannels = Object.freeze({
  channel: "orchestrator.events",
  typeChannels: Object.freeze({
    "findings.created": "findings.created",
    "ingestion.requested": "ingestion.requested",
  }),
});

/**
 * The keys of the events under `prefix`, with the given trimming and channels. They share the
 * registry's slot: the registry appends its change events in the script that makes the change.
 */
export function redisEventTarget(
  prefix: string,
  options: { maxEvents: number; channel?: string; typeChannels?: Record<string, string> },
): RedisEventTarget {
  return Object.freeze({
    stream: `${redisKeyspace(prefix, "registry")}events:stream`,
    lastId: `${redisKeyspace(prefix, "registry")}events:last-id`,
    maxEvents: options.maxEvents,
    channel: options.channel ?? defaultEventChannels.channel,
    typeChannels: options.typeChannels ?? defaultEventChannels.typeChannels,
  });
}

/**
 * Lua for scripts that store events: `eventIds(stream, lastKey)` then, per event,
 * `nextEventId(ms)` and `storeEvent(...)`, and `saveEventId(lastKey)` at the end.
 *
 * An id is the event's own time (ms, from the emitter's clock) or the last id's time when that is
 * later, and a sequence within the millisecond, as `nextEventId` in model.ts computes it: ids only
 * grow, whichever node's clock runs ahead. The last id lives in its own key (a clear keeps it); if
 * that key is lost the stream's newest entry stands in for it.
 *
 * Published: `{"id": ..., <the stored body>}` on the events channel, and the payload alone on a
 * type's own channel, inside the same script: exactly once per stored event, whichever process
 * stored it, and never for an event that was not stored.
 */
export const storeEventLua = `
local eventClock = {}
local function eventIds(stream, lastKey)
  local last = redis.call('GET', lastKey)
  if not last then
    local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
    last = top and top[1] or '0-0'
  end
  local dash = string.find(last, '-', 1, true)
  eventClock.ms = tonumber(string.sub(last, 1, dash - 1))
  eventClock.seq = tonumber(string.sub(last, dash + 1))
end
local function nextEventId(ms)
  if ms > eventClock.ms then
    eventClock.ms = ms
    eventClock.seq = 0
  else
    eventClock.seq = eventClock.seq + 1
  end
  eventClock.id = string.format('%d-%d', eventClock.ms, eventClock.seq)
  return eventClock.id
end
local function storeEvent(stream, maxLen, channel, id, body, typeChannel, typeMessage)
  redis.call('XADD', stream, 'MAXLEN', '~', maxLen, id, 'e', body)
  if channel ~= '' then
    redis.call('PUBLISH', channel, '{"id":"' .. id .. '",' .. string.sub(body, 2))
  end
  if typeChannel ~= '' then redis.call('PUBLISH', typeChannel, typeMessage) end
end
local function saveEventId(lastKey)
  if eventClock.id then redis.call('SET', lastKey, eventClock.id) end
end
`;

/** What a script needs of one event: its time, its stored JSON, and its own channel (if any). */
export interface EncodedEvent {
  readonly ms: number;
  /** The event's JSON without its id (the stream entry's `e` field). */
  readonly body: string;
  /** The type's own channel, or "". */
  readonly typeChannel: string;
  /** The payload's JSON when the type has a channel, else "". */
  readonly typeMessage: string;
}

/** Encodes `event` for a script storing it under `target`. */
export function encodeEvent(event: EventDraft, target: RedisEventTarget): EncodedEvent {
  const typeChannel = target.typeChannels[event.type] ?? "";
  return {
    ms: Math.floor(event.timestamp),
    body: JSON.stringify(eventBodyJson(event)),
    typeChannel,
    typeMessage: typeChannel === "" ? "" : JSON.stringify(event.payload),
  };
}

// The revision's place in a payload, until a script knows it: a string no JSON encoder produces
// from our payloads (a NUL inside a key that is never written otherwise).
const revisionMarker = "\u0000revision\u0000";
const markerJson = JSON.stringify(revisionMarker);

/**
 * Encodes an event whose payload must carry the revision of the change it reports, which only
 * the script that makes the change learns: the body comes in two halves, to be joined around the
 * revision's digits (`head .. revision .. tail`). The payload's `revision` field comes first.
 */
export function encodeEventAroundRevision(
  event: EventDraft,
  target: RedisEventTarget,
): EncodedEvent & { readonly head: string; readonly tail: string } {
  const marked: EventDraft = { ...event, payload: { ...event.payload, revision: revisionMarker } };
  const encoded = { ...encodeEvent(marked, target), typeChannel: "", typeMessage: "" };
  const at = encoded.body.indexOf(markerJson);
  return {
    ...encoded,
    head: encoded.body.slice(0, at),
    tail: encoded.body.slice(at + markerJson.length),
  };
}
