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
// 1,000/s) and sent then, whether or not earlier ones have been answered. The writes rotate over a
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
//   npm run bench:replication [-- --seconds 10 --warmup 2 --rate 1000 --names 1000
//                                 --entries 10000 --catchup-rounds 3 --cpu-prof-dir /tmp/prof]
//
// The etcd anchor (../shared/bench/) is not run here: its published figures are printed beside
// ours, labelled as such.
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { create } from "@bufbuild/protobuf";
import {
  type RegisterServiceRequest,
  RegisterServiceRequestSchema,
  RegistryService,
  WatchEventType,
} from "../gen/orchestrator/v1/registry_pb.js";
import { createGrpcJsClient } from "../src/clients/grpc-js-client.js";
import { processCpuMicros } from "./process-cpu.js";
import {
  count,
  fmt,
  freePorts,
  median,
  parseLogLine,
  percentile,
  readAnchorSentence,
  stop,
  track,
  writeResults,
} from "./support.js";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    warmup: { type: "string", default: "2" },
    rate: { type: "string", default: "1000" },
    names: { type: "string", default: "1000" },
    drain: { type: "string", default: "5" },
    entries: { type: "string", default: "10000" },
    // Each orchestrator writes a V8 CPU profile there when it stops (node --cpu-prof).
    "cpu-prof-dir": { type: "string", default: "" },
    concurrency: { type: "string", default: "64" },
    "catchup-rounds": { type: "string", default: "3" },
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
const clusterSizes = [2, 3] as const;
const pollMs = 20;
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
 * Spawns the orchestrator exactly as `npm start` runs it, on `port`, replicating with `peers`.
 * `listening` resolves when its "orchestrator listening" line names that port.
 */
