import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { forEachLimited } from "../for-each-limited.js";
import { isOutboundError } from "../http-client/http-client.js";
import type { RegistryEntry, ServiceStatus } from "./model.js";
import type { Registry } from "./registry.js";

/** The outbound GET a probe needs: the project's HTTP client fits (timeouts, size and redirect limits). */
export interface ProbeClient {
  get(
    url: string,
    request?: { timeoutMs?: number; maxBytes?: number },
  ): Promise<{ readonly status: number }>;
}

export interface HealthCheckOptions {
  /** Time between probing rounds. Default 10 s. */
  intervalMs: number;
  /** Time a probe may take. Default 2 s. */
  timeoutMs: number;
  /** Consecutive failures that turn a service UNHEALTHY. Default 3. */
  failureThreshold: number;
  /** Consecutive successes that turn a service HEALTHY. Default 1. */
  successThreshold: number;
  /** Probes in flight at once. Default 16. */
  concurrency: number;
}

const defaults: HealthCheckOptions = Object.freeze({
  intervalMs: 10_000,
  timeoutMs: 2_000,
  failureThreshold: 3,
  successThreshold: 1,
  concurrency: 16,
});

/** The last probe of one service. */
export interface ProbeOutcome {
  readonly ok: boolean;
  readonly latencyMs: number;
  /** Why it failed, safe to show; "" when ok. */
  readonly error: string;
  readonly checkedAt: number;
}

/** One service's health: its entry's status (lower case) and its last probe (zeros before one). */
export interface ServiceHealth {
  readonly status: string;
  readonly latencyMs: number;
  readonly error: string;
  readonly checkedAt: number;
}

/** The fleet's health, as GET /health/system shows it. */
export interface SystemHealth {
  /** "healthy" when every service is, "degraded" when some are, "unhealthy" when none is. */
  readonly overallStatus: "healthy" | "degraded" | "unhealthy";
  readonly healthyCount: number;
  readonly totalCount: number;
  readonly services: ReadonlyMap<string, ServiceHealth>;
}

interface Streak {
  outcome: ProbeOutcome;
  successes: number;
  failures: number;
}

// A health endpoint answers in a few bytes; a large answer is a misconfiguration, not health.
const maxProbeBytes = 64 * 1024;

/**
 * Probes every registered service's health URL on an interval, with a timeout, at most
 * `concurrency` at a time, off the request path. A service turns UNHEALTHY after
 * `failureThreshold` failures in a row and HEALTHY after `successThreshold` successes; each
 * transition is written to the registry (which emits the event). Entries that are DOWN (their
 * lease ran out) are not probed. A round that is still running when the next is due is not
 * doubled.
 */
export class HealthChecker {
  private readonly options: HealthCheckOptions;
  private readonly streaks = new Map<string, Streak>();
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;

  constructor(
    private readonly deps: {
      readonly registry: Registry;
      readonly entries: () => Iterable<RegistryEntry>;
      readonly http: ProbeClient;
      readonly clock: Clock;
      readonly logger: Logger;
    },
    options: Partial<HealthCheckOptions> = {},
  ) {
    this.options = { ...defaults, ...options };
  }

  start(): void {
    this.timer ??= setInterval(() => void this.probeAll(), this.options.intervalMs);
    this.timer.unref();
    void this.probeAll();
  }

  /** Stops probing and waits for a round in progress. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.round;
  }

  /** Runs one probing round now (or joins the one running) and resolves when it is done. */
  probeAll(): Promise<void> {
    this.round ??= this.runRound().finally(() => {
      this.round = undefined;
    });
    return this.round;
  }

  /** The fleet's health from the entries' statuses and the last probes. */
  systemHealth(): SystemHealth {
    const services = new Map<string, ServiceHealth>();
    let healthy = 0;
    for (const entry of this.deps.entries()) {
      const last = this.streaks.get(entry.name)?.outcome;
      if (entry.status === "HEALTHY") healthy++;
      services.set(entry.name, {
        status: statusName(entry.status),
        latencyMs: last?.latencyMs ?? 0,
        error: last?.error ?? "",
        checkedAt: last?.checkedAt ?? 0,
      });
    }
    const total = services.size;
    const overallStatus = healthy === total ? "healthy" : healthy === 0 ? "unhealthy" : "degraded";
    return { overallStatus, healthyCount: healthy, totalCount: total, services };
  }

  private async runRound(): Promise<void> {
    const targets = [...this.deps.entries()].filter((e) => e.status !== "DOWN");
    const live = new Set(targets.map((e) => e.name));
    for (const name of this.streaks.keys()) if (!live.has(name)) this.streaks.delete(name);
    await forEachLimited(targets, this.options.concurrency, (entry) => this.probe(entry));
  }

  private async probe(entry: RegistryEntry): Promise<void> {
    const outcome = await this.check(entry.healthUrl);
    const streak = this.streaks.get(entry.name) ?? { outcome, successes: 0, failures: 0 };
    streak.outcome = outcome;
    if (outcome.ok) {
      streak.successes++;
      streak.failures = 0;
    } else {
      streak.failures++;
      streak.successes = 0;
    }
    this.streaks.set(entry.name, streak);
    const to =
      outcome.ok && streak.successes >= this.options.successThreshold
        ? "HEALTHY"
        : !outcome.ok && streak.failures >= this.options.failureThreshold
          ? "UNHEALTHY"
          : undefined;
    if (to === undefined || entry.status === to) return;
    try {
      await this.deps.registry.setHealth(entry.name, to, {
        latency_ms: outcome.latencyMs,
        error: outcome.error,
      });
    } catch (error) {
      this.deps.logger.warn({ err: error, service: entry.name }, "health status not stored");
    }
  }

  private async check(url: string): Promise<ProbeOutcome> {
    const { clock } = this.deps;
    const started = clock.monotonic();
    const checkedAt = clock.now();
    const latency = () => Math.round((clock.monotonic() - started) * 1000) / 1000;
    try {
      const response = await this.deps.http.get(url, {
        timeoutMs: this.options.timeoutMs,
        maxBytes: maxProbeBytes,
      });
      const ok = response.status >= 200 && response.status < 300;
      return { ok, latencyMs: latency(), error: ok ? "" : `HTTP ${response.status}`, checkedAt };
    } catch (error) {
      // The client's messages are written to be shown (no host names, no socket details);
      // anything else says nothing more than that the probe failed.
      const message = isOutboundError(error) ? error.message : "probe failed";
      return { ok: false, latencyMs: latency(), error: message, checkedAt };
    }
  }
}

function statusName(status: ServiceStatus): string {
  return status.toLowerCase();
}
