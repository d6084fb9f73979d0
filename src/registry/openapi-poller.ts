import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import { forEachLimited } from "../for-each-limited.js";
import { type HttpClient, isOutboundError } from "../http-client/http-client.js";
import {
  diffOpenApi,
  type OpenApiDiff,
  type OpenApiSummary,
  parseOpenApiDocument,
  summarizeOpenApi,
} from "./openapi.js";
import type { RegistryStore } from "./registry-store.js";

/** What {@link createOpenApiPoller} needs. */
export interface OpenApiPollerDeps {
  /** Where baselines are read and written. */
  readonly baselines: Pick<RegistryStore, "getBaseline" | "putBaseline">;
  /** The outbound client; it enforces http/https and same-origin redirects. */
  readonly http: HttpClient;
  /** Stamps `recordedAt` of the baselines written. */
  readonly clock: Clock;
}

/** Options of {@link createOpenApiPoller}. */
export interface OpenApiPollerOptions {
  /** Documents fetched at the same time, at most. Default: 4. */
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
  /** Set when `changed`. */
  readonly diff?: OpenApiDiff;
  /** Set when the poll failed; safe to show a client (no host names, no stack). */
  readonly error?: string;
}

/** Polls OpenAPI documents and compares them with stored baselines. */
export interface OpenApiPoller {
  /**
   * Fetches every target's document (at most `concurrency` at a time) and compares it with the
   * service's baseline. Never rejects: a failure is reported in that target's result. Results
   * come in the order of `targets`; targets are expected to name distinct services.
   *
   * The first poll of a service records its baseline (`baseline: true`, `changed: false`). After
   * that, the stored baseline always describes the last document seen: when operations changed,
   * the new summary replaces it, so the next poll reports drift since this one, not since the
   * first (the caller records findings as they are reported); when only the document hash moved
   * (descriptions, examples), it is replaced too, silently (`changed: false`).
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

  const fetchSummary = async (
    url: string,
    headers: Readonly<Record<string, string>>,
  ): Promise<OpenApiSummary | string> => {
    const response = await deps.http.get(url, {
      headers,
      accept: acceptOpenApi,
      timeoutMs: settings.timeoutMs,
      maxBytes: settings.maxBytes,
    });
    if (response.status < 200 || response.status > 299) return `HTTP ${response.status}`;
    const document = parseOpenApiDocument(response.body, response.headers.get("content-type"));
    return summarizeOpenApi(document);
  };

  const compare = async (service: string, summary: OpenApiSummary): Promise<OpenApiPollResult> => {
    const stored = await deps.baselines.getBaseline(service);
    const record = () =>
      deps.baselines.putBaseline(service, { ...summary, recordedAt: deps.clock.now() });
    if (stored === undefined) {
      await record();
      return { service, changed: false, baseline: true, hash: summary.hash };
    }
    if (stored.hash === summary.hash) {
      return { service, changed: false, baseline: false, hash: summary.hash };
    }
    const diff = diffOpenApi(stored, summary);
    await record();
    const changed = diff.added.length + diff.removed.length + diff.changed.length > 0;
    return changed
      ? { service, changed, baseline: false, hash: summary.hash, diff }
      : { service, changed, baseline: false, hash: summary.hash };
  };

  const pollOne = async (
    target: OpenApiPollTarget,
    headers: Readonly<Record<string, string>>,
  ): Promise<OpenApiPollResult> => {
    let summary: OpenApiSummary | string;
    try {
      summary = await fetchSummary(target.url, headers);
    } catch (error) {
      return failed(target.service, fetchFailure(error));
    }
    if (typeof summary === "string") return failed(target.service, summary);
    try {
      return await compare(target.service, summary);
    } catch (error) {
      return failed(target.service, storeFailure(error));
    }
  };

  return {
    async poll(targets, request = {}) {
      const headers = request.headers ?? {};
      const results: OpenApiPollResult[] = new Array(targets.length);
      await forEachLimited(targets, settings.concurrency, async (target, index) => {
        results[index] = await pollOne(target, headers);
      });
      return results;
    },
  };
}

function failed(service: string, error: string): OpenApiPollResult {
  return { service, changed: false, baseline: false, hash: "", error };
}

/** Outbound and parse errors carry messages written for clients; anything else does not. */
function fetchFailure(error: unknown): string {
  if (isOutboundError(error)) return error.message;
  if (error instanceof DomainError && error.kind === "invalid") return error.message;
  return "could not fetch the OpenAPI document";
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
  return "could not record the OpenAPI baseline";
}
