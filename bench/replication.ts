// bench:replication — how fast a change made on one orchestrator shows on another (issue 4):
// the lag from a RegisterService call on node A to its event in a WatchServices stream on node B,
// at a steady 1,000 writes/s with 2 and with 3 nodes, and the time a new, empty node takes to
// converge on 10,000 entries.
//
// Every orchestrator runs compiled (dist/), as production does, on a loopback port chosen before it
// starts (its peers must know its URL), in a full mesh through ORCHESTRATOR_PEERS, on the memory
// store, with health probes of the fake base URLs pushed out of the run.
//
// Lag: once every node's GET /peers shows every link PEER_STATE_LIVE, a gRPC watch opens on B (and,
// for reference, one on A itself: the same-node figure etcd's put-to-watch anchor measures), and a
// grpc-js client registers on A open loop: each write is due at a fixed time (1 ms apart at
// 1,000/s; during the warm-up, at a rate ramping up to it: see dueTimes) and sent then, whether or
// not earlier ones have been answered. The writes rotate over a
// set of names; each carries its sequence number as `version`, and the client records when it sent
// it. Lag = when the watch delivered that name at that version − when it was sent, both read on
// this process's clock. A write a watch never delivered is lost, unless a later version of the
// same name arrived (the replication stream sends only a name's latest change of a backlog):
// those are counted as superseded. The writer, the watchers and every orchestrator share the
// machine's cores: a stall of this process delays both ends of a measurement. The CPU each process
// used in the measured window is read from /proc, with what the rest of the machine used ("other"):
// these machines are shared and noisy. A second table subtracts, write by write, A's own event
// from B's: what replication itself adds.
//
// Catch-up: node A alone is filled with 10,000 entries (64 registers in flight), then a new,
// empty node D starts with ORCHESTRATOR_PEERS=A. Timed from D's spawn, and from its "orchestrator
// listening" line, to the first GET /peers on D (polled every 20 ms) showing the link LIVE, applied
// up to A's revision with no lag; a full listing on D then checks that it holds every entry.
//
// etcd, measured in the same run (when `etcd` is on PATH; else the bench says so and goes on):
// before the 2-node run a one-member etcd (puts and a prefix watch on the same member), before the
// 3-node run a 3-member cluster (Raft; puts on member 1, the watch on member 2), each a throwaway
// on free loopback ports with its data on /dev/shm, spoken to over its gRPC API (bench/etcd.ts).
// The same open-loop writer puts the same rotating names at the same rate, for the same warm-up
// and duration, each value the write's sequence number and the registration as JSON; lag = the
// watch's event − the put's send time, on this process's clock. The targets: 2 nodes, p99
// on B ≤ 3 × etcd one-member p99; 3 nodes, p99 on B ≤ 3 × the etcd cluster's p99.
//
// Per node, for each run (a lone node too: no peers, the same writes and same-node watch, whose
// CPU per register is the baseline):
// - messages per write per directed link: each node's
//   orchestrator_replication_received_changes_total{peer} from GET /metrics, read before the
//   first write (warm-up included) and after the watches have drained, ÷ every write of the run.
//   The echo-free design expects 1 on each link from A, 0 towards A, and between two other nodes
//   every write but those the sender learned from the receiver first (it does not send them
//   back; orchestrator_replication_applied_changes_total on the opposite link counts them); a
//   link that falls behind carries fewer, its backlog coalesced per name (superseded writes):
//   (N-1)² per write in all, 1 with 2 nodes and 4 with 3, less the writes that reached a node
//   through the other receiver before A's own message.
// - CPU per write, in µs: each process's CPU (from /proc) over the measured window ÷ the writes of
//   the window, and its ratio to the lone node's µs per register. The targets: the writer
//   with 2 peers ≤ 2x, a receiver ≤ 1x. The writer and B also serve a watch, as the lone node does;
//   C serves none.
// - heap used at the end (nodejs_heap_size_used_bytes from GET /metrics, after the drain).
//
// --heap-seconds N (default 0: skipped): 3 nodes at the rate for N s (after the warm-up), heap of
// each node read every 5 s and after the drain (max, end), and read after a full garbage
// collection (the nodes get --expose-gc and bench/gc-on-signal.ts: SIGUSR2 collects) before the
// first write and after the drain: what each node retains, against a stated bound.
//
//   npm run bench:replication [-- --seconds 10 --warmup 5 --rate 1000 --names 1000
//                                 --entries 10000 --catchup-rounds 3 --heap-seconds 0
//                                 --cpu-prof-dir /tmp/prof]
//
// The published etcd figures of ../shared/bench/README.md (another sitting) are printed as a
// footnote.
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { create, toJsonString } from "@bufbuild/protobuf";
import {
  type RegisterServiceRequest,
  RegisterServiceRequestSchema,
  RegistryService,
  WatchEventType,
} from "../gen/orchestrator/v1/registry_pb.js";
import { createGrpcJsClient } from "../src/clients/grpc-js-client.js";
import {
  createEtcdKv,
  type EtcdMember,
  etcdLeader,
  etcdMissing,
  etcdVersion,
  findEtcd,
  startEtcd,
  stopEtcd,
  watchEtcdPrefix,
} from "./etcd.js";
import { processCpuMicros } from "./process-cpu.js";
import {
  count,
  fmt,
  freePorts,
  type MetricSample,
  median,
  orchestratorArgv,
  parseLogLine,
  percentile,
  readAnchorSentence,
  scrapeMetrics,
  stop,
  track,
  writeResults,
} from "./support.js";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    // Writes ramped up to the rate (see dueTimes), shown apart in the warm-up table.
    warmup: { type: "string", default: "5" },
    rate: { type: "string", default: "1000" },
    names: { type: "string", default: "1000" },
    drain: { type: "string", default: "5" },
    entries: { type: "string", default: "10000" },
    // Each orchestrator writes a V8 CPU profile there when it stops (node --cpu-prof).
    "cpu-prof-dir": { type: "string", default: "" },
    concurrency: { type: "string", default: "64" },
    "catchup-rounds": { type: "string", default: "3" },
    // 0 skips the long run that reads each node's heap.
    "heap-seconds": { type: "string", default: "0" },
  },
});
const seconds = Number(args.seconds);
const warmupSeconds = Number(args.warmup);
const rate = Number(args.rate);
const nameCount = Number(args.names);
const drainSeconds = Number(args.drain);
const entryCount = Number(args.entries);
const concurrency = Number(args.concurrency);
const catchUpRounds = Number(args["catchup-rounds"]);
const heapSeconds = Number(args["heap-seconds"]);
const clusterSizes = [2, 3] as const;
const pollMs = 20;
const heapSampleMs = 5000;
/** The bound the README states for each node's heap during a --heap-seconds run. */
const heapBoundMb = 150;
// Leases outlast the run: the sweeper marking entries DOWN would add changes that are not ours.
const ttlSeconds = 300;
const cores = availableParallelism();

/** A child process whose CPU time is read from /proc. */
interface Measured {
  readonly child: ChildProcess;
  readonly pid: number;
}

/** An orchestrator process: where it listens, and when it was spawned and began listening. */
interface Node extends Measured {
  readonly nodeId: string;
  readonly port: number;
  readonly url: string;
  /** performance.now() just before the spawn. */
  readonly spawnedAt: number;
  /** performance.now() when its "orchestrator listening" line was read. */
  readonly listening: Promise<number>;
}

/** `count` distinct free loopback ports: all held open at once, so that none repeats. */

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Spawns the orchestrator exactly as `npm start` runs it, on `port`, replicating with `peers`;
 * `nodeArgs` go to node before the script. `listening` resolves when its "orchestrator
 * listening" line names that port.
 */
