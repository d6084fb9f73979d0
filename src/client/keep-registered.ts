import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { ExponentialBackoff, handleWhen, type RetryPolicy, retry } from "cockatiel";
import type {
  RegisterServiceRequestSchema,
  RegistryService,
  ServiceEntry,
} from "../../gen/orchestrator/v1/registry_pb.js";
import { isNotFound, isTransient, pause } from "./transient.js";

/** What a service declares: the fields of `RegisterServiceRequest`. */
export type RegistrationEntry = MessageInitShape<typeof RegisterServiceRequestSchema> & {
  readonly name: string;
};

/** What {@link keepRegistered} takes. */
export interface KeepRegisteredOptions {
  /** Aborting it stops the heartbeats and deregisters, as `stop()` does. Default: none. */
  readonly signal?: AbortSignal;
  /**
   * Time between heartbeats, in ms. Default: a third of the lease the node answered with
   * (`ttl_seconds`), so that two heartbeats may fail before the lease runs out; 10 s when the
   * entry has no lease (heartbeats then only notice that the node forgot the entry).
   */
  readonly heartbeatIntervalMs?: number;
  /** Longest wait between two tries of a failed call, in ms. Default: 5,000. */
  readonly maxBackoffMs?: number;
  /**
   * Called with each failure that retrying did not mend (after the first registration); the
   * heartbeats go on. Default: none (the failure is only kept in `current.lastError`).
   */
  readonly onError?: (error: unknown) => void;
}

/** Where a kept registration stands. */
export interface RegistrationState {
  /** The entry as the node last answered it (registration), or undefined before. */
  readonly entry: ServiceEntry | undefined;
  /** Successful registrations: 1, plus one each time the node had forgotten the entry. */
  readonly registrations: number;
  /** Successful heartbeats. */
  readonly heartbeats: number;
  /** The last failure (retried ones too: it shows an outage), cleared by the next success. */
  readonly lastError: unknown;
  readonly stopped: boolean;
}

/** A registration kept alive by {@link keepRegistered}. */
export interface RegistrationHandle {
  readonly current: RegistrationState;
  /** Stops the heartbeats and deregisters (NOT_FOUND counts as done). Idempotent. */
  stop(): Promise<void>;
}

const noLeaseIntervalMs = 10_000;
const deregisterAttempts = 3;

/**
 * Registers `entry` and keeps it registered: heartbeats before its lease runs out, registers again
 * when a heartbeat answers NOT_FOUND (the node removed the entry: a lease that ran out while the
 * service could not reach it, a deregistration by someone else, a node that restarted on the
 * in-memory store), retries transient failures with exponential backoff, and deregisters on
 * `stop()` or when `options.signal` aborts.
 *
 * Resolves once the first registration succeeded; rejects when it cannot (a refused entry, a
 * missing role: anything {@link isTransient} does not retry) or when aborted before.
 */
export async function keepRegistered(
  registry: Client<typeof RegistryService>,
  entry: RegistrationEntry,
  options: KeepRegisteredOptions = {},
): Promise<RegistrationHandle> {
  const stopping = new AbortController();
  const signal = options.signal
    ? AbortSignal.any([options.signal, stopping.signal])
    : stopping.signal;
  const policy = retryPolicy(options.maxBackoffMs ?? 5_000);
  let state: RegistrationState = {
    entry: undefined,
    registrations: 0,
    heartbeats: 0,
    lastError: undefined,
    stopped: false,
  };
  const update = (change: Partial<RegistrationState>) => {
    state = { ...state, ...change };
  };

  // Retried failures are shown too, so that `current` tells an outage while it lasts.
  policy.onRetry((event) => {
    if ("error" in event) update({ lastError: event.error });
  });

  const register = async () => {
    const response = await registry.registerService(entry, { signal });
    update({
      entry: response.service,
      registrations: state.registrations + 1,
      lastError: undefined,
    });
  };
  const renew = async () => {
    try {
      await registry.heartbeat({ name: entry.name }, { signal });
      update({ heartbeats: state.heartbeats + 1, lastError: undefined });
    } catch (error) {
      if (!isNotFound(error)) throw error;
      await register();
    }
  };
  const intervalMs = () =>
    options.heartbeatIntervalMs ??
    (state.entry?.ttlSeconds ? (state.entry.ttlSeconds * 1000) / 3 : noLeaseIntervalMs);

  await policy.execute(register, signal);
  const loop = (async () => {
    while (!signal.aborted) {
      await pause(intervalMs(), signal);
      if (signal.aborted) return;
      try {
        await policy.execute(renew, signal);
      } catch (error) {
        if (signal.aborted) return;
        update({ lastError: error });
        options.onError?.(error);
      }
    }
  })();

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      stopping.abort();
      await loop;
      // The loop is over, so no heartbeat can register the entry again after this.
      await deregister(registry, entry.name, options.maxBackoffMs ?? 5_000);
      update({ stopped: true });
    })();
    return stopped;
  };
  options.signal?.addEventListener("abort", () => void stop().catch(() => {}), { once: true });
  return {
    get current() {
      return state;
    },
    stop,
  };
}

async function deregister(
  registry: Client<typeof RegistryService>,
  name: string,
  maxBackoffMs: number,
): Promise<void> {
  const policy = retry(handleWhen(isTransient), {
    maxAttempts: deregisterAttempts - 1,
    backoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: maxBackoffMs }),
  });
  try {
    await policy.execute(() => registry.deregisterService({ name }));
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
}

/** Retries transient failures without end (until aborted), waiting up to `maxDelay` between. */
function retryPolicy(maxDelay: number): RetryPolicy {
  return retry(handleWhen(isTransient), {
    maxAttempts: Number.POSITIVE_INFINITY,
    backoff: new ExponentialBackoff({ initialDelay: 100, maxDelay }),
  });
}
