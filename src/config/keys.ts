import { isIP } from "node:net";
import { Cron } from "croner";
import { parseAllowEntry } from "../http-client/outbound-guard.js";
/** Where a configuration value came from; precedence is env > file > default. */
export type ConfigValueSource = "env" | "file" | "default";

/**
 * The sections of the YAML file. `security` holds only secrets, which the file must never contain;
 * it is listed so that a secret written there is recognised and refused rather than ignored.
 */
export type ConfigSection =
  | "server"
  | "redis"
  | "services"
  | "orchestrator"
  | "registry"
  | "dlq"
  | "tracing"
  | "logging"
  | "security";

/** Every section name, in the order the example file uses. */
export const configSections: readonly ConfigSection[] = Object.freeze([
  "server",
  "redis",
  "services",
  "orchestrator",
  "registry",
  "dlq",
  "tracing",
  "logging",
  "security",
]);

/** The log levels pino understands, from most to least verbose. */
export const logLevels = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;

/** One of {@link logLevels}. */
export type LogLevel = (typeof logLevels)[number];

/**
 * A configuration value that stops the start. The message reads
 * `KEY from SOURCE: "value" is not ...`; it never holds a secret, and an echoed value is cut to 64
 * characters, so it is safe to log.
 */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  /** The offending key (or `NAME_FILE` variable, or YAML section). */
  readonly key: string;
  /** Where the offending value came from. */
  readonly source: ConfigValueSource;

  /**
   * @param detail what is wrong, usually `"value" is not ...`.
   * @param location replaces `source` in the message when more precise, e.g. `file (server.port)`.
   */
  constructor(key: string, source: ConfigValueSource, detail: string, location?: string) {
    super(`${key} from ${location ?? source}: ${detail}`);
    this.key = key;
    this.source = source;
  }
}

/** What a parser receives: text from env or file, or a YAML sequence for list keys. */
export type ConfigInput = string | readonly string[];

/** A parsed value, or the reason it was refused (`"echoed value" is not ...`). */
export type ParseResult<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly problem: string };

/**
 * One configuration key: the single source for the loader, the README table and
 * `/config/effective`.
 */
export interface ConfigKey<T> {
  /** The environment variable, and the key's spelling in its YAML section (or in lower case). */
  readonly name: string;
  /** The YAML section; `undefined` for a key read from env only. */
  readonly section: ConfigSection | undefined;
  /** The accepted values, for people (`integer 1..65535`). */
  readonly type: string;
  /** The default as text, parsed like any other input; `""` means unset. */
  readonly default: string;
  /** Secrets come only from env, `NAME_FILE` or the secrets directory, and are always redacted. */
  readonly secret: boolean;
  /** One line on what the key does. */
  readonly description: string;
  /** Validates and converts; never throws. Input is already trimmed. */
  parse(input: ConfigInput): ParseResult<T>;
  /** The value as text for the effective-config view; hides anything secret inside the value. */
  show(value: T): string;
}

interface ConfigKeySpec<T> {
  readonly name: string;
  readonly section: ConfigSection | undefined;
  readonly type: string;
  readonly default: string;
  readonly secret?: boolean;
  readonly description: string;
  parse(input: ConfigInput): ParseResult<T>;
  show?(value: T): string;
}

function defineKey<T>(spec: ConfigKeySpec<T>): ConfigKey<T> {
  return Object.freeze({ secret: false, show: (value: T) => String(value), ...spec });
}

const echoLimit = 64;

/** Quotes a value for a message, cut to 64 characters so a huge value cannot flood the log. */
export function echoValue(text: string): string {
  const cut = text.length > echoLimit ? `${text.slice(0, echoLimit - 1)}…` : text;
  return JSON.stringify(cut);
}

/**
 * Echoes something meant to be a URL without whatever precedes its last "@": that part may be a
 * password even when the URL is malformed, so it is hidden whatever its shape.
 */
function echoUrl(text: string): string {
  const at = text.lastIndexOf("@");
  if (at < 0) return echoValue(text);
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:(\/\/)?/.exec(text)?.[0] ?? "";
  return echoValue(`${scheme}[redacted]${text.slice(at)}`);
}

function ok<T>(value: T): ParseResult<T> {
  return { ok: true, value };
}

function reject<T>(echoed: string, problem: string): ParseResult<T> {
  return { ok: false, problem: `${echoed} ${problem}` };
}

/** Refuses a YAML sequence for a key that takes one value. */
function scalar<T>(
  parse: (text: string) => ParseResult<T>,
): (input: ConfigInput) => ParseResult<T> {
  return (input) =>
    typeof input === "string" ? parse(input) : reject("a list", "was given; expected one value");
}

function integer(min: number, max: number): (text: string) => ParseResult<number> {
  return (text) => {
    const value = Number(text);
    const valid = /^[+-]?\d+$/.test(text) && Number.isSafeInteger(value);
    return valid && value >= min && value <= max
      ? ok(value)
      : reject(echoValue(text), `is not an integer between ${min} and ${max}`);
  };
}

/** "true" or "false", in any case. */
function boolean(text: string): ParseResult<boolean> {
  const lower = text.toLowerCase();
  if (lower === "true") return ok(true);
  if (lower === "false") return ok(false);
  return reject(echoValue(text), "is not true or false");
}

/** A decimal number from 0 to 1. */
function ratio(text: string): ParseResult<number> {
  const value = Number(text);
  return /^[+]?(\d+(\.\d*)?|\.\d+)$/.test(text) && value >= 0 && value <= 1
    ? ok(value)
    : reject(echoValue(text), "is not a number from 0 to 1");
}

const port = integer(1, 65535);
// Listening on port 0 lets the OS pick a free port: what tests and embedders need.
const listenPort = integer(0, 65535);

function host(allowEmpty: boolean): (text: string) => ParseResult<string> {
  return (text) => {
    if (text === "" && allowEmpty) return ok("");
    return text !== "" && text.length <= 253 && !/\s/.test(text)
      ? ok(text)
      : reject(echoValue(text), "is not a host (non-empty, no whitespace, at most 253 characters)");
  };
}

function withoutTrailingSlash(text: string): string {
  return text.endsWith("/") ? text.slice(0, -1) : text;
}

/**
 * Parses a URL with the WHATWG parser, which is what `fetch` and the Redis client will use, so
 * what passes here is what they will accept.
 */
