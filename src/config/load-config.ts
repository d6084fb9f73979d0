import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseDocument, type YAMLError } from "yaml";
import { DefinitionFileError, workflowsFromFile } from "../workflows/definition-file.js";
import { builtInWorkflows, type WorkflowDefinition } from "../workflows/definitions.js";
import { type AuthToken, parseAuthTokens } from "./auth-tokens.js";
import {
  ConfigError,
  type ConfigInput,
  type ConfigKey,
  type ConfigSection,
  type ConfigValueSource,
  configKey,
  configKeys,
  configSections,
  echoValue,
  type LogLevel,
  type RoleRateLimits,
} from "./keys.js";
import { errorCode, getSecret, type SecretSources } from "./secrets.js";

/** Everything the loader reads from outside, injectable so that tests need no real environment. */
export interface ConfigSources extends SecretSources {
  /** Directory against which a relative `APP_CONFIG_PATH` is resolved. */
  readonly cwd: string;
}

/** TLS key material, as paths; the server reads the files. */
export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

/** How to reach Redis. `url`, when present, is complete and may hold a password. */
export interface RedisSettings {
  readonly host?: string;
  readonly port: number;
  /** Prefix of every key; orchestrators that share a registry share it. */
  readonly keyPrefix: string;
  readonly url?: string;
  /** `host:port` seeds of a Redis Cluster; when present, host and url are absent. */
  readonly clusterNodes?: readonly string[];
  readonly password?: string;
}

/**
 * The validated configuration, read once at start and passed down. Optional fields are absent
 * (not `undefined`) when unset. Holds secrets: log {@link LoadedConfig.effective}, never this.
 */
export interface AppConfig {
  readonly port: number;
  readonly host: string;
  readonly bodyLimitBytes: number;
  readonly shutdownTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly shutdownKeepAliveMs: number;
  /** Present when both TLS files are set. */
  readonly tls?: TlsFiles;
  /** Present when `REDIS_HOST` or `REDIS_URL` is set; absent means the in-memory store. */
  readonly redis?: RedisSettings;
  readonly reportingUrl: string;
  readonly docStoreUrl?: string;
  readonly notificationUrl: string;
  readonly secureAnalyzerUrl?: string;
  readonly githubAgentUrl?: string;
  readonly jiraAgentUrl?: string;
  readonly confluenceAgentUrl?: string;
  readonly swaggerAgentUrl?: string;
  readonly consistencyEngineUrl?: string;
  readonly logCollectorUrl?: string;
  readonly outboundTimeoutMs: number;
  /** Retries and circuit breakers of outbound calls. */
  readonly outbound: OutboundSettings;
  /** Peer base URLs without a trailing "/"; empty when this node runs alone. */
  readonly peers: readonly string[];
  /** Absent means the app generates one. */
  readonly nodeId?: string;
  /** Workflows the file defines (`workflows:`), beside the built-in ones. */
  readonly workflows: readonly WorkflowDefinition[];
  /** Jobs on a schedule (`SCHEDULED_JOBS`), in the order given. */
  readonly schedules: readonly { readonly job: string; readonly cron: string }[];
  /** How long a workflow run's lease lasts (`WORKFLOW_LEASE_MS`), in ms. */
  readonly workflowLeaseMs: number;
  /** Runs executed at once on this node (`WORKFLOW_MAX_RUNNING`). */
  readonly workflowMaxRunning: number;
  /** Runs waiting for a slot on this node (`WORKFLOW_MAX_WAITING`). */
  readonly workflowMaxWaiting: number;
  readonly environment: string;
  /** The event store's retention, the outbox and the recent events' bounds. */
  readonly events: EventSettings;
  /** Retention and bounds of the saga store. */
  readonly sagas: SagaSettings;
  readonly logLevel: LogLevel;
  /** Leases, health checks, watch and OpenAPI limits of the service registry. */
  readonly registry: RegistrySettings;
  /** Retries and bounds of the dead-letter queue. */
  readonly dlq: DlqSettings;
  /** Spans recorded, kept and exported. */
  readonly tracing: TracingSettings;
  /** Bearer tokens and their roles: AUTH_TOKENS, then OPERATOR_TOKEN as an operator token. */
  readonly authTokens: readonly AuthToken[];
  /** Per-token and per-address request rates. */
  readonly rateLimits: RateLimitSettings;
  /** Connections, headers, streams and watches a node takes at once. */
  readonly connectionLimits: ConnectionLimits;
  readonly peerToken?: string;
  /** Absolute path of the YAML file used (or looked for, when the default file is missing). */
  readonly configPath: string;
}

