import type { RegistryChange } from "./model.js";
import type { RegistryStore } from "./registry-store.js";

/**
 * A store's changes, queued as they happen for a reader that may fall behind (a watch, a peer's
 * replication stream). The queue holds `maxQueue` changes at most: the next one sets `overflowed`
 * and the queue takes no more, so that the reader, once it has drained the queue, cuts itself off
 * rather than skip changes silently.
 */
export interface ChangeQueue {
  /** Changes not taken yet, in revision order; the reader takes them off the front. */
  readonly pending: RegistryChange[];
  /** A change was dropped because the queue was full. */
  readonly overflowed: boolean;
  /**
   * Waits for the next change or for the signal to abort; resolves false when `timeoutMs` (if
   * given) passed first.
   */
  changed(timeoutMs?: number): Promise<boolean>;
  /** Unsubscribes from the store and the signal. */
  close(): void;
}

/** Subscribes now, synchronously: a snapshot read in the same step misses no change. */
export function queueChanges(
  store: Pick<RegistryStore, "onChange">,
  maxQueue: number,
  signal: AbortSignal,
): ChangeQueue {
  const pending: RegistryChange[] = [];
  let overflowed = false;
  let wake: (() => void) | undefined;
  const unsubscribe = store.onChange((change) => {
    if (overflowed) return;
    if (pending.length >= maxQueue) overflowed = true;
    else pending.push(change);
    wake?.();
  });
  const onAbort = () => wake?.();
  signal.addEventListener("abort", onAbort);
  return {
    pending,
    get overflowed() {
      return overflowed;
    },
    changed(timeoutMs) {
      return new Promise((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        const settle = (woken: boolean) => {
          clearTimeout(timer);
          wake = undefined;
          resolve(woken);
        };
        if (timeoutMs !== undefined) timer = setTimeout(() => settle(false), timeoutMs);
        wake = () => settle(true);
      });
    },
    close() {
      unsubscribe();
      signal.removeEventListener("abort", onAbort);
    },
  };
}
