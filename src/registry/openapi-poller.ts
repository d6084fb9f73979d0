import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import { type HttpClient, isOutboundError } from "../http-client/http-client.js";
import { createLimiter } from "../limiter.js";
import type { OpenApiBaseline } from "./model.js";
import type { OpenApiDiff } from "./openapi.js";
import type { OpenApiAnalysis } from "./openapi-analysis.js";
import type { OpenApiAnalyzer } from "./openapi-analyzer.js";
import type { RegistryStore } from "./registry-store.js";

/** What {@link createOpenApiPoller} needs. */
export interface OpenApiPollerDeps {
  /** Where baselines are read and written. */
  readonly baselines: Pick<RegistryStore, "getBaseline" | "putBaseline">;
  /** The outbound client; it enforces http/https and same-origin redirects. */
  readonly http: HttpClient;
  /** Stamps `recordedAt` of the baselines written. */
  readonly clock: Clock;
  /** Parses, summarises and diffs the documents, off the event loop; its owner closes it. */
  readonly analyzer: Pick<OpenApiAnalyzer, "analyze">;
}

/** Options of {@link createOpenApiPoller}. */
export interface OpenApiPollerOptions {
  /**
   * Documents fetched and analysed at the same time, at most, by all polls together (so that
   * the documents held in memory are bounded by `concurrency` × `maxBytes`). Default: 4.
   */
  concurrency: number;
  /** Largest document accepted, in bytes. Default: 5 MiB. */
  maxBytes: number;
  /** Budget of each fetch, body included, in ms. Default: 5000. */
  timeoutMs: number;
}

/** The defaults {@link createOpenApiPoller} merges its options over. */
const openApiPollerDefaults: Readonly<OpenApiPollerOptions> = Object.freeze({
  concurrency: 4,
  maxBytes: 5 * 1024 * 1024,
  timeoutMs: 5000,
});

/** One document to poll: a registered service and its OpenAPI URL. */
export interface OpenApiPollTarget {
  readonly service: string;
  readonly url: string;
}

/** Per-poll settings. */
export interface OpenApiPollRequest {
  /** Sent with every fetch (traceparent, correlation id, ...). */
  readonly headers?: Readonly<Record<string, string>>;
}

/** The outcome for one target. */
export interface OpenApiPollResult {
  readonly service: string;
  /** True when some operation was added, removed or changed since the stored baseline. */
  readonly changed: boolean;
  /** True when this poll recorded the first baseline of the service. */
  readonly baseline: boolean;
  /** Hash of the document fetched; "" when the poll failed. */
  readonly hash: string;
  /** Set when `changed`; its lists are capped, its counts are not (see `OpenApiDiff`). */
  readonly diff?: OpenApiDiff;
  /** Set when the poll failed; safe to show a client (no host names, no stack). */
  readonly error?: string;
}

/** Polls OpenAPI documents and compares them with stored baselines. */
export interface OpenApiPoller {
  /**
   * Fetches every target's document (at most `concurrency` at a time, counting every poll in
   * progress) and compares it with the
   * service's baseline. Never rejects: a failure is reported in that target's result. Results
   * come in the order of `targets`; targets are expected to name distinct services.
   *
   * The first poll of a service records its baseline (`baseline: true`, `changed: false`). After
   * that, the stored baseline always describes the last document seen: when operations changed,
   * the new summary replaces it, so the next poll reports drift since this one, not since the
   * first (the caller records findings as they are reported); when only the document hash moved
   * (descriptions, examples), it is replaced too, silently (`changed: false`). A document over a
   * bound of the analyzer (operations, baseline bytes) is a failure that keeps the baseline as it
   * was; so is a service removed while its document was being polled (its baseline is not kept).
   */
  poll(
    targets: readonly OpenApiPollTarget[],
    request?: OpenApiPollRequest,
  ): Promise<OpenApiPollResult[]>;
}

const acceptOpenApi =
  "application/json, application/yaml;q=0.9, application/x-yaml;q=0.9, text/yaml;q=0.9, */*;q=0.5";

/**
 * Creates the poller behind POST /registry/poll-openapi. Which URLs may be polled (registered
 * services only) is the caller's decision; the poller fetches what it is given.
 * @throws RangeError when `concurrency` is not a positive integer.
 */