/** The events' settings. */
export interface EventSettings {
  /** Recent events each node keeps for watchers and subscribers (count, bytes). */
  readonly logSize: number;
  readonly logBytes: number;
  /** Events the store keeps, by count and by age (ms; 0: no age limit). */
  readonly retentionMaxEvents: number;
  readonly retentionMaxAgeMs: number;
  /** Bytes of events the memory store keeps. */
  readonly storeMaxBytes: number;
  /** Largest payload, as JSON. */
  readonly maxPayloadBytes: number;
  /** Events waiting for the store at most (count, bytes). */
  readonly outboxSize: number;
  readonly outboxBytes: number;
}

/** What the listener and the watches take at once (HEADER_LIMIT_BYTES, MAX_CONNECTIONS...). */
export interface ConnectionLimits {
  readonly headerBytes: number;
  readonly http2MaxConcurrentStreams: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerClient: number;
  readonly maxWatches: number;
  readonly maxWatchesPerClient: number;
}

/** Request rates (RATE_LIMIT_*): per token by its role, and per client address. */
export interface RateLimitSettings {
  /** Requests per second per token of each role; 0: no limit. */
  readonly roles: RoleRateLimits;
  /** Requests per second per client address; 0: no limit. */
  readonly addressRps: number;
  /** Addresses and CIDR blocks the per-address limit does not count. */
  readonly exempt: readonly string[];
}

/** Retries and circuit breakers of outbound calls. */
export interface OutboundSettings {
  readonly maxAttempts: number;
  readonly retryBaseDelayMs: number;
  readonly retryMaxDelayMs: number;
  readonly breakerThreshold: number;
  readonly breakerHalfOpenMs: number;
  /** `OUTBOUND_ALLOW`'s entries; empty: no allow-list. */
  readonly allow: readonly string[];
}

/** The tracing settings. */
export interface TracingSettings {
  readonly enabled: boolean;
  readonly sampleRatio: number;
  readonly maxTraces: number;
  readonly maxBytes: number;
  readonly maxSpansPerTrace: number;
  /** Absent: spans are not exported. */
  readonly otlpEndpoint?: string;
}

/** The saga store's settings. */
export interface SagaSettings {
  readonly retentionMs: number;
  readonly maxFinished: number;
  readonly maxBytes: number;
  readonly maxSagaBytes: number;
  readonly maxSteps: number;
  readonly maxOutputBytes: number;
}

/** The service registry's settings. */
export interface RegistrySettings {
  readonly healthCheckIntervalMs: number;
  readonly healthCheckTimeoutMs: number;
  readonly healthCheckFailureThreshold: number;
  readonly healthCheckSuccessThreshold: number;
  readonly healthCheckConcurrency: number;
  readonly leaseGraceMs: number;
  readonly tombstoneRetentionMs: number;
  readonly maxEntries: number;
  readonly maxBytes: number;
  readonly maxTombstones: number;
  readonly changeLogSize: number;
  readonly changeLogBytes: number;
  readonly watchQueueSize: number;
  readonly openapiMaxBytes: number;
  readonly openapiConcurrency: number;
  readonly openapiMaxOperations: number;
  readonly openapiMaxBaselineBytes: number;
  readonly openapiBaselinesMaxBytes: number;
  readonly openapiWorkers: number;
}

/** The dead-letter queue's settings (see the DLQ_* keys). */
export interface DlqSettings {
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  readonly maxAttempts: number;
  readonly concurrency: number;
  readonly retryTimeoutMs: number;
  readonly pollIntervalMs: number;
  readonly maxPayloadBytes: number;
  readonly maxEntries: number;
  readonly maxBytes: number;
  readonly resolvedRetentionMs: number;
}