function spawnNode(nodeId: string, port: number, peers: readonly string[]): Node {
  const main = new URL("../src/main.js", import.meta.url).pathname;
  const spawnedAt = performance.now();
  const profile = args["cpu-prof-dir"]
    ? [
        "--cpu-prof",
        `--cpu-prof-dir=${args["cpu-prof-dir"]}`,
        `--cpu-prof-name=${nodeId}-${port}.cpuprofile`,
      ]
    : [];
  const child = spawn(process.execPath, [...profile, main], {
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

/** Starts `count` nodes in a full mesh and waits until every link of every node is LIVE. */
async function startCluster(count: number): Promise<Node[]> {
  const ports = await freePorts(count);
  const urls = ports.map((port) => `http://127.0.0.1:${port}`);
  const nodes = ports.map((port, index) =>
    spawnNode(
      String.fromCharCode(97 + index),
      port,
      urls.filter((_, other) => other !== index),
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

/** A gRPC watch on one node, recording when each write's event arrived (NaN: never). */
interface Watch {
  readonly label: string;
  readonly seenAt: Float64Array;
  /** Resolves once the (empty) snapshot has ended: live changes follow. */
  readonly live: Promise<void>;
  received: number;
  /** PUT events that name no write of this run (none expected). */
  unexpected: number;
  stop(): Promise<void>;
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
      const seq = Number(event.service.version);
      const known = Number.isInteger(seq) && seq >= 0 && seq < writes;
      if (!known || event.service.name !== lagName(seq)) watch.unexpected++;
      else if (Number.isNaN(seenAt[seq])) {
        seenAt[seq] = at;
        watch.received++;
      }
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
  /** Until the register's answer; NaN when it failed. */
  readonly ackMs: Float64Array;
  failures: number;
}

/**
 * Sends `requests` to `node` open loop at `rate` per second: write i is due at start + i / rate
 * and is sent as soon as it is due, never waiting for answers. `onMeasuring` runs when the write
 * `measuredFrom` goes out.
 */
async function writeOpenLoop(
  node: Node,
  requests: readonly RegisterServiceRequest[],
  measuredFrom: number,
  onMeasuring: () => void,
): Promise<WriteLog> {
  const registry = createGrpcJsClient(RegistryService, `127.0.0.1:${node.port}`);
  const total = requests.length;
  const log: WriteLog = {
    dueAt: new Float64Array(total),
    sentAt: new Float64Array(total),
    ackMs: new Float64Array(total).fill(Number.NaN),
    failures: 0,
  };
  const answers: Promise<void>[] = [];
  const gapMs = 1000 / rate;
  const start = performance.now() + 10;
  let seq = 0;
  while (seq < total) {
    for (const now = performance.now(); seq < total && start + seq * gapMs <= now; seq++) {
      if (seq === measuredFrom) onMeasuring();
      const sent = performance.now();
      log.dueAt[seq] = start + seq * gapMs;
      log.sentAt[seq] = sent;
      const index = seq;
      answers.push(
        registry.registerService(requests[seq] ?? {}).then(
          () => {
            log.ackMs[index] = performance.now() - sent;
          },
          () => {
            log.failures++;
          },
        ),
      );
    }
    if (seq < total) await sleep(Math.max(0, start + seq * gapMs - performance.now()));
  }
  await Promise.all(answers);
  registry.close();
  return log;
}

function sortedFinite(values: Iterable<number>): Float64Array {
  return Float64Array.from([...values].filter(Number.isFinite)).sort();
}

/**
 * CPU time, in µs: of every node, of this process ("bench"), and of the whole machine ("machine",
 * every core, from /proc/stat), so that what other processes took in the window shows as "other".
 */
type CpuReading = Record<string, number>;

function readCpu(nodes: readonly Node[]): CpuReading {
  const usage = process.cpuUsage();
  const reading: CpuReading = { machine: machineBusyMicros(), bench: usage.user + usage.system };
  for (const node of nodes) reading[node.nodeId] = processCpuMicros(node.pid);
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

interface LagRow {
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
  /** p99 over 3 × etcd's put-to-watch p99: at most 1 meets the target. */
  readonly targetRatio: number;
}

/** The lag of one watch over the measured writes, `from` to the end of the log. */
function lagRow(
  nodes: number,
  watch: Watch,
  log: WriteLog,
  from: number,
  cpu: CpuReading,
  anchorP99Ms: number,
): LagRow {
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
  const p99Ms = percentile(sortedLags, 99);
  return {
    nodes,
    watch: watch.label,
    writes: total - from,
    writesPerSecond: ((total - from - 1) / sentSpanMs) * 1000,
    p50Ms: percentile(sortedLags, 50),
    p90Ms: percentile(sortedLags, 90),
    p99Ms,
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
    targetRatio: p99Ms / (3 * anchorP99Ms),
  };
}

/** Waits until every watch has seen every write, or `drainSeconds` after the last one. */
async function drained(watches: readonly Watch[], writes: number): Promise<void> {
  const deadline = performance.now() + drainSeconds * 1000;
  while (performance.now() < deadline && watches.some((w) => w.received < writes)) {
    await sleep(pollMs);
  }
}

/** One lag run: a fresh cluster of `count` nodes, writes on A, a watch on B (and one on A). */
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

interface LagRun {
  readonly rows: LagRow[];
  readonly increment: ReplicationIncrement;
}

async function measureLag(count: number, anchorP99Ms: number): Promise<LagRun> {
  const nodes = await startCluster(count);
  try {
    const [a, b] = nodes;
    if (a === undefined || b === undefined) throw new Error("a cluster needs two nodes");
    const warmupWrites = Math.round(warmupSeconds * rate);
    const total = warmupWrites + Math.round(seconds * rate);
    const requests = Array.from({ length: total }, (_, seq) =>
      registration(lagName(seq), `${seq}`),
    );
    const remote = openWatch("B (replicated)", b, total);
    const local = openWatch("A (same node)", a, total);
    const watches = [remote, local];
    await Promise.all(watches.map((w) => w.live));
    process.stderr.write(`${count} nodes: ${total} writes on A at ${rate}/s\n`);
    let cpuBefore: CpuReading = {};
    let measuredAt = 0;
    const log = await writeOpenLoop(a, requests, warmupWrites, () => {
      cpuBefore = readCpu(nodes);
      measuredAt = performance.now();
    });
    const cpu = cpuPercent(cpuBefore, readCpu(nodes), performance.now() - measuredAt);
    await drained(watches, total);
    await Promise.all(watches.map((w) => w.stop()));
    return {
      rows: watches.map((w) => lagRow(count, w, log, warmupWrites, cpu, anchorP99Ms)),
      increment: replicationIncrement(count, remote, local, warmupWrites),
    };
  } finally {
    await Promise.all(nodes.map((node) => stop(node.child)));
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

/** The etcd anchor as ../shared/bench/README.md gives it: not measured by this bench. */
interface Anchor {
  readonly sentence: string;
  readonly watchP50Ms: number;
  readonly watchP99Ms: number;
}

function readAnchor(): Anchor | undefined {
  const sentence = readAnchorSentence();
  const figures = /put-to-watch p50 ([\d.]+) ms, p99 ([\d.]+) ms/.exec(sentence ?? "");
  if (sentence === undefined || figures === null) return undefined;
  return { sentence, watchP50Ms: Number(figures[1]), watchP99Ms: Number(figures[2]) };
}

function cpuCell(cpu: CpuReading): string {
  const nodes = Object.keys(cpu).filter((name) => name !== "bench" && name !== "other");
  return [...nodes, "bench", "other"]
    .map((name) => `${name} ${fmt(cpu[name] ?? Number.NaN, 0)}`)
    .join(" / ");
}

function lagTable(rows: readonly LagRow[], anchorP99Ms: number): string[] {
  return [
    `bench:replication — open-loop RegisterService on node A at ${count(rate)}/s for ${seconds} s after a ${warmupSeconds} s warm-up, rotating over ${count(nameCount)} names; lag = watch event received − register sent, both timed in this process. The writer, both watches and every orchestrator share this machine's ${cores} cores.`,
    "",
    `| nodes | watch on | writes | writes/s | p50 ms | p90 ms | p99 ms | max ms | seen | lost | superseded | register p50 / p99 ms | send slip p99 / max ms | CPU % of one core (other: rest of the machine) | p99 / (3 × ${anchorP99Ms} ms) |`,
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ...rows.map(
      (r) =>
        `| ${r.nodes} | ${r.watch} | ${count(r.writes)} | ${fmt(r.writesPerSecond, 0)} | ${fmt(r.p50Ms, 2)} | ${fmt(r.p90Ms, 2)} | ${fmt(r.p99Ms, 2)} | ${fmt(r.maxMs, 2)} | ${count(r.seen)} | ${count(r.lost)} | ${count(r.superseded)} | ${fmt(r.registerP50Ms, 2)} / ${fmt(r.registerP99Ms, 2)} | ${fmt(r.sendSlipP99Ms, 2)} / ${fmt(r.sendSlipMaxMs, 1)} | ${cpuCell(r.cpuPercent)} | ${fmt(r.targetRatio, 2)}x ${r.targetRatio <= 1 ? "(met)" : "(missed)"} |`,
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

function anchorLines(anchor: Anchor | undefined, rows: readonly LagRow[]): string[] {
  if (anchor === undefined)
    return ["Anchor: ../shared/bench/README.md not found; no etcd figures."];
  const limit = 3 * anchor.watchP99Ms;
  return [
    "Anchor (etcd, from ../shared/bench/README.md — NOT measured in this run; machines are noisy):",
    `> ${anchor.sentence}`,
    `Target: lag p99 ≤ 3 × ${anchor.watchP99Ms} ms = ${fmt(limit, 2)} ms (etcd's figure is single-node put-to-watch: compare the "A (same node)" rows like for like).`,
    ...rows.map(
      (r) =>
        `- ${r.nodes} nodes, watch on ${r.watch}: p99 ${fmt(r.p99Ms, 2)} ms / ${fmt(limit, 2)} ms = ${fmt(r.targetRatio, 2)}x; p50 ${fmt(r.p50Ms / anchor.watchP50Ms, 1)}x etcd's p50`,
    ),
  ];
}

async function run(): Promise<void> {
  const anchor = readAnchor();
  const anchorP99Ms = anchor?.watchP99Ms ?? Number.NaN;
  const runs: LagRun[] = [];
  for (const size of clusterSizes) runs.push(await measureLag(size, anchorP99Ms));
  const lagRows = runs.flatMap((r) => r.rows);
  const increments = runs.map((r) => r.increment);
  const catchUp = await measureCatchUp();
  const lines = [
    ...lagTable(lagRows, anchorP99Ms),
    "",
    ...incrementTable(increments),
    "",
    ...catchUpTable(catchUp.rows, catchUp.fillSeconds),
    "",
    ...anchorLines(anchor, lagRows),
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
    lag: lagRows,
    replicationIncrement: increments,
    catchUp,
    anchor: anchor ? { measuredInThisRun: false, ...anchor } : null,
  });
  process.stdout.write(`written ${file}\n`);
}

await run();
process.exit(0);