function spawnNode(
  nodeId: string,
  port: number,
  peers: readonly string[],
  nodeArgs: readonly string[] = [],
): Node {
  const spawnedAt = performance.now();
  const profile = args["cpu-prof-dir"]
    ? [
        "--cpu-prof",
        `--cpu-prof-dir=${args["cpu-prof-dir"]}`,
        `--cpu-prof-name=${nodeId}-${port}.cpuprofile`,
      ]
    : [];
  const child = spawn(process.execPath, [...profile, ...nodeArgs, ...orchestratorArgv], {
    env: {
      ...process.env,
      PORT: `${port}`,
      HOST: "127.0.0.1",
      LOG_LEVEL: "info",
      NODE_ID: nodeId,
      ORCHESTRATOR_PEERS: peers.join(","),
      APP_CONFIG_PATH: new URL("../../config/app.yaml", import.meta.url).pathname,
      // Probes of the fake base URLs would add load that is not replication's.
      HEALTH_CHECK_INTERVAL_MS: "3600000",
      REDIS_URL: "",
      REDIS_HOST: "",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const pid = track(child);
  const listening = new Promise<number>((resolve, reject) => {
    const onExit = (code: number | null) =>
      reject(new Error(`orchestrator ${nodeId} exited (${code}) before listening`));
    child.once("exit", onExit);
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const parsed = parseLogLine(line);
      if (parsed?.msg !== "orchestrator listening") return;
      child.off("exit", onExit);
      if (parsed.port === port) resolve(performance.now());
      else reject(new Error(`orchestrator ${nodeId} listens on ${parsed.port}, not ${port}`));
    });
  });
  // Awaited by every caller; this only keeps an early exit from being an unhandled rejection.
  listening.catch(() => {});
  return { child, pid, nodeId, port, url: `http://127.0.0.1:${port}`, spawnedAt, listening };
}

/** Polls `check` every `pollMs` until it holds; throws `what` after `timeoutMs`. */
async function until(check: () => Promise<boolean>, what: string, timeoutMs = 30_000) {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return;
    await sleep(pollMs);
  }
  throw new Error(`${what} did not happen within ${timeoutMs} ms`);
}

async function isReady(node: Node): Promise<boolean> {
  const response = await fetch(`${node.url}/ready`).catch(() => undefined);
  await response?.arrayBuffer();
  return response?.ok === true;
}

/** One replication link as GET /peers shows it (REST JSON: 64-bit integers are strings). */
interface PeerView {
  readonly url: string;
  readonly state: string;
  readonly applied_revision: string;
  readonly lag_changes: string;
}

async function peersOf(node: Node): Promise<PeerView[] | undefined> {
  const response = await fetch(`${node.url}/peers`).catch(() => undefined);
  if (!response?.ok) {
    await response?.arrayBuffer();
    return undefined;
  }
  return ((await response.json()) as { peers?: PeerView[] }).peers ?? [];
}

async function allLinksLive(node: Node, peerCount: number): Promise<boolean> {
  const peers = await peersOf(node);
  return peers?.length === peerCount && peers.every((p) => p.state === "PEER_STATE_LIVE");
}

/**
 * Starts `count` nodes in a full mesh (`nodeArgs` to each node) and waits until every link of
 * every node is LIVE.
 */
async function startCluster(count: number, nodeArgs: readonly string[] = []): Promise<Node[]> {
  const ports = await freePorts(count);
  const urls = ports.map((port) => `http://127.0.0.1:${port}`);
  const nodes = ports.map((port, index) =>
    spawnNode(
      String.fromCharCode(97 + index),
      port,
      urls.filter((_, other) => other !== index),
      nodeArgs,
    ),
  );
  await Promise.all(nodes.map((node) => node.listening));
  for (const node of nodes) await until(() => isReady(node), `GET /ready on ${node.nodeId}`);
  for (const node of nodes) {
    await until(() => allLinksLive(node, count - 1), `every link of ${node.nodeId} LIVE`);
  }
  return nodes;
}

/** What a service of a real fleet declares; `version` carries the write's sequence number. */
function registration(name: string, version: string): RegisterServiceRequest {
  const baseUrl = `http://${name}.bench.internal:8080`;
  return create(RegisterServiceRequestSchema, {
    name,
    baseUrl,
    openapiUrl: `${baseUrl}/openapi.json`,
    endpoints: ["/v1/items", "/v1/items/{id}", "/v1/orders"],
    metadata: { team: "payments", region: "eu-west-1", owner: `${name}@example.com` },
    tags: ["prod", "payments", "v2"],
    version,
    ttlSeconds,
  });
}

const lagName = (seq: number) => `lag-${String(seq % nameCount).padStart(5, "0")}`;

/** A watch (on a node, or on an etcd member), recording when each write's event arrived. */
interface Watch {
  readonly label: string;
  /** By sequence number; NaN: never. */
  readonly seenAt: Float64Array;
  /** Resolves once the watch is live: changes made from then on are delivered. */
  readonly live: Promise<void>;
  received: number;
  /** PUT events that name no write of this run (none expected). */
  unexpected: number;
  stop(): Promise<void>;
}

/** Records that `watch` delivered `name` at `version` (a write's sequence number) at `at`. */
function noteEvent(watch: Watch, name: string, version: string, at: number): void {
  const seq = version === "" ? Number.NaN : Number(version);
  const known = Number.isInteger(seq) && seq >= 0 && seq < watch.seenAt.length;
  if (!known || name !== lagName(seq)) watch.unexpected++;
  else if (Number.isNaN(watch.seenAt[seq])) {
    watch.seenAt[seq] = at;
    watch.received++;
  }
}

function openWatch(label: string, node: Node, writes: number): Watch {
  const client = createGrpcJsClient(RegistryService, `127.0.0.1:${node.port}`, undefined, {
    // Its own connection: the watch must not share an HTTP/2 session with the writer.
    "grpc.use_local_subchannel_pool": 1,
  });
  const abort = new AbortController();
  const seenAt = new Float64Array(writes).fill(Number.NaN);
  let markLive = () => {};
  const live = new Promise<void>((resolve) => {
    markLive = resolve;
  });
  const watch: Watch = { label, seenAt, live, received: 0, unexpected: 0, stop: async () => {} };
  const stream = client.watchServices({ namePrefix: "lag-" }, { signal: abort.signal });
  const reading = (async () => {
    for await (const event of stream) {
      const at = performance.now();
      if (event.type === WatchEventType.SNAPSHOT_END) markLive();
      if (event.type !== WatchEventType.PUT || event.snapshot || !event.service) continue;
      noteEvent(watch, event.service.name, event.service.version, at);
    }
  })().catch((error: unknown) => {
    if (!abort.signal.aborted) throw error;
  });
  watch.stop = async () => {
    abort.abort();
    await reading;
    client.close();
  };
  return watch;
}

/** What the open-loop writer recorded, per write (index = sequence number). */
interface WriteLog {
  readonly dueAt: Float64Array;
  readonly sentAt: Float64Array;
  /** Until the write's answer; NaN when it failed. */
  readonly ackMs: Float64Array;
  failures: number;
}

/**
 * Calls `send` for writes 0 to `total` − 1 open loop at `rate` per second: write i is due at
 * start + i / rate and is sent as soon as it is due, never waiting for answers. `onMeasuring`
 * runs when the write `measuredFrom` goes out. Resolves once every write is answered.
 */