/** One row of `/config/effective`: safe to show, since secrets and URL passwords are redacted. */
export interface EffectiveConfigValue {
  readonly key: string;
  /** The value in use as text; lists joined with ","; a set secret is "[redacted]", unset "". */
  readonly value: string;
  readonly source: ConfigValueSource;
  readonly secret: boolean;
}

/** What {@link loadConfig} returns. */
export interface LoadedConfig {
  readonly config: AppConfig;
  /** Every key, in the order of {@link configKeys}. */
  readonly effective: readonly EffectiveConfigValue[];
  /** Problems that do not stop the start, such as unknown keys in the file. */
  readonly warnings: readonly string[];
}

const defaultSources: ConfigSources = Object.freeze({
  env: process.env,
  // A getter, so that the directory is the one current when loadConfig runs, not at import.
  get cwd() {
    return process.cwd();
  },
  secretsDir: "/run/secrets",
  readFile: (path: string) => readFileSync(path, "utf8"),
});

/**
 * Reads and validates the configuration: env > YAML file > default for every key of
 * {@link configKeys}, secrets through {@link getSecret}.
 *
 * @param sources merged over the defaults: `env` = `process.env`, `cwd` = `process.cwd()`,
 *   `secretsDir` = `/run/secrets`, `readFile` = `fs.readFileSync(path, "utf8")`.
 *   The caller's object is not modified.
 * @throws ConfigError on the first invalid value; on an unreadable file at an explicit
 *   `APP_CONFIG_PATH` (a missing file at the default path just means no file values); on invalid
 *   YAML or a top level that is not a mapping; on a secret written in the file; on a key set twice
 *   in the file; and when only one of `TLS_CERT_FILE` and `TLS_KEY_FILE` is set.
 */
export function loadConfig(sources: Partial<ConfigSources> = {}): LoadedConfig {
  const from: ConfigSources = { ...defaultSources, ...sources };
  const warnings: string[] = [];
  const file = readConfigFile(from, warnings);
  const resolved = new Map<string, Resolved>();
  for (const key of configKeys) resolved.set(key.name, resolveKey(key, from, file));
  protectLoopback(resolved, warnings);
  const config = Object.freeze({
    ...buildConfig(resolved, warnings),
    workflows: workflowsOf(file),
  });
  const effective = configKeys.map((key) => {
    const { shown, source } = resolvedEntry(resolved, key);
    return Object.freeze({ key: key.name, value: shown, source, secret: key.secret });
  });
  return Object.freeze({
    config,
    effective: Object.freeze(effective),
    warnings: Object.freeze(warnings),
  });
}

interface FileEntry {
  /** Where in the file, for messages: `server.port` or `PORT`. */
  readonly location: string;
  readonly raw: unknown;
}

interface ConfigFile {
  readonly path: string;
  readonly source: ConfigValueSource;
  readonly entries: ReadonlyMap<string, FileEntry>;
  /** The file's `workflows:` list, as written (checked by {@link workflowsOf}). */
  readonly workflows?: unknown;
}

interface Resolved<T = unknown> {
  readonly value: T;
  readonly source: ConfigValueSource;
  /** Already redacted: secrets never reach this field. */
  readonly shown: string;
}

function readConfigFile(from: ConfigSources, warnings: string[]): ConfigFile {
  const key = configKey.APP_CONFIG_PATH;
  const given = from.env[key.name];
  const source = given === undefined ? "default" : "env";
  const result = key.parse(given?.trim() ?? key.default);
  if (!result.ok) throw new ConfigError(key.name, source, result.problem);
  const path = resolve(from.cwd, result.value);
  const fail = (detail: string) =>
    new ConfigError(key.name, source, `${echoValue(path)} ${detail}`);

  let text: string;
  try {
    text = from.readFile(path);
  } catch (error) {
    const code = errorCode(error);
    // Only the default may be absent: an explicit path that is not there is a typo to report.
    if (source === "default" && code === "ENOENT") return { path, source, entries: new Map() };
    throw fail(`cannot be read (${code ?? "error"})`);
  }
  const top = parseYaml(text, fail, (warning) => warnings.push(`${path}: ${warning}`));
  if (top === undefined) return { path, source, entries: new Map() };
  const { workflows, ...sections } = top;
  return { path, source, entries: collectEntries(sections, warnings), workflows };
}

