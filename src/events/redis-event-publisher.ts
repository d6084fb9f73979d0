import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { type EventLog, eventJson } from "./event-log.js";

export interface RedisEventPublisherOptions {
  /** Channel every event is published on. Default "orchestrator.events". */
  channel?: string;
  /** Channel findings are also published on, as the ecosystem's subscribers expect. */
  findingsChannel?: string;
}

/**
 * Publishes every event of the log on Redis pub/sub for the ecosystem's existing subscribers:
 * all of them on `orchestrator.events`, and `findings.created` events also on their own channel
 * with their payload as the message. Fire-and-forget: a publish never delays the emitter, and a
 * Redis outage loses these notifications (they are not the record; the event log is), logged once
 * per outage. Returns the function that stops publishing.
 */
export function publishEventsToRedis(
  log: EventLog,
  redis: Redis,
  logger: Logger,
  options: RedisEventPublisherOptions = {},
): () => void {
  const channel = options.channel ?? "orchestrator.events";
  const findingsChannel = options.findingsChannel ?? "findings.created";
  let failing = false;
  const publish = (target: string, message: string) => {
    redis.publish(target, message).then(
      () => {
        failing = false;
      },
      (error: unknown) => {
        if (!failing) {
          logger.warn(
            { err: { message: error instanceof Error ? error.message : String(error) } },
            "events not published to redis",
          );
        }
        failing = true;
      },
    );
  };
  return log.subscribe((event) => {
    publish(channel, JSON.stringify(eventJson(event)));
    if (event.type === "findings.created") publish(findingsChannel, JSON.stringify(event.payload));
  });
}
