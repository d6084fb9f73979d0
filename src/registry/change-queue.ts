import { DomainError } from "../errors/domain-error.js";
import type { RegistryChange } from "./model.js";
import type { RegistryStore } from "./registry-store.js";

/**
 * A reader's place in the store's change log: the one bounded queue every registry watch and
 * replication feed reads from. Readers keep no copy of the changes: each holds only the revision
 * it has delivered, and reads what follows from the store's log (bounded in changes and in bytes)
 * when it is ready for more. A reader left behind by the log, or by more than `maxLag` changes, is
 * cut off with the revision to resume from, so that a stalled watcher costs a cursor, not a
 * growing buffer, and writers are never slowed by readers.
 */
export interface ChangeQueue {
  /**
   * The changes after `delivered`, at most `limit` of them, oldest first; empty when there are
   * none yet.
   * @throws DomainError "resource_exhausted" naming the revision to resume from, when the log no
   *   longer holds them or they are more than `maxLag` changes.
   */
  after(delivered: number, limit?: number): readonly RegistryChange[];
  /**
   * Resolves true once the store has gone past `delivered` (at once if it already has) or the
   * signal aborted; false when `timeoutMs` (if given) passed first.
   */
  changed(delivered: number, timeoutMs?: number): Promise<boolean>;
  /** Unsubscribes from the store and the signal. */
  close(): void;
}

/** How far a reader may lag, and how its cut-off message names it. */
export interface ChangeQueueOptions {
  /** Changes the reader may fall behind by. */
  readonly maxLag: number;
  /** Who reads: "the watcher", "the peer". */
  readonly reader: string;
  /** What it does to resume: "watch again", "resume". */
  readonly resume: string;
  readonly signal: AbortSignal;
}

/** Follows `store`'s changes; subscribes now, so that a wake-up is never missed. */
export function queueChanges(
  store: Pick<RegistryStore, "onChange" | "changesSince" | "revision">,
  options: ChangeQueueOptions,
): ChangeQueue {
  let wake: (() => void) | undefined;
  const unsubscribe = store.onChange(() => wake?.());
  const onAbort = () => wake?.();
  options.signal.addEventListener("abort", onAbort);
  const behind = (delivered: number, how: string) =>
    new DomainError(
      "resource_exhausted",
      `${options.reader} fell behind ${how}: ${options.resume} from revision ${delivered}`,
    );
  return {
    after(delivered, limit) {
      if (store.revision - delivered > options.maxLag) {
        throw behind(delivered, `by more than ${options.maxLag} changes`);
      }
      const changes = store.changesSince(delivered, limit);
      if (changes === undefined) throw behind(delivered, "what the change log still holds");
      return changes;
    },
    changed(delivered, timeoutMs) {
      if (store.revision > delivered || options.signal.aborted) return Promise.resolve(true);
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
      options.signal.removeEventListener("abort", onAbort);
    },
  };
}