/** The workflows the file defines, beside the built-in ones. */
function workflowsOf(file: ConfigFile): readonly WorkflowDefinition[] {
  try {
    return Object.freeze(workflowsFromFile(file.workflows, builtInWorkflows));
  } catch (error) {
    if (!(error instanceof DefinitionFileError)) throw error;
    throw new ConfigError("workflows", "file", error.message, `file (${error.location})`);
  }
}

/**
 * Reports YAML errors by code and position only: the library's messages quote the source line,
 * which may be the one holding a misplaced secret.
 */
function parseYaml(
  text: string,
  fail: (detail: string) => ConfigError,
  warn: (warning: string) => void,
): Record<string, unknown> | undefined {
  const document = parseDocument(text);
  const [error] = document.errors;
  if (error !== undefined) throw fail(`is not valid YAML (${error.code}${position(error)})`);
  for (const warning of document.warnings) warn(`YAML ${warning.code}${position(warning)}`);
  let top: unknown;
  try {
    top = document.toJS();
  } catch {
    throw fail("is not valid YAML (too many aliases)");
  }
  // An empty file, or one with every line commented out, sets nothing.
  if (top === null || top === undefined) return undefined;
  if (!isMapping(top)) throw fail(`holds ${describe(top)}; expected a mapping of sections`);
  return top;
}

function position(error: YAMLError): string {
  const start = error.linePos?.[0];
  return start === undefined ? "" : ` at line ${start.line}, column ${start.col}`;
}

function collectEntries(top: Record<string, unknown>, warnings: string[]): Map<string, FileEntry> {
  const entries = new Map<string, FileEntry>();
  for (const [name, value] of Object.entries(top)) {
    const section = configSections.find((candidate) => candidate === name);
    if (section === undefined) {
      const key = configKeys.find((candidate) => candidate.name === name);
      addEntry(entries, warnings, { location: name, raw: value }, key, undefined);
      continue;
    }
    if (value === null) continue;
    if (!isMapping(value)) {
      throw new ConfigError(section, "file", `${describe(value)} was given; expected a mapping`);
    }
    for (const [spelling, raw] of Object.entries(value)) {
      const key = configKeys.find((k) => k.name === spelling || k.name.toLowerCase() === spelling);
      addEntry(entries, warnings, { location: `${section}.${spelling}`, raw }, key, section);
    }
  }
  return entries;
}

function addEntry(
  entries: Map<string, FileEntry>,
  warnings: string[],
  entry: FileEntry,
  key: ConfigKey<unknown> | undefined,
  section: ConfigSection | undefined,
): void {
  const where = `file (${entry.location})`;
  if (key === undefined) {
    warnings.push(`${entry.location}: unknown key in the config file; ignored`);
  } else if (key.secret) {
    const name = key.name;
    const detail = `secrets are never read from the config file; set env ${name} or ${name}_FILE, or put it in the secrets directory as ${name.toLowerCase()}`;
    throw new ConfigError(name, "file", detail, where);
  } else if (key.section === undefined) {
    warnings.push(`${entry.location}: ${key.name} is read from the environment only; ignored`);
  } else if (section !== undefined && key.section !== section) {
    warnings.push(`${entry.location}: ${key.name} belongs in section ${key.section}; ignored`);
  } else if (entry.raw !== null) {
    // `key:` with nothing after it reads as null and sets nothing, like a commented-out line.
    const earlier = entries.get(key.name);
    if (earlier !== undefined) {
      const detail = `is set twice, at ${earlier.location} and ${entry.location}; keep one`;
      throw new ConfigError(key.name, "file", detail);
    }
    entries.set(key.name, entry);
  }
}

function resolveKey(key: ConfigKey<unknown>, from: ConfigSources, file: ConfigFile): Resolved {
  if (key.name === configKey.APP_CONFIG_PATH.name) {
    return { value: file.path, source: file.source, shown: file.path };
  }
  if (key.secret) {
    const secret = getSecret(key.name, from);
    return secret === undefined
      ? { value: "", source: "default", shown: "" }
      : { value: secret.value, source: secret.source, shown: "[redacted]" };
  }
  const fromEnv = from.env[key.name];
  if (fromEnv !== undefined) return parseInput(key, fromEnv.trim(), "env", "env");
  const entry = file.entries.get(key.name);
  if (entry !== undefined) {
    const where = `file (${entry.location})`;
    return parseInput(key, fileInput(key.name, entry.raw, where), "file", where);
  }
  return parseInput(key, key.default, "default", "default");
}