async function writeOpenLoop(
  send: (seq: number) => Promise<unknown>,
  total: number,
  measuredFrom: number,
  onMeasuring: () => void,
): Promise<WriteLog> {
  const log: WriteLog = {
    dueAt: new Float64Array(total),
    sentAt: new Float64Array(total),
    ackMs: new Float64Array(total).fill(Number.NaN),
    failures: 0,
  };
  const answers: Promise<void>[] = [];
  const due = dueTimes(total, measuredFrom, performance.now() + 10);
  let seq = 0;
  while (seq < total) {
    for (const now = performance.now(); seq < total && (due[seq] ?? 0) <= now; seq++) {
      if (seq === measuredFrom) onMeasuring();
      const sent = performance.now();
      log.dueAt[seq] = due[seq] ?? 0;
      log.sentAt[seq] = sent;
      const index = seq;
      answers.push(
        send(seq).then(
          () => {
            log.ackMs[index] = performance.now() - sent;
          },
          () => {
            log.failures++;
          },
        ),
      );
    }
    if (seq < total) await sleep(Math.max(0, (due[seq] ?? 0) - performance.now()));
  }
  await Promise.all(answers);
  return log;
}

/** The warm-up's rate starts at this share of `rate` and rises linearly to `rate`. */
const rampFrom = 0.1;

/**
 * When each write is due: the `warmup` first ones at a rate ramping up linearly from
 * `rampFrom` × `rate` to `rate` (so the warm-up takes 2 / (1 + rampFrom) times its nominal
 * seconds), then every 1 / `rate` s. A process fresh from its start runs about twice as slowly
 * until V8 has compiled its hot paths (some thousands of calls: a node warmed on other names takes
 * new ones at its steady speed), and at the full rate from the first write builds a backlog that
 * a node busy at half a core takes seconds to drain; the ramp lets every process warm up, etcd's
 * too, before the measured writes. The warm-up's lag is reported apart.
 */
function dueTimes(total: number, warmup: number, start: number): Float64Array {
  const due = new Float64Array(total);
  const [from, to] = [(rampFrom * rate) / 1000, rate / 1000]; // writes per ms
  const rampMs = (2 * warmup) / (from + to);
  const slope = (to - from) / rampMs;
  for (let seq = 0; seq < Math.min(warmup, total); seq++) {
    // Solves from·t + slope·t²/2 = seq: the time the ramp's cumulative writes reach seq.
    due[seq] = start + (-from + Math.sqrt(from * from + 2 * slope * seq)) / slope;
  }
  const steadyFrom = start + (warmup > 0 ? rampMs : 0);
  for (let seq = warmup; seq < total; seq++) due[seq] = steadyFrom + ((seq - warmup) * 1000) / rate;
  return due;
}

function sortedFinite(values: Iterable<number>): Float64Array {
  return Float64Array.from([...values].filter(Number.isFinite)).sort();
}

/** The processes whose CPU a run reads, by label (a node id, an etcd member's name). */
type Pids = Readonly<Record<string, number>>;

const pidsOf = (nodes: readonly Node[]): Pids =>
  Object.fromEntries(nodes.map((node) => [node.nodeId, node.pid]));

/**
 * CPU time, in µs: of every process of `pids`, of this process ("bench"), and of the whole
 * machine ("machine", every core, from /proc/stat), so that what other processes took in the
 * window shows as "other".
 */
type CpuReading = Record<string, number>;

function readCpu(pids: Pids): CpuReading {
  const usage = process.cpuUsage();
  const reading: CpuReading = { machine: machineBusyMicros(), bench: usage.user + usage.system };
  for (const [label, pid] of Object.entries(pids)) reading[label] = processCpuMicros(pid);
  return reading;
}

/** Busy time of all cores together (user, nice, system, irq, softirq, steal), from /proc/stat. */
function machineBusyMicros(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "";
  const [user, nice, system, , , irq, softirq, steal] = line
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const ticks = [user, nice, system, irq, softirq, steal].reduce<number>((t, n) => t + (n ?? 0), 0);
  // Clock ticks of 1/100 s, as in process-cpu.ts.
  return ticks * 10_000;
}

/** Each process's share of one core over the window, in percent, and "other" for the rest. */
function cpuPercent(before: CpuReading, after: CpuReading, wallMs: number): CpuReading {
  const percent: CpuReading = {};
  let ours = 0;
  for (const [name, micros] of Object.entries(after)) {
    if (name === "machine") continue;
    percent[name] = ((micros - (before[name] ?? micros)) / (wallMs * 1000)) * 100;
    ours += percent[name] ?? 0;
  }
  const machine = (((after.machine ?? 0) - (before.machine ?? 0)) / (wallMs * 1000)) * 100;
  percent.other = Math.max(0, machine - ours);
  return percent;
}

/** CPU µs each process of `pids` spent per write over the window of `writes` writes. */
function cpuPerWrite(
  before: CpuReading,
  after: CpuReading,
  pids: Pids,
  writes: number,
): Record<string, number> {
  return Object.fromEntries(
    Object.keys(pids).map((label) => [
      label,
      ((after[label] ?? Number.NaN) - (before[label] ?? Number.NaN)) / writes,
    ]),
  );
}

/** The CPU of one measured window: readings at its two ends and its wall time. */
interface CpuWindow {
  readonly before: CpuReading;
  readonly after: CpuReading;
  readonly wallMs: number;
}

/**
 * Writes `total` times with `send` open loop (see {@link writeOpenLoop}), reading the CPU of
 * `pids` when write `measuredFrom` goes out and once every write is answered.
 */
async function measuredWrites(
  send: (seq: number) => Promise<unknown>,
  total: number,
  measuredFrom: number,
  pids: Pids,
): Promise<{ log: WriteLog; cpu: CpuWindow }> {
  let before: CpuReading = {};
  let measuredAt = 0;
  const log = await writeOpenLoop(send, total, measuredFrom, () => {
    before = readCpu(pids);
    measuredAt = performance.now();
  });
  const after = readCpu(pids);
  return { log, cpu: { before, after, wallMs: performance.now() - measuredAt } };
}

interface LagRow {
  /** Orchestrator nodes, or etcd members. */
  readonly nodes: number;
  readonly watch: string;
  readonly writes: number;
  readonly writesPerSecond: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly seen: number;
  readonly lost: number;
  readonly superseded: number;
  readonly unexpectedEvents: number;
  readonly registerFailures: number;
  readonly registerP50Ms: number;
  readonly registerP99Ms: number;
  /** How late the writer sent its writes (a stall of this process). */
  readonly sendSlipP99Ms: number;
  readonly sendSlipMaxMs: number;
  /** Share of one core per process over the measured window, in percent. */
  readonly cpuPercent: CpuReading;
}