function parseUrl(text: string, protocols: readonly string[]): ParseResult<URL> {
  const expected = `expected a URL with scheme ${protocols.join(" or ")}`;
  // The WHATWG parser silently drops tabs and newlines, so the URL "as given" would not be the
  // URL used; refusing whitespace keeps the two the same.
  if (/[\s\p{Cc}]/u.test(text)) return reject(echoUrl(text), `contains whitespace; ${expected}`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return reject(echoUrl(text), `is not a URL; ${expected}`);
  }
  if (!protocols.includes(url.protocol))
    return reject(echoUrl(text), `has the wrong scheme; ${expected}`);
  if (url.hostname === "") return reject(echoUrl(text), `has no host; ${expected}`);
  return ok(url);
}

function httpUrl(allowEmpty: boolean): (text: string) => ParseResult<string> {
  return (text) => {
    if (text === "" && allowEmpty) return ok("");
    const parsed = parseUrl(text, ["http:", "https:"]);
    if (!parsed.ok) return parsed;
    if (parsed.value.username !== "" || parsed.value.password !== "") {
      return reject(echoUrl(text), "contains credentials, which would leak into logs; remove them");
    }
    return ok(withoutTrailingSlash(text));
  };
}

function redisUrl(text: string): ParseResult<string> {
  if (text === "") return ok("");
  const parsed = parseUrl(text, ["redis:", "rediss:"]);
  return parsed.ok ? ok(withoutTrailingSlash(text)) : parsed;
}

/**
 * Rebuilds the URL from its parsed parts rather than editing the text, so that no spelling of the
 * password (percent-encoded or not) can survive the redaction.
 */
function showRedisUrl(text: string): string {
  if (text === "") return "";
  const url = new URL(text);
  if (url.password === "") return text;
  const rest = withoutTrailingSlash(`${url.pathname}${url.search}${url.hash}`);
  return `${url.protocol}//${url.username}:[redacted]@${url.host}${rest}`;
}

function peerList(input: ConfigInput): ParseResult<readonly string[]> {
  const entries = (typeof input === "string" ? input.split(",") : input)
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  const peers: string[] = [];
  const seen = new Set<string>();
  for (const entry of entries) {
    const parsed = httpUrl(false)(entry);
    if (!parsed.ok) return parsed;
    // Compared in normalised form, so that "http://A:80" and "http://a/" count as one peer.
    const identity = withoutTrailingSlash(new URL(parsed.value).href);
    if (seen.has(identity)) return reject(echoUrl(entry), "is listed twice");
    seen.add(identity);
    peers.push(parsed.value);
  }
  return ok(Object.freeze(peers));
}

/**
 * `OUTBOUND_ALLOW`: host names, `*.suffix`, addresses and CIDRs, comma-separated or a YAML list.
 * Each is checked here with the guard's own parser, so what starts is what the guard accepts.
 */
function allowList(input: ConfigInput): ParseResult<readonly string[]> {
  const entries = (typeof input === "string" ? input.split(",") : input)
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  for (const entry of entries) {
    const parsed = parseAllowEntry(entry);
    if (!parsed.ok) return reject(echoValue(entry), parsed.problem);
  }
  return ok(Object.freeze(entries));
}

/** `<job>=<cron>` entries, separated by ";" (a cron expression holds spaces and commas). */
function scheduleList(input: ConfigInput): ParseResult<readonly { job: string; cron: string }[]> {
  const entries = (typeof input === "string" ? input.split(";") : input)
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  const schedules: { job: string; cron: string }[] = [];
  const seen = new Set<string>();
  for (const entry of entries) {
    const at = entry.indexOf("=");
    const job = entry.slice(0, at).trim();
    const cron = entry.slice(at + 1).trim();
    if (at < 0 || !/^[a-z0-9][a-z0-9._-]{0,63}$/.test(job)) {
      return reject(
        echoValue(entry),
        "is not <job>=<cron expression>, the job 1–64 of [a-z0-9._-]",
      );
    }
    try {
      new Cron(cron, { paused: true }).stop();
    } catch (error) {
      const why = error instanceof Error ? error.message : "invalid";
      return reject(echoValue(entry), `has an invalid cron expression (${why.slice(0, 120)})`);
    }
    if (seen.has(job)) return reject(echoValue(entry), "schedules a job twice");
    seen.add(job);
    schedules.push(Object.freeze({ job, cron }));
  }
  return ok(Object.freeze(schedules));
}

function pattern(
  regex: RegExp,
  expected: string,
  allowEmpty: boolean,
): (text: string) => ParseResult<string> {
  return (text) =>
    (text === "" && allowEmpty) || regex.test(text) ? ok(text) : reject(echoValue(text), expected);
}

function logLevel(text: string): ParseResult<LogLevel> {
  const lower = text.toLowerCase();
  const level = logLevels.find((candidate) => candidate === lower);
  return level === undefined
    ? reject(echoValue(text), `is not a log level; expected one of ${logLevels.join(", ")}`)
    : ok(level);
}

function filePath(text: string): ParseResult<string> {
  return text.includes("\0") ? reject(echoValue(text), "contains a NUL character") : ok(text);
}

function nonEmptyPath(text: string): ParseResult<string> {
  return text === "" ? reject('""', "is empty; unset it to use the default") : filePath(text);
}

/** Secrets are not parsed: their text is used as is, and never echoed. */
function secretText(input: ConfigInput): ParseResult<string> {
  return typeof input === "string" ? ok(input) : { ok: false, problem: "a secret must be text" };
}

const showList = (value: readonly string[]): string => value.join(",");

/** The roles a per-token rate limit is set for; every `service/<name>` token counts as `service`. */
export const rateLimitedRoles = ["viewer", "operator", "admin", "service"] as const;

/** One of {@link rateLimitedRoles}. */
export type RateLimitedRole = (typeof rateLimitedRoles)[number];

/** Requests per second allowed to each token of a role; 0 means no limit. */
export type RoleRateLimits = Readonly<Record<RateLimitedRole, number>>;

const maxRate = 1_000_000;

/**
 * `role:rate` pairs (comma-separated, or a YAML list) over the defaults: a role left out keeps
 * its default, so setting one role cannot silently lift the others' limits; `role:0` lifts one.
 */
function roleRates(defaults: RoleRateLimits): (input: ConfigInput) => ParseResult<RoleRateLimits> {
  return (input) => {
    const rates: Record<RateLimitedRole, number> = { ...defaults };
    const seen = new Set<string>();
    const entries = (typeof input === "string" ? input.split(",") : input)
      .map((entry) => entry.trim())
      .filter((entry) => entry !== "");
    for (const entry of entries) {
      const [name = "", rate = "", ...rest] = entry.split(":").map((part) => part.trim());
      const role = rateLimitedRoles.find((known) => known === name);
      const parsed = integer(0, maxRate)(rate);
      if (role === undefined || rest.length > 0 || !parsed.ok) {
        return reject(
          echoValue(entry),
          `is not role:rate (a role of ${rateLimitedRoles.join(", ")}; a rate of 0..${maxRate} requests per second)`,
        );
      }
      if (seen.has(role)) return reject(echoValue(entry), "sets a role twice");
      seen.add(role);
      rates[role] = parsed.value;
    }
    return ok(Object.freeze(rates));
  };
}