function parseInput(
  key: ConfigKey<unknown>,
  input: ConfigInput,
  source: ConfigValueSource,
  where: string,
): Resolved {
  const result = key.parse(input);
  if (!result.ok) throw new ConfigError(key.name, source, result.problem, where);
  return { value: result.value, source, shown: key.show(result.value) };
}

/** Scalars become text, to be parsed exactly like env; sequences are left to the list keys. */
function fileInput(name: string, raw: unknown, where: string): ConfigInput {
  if (typeof raw === "string") return raw.trim();
  if (typeof raw === "number" || typeof raw === "boolean" || typeof raw === "bigint") {
    return String(raw);
  }
  if (Array.isArray(raw)) {
    return raw.map((item: unknown, index) => {
      if (typeof item === "string") return item.trim();
      if (typeof item === "number" || typeof item === "boolean") return String(item);
      const detail = `entry ${index + 1} is ${describe(item)}; expected text`;
      throw new ConfigError(name, "file", detail, where);
    });
  }
  throw new ConfigError(name, "file", `${describe(raw)} was given; expected a value`, where);
}

/**
 * AUTH_TOKENS parsed, with OPERATOR_TOKEN as one more operator token.
 * @throws ConfigError on a malformed AUTH_TOKENS, or when OPERATOR_TOKEN repeats one of its tokens.
 */
function authTokensOf(resolved: ReadonlyMap<string, Resolved>): readonly AuthToken[] {
  const listed = resolvedEntry(resolved, configKey.AUTH_TOKENS);
  const tokens = parseAuthTokens(listed.value, listed.source);
  const operator = resolvedEntry(resolved, configKey.OPERATOR_TOKEN);
  refuseRepeatedToken(configKey.OPERATOR_TOKEN.name, operator, tokens);
  const all =
    operator.value === ""
      ? tokens
      : [...tokens, Object.freeze({ role: { kind: "operator" }, token: operator.value } as const)];
  // A token must name one caller: the peers' credential may not also be a role's.
  refuseRepeatedToken(
    configKey.PEER_TOKEN.name,
    resolvedEntry(resolved, configKey.PEER_TOKEN),
    all,
  );
  return Object.freeze(all);
}

function refuseRepeatedToken(
  name: string,
  secret: Resolved<string>,
  tokens: readonly AuthToken[],
): void {
  if (secret.value === "" || !tokens.some((t) => t.token === secret.value)) return;
  const detail = "repeats a token of AUTH_TOKENS or OPERATOR_TOKEN; each token must be unique";
  throw new ConfigError(name, secret.source, detail);
}

/**
 * Protected mode, as in Redis: with no token configured every RPC is open, so unless HOST was
 * set on purpose the node listens on loopback only, and says so.
 */
function protectLoopback(resolved: Map<string, Resolved>, warnings: string[]): void {
  const noTokens = [configKey.AUTH_TOKENS, configKey.OPERATOR_TOKEN].every(
    (key) => resolvedEntry(resolved, key).value === "",
  );
  if (!noTokens || resolvedEntry(resolved, configKey.HOST).source !== "default") return;
  resolved.set(configKey.HOST.name, {
    value: loopbackHost,
    source: "default",
    shown: loopbackHost,
  });
  warnings.push(
    `auth is off (neither AUTH_TOKENS nor OPERATOR_TOKEN is set): listening on ${loopbackHost} only; set HOST to listen elsewhere, and tokens to protect the API`,
  );
}

/** Where a node without tokens listens when HOST is not set. */
const loopbackHost = "127.0.0.1";

