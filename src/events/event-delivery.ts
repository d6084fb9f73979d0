import type { JsonObject } from "@bufbuild/protobuf";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { DeadLetterHandler, DeadLetters } from "../dlq/dead-letters.js";
import type { EventSubscribers } from "./event-log.js";
import type { EventStore } from "./event-store.js";
import { eventJson, type OrchestratorEvent } from "./model.js";

/** Where deliveries beyond this process go: pub/sub channels. */
export interface ChannelPublisher {
  /** @throws when the message could not be handed over (Redis unreachable). */
  publish(channel: string, message: string): Promise<void>;
}

/** Publishes with PUBLISH on `redis`. */
export function redisChannelPublisher(redis: Redis): ChannelPublisher {
  return {
    async publish(channel, message) {
      await redis.publish(channel, message);
    },
  };
}

/** The channels of events: every event on `channel`, some types also on their own. */
export interface EventChannels {
  readonly channel: string;
  readonly typeChannels: Readonly<Record<string, string>>;
}

/** The dead-letter type of a delivery that failed; its payload is `{event_id, channel}`. */
export const deliveryDeadLetterType = "event.delivery";

/**
 * The message `event` is published as on `channel`: the whole event on the events channel; its
 * payload alone on its type's own channel (as the ecosystem's subscribers read it), with
 * `replay_of` added on a replay, so that they can tell.
 */
export function messageFor(
  event: OrchestratorEvent,
  channel: string,
  channels: EventChannels,
): string {
  if (channel === channels.channel) return JSON.stringify(eventJson(event));
  const payload: JsonObject =
    event.replayOf === undefined ? event.payload : { ...event.payload, replay_of: event.replayOf };
  return JSON.stringify(payload);
}

/** The channels `event` goes to. */
export function channelsOf(event: OrchestratorEvent, channels: EventChannels): string[] {
  const own = channels.typeChannels[event.type];
  return [channels.channel, ...(own ? [own] : [])].filter((channel) => channel !== "");
}

/** What delivering replays works with. */
export interface ReplayDeliveryDeps {
  readonly store: EventStore;
  readonly subscribers: EventSubscribers;
  /** Absent: no channels (the memory store, without Redis). */
  readonly publisher?: ChannelPublisher;
  readonly channels: EventChannels;
  /** Where a failed delivery is recorded to be retried. Absent: it is logged and counted only. */
  readonly deadLetters?: DeadLetters;
  readonly logger?: Logger;
  /** Told of each delivery that failed and could not be recorded in the dead-letter queue. */
  readonly onLost?: () => void;
}

/** Delivers stored events again. */
export interface ReplayDelivery {
  /**
   * Delivers `event` again, marked `replayOf` its id (a delivery, not a new stored event): to this
   * process's subscribers, then to its channels. A channel that cannot take it is recorded in the
   * dead-letter queue as an "event.delivery" `{event_id, channel}`, to be retried; never thrown.
   */
  replay(event: OrchestratorEvent): Promise<void>;
  /** Retries one failed delivery: the dead-letter handler of "event.delivery". */
  readonly retry: DeadLetterHandler;
}

/** Creates the replay delivery; registers its retry with the dead-letter queue, if any. */
export function createReplayDelivery(deps: ReplayDeliveryDeps): ReplayDelivery {
  const { publisher, channels, logger } = deps;

  const recordFailure = async (event: OrchestratorEvent, channel: string, error: unknown) => {
    const reason = `publishing on ${channel} failed: ${error instanceof Error ? error.message : String(error)}`;
    try {
      if (deps.deadLetters === undefined) throw new Error("no dead-letter queue");
      await deps.deadLetters.add({
        eventType: deliveryDeadLetterType,
        payload: { event_id: event.id, channel },
        failureReason: reason.slice(0, 512),
        eventId: event.id,
        correlationId: event.correlationId,
      });
    } catch (recordError) {
      deps.onLost?.();
      logger?.error(
        { err: recordError, event_id: event.id, channel, reason },
        "event delivery failed and was not recorded for a retry",
      );
    }
  };

  const retry: DeadLetterHandler = async (entry) => {
    const eventId = entry.payload.event_id;
    const channel = entry.payload.channel;
    if (typeof eventId !== "string" || typeof channel !== "string") {
      throw new Error("the entry names no event_id and channel");
    }
    const [event] = await deps.store.readIds([eventId]);
    if (event === undefined) throw new Error(`event ${eventId} is no longer stored`);
    if (publisher === undefined) throw new Error("no channel to publish on");
    await publisher.publish(
      channel,
      messageFor({ ...event, replayOf: event.id }, channel, channels),
    );
  };

  return {
    async replay(event) {
      const delivery: OrchestratorEvent = { ...event, replayOf: event.id };
      deps.subscribers.deliver(delivery);
      if (publisher === undefined) return;
      for (const channel of channelsOf(delivery, channels)) {
        try {
          await publisher.publish(channel, messageFor(delivery, channel, channels));
        } catch (error) {
          await recordFailure(event, channel, error);
        }
      }
    },
    retry,
  };
}
