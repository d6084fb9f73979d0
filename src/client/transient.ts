import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Failures worth trying again: the node or the link is down or busy, the store could not take the
 * write (README "What a write's status means": UNAVAILABLE and DEADLINE_EXCEEDED are safe to
 * retry for register and heartbeat), or a stream was cut. Everything else (a refused request, a
 * missing token or role, an unknown method) would fail the same way again.
 */
export function isTransient(error: unknown): boolean {
  if (!(error instanceof ConnectError)) return false;
  return transientCodes.has(error.code);
}

const transientCodes: ReadonlySet<Code> = new Set([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.Aborted,
  Code.ResourceExhausted,
  Code.Canceled,
  Code.Unknown,
  Code.Internal,
]);

export function isNotFound(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.NotFound;
}

/** Resolves after `ms`, or at once (without throwing) when `signal` aborts. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
