import { type Clock, systemClock } from "../clock.js";
import { createHttpClient, type HttpClient } from "../http-client/http-client.js";

/** Why records were dropped: the buffer was full, or the collector did not accept them. */
export type LogDropReason = "buffer_full" | "send_failed";

/** One record as the log collector's `POST /logs` and `POST /logs/batch` accept it. */
export interface CollectorRecord {
  /** The shipping service's name (from {@link LogShipperOptions.service}). */
  readonly service: string;
  /** pino's level label, except "warn", which the collector spells "warning". */
  readonly level: string;
  /** The record's `msg`; empty when it had none. */
  readonly message: string;
  /** The record's ISO `time`; the clock's now when it had none. */
  readonly timestamp: string;
  /** Every other field of the record (correlation_id, node_id, err, ...). */
  readonly context: Record<string, unknown>;
}

/** Options for {@link createLogShipper}; all but `url` and `service` have defaults. */
export interface LogShipperOptions {
  /** The collector's base URL, e.g. "http://log-collector:8000". Required. */
  url: string;
  /** Service name put on every record. Required. */
  service: string;
  /** Records per `POST /logs/batch`; a buffer this full is flushed at once. Default: 100. */
  batchSize?: number;
  /** How often buffered records are flushed when fewer than a batch wait. Default: 1000 ms. */
  flushIntervalMs?: number;
  /**
   * Most records held in memory, waiting or being sent; beyond it new records are dropped
   * (reason "buffer_full"). Default: 10000.
   */
  maxBufferedRecords?: number;
  /**
   * Most bytes of log lines held in memory, waiting or being sent; beyond it new records are
   * dropped (reason "buffer_full"), so that a burst of large records cannot grow the heap.
   * Default: 8 MiB.
   */
  maxBufferedBytes?: number;
  /** Per-request timeout. Default: 5000 ms. */
  timeoutMs?: number;
  /**
   * The outbound client that posts to the collector. Default: one of its own, without client
   * spans (shipping logs must not make traces of itself); the shipper never retries (logs are
   * best-effort), but the client's circuit breaker makes a dead collector cost nothing per flush.
   */
  http?: HttpClient;
  /** Supplies the timestamp of a record that has no `time`. Default: the system clock. */
  clock?: Clock;
  /**
   * Told of every drop, e.g. to increment a prom-client counter. Must not log through a logger
   * that feeds this shipper. Errors it throws are swallowed. Default: no-op.
   */
  onDrop?: (count: number, reason: LogDropReason) => void;
  /**
   * Told of every failed request (network error, timeout, non-2xx answer); the records are
   * reported to `onDrop` as well. Same caveats as `onDrop`. Default: no-op.
   */
  onSendError?: (error: unknown) => void;
}

/** Counters since the shipper was created. */
export interface LogShipperStats {
  /** Records held now: waiting in the buffer or in a request not yet answered. */
  buffered: number;
  /** Records the collector accepted. */
  sent: number;
  /** Records dropped, for any reason. */
  dropped: number;
}

/** Ships log records to the log collector in the background. */
export interface LogShipper {
  /**
   * A pino destination: takes one serialized JSON record per `write`, never throws and never
   * waits on the network. Unparsable lines are skipped; lines written after `close()` are ignored.
   */
  readonly stream: { write(line: string): void };
  /**
   * Sends what is buffered now (after any flush already running) and resolves when every request
   * has settled. Never rejects: failures are reported through `onDrop` and `onSendError`.
   */
  flush(): Promise<void>;
  /**
   * Stops the timer, flushes what is left and resolves once that is done or after `timeoutMs`
   * (default 2000), whichever comes first; requests still open then are aborted. Never rejects.
   */
  close(timeoutMs?: number): Promise<void>;
  /** A snapshot of the counters. */
  stats(): LogShipperStats;
}

/** The collector answered a request with a status other than 2xx. */
export class CollectorResponseError extends Error {
  override readonly name = "CollectorResponseError";
  constructor(
    /** The request path, "/logs/batch" or "/logs". */
    readonly path: string,
    /** The HTTP status the collector answered. */
    readonly status: number,
  ) {
    super(`log collector answered ${status} to POST ${path}`);
  }
}

type ShipperSettings = Required<Omit<LogShipperOptions, "url" | "service" | "http">>;

/** The defaults {@link createLogShipper} merges options over. */
export const logShipperDefaults: Readonly<ShipperSettings> = Object.freeze({
  batchSize: 100,
  flushIntervalMs: 1000,
  maxBufferedRecords: 10_000,
  maxBufferedBytes: 8 * 1024 * 1024,
  timeoutMs: 5000,
  clock: systemClock,
  onDrop: () => {},
  onSendError: () => {},
});

