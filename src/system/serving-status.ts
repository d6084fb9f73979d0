import { setMaxListeners } from "node:events";

/** Whether this node takes traffic, as load balancers and grpc.health.v1 clients see it. */
export type ServingState = "SERVING" | "NOT_SERVING";

/**
 * The node's serving state: SERVING from start until shutdown begins, NOT_SERVING (draining)
 * after. Health checks, readiness and watch streams read it; shutdown sets it.
 */
export interface ServingStatus {
  readonly state: ServingState;
  /** True once shutdown has begun; it never turns back. */
  readonly draining: boolean;
  /** Aborts when draining begins, so that long-lived streams can end cleanly. */
  readonly drainSignal: AbortSignal;
  /** Calls `listener` at every change of state; returns the function that unsubscribes. */
  onChange(listener: (state: ServingState) => void): () => void;
  /** Starts draining: the state turns NOT_SERVING for good. */
  startDraining(): void;
}

/** Creates the serving status of a node that starts SERVING. */
export function createServingStatus(): ServingStatus {
  const listeners = new Set<(state: ServingState) => void>();
  const drain = new AbortController();
  // Every open stream listens for the drain: thousands of watchers are normal, not a leak.
  setMaxListeners(0, drain.signal);
  let state: ServingState = "SERVING";
  return {
    get state() {
      return state;
    },
    get draining() {
      return drain.signal.aborted;
    },
    drainSignal: drain.signal,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    startDraining() {
      if (drain.signal.aborted) return;
      state = "NOT_SERVING";
      for (const listener of [...listeners]) listener(state);
      drain.abort();
    },
  };
}
