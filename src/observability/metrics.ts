import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** Labels of the per-RPC metrics, as in go-grpc-prometheus plus the protocol. */
export interface RpcLabels {
  /** "grpc", "grpc-web", "connect" or "rest". */
  readonly protocol: string;
  readonly service: string;
  readonly method: string;
  /** "unary", "server_streaming", "client_streaming" or "bidi_streaming". */
  readonly type: string;
}

/**
 * The tallies of one method on one protocol. Calls bump plain numbers; prom-client reads them when
 * /metrics is scraped, so that a call pays no label hashing on the hot path.
 */
export interface RpcSeries {
  readonly labels: RpcLabels;
  started: number;
  /** Completed calls by status code name ("OK", "InvalidArgument", ...). */
  readonly handled: Map<string, number>;
  /** Records a call's duration in the handling-time histogram. */
  readonly observe: (seconds: number) => void;
}

/** The node's metrics, in a registry of its own (several nodes may share one test process). */
export interface Metrics {
  readonly registry: Registry;
  /** The series of a method on a protocol, created on first use. */
  rpcSeries(labels: RpcLabels): RpcSeries;
  /** Log records not shipped to the log collector, by reason. */
  readonly logRecordsDropped: Counter<"reason">;
  /** Calls refused by the auth check, by reason and method (or route). */
  readonly authFailures: Counter<"reason" | "method">;
  /** Calls refused by a rate limit, by limit (address, token), role and method. */
  readonly rateLimited: Counter<"limit" | "role" | "method">;
  /** Connections closed as they were accepted, by reason (max_connections, max_connections_per_client). */
  readonly connectionsRefused: Counter<"reason">;
  /** Watches refused, by limit (total, per_client) and method. */
  readonly watchesRefused: Counter<"limit" | "method">;
}

export interface MetricsOptions {
  /** Collect prom-client's default process metrics (CPU, memory, event loop, GC). Default true. */
  collectDefaultMetrics?: boolean;
}

const rpcLabelNames = ["protocol", "service", "method", "type"] as const;

/**
 * Creates the node's registry: process metrics, and per-RPC metrics for every protocol —
 * `orchestrator_rpc_started_total`, `orchestrator_rpc_handled_total` (with `code`) and the
 * `orchestrator_rpc_handling_seconds` histogram.
 */