/** The lag of one watch over the measured writes, `from` to the end of the log. */
function lagRow(nodes: number, watch: Watch, log: WriteLog, from: number, cpu: CpuReading): LagRow {
  const total = log.sentAt.length;
  // The latest version of each name this watch saw: a missing earlier one was superseded.
  const latestSeen = new Map<string, number>();
  for (let seq = 0; seq < total; seq++) {
    if (!Number.isNaN(watch.seenAt[seq] ?? Number.NaN)) latestSeen.set(lagName(seq), seq);
  }
  const lags: number[] = [];
  let lost = 0;
  let superseded = 0;
  for (let seq = from; seq < total; seq++) {
    const seenAt = watch.seenAt[seq] ?? Number.NaN;
    if (!Number.isNaN(seenAt)) lags.push(seenAt - (log.sentAt[seq] ?? Number.NaN));
    else if ((latestSeen.get(lagName(seq)) ?? -1) > seq) superseded++;
    else lost++;
  }
  const sortedLags = sortedFinite(lags);
  const sentSpanMs = (log.sentAt[total - 1] ?? 0) - (log.sentAt[from] ?? 0);
  const acks = sortedFinite(log.ackMs.subarray(from));
  const slips = sortedFinite(
    log.sentAt.subarray(from).map((sent, i) => sent - (log.dueAt[from + i] ?? 0)),
  );
  return {
    nodes,
    watch: watch.label,
    writes: total - from,
    writesPerSecond: ((total - from - 1) / sentSpanMs) * 1000,
    p50Ms: percentile(sortedLags, 50),
    p90Ms: percentile(sortedLags, 90),
    p99Ms: percentile(sortedLags, 99),
    maxMs: sortedLags[sortedLags.length - 1] ?? Number.NaN,
    seen: sortedLags.length,
    lost,
    superseded,
    unexpectedEvents: watch.unexpected,
    registerFailures: log.failures,
    registerP50Ms: percentile(acks, 50),
    registerP99Ms: percentile(acks, 99),
    sendSlipP99Ms: percentile(slips, 99),
    sendSlipMaxMs: slips[slips.length - 1] ?? Number.NaN,
    cpuPercent: cpu,
  };
}