/** Default for {@link LogShipper.close}'s timeout. */
export const defaultCloseTimeoutMs = 2000;

// A collector without the batch endpoint gets records one by one, this many at a time.
const maxRecordsInFlight = 4;

/**
 * Creates a shipper that buffers records written to its `stream` and posts them in batches to
 * `{url}/logs/batch`, falling back for good to one `POST {url}/logs` per record once the collector
 * answers the batch endpoint with 404 or 405. Logs are best-effort: a batch that fails is dropped
 * and counted, never retried, and once the collector fails to answer at all (network error,
 * timeout) the rest of that flush is dropped too, so a flush waits for at most one timeout.
 * Throws TypeError for a `url` that is not http(s) and RangeError for a non-positive size or time.
 */
export function createLogShipper(options: LogShipperOptions): LogShipper {
  const settings: ShipperSettings & Pick<LogShipperOptions, "url" | "service"> = {
    ...logShipperDefaults,
    ...options,
  };
  const baseUrl = validate(settings);
  const { batchSize, maxBufferedRecords, maxBufferedBytes, flushIntervalMs, timeoutMs, clock } =
    settings;
  const { service } = settings;
  const http = options.http ?? createHttpClient({ timeoutMs, maxAttempts: 1 });
  const closing = new AbortController();

  let buffer: CollectorRecord[] = [];
  // The bytes of each buffered record's line, in the buffer's order.
  let bufferWeights: number[] = [];
  let inFlight = 0;
  // Bytes of the lines buffered or in flight.
  let heldBytes = 0;
  let sent = 0;
  let dropped = 0;
  let batchUnsupported = false;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let immediate: NodeJS.Immediate | undefined;
  let running: Promise<void> | undefined;
  let queued: Promise<void> | undefined;
  let closePromise: Promise<void> | undefined;

  function drop(count: number, reason: LogDropReason): void {
    if (count <= 0) return;
    dropped += count;
    try {
      settings.onDrop(count, reason);
    } catch {
      // A faulty callback must not break logging.
    }
  }

  function sendFailed(count: number, error: unknown): void {
    drop(count, "send_failed");
    try {
      settings.onSendError(error);
    } catch {
      // As above.
    }
  }

  /** Resolves with the status; rejects when there is no answer (network error, timeout). */
  async function post(path: string, body: unknown): Promise<number> {
    const response = await http.request({
      method: "POST",
      url: `${baseUrl}${path}`,
      json: body,
      timeoutMs,
      signal: closing.signal,
      retry: false,
      // The collector's answer is only read for its status.
      maxBytes: 64 * 1024,
    });
    return response.status;
  }

  /** Sends one batch; false when the collector did not answer, so the flush should stop. */
  async function sendBatch(batch: CollectorRecord[]): Promise<boolean> {
    if (!batchUnsupported) {
      let status: number;
      try {
        status = await post("/logs/batch", { items: batch });
      } catch (error) {
        sendFailed(batch.length, error);
        return false;
      }
      if (status !== 404 && status !== 405) {
        if (isSuccess(status)) sent += batch.length;
        else sendFailed(batch.length, new CollectorResponseError("/logs/batch", status));
        return true;
      }
      batchUnsupported = true;
    }
    return sendOneByOne(batch);
  }

  async function sendOneByOne(batch: CollectorRecord[]): Promise<boolean> {
    let next = 0;
    let answered = true;
    const sendNext = async (): Promise<void> => {
      for (let record = batch[next]; answered && record !== undefined; record = batch[next]) {
        next += 1;
        try {
          const status = await post("/logs", record);
          if (isSuccess(status)) sent += 1;
          else sendFailed(1, new CollectorResponseError("/logs", status));
        } catch (error) {
          answered = false;
          sendFailed(1, error);
        }
      }
    };
    const workers = Math.min(maxRecordsInFlight, batch.length);
    await Promise.all(Array.from({ length: workers }, sendNext));
    drop(batch.length - next, "send_failed");
    return answered;
  }

  async function drain(): Promise<void> {
    const taken = buffer;
    const weights = bufferWeights;
    buffer = [];
    bufferWeights = [];
    inFlight += taken.length;
    let answered = true;
    for (let start = 0; start < taken.length; start += batchSize) {
      const batch = taken.slice(start, start + batchSize);
      if (answered) answered = await sendBatch(batch);
      else drop(batch.length, "send_failed");
      inFlight -= batch.length;
      for (let i = start; i < start + batch.length; i++) heldBytes -= weights[i] ?? 0;
    }
  }

  function flush(): Promise<void> {
    if (running === undefined) {
      running = drain()
        .catch((error: unknown) => sendFailed(0, error))
        .finally(() => {
          running = undefined;
          schedule();
        });
      return running;
    }
    // Flushes never overlap: every caller arriving during one shares the single follow-up.
    queued ??= running.then(() => {
      queued = undefined;
      return flush();
    });
    return queued;
  }

  function schedule(): void {
    if (closed || buffer.length === 0) return;
    if (timer === undefined) {
      timer = setTimeout(() => {
        timer = undefined;
        void flush();
      }, flushIntervalMs);
      timer.unref();
    }
    // A full batch goes out on the next turn of the event loop, never inside the caller's write.
    if (immediate === undefined && buffer.length >= batchSize) {
      immediate = setImmediate(() => {
        immediate = undefined;
        void flush();
      });
    }
  }

  function write(line: string): void {
    if (closed) return;
    if (
      buffer.length + inFlight >= maxBufferedRecords ||
      heldBytes + line.length > maxBufferedBytes
    ) {
      drop(1, "buffer_full");
      return;
    }
    const record = toCollectorRecord(line, service, clock);
    if (record === undefined) return;
    buffer.push(record);
    bufferWeights.push(line.length);
    heldBytes += line.length;
    schedule();
  }

  async function shutDown(closeTimeoutMs: number): Promise<void> {
    closed = true;
    clearTimeout(timer);
    clearImmediate(immediate);
    timer = undefined;
    immediate = undefined;
    let deadline: NodeJS.Timeout | undefined;
    const expired = new Promise<void>((resolve) => {
      deadline = setTimeout(resolve, closeTimeoutMs);
    });
    await Promise.race([flush(), expired]);
    clearTimeout(deadline);
    // Whatever is still open would outlive the shipper; aborting drops and counts it.
    closing.abort();
  }

  return Object.freeze({
    stream: Object.freeze({ write }),
    flush,
    close(closeTimeoutMs = defaultCloseTimeoutMs): Promise<void> {
      closePromise ??= shutDown(closeTimeoutMs);
      return closePromise;
    },
    stats: (): LogShipperStats => ({ buffered: buffer.length + inFlight, sent, dropped }),
  });
}

