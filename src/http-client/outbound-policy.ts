import {
  BrokenCircuitError,
  type CircuitBreakerPolicy,
  ConsecutiveBreaker,
  circuitBreaker,
  ExponentialBackoff,
  type GeneratorFn,
  handleWhen,
  type RetryPolicy,
  retry,
} from "cockatiel";
import { isOutboundError, OutboundError } from "./outbound-errors.js";

/** Settings of {@link createOutboundPolicy} (the HTTP client's options of the same names). */
export interface OutboundPolicyOptions {
  /** Attempts of a retried call, the first included. */
  readonly maxAttempts: number;
  /** Backoff ceiling before the first retry, in ms; it doubles at each retry. */
  readonly retryBaseDelayMs: number;
  /** Largest backoff between two attempts, in ms. */
  readonly retryMaxDelayMs: number;
  /** Consecutive failed attempts on one origin that open its circuit. */
  readonly breakerThreshold: number;
  /** Time an open circuit fails calls fast before one trial call goes through, in ms. */
  readonly breakerHalfOpenMs: number;
  /** Origins whose breakers are kept at once. */
  readonly maxBreakers: number;
}

/** What a policy needs to know of an answer: only its status. */
export interface Answer {
  readonly status: number;
}

/** How one call goes through the policy. */
export interface PolicyCall {
  /** Retry transient failures (network, timeout, 429, 502, 503, 504). */
  readonly retry: boolean;
  /** Pass each attempt through the origin's circuit breaker. */
  readonly breaker: boolean;
  /** The caller's signal: retries stop, and the call rejects with its reason, when it aborts. */
  readonly signal: AbortSignal | undefined;
}

/** Retries over per-origin circuit breakers, shared by every call of one HTTP client. */
export interface OutboundPolicy {
  /**
   * Runs `attempt` once, or again after a backoff while it fails transiently and `call.retry`
   * allows; each attempt passes `origin`'s breaker when `call.breaker`. On the last attempt a
   * retryable answer (a 503, say) is returned, not thrown.
   * @throws OutboundError "circuit_open" when the origin's circuit is open (this ends retries).
   * @throws whatever the last attempt threw; the signal's reason when the caller aborts.
   */
  run<T extends Answer>(origin: string, attempt: () => Promise<T>, call: PolicyCall): Promise<T>;
  /** Origins with a breaker kept now (at most `maxBreakers`). */
  readonly breakerCount: number;
}

/** Answers worth another attempt: the target is busy or a gateway could not reach it. */
const retryableStatuses: ReadonlySet<number> = new Set([429, 502, 503, 504]);

/** Failures that say nothing about the request itself, so the same request may do better later. */
function isTransientFailure(error: unknown): boolean {
  return isOutboundError(error) && (error.kind === "network" || error.kind === "timeout");
}

function isRetryableAnswer(result: unknown): boolean {
  return retryableStatuses.has((result as Answer).status);
}

/** A failed attempt as the breaker counts it: the origin did not serve us (5xx included). */
function isServerError(result: unknown): boolean {
  return (result as Answer).status >= 500;
}

/**
 * Creates the retry policy and the per-origin breakers of one HTTP client. `random` draws the
 * backoffs' jitter, in [0, 1).
 */
export function createOutboundPolicy(
  options: OutboundPolicyOptions,
  random: () => number,
): OutboundPolicy {
  const retries = createRetryPolicy(options, random);
  const breakers = new OriginBreakers(options);
  return {
    run(origin, attempt, call) {
      const once = call.breaker ? () => breakers.execute(origin, attempt) : attempt;
      if (!call.retry || retries === undefined) return once();
      return rejectOnAbort(retries.execute(once, call.signal), call.signal);
    },
    get breakerCount() {
      return breakers.size;
    },
  };
}

function createRetryPolicy(
  options: OutboundPolicyOptions,
  random: () => number,
): RetryPolicy | undefined {
  if (options.maxAttempts <= 1) return undefined;
  return retry(handleWhen(isTransientFailure).orWhenResult(isRetryableAnswer), {
    // cockatiel counts retries, not attempts.
    maxAttempts: options.maxAttempts - 1,
    backoff: new ExponentialBackoff({
      generator: equalJitter(random),
      initialDelay: options.retryBaseDelayMs,
      maxDelay: options.retryMaxDelayMs,
      exponent: 2,
    }),
  });
}

/**
 * Exponential backoff with "equal jitter": retry n waits between half and all of
 * min(max, base * 2^n). The floor keeps a retry from hammering a struggling target at once; the
 * random half spreads the callers that failed together so they do not come back together.
 */
function equalJitter(random: () => number): GeneratorFn<number> {
  return (retries = 0, { initialDelay, maxDelay, exponent }) => {
    const ceiling = Math.min(maxDelay, initialDelay * exponent ** retries);
    return [ceiling / 2 + (random() * ceiling) / 2, retries + 1];
  };
}

/**
 * Settles with `work`, or rejects with the signal's reason as soon as it aborts. cockatiel 3's
 * backoff sleep does not listen to the signal: without this, a caller who gives up would wait for
 * the sleep to end (up to `retryMaxDelayMs`). The abandoned loop then finds the signal aborted
 * at its next attempt and stops without sending anything.
 */
function rejectOnAbort<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return work;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

interface OriginBreaker {
  readonly policy: CircuitBreakerPolicy;
  /** When the circuit last opened, on cockatiel's clock (Date.now). */
  openedAt: number;
}

/**
 * One cockatiel circuit breaker per target origin, so that one failing service does not cut
 * calls to the others. The map is capped: whatever targets are called, memory stays bounded;
 * the oldest inserted origin goes first (its state is lost, so at worst a failing origin gets
 * `breakerThreshold` more attempts before its circuit opens again).
 */
class OriginBreakers {
  private readonly breakers = new Map<string, OriginBreaker>();

  constructor(private readonly options: OutboundPolicyOptions) {}

  get size(): number {
    return this.breakers.size;
  }

  async execute<T extends Answer>(origin: string, attempt: () => Promise<T>): Promise<T> {
    const breaker = this.breakerOf(origin);
    try {
      return await breaker.policy.execute(attempt);
    } catch (error) {
      if (error instanceof BrokenCircuitError) throw this.circuitOpen(breaker, error);
      throw error;
    }
  }

  private breakerOf(origin: string): OriginBreaker {
    const known = this.breakers.get(origin);
    if (known !== undefined) return known;
    if (this.breakers.size >= this.options.maxBreakers) {
      const oldest = this.breakers.keys().next();
      if (oldest.done !== true) this.breakers.delete(oldest.value);
    }
    const policy = circuitBreaker(handleWhen(isTransientFailure).orWhenResult(isServerError), {
      halfOpenAfter: this.options.breakerHalfOpenMs,
      breaker: new ConsecutiveBreaker(this.options.breakerThreshold),
    });
    const breaker: OriginBreaker = { policy, openedAt: Date.now() };
    // cockatiel does not say when an open circuit half-opens; its own clock is Date.now.
    policy.onBreak(() => {
      breaker.openedAt = Date.now();
    });
    this.breakers.set(origin, breaker);
    return breaker;
  }

  /** The message names no host: it may reach a client. */
  private circuitOpen(breaker: OriginBreaker, cause: BrokenCircuitError): OutboundError {
    const halfOpensIn = Math.max(
      0,
      Math.ceil(breaker.openedAt + this.options.breakerHalfOpenMs - Date.now()),
    );
    return new OutboundError(
      "circuit_open",
      `circuit open: calls to this target fail fast until it half-opens in ${halfOpensIn} ms`,
      { cause },
    );
  }
}
