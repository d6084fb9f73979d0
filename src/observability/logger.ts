import { type DestinationStream, type Logger, pino } from "pino";

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  /** Lowest level written, e.g. "info" or "debug"; a pino level label. No default. */
  level: string;
  /** Logical service name, bound as `service` on every record. No default. */
  service: string;
  /** This node's id, bound as `node_id` on every record. No default. */
  nodeId: string;
  /** Build version, bound as `version` on every record. No default. */
  version: string;
  /**
   * Where JSON lines go. Default: `pino.destination({ dest: 1, sync: true })`, stdout written
   * synchronously, as pino does by default: lines keep their order and none is lost when the
   * process dies. At the default level a node logs only starts, stops, warnings and failures
   * (every RPC's line is at debug), so the write costs nothing on the request path.
   */
  destination?: DestinationStream;
  /**
   * A second destination that receives every record the logger emits (at the logger's level),
   * typically a `LogShipper` from `./log-shipper.js`. Default: none.
   */
  shipper?: { stream: DestinationStream };
}

/** What every redacted value is replaced with. */
export const redactionCensor = "[redacted]";

// Top-level and one-level-deep keys that carry secrets. pino's `*.x` only matches one level down,
// so the top-level form is listed too; header maps nested two deep get their own paths below.
const secretKeys = [
  "password",
  "passwd",
  "token",
  "secret",
  "authorization",
  "cookie",
  '["set-cookie"]',
  '["proxy-authorization"]',
  '["x-api-key"]',
  "apiKey",
  "api_key",
  "accessToken",
  "access_token",
  "refreshToken",
  "refresh_token",
  "idToken",
  "id_token",
  "clientSecret",
  "client_secret",
  "privateKey",
  "private_key",
  "credentials",
] as const;

const secretHeaders = [
  "authorization",
  "cookie",
  '["set-cookie"]',
  '["proxy-authorization"]',
  '["x-api-key"]',
] as const;

// Containers that carry a header map, as fastify, http clients and our own log calls name them.
const headerHolders = ["req", "res", "request", "response", "reply"] as const;

/**
 * Every path pino redacts: secret-bearing keys at the top level and one level down (`password`,
 * `*.password`, `token`, `*.token`, `*.secret`, `*.authorization`, ...), and secret headers under
 * `headers` and under `req`/`res`/`request`/`response`/`reply.headers`.
 */
export const redactedPaths: readonly string[] = Object.freeze([
  ...secretKeys.flatMap((key) => [key, key.startsWith("[") ? `*${key}` : `*.${key}`]),
  ...headerHolders.flatMap((holder) =>
    secretHeaders.map((header) =>
      header.startsWith("[") ? `${holder}.headers${header}` : `${holder}.headers.${header}`,
    ),
  ),
]);

/**
 * Creates the service's structured logger: one JSON object per line with an ISO `time`, the level
 * as a label (`"level":"info"`), base bindings `{service, node_id, version}` (no pid or hostname),
 * and every path in {@link redactedPaths} replaced by {@link redactionCensor}. With `shipper`, each
 * record goes to both the destination and the shipper. Throws pino's error for an unknown `level`.
 */
export function createLogger(options: LoggerOptions): Logger {
  const destination = options.destination ?? pino.destination({ dest: 1, sync: true });
  // Both entries take everything the logger emits: the logger's own level already filters, and it
  // keeps filtering correctly if someone changes `logger.level` at run time.
  const stream =
    options.shipper === undefined
      ? destination
      : pino.multistream([
          { stream: destination, level: "trace" },
          { stream: options.shipper.stream, level: "trace" },
        ]);
  return pino(
    {
      level: options.level,
      base: {
        service: options.service,
        ...(options.nodeId ? { node_id: options.nodeId } : {}),
        version: options.version,
      },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: [...redactedPaths], censor: redactionCensor },
    },
    stream,
  );
}

interface SyncFlushable {
  flushSync(): void;
}

interface Flushable {
  flush(callback: (error?: Error | null) => void): void;
}

function hasMethod<T>(value: unknown, name: keyof T): value is T {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as Record<PropertyKey, unknown>)[name] === "function"
  );
}

function flushStream(stream: unknown): Promise<void> {
  // sonic-boom's flush(cb) returns at once when it has no minLength, even with lines still
  // buffered, so the synchronous flush is the one that guarantees they reach the fd. Shutdown is
  // the one place where a blocking write is what we want.
  if (hasMethod<SyncFlushable>(stream, "flushSync")) {
    try {
      stream.flushSync();
      return Promise.resolve();
    } catch {
      // Not ready yet (a file still opening) or destroyed: try the asynchronous flush.
    }
  }
  if (!hasMethod<Flushable>(stream, "flush")) return Promise.resolve();
  // A destination that cannot flush has nothing more we can do for it at shutdown, so an error
  // resolves rather than rejects.
  return new Promise((resolve) => {
    try {
      stream.flush(() => resolve());
    } catch {
      resolve();
    }
  });
}

/**
 * Writes out what the logger's destination(s) still hold (synchronously for a pino/sonic-boom
 * destination), for use at shutdown. Never rejects. A shipper is not closed here: call its
 * `close()` after this, so that the records written meanwhile are shipped too.
 */
export async function flushLogger(logger: Logger): Promise<void> {
  // Child loggers share their root's stream, which pino exposes under this public symbol.
  const stream: unknown = Reflect.get(logger, pino.symbols.streamSym);
  const streams = (stream as { streams?: unknown }).streams;
  if (Array.isArray(streams)) {
    await Promise.all(streams.map((entry: { stream?: unknown }) => flushStream(entry.stream)));
    return;
  }
  await flushStream(stream);
}
