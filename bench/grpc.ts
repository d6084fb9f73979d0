// bench:grpc — the cost of a unary gRPC call through the whole orchestrator stack, against a bare
// @grpc/grpc-js server answering the same kind of call, measured in one run.
//
// A grpc-js client keeps 64 calls in flight against each target in turn, round after round
// (alternating, so that machine noise hits every target alike), and reads each server process's
// CPU time over IPC before and after. CPU per call on the server is the sharp figure: the client
// shares the two cores.
//
//   npm run bench:grpc [-- --seconds 5 --rounds 3 --concurrency 64]
//
// Both servers run compiled, as production does (the orchestrator as `npm start` runs it: the
// bundle, dist/bundle/main.js); server CPU is read from /proc (Linux).
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { create, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { Health, HealthCheckRequestSchema } from "../gen/health/v1/health_pb.js";
import { SystemService } from "../gen/orchestrator/v1/system_pb.js";
import { createGrpcJsClient } from "../src/clients/grpc-js-client.js";
import { processCpuMicros } from "./process-cpu.js";
import {
  closedLoop,
  fmt,
  type LoopResult,
  median,
  orchestratorArgv,
  percentile,
  stop,
  track,
  writeResults,
} from "./support.js";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    rounds: { type: "string", default: "3" },
    concurrency: { type: "string", default: "64" },
    warmup: { type: "string", default: "2" },
  },
});
const seconds = Number(args.seconds);
const rounds = Number(args.rounds);
const concurrency = Number(args.concurrency);
const warmupSeconds = Number(args.warmup);

interface Server {
  readonly child: ChildProcess;
  readonly port: number;
}

/**
 * Starts a compiled server (npm run bench:grpc builds first) and waits for the line that gives its
 * port: `{"ready": port}` from the bare server, the "orchestrator listening" log line from ours.
 */
function start(argv: readonly string[], env: Record<string, string> = {}): Promise<Server> {
  const script = argv.at(-1);
  const child = spawn(process.execPath, argv, {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  track(child);
  return new Promise((resolve, reject) => {
    const exitedEarly = (code: number | null) => reject(new Error(`${script} exited with ${code}`));
    child.once("exit", exitedEarly);
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    lines.on("line", (line) => {
      const parsed = JSON.parse(line) as { ready?: number; msg?: string; port?: number };
      const port =
        parsed.ready ?? (parsed.msg === "orchestrator listening" ? parsed.port : undefined);
      if (port !== undefined) {
        child.off("exit", exitedEarly);
        resolve({ child, port });
      }
    });
  });
}

function cpuMicros(server: Server): number {
  if (server.child.pid === undefined) throw new Error("server has no pid");
  return processCpuMicros(server.child.pid);
}

interface Target {
  readonly name: string;
  readonly server: Server;
  readonly call: () => Promise<unknown>;
}

interface Sample extends LoopResult {
  readonly cpuMicros: number;
}

function unaryTarget<S extends DescService>(
  name: string,
  server: Server,
  service: S,
  method: string,
  request: DescMessage,
): Target {
  const client = createGrpcJsClient(service, `127.0.0.1:${server.port}`) as unknown as Record<
    string,
    (r: unknown) => Promise<unknown>
  >;
  const message = create(request);
  const fn = client[method];
  if (!fn) throw new Error(`no method ${method}`);
  return { name, server, call: () => fn(message) };
}

async function drive(target: Target, durationSeconds: number): Promise<Sample> {
  const cpuBefore = cpuMicros(target.server);
  const loop = await closedLoop(target.call, durationSeconds, concurrency);
  return { ...loop, cpuMicros: cpuMicros(target.server) - cpuBefore };
}

const bare = await start([new URL("./servers/bare-grpc-server.js", import.meta.url).pathname]);
// The orchestrator exactly as `npm start` runs it, on a free loopback port.
const ours = await start(orchestratorArgv, {
  PORT: "0",
  HOST: "127.0.0.1",
  LOG_LEVEL: "info",
  APP_CONFIG_PATH: new URL("../../config/app.yaml", import.meta.url).pathname,
});
const targets: Target[] = [
  unaryTarget("bare grpc-js Health/Check", bare, Health, "check", HealthCheckRequestSchema),
  unaryTarget("orchestrator Health/Check", ours, Health, "check", HealthCheckRequestSchema),
  unaryTarget(
    "orchestrator SystemService/Ping",
    ours,
    SystemService,
    "ping",
    SystemService.method.ping.input,
  ),
];

for (const target of targets) await drive(target, warmupSeconds);
const samples = new Map<string, Sample[]>(targets.map((t) => [t.name, []]));
for (let round = 0; round < rounds; round++) {
  for (const target of targets) samples.get(target.name)?.push(await drive(target, seconds));
}

const rows = targets.map((target) => {
  const runs = samples.get(target.name) ?? [];
  const latencies = runs.flatMap((r) => r.latenciesMs).sort((a, b) => a - b);
  return {
    target: target.name,
    callsPerSecond: median(runs.map((r) => r.calls / r.seconds)),
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    serverCpuMicrosPerCall: median(runs.map((r) => r.cpuMicros / r.calls)),
  };
});
const baseline = rows[0];
const table = rows.map((row) => ({
  ...row,
  cpuRatio: baseline ? row.serverCpuMicrosPerCall / baseline.serverCpuMicrosPerCall : Number.NaN,
  throughputRatio: baseline ? row.callsPerSecond / baseline.callsPerSecond : Number.NaN,
}));

const lines = [
  `bench:grpc — ${concurrency} concurrent unary calls, ${rounds} rounds × ${seconds} s per target (medians)`,
  "",
  "| target | calls/s | p50 ms | p99 ms | server CPU µs/call | CPU vs bare | calls/s vs bare |",
  "|---|---:|---:|---:|---:|---:|---:|",
  ...table.map(
    (r) =>
      `| ${r.target} | ${fmt(r.callsPerSecond, 0)} | ${fmt(r.p50Ms, 2)} | ${fmt(r.p99Ms, 2)} | ${fmt(r.serverCpuMicrosPerCall)} | ${fmt(r.cpuRatio, 2)}x | ${fmt(r.throughputRatio, 2)}x |`,
  ),
];
process.stdout.write(`${lines.join("\n")}\n`);
const file = writeResults("grpc", {
  bench: "grpc",
  date: new Date().toISOString(),
  seconds,
  rounds,
  concurrency,
  node: process.version,
  rows: table,
});
process.stdout.write(`written ${file}\n`);
await Promise.all([bare, ours].map((server) => stop(server.child)));
process.exit(0);
