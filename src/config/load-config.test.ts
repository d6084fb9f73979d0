import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConfigError, configKey, configKeys } from "./keys.js";
import { type ConfigSources, type LoadedConfig, loadConfig } from "./load-config.js";

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "orchestrator-config-"));
  mkdirSync(join(dir, "secrets"));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Loads with `yaml` (if given) at the default path, `<cwd>/config/app.yaml`. */
function load(env: Record<string, string> = {}, yaml?: string): LoadedConfig {
  if (yaml !== undefined) {
    mkdirSync(join(dir, "config"), { recursive: true });
    writeFileSync(join(dir, "config", "app.yaml"), yaml);
  }
  return loadConfig({ env, cwd: dir, secretsDir: join(dir, "secrets") });
}

function loadError(env: Record<string, string>, yaml?: string): ConfigError {
  try {
    load(env, yaml);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("expected a ConfigError");
}

function effectiveOf(loaded: LoadedConfig, key: string) {
  return loaded.effective.find((entry) => entry.key === key);
}

const defaultConfig = {
  port: 5099,
  host: "127.0.0.1",
  authTokens: [],
  bodyLimitBytes: 1048576,
  shutdownTimeoutMs: 10000,
  keepAliveTimeoutMs: 5000,
  shutdownKeepAliveMs: 1000,
  connectionLimits: {
    headerBytes: 16384,
    http2MaxConcurrentStreams: 1000,
    maxConnections: 10000,
    maxConnectionsPerClient: 256,
    maxWatches: 10000,
    maxWatchesPerClient: 256,
  },
  rateLimits: {
    roles: { viewer: 500, operator: 1000, admin: 1000, service: 200 },
    addressRps: 2000,
    exempt: ["127.0.0.0/8", "::1"],
  },
  reportingUrl: "http://reporting:5030",
  notificationUrl: "http://notification-service:5095",
  outboundTimeoutMs: 5000,
  schedules: [],
  workflows: [],
  workflowLeaseMs: 15_000,
  workflowMaxRunning: 256,
  workflowMaxWaiting: 10_000,
  outbound: {
    maxAttempts: 3,
    retryBaseDelayMs: 100,
    retryMaxDelayMs: 2000,
    breakerThreshold: 5,
    breakerHalfOpenMs: 10000,
    allow: [],
  },
  peers: [],
  environment: "development",
  events: {
    logSize: 10000,
    logBytes: 8388608,
    retentionMaxEvents: 100000,
    retentionMaxAgeMs: 604800000,
    storeMaxBytes: 33554432,
    maxPayloadBytes: 16384,
    outboxSize: 10000,
    outboxBytes: 8388608,
  },
  sagas: {
    retentionMs: 604800000,
    maxFinished: 10000,
    maxBytes: 67108864,
    maxSagaBytes: 1048576,
    maxSteps: 256,
    maxOutputBytes: 65536,
  },
  logLevel: "info",
  registry: {
    healthCheckIntervalMs: 10000,
    healthCheckTimeoutMs: 2000,
    healthCheckFailureThreshold: 3,
    healthCheckSuccessThreshold: 1,
    healthCheckConcurrency: 16,
    leaseGraceMs: 30000,
    tombstoneRetentionMs: 3600000,
    maxEntries: 100000,
    maxBytes: 67108864,
    maxTombstones: 100000,
    changeLogSize: 10000,
    changeLogBytes: 33554432,
    watchQueueSize: 10000,
    openapiMaxBytes: 5242880,
    openapiConcurrency: 4,
    openapiMaxOperations: 10000,
    openapiMaxBaselineBytes: 1048576,
    openapiBaselinesMaxBytes: 67108864,
    openapiWorkers: 1,
  },
  dlq: {
    baseDelayMs: 1000,
    maxDelayMs: 300000,
    maxAttempts: 5,
    concurrency: 32,
    retryTimeoutMs: 30000,
    pollIntervalMs: 1000,
    maxPayloadBytes: 65536,
    maxEntries: 100000,
    maxBytes: 67108864,
    resolvedRetentionMs: 86400000,
  },
  tracing: {
    enabled: true,
    sampleRatio: 1,
    maxTraces: 10000,
    maxBytes: 33554432,
    maxSpansPerTrace: 1000,
  },
};

const protectedModeWarning =
  "auth is off (neither AUTH_TOKENS nor OPERATOR_TOKEN is set): listening on 127.0.0.1 only; set HOST to listen elsewhere, and tokens to protect the API";

describe("protected mode", () => {
  it("listens on loopback only when no token is set and HOST is not", () => {
    const loaded = load();
    expect(loaded.config.host).toBe("127.0.0.1");
    expect(loaded.config.authTokens).toEqual([]);
    expect(loaded.warnings).toContain(protectedModeWarning);
  });

  it.each([
    ["HOST in env", { HOST: "0.0.0.0" }, undefined],
    ["HOST in the file", {}, "server:\n  host: 0.0.0.0\n"],
  ])("listens where %s says, even without tokens", (_, env, yaml) => {
    const loaded = load(env, yaml);
    expect(loaded.config.host).toBe("0.0.0.0");
    expect(loaded.warnings).not.toContain(protectedModeWarning);
  });

  it.each([
    ["AUTH_TOKENS", { AUTH_TOKENS: "viewer:v-s3cret" }],
    ["OPERATOR_TOKEN", { OPERATOR_TOKEN: "op-s3cret" }],
  ])("listens on the default HOST when %s is set", (_, env) => {
    const loaded = load(env);
    expect(loaded.config.host).toBe("0.0.0.0");
    expect(loaded.warnings).toEqual([]);
  });
});

describe("AUTH_TOKENS", () => {
  it.each([
    [{ AUTH_TOKENS: "admin:s3cret-a", OPERATOR_TOKEN: "s3cret-a" }, "OPERATOR_TOKEN"],
    [{ AUTH_TOKENS: "admin:s3cret-a", PEER_TOKEN: "s3cret-a" }, "PEER_TOKEN"],
    [{ OPERATOR_TOKEN: "s3cret-a", PEER_TOKEN: "s3cret-a" }, "PEER_TOKEN"],
    [{ AUTH_TOKENS: "boss:s3cret-a" }, "AUTH_TOKENS"],
  ])("refuses %j naming %s, without the token", (env, key) => {
    const error = loadError(env);
    expect(error.key).toBe(key);
    expect(error.message).not.toContain("s3cret");
  });

  it("reads AUTH_TOKENS_FILE", () => {
    writeFileSync(join(dir, "tokens"), "viewer:v1\n");
    expect(load({ AUTH_TOKENS_FILE: join(dir, "tokens") }).config.authTokens).toEqual([
      { role: { kind: "viewer" }, token: "v1" },
    ]);
  });
});

describe("loadConfig defaults", () => {
  it("uses every default when there is no env and no file", () => {
    const loaded = load();
    expect(loaded.config).toEqual({
      ...defaultConfig,
      configPath: join(dir, "config", "app.yaml"),
    });
    expect(loaded.warnings).toEqual([protectedModeWarning]);
    expect(loaded.effective.map((entry) => entry.key)).toEqual(configKeys.map((key) => key.name));
    expect(new Set(loaded.effective.map((entry) => entry.source))).toEqual(new Set(["default"]));
    expect(effectiveOf(loaded, "PORT")).toEqual({
      key: "PORT",
      value: "5099",
      source: "default",
      secret: false,
    });
    expect(effectiveOf(loaded, "REDIS_HOST")?.value).toBe("");
  });

  it("leaves optional fields absent rather than undefined", () => {
    const { config } = load();
    const optional = [
      ...["tls", "redis", "docStoreUrl", "secureAnalyzerUrl", "logCollectorUrl"],
      ...["githubAgentUrl", "jiraAgentUrl", "confluenceAgentUrl", "swaggerAgentUrl"],
      ...["consistencyEngineUrl", "nodeId", "operatorToken", "peerToken"],
    ];
    for (const field of optional) expect(Object.hasOwn(config, field), field).toBe(false);
  });

  it("does not modify the caller's sources", () => {
    const sources: Partial<ConfigSources> = Object.freeze({
      env: Object.freeze({ PORT: "6000" }),
      cwd: dir,
      secretsDir: join(dir, "secrets"),
    });
    expect(loadConfig(sources).config.port).toBe(6000);
    expect(sources).toEqual({ env: { PORT: "6000" }, cwd: dir, secretsDir: join(dir, "secrets") });
  });
});

describe("loadConfig precedence", () => {
  const yaml = [
    "server:",
    "  PORT: 6000",
    "  shutdown_timeout_ms: 2000",
    "services:",
    "  reporting_url: http://reporting.internal:8080/",
    "logging:",
    "  log_level: debug",
    "ENVIRONMENT: staging",
  ].join("\n");

  it("takes env over file over default, and reports the source of each", () => {
    const loaded = load({ PORT: "7000", LOG_LEVEL: "WARN" }, yaml);
    expect(loaded.config.port).toBe(7000);
    expect(loaded.config.shutdownTimeoutMs).toBe(2000);
    expect(loaded.config.reportingUrl).toBe("http://reporting.internal:8080");
    expect(loaded.config.logLevel).toBe("warn");
    expect(loaded.config.environment).toBe("staging");
    expect(loaded.config.notificationUrl).toBe("http://notification-service:5095");
    const sources = Object.fromEntries(loaded.effective.map((entry) => [entry.key, entry.source]));
    expect(sources).toMatchObject({
      PORT: "env",
      SHUTDOWN_TIMEOUT_MS: "file",
      REPORTING_URL: "file",
      LOG_LEVEL: "env",
      ENVIRONMENT: "file",
      NOTIFICATION_URL: "default",
      APP_CONFIG_PATH: "default",
    });
    expect(effectiveOf(loaded, "REPORTING_URL")?.value).toBe("http://reporting.internal:8080");
  });

  it("uses the file when env does not set the key", () => {
    expect(load({}, yaml).config.port).toBe(6000);
  });

  it("reads the file named by APP_CONFIG_PATH, relative to cwd", () => {
    writeFileSync(join(dir, "other.yaml"), "server:\n  port: 6100\n");
    const loaded = load({ APP_CONFIG_PATH: "other.yaml" });
    expect(loaded.config.port).toBe(6100);
    expect(loaded.config.configPath).toBe(join(dir, "other.yaml"));
    expect(effectiveOf(loaded, "APP_CONFIG_PATH")).toMatchObject({
      value: join(dir, "other.yaml"),
      source: "env",
    });
  });

  it("reads the tracing section, the endpoint without its trailing slash", () => {
    const yaml =
      "tracing:\n  tracing_enabled: FALSE\n  tracing_sample_ratio: 0.25\n  otel_exporter_otlp_endpoint: http://collector:4318/\n";
    expect(load({}, yaml).config.tracing).toEqual({
      ...defaultConfig.tracing,
      enabled: false,
      sampleRatio: 0.25,
      otlpEndpoint: "http://collector:4318",
    });
  });

  it("reads the agents' and the engine's URLs from services:, without a trailing slash", () => {
    const yaml = [
      "services:",
      "  github_agent_url: http://github-agent:5000/",
      "  JIRA_AGENT_URL: https://jira-agent.internal",
      "  confluence_agent_url: http://confluence-agent:5002",
      "  swagger_agent_url: http://swagger-agent:5003/v1",
      "  consistency_engine_url: http://consistency-engine:5020",
    ].join("\n");
    const loaded = load({ SWAGGER_AGENT_URL: "" }, yaml);
    expect(loaded.config).toMatchObject({
      githubAgentUrl: "http://github-agent:5000",
      jiraAgentUrl: "https://jira-agent.internal",
      confluenceAgentUrl: "http://confluence-agent:5002",
      consistencyEngineUrl: "http://consistency-engine:5020",
    });
    // An empty env value clears the file's, leaving the field absent.
    expect(Object.hasOwn(loaded.config, "swaggerAgentUrl")).toBe(false);
    expect(effectiveOf(loaded, "GITHUB_AGENT_URL")).toMatchObject({
      value: "http://github-agent:5000",
      source: "file",
    });
    expect(effectiveOf(loaded, "SWAGGER_AGENT_URL")).toMatchObject({ value: "", source: "env" });
  });

  it("reads scheduled jobs from env (; between entries) and from a YAML list", () => {
    expect(
      load({ SCHEDULED_JOBS: "recalc-quality=*/15 * * * *; notify-consolidation=0 9 * * 1-5" })
        .config.schedules,
    ).toEqual([
      { job: "recalc-quality", cron: "*/15 * * * *" },
      { job: "notify-consolidation", cron: "0 9 * * 1-5" },
    ]);
    const yaml = "orchestrator:\n  scheduled_jobs:\n    - recalc-quality=0 */6 * * *\n";
    expect(load({}, yaml).config.schedules).toEqual([
      { job: "recalc-quality", cron: "0 */6 * * *" },
    ]);
  });

  it("reads workflows from the file, beside the built-in ones", () => {
    const yaml = [
      "workflows:",
      "  - name: security_scan",
      "    sources: [github]",
      "    steps:",
      '      - {name: scan, target: "{source}-agent", action: POST /scan, per_source: true}',
      "      - {name: report, target: reporting, action: POST /reports/generate, group: 1, max_attempts: 1}",
      "",
    ].join("\n");
    const [workflow] = load({}, yaml).config.workflows;
    expect(workflow).toMatchObject({
      name: "security_scan",
      description: "",
      sources: ["github"],
      steps: [
        {
          name: "scan",
          target: "{source}-agent",
          action: { method: "POST", path: "/scan" },
          group: 0,
          perSource: true,
          timeoutMs: 30000,
          maxAttempts: 3,
        },
        { name: "report", target: "reporting", group: 1, perSource: false, maxAttempts: 1 },
      ],
    });
  });

  it.each([
    ["workflows: 3\n", "workflows from file (workflows): is not a list of workflows"],
    [
      "workflows:\n  - {name: ingestion, steps: [{name: a, target: b, action: POST /a}]}\n",
      'file (workflows[0].name): "ingestion" is already defined',
    ],
    [
      "workflows:\n  - {name: w, steps: [{name: a, target: b, action: FETCH /a}]}\n",
      "file (workflows[0].steps[0].action): is not",
    ],
    [
      "workflows:\n  - {name: w, steps: [{name: a, target: b, action: POST /a, retries: 2}]}\n",
      "file (workflows[0].steps[0].retries): is not a known field",
    ],
    [
      "workflows:\n  - {name: w, steps: [{name: a, target: b, action: POST /a, timeout_ms: 0}]}\n",
      'step "a": timeout_ms is not 1..3600000',
    ],
  ])("refuses the workflows of %j, saying where", (yaml, message) => {
    const error = loadError({}, yaml);
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toContain(message);
  });

  it("accepts an empty file and empty sections", () => {
    expect(load({}, "# nothing yet\n").config.port).toBe(5099);
    expect(load({}, "server:\nredis:\n").config.port).toBe(5099);
  });
});

describe("RATE_LIMIT_*", () => {
  it("sets the roles named and keeps the others' defaults", () => {
    const loaded = load({ RATE_LIMIT_ROLES: "viewer:5, service:0" });
    expect(loaded.config.rateLimits.roles).toEqual({
      viewer: 5,
      operator: 1000,
      admin: 1000,
      service: 0,
    });
    expect(effectiveOf(loaded, "RATE_LIMIT_ROLES")).toMatchObject({
      value: "viewer:5,operator:1000,admin:1000,service:0",
      source: "env",
    });
  });

  it.each([
    ["an unknown role", "root:5"],
    ["a negative rate", "viewer:-1"],
    ["no rate", "viewer"],
    ["a rate past the ceiling", "viewer:1000001"],
    ["a role twice", "viewer:1,viewer:2"],
  ])("refuses %s", (_, value) => {
    const error = loadError({ RATE_LIMIT_ROLES: value });
    expect(error.key).toBe("RATE_LIMIT_ROLES");
  });

  it("reads exempt addresses as a YAML list, and refuses what is not an IP or CIDR", () => {
    const yaml = "server:\n  rate_limit_exempt: [10.0.0.0/8, 'fd00::/8', 192.168.1.7]\n";
    expect(load({}, yaml).config.rateLimits.exempt).toEqual([
      "10.0.0.0/8",
      "fd00::/8",
      "192.168.1.7",
    ]);
    expect(load({ RATE_LIMIT_EXEMPT: "" }).config.rateLimits.exempt).toEqual([]);
    for (const bad of ["localhost", "10.0.0.0/33", "::1/129", "10.0.0.0/8/1", "1.2.3"]) {
      expect(loadError({ RATE_LIMIT_EXEMPT: bad }).key).toBe("RATE_LIMIT_EXEMPT");
    }
  });
});

describe("ORCHESTRATOR_PEERS", () => {
  it("reads a YAML list under orchestrator:", () => {
    const yaml =
      "orchestrator:\n  orchestrator_peers:\n    - http://a:5099/\n    - ' https://b '\n";
    const loaded = load({}, yaml);
    expect(loaded.config.peers).toEqual(["http://a:5099", "https://b"]);
    expect(effectiveOf(loaded, "ORCHESTRATOR_PEERS")).toMatchObject({
      value: "http://a:5099,https://b",
      source: "file",
    });
  });

  it("reads a comma-separated string from the file, dropping empty entries", () => {
    const yaml = "orchestrator:\n  ORCHESTRATOR_PEERS: 'http://a:5099, ,http://b:5099/,'\n";
    expect(load({}, yaml).config.peers).toEqual(["http://a:5099", "http://b:5099"]);
  });

  it("lets env override the file, and an empty env clear it", () => {
    const yaml = "orchestrator:\n  orchestrator_peers: [http://a:5099]\n";
    expect(load({ ORCHESTRATOR_PEERS: "http://c:1" }, yaml).config.peers).toEqual(["http://c:1"]);
    const cleared = load({ ORCHESTRATOR_PEERS: "" }, yaml);
    expect(cleared.config.peers).toEqual([]);
    expect(effectiveOf(cleared, "ORCHESTRATOR_PEERS")).toMatchObject({ value: "", source: "env" });
  });

  it("refuses duplicates, also when spelled differently", () => {
    const error = loadError({ ORCHESTRATOR_PEERS: "http://a:5099,http://A:5099/" });
    expect(error.key).toBe("ORCHESTRATOR_PEERS");
    expect(error.message).toBe('ORCHESTRATOR_PEERS from env: "http://A:5099/" is listed twice');
  });

  it("refuses an entry that is not an http(s) URL", () => {
    const yaml = "orchestrator:\n  orchestrator_peers:\n    - http://a\n    - ftp://b\n";
    const error = loadError({}, yaml);
    expect(error.source).toBe("file");
    expect(error.message).toContain(
      "ORCHESTRATOR_PEERS from file (orchestrator.orchestrator_peers)",
    );
    expect(error.message).toContain('"ftp://b"');
  });
});

describe("OUTBOUND_ALLOW", () => {
  it("reads a comma-separated list from env, dropping empty entries", () => {
    const loaded = load({ OUTBOUND_ALLOW: " *.svc.local, ,10.0.0.0/8,fd00::/8,api.example.com," });
    expect(loaded.config.outbound.allow).toEqual([
      "*.svc.local",
      "10.0.0.0/8",
      "fd00::/8",
      "api.example.com",
    ]);
    expect(effectiveOf(loaded, "OUTBOUND_ALLOW")).toMatchObject({
      value: "*.svc.local,10.0.0.0/8,fd00::/8,api.example.com",
      source: "env",
    });
  });

  it("reads a YAML list under services:", () => {
    const yaml = "services:\n  outbound_allow:\n    - 169.254.169.254\n    - '*.internal'\n";
    expect(load({}, yaml).config.outbound.allow).toEqual(["169.254.169.254", "*.internal"]);
  });

  it.each([
    ["http://api.example.com", "is not a host name, *.suffix, IP address or CIDR"],
    ["10.0.0.0/33", "is not a CIDR (an IP address, /, a prefix length)"],
    ["*.", "is not *. followed by a host name"],
  ])("refuses %j at start, naming the entry", (entry, problem) => {
    const error = loadError({ OUTBOUND_ALLOW: `10.0.0.0/8,${entry}` });
    expect(error.key).toBe("OUTBOUND_ALLOW");
    expect(error.message).toBe(`OUTBOUND_ALLOW from env: ${JSON.stringify(entry)} ${problem}`);
  });
});

describe("invalid values", () => {
  it.each([
    [{ PORT: "abc" }, "PORT", 'PORT from env: "abc" is not an integer between 0 and 65535'],
    [{ PORT: "80.5" }, "PORT", "is not an integer between 0 and 65535"],
    [{ PORT: "-1" }, "PORT", "is not an integer between 0 and 65535"],
    [{ BODY_LIMIT_BYTES: "100" }, "BODY_LIMIT_BYTES", "between 1024 and 67108864"],
    [{ HOST: "my host" }, "HOST", "is not a host"],
    [{ REPORTING_URL: "http//reporting" }, "REPORTING_URL", "is not a URL"],
    [{ REPORTING_URL: "ftp://reporting" }, "REPORTING_URL", "has the wrong scheme"],
    [{ DOC_STORE_URL: "http://docs\t:80" }, "DOC_STORE_URL", "contains whitespace"],
    [{ GITHUB_AGENT_URL: "github-agent:5000" }, "GITHUB_AGENT_URL", "has the wrong scheme"],
    [
      { CONSISTENCY_ENGINE_URL: "http://user:pw@engine" },
      "CONSISTENCY_ENGINE_URL",
      "contains credentials",
    ],
    [{ REDIS_URL: "http://redis:6379" }, "REDIS_URL", "expected a URL with scheme redis:"],
    [{ REDIS_CLUSTER_NODES: "redis-1" }, "REDIS_CLUSTER_NODES", "is not host:port"],
    [{ REDIS_CLUSTER_NODES: "redis-1:0" }, "REDIS_CLUSTER_NODES", "is not host:port"],
    [{ REDIS_CLUSTER_NODES: "a:1,a:1" }, "REDIS_CLUSTER_NODES", "is listed twice"],
    [
      { REDIS_CLUSTER_NODES: "redis-1:7000", REDIS_HOST: "redis" },
      "REDIS_HOST",
      "and so is REDIS_CLUSTER_NODES; set one of them",
    ],
    [{ LOG_LEVEL: "verbose" }, "LOG_LEVEL", 'LOG_LEVEL from env: "verbose" is not a log level'],
    [{ NODE_ID: "node 1" }, "NODE_ID", "is not 1 to 128"],
    [{ ENVIRONMENT: "" }, "ENVIRONMENT", "is not 1 to 64"],
    [{ APP_CONFIG_PATH: "" }, "APP_CONFIG_PATH", "is empty"],
    [
      { TRACING_ENABLED: "yes" },
      "TRACING_ENABLED",
      'TRACING_ENABLED from env: "yes" is not true or false',
    ],
    [{ TRACING_SAMPLE_RATIO: "1.5" }, "TRACING_SAMPLE_RATIO", "is not a number from 0 to 1"],
    [{ TRACING_SAMPLE_RATIO: "-0.1" }, "TRACING_SAMPLE_RATIO", "is not a number from 0 to 1"],
    [{ TRACING_SAMPLE_RATIO: "0x1" }, "TRACING_SAMPLE_RATIO", "is not a number from 0 to 1"],
    [{ TRACE_STORE_MAX_BYTES: "1000" }, "TRACE_STORE_MAX_BYTES", "between 1048576 and 4294967296"],
    [
      { OTEL_EXPORTER_OTLP_ENDPOINT: "grpc://collector:4317" },
      "OTEL_EXPORTER_OTLP_ENDPOINT",
      "has the wrong scheme",
    ],
  ])("refuses %j", (env, key, message) => {
    const error = loadError(env);
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.key).toBe(key);
    expect(error.source).toBe("env");
    expect(error.message).toContain(`${key} from env`);
    expect(error.message).toContain(message);
  });

  it("refuses PORT 70000 from the file, naming where in the file", () => {
    const error = loadError({}, "server:\n  port: 70000\n");
    expect(error.key).toBe("PORT");
    expect(error.source).toBe("file");
    expect(error.message).toBe(
      'PORT from file (server.port): "70000" is not an integer between 0 and 65535',
    );
  });

  it("refuses a list for a single-valued key", () => {
    const error = loadError({}, "server:\n  port: [1, 2]\n");
    expect(error.message).toBe(
      "PORT from file (server.port): a list was given; expected one value",
    );
  });

  it("refuses credentials in an http(s) URL without echoing them", () => {
    const error = loadError({ NOTIFICATION_URL: "http://admin:hunter2@notify:5095" });
    expect(error.key).toBe("NOTIFICATION_URL");
    expect(error.message).toContain("contains credentials");
    expect(error.message).toContain('"http://[redacted]@notify:5095"');
    expect(error.message).not.toContain("hunter2");
    expect(error.message).not.toContain("admin");
  });

  it("does not echo a password even from a malformed URL", () => {
    const error = loadError({ REDIS_URL: "redis://:hunter2@" });
    expect(error.key).toBe("REDIS_URL");
    expect(error.message).not.toContain("hunter2");
  });

  it("cuts an echoed value to 64 characters", () => {
    const error = loadError({ HOST: `a b${"x".repeat(500)}` });
    const echoed = /"([^"]*)"/.exec(error.message)?.[1] ?? "";
    expect(echoed).toHaveLength(64);
    expect(error.message.length).toBeLessThan(200);
  });

  it("refuses TLS_CERT_FILE without TLS_KEY_FILE", () => {
    const error = loadError({ TLS_CERT_FILE: "/tls/cert.pem" });
    expect(error.key).toBe("TLS_KEY_FILE");
    expect(error.source).toBe("default");
    expect(error.message).toBe(
      "TLS_KEY_FILE from default: is unset, but TLS_CERT_FILE is set (from env); set both or neither",
    );
  });

  it("accepts both TLS files, from env and file", () => {
    const yaml = "server:\n  tls_key_file: /tls/key.pem\n";
    const { config } = load({ TLS_CERT_FILE: "/tls/cert.pem" }, yaml);
    expect(config.tls).toEqual({ certFile: "/tls/cert.pem", keyFile: "/tls/key.pem" });
  });

  it("refuses an explicit APP_CONFIG_PATH that does not exist", () => {
    const error = loadError({ APP_CONFIG_PATH: "missing.yaml" });
    expect(error.key).toBe("APP_CONFIG_PATH");
    expect(error.source).toBe("env");
    expect(error.message).toMatch(
      /^APP_CONFIG_PATH from env: ".*missing.yaml" cannot be read \(ENOENT\)$/,
    );
  });

  it("refuses invalid YAML by code and position, without quoting the file", () => {
    const error = loadError({}, "server:\n  port: 1\n  port: 2\nredis: hunter2: x\n");
    expect(error.key).toBe("APP_CONFIG_PATH");
    expect(error.source).toBe("default");
    expect(error.message).toMatch(/is not valid YAML \([A-Z_]+ at line \d+, column \d+\)$/);
    expect(error.message).not.toContain("hunter2");
  });

  it("refuses a file whose top level is not a mapping", () => {
    const error = loadError({}, "- port\n- 5099\n");
    expect(error.key).toBe("APP_CONFIG_PATH");
    expect(error.message).toContain("holds a list; expected a mapping of sections");
  });

  it("refuses a section that is not a mapping", () => {
    const error = loadError({}, "server: 5099\n");
    expect(error.key).toBe("server");
    expect(error.source).toBe("file");
  });

  it("refuses a key set twice in the file", () => {
    const error = loadError({}, "PORT: 1\nserver:\n  port: 2\n");
    expect(error.key).toBe("PORT");
    expect(error.message).toContain("is set twice, at PORT and server.port");
  });

  it.each([
    ["security:\n  operator_token: hunter2\n", "OPERATOR_TOKEN", "security.operator_token"],
    ["PEER_TOKEN: hunter2\n", "PEER_TOKEN", "PEER_TOKEN"],
    ["redis:\n  REDIS_PASSWORD: hunter2\n", "REDIS_PASSWORD", "redis.REDIS_PASSWORD"],
  ])("refuses a secret in the YAML file: %j", (yaml, key, location) => {
    const error = loadError({}, yaml);
    expect(error.key).toBe(key);
    expect(error.source).toBe("file");
    expect(error.message).toContain(`${key} from file (${location}): secrets are never read`);
    expect(error.message).toContain(`${key}_FILE`);
    expect(error.message).not.toContain("hunter2");
  });
});