export function createOpenApiPoller(
  deps: OpenApiPollerDeps,
  options: Partial<OpenApiPollerOptions> = {},
): OpenApiPoller {
  const settings: Readonly<OpenApiPollerOptions> = Object.freeze({
    ...openApiPollerDefaults,
    ...options,
  });
  if (!Number.isInteger(settings.concurrency) || settings.concurrency < 1) {
    throw new RangeError("concurrency must be a positive integer");
  }
  // One set of slots for every poll: concurrent polls share the bound.
  const slots = createLimiter(settings.concurrency);

  const fetchDocument = async (
    url: string,
    headers: Readonly<Record<string, string>>,
  ): Promise<{ body: Buffer; contentType: string | null } | string> => {
    const response = await deps.http.get(url, {
      headers,
      accept: acceptOpenApi,
      timeoutMs: settings.timeoutMs,
      maxBytes: settings.maxBytes,
    });
    if (response.status < 200 || response.status > 299) return `HTTP ${response.status}`;
    return { body: response.body, contentType: response.headers.get("content-type") };
  };

  /** Records what the analysis found; false when the service is no longer registered. */
  const record = async (service: string, analysis: OpenApiAnalysis): Promise<boolean> => {
    if (analysis.summary === undefined) return true;
    return deps.baselines.putBaseline(service, {
      hash: analysis.hash,
      operationCount: analysis.operationCount,
      summary: analysis.summary,
      recordedAt: deps.clock.now(),
    });
  };

  /** Analyses the document against the stored baseline; a string says why it could not. */
  const analyze = async (
    service: string,
    fetched: { body: Buffer; contentType: string | null },
  ): Promise<OpenApiAnalysis | string> => {
    let stored: OpenApiBaseline | undefined;
    try {
      stored = await deps.baselines.getBaseline(service);
    } catch (error) {
      return storeFailure(error);
    }
    try {
      return await deps.analyzer.analyze({ ...fetched, ...(stored ? { baseline: stored } : {}) });
    } catch (error) {
      return analysisFailure(error);
    }
  };

  const pollOne = async (
    target: OpenApiPollTarget,
    headers: Readonly<Record<string, string>>,
  ): Promise<OpenApiPollResult> => {
    const { service } = target;
    let fetched: Awaited<ReturnType<typeof fetchDocument>>;
    try {
      fetched = await fetchDocument(target.url, headers);
    } catch (error) {
      return failed(service, fetchFailure(error));
    }
    if (typeof fetched === "string") return failed(service, fetched);
    const analysis = await analyze(service, fetched);
    if (typeof analysis === "string") return failed(service, analysis);
    try {
      if (!(await record(service, analysis))) return failed(service, "not registered");
    } catch (error) {
      return failed(service, storeFailure(error));
    }
    return outcome(service, analysis);
  };

  return {
    async poll(targets, request = {}) {
      const headers = request.headers ?? {};
      return Promise.all(targets.map((target) => slots.run(() => pollOne(target, headers))));
    },
  };
}

function failed(service: string, error: string): OpenApiPollResult {
  return { service, changed: false, baseline: false, hash: "", error };
}

function outcome(service: string, analysis: OpenApiAnalysis): OpenApiPollResult {
  const { hash, diff } = analysis;
  const base = { service, changed: false, baseline: analysis.against === "none", hash };
  if (diff === undefined || diff.addedCount + diff.removedCount + diff.changedCount === 0) {
    return base;
  }
  return { ...base, changed: true, diff };
}

/** Outbound errors carry messages written for clients; anything else does not. */
function fetchFailure(error: unknown): string {
  if (isOutboundError(error)) return error.message;
  return "could not fetch the OpenAPI document";
}

/** The analyzer writes refusals and its shutdown for clients; a worker failure is not shown. */
function analysisFailure(error: unknown): string {
  const shown = error instanceof DomainError && ["invalid", "unavailable"].includes(error.kind);
  return shown ? (error as DomainError).message : "could not analyse the OpenAPI document";
}

/** Store messages may name the backing store's host: say only what failed. */
function storeFailure(error: unknown): string {
  if (error instanceof DomainError && error.kind === "unavailable") {
    return "baseline store unavailable";
  }
  // Not "could not record": the write went out, and may yet land.
  if (error instanceof DomainError && error.kind === "timeout") {
    return "baseline store did not answer in time; the baseline may still be recorded";
  }
  // The bound on all baselines: its message names the setting, and no host.
  if (error instanceof DomainError && error.kind === "resource_exhausted") return error.message;
  return "could not record the OpenAPI baseline";
}