function buildConfig(
  resolved: ReadonlyMap<string, Resolved>,
  warnings: string[],
): Omit<AppConfig, "workflows"> {
  const value = <T>(key: ConfigKey<T>): T => resolvedEntry(resolved, key).value;
  const k = configKey;
  const tls = tlsFiles(resolved);
  const redis = redisSettings(resolved, warnings);
  const docStoreUrl = value(k.DOC_STORE_URL);
  const secureAnalyzerUrl = value(k.SECURE_ANALYZER_URL);
  const logCollectorUrl = value(k.LOG_COLLECTOR_URL);
  const nodeId = value(k.NODE_ID);
  const authTokens = authTokensOf(resolved);
  const peerToken = value(k.PEER_TOKEN);
  return Object.freeze({
    port: value(k.PORT),
    host: value(k.HOST),
    bodyLimitBytes: value(k.BODY_LIMIT_BYTES),
    shutdownTimeoutMs: value(k.SHUTDOWN_TIMEOUT_MS),
    keepAliveTimeoutMs: value(k.KEEP_ALIVE_TIMEOUT_MS),
    shutdownKeepAliveMs: value(k.SHUTDOWN_KEEP_ALIVE_MS),
    connectionLimits: Object.freeze({
      headerBytes: value(k.HEADER_LIMIT_BYTES),
      http2MaxConcurrentStreams: value(k.HTTP2_MAX_CONCURRENT_STREAMS),
      maxConnections: value(k.MAX_CONNECTIONS),
      maxConnectionsPerClient: value(k.MAX_CONNECTIONS_PER_CLIENT),
      maxWatches: value(k.WATCH_MAX_SUBSCRIBERS),
      maxWatchesPerClient: value(k.WATCH_MAX_SUBSCRIBERS_PER_CLIENT),
    }),
    rateLimits: Object.freeze({
      roles: value(k.RATE_LIMIT_ROLES),
      addressRps: value(k.RATE_LIMIT_ADDRESS_RPS),
      exempt: value(k.RATE_LIMIT_EXEMPT),
    }),
    ...(tls === undefined ? {} : { tls }),
    ...(redis === undefined ? {} : { redis }),
    reportingUrl: value(k.REPORTING_URL),
    ...(docStoreUrl === "" ? {} : { docStoreUrl }),
    notificationUrl: value(k.NOTIFICATION_URL),
    ...(secureAnalyzerUrl === "" ? {} : { secureAnalyzerUrl }),
    ...agentUrls(resolved),
    ...(logCollectorUrl === "" ? {} : { logCollectorUrl }),
    outboundTimeoutMs: value(k.OUTBOUND_TIMEOUT_MS),
    outbound: Object.freeze({
      maxAttempts: value(k.OUTBOUND_MAX_ATTEMPTS),
      retryBaseDelayMs: value(k.OUTBOUND_RETRY_BASE_DELAY_MS),
      retryMaxDelayMs: value(k.OUTBOUND_RETRY_MAX_DELAY_MS),
      breakerThreshold: value(k.OUTBOUND_BREAKER_THRESHOLD),
      breakerHalfOpenMs: value(k.OUTBOUND_BREAKER_HALF_OPEN_MS),
      allow: value(k.OUTBOUND_ALLOW),
    }),
    peers: value(k.ORCHESTRATOR_PEERS),
    ...(nodeId === "" ? {} : { nodeId }),
    environment: value(k.ENVIRONMENT),
    schedules: value(k.SCHEDULED_JOBS),
    workflowLeaseMs: value(k.WORKFLOW_LEASE_MS),
    workflowMaxRunning: value(k.WORKFLOW_MAX_RUNNING),
    workflowMaxWaiting: value(k.WORKFLOW_MAX_WAITING),
    events: Object.freeze({
      logSize: value(k.EVENT_LOG_SIZE),
      logBytes: value(k.EVENT_LOG_BYTES),
      retentionMaxEvents: value(k.EVENT_RETENTION_MAX_EVENTS),
      retentionMaxAgeMs: value(k.EVENT_RETENTION_MAX_AGE_MS),
      storeMaxBytes: value(k.EVENT_STORE_MAX_BYTES),
      maxPayloadBytes: value(k.EVENT_MAX_PAYLOAD_BYTES),
      outboxSize: value(k.EVENT_OUTBOX_SIZE),
      outboxBytes: value(k.EVENT_OUTBOX_BYTES),
    }),
    sagas: Object.freeze({
      retentionMs: value(k.SAGA_RETENTION_MS),
      maxFinished: value(k.SAGA_MAX_FINISHED),
      maxBytes: value(k.SAGA_STORE_MAX_BYTES),
      maxSagaBytes: value(k.SAGA_MAX_BYTES),
      maxSteps: value(k.SAGA_MAX_STEPS),
      maxOutputBytes: value(k.SAGA_MAX_OUTPUT_BYTES),
    }),
    logLevel: value(k.LOG_LEVEL),
    registry: Object.freeze({
      healthCheckIntervalMs: value(k.HEALTH_CHECK_INTERVAL_MS),
      healthCheckTimeoutMs: value(k.HEALTH_CHECK_TIMEOUT_MS),
      healthCheckFailureThreshold: value(k.HEALTH_CHECK_FAILURE_THRESHOLD),
      healthCheckSuccessThreshold: value(k.HEALTH_CHECK_SUCCESS_THRESHOLD),
      healthCheckConcurrency: value(k.HEALTH_CHECK_CONCURRENCY),
      leaseGraceMs: value(k.LEASE_GRACE_MS),
      tombstoneRetentionMs: value(k.TOMBSTONE_RETENTION_MS),
      maxEntries: value(k.REGISTRY_MAX_ENTRIES),
      maxBytes: value(k.REGISTRY_MAX_BYTES),
      maxTombstones: value(k.REGISTRY_MAX_TOMBSTONES),
      changeLogSize: value(k.REGISTRY_CHANGE_LOG_SIZE),
      changeLogBytes: value(k.REGISTRY_CHANGE_LOG_BYTES),
      watchQueueSize: value(k.WATCH_QUEUE_SIZE),
      openapiMaxBytes: value(k.OPENAPI_MAX_BYTES),
      openapiConcurrency: value(k.OPENAPI_CONCURRENCY),
      openapiMaxOperations: value(k.OPENAPI_MAX_OPERATIONS),
      openapiMaxBaselineBytes: value(k.OPENAPI_MAX_BASELINE_BYTES),
      openapiBaselinesMaxBytes: value(k.OPENAPI_BASELINES_MAX_BYTES),
      openapiWorkers: value(k.OPENAPI_WORKERS),
    }),
    dlq: Object.freeze({
      baseDelayMs: value(k.DLQ_RETRY_BASE_DELAY_MS),
      maxDelayMs: value(k.DLQ_RETRY_MAX_DELAY_MS),
      maxAttempts: value(k.DLQ_MAX_ATTEMPTS),
      concurrency: value(k.DLQ_RETRY_CONCURRENCY),
      retryTimeoutMs: value(k.DLQ_RETRY_TIMEOUT_MS),
      pollIntervalMs: value(k.DLQ_POLL_INTERVAL_MS),
      maxPayloadBytes: value(k.DLQ_MAX_PAYLOAD_BYTES),
      maxEntries: value(k.DLQ_MAX_ENTRIES),
      maxBytes: value(k.DLQ_MAX_BYTES),
      resolvedRetentionMs: value(k.DLQ_RESOLVED_RETENTION_MS),
    }),
    tracing: tracingSettings(value(k.OTEL_EXPORTER_OTLP_ENDPOINT), {
      enabled: value(k.TRACING_ENABLED),
      sampleRatio: value(k.TRACING_SAMPLE_RATIO),
      maxTraces: value(k.TRACE_STORE_MAX_TRACES),
      maxBytes: value(k.TRACE_STORE_MAX_BYTES),
      maxSpansPerTrace: value(k.TRACE_MAX_SPANS),
    }),
    authTokens,
    ...(peerToken === "" ? {} : { peerToken }),
    configPath: value(k.APP_CONFIG_PATH),
  });
}

