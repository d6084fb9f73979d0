// etcd for the benches: a throwaway one- or three-member etcd on free loopback ports (data on
// tmpfs), a put, and a prefix watch, spoken over etcd's gRPC API with the project's own grpc-js
// and a few hand-encoded protobuf messages: no etcd client library, no .proto file.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
} from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import * as grpc from "@grpc/grpc-js";
import { freePorts, scrapeMetrics, stop, track } from "./support.js";

/** What the bench prints when there is no etcd to measure. */
export const etcdMissing = "etcd not installed (apt-get install etcd-server)";

/** The `etcd` executable on PATH, or undefined when there is none. */
export function findEtcd(path = process.env.PATH ?? ""): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, "etcd");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return undefined;
}

/** "3.4.23" from `etcd --version`, or "unknown". */
export function etcdVersion(binary: string): string {
  const output = execFileSync(binary, ["--version"], { encoding: "utf8" });
  return /etcd Version: (\S+)/.exec(output)?.[1] ?? "unknown";
}

/** One member of a throwaway etcd. */
export interface EtcdMember {
  /** "m1", "m2", ... */
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** host:port of its gRPC client API. */
  readonly endpoint: string;
}

/** A throwaway etcd of one or more members, all on loopback. */
export interface EtcdCluster {
  readonly members: readonly EtcdMember[];
  /** Holds every member's data dir and log; {@link stopEtcd} removes it. */
  readonly dir: string;
}

/** Options of {@link startEtcd}. */
export interface EtcdOptions {
  /** Members of the cluster (Raft when more than one). Default 1. */
  members: number;
  /** Gives up waiting for every member's GET /health after this long. Default 30,000 ms. */
  healthTimeoutMs: number;
  /** Starts again on other ports when a member exits first (a port taken meanwhile). Default 3. */
  attempts: number;
}

const defaultEtcdOptions: Readonly<EtcdOptions> = Object.freeze({
  members: 1,
  healthTimeoutMs: 30_000,
  attempts: 3,
});

/**
 * Starts `binary` as a new etcd cluster of `members` on free loopback ports, data dirs on
 * /dev/shm (else the temp dir), and waits until every member answers GET /health with a leader.
 * @throws Error with the tail of a member's log when the cluster does not come up.
 */
export async function startEtcd(
  binary: string,
  options: Partial<EtcdOptions> = {},
): Promise<EtcdCluster> {
  const { members, healthTimeoutMs, attempts } = { ...defaultEtcdOptions, ...options };
  for (let attempt = 1; ; attempt++) {
    const dir = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "bench-etcd-"));
    const cluster = await spawnMembers(binary, dir, members);
    try {
      await untilHealthy(cluster, healthTimeoutMs);
      return cluster;
    } catch (error) {
      const exited = cluster.members.some((m) => m.child.exitCode !== null);
      const log = await readFile(join(dir, "m1.log"), "utf8").catch(() => "");
      await stopEtcd(cluster);
      if (!exited || attempt >= attempts) {
        throw new Error(`etcd did not come up: ${String(error)}\n${log.slice(-2000)}`);
      }
    }
  }
}

