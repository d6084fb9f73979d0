import { DomainError } from "../errors/domain-error.js";

/**
 * A sequence of changes held in one bounded log (see `BoundedLog`), numbered by position: the
 * registry's revisions, the event log's sequence. Readers follow it through {@link queueChanges}.
 */
export interface ChangeSource<T> {
  /** The position of the latest change (0 before any). */
  readonly position: number;
  /**
   * The changes after `position`, at most `limit`, oldest first; undefined when the log no longer
   * holds them all, or `position` is ahead of the log.
   */
  changesSince(position: number, limit?: number): readonly T[] | undefined;
  /** Calls `listener` after every change; returns the function that unsubscribes. */
  onChange(listener: () => void): () => void;
}

/**
 * A reader's place in a change log: the one bounded queue every watch (registry, events, workflow
 * runs) and every replication feed reads from. Readers keep no copy of the changes: each holds only
 * the position it has delivered, and reads what follows from the shared log when it is ready for
 * more. A reader left behind by the log, or by more than `maxLag` changes, is cut off with the
 * position to resume from, so that a stalled watcher costs a cursor, not a growing buffer, and
 * writers are never slowed by readers.
 */
export interface ChangeQueue<T> {
  /**
   * The changes after `delivered`, at most `limit` of them, oldest first; empty when there are
   * none yet.
   * @throws DomainError "resource_exhausted" naming the position to resume from, when the log no
   *   longer holds them or they are more than `maxLag` changes.
   */
  after(delivered: number, limit?: number): readonly T[];
  /**
   * Resolves true once the source has gone past `delivered` (at once if it already has) or the
   * signal aborted; false when `timeoutMs` (if given) passed first.
   */
  changed(delivered: number, timeoutMs?: number): Promise<boolean>;
  /** Unsubscribes from the source and the signal. */
  close(): void;
}

/** How far a reader may lag, and how its cut-off message names it. */
export interface ChangeQueueOptions {
  /** Changes the reader may fall behind by. */
  readonly maxLag: number;
  /** Who reads: "the watcher", "the peer". */
  readonly reader: string;
  /** What it does to resume: "watch again from revision", "resume from revision". */
  readonly resume: string;
  readonly signal: AbortSignal;
}

/** Follows `source`'s changes; subscribes now, so that a wake-up is never missed. */
export function queueChanges<T>(
  source: ChangeSource<T>,
  options: ChangeQueueOptions,
): ChangeQueue<T> {
  let wake: (() => void) | undefined;
  const unsubscribe = source.onChange(() => wake?.());
  const onAbort = () => wake?.();
  options.signal.addEventListener("abort", onAbort);
  const behind = (delivered: number, how: string) =>
    new DomainError(
      "resource_exhausted",
      `${options.reader} fell behind ${how}: ${options.resume} ${delivered}`,
    );
  return {
    after(delivered, limit) {
      if (source.position - delivered > options.maxLag) {
        throw behind(delivered, `by more than ${options.maxLag} changes`);
      }
      const changes = source.changesSince(delivered, limit);
      if (changes === undefined) throw behind(delivered, "what the change log still holds");
      return changes;
    },
    changed(delivered, timeoutMs) {
      if (source.position > delivered || options.signal.aborted) return Promise.resolve(true);
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