/** A watch's lag over the warm-up's writes: the cold start the measured window leaves out. */
interface WarmupLag {
  readonly label: string;
  readonly writes: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

function warmupLag(label: string, watch: Watch, log: WriteLog, writes: number): WarmupLag {
  const lags: number[] = [];
  for (let seq = 0; seq < writes; seq++) {
    lags.push((watch.seenAt[seq] ?? Number.NaN) - (log.sentAt[seq] ?? Number.NaN));
  }
  const sorted = sortedFinite(lags);
  return {
    label,
    writes,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: sorted[sorted.length - 1] ?? Number.NaN,
  };
}

/** Waits until every watch has seen every write, or `drainSeconds` after the last one. */
async function drained(watches: readonly Watch[], writes: number): Promise<void> {
  const deadline = performance.now() + drainSeconds * 1000;
  while (performance.now() < deadline && watches.some((w) => w.received < writes)) {
    await sleep(pollMs);
  }
}

/**
 * What replication adds to the same writes: B's receive time − A's own watch's receive time, per
 * write both watches delivered (negative when B's event happened to be read first).
 */
interface ReplicationIncrement {
  readonly nodes: number;
  readonly pairs: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

function replicationIncrement(
  nodes: number,
  remote: Watch,
  local: Watch,
  from: number,
): ReplicationIncrement {
  const deltas: number[] = [];
  for (let seq = from; seq < remote.seenAt.length; seq++) {
    deltas.push((remote.seenAt[seq] ?? Number.NaN) - (local.seenAt[seq] ?? Number.NaN));
  }
  const sorted = sortedFinite(deltas);
  return {
    nodes,
    pairs: sorted.length,
    p50Ms: percentile(sorted, 50),
    p90Ms: percentile(sorted, 90),
    p99Ms: percentile(sorted, 99),
    maxMs: sorted[sorted.length - 1] ?? Number.NaN,
  };
}

/** Every node's GET /metrics samples, by node id. */
type Scrape = ReadonlyMap<string, readonly MetricSample[]>;

async function scrapeNodes(nodes: readonly Node[]): Promise<Scrape> {
  const scrapes = await Promise.all(nodes.map((node) => scrapeMetrics(node.url)));
  return new Map(nodes.map((node, i) => [node.nodeId, scrapes[i] ?? []]));
}

const heapMetric = "nodejs_heap_size_used_bytes";
const receivedMetric = "orchestrator_replication_received_changes_total";
const appliedMetric = "orchestrator_replication_applied_changes_total";

/** Heap used (MB) per node id, from a scrape. */
function heapUsedMb(scrape: Scrape): Record<string, number> {
  return Object.fromEntries(
    [...scrape].map(([nodeId, samples]) => [
      nodeId,
      (samples.find((s) => s.name === heapMetric)?.value ?? Number.NaN) / 1e6,
    ]),
  );
}

/** Each node's heap at one moment of a run, `atSeconds` after the first write. */
interface HeapSample {
  readonly atSeconds: number;
  readonly usedMb: Record<string, number>;
}

/**
 * Reads every node's heap each `everyMs` into `samples` (a failed read is skipped); the returned
 * function stops it and waits for the reads under way.
 */
function sampleHeap(
  nodes: readonly Node[],
  everyMs: number,
  startedAt: number,
  samples: HeapSample[],
): () => Promise<void> {
  const pending: Promise<void>[] = [];
  const timer = setInterval(() => {
    pending.push(
      scrapeNodes(nodes).then(
        (scrape) => {
          const atSeconds = (performance.now() - startedAt) / 1000;
          samples.push({ atSeconds, usedMb: heapUsedMb(scrape) });
        },
        () => {},
      ),
    );
  }, everyMs);
  return async () => {
    clearInterval(timer);
    await Promise.all(pending);
  };
}

/** The replication changes one directed link carried over a run. */
interface LinkTraffic {
  readonly from: string;
  readonly to: string;
  /** Received by `to` from `from`, applied or not. */
  readonly changes: number;
  /** Of those, the ones that changed `to`'s registry: `to` learned them on this link first. */
  readonly applied: number;
  readonly perWrite: number;
  /**
   * Per write, what the echo-free design sends with every write made on A: 1 from A, 0 towards
   * A, and between two receivers every write but those the sender learned from the receiver
   * first (it does not send them back).
   */
  readonly expectedPerWrite: number;
  /** A link between two receivers: it relays A's writes. */
  readonly relay: boolean;
}

/** Each link's received and applied counters between two scrapes, ÷ `writes`. */
function linkTraffic(
  nodes: readonly Node[],
  before: Scrape,
  after: Scrape,
  writes: number,
): LinkTraffic[] {
  const writer = nodes[0]?.nodeId;
  const counter = (scrape: Scrape, metric: string, receiver: Node, sender: Node) =>
    scrape.get(receiver.nodeId)?.find((s) => s.name === metric && s.labels.peer === sender.url)
      ?.value ?? 0;
  const delta = (metric: string, receiver: Node, sender: Node) =>
    counter(after, metric, receiver, sender) - counter(before, metric, receiver, sender);
  const links: LinkTraffic[] = [];
  for (const sender of nodes) {
    for (const receiver of nodes) {
      if (receiver === sender) continue;
      const changes = delta(receivedMetric, receiver, sender);
      const relay = sender.nodeId !== writer && receiver.nodeId !== writer;
      const learnedFromReceiver = relay ? delta(appliedMetric, sender, receiver) : 0;
      links.push({
        from: sender.nodeId,
        to: receiver.nodeId,
        changes,
        applied: delta(appliedMetric, receiver, sender),
        perWrite: changes / writes,
        expectedPerWrite: receiver.nodeId === writer ? 0 : (writes - learnedFromReceiver) / writes,
        relay,
      });
    }
  }
  return links;
}

/** One node's cost over a run. */
interface NodeCost {
  readonly node: string;
  /** CPU over the measured window ÷ its writes, in µs. */
  readonly cpuMicrosPerWrite: number;
  /** Heap used after the drain. */
  readonly heapUsedMb: number;
}

interface LagRun {
  readonly nodes: number;
  readonly rows: LagRow[];
  /** The first watch's lag over the warm-up's writes (not in `rows`). */
  readonly warmup: WarmupLag;
  /** Undefined for a lone node. */
  readonly increment: ReplicationIncrement | undefined;
  /** Over every write of the run, warm-up included. */
  readonly writes: number;
  readonly links: LinkTraffic[];
  readonly costs: NodeCost[];
  /** Before the first write, every `heapSampleMs` when asked, and after the drain. */
  readonly heap: HeapSample[];
  /** With `retainedHeap`: after a full collection, before the first write and after the drain. */
  readonly retainedMb: { start: Record<string, number>; end: Record<string, number> } | undefined;
}

/** Options of {@link measureLag}. */
interface LagOptions {
  /** Measured seconds after the warm-up. Default: --seconds. */
  seconds: number;
  /** Reads every node's heap this often during the writes; 0: only before and after. */
  heapSampleMs: number;
  /**
   * Nodes collect their garbage on SIGUSR2 (--expose-gc and a bench-only preload), and the heap
   * they retain is read after a full collection before the first write and after the drain.
   * Default false.
   */
  retainedHeap: boolean;
}

/** Node flags that make SIGUSR2 run a full garbage collection (bench/gc-on-signal.ts). */
const collectOnSignal = [
  "--expose-gc",
  "--import",
  new URL("./gc-on-signal.js", import.meta.url).pathname,
];

/** Heap used (MB) per node id after each node has run a full garbage collection. */
async function retainedHeapMb(nodes: readonly Node[]): Promise<Record<string, number>> {
  for (const node of nodes) node.child.kill("SIGUSR2");
  // The collection runs on the node's event loop: give it time before reading.
  await sleep(1_000);
  return heapUsedMb(await scrapeNodes(nodes));
}

/**
 * One lag run: a fresh cluster of `count` nodes, writes on A, a watch on B (and one on A; a lone
 * node has only that one).
 */
async function measureLag(count: number, options: Partial<LagOptions> = {}): Promise<LagRun> {
  const {
    seconds: runSeconds,
    heapSampleMs: sampleMs,
    retainedHeap,
  } = { seconds, heapSampleMs: 0, retainedHeap: false, ...options };
  const nodes = await startCluster(count, retainedHeap ? collectOnSignal : []);
  try {
    const [a, b] = nodes;
    if (a === undefined) throw new Error("a cluster needs a node");
    const warmupWrites = Math.round(warmupSeconds * rate);
    const total = warmupWrites + Math.round(runSeconds * rate);
    const requests = Array.from({ length: total }, (_, seq) =>
      registration(lagName(seq), `${seq}`),
    );
    const local = openWatch(b === undefined ? "A (lone node)" : "A (same node)", a, total);
    const watches = b === undefined ? [local] : [openWatch("B (replicated)", b, total), local];
    await Promise.all(watches.map((w) => w.live));
    const retainedAtStart = retainedHeap ? await retainedHeapMb(nodes) : undefined;
    const before = await scrapeNodes(nodes);
    const heap: HeapSample[] = [{ atSeconds: 0, usedMb: heapUsedMb(before) }];
    process.stderr.write(`${count} node(s): ${total} writes on A at ${rate}/s\n`);
    const registry = createGrpcJsClient(RegistryService, `127.0.0.1:${a.port}`);
    const startedAt = performance.now();
    const stopSampling =
      sampleMs > 0 ? sampleHeap(nodes, sampleMs, startedAt, heap) : async () => {};
    const pids = pidsOf(nodes);
    const { log, cpu } = await measuredWrites(
      (seq) => registry.registerService(requests[seq] ?? {}),
      total,
      warmupWrites,
      pids,
    );
    registry.close();
    await drained(watches, total);
    await stopSampling();
    const after = await scrapeNodes(nodes);
    heap.push({ atSeconds: (performance.now() - startedAt) / 1000, usedMb: heapUsedMb(after) });
    const retainedAtEnd = retainedHeap ? await retainedHeapMb(nodes) : undefined;
    await Promise.all(watches.map((w) => w.stop()));
    const percent = cpuPercent(cpu.before, cpu.after, cpu.wallMs);
    const perWrite = cpuPerWrite(cpu.before, cpu.after, pids, total - warmupWrites);
    const heapAtEnd = heapUsedMb(after);
    const [remote] = watches;
    return {
      nodes: count,
      rows: watches.map((w) => lagRow(count, w, log, warmupWrites, percent)),
      warmup: warmupLag(
        `${count} node(s), watch on ${remote?.label ?? local.label}`,
        remote ?? local,
        log,
        warmupWrites,
      ),
      increment:
        b === undefined || remote === undefined
          ? undefined
          : replicationIncrement(count, remote, local, warmupWrites),
      writes: total,
      links: linkTraffic(nodes, before, after, total),
      costs: nodes.map((node) => ({
        node: node.nodeId,
        cpuMicrosPerWrite: perWrite[node.nodeId] ?? Number.NaN,
        heapUsedMb: heapAtEnd[node.nodeId] ?? Number.NaN,
      })),
      heap,
      retainedMb:
        retainedAtStart && retainedAtEnd
          ? { start: retainedAtStart, end: retainedAtEnd }
          : undefined,
    };
  } finally {
    await Promise.all(nodes.map((node) => stop(node.child)));
  }
}

const etcdPrefix = "/bench/";
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/**
 * etcd's counterpart of write `seq`: the same name, under a prefix; its value the sequence number
 * and, after a newline, the registration as JSON.
 */
function etcdPut(seq: number): { key: Uint8Array; value: Uint8Array } {
  const name = lagName(seq);
  const json = toJsonString(RegisterServiceRequestSchema, registration(name, `${seq}`));
  return { key: utf8.encode(`${etcdPrefix}${name}`), value: utf8.encode(`${seq}\n${json}`) };
}

function openEtcdWatch(label: string, member: EtcdMember, writes: number): Watch {
  const prefix = utf8.encode(etcdPrefix);
  const seenAt = new Float64Array(writes).fill(Number.NaN);
  const etcdWatch = watchEtcdPrefix(member.endpoint, prefix, (key, value) => {
    const at = performance.now();
    const name = fromUtf8.decode(key.subarray(prefix.length));
    const newline = value.indexOf(10);
    noteEvent(watch, name, fromUtf8.decode(value.subarray(0, Math.max(0, newline))), at);
  });
  const watch: Watch = {
    label,
    seenAt,
    live: etcdWatch.created,
    received: 0,
    unexpected: 0,
    stop: async () => etcdWatch.stop(),
  };
  return watch;
}

/** One etcd run: its lag row, its leader, and each member's CPU per put. */
interface EtcdRun {
  readonly members: number;
  readonly leader: string;
  readonly row: LagRow;
  readonly warmup: WarmupLag;
  readonly cpuMicrosPerPut: Record<string, number>;
}

/**
 * A throwaway etcd of `members`, the same writes as {@link measureLag} put open loop on member 1,
 * the watch on member 1 (one member) or member 2 (a cluster).
 */
async function measureEtcd(binary: string, members: number): Promise<EtcdRun> {
  const cluster = await startEtcd(binary, { members });
  try {
    const [writer, second] = cluster.members;
    const watched = members === 1 ? writer : second;
    if (writer === undefined || watched === undefined) throw new Error("etcd has too few members");
    const warmupWrites = Math.round(warmupSeconds * rate);
    const total = warmupWrites + Math.round(seconds * rate);
    const puts = Array.from({ length: total }, (_, seq) => etcdPut(seq));
    const label = members === 1 ? "m1 (same member)" : "m2 (puts on m1)";
    const watch = openEtcdWatch(label, watched, total);
    await watch.live;
    process.stderr.write(`etcd, ${members} member(s): ${total} puts on m1 at ${rate}/s\n`);
    const kv = createEtcdKv(writer.endpoint);
    const pids = Object.fromEntries(cluster.members.map((m) => [m.name, m.pid]));
    const { log, cpu } = await measuredWrites(
      (seq) => {
        const put = puts[seq] ?? etcdPut(seq);
        return kv.put(put.key, put.value);
      },
      total,
      warmupWrites,
      pids,
    );
    kv.close();
    await drained([watch], total);
    await watch.stop();
    return {
      members,
      leader: await etcdLeader(cluster),
      row: lagRow(members, watch, log, warmupWrites, cpuPercent(cpu.before, cpu.after, cpu.wallMs)),
      warmup: warmupLag(`etcd ${members} member(s), watch on ${label}`, watch, log, warmupWrites),
      cpuMicrosPerPut: cpuPerWrite(cpu.before, cpu.after, pids, total - warmupWrites),
    };
  } finally {
    await stopEtcd(cluster);
  }
}

/** Registers `entryCount` entries on `node`, `concurrency` calls in flight; returns seconds. */
async function fill(node: Node): Promise<number> {
  const registry = createGrpcJsClient(RegistryService, `127.0.0.1:${node.port}`);
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    for (let index = next++; index < entryCount; index = next++) {
      const name = `cu-${String(index).padStart(5, "0")}`;
      await registry.registerService(registration(name, "1.4.2"));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  registry.close();
  return (performance.now() - started) / 1000;
}

/** The node's revision and its full entry count, from one ListServices call. */
async function listing(node: Node): Promise<{ revision: number; entries: number }> {
  // 10,000 entries (~3.7 MB) come close to grpc-js' default 4 MiB receive limit.
  const registry = createGrpcJsClient(RegistryService, `127.0.0.1:${node.port}`, undefined, {
    "grpc.max_receive_message_length": 256 * 1024 * 1024,
  });
  const response = await registry.listServices({ pageSize: 0 });
  registry.close();
  return { revision: Number(response.revision), entries: response.services.length };
}

interface CatchUpRow {
  readonly round: number;
  readonly entries: number;
  readonly spawnToListeningMs: number;
  readonly spawnToCaughtUpMs: number;
  readonly listeningToCaughtUpMs: number;
  /** D's CPU time when it was seen caught up: start-up and sync together. */
  readonly cpuMsAtCaughtUp: number;
  readonly cpuMsAtListening: number;
}

async function caughtUp(node: Node, revision: number): Promise<boolean> {
  const [link] = (await peersOf(node)) ?? [];
  return (
    link?.state === "PEER_STATE_LIVE" &&
    Number(link.applied_revision) >= revision &&
    link.lag_changes === "0"
  );
}

/** Starts an empty node D following `a` and times it until it has applied A's `revision`. */
async function catchUpRound(a: Node, revision: number, round: number): Promise<CatchUpRow> {
  const [port] = await freePorts(1);
  if (port === undefined) throw new Error("no free port");
  const d = spawnNode(`d${round}`, port, [a.url]);
  try {
    let cpuMsAtListening = Number.NaN;
    void d.listening.then(() => {
      cpuMsAtListening = processCpuMicros(d.pid) / 1000;
    });
    await until(() => caughtUp(d, revision), `node d${round} caught up`);
    const caughtAt = performance.now();
    const cpuMsAtCaughtUp = processCpuMicros(d.pid) / 1000;
    const listeningAt = await d.listening;
    const { entries } = await listing(d);
    if (entries !== entryCount) throw new Error(`d${round} lists ${entries} entries`);
    return {
      round,
      entries,
      spawnToListeningMs: listeningAt - d.spawnedAt,
      spawnToCaughtUpMs: caughtAt - d.spawnedAt,
      listeningToCaughtUpMs: caughtAt - listeningAt,
      cpuMsAtCaughtUp,
      cpuMsAtListening,
    };
  } finally {
    await stop(d.child);
  }
}

async function measureCatchUp(): Promise<{ fillSeconds: number; rows: CatchUpRow[] }> {
  const [port] = await freePorts(1);
  if (port === undefined) throw new Error("no free port");
  const a = spawnNode("a", port, []);
  try {
    await a.listening;
    await until(() => isReady(a), "GET /ready on a");
    process.stderr.write(`catch-up: filling A with ${entryCount} entries\n`);
    const fillSeconds = await fill(a);
    const { revision, entries } = await listing(a);
    if (entries !== entryCount) throw new Error(`A lists ${entries} entries`);
    const rows: CatchUpRow[] = [];
    for (let round = 1; round <= catchUpRounds; round++) {
      rows.push(await catchUpRound(a, revision, round));
    }
    return { fillSeconds, rows };
  } finally {
    await stop(a.child);
  }
}

function cpuCell(cpu: CpuReading): string {
  const processes = Object.keys(cpu).filter((name) => name !== "bench" && name !== "other");
  return [...processes, "bench", "other"]
    .map((name) => `${name} ${fmt(cpu[name] ?? Number.NaN, 0)}`)
    .join(" / ");
}

/** The etcd run `nodes` orchestrators are judged by: one member for 1 or 2, else the cluster. */
function etcdReference(etcd: readonly EtcdRun[], nodes: number): EtcdRun | undefined {
  return etcd.find((run) => run.members === (nodes <= 2 ? 1 : 3));
}

/** p99 over 3 × the etcd reference's p99: at most 1 meets the target. */
function targetRatio(row: LagRow, etcd: readonly EtcdRun[]): number {
  return row.p99Ms / (3 * (etcdReference(etcd, row.nodes)?.row.p99Ms ?? Number.NaN));
}

const verdict = (ratio: number, limit: number) =>
  Number.isFinite(ratio) ? `${fmt(ratio, 2)}x ${ratio <= limit ? "(met)" : "(missed)"}` : "–";

function lagTable(rows: readonly LagRow[], etcd: readonly EtcdRun[]): string[] {
  return [
    `bench:replication — open-loop RegisterService on node A at ${count(rate)}/s for ${seconds} s after a ${warmupSeconds} s warm-up, rotating over ${count(nameCount)} names; lag = watch event received − register sent, both timed in this process. The writer, both watches and every orchestrator share this machine's ${cores} cores. 1 node: the lone baseline (no peers). Last column: p99 ÷ 3 × etcd's p99 measured in this run (one member for 1 and 2 nodes, the 3-member cluster for 3).`,
    "",
    "| nodes | watch on | writes | writes/s | p50 ms | p90 ms | p99 ms | max ms | seen | lost | superseded | register p50 / p99 ms | send slip p99 / max ms | CPU % of one core (other: rest of the machine) | p99 / (3 × etcd p99) |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ...rows.map(
      (r) =>
        `| ${r.nodes} | ${r.watch} | ${count(r.writes)} | ${fmt(r.writesPerSecond, 0)} | ${fmt(r.p50Ms, 2)} | ${fmt(r.p90Ms, 2)} | ${fmt(r.p99Ms, 2)} | ${fmt(r.maxMs, 2)} | ${count(r.seen)} | ${count(r.lost)} | ${count(r.superseded)} | ${fmt(r.registerP50Ms, 2)} / ${fmt(r.registerP99Ms, 2)} | ${fmt(r.sendSlipP99Ms, 2)} / ${fmt(r.sendSlipMaxMs, 1)} | ${cpuCell(r.cpuPercent)} | ${verdict(targetRatio(r, etcd), 1)} |`,
    ),
  ];
}

function warmupTable(nodes: readonly WarmupLag[], etcd: readonly WarmupLag[]): string[] {
  return [
    `Warm-up, left out of the tables above: the first ${count(Math.round(warmupSeconds * rate))} writes, from each process's start, at a rate ramping up from ${count(rampFrom * rate)}/s to ${count(rate)}/s (${fmt((2 * warmupSeconds) / (1 + rampFrom), 1)} s): cold code, and every name's first write.`,
    "",
    "| run | writes | p50 ms | p99 ms | max ms |",
    "|---|---:|---:|---:|---:|",
    ...[...nodes, ...etcd].map(
      (w) =>
        `| ${w.label} | ${count(w.writes)} | ${fmt(w.p50Ms, 2)} | ${fmt(w.p99Ms, 2)} | ${fmt(w.maxMs, 1)} |`,
    ),
  ];
}

function incrementTable(rows: readonly ReplicationIncrement[]): string[] {
  return [
    "What replication adds, write by write: B's event − A's own event for the same write (both watches read by this process).",
    "",
    "| nodes | writes seen on both | p50 ms | p90 ms | p99 ms | max ms |",
    "|---:|---:|---:|---:|---:|---:|",
    ...rows.map(
      (r) =>
        `| ${r.nodes} | ${count(r.pairs)} | ${fmt(r.p50Ms, 2)} | ${fmt(r.p90Ms, 2)} | ${fmt(r.p99Ms, 2)} | ${fmt(r.maxMs, 2)} |`,
    ),
  ];
}

function etcdTable(etcd: readonly EtcdRun[], version: string | undefined): string[] {
  if (version === undefined) return [`etcd: ${etcdMissing}; no etcd figures, no ratios.`];
  const perPut = (run: EtcdRun) =>
    Object.entries(run.cpuMicrosPerPut)
      .map(([member, micros]) => `${member} ${fmt(micros, 0)}`)
      .join(" / ");
  return [
    `etcd ${version}, measured in this run: a throwaway one-member etcd (before the 2-node run) and a 3-member cluster (Raft, before the 3-node run), data on tmpfs, loopback. The same open-loop writer puts the same ${count(nameCount)} rotating names on m1 at ${count(rate)}/s for ${seconds} s after a ${warmupSeconds} s warm-up (value: the sequence number and the registration as JSON); lag = watch event received − put sent, both timed in this process.`,
    "",
    "| members | watch on | leader | writes | writes/s | p50 ms | p90 ms | p99 ms | max ms | seen | missing | put p50 / p99 ms | send slip p99 / max ms | CPU µs per put | CPU % of one core |",
    "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ...etcd.map((run) => {
      const r = run.row;
      return `| ${run.members} | ${r.watch} | ${run.leader} | ${count(r.writes)} | ${fmt(r.writesPerSecond, 0)} | ${fmt(r.p50Ms, 2)} | ${fmt(r.p90Ms, 2)} | ${fmt(r.p99Ms, 2)} | ${fmt(r.maxMs, 2)} | ${count(r.seen)} | ${count(r.lost + r.superseded)} | ${fmt(r.registerP50Ms, 2)} / ${fmt(r.registerP99Ms, 2)} | ${fmt(r.sendSlipP99Ms, 2)} / ${fmt(r.sendSlipMaxMs, 1)} | ${perPut(run)} | ${cpuCell(r.cpuPercent)} |`;
    }),
  ];
}