async function spawnMembers(binary: string, dir: string, count: number): Promise<EtcdCluster> {
  const ports = await freePorts(2 * count);
  const names = Array.from({ length: count }, (_, i) => `m${i + 1}`);
  const peerUrl = (i: number) => `http://127.0.0.1:${ports[2 * i + 1]}`;
  const clientUrl = (i: number) => `http://127.0.0.1:${ports[2 * i]}`;
  const initialCluster = names.map((name, i) => `${name}=${peerUrl(i)}`).join(",");
  const token = `bench-${process.pid}-${Date.now()}`;
  const members = names.map((name, i): EtcdMember => {
    const dataDir = join(dir, name);
    mkdirSync(dataDir);
    const log = openSync(join(dir, `${name}.log`), "w");
    const child = spawn(
      binary,
      [
        `--name=${name}`,
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${clientUrl(i)}`,
        `--advertise-client-urls=${clientUrl(i)}`,
        `--listen-peer-urls=${peerUrl(i)}`,
        `--initial-advertise-peer-urls=${peerUrl(i)}`,
        `--initial-cluster=${initialCluster}`,
        `--initial-cluster-token=${token}`,
        "--initial-cluster-state=new",
        "--logger=zap",
        "--log-outputs=stderr",
      ],
      { stdio: ["ignore", log, log] },
    );
    const pid = track(child);
    return { name, child, pid, endpoint: `127.0.0.1:${ports[2 * i]}` };
  });
  return { members, dir };
}

async function untilHealthy(cluster: EtcdCluster, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  const healthy = async (member: EtcdMember) => {
    const response = await fetch(`http://${member.endpoint}/health`).catch(() => undefined);
    const body = (await response?.json().catch(() => undefined)) as { health?: string } | undefined;
    return body?.health === "true";
  };
  while (performance.now() < deadline) {
    const exited = cluster.members.find((m) => m.child.exitCode !== null);
    if (exited) throw new Error(`etcd member ${exited.name} exited (${exited.child.exitCode})`);
    if ((await Promise.all(cluster.members.map(healthy))).every(Boolean)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`etcd was not healthy within ${timeoutMs} ms`);
}

/** Stops every member (SIGTERM, then SIGKILL) and removes the cluster's directory. */
export async function stopEtcd(cluster: EtcdCluster): Promise<void> {
  await Promise.all(cluster.members.map((m) => stop(m.child)));
  rmSync(cluster.dir, { recursive: true, force: true });
}

const toBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
const asIs = (buffer: Buffer) => buffer;

/** A client of one member's KV service, on its own HTTP/2 connection. */
export interface EtcdKv {
  /** Puts `value` at `key`; rejects with the gRPC error. */
  put(key: Uint8Array, value: Uint8Array): Promise<void>;
  close(): void;
}

/** PutRequest: 1 key, 2 value. */
function encodePut(request: { key: Uint8Array; value: Uint8Array }): Buffer {
  const writer = new BinaryWriter()
    .tag(1, WireType.LengthDelimited)
    .bytes(request.key)
    .tag(2, WireType.LengthDelimited)
    .bytes(request.value);
  return toBuffer(writer.finish());
}

/** A KV client of the member at `endpoint` (host:port). */
export function createEtcdKv(endpoint: string): EtcdKv {
  const client = new grpc.Client(endpoint, grpc.credentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
  });
  return {
    put: (key, value) =>
      new Promise((resolve, reject) => {
        client.makeUnaryRequest("/etcdserverpb.KV/Put", encodePut, asIs, { key, value }, (error) =>
          error ? reject(error) : resolve(),
        );
      }),
    close: () => client.close(),
  };
}

/** A watch of every key under a prefix. */
export interface EtcdWatch {
  /** Resolves once etcd has confirmed the watch (its "created" response); rejects if it failed. */
  readonly created: Promise<void>;
  /** Cancels the stream and closes its connection. */
  stop(): void;
}

/** The end of the key range that holds every key starting with `prefix`. */
function prefixEnd(prefix: Uint8Array): Uint8Array {
  const end = Uint8Array.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] ?? 0) < 0xff) {
      end[i] = (end[i] ?? 0) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Uint8Array.of(0); // every key
}

/** WatchRequest { 1 create_request: WatchCreateRequest { 1 key, 2 range_end } }. */
function encodeWatchCreate(prefix: Uint8Array): Buffer {
  const writer = new BinaryWriter()
    .tag(1, WireType.LengthDelimited)
    .fork()
    .tag(1, WireType.LengthDelimited)
    .bytes(prefix)
    .tag(2, WireType.LengthDelimited)
    .bytes(prefixEnd(prefix))
    .join();
  return toBuffer(writer.finish());
}

/** What the bench needs of a WatchResponse: 3 created, 4 canceled, 6 cancel_reason, 11 events. */
interface WatchResponse {
  created: boolean;
  canceled: boolean;
  cancelReason: string;
  /** The PUT events' KeyValues (Event { 1 type: PUT = 0, 2 kv }). */
  puts: Array<{ key: Uint8Array; value: Uint8Array }>;
}

function decodeWatchResponse(buffer: Buffer): WatchResponse {
  const response: WatchResponse = { created: false, canceled: false, cancelReason: "", puts: [] };
  const reader = new BinaryReader(buffer);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 3) response.created = reader.bool();
    else if (field === 4) response.canceled = reader.bool();
    else if (field === 6) response.cancelReason = reader.string();
    else if (field === 11) {
      const put = decodePutEvent(reader.bytes());
      if (put) response.puts.push(put);
    } else reader.skip(wireType, field);
  }
  return response;
}

/** Event { 1 type, 2 kv: KeyValue { 1 key, 5 value } }; undefined for a DELETE. */
function decodePutEvent(bytes: Uint8Array): { key: Uint8Array; value: Uint8Array } | undefined {
  const reader = new BinaryReader(bytes);
  let type = 0;
  let kv: Uint8Array | undefined;
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1) type = reader.int32();
    else if (field === 2) kv = reader.bytes();
    else reader.skip(wireType, field);
  }
  if (type !== 0 || kv === undefined) return undefined;
  const kvReader = new BinaryReader(kv);
  const put: { key: Uint8Array; value: Uint8Array } = {
    key: new Uint8Array(),
    value: new Uint8Array(),
  };
  while (kvReader.pos < kvReader.len) {
    const [field, wireType] = kvReader.tag();
    if (field === 1) put.key = kvReader.bytes();
    else if (field === 5) put.value = kvReader.bytes();
    else kvReader.skip(wireType, field);
  }
  return put;
}

/**
 * Watches every key under `prefix` on the member at `endpoint` (its own HTTP/2 connection) and
 * calls `onPut` with each PUT event's key and value as it arrives.
 */
export function watchEtcdPrefix(
  endpoint: string,
  prefix: Uint8Array,
  onPut: (key: Uint8Array, value: Uint8Array) => void,
): EtcdWatch {
  const client = new grpc.Client(endpoint, grpc.credentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
  });
  const call = client.makeBidiStreamRequest<Uint8Array, WatchResponse>(
    "/etcdserverpb.Watch/Watch",
    toBuffer,
    decodeWatchResponse,
  );
  let stopped = false;
  const created = new Promise<void>((resolve, reject) => {
    call.on("data", (response: WatchResponse) => {
      if (response.created) resolve();
      if (response.canceled) reject(new Error(`etcd canceled the watch: ${response.cancelReason}`));
      for (const put of response.puts) onPut(put.key, put.value);
    });
    call.on("error", (error) => {
      if (!stopped) reject(error);
    });
  });
  // Awaited by the caller; this only keeps a failure after stop from being unhandled.
  created.catch(() => {});
  call.write(encodeWatchCreate(prefix));
  return {
    created,
    stop: () => {
      stopped = true;
      call.cancel();
      client.close();
    },
  };
}

/** The name of the member that leads the cluster (etcd_server_is_leader), or "unknown". */
export async function etcdLeader(cluster: EtcdCluster): Promise<string> {
  for (const member of cluster.members) {
    const samples = await scrapeMetrics(`http://${member.endpoint}`).catch(() => []);
    if (samples.some((s) => s.name === "etcd_server_is_leader" && s.value === 1))
      return member.name;
  }
  return "unknown";
}
