import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { forEachLimited } from "../for-each-limited.js";
import { isOutboundError } from "../http-client/http-client.js";
import { createLimiter, type Limiter } from "../limiter.js";
import type { RegistryEntry, ServiceStatus } from "./model.js";
import type { Registration, Registry } from "./registry.js";

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
  /** Probes in flight at once, rounds and probes of new registrations together. Default 16. */
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
  /** The URL the streak counts probes of: a new one starts the count again. */
  url: string;
  outcome: ProbeOutcome;
  successes: number;
  failures: number;
}

// A health endpoint answers in a few bytes; a large answer is a misconfiguration, not health.
const maxProbeBytes = 64 * 1024;

/**
 * Probes every registered service's health URL on an interval, with a timeout, at most
 * `concurrency` at a time, off the request path. A service turns UNHEALTHY after
 * `failureThreshold` failures in a row and HEALTHY after `successThreshold` successes (of the
 * same URL: a new health URL counts afresh); each transition is written to the registry (which
 * emits the event). Entries that are DOWN (their lease ran out) are not probed. A round that is
 * still running when the next is due is not doubled.
 *
 * A registration this node takes is probed at once, rather than waiting up to `intervalMs` as
 * UNKNOWN, when it is new, comes back from DOWN, or changed its health URL or base URL; the
 * schedule of rounds is unchanged. Those probes share the rounds' `concurrency`, and a name has at
 * most one probe in flight and one waiting (which reads the entry when it starts, so it probes the
 * latest URL): a client registering in a loop cannot multiply probes. Entries written by other
 * processes sharing the store, or merged from peers, are not probed at once: they wait for the
 * next round, as before (the node that took a registration probes it at once; a peer's entry is
 * not this node's news).
 */
export class HealthChecker {
  private readonly options: HealthCheckOptions;
  private readonly streaks = new Map<string, Streak>();
  private readonly slots: Limiter;
  /** Per name, the probe in flight or waiting for a slot (the latest one asked for). */
  private readonly probing = new Map<string, Promise<void>>();
  /** Names with a probe at once asked for and not started yet. */
  private readonly asked = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private unsubscribe: (() => void) | undefined;
  /** Set by `stop()`: probes not started yet are skipped, so that stopping never waits for them. */
  private stopping = false;

  /** @throws RangeError when `concurrency` is not a positive integer. */
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
    this.slots = createLimiter(this.options.concurrency);
  }

  /** Starts the rounds (the first one now) and the probes of new registrations. */
  start(): void {
    this.stopping = false;
    this.timer ??= setInterval(() => void this.probeAll(), this.options.intervalMs);
    this.timer.unref();
    this.unsubscribe ??= this.deps.registry.onRegistered((registration) => {
      if (needsProbeNow(registration)) this.probeSoon(registration.entry.name);
    });
    void this.probeAll();
  }

  /** Stops probing and waits for the probes in progress (those not started yet never start). */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.timer);
    this.timer = undefined;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    await this.round;
    while (this.probing.size > 0) await Promise.allSettled([...this.probing.values()]);
  }

  /** Runs one probing round now (or joins the one running) and resolves when it is done. */
  probeAll(): Promise<void> {
    this.round ??= this.runRound().finally(() => {
      this.round = undefined;
    });
    return this.round;
  }

  /**
   * Probes `name` as soon as a slot is free and no other probe of it is in flight, unless one is
   * already waiting to start. Resolves when that probe is done.
   */
  probeSoon(name: string): Promise<void> {
    const waiting = this.asked.has(name) ? this.probing.get(name) : undefined;
    if (waiting !== undefined) return waiting;
    this.asked.add(name);
    return this.track(name, () => {
      this.asked.delete(name);
      // Read now, not when asked: the latest declaration is the one to probe.
      const entry = this.deps.registry.get(name);
      return entry === undefined || entry.status === "DOWN" ? Promise.resolve() : this.probe(entry);
    });
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
    // A name probed right now (or about to be, at once) is not probed twice by the round.
    await forEachLimited(targets, this.options.concurrency, (entry) =>
      this.probing.has(entry.name)
        ? Promise.resolve()
        : this.track(entry.name, () => this.probe(entry)),
    );
  }

  /**
   * Runs `probe` after the probe of `name` in flight (if any), in one of the shared slots, and
   * keeps it as the name's latest until it ends.
   */
  private track(name: string, probe: () => Promise<void>): Promise<void> {
    const before = this.probing.get(name);
    const run = () => this.slots.run(() => (this.stopping ? Promise.resolve() : probe()));
    const done: Promise<void> = (before ? before.then(run) : run())
      .catch((error: unknown) => {
        this.deps.logger.warn({ err: error, service: name }, "health probe failed to run");
      })
      .finally(() => {
        if (this.probing.get(name) === done) this.probing.delete(name);
      });
    this.probing.set(name, done);
    return done;
  }

  private async probe(entry: RegistryEntry): Promise<void> {
    const outcome = await this.check(entry.healthUrl);
    const known = this.streaks.get(entry.name);
    const streak =
      known?.url === entry.healthUrl
        ? known
        : { url: entry.healthUrl, outcome, successes: 0, failures: 0 };
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

/**
 * Whether a registration leaves its entry unprobed at its health URL: a new entry, one back from
 * DOWN (UNKNOWN again), or a new health or base URL (what the status said was of another URL).
 */
function needsProbeNow({ entry, previous }: Registration): boolean {
  return (
    previous === undefined ||
    previous.status === "DOWN" ||
    previous.healthUrl !== entry.healthUrl ||
    previous.baseUrl !== entry.baseUrl
  );
}

function statusName(status: ServiceStatus): string {
  return status.toLowerCase();
}