function targetLines(rows: readonly LagRow[], etcd: readonly EtcdRun[]): string[] {
  const judged = rows.filter((r) => r.nodes >= 2 && r.watch.startsWith("B"));
  return [
    "Tail targets (issue 10), against etcd measured in this run:",
    ...judged.map((r) => {
      const reference = etcdReference(etcd, r.nodes);
      const name = r.nodes === 2 ? "etcd one member" : "the etcd cluster";
      if (reference === undefined) return `- ${r.nodes} nodes, watch on B: no etcd figures`;
      const p99 = reference.row.p99Ms;
      return `- ${r.nodes} nodes, watch on B: p99 ${fmt(r.p99Ms, 2)} ms ≤ 3 × ${name}'s p99 ${fmt(p99, 2)} ms = ${fmt(3 * p99, 2)} ms: ${verdict(targetRatio(r, etcd), 1)}; p50 ${fmt(r.p50Ms, 2)} ms (etcd ${fmt(reference.row.p50Ms, 2)} ms), max ${fmt(r.maxMs, 1)} ms (etcd ${fmt(reference.row.maxMs, 1)} ms), lost ${count(r.lost)} (etcd ${count(reference.row.lost)})`;
    }),
  ];
}

/**
 * "yes" when a link carried exactly the changes the design expects; fewer when a slow link
 * coalesced a backlog per name (the lag table counts those writes as superseded); "NO" for more.
 */