const showRoleRates = (rates: RoleRateLimits): string =>
  rateLimitedRoles.map((role) => `${role}:${rates[role]}`).join(",");

/**
 * `REDIS_CLUSTER_NODES`: `host:port` seeds of a Redis Cluster, comma-separated or a YAML list.
 * A few are enough: the client learns the rest of the cluster from any one of them.
 */
function hostPortList(input: ConfigInput): ParseResult<readonly string[]> {
  const entries = (typeof input === "string" ? input.split(",") : input)
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  const seen = new Set<string>();
  for (const entry of entries) {
    const colon = entry.lastIndexOf(":");
    const hostPart = colon > 0 ? entry.slice(0, colon) : "";
    const portPart = colon > 0 ? entry.slice(colon + 1) : "";
    if (!host(false)(hostPart).ok || !/^\d{1,5}$/.test(portPart) || !port(portPart).ok) {
      return reject(echoValue(entry), "is not host:port (redis-1:6379)");
    }
    if (seen.has(entry)) return reject(echoValue(entry), "is listed twice");
    seen.add(entry);
  }
  return ok(Object.freeze(entries));
}

/** IP addresses and CIDR blocks (`10.0.0.0/8`, `::1`), comma-separated or a YAML list. */
function addressList(input: ConfigInput): ParseResult<readonly string[]> {
  const entries = (typeof input === "string" ? input.split(",") : input)
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  for (const entry of entries) {
    const [address = "", prefix, ...rest] = entry.split("/");
    const family = isIP(address);
    const bits = family === 4 ? 32 : 128;
    const prefixOk = prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= bits);
    if (family === 0 || !prefixOk || rest.length > 0) {
      return reject(echoValue(entry), "is not an IP address or CIDR block (10.0.0.0/8, ::1)");
    }
  }
  return ok(Object.freeze(entries));
}

/**
 * The configuration keys by name, in the order of the README table and `/config/effective`.
 * Each key's record name equals its `name`.
 */