describe("secrets", () => {
  const secretValues = [
    "op-s3cret-env",
    "peer-s3cret-file",
    "redis-s3cret-dir",
    "url-s3cret",
    "adm-s3cret-dir",
    "bill-s3cret-dir",
  ];

  function loadWithSecrets(): LoadedConfig {
    writeFileSync(join(dir, "peer-token"), "peer-s3cret-file\n");
    writeFileSync(join(dir, "secrets", "redis_password"), "redis-s3cret-dir\n");
    writeFileSync(
      join(dir, "secrets", "auth_tokens"),
      "admin:adm-s3cret-dir, service/billing:bill-s3cret-dir\n",
    );
    return load({
      OPERATOR_TOKEN: "op-s3cret-env",
      PEER_TOKEN_FILE: join(dir, "peer-token"),
      REDIS_HOST: "redis",
      REDIS_URL: "redis://default:url-s3cret@redis:6380/2",
    });
  }

  it("reads each secret from env, NAME_FILE or the secrets directory into the config", () => {
    const { config } = loadWithSecrets();
    expect(config.authTokens).toEqual([
      { role: { kind: "admin" }, token: "adm-s3cret-dir" },
      { role: { kind: "service", service: "billing" }, token: "bill-s3cret-dir" },
      { role: { kind: "operator" }, token: "op-s3cret-env" },
    ]);
    expect(config.peerToken).toBe("peer-s3cret-file");
    expect(config.redis).toEqual({
      keyPrefix: "orchestrator:",
      host: "redis",
      port: 6379,
      url: "redis://default:url-s3cret@redis:6380/2",
      password: "redis-s3cret-dir",
    });
  });

  it("shows set secrets as [redacted] with their source, and unset ones as empty", () => {
    const loaded = loadWithSecrets();
    expect(effectiveOf(loaded, "OPERATOR_TOKEN")).toEqual({
      key: "OPERATOR_TOKEN",
      value: "[redacted]",
      source: "env",
      secret: true,
    });
    expect(effectiveOf(loaded, "PEER_TOKEN")).toMatchObject({
      value: "[redacted]",
      source: "file",
    });
    expect(effectiveOf(loaded, "REDIS_PASSWORD")).toMatchObject({
      value: "[redacted]",
      source: "file",
    });
    expect(effectiveOf(load(), "OPERATOR_TOKEN")).toEqual({
      key: "OPERATOR_TOKEN",
      value: "",
      source: "default",
      secret: true,
    });
  });

  it("shows REDIS_URL with its password redacted", () => {
    const loaded = loadWithSecrets();
    expect(effectiveOf(loaded, "REDIS_URL")).toEqual({
      key: "REDIS_URL",
      value: "redis://default:[redacted]@redis:6380/2",
      source: "env",
      secret: false,
    });
  });

  it("redacts a password given without a user name", () => {
    const passwordOnly = load({ REDIS_URL: "rediss://:url-s3cret@cache:6379" });
    expect(effectiveOf(passwordOnly, "REDIS_URL")?.value).toBe("rediss://:[redacted]@cache:6379");
    expect(passwordOnly.config.redis).toEqual({
      keyPrefix: "orchestrator:",
      port: 6379,
      url: "rediss://:url-s3cret@cache:6379",
    });
  });

  it("keeps every secret value out of the effective view", () => {
    const serialised = JSON.stringify(loadWithSecrets().effective);
    for (const secret of secretValues) expect(serialised).not.toContain(secret);
  });

  it("keeps secret values out of error messages", () => {
    writeFileSync(join(dir, "peer-token"), "peer-s3cret-file\n");
    const error = loadError({
      OPERATOR_TOKEN: "op-s3cret-env",
      PEER_TOKEN_FILE: join(dir, "peer-token"),
      REDIS_URL: "redis://default:url-s3cret@redis:6380",
      PORT: "nope",
    });
    expect(error.key).toBe("PORT");
    for (const secret of secretValues) expect(error.message).not.toContain(secret);
  });

  it("reads REDIS_CLUSTER_NODES as the seeds of a cluster, with the password", () => {
    const { config } = load({
      REDIS_CLUSTER_NODES: " redis-1:7000, redis-2:7001 ",
      REDIS_PASSWORD: "redis-s3cret-dir",
    });
    expect(config.redis).toEqual({
      keyPrefix: "orchestrator:",
      port: 6379,
      clusterNodes: ["redis-1:7000", "redis-2:7001"],
      password: "redis-s3cret-dir",
    });
  });

  it("warns when REDIS_PASSWORD is set but there is no Redis to use it", () => {
    const loaded = load({ REDIS_PASSWORD: "redis-s3cret-dir" });
    expect(loaded.config.redis).toBeUndefined();
    expect(loaded.warnings).toEqual([
      protectedModeWarning,
      "REDIS_PASSWORD is set, but no REDIS_HOST, REDIS_URL or REDIS_CLUSTER_NODES",
    ]);
  });
});

