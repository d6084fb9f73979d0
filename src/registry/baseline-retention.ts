import type { Logger } from "pino";
import type { RegistryStore } from "./registry-store.js";

/** Options of {@link createBaselineRetention}. */
export interface BaselineRetentionOptions {
  /** How often a purge is retried after a failed delete or purge, in ms. Default: 60,000. */
  retryMs: number;
}

const baselineRetentionDefaults: Readonly<BaselineRetentionOptions> = Object.freeze({
  retryMs: 60_000,
});

/** Keeps OpenAPI baselines from outliving their services. */
export interface BaselineRetention {
  /** Purges leftovers once, then follows removals. Call once the store is open. */
  start(): void;
  /** Stops following removals and waits for the deletes under way. */
  stop(): Promise<void>;
}

/**
 * Deletes a service's OpenAPI baseline when its entry is removed: deregistered, expired, or
 * deleted by a peer or by another process sharing the store (every removal reaches the store's
 * change listeners). Together with `putBaseline` refusing names without a live entry, baselines
 * then take at most (registered services × `OPENAPI_MAX_BASELINE_BYTES`). A delete that fails (the
 * store unreachable) is logged and caught up by a purge of every baseline without a live entry,
 * retried every `retryMs` until one succeeds; a purge also runs at start, for leftovers of a
 * previous run.
 */
export function createBaselineRetention(
  deps: {
    readonly store: Pick<RegistryStore, "onChange" | "deleteBaseline" | "purgeBaselines">;
    readonly logger: Logger;
  },
  options: Partial<BaselineRetentionOptions> = {},
): BaselineRetention {
  const { store, logger } = deps;
  const settings = Object.freeze({ ...baselineRetentionDefaults, ...options });
  const underWay = new Set<Promise<void>>();
  let purgeWanted = true;
  let unsubscribe: (() => void) | undefined;
  let retry: NodeJS.Timeout | undefined;

  const track = (work: Promise<void>) => {
    underWay.add(work);
    void work.finally(() => underWay.delete(work));
  };
  const purge = async () => {
    purgeWanted = false;
    try {
      const forgotten = await store.purgeBaselines();
      if (forgotten > 0) logger.info({ forgotten }, "forgot OpenAPI baselines of removed services");
    } catch (error) {
      purgeWanted = true;
      logger.warn({ err: error }, "could not purge OpenAPI baselines; retrying later");
    }
  };
  const forget = async (name: string) => {
    try {
      await store.deleteBaseline(name);
    } catch (error) {
      purgeWanted = true;
      logger.warn(
        { err: error, service: name },
        "could not delete an OpenAPI baseline; purging later",
      );
    }
  };

  return {
    start() {
      if (unsubscribe) return;
      unsubscribe = store.onChange((change) => {
        if (change.type === "delete") track(forget(change.tombstone.name));
      });
      track(purge());
      retry = setInterval(() => {
        if (purgeWanted && underWay.size === 0) track(purge());
      }, settings.retryMs);
      retry.unref();
    },
    async stop() {
      unsubscribe?.();
      unsubscribe = undefined;
      clearInterval(retry);
      await Promise.all(underWay);
    },
  };
}
