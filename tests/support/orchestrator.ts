import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type App, type AppDeps, createApp } from "../../src/app.js";
import { loadConfig } from "../../src/config/index.js";

/** What {@link startOrchestrator} takes. */
export interface StartOrchestratorOptions {
  /**
   * Environment of the node, merged over `{ HOST: "127.0.0.1", PORT: "0" }`. Nothing is read from
   * `process.env`, from a `config/app.yaml` or from `/run/secrets`: the node starts in an empty
   * temporary directory. Set `APP_CONFIG_PATH` (absolute) to give it a YAML file.
   */
  env?: Record<string, string>;
  /**
   * Replaceable parts of the node. `logDestination` defaults to one that keeps every line in
   * {@link RunningOrchestrator.logs}; pass your own to send them elsewhere instead.
   */
  deps?: AppDeps;
}

/** A node listening on a free loopback port. */
export interface RunningOrchestrator {
  readonly app: App;
  readonly port: number;
  /** `http://127.0.0.1:<port>`, without a trailing slash. */
  readonly url: string;
  /** `127.0.0.1:<port>`, as grpc-js wants an address. */
  readonly address: string;
  /**
   * Every JSON log line the node wrote so far, at its LOG_LEVEL (default info; set
   * `LOG_LEVEL: "debug"` to see every RPC). Stays empty when `deps.logDestination` was given.
   */
  readonly logs: string[];
  /** Closes the node gracefully (`app.close()`) and removes its directory. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts an orchestrator node as `src/main.ts` would, but on `127.0.0.1` and a port chosen by the
 * system, with its configuration taken only from `options.env`.
 *
 * @throws ConfigError when `options.env` holds an invalid value (see `loadConfig`).
 */
export async function startOrchestrator(
  options: StartOrchestratorOptions = {},
): Promise<RunningOrchestrator> {
  const dir = await mkdtemp(join(tmpdir(), "orchestrator-test-"));
  const removeDir = () => rm(dir, { recursive: true, force: true });
  try {
    const { config, effective } = loadConfig({
      env: { HOST: "127.0.0.1", PORT: "0", ...options.env },
      cwd: dir,
      secretsDir: join(dir, "secrets"),
    });
    const logs: string[] = [];
    const app = await createApp(config, effective, {
      logDestination: { write: (chunk: string) => collectLines(logs, chunk) },
      ...options.deps,
    });
    let port: number;
    try {
      ({ port } = await app.listen());
    } catch (error) {
      await app.close();
      throw error;
    }
    let closing: Promise<void> | undefined;
    return {
      app,
      port,
      url: `http://127.0.0.1:${port}`,
      address: `127.0.0.1:${port}`,
      logs,
      close() {
        closing ??= app.close().finally(removeDir);
        return closing;
      },
    };
  } catch (error) {
    await removeDir();
    throw error;
  }
}

function collectLines(logs: string[], chunk: string): void {
  for (const line of chunk.split("\n")) if (line !== "") logs.push(line);
}

/** What {@link metricValue} takes besides the metric. */
export interface MetricQuery {
  /** Sent as `authorization: Bearer <token>`: /metrics needs it when OPERATOR_TOKEN is set. */
  token?: string;
}

/**
 * Reads the node's `GET /metrics` and sums the samples of `name` whose labels include every pair
 * of `labels` (other labels may have any value), e.g. every code of one method. A metric with no
 * matching sample counts 0.
 *
 * @throws Error when /metrics does not answer 200.
 */
export async function metricValue(
  node: Pick<RunningOrchestrator, "url">,
  name: string,
  labels: Readonly<Record<string, string>>,
  query: MetricQuery = {},
): Promise<number> {
  const headers: Record<string, string> =
    query.token === undefined ? {} : { authorization: `Bearer ${query.token}` };
  const response = await fetch(`${node.url}/metrics`, { headers });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`GET /metrics answered ${response.status}: ${text}`);
  let sum = 0;
  for (const line of text.split("\n")) {
    const sample = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (sample?.[1] !== name) continue;
    const found = new Map<string, string>();
    for (const [, label, value] of (sample[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      if (label !== undefined && value !== undefined) found.set(label, value);
    }
    if (Object.entries(labels).every(([label, value]) => found.get(label) === value)) {
      sum += Number(sample[3]);
    }
  }
  return sum;
}