function asDesigned(changes: number, expected: number): string {
  if (changes === expected) return "yes";
  return changes < expected ? `fewer (${count(expected - changes)} coalesced)` : "NO";
}

function trafficTable(runs: readonly LagRun[]): string[] {
  return [
    "Messages per write per directed link: orchestrator_replication_received_changes_total{peer} on the receiving node (GET /metrics), read before the first write and after the drain, ÷ every write of the run (warm-up included); applied: orchestrator_replication_applied_changes_total, the changes the receiver learned on that link first. The echo-free design: 1 on each link from A, 0 towards A, and between two other nodes every write but those the sender learned from the receiver first (the applied count of the opposite link); any link carries fewer when it falls behind and coalesces its backlog per name (the lag table's superseded writes). So (N-1)² per write in all, 1 with 2 nodes and 4 with 3, less the writes that reached a node through the other receiver before A's own message.",
    "",
    "| nodes | link | changes received | applied | per write | expected per write | as designed |",
    "|---:|---|---:|---:|---:|---:|---|",
    ...runs.flatMap((run) => {
      const sum = (pick: (l: LinkTraffic) => number) =>
        run.links.reduce((total, l) => total + pick(l), 0);
      const changes = sum((l) => l.changes);
      const expected = sum((l) => l.expectedPerWrite);
      return [
        ...run.links.map(
          (l) =>
            `| ${run.nodes} | ${l.from} → ${l.to} | ${count(l.changes)} | ${count(l.applied)} | ${fmt(l.perWrite, 3)} | ${fmt(l.expectedPerWrite, 3)} | ${asDesigned(l.changes, Math.round(l.expectedPerWrite * run.writes))} |`,
        ),
        `| ${run.nodes} | all links | ${count(changes)} | ${count(sum((l) => l.applied))} | ${fmt(changes / run.writes, 3)} | ${fmt(expected, 3)} | ${asDesigned(changes, Math.round(expected * run.writes))} |`,
      ];
    }),
  ];
}

/** What a node does in a run with every write on A, B watched (and A too). */
function role(nodes: number, node: string): string {
  if (nodes === 1) return "lone node: registers, serves a watch";
  if (node === "a") return `writer, ${nodes - 1} peer${nodes > 2 ? "s" : ""}, serves a watch`;
  return node === "b" ? "receiver, serves the watch" : "receiver";
}

/** The bound on a node's CPU per write over the lone register, if it sets one. */
function cpuLimit(nodes: number, node: string): number | undefined {
  if (nodes === 1) return undefined;
  if (node !== "a") return 1;
  return nodes === 3 ? 2 : undefined;
}