/** The agents' and the engine's base URLs, each absent when empty (the registry may know them). */
function agentUrls(resolved: ReadonlyMap<string, Resolved>): AgentUrls {
  const value = (key: ConfigKey<string>): string => resolvedEntry(resolved, key).value;
  const githubAgentUrl = value(configKey.GITHUB_AGENT_URL);
  const jiraAgentUrl = value(configKey.JIRA_AGENT_URL);
  const confluenceAgentUrl = value(configKey.CONFLUENCE_AGENT_URL);
  const swaggerAgentUrl = value(configKey.SWAGGER_AGENT_URL);
  const consistencyEngineUrl = value(configKey.CONSISTENCY_ENGINE_URL);
  return {
    ...(githubAgentUrl === "" ? {} : { githubAgentUrl }),
    ...(jiraAgentUrl === "" ? {} : { jiraAgentUrl }),
    ...(confluenceAgentUrl === "" ? {} : { confluenceAgentUrl }),
    ...(swaggerAgentUrl === "" ? {} : { swaggerAgentUrl }),
    ...(consistencyEngineUrl === "" ? {} : { consistencyEngineUrl }),
  };
}

type AgentUrls = Pick<
  AppConfig,
  | "githubAgentUrl"
  | "jiraAgentUrl"
  | "confluenceAgentUrl"
  | "swaggerAgentUrl"
  | "consistencyEngineUrl"