export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  if (options.collectDefaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  const series = new Map<string, RpcSeries>();
  new Counter({
    name: "orchestrator_rpc_started_total",
    help: "RPCs started, on every protocol (grpc, grpc-web, connect, rest).",
    labelNames: rpcLabelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const s of series.values()) this.inc({ ...s.labels }, s.started);
    },
  });
  new Counter({
    name: "orchestrator_rpc_handled_total",
    help: "RPCs completed, by status code.",
    labelNames: [...rpcLabelNames, "code"],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of series.values()) {
        for (const [code, count] of s.handled) this.inc({ ...s.labels, code }, count);
      }
    },
  });
  const handlingSeconds = new Histogram({
    name: "orchestrator_rpc_handling_seconds",
    help: "Time to handle an RPC (until a stream ends, for streams).",
    labelNames: rpcLabelNames,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  return {
    registry,
    rpcSeries(labels) {
      const key = `${labels.protocol}\u0000${labels.service}\u0000${labels.method}`;
      let s = series.get(key);
      if (s === undefined) {
        const histogram = handlingSeconds.labels({ ...labels });
        s = { labels, started: 0, handled: new Map(), observe: (v) => histogram.observe(v) };
        series.set(key, s);
      }
      return s;
    },
    logRecordsDropped: new Counter({
      name: "orchestrator_log_records_dropped_total",
      help: "Log records not shipped to the log collector (buffer full, or the send failed).",
      labelNames: ["reason"],
      registers: [registry],
    }),
    authFailures: new Counter({
      name: "orchestrator_auth_failures_total",
      help: "Calls refused by the auth check (missing_token, unknown_token, wrong_role, wrong_service), by method.",
      labelNames: ["reason", "method"],
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: "orchestrator_rate_limited_total",
      help: "Calls refused by a rate limit (address: RATE_LIMIT_ADDRESS_RPS; token: RATE_LIMIT_ROLES, with the token's role), by method.",
      labelNames: ["limit", "role", "method"],
      registers: [registry],
    }),
    connectionsRefused: new Counter({
      name: "orchestrator_connections_refused_total",
      help: "Connections closed as they were accepted (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT), by reason.",
      labelNames: ["reason"],
      registers: [registry],
    }),
    watchesRefused: new Counter({
      name: "orchestrator_watches_refused_total",
      help: "Watches refused (WATCH_MAX_SUBSCRIBERS: total; WATCH_MAX_SUBSCRIBERS_PER_CLIENT: per_client), by method.",
      labelNames: ["limit", "method"],
      registers: [registry],
    }),
  };
}

/** What the replication metrics read from each peer link when scraped. */
export interface PeerSample {
  readonly url: string;
  readonly lagChanges: number;
  readonly lagMs: number;
  /** Unix ms of the last message from the peer; 0 before any. */
  readonly lastContact: number;
  readonly appliedChanges: number;
  readonly receivedChanges: number;
  readonly reconnects: number;
}

/**
 * One per-peer metric: its name, its help, and what it reads from a sample; `undefined` means
 * no value is known, and the peer then has no sample of this metric rather than a made-up one.
 */
interface PeerMetric {
  readonly name: string;
  readonly help: string;
  readonly value: (sample: PeerSample) => number | undefined;
}

const peerGauges: readonly PeerMetric[] = [
  {
    name: "orchestrator_replication_lag_changes",
    help: "Changes a peer has that this node has not applied yet.",
    value: (s) => s.lagChanges,
  },
  {
    name: "orchestrator_replication_lag_seconds",
    help: "How long this node has been behind a peer.",
    value: (s) => s.lagMs / 1000,
  },
  {
    name: "orchestrator_replication_last_contact_timestamp_seconds",
    help: "When the last message from a peer arrived (Unix seconds); no sample before any.",
    value: (s) => (s.lastContact > 0 ? s.lastContact / 1000 : undefined),
  },
];

const peerCounters: readonly PeerMetric[] = [
  {
    name: "orchestrator_replication_applied_changes_total",
    help: "Changes received from a peer that changed this node's registry.",
    value: (s) => s.appliedChanges,
  },
  {
    name: "orchestrator_replication_received_changes_total",
    help: "Changes received from a peer, applied or not: the replication traffic from it.",
    value: (s) => s.receivedChanges,
  },
  {
    name: "orchestrator_replication_reconnects_total",
    help: "Times the replication stream to a peer was opened again.",
    value: (s) => s.reconnects,
  },
];

/**
 * Per-peer replication metrics, read from the links at scrape time: lag in changes and in
 * seconds, when the peer was last heard from (absent for a peer never heard from), changes
 * applied from the peer, and reconnects.
 */
export function registerPeerMetrics(metrics: Metrics, samples: () => Iterable<PeerSample>): void {
  const registers = [metrics.registry];
  for (const { name, help, value } of peerGauges) {
    new Gauge({
      name,
      help,
      labelNames: ["peer"],
      registers,
      collect() {
        this.reset();
        for (const s of samples()) {
          const v = value(s);
          if (v !== undefined) this.set({ peer: s.url }, v);
        }
      },
    });
  }
  for (const { name, help, value } of peerCounters) {
    new Counter({
      name,
      help,
      labelNames: ["peer"],
      registers,
      collect() {
        this.reset();
        for (const s of samples()) {
          const v = value(s);
          if (v !== undefined) this.inc({ peer: s.url }, v);
        }
      },
    });
  }
}

/** What the event metrics read from the events capability when scraped. */
export interface EventSample {
  /** Events waiting in the outbox for the store. */
  readonly pending: number;
  /** Events this node stored (appended), dropped from a full outbox, whose payload was replaced. */
  readonly stored: number;
  readonly dropped: number;
  readonly truncated: number;
  /** Appends to the store that failed (and were retried). */
  readonly failedAppends: number;
  /** Deliveries (replays) that failed and could not be recorded in the dead-letter queue. */
  readonly lostDeliveries: number;
}

const eventCounters: readonly { name: string; help: string; value: (s: EventSample) => number }[] =
  [
    {
      name: "orchestrator_events_stored_total",
      help: "Events this node appended to the event store.",
      value: (s) => s.stored,
    },
    {
      name: "orchestrator_events_outbox_dropped_total",
      help: "Events dropped because the outbox was full (the store unreachable for long).",
      value: (s) => s.dropped,
    },
    {
      name: "orchestrator_events_payloads_truncated_total",
      help: "Events whose payload was over EVENT_MAX_PAYLOAD_BYTES and was replaced.",
      value: (s) => s.truncated,
    },
    {
      name: "orchestrator_events_append_failures_total",
      help: "Appends of the outbox to the event store that failed (each is retried).",
      value: (s) => s.failedAppends,
    },
    {
      name: "orchestrator_events_deliveries_lost_total",
      help: "Event deliveries that failed and could not be recorded in the dead-letter queue.",
      value: (s) => s.lostDeliveries,
    },
  ];

/** The events' metrics, read at scrape time: the outbox's backlog, and the counters above. */
export function registerEventMetrics(metrics: Metrics, sample: () => EventSample): void {
  const registers = [metrics.registry];
  new Gauge({
    name: "orchestrator_events_outbox_pending",
    help: "Events waiting in the outbox for the event store.",
    registers,
    collect() {
      this.set(sample().pending);
    },
  });
  for (const { name, help, value } of eventCounters) {
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(value(sample()));
      },
    });
  }
}