function costTable(lone: LagRun, runs: readonly LagRun[]): string[] {
  const baseline = lone.costs[0]?.cpuMicrosPerWrite ?? Number.NaN;
  const measured = Math.round(seconds * rate);
  return [
    `Per node: CPU per write (its CPU from /proc over the measured window ÷ the window's ${count(measured)} writes) and its ratio to the lone node's CPU per register (${fmt(baseline, 0)} µs, this run); heap used after the drain (nodejs_heap_size_used_bytes). Targets (issue 10): the writer with 2 peers ≤ 2x the lone register, a receiver ≤ 1x.`,
    "",
    "| nodes | node | role | CPU µs per write | × lone register | target | heap used MB at end |",
    "|---:|---|---|---:|---:|---|---:|",
    ...[lone, ...runs].flatMap((run) =>
      run.costs.map((c) => {
        const ratio = c.cpuMicrosPerWrite / baseline;
        const limit = cpuLimit(run.nodes, c.node);
        const target = limit === undefined ? "" : `≤ ${limit}x: ${verdict(ratio, limit)}`;
        return `| ${run.nodes} | ${c.node} | ${role(run.nodes, c.node)} | ${fmt(c.cpuMicrosPerWrite, 0)} | ${fmt(ratio, 2)}x | ${target} | ${fmt(c.heapUsedMb, 1)} |`;
      }),
    ),
  ];
}

function heapTable(run: LagRun): string[] {
  const nodes = run.costs.map((c) => c.node);
  const remote = run.rows.find((r) => r.watch.startsWith("B"));
  const samplesOf = (node: string) => run.heap.map((s) => s.usedMb[node] ?? Number.NaN);
  const retained = (at: "start" | "end", node: string) => run.retainedMb?.[at][node] ?? Number.NaN;
  return [
    `Heap over a ${heapSeconds} s run: ${run.nodes} nodes, writes on A at ${count(rate)}/s after a ${warmupSeconds} s warm-up, rotating over ${count(nameCount)} names; nodejs_heap_size_used_bytes of each node as read before the first write, every ${heapSampleMs / 1000} s and after the drain (${run.heap.length} readings: max, end), and after a full garbage collection (SIGUSR2 to a bench-only preload) before the first write and after the drain (retained). Bound: the heap retained at the end under ${heapBoundMb} MB.`,
    "",
    "| node | role | retained MB at start | max MB read | MB read at end | retained MB at end | under the bound |",
    "|---|---|---:|---:|---:|---:|---|",
    ...nodes.map((node) => {
      const samples = samplesOf(node);
      const max = Math.max(...samples.filter(Number.isFinite));
      const end = retained("end", node);
      return `| ${node} | ${role(run.nodes, node)} | ${fmt(retained("start", node), 1)} | ${fmt(max, 1)} | ${fmt(samples[samples.length - 1] ?? Number.NaN, 1)} | ${fmt(end, 1)} | ${end < heapBoundMb ? "yes" : "NO"} |`;
    }),
    remote === undefined
      ? ""
      : `Lag over that run, watch on B: p50 ${fmt(remote.p50Ms, 2)} ms, p99 ${fmt(remote.p99Ms, 2)} ms, max ${fmt(remote.maxMs, 1)} ms, ${count(remote.seen)} seen, ${count(remote.lost)} lost, ${count(remote.superseded)} superseded.`,
  ];
}

function catchUpTable(rows: readonly CatchUpRow[], fillSeconds: number): string[] {
  const cell = (ms: number) => `${fmt(ms, 0)}${ms < 1000 ? "" : " (over 1 s)"}`;
  const medianRow = (pick: (r: CatchUpRow) => number) => median(rows.map(pick));
  return [
    `Catch-up: node A alone holds ${count(entryCount)} entries (filled at ${count(entryCount / fillSeconds)} registers/s, ${concurrency} in flight); a new empty node D starts with ORCHESTRATOR_PEERS=A and GET /peers on D is polled every ${pollMs} ms until its link is LIVE at A's revision with no lag; a full listing on D then checks the count. Target: under 1 s.`,
    "",
    "| round | entries on D | spawn → listening ms | spawn → caught up ms | listening → caught up ms | D CPU ms at listening | D CPU ms at caught up |",
    "|---|---:|---:|---:|---:|---:|---:|",
    ...rows.map(
      (r) =>
        `| ${r.round} | ${count(r.entries)} | ${fmt(r.spawnToListeningMs, 0)} | ${cell(r.spawnToCaughtUpMs)} | ${cell(r.listeningToCaughtUpMs)} | ${fmt(r.cpuMsAtListening, 0)} | ${fmt(r.cpuMsAtCaughtUp, 0)} |`,
    ),
    `| median | | ${fmt(
      medianRow((r) => r.spawnToListeningMs),
      0,
    )} | ${cell(medianRow((r) => r.spawnToCaughtUpMs))} | ${cell(medianRow((r) => r.listeningToCaughtUpMs))} | ${fmt(
      medianRow((r) => r.cpuMsAtListening),
      0,
    )} | ${fmt(
      medianRow((r) => r.cpuMsAtCaughtUp),
      0,
    )} |`,
  ];
}

function anchorFootnote(sentence: string | undefined): string[] {
  if (sentence === undefined)
    return ["Published etcd figures: ../shared/bench/README.md not found."];
  return [
    "Published etcd figures (../shared/bench/README.md, another sitting; not this run's):",
    `> ${sentence}`,
  ];
}

async function run(): Promise<void> {
  const etcdBinary = findEtcd();
  if (etcdBinary === undefined) process.stderr.write(`${etcdMissing}\n`);
  const version = etcdBinary === undefined ? undefined : etcdVersion(etcdBinary);
  const lone = await measureLag(1);
  const etcd: EtcdRun[] = [];
  const runs: LagRun[] = [];
  for (const size of clusterSizes) {
    if (etcdBinary !== undefined) etcd.push(await measureEtcd(etcdBinary, size === 2 ? 1 : 3));
    runs.push(await measureLag(size));
  }
  const lagRows = [lone, ...runs].flatMap((r) => r.rows);
  const increments = runs.flatMap((r) => (r.increment ? [r.increment] : []));
  const catchUp = await measureCatchUp();
  const heapRun =
    heapSeconds > 0
      ? await measureLag(3, { seconds: heapSeconds, heapSampleMs, retainedHeap: true })
      : undefined;
  const anchor = readAnchorSentence();
  const lines = [
    ...lagTable(lagRows, etcd),
    "",
    ...incrementTable(increments),
    "",
    ...etcdTable(etcd, version),
    "",
    ...warmupTable(
      [lone, ...runs].map((r) => r.warmup),
      etcd.map((r) => r.warmup),
    ),
    "",
    ...targetLines(lagRows, etcd),
    "",
    ...trafficTable(runs),
    "",
    ...costTable(lone, runs),
    "",
    ...catchUpTable(catchUp.rows, catchUp.fillSeconds),
    ...(heapRun ? ["", ...heapTable(heapRun)] : []),
    "",
    ...anchorFootnote(anchor),
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
  const file = writeResults("replication", {
    bench: "replication",
    date: new Date().toISOString(),
    node: process.version,
    cores,
    seconds,
    warmupSeconds,
    rate,
    names: nameCount,
    ttlSeconds,
    entries: entryCount,
    concurrency,
    lag: lagRows.map((row) => ({ ...row, targetRatio: targetRatio(row, etcd) })),
    replicationIncrement: increments,
    etcd: { version: version ?? null, runs: etcd },
    runs: [lone, ...runs].map(({ nodes, writes, links, costs, warmup }) => ({
      nodes,
      warmup,
      writes,
      links,
      costs,
    })),
    catchUp,
    heap: heapRun
      ? {
          seconds: heapSeconds,
          boundMb: heapBoundMb,
          samples: heapRun.heap,
          retainedMb: heapRun.retainedMb,
          lag: heapRun.rows,
        }
      : null,
    publishedAnchor: anchor ?? null,
  });
  process.stdout.write(`written ${file}\n`);
}

await run();
process.exit(0);