export const configKey = Object.freeze({
  PORT: defineKey({
    name: "PORT",
    section: "server",
    type: "integer 0..65535",
    default: "5099",
    description: "The one port serving gRPC, gRPC-Web, Connect and REST (0: any free port).",
    parse: scalar(listenPort),
  }),
  HOST: defineKey({
    name: "HOST",
    section: "server",
    type: "host",
    default: "0.0.0.0",
    description: "Address to listen on.",
    parse: scalar(host(false)),
  }),
  BODY_LIMIT_BYTES: defineKey({
    name: "BODY_LIMIT_BYTES",
    section: "server",
    type: "integer 1024..67108864",
    default: "1048576",
    description: "Largest request body or message accepted, in bytes.",
    parse: scalar(integer(1024, 67108864)),
  }),
  SHUTDOWN_TIMEOUT_MS: defineKey({
    name: "SHUTDOWN_TIMEOUT_MS",
    section: "server",
    type: "integer 0..600000",
    default: "10000",
    description: "How long a graceful shutdown waits for calls in flight, in milliseconds.",
    parse: scalar(integer(0, 600000)),
  }),
  KEEP_ALIVE_TIMEOUT_MS: defineKey({
    name: "KEEP_ALIVE_TIMEOUT_MS",
    section: "server",
    type: "integer 1..600000",
    default: "5000",
    description: "How long an idle HTTP/1.1 connection is kept open, in milliseconds.",
    parse: scalar(integer(1, 600000)),
  }),
  SHUTDOWN_KEEP_ALIVE_MS: defineKey({
    name: "SHUTDOWN_KEEP_ALIVE_MS",
    section: "server",
    type: "integer 0..600000",
    default: "1000",
    description:
      "While shutting down, how long an idle HTTP/1.1 connection stays open for one more request (answered with Connection: close), in milliseconds.",
    parse: scalar(integer(0, 600000)),
  }),
  HEADER_LIMIT_BYTES: defineKey({
    name: "HEADER_LIMIT_BYTES",
    section: "server",
    type: "integer 1024..1048576",
    default: "16384",
    description:
      "Largest request header block accepted, in bytes (HTTP/1.1: request line and headers): beyond, 431 (on HTTP/1.1 the connection is then closed).",
    parse: scalar(integer(1024, 1048576)),
  }),
  HTTP2_MAX_CONCURRENT_STREAMS: defineKey({
    name: "HTTP2_MAX_CONCURRENT_STREAMS",
    section: "server",
    type: "integer 1..100000",
    default: "1000",
    description:
      "Streams (calls) open at once on one HTTP/2 connection, announced to the client; more are refused.",
    parse: scalar(integer(1, 100000)),
  }),
  MAX_CONNECTIONS: defineKey({
    name: "MAX_CONNECTIONS",
    section: "server",
    type: "integer 1..1000000",
    default: "10000",
    description:
      "Connections open at once, from every client; one more is closed as it is accepted.",
    parse: scalar(integer(1, 1000000)),
  }),
  MAX_CONNECTIONS_PER_CLIENT: defineKey({
    name: "MAX_CONNECTIONS_PER_CLIENT",
    section: "server",
    type: "integer 1..1000000",
    default: "256",
    description:
      "Connections open at once from one client address; one more is closed as it is accepted.",
    parse: scalar(integer(1, 1000000)),
  }),
  WATCH_MAX_SUBSCRIBERS: defineKey({
    name: "WATCH_MAX_SUBSCRIBERS",
    section: "server",
    type: "integer 1..1000000",
    default: "10000",
    description:
      "Watches (registry, events, workflow runs, health) open at once on this node, on every protocol; one more is refused (429 / RESOURCE_EXHAUSTED). Peers' replication streams are not counted.",
    parse: scalar(integer(1, 1000000)),
  }),
  WATCH_MAX_SUBSCRIBERS_PER_CLIENT: defineKey({
    name: "WATCH_MAX_SUBSCRIBERS_PER_CLIENT",
    section: "server",
    type: "integer 1..1000000",
    default: "256",
    description: "Watches open at once from one client address; one more is refused (429).",
    parse: scalar(integer(1, 1000000)),
  }),
  RATE_LIMIT_ROLES: defineKey({
    name: "RATE_LIMIT_ROLES",
    section: "server",
    type: "role:rate pairs (roles viewer, operator, admin, service)",
    default: "viewer:500,operator:1000,admin:1000,service:200",
    description:
      "Requests per second each token of a role may make (each service/<name> token its own), with as many more per 10 s for bursts; beyond: 429 / RESOURCE_EXHAUSTED with Retry-After. A role left out keeps its default; 0 lifts the limit. Peers' methods are not limited.",
    parse: roleRates({ viewer: 500, operator: 1000, admin: 1000, service: 200 }),
    show: showRoleRates,
  }),
  RATE_LIMIT_ADDRESS_RPS: defineKey({
    name: "RATE_LIMIT_ADDRESS_RPS",
    section: "server",
    type: "integer 0..1000000",
    default: "2000",
    description:
      "Requests per second one client address may make, token or not, with as many more per 10 s for bursts (0: no limit); addresses in RATE_LIMIT_EXEMPT are not counted.",
    parse: scalar(integer(0, maxRate)),
  }),
  RATE_LIMIT_EXEMPT: defineKey({
    name: "RATE_LIMIT_EXEMPT",
    section: "server",
    type: "comma-separated IPs or CIDRs (or a YAML list)",
    default: "127.0.0.0/8,::1",
    description:
      "Client addresses the per-address limit does not count (per-token limits still apply). Behind a proxy on the same host, every client has the proxy's address: set this to empty, or rely on per-token limits.",
    parse: addressList,
    show: showList,
  }),
  TLS_CERT_FILE: defineKey({
    name: "TLS_CERT_FILE",
    section: "server",
    type: "path",
    default: "",
    description: "PEM certificate chain; with TLS_KEY_FILE turns on TLS. Both or neither.",
    parse: scalar(filePath),
  }),
  TLS_KEY_FILE: defineKey({
    name: "TLS_KEY_FILE",
    section: "server",
    type: "path",
    default: "",
    description: "PEM private key for TLS_CERT_FILE. Both or neither.",
    parse: scalar(filePath),
  }),
  REDIS_HOST: defineKey({
    name: "REDIS_HOST",
    section: "redis",
    type: "host or empty",
    default: "",
    description: "Redis host; empty (and no REDIS_URL) means the embedded in-memory store.",
    parse: scalar(host(true)),
  }),
  REDIS_PORT: defineKey({
    name: "REDIS_PORT",
    section: "redis",
    type: "integer 1..65535",
    default: "6379",
    description: "Redis port, used with REDIS_HOST.",
    parse: scalar(port),
  }),
  REDIS_URL: defineKey({
    name: "REDIS_URL",
    section: "redis",
    type: "redis:// or rediss:// URL, or empty",
    default: "",
    description: "Redis URL, instead of REDIS_HOST; a password in it is redacted when shown.",
    parse: scalar(redisUrl),
    show: showRedisUrl,
  }),
  REDIS_CLUSTER_NODES: defineKey({
    name: "REDIS_CLUSTER_NODES",
    section: "redis",
    type: "comma-separated host:port (or a YAML list), or empty",
    default: "",
    description:
      "Seed nodes of a Redis Cluster, instead of REDIS_HOST and REDIS_URL; keys are hash-tagged per store.",
    parse: hostPortList,
    show: showList,
  }),
  REDIS_KEY_PREFIX: defineKey({
    name: "REDIS_KEY_PREFIX",
    section: "redis",
    type: "0..64 of [A-Za-z0-9._:-]",
    default: "orchestrator:",
    description: "Prefix of every Redis key; orchestrators sharing a registry share the prefix.",
    parse: scalar(
      pattern(/^[A-Za-z0-9._:-]{0,64}$/, "is not 0 to 64 of A-Z a-z 0-9 . _ : -", true),
    ),
  }),
  REDIS_PASSWORD: defineKey({
    name: "REDIS_PASSWORD",
    section: "redis",
    type: "secret",
    default: "",
    secret: true,
    description: "Redis password.",
    parse: secretText,
  }),
  REPORTING_URL: defineKey({
    name: "REPORTING_URL",
    section: "services",
    type: "http(s) URL",
    default: "http://reporting:5030",
    description: "Base URL of the reporting service.",
    parse: scalar(httpUrl(false)),
  }),
  DOC_STORE_URL: defineKey({
    name: "DOC_STORE_URL",
    section: "services",
    type: "http(s) URL or empty",
    default: "",
    description: "Base URL of the document store; empty means not used.",
    parse: scalar(httpUrl(true)),
  }),
  NOTIFICATION_URL: defineKey({
    name: "NOTIFICATION_URL",
    section: "services",
    type: "http(s) URL",
    default: "http://notification-service:5095",
    description: "Base URL of the notification service.",
    parse: scalar(httpUrl(false)),
  }),
  SECURE_ANALYZER_URL: defineKey({
    name: "SECURE_ANALYZER_URL",
    section: "services",
    type: "http(s) URL or empty",
    default: "",
    description: "Base URL of the secure analyzer; empty means not used.",
    parse: scalar(httpUrl(true)),
  }),
  GITHUB_AGENT_URL: defineKey({
    name: "GITHUB_AGENT_URL",
    section: "services",
    type: "http(s) URL or empty",
    default: "",
    description:
      "Base URL of the GitHub agent (service github-agent), used when no HEALTHY instance is registered; empty means none.",
    parse: scalar(httpUrl(true)),
  }),
  JIRA_AGENT_URL: defineKey({
    name: "JIRA_AGENT_URL",
    section: "services",
    type: "http(s) URL or empty",
    default: "",
    description:
      "Base URL of the Jira agent (service jira-agent), used when no HEALTHY instance is registered; empty means none.",
    parse: scalar(httpUrl(true)),
  }),
  CONFLUENCE_AGENT_URL: defineKey({
    name: "CONFLUENCE_AGENT_URL",
    section: "services",
    type: "http(s) URL or empty",
    default: "",
    description:
      "Base URL of the Confluence agent (service confluence-agent), used when no HEALTHY instance is registered; empty means none.",
    parse: scalar(httpUrl(true)),
  }),
  SWAGGER_AGENT_URL: defineKey({
    name: "SWAGGER_AGENT_URL",
    section: "services",
    type: "http(s) URL or empty",
    default: "",
    description:
      "Base URL of the Swagger agent (service swagger-agent), used when no HEALTHY instance is registered; empty means none.",
    parse: scalar(httpUrl(true)),
  }),
  CONSISTENCY_ENGINE_URL: defineKey({
    name: "CONSISTENCY_ENGINE_URL",
    section: "services",
    type: "http(s) URL or empty",
    default: "",
    description:
      "Base URL of the Consistency Engine (service consistency-engine), used when no HEALTHY instance is registered; empty means none.",
    parse: scalar(httpUrl(true)),
  }),
  LOG_COLLECTOR_URL: defineKey({
    name: "LOG_COLLECTOR_URL",
    section: "services",
    type: "http(s) URL or empty",
    default: "",
    description: "Base URL of the log collector; empty means not used.",
    parse: scalar(httpUrl(true)),
  }),
  OUTBOUND_TIMEOUT_MS: defineKey({
    name: "OUTBOUND_TIMEOUT_MS",
    section: "services",
    type: "integer 1..600000",
    default: "5000",
    description: "Timeout of each outbound call to another service, in milliseconds.",
    parse: scalar(integer(1, 600000)),
  }),
  OUTBOUND_MAX_ATTEMPTS: defineKey({
    name: "OUTBOUND_MAX_ATTEMPTS",
    section: "services",
    type: "integer 1..10",
    default: "3",
    description:
      "Attempts of an outbound call that may be repeated (GET, HEAD, PUT, DELETE, or one carrying an Idempotency-Key) when it fails to connect, times out or gets 429, 502, 503 or 504; 1: no retry.",
    parse: scalar(integer(1, 10)),
  }),
  OUTBOUND_RETRY_BASE_DELAY_MS: defineKey({
    name: "OUTBOUND_RETRY_BASE_DELAY_MS",
    section: "services",
    type: "integer 1..60000",
    default: "100",
    description:
      "First wait before an outbound retry, in milliseconds; it grows exponentially, with jitter.",
    parse: scalar(integer(1, 60_000)),
  }),
  OUTBOUND_RETRY_MAX_DELAY_MS: defineKey({
    name: "OUTBOUND_RETRY_MAX_DELAY_MS",
    section: "services",
    type: "integer 1..300000",
    default: "2000",
    description: "Longest wait between two outbound attempts, in milliseconds.",
    parse: scalar(integer(1, 300_000)),
  }),
  OUTBOUND_BREAKER_THRESHOLD: defineKey({
    name: "OUTBOUND_BREAKER_THRESHOLD",
    section: "services",
    type: "integer 1..1000",
    default: "5",
    description:
      "Consecutive failed attempts (no connection, timeout, 5xx) to one origin that open its circuit: calls to it then fail at once.",
    parse: scalar(integer(1, 1000)),
  }),
  OUTBOUND_BREAKER_HALF_OPEN_MS: defineKey({
    name: "OUTBOUND_BREAKER_HALF_OPEN_MS",
    section: "services",
    type: "integer 100..3600000",
    default: "10000",
    description:
      "How long an open circuit stays open before one trial call is let through (success closes it), in milliseconds.",
    parse: scalar(integer(100, 3_600_000)),
  }),
  OUTBOUND_ALLOW: defineKey({
    name: "OUTBOUND_ALLOW",
    section: "services",
    type: "comma-separated host names, *.suffix, IP addresses or CIDRs (or a YAML list)",
    default: "",
    description:
      "Where outbound calls (health probes, OpenAPI polls, workflow steps, jobs) may go, checked on each resolved address and on every redirect: a name listed (`*.example.com` matches its sub-domains), or an address in a listed CIDR. Empty: anywhere; loopback and private ranges stay allowed (tests and in-cluster services use them). Always refused unless an address or CIDR inside them is listed (a broad `0.0.0.0/0` does not count): link-local and metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254, their IPv4-mapped and NAT64 forms) and 0.0.0.0/8, `::`. A refused call fails with 400 (FAILED_PRECONDITION), is not retried and does not count against the circuit breaker.",
    parse: allowList,
    show: showList,
  }),
  ORCHESTRATOR_PEERS: defineKey({
    name: "ORCHESTRATOR_PEERS",
    section: "orchestrator",
    type: "comma-separated http(s) URLs (or a YAML list)",
    default: "",
    description: "Other orchestrators to replicate with; empty means this one runs alone.",
    parse: peerList,
    show: showList,
  }),
  SCHEDULED_JOBS: defineKey({
    name: "SCHEDULED_JOBS",
    section: "orchestrator",
    type: "job=cron entries separated by ; (or a YAML list)",
    default: "",
    description:
      "Jobs run on a schedule (cron: five fields, or six with seconds first), each firing run once across the orchestrators sharing a Redis; shown in /info. Jobs: recalc-quality, notify-consolidation.",
    parse: scheduleList,
    show: (value) => value.map((s) => `${s.job}=${s.cron}`).join("; "),
  }),
  WORKFLOW_LEASE_MS: defineKey({
    name: "WORKFLOW_LEASE_MS",
    section: "orchestrator",
    type: "integer 100..3600000",
    default: "15000",
    description:
      "How long a workflow run's lease lasts, in milliseconds: renewed every third of it while the run executes; every this long a node takes over the unfinished runs whose lease expired.",
    parse: scalar(integer(100, 3_600_000)),
  }),
  WORKFLOW_MAX_RUNNING: defineKey({
    name: "WORKFLOW_MAX_RUNNING",
    section: "orchestrator",
    type: "integer 1..100000",
    default: "256",
    description:
      "Workflow runs this node executes at once (their steps in flight); more wait for a slot, in order.",
    parse: scalar(integer(1, 100_000)),
  }),
  WORKFLOW_MAX_WAITING: defineKey({
    name: "WORKFLOW_MAX_WAITING",
    section: "orchestrator",
    type: "integer 0..1000000",
    default: "10000",
    description:
      "Accepted workflow runs waiting for a slot on this node; a start beyond them is 429 / RESOURCE_EXHAUSTED (the run is not created).",
    parse: scalar(integer(0, 1_000_000)),
  }),
  NODE_ID: defineKey({
    name: "NODE_ID",
    section: "orchestrator",
    type: "1..128 of [A-Za-z0-9._:-], or empty",
    default: "",
    description: "This node's id among its peers; empty means generated at start.",
    parse: scalar(
      pattern(/^[A-Za-z0-9._:-]{1,128}$/, "is not 1 to 128 of A-Z a-z 0-9 . _ : -", true),
    ),
  }),
  ENVIRONMENT: defineKey({
    name: "ENVIRONMENT",
    section: "orchestrator",
    type: "1..64 of [A-Za-z0-9._-]",
    default: "development",
    description: "Deployment environment name, reported in health and telemetry.",
    parse: scalar(pattern(/^[A-Za-z0-9._-]{1,64}$/, "is not 1 to 64 of A-Z a-z 0-9 . _ -", false)),
  }),
  EVENT_LOG_SIZE: defineKey({
    name: "EVENT_LOG_SIZE",
    section: "orchestrator",
    type: "integer 10..1000000",
    default: "10000",
    description:
      "Recent events each node keeps in memory, followed from the store, for watchers and subscribers; a watcher further behind is cut off.",
    parse: scalar(integer(10, 1_000_000)),
  }),
  EVENT_LOG_BYTES: defineKey({
    name: "EVENT_LOG_BYTES",
    section: "orchestrator",
    type: "integer 65536..1073741824",
    default: "8388608",
    description: "Bytes of those recent events (payload JSON plus 256 per event).",
    parse: scalar(integer(65_536, 1_073_741_824)),
  }),
  EVENT_RETENTION_MAX_EVENTS: defineKey({
    name: "EVENT_RETENTION_MAX_EVENTS",
    section: "orchestrator",
    type: "integer 10..100000000",
    default: "100000",
    description:
      "Events the event store keeps; the oldest go first (on Redis, trimmed by whole stream nodes: up to 100 more).",
    parse: scalar(integer(10, 100_000_000)),
  }),
  EVENT_RETENTION_MAX_AGE_MS: defineKey({
    name: "EVENT_RETENTION_MAX_AGE_MS",
    section: "orchestrator",
    type: "integer 0..31536000000",
    default: "604800000",
    description:
      "How long the event store keeps an event, in milliseconds (0: no age limit); older events are no longer read and are removed within 10 s.",
    parse: scalar(integer(0, 31_536_000_000)),
  }),
  EVENT_STORE_MAX_BYTES: defineKey({
    name: "EVENT_STORE_MAX_BYTES",
    section: "orchestrator",
    type: "integer 1048576..17179869184",
    default: "33554432",
    description:
      "Bytes of events the in-memory event store keeps (payload JSON plus 256 per event); the oldest go first. Not used on Redis.",
    parse: scalar(integer(1_048_576, 17_179_869_184)),
  }),
  EVENT_MAX_PAYLOAD_BYTES: defineKey({
    name: "EVENT_MAX_PAYLOAD_BYTES",
    section: "orchestrator",
    type: "integer 256..1048576",
    default: "16384",
    description:
      "Largest event payload, as JSON, in bytes; a larger one is stored as {truncated: true, payload_bytes} and counted.",
    parse: scalar(integer(256, 1_048_576)),
  }),
  EVENT_OUTBOX_SIZE: defineKey({
    name: "EVENT_OUTBOX_SIZE",
    section: "orchestrator",
    type: "integer 10..1000000",
    default: "10000",
    description:
      "Events waiting for the event store (while it is unreachable) at most; beyond, the oldest are dropped and counted.",
    parse: scalar(integer(10, 1_000_000)),
  }),
  EVENT_OUTBOX_BYTES: defineKey({
    name: "EVENT_OUTBOX_BYTES",
    section: "orchestrator",
    type: "integer 65536..1073741824",
    default: "8388608",
    description:
      "Bytes of events waiting for the event store at most; beyond, as EVENT_OUTBOX_SIZE.",
    parse: scalar(integer(65_536, 1_073_741_824)),
  }),
  SAGA_RETENTION_MS: defineKey({
    name: "SAGA_RETENTION_MS",
    section: "orchestrator",
    type: "integer 0..31536000000",
    default: "604800000",
    description: "How long a finished saga is kept, in milliseconds; then it is forgotten.",
    parse: scalar(integer(0, 31_536_000_000)),
  }),
  SAGA_MAX_FINISHED: defineKey({
    name: "SAGA_MAX_FINISHED",
    section: "orchestrator",
    type: "integer 1..10000000",
    default: "10000",
    description:
      "Finished sagas kept at most; beyond them the oldest finished are forgotten before SAGA_RETENTION_MS.",
    parse: scalar(integer(1, 10_000_000)),
  }),
  SAGA_STORE_MAX_BYTES: defineKey({
    name: "SAGA_STORE_MAX_BYTES",
    section: "orchestrator",
    type: "integer 1048576..4294967296",
    default: "67108864",
    description:
      "Bytes of all stored sagas (strings and outputs, plus 512 per saga and 128 per step); the oldest finished make room, and a write that grows running sagas past it is refused (429).",
    parse: scalar(integer(1_048_576, 4_294_967_296)),
  }),
  SAGA_MAX_BYTES: defineKey({
    name: "SAGA_MAX_BYTES",
    section: "orchestrator",
    type: "integer 4096..67108864",
    default: "1048576",
    description:
      "Bytes of one saga, counted as for SAGA_STORE_MAX_BYTES; a saga or step output that would take it past is refused (400).",
    parse: scalar(integer(4096, 67_108_864)),
  }),
  SAGA_MAX_STEPS: defineKey({
    name: "SAGA_MAX_STEPS",
    section: "orchestrator",
    type: "integer 1..1000",
    default: "256",
    description: "Steps of one saga at most.",
    parse: scalar(integer(1, 1000)),
  }),
  SAGA_MAX_OUTPUT_BYTES: defineKey({
    name: "SAGA_MAX_OUTPUT_BYTES",
    section: "orchestrator",
    type: "integer 0..16777216",
    default: "65536",
    description: "Bytes of one step's output, as JSON, at most.",
    parse: scalar(integer(0, 16_777_216)),
  }),
  HEALTH_CHECK_INTERVAL_MS: defineKey({
    name: "HEALTH_CHECK_INTERVAL_MS",
    section: "registry",
    type: "integer 100..3600000",
    default: "10000",
    description: "How often every registered service's health URL is probed, in milliseconds.",
    parse: scalar(integer(100, 3_600_000)),
  }),
  HEALTH_CHECK_TIMEOUT_MS: defineKey({
    name: "HEALTH_CHECK_TIMEOUT_MS",
    section: "registry",
    type: "integer 10..60000",
    default: "2000",
    description: "Time a health probe may take before it counts as a failure, in milliseconds.",
    parse: scalar(integer(10, 60_000)),
  }),
  HEALTH_CHECK_FAILURE_THRESHOLD: defineKey({
    name: "HEALTH_CHECK_FAILURE_THRESHOLD",
    section: "registry",
    type: "integer 1..100",
    default: "3",
    description: "Consecutive failed probes that turn a service UNHEALTHY.",
    parse: scalar(integer(1, 100)),
  }),
  HEALTH_CHECK_SUCCESS_THRESHOLD: defineKey({
    name: "HEALTH_CHECK_SUCCESS_THRESHOLD",
    section: "registry",
    type: "integer 1..100",
    default: "1",
    description: "Consecutive successful probes that turn a service HEALTHY.",
    parse: scalar(integer(1, 100)),
  }),
  HEALTH_CHECK_CONCURRENCY: defineKey({
    name: "HEALTH_CHECK_CONCURRENCY",
    section: "registry",
    type: "integer 1..1000",
    default: "16",
    description: "Health probes in flight at once.",
    parse: scalar(integer(1, 1000)),
  }),
  LEASE_GRACE_MS: defineKey({
    name: "LEASE_GRACE_MS",
    section: "registry",
    type: "integer 0..86400000",
    default: "30000",
    description: "How long an entry whose lease ran out stays DOWN before it is removed.",
    parse: scalar(integer(0, 86_400_000)),
  }),
  TOMBSTONE_RETENTION_MS: defineKey({
    name: "TOMBSTONE_RETENTION_MS",
    section: "registry",
    type: "integer 0..2592000000",
    default: "3600000",
    description:
      "How long the tombstone of a removed entry is kept, so that the delete replicates.",
    parse: scalar(integer(0, 2_592_000_000)),
  }),
  REGISTRY_MAX_ENTRIES: defineKey({
    name: "REGISTRY_MAX_ENTRIES",
    section: "registry",
    type: "integer 1..10000000",
    default: "100000",
    description:
      "Live registry entries at most; a registration of a new name beyond them is refused (429).",
    parse: scalar(integer(1, 10_000_000)),
  }),
  REGISTRY_MAX_BYTES: defineKey({
    name: "REGISTRY_MAX_BYTES",
    section: "registry",
    type: "integer 1048576..4294967296",
    default: "67108864",
    description:
      "Bytes of live registry entries at most (declared strings plus 512 per entry); a registration that would grow past it is refused (429).",
    parse: scalar(integer(1_048_576, 4_294_967_296)),
  }),
  REGISTRY_MAX_TOMBSTONES: defineKey({
    name: "REGISTRY_MAX_TOMBSTONES",
    section: "registry",
    type: "integer 1..10000000",
    default: "100000",
    description:
      "Tombstones kept at most; beyond them the oldest are forgotten before TOMBSTONE_RETENTION_MS.",
    parse: scalar(integer(1, 10_000_000)),
  }),
  REGISTRY_CHANGE_LOG_SIZE: defineKey({
    name: "REGISTRY_CHANGE_LOG_SIZE",
    section: "registry",
    type: "integer 10..1000000",
    default: "10000",
    description: "Registry changes kept so that watchers and peers can resume without a snapshot.",
    parse: scalar(integer(10, 1_000_000)),
  }),
  REGISTRY_CHANGE_LOG_BYTES: defineKey({
    name: "REGISTRY_CHANGE_LOG_BYTES",
    section: "registry",
    type: "integer 65536..1073741824",
    default: "33554432",
    description:
      "Bytes of registry changes kept (in memory, and in Redis when used); the oldest go first.",
    parse: scalar(integer(65_536, 1_073_741_824)),
  }),
  WATCH_QUEUE_SIZE: defineKey({
    name: "WATCH_QUEUE_SIZE",
    section: "registry",
    type: "integer 10..1000000",
    default: "10000",
    description:
      "Changes a watcher or peer may fall behind by before it is cut off (and told to resume).",
    parse: scalar(integer(10, 1_000_000)),
  }),
  OPENAPI_MAX_BYTES: defineKey({
    name: "OPENAPI_MAX_BYTES",
    section: "registry",
    type: "integer 1024..67108864",
    default: "5242880",
    description: "Largest OpenAPI document fetched, in bytes.",
    parse: scalar(integer(1024, 67_108_864)),
  }),
  OPENAPI_CONCURRENCY: defineKey({
    name: "OPENAPI_CONCURRENCY",
    section: "registry",
    type: "integer 1..64",
    default: "4",
    description: "OpenAPI documents fetched and analysed at once, by all polls together.",
    parse: scalar(integer(1, 64)),
  }),
  OPENAPI_MAX_OPERATIONS: defineKey({
    name: "OPENAPI_MAX_OPERATIONS",
    section: "registry",
    type: "integer 1..1000000",
    default: "10000",
    description: "Operations an OpenAPI document may have; a poll refuses a document with more.",
    parse: scalar(integer(1, 1_000_000)),
  }),
  OPENAPI_MAX_BASELINE_BYTES: defineKey({
    name: "OPENAPI_MAX_BASELINE_BYTES",
    section: "registry",
    type: "integer 4096..67108864",
    default: "1048576",
    description:
      "Bytes one service's stored OpenAPI baseline (compressed summary) may take; a poll refuses a document whose summary is larger.",
    parse: scalar(integer(4096, 67_108_864)),
  }),
  OPENAPI_BASELINES_MAX_BYTES: defineKey({
    name: "OPENAPI_BASELINES_MAX_BYTES",
    section: "registry",
    type: "integer 1048576..4294967296",
    default: "67108864",
    description:
      "Bytes all stored OpenAPI baselines may take together (in memory, or in Redis); a poll whose baseline would go past it keeps the previous one.",
    parse: scalar(integer(1_048_576, 4_294_967_296)),
  }),
  OPENAPI_WORKERS: defineKey({
    name: "OPENAPI_WORKERS",
    section: "registry",
    type: "integer 1..16",
    default: "1",
    description:
      "Worker threads that parse and diff OpenAPI documents, off the event loop; started at the first poll.",
    parse: scalar(integer(1, 16)),
  }),
  DLQ_RETRY_BASE_DELAY_MS: defineKey({
    name: "DLQ_RETRY_BASE_DELAY_MS",
    section: "dlq",
    type: "integer 1..3600000",
    default: "1000",
    description:
      "Ceiling of the wait before a dead-lettered entry's first retry, in milliseconds; it doubles with every attempt (full jitter: the wait is drawn from 0 to the ceiling).",
    parse: scalar(integer(1, 3_600_000)),
  }),
  DLQ_RETRY_MAX_DELAY_MS: defineKey({
    name: "DLQ_RETRY_MAX_DELAY_MS",
    section: "dlq",
    type: "integer 1..86400000",
    default: "300000",
    description: "The retry wait's ceiling never grows past this, in milliseconds.",
    parse: scalar(integer(1, 86_400_000)),
  }),
  DLQ_MAX_ATTEMPTS: defineKey({
    name: "DLQ_MAX_ATTEMPTS",
    section: "dlq",
    type: "integer 0..100",
    default: "5",
    description:
      "Automatic retries of a dead-lettered entry (unless its capability says otherwise) before it is DEAD; 0: DEAD at once.",
    parse: scalar(integer(0, 100)),
  }),
  DLQ_RETRY_CONCURRENCY: defineKey({
    name: "DLQ_RETRY_CONCURRENCY",
    section: "dlq",
    type: "integer 1..1000",
    default: "32",
    description:
      "Retries of dead-lettered entries running at once on this node, automatic and by hand.",
    parse: scalar(integer(1, 1000)),
  }),
  DLQ_RETRY_TIMEOUT_MS: defineKey({
    name: "DLQ_RETRY_TIMEOUT_MS",
    section: "dlq",
    type: "integer 100..3600000",
    default: "30000",
    description:
      "How long one retry may run before it counts as failed; a claim expires after twice this, when its node died.",
    parse: scalar(integer(100, 3_600_000)),
  }),
  DLQ_POLL_INTERVAL_MS: defineKey({
    name: "DLQ_POLL_INTERVAL_MS",
    section: "dlq",
    type: "integer 10..600000",
    default: "1000",
    description: "How often due entries and expired claims are looked for, in milliseconds.",
    parse: scalar(integer(10, 600_000)),
  }),
  DLQ_MAX_PAYLOAD_BYTES: defineKey({
    name: "DLQ_MAX_PAYLOAD_BYTES",
    section: "dlq",
    type: "integer 1024..1048576",
    default: "65536",
    description: "Largest payload of a dead-lettered entry, as JSON; a larger one is refused.",
    parse: scalar(integer(1024, 1_048_576)),
  }),
  DLQ_MAX_ENTRIES: defineKey({
    name: "DLQ_MAX_ENTRIES",
    section: "dlq",
    type: "integer 1..10000000",
    default: "100000",
    description:
      "Dead-lettered entries kept at most, every state; when full the oldest RESOLVED go first, then an add is refused.",
    parse: scalar(integer(1, 10_000_000)),
  }),
  DLQ_MAX_BYTES: defineKey({
    name: "DLQ_MAX_BYTES",
    section: "dlq",
    type: "integer 4194304..4294967296",
    default: "67108864",
    description:
      "Bytes of dead-lettered entries kept at most (body JSON plus 1,536 each, in memory or in Redis); as DLQ_MAX_ENTRIES when full.",
    parse: scalar(integer(4_194_304, 4_294_967_296)),
  }),
  DLQ_RESOLVED_RETENTION_MS: defineKey({
    name: "DLQ_RESOLVED_RETENTION_MS",
    section: "dlq",
    type: "integer 0..2592000000",
    default: "86400000",
    description: "How long a RESOLVED entry is kept before it is forgotten, in milliseconds.",
    parse: scalar(integer(0, 2_592_000_000)),
  }),
  TRACING_ENABLED: defineKey({
    name: "TRACING_ENABLED",
    section: "tracing",
    type: "true or false",
    default: "true",
    description:
      "Record a server span for every call and a client span for every outbound HTTP call; false: none (spans others send are still kept).",
    parse: scalar(boolean),
  }),
  TRACING_SAMPLE_RATIO: defineKey({
    name: "TRACING_SAMPLE_RATIO",
    section: "tracing",
    type: "number 0..1",
    default: "1",
    description:
      "Share of the traces that start at this node which are recorded; a caller's traceparent decides for the traces it continues.",
    parse: scalar(ratio),
  }),
  TRACE_STORE_MAX_TRACES: defineKey({
    name: "TRACE_STORE_MAX_TRACES",
    section: "tracing",
    type: "integer 1..1000000",
    default: "10000",
    description: "Traces the node keeps for lookup at most; the oldest go first.",
    parse: scalar(integer(1, 1_000_000)),
  }),
  TRACE_STORE_MAX_BYTES: defineKey({
    name: "TRACE_STORE_MAX_BYTES",
    section: "tracing",
    type: "integer 1048576..4294967296",
    default: "33554432",
    description:
      "Bytes of spans the node keeps at most (320 per span plus two per character); the oldest traces go first.",
    parse: scalar(integer(1_048_576, 4_294_967_296)),
  }),
  TRACE_MAX_SPANS: defineKey({
    name: "TRACE_MAX_SPANS",
    section: "tracing",
    type: "integer 1..10000",
    default: "1000",
    description: "Spans kept per trace at most; later spans of a full trace are dropped.",
    parse: scalar(integer(1, 10_000)),
  }),
  OTEL_EXPORTER_OTLP_ENDPOINT: defineKey({
    name: "OTEL_EXPORTER_OTLP_ENDPOINT",
    section: "tracing",
    type: "http(s) URL or empty",
    default: "",
    description:
      "Base URL of an OTLP/HTTP collector (Jaeger, Tempo, an OpenTelemetry Collector): spans are also sent to its /v1/traces as JSON, in batches; empty means not used.",
    parse: scalar(httpUrl(true)),
  }),
  LOG_LEVEL: defineKey({
    name: "LOG_LEVEL",
    section: "logging",
    type: logLevels.join(" | "),
    default: "info",
    description: "Least severe level logged (any case accepted).",
    parse: scalar(logLevel),
  }),
  AUTH_TOKENS: defineKey({
    name: "AUTH_TOKENS",
    section: "security",
    type: "secret: role:token pairs",
    default: "",
    secret: true,
    description:
      "Bearer tokens and their roles, comma-separated `role:token` pairs; a role is viewer, operator, admin or service/<name>. Set (or OPERATOR_TOKEN set): every RPC but health and readiness needs a token.",
    parse: secretText,
  }),
  OPERATOR_TOKEN: defineKey({
    name: "OPERATOR_TOKEN",
    section: "security",
    type: "secret",
    default: "",
    secret: true,
    description: "A token of role operator, beside AUTH_TOKENS (the older way to turn auth on).",
    parse: secretText,
  }),
  PEER_TOKEN: defineKey({
    name: "PEER_TOKEN",
    section: "security",
    type: "secret",
    default: "",
    secret: true,
    description:
      "The peers' credential: the only token the replication calls take, and the one this node sends its peers. Unset with auth on: those calls are closed; unset with auth off: open.",
    parse: secretText,
  }),
  APP_CONFIG_PATH: defineKey({
    name: "APP_CONFIG_PATH",
    section: undefined,
    type: "path (env only)",
    default: "config/app.yaml",
    description: "The YAML file, relative to the working directory; a missing default is fine.",
    parse: scalar(nonEmptyPath),
  }),
});

/** The name of a configuration key. */
export type ConfigKeyName = keyof typeof configKey;

/** Every configuration key, in table order: the rows of the README table and `/config/effective`. */
export const configKeys: readonly ConfigKey<unknown>[] = Object.freeze(Object.values(configKey));