describe("warnings", () => {
  it("reports unknown keys, misplaced keys and env-only keys, and still loads", () => {
    const yaml = [
      "server:",
      "  prot: 6000",
      "  redis_host: redis",
      "extras:",
      "  a: 1",
      "APP_CONFIG_PATH: other.yaml",
      "logging:",
      "  log_level: debug",
    ].join("\n");
    const loaded = load({}, yaml);
    expect(loaded.config.logLevel).toBe("debug");
    expect(loaded.config.redis).toBeUndefined();
    expect(loaded.warnings).toEqual([
      "server.prot: unknown key in the config file; ignored",
      "server.redis_host: REDIS_HOST belongs in section redis; ignored",
      "extras: unknown key in the config file; ignored",
      "APP_CONFIG_PATH: APP_CONFIG_PATH is read from the environment only; ignored",
      protectedModeWarning,
    ]);
  });
});

describe("config/app.yaml", () => {
  const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

  it("loads cleanly and equals the defaults, except that values come from the file", () => {
    const fromFile = loadConfig({ env: {}, cwd: repoRoot, secretsDir: join(dir, "secrets") });
    const defaults = load();
    expect(fromFile.warnings).toEqual([protectedModeWarning]);
    expect(fromFile.config).toEqual({
      ...defaults.config,
      configPath: join(repoRoot, "config", "app.yaml"),
    });
    for (const key of configKeys) {
      const entry = effectiveOf(fromFile, key.name);
      // HOST is left unset in the file so that protected mode applies (see its comment there).
      const expectedSource =
        key.secret || key.section === undefined || key.default === "" || key.name === "HOST";
      expect(entry, key.name).toEqual({
        ...effectiveOf(defaults, key.name),
        ...(key.name === "APP_CONFIG_PATH" ? { value: fromFile.config.configPath } : {}),
        source: expectedSource ? "default" : "file",
      });
    }
  });

  it("mentions every non-secret key, at least in a comment", () => {
    const text = readFileSync(join(repoRoot, "config", "app.yaml"), "utf8");
    for (const key of configKeys) {
      if (key.secret || key.section === undefined) continue;
      expect(text, key.name).toContain(`${key.name.toLowerCase()}:`);
    }
  });
});

describe("configKeys", () => {
  it("names each key as it is filed", () => {
    for (const [name, key] of Object.entries(configKey)) expect(key.name).toBe(name);
  });

  it("has a default that its own parser accepts", () => {
    for (const key of configKeys) expect(key.parse(key.default).ok, key.name).toBe(true);
  });
});
