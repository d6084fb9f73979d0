import type { Counter } from "prom-client";
import type { Clock } from "../clock.js";
import type { EventLog } from "../events/event-log.js";
import type { AuthDenial } from "./auth.js";

export interface DenialRecorderOptions {
  /** `auth.denied` events recorded per second at most; the others are only counted. Default 10. */
  readonly maxEventsPerSecond?: number;
}

const defaults = Object.freeze({ maxEventsPerSecond: 10 });

/**
 * Records refused calls: every one in `orchestrator_auth_failures_total{reason,method}` (both
 * labels from closed sets: the reasons, and method names from the descriptors or `/metrics`), and
 * as `auth.denied` events, at most `maxEventsPerSecond` a second so that a flood of bad tokens
 * cannot flood the event store. An event after a full second says how many were left out before
 * it (`suppressed`). Events carry no token: the method, the reason, the role when the token was
 * known, the client address when the transport gives one.
 */
export function createDenialRecorder(
  deps: {
    readonly events: EventLog;
    readonly failures: Counter<"reason" | "method">;
    readonly clock: Clock;
  },
  options: DenialRecorderOptions = {},
): (denial: AuthDenial) => void {
  const { maxEventsPerSecond } = { ...defaults, ...options };
  let windowStart = Number.NEGATIVE_INFINITY;
  let inWindow = 0;
  let suppressed = 0;
  return (denial) => {
    deps.failures.inc({ reason: denial.reason, method: denial.what });
    const now = deps.clock.monotonic();
    if (now - windowStart >= 1000) {
      windowStart = now;
      inWindow = 0;
    }
    if (inWindow >= maxEventsPerSecond) {
      suppressed++;
      return;
    }
    inWindow++;
    deps.events.append({
      type: "auth.denied",
      subject: denial.what,
      payload: {
        method: denial.what,
        reason: denial.reason,
        ...(denial.role === undefined ? {} : { role: denial.role }),
        ...(denial.clientAddress === undefined ? {} : { client_address: denial.clientAddress }),
        ...(suppressed > 0 ? { suppressed } : {}),
      },
    });
    suppressed = 0;
  };
}