function isSuccess(status: number): boolean {
  return status >= 200 && status < 300;
}

function validate(settings: ShipperSettings & { url: string }): string {
  let url: URL;
  try {
    url = new URL(settings.url);
  } catch {
    throw new TypeError(`log collector url is not a URL: ${settings.url}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(`log collector url must be http or https: ${settings.url}`);
  }
  for (const key of ["batchSize", "maxBufferedRecords", "maxBufferedBytes"] as const) {
    if (!Number.isInteger(settings[key]) || settings[key] < 1) {
      throw new RangeError(`${key} must be a positive integer, got ${settings[key]}`);
    }
  }
  for (const key of ["flushIntervalMs", "timeoutMs"] as const) {
    if (!Number.isFinite(settings[key]) || settings[key] <= 0) {
      throw new RangeError(`${key} must be a positive number, got ${settings[key]}`);
    }
  }
  // Paths are appended, so a base with a path prefix ("http://host/collector/") keeps it.
  return url.href.replace(/\/+$/, "");
}

// Fields the collector record carries elsewhere, or that say nothing about the event.
const notContext = new Set(["service", "level", "time", "msg", "pid", "hostname"]);

const levelLabels: Readonly<Record<number, string>> = Object.freeze({
  10: "trace",
  20: "debug",
  30: "info",
  40: "warning",
  50: "error",
  60: "fatal",
});

function collectorLevel(level: unknown): string {
  if (level === "warn") return "warning";
  if (typeof level === "string") return level;
  // A logger without a level formatter writes pino's numbers.
  if (typeof level === "number") return levelLabels[level] ?? "info";
  return "info";
}

function collectorTimestamp(time: unknown, clock: Clock): string {
  if (typeof time === "string") return time;
  const epochMs = typeof time === "number" && Number.isFinite(time) ? time : clock.now();
  return new Date(epochMs).toISOString();
}

/** Turns one pino JSON line into a collector record; undefined when it is not a JSON object. */
export function toCollectorRecord(
  line: string,
  service: string,
  clock: Clock = systemClock,
): CollectorRecord | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return undefined;
  const fields = parsed as Record<string, unknown>;
  // fromEntries defines own properties, so a "__proto__" field stays data, not a prototype.
  const context = Object.fromEntries(
    Object.entries(fields).filter(([key]) => !notContext.has(key)),
  );
  return {
    service,
    level: collectorLevel(fields.level),
    message: typeof fields.msg === "string" ? fields.msg : "",
    timestamp: collectorTimestamp(fields.time, clock),
    context,
  };
}
