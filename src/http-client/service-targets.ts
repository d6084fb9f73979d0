import type { AppConfig, ConfigKeyName } from "../config/index.js";
import { DomainError } from "../errors/domain-error.js";
import type { RegistryEntry } from "../registry/model.js";

/**
 * The services the orchestrator calls by name, each with the configuration key that gives its
 * base URL when the registry does not. A test checks every key exists, so this table, the
 * configuration and the README cannot drift apart.
 */
export const targetNames = Object.freeze({
  reporting: "REPORTING_URL",
  "doc-store": "DOC_STORE_URL",
  "notification-service": "NOTIFICATION_URL",
  "secure-analyzer": "SECURE_ANALYZER_URL",
  "github-agent": "GITHUB_AGENT_URL",
  "jira-agent": "JIRA_AGENT_URL",
  "confluence-agent": "CONFLUENCE_AGENT_URL",
  "swagger-agent": "SWAGGER_AGENT_URL",
  "consistency-engine": "CONSISTENCY_ENGINE_URL",
} as const satisfies Readonly<Record<string, ConfigKeyName>>);

/** One of the well-known service names of {@link targetNames}. */
export type TargetName = keyof typeof targetNames;

/** True when `name` is one of {@link targetNames}. */
export function isTargetName(name: string): name is TargetName {
  return Object.hasOwn(targetNames, name);
}

/** What the resolver needs to know of a registry entry. */
export interface RegisteredTarget {
  readonly baseUrl: string;
  /** Whether calls may go to it now: see {@link registeredTarget} for what counts. */
  readonly healthy: boolean;
}

/** What {@link createTargetResolver} is built from. */
export interface TargetResolverDeps {
  /** The registry's entry of that name, if any (see {@link registeredTarget}). */
  registered(name: string): RegisteredTarget | undefined;
  /** Configured base URLs; an absent or empty one is not configured (see {@link configuredTargets}). */
  readonly configured: Readonly<Partial<Record<TargetName, string>>>;
}

/** Where calls to a service go now, and why. */
export interface ResolvedTarget {
  readonly service: string;
  /** Without a trailing "/". */
  readonly baseUrl: string;
  readonly source: "registry" | "configuration";
}

/** Turns service names into base URLs; see {@link createTargetResolver}. */
export interface TargetResolver {
  /**
   * @throws DomainError "failed_precondition" when the service has no healthy registration and
   *   no configured URL; the message names the key to set, and never a host.
   */
  resolve(service: string): ResolvedTarget;
}

/**
 * Resolves a service name to a base URL, at each call, so that a registration, a health change or
 * a deregistration is followed without a restart:
 * 1. the registry entry of that name, but only while its status is exactly `HEALTHY`. A new
 *    registration (or one back from DOWN) is `UNKNOWN` until its health URL answers 2xx
 *    `HEALTH_CHECK_SUCCESS_THRESHOLD` times in a row; `HEALTH_CHECK_FAILURE_THRESHOLD` failures in
 *    a row make it `UNHEALTHY`; an entry whose lease ran out is `DOWN`. None of those three is
 *    used: a service that has not proven itself healthy is not called when configuration names a
 *    fallback. Status is what this node's store holds (each node probes for itself; orchestrators
 *    sharing one Redis share it).
 * 2. else, for a well-known name ({@link targetNames}), its configured URL.
 * Otherwise `resolve` throws `DomainError("failed_precondition")` saying what to register or set.
 */
export function createTargetResolver(deps: TargetResolverDeps): TargetResolver {
  return {
    resolve(service) {
      const registered = deps.registered(service);
      if (registered?.healthy) {
        return { service, baseUrl: trimSlashes(registered.baseUrl), source: "registry" };
      }
      const configured = isTargetName(service) ? deps.configured[service] : undefined;
      if (configured !== undefined && configured !== "") {
        return { service, baseUrl: trimSlashes(configured), source: "configuration" };
      }
      throw unresolvable(service, registered !== undefined);
    },
  };
}

/** The refusal of a service that neither a healthy registration nor configuration resolves. */
function unresolvable(service: string, registered: boolean): DomainError {
  const name = quoteName(service);
  const state = registered
    ? `${name} is registered but not HEALTHY`
    : `no healthy ${name} is registered`;
  const remedy = registered ? "wait for it to pass its health checks" : "register the service";
  if (!isTargetName(service)) return new DomainError("failed_precondition", `${state}: ${remedy}`);
  const key = targetNames[service];
  return new DomainError(
    "failed_precondition",
    `${state} and ${key} is not set: ${remedy} or set ${key}`,
  );
}

/**
 * The resolver's view of a registry entry: healthy only when its status is `HEALTHY`. The
 * composition root passes `(name) => registeredTarget(store.get(name))`.
 */
export function registeredTarget(
  entry: Pick<RegistryEntry, "baseUrl" | "status"> | undefined,
): RegisteredTarget | undefined {
  return entry === undefined
    ? undefined
    : { baseUrl: entry.baseUrl, healthy: entry.status === "HEALTHY" };
}

/** The configured base URL of each well-known service, from the loaded configuration. */
export function configuredTargets(config: AppConfig): Partial<Record<TargetName, string>> {
  const urls: Record<TargetName, string | undefined> = {
    reporting: config.reportingUrl,
    "doc-store": config.docStoreUrl,
    "notification-service": config.notificationUrl,
    "secure-analyzer": config.secureAnalyzerUrl,
    "github-agent": config.githubAgentUrl,
    "jira-agent": config.jiraAgentUrl,
    "confluence-agent": config.confluenceAgentUrl,
    "swagger-agent": config.swaggerAgentUrl,
    "consistency-engine": config.consistencyEngineUrl,
  };
  const present = Object.entries(urls).filter(
    (entry): entry is [string, string] => entry[1] !== undefined && entry[1] !== "",
  );
  return Object.freeze(Object.fromEntries(present));
}

/**
 * The URL of `path` on a resolved target. Joined as text, not with `new URL(path, base)`, which
 * would drop a path the base URL carries (`http://host/v1` + `/ingest` must give
 * `http://host/v1/ingest`).
 * @param path absolute: starts with one "/" (a query string may follow).
 * @throws DomainError "invalid" when `path` does not start with "/" or starts with "//".
 */
export function urlOf(target: ResolvedTarget, path: string): string {
  if (!path.startsWith("/") || path.startsWith("//")) {
    const detail = `${quoteName(path)} is not an absolute path (one leading "/")`;
    throw new DomainError(
      "invalid",
      `the path of a call to ${quoteName(target.service)}: ${detail}`,
    );
  }
  return `${trimSlashes(target.baseUrl)}${path}`;
}

function trimSlashes(url: string): string {
  return url.replace(/\/+$/, "");
}

const quoteLimit = 64;

/** Quotes a name or path for a message, cut so that a huge one cannot flood a log line. */
function quoteName(text: string): string {
  return JSON.stringify(text.length > quoteLimit ? `${text.slice(0, quoteLimit - 1)}…` : text);
}