>;

function tracingSettings(
  otlpEndpoint: string,
  settings: Omit<TracingSettings, "otlpEndpoint">,
): TracingSettings {
  return Object.freeze({ ...settings, ...(otlpEndpoint === "" ? {} : { otlpEndpoint }) });
}

function tlsFiles(resolved: ReadonlyMap<string, Resolved>): TlsFiles | undefined {
  const cert = resolvedEntry(resolved, configKey.TLS_CERT_FILE);
  const key = resolvedEntry(resolved, configKey.TLS_KEY_FILE);
  if (cert.value === "" && key.value === "") return undefined;
  if (cert.value !== "" && key.value !== "") {
    return Object.freeze({ certFile: cert.value, keyFile: key.value });
  }
  // A server that starts without TLS when half of it was configured would be a silent downgrade.
  const [unset, set] = cert.value === "" ? [cert, key] : [key, cert];
  const detail = `is unset, but ${set.name} is set (from ${set.source}); set both or neither`;
  throw new ConfigError(unset.name, unset.source, detail);
}

function redisSettings(
  resolved: ReadonlyMap<string, Resolved>,
  warnings: string[],
): RedisSettings | undefined {
  const value = <T>(key: ConfigKey<T>): T => resolvedEntry(resolved, key).value;
  const host = value(configKey.REDIS_HOST);
  const url = value(configKey.REDIS_URL);
  const password = value(configKey.REDIS_PASSWORD);
  const clusterNodes = value(configKey.REDIS_CLUSTER_NODES);
  if (host === "" && url === "" && clusterNodes.length === 0) {
    if (password !== "") {
      warnings.push("REDIS_PASSWORD is set, but no REDIS_HOST, REDIS_URL or REDIS_CLUSTER_NODES");
    }
    return undefined;
  }
  if (clusterNodes.length > 0 && (host !== "" || url !== "")) {
    // Which of the two would win is a guess the operator should not have to make.
    const single = resolvedEntry(
      resolved,
      host === "" ? configKey.REDIS_URL : configKey.REDIS_HOST,
    );
    const detail = `is set (from ${single.source}), and so is REDIS_CLUSTER_NODES; set one of them`;
    throw new ConfigError(single.name, single.source, detail);
  }
  return Object.freeze({
    port: value(configKey.REDIS_PORT),
    keyPrefix: value(configKey.REDIS_KEY_PREFIX),
    ...(host === "" ? {} : { host }),
    ...(url === "" ? {} : { url }),
    ...(clusterNodes.length === 0 ? {} : { clusterNodes }),
    ...(password === "" ? {} : { password }),
  });
}

/**
 * The resolved entry of a key, typed by the key: sound because each entry's value came from that
 * key's own parser.
 */
function resolvedEntry<T>(
  resolved: ReadonlyMap<string, Resolved>,
  key: ConfigKey<T>,
): Resolved<T> & { readonly name: string } {
  const entry = resolved.get(key.name);
  if (entry === undefined) throw new Error(`configuration key ${key.name} was not resolved`);
  return { ...entry, value: entry.value as T, name: key.name };
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return "a list";
  if (isMapping(value)) return "a mapping";
  return value === null ? "empty" : `a ${typeof value}`;
}
