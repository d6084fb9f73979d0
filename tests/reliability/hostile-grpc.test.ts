// Hostile input over gRPC (issue 11): every method of every service the node serves, from the
// descriptors, called through a real grpc-js client with messages that decode (boundary values
// from the input descriptor, protobuf-es `fromJson` + `toBinary`) and with bytes that rarely do.
// Properties: never INTERNAL, UNKNOWN, DATA_LOSS or UNAVAILABLE (no dependency is down here); a
// status message stays small and never repeats a long input; the node still answers afterwards.
// fast-check prints the seed and the shrunk case of a failure, to replay it.
import { randomUUID } from "node:crypto";
import { type DescMethod, fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Access } from "../../gen/orchestrator/v1/options_pb.js";
import { servedServiceTypes } from "../../src/app.js";
import { accessOf } from "../../src/interceptors/auth.js";
import {
  callsDownstream,
  grpcStatusProblems,
  HostileTally,
  hostileNodeEnv,
  sketch,
} from "../support/hostile-checks.js";
import { garbageBytes, longStringsIn, messageBinary } from "../support/hostile-messages.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { byProfile, recordReliability } from "../support/reliability-report.js";

const adminToken = `admin-${randomUUID()}`;
const peerToken = `peer-${randomUUID()}`;

const methods: readonly DescMethod[] = servedServiceTypes.flatMap((s) => s.methods);

let node: RunningOrchestrator;
let client: grpc.Client;

beforeAll(async () => {
  node = await startOrchestrator({
    env: hostileNodeEnv({ admin: adminToken, peer: peerToken }),
  });
  client = new grpc.Client(node.address, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await node?.close();
});

/** One gRPC call: a method (by index, so that a failure prints short) and its message's bytes. */
interface GrpcCase {
  readonly index: number;
  readonly bytes: Uint8Array;
  readonly longStrings: readonly string[];
}

/** How long a stream may stay silent before the client leaves it (it is open, not failed). */
const streamWaitMs = 500;
/** Deadline of a unary call: generous, a loaded machine is slow; a hang fails the case. */
const unaryDeadlineMs = 30_000;
const runsPerMethod = byProfile(10, 300);
const healthEvery = 25;

const passthrough = (bytes: Buffer) => bytes;

function pathOf(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

function metadataFor(method: DescMethod, token: string | undefined): grpc.Metadata {
  const metadata = new grpc.Metadata();
  const chosen =
    token === undefined ? undefined : accessOf(method) === Access.PEER ? peerToken : token;
  if (chosen !== undefined) metadata.set("authorization", `Bearer ${chosen}`);
  return metadata;
}

/**
 * Calls `method` with `bytes` as its one request message and resolves with the call's status.
 * A stream is left (cancelled) after its first message, or when it stayed silent for `silentMs`:
 * that is an open stream, reported as OK.
 */
function call(
  method: DescMethod,
  bytes: Uint8Array,
  token: string | undefined,
  silentMs = streamWaitMs,
): Promise<grpc.StatusObject> {
  const metadata = metadataFor(method, token);
  const argument = Buffer.from(bytes);
  if (method.methodKind === "unary") {
    return new Promise((resolve) => {
      const unary = client.makeUnaryRequest(
        pathOf(method),
        passthrough,
        passthrough,
        argument,
        metadata,
        { deadline: Date.now() + unaryDeadlineMs },
        () => {},
      );
      unary.on("status", resolve);
    });
  }
  return new Promise((resolve) => {
    const stream =
      method.methodKind === "server_streaming"
        ? client.makeServerStreamRequest(
            pathOf(method),
            passthrough,
            passthrough,
            argument,
            metadata,
            {},
          )
        : client.makeBidiStreamRequest(pathOf(method), passthrough, passthrough, metadata, {});
    let left = false;
    const leave = () => {
      left = true;
      stream.cancel();
    };
    const timer = setTimeout(leave, silentMs);
    stream.on("data", leave);
    stream.on("error", () => {});
    stream.on("status", (status: grpc.StatusObject) => {
      clearTimeout(timer);
      resolve(
        left && status.code === grpc.status.CANCELLED
          ? { ...status, code: grpc.status.OK }
          : status,
      );
    });
    if (method.methodKind === "bidi_streaming") {
      const duplex = stream as grpc.ClientDuplexStream<Buffer, Buffer>;
      duplex.write(argument);
      duplex.end();
    }
  });
}

/** Messages that decode, mostly; now and then bytes that rarely do. */
function grpcCases(garbageWeight: number): fc.Arbitrary<GrpcCase> {
  return fc.nat({ max: methods.length - 1 }).chain((index) => {
    const method = methods[index] as DescMethod;
    const decoded = messageBinary(method.input).map((bytes) => ({
      index,
      bytes,
      longStrings: longStringsOfBinary(method, bytes),
    }));
    const garbage = garbageBytes.map((bytes) => ({ index, bytes, longStrings: [] }));
    return fc
      .oneof({ weight: 4, arbitrary: decoded }, { weight: garbageWeight, arbitrary: garbage })
      .map((c) =>
        Object.assign(c, {
          [fc.toStringMethod]: () =>
            `${pathOf(method)} <${c.bytes.length} bytes: ${Buffer.from(c.bytes.subarray(0, 48)).toString("hex")}>`,
        }),
      );
  });
}

/** The long strings a binary message carries, read back from it. */
function longStringsOfBinary(method: DescMethod, bytes: Uint8Array): string[] {
  try {
    const message = fromBinary(method.input, bytes) as unknown as Record<string, unknown>;
    return longStringsIn(message);
  } catch {
    return [];
  }
}

async function expectAlive(tally: HostileTally): Promise<void> {
  const health = servedServiceTypes.flatMap((s) => s.methods).find((m) => m.name === "Check");
  if (health === undefined) throw new Error("no grpc.health.v1.Health/Check");
  const status = await call(health, new Uint8Array(0), undefined);
  tally.requests++;
  if (status.code !== grpc.status.OK)
    tally.fail(`Health/Check answered ${Code[status.code]}: the node is gone`);
}

function record(name: string, tally: HostileTally, note?: string): void {
  recordReliability({
    suite: "hostile-input",
    name,
    inputs: tally.inputs,
    requests: tally.requests,
    errors: tally.problems.length,
    ...(note === undefined ? {} : { note }),
  });
}

describe("hostile gRPC calls", () => {
  it("every method answers generated messages and garbage without a server fault or an echo", async () => {
    const tally = new HostileTally();
    try {
      await fc.assert(
        fc.asyncProperty(grpcCases(1), async (c) => {
          const method = methods[c.index] as DescMethod;
          tally.inputs++;
          const status = await call(method, c.bytes, adminToken);
          tally.requests++;
          if (status.code === grpc.status.OK) tally.accepted++;
          if (tally.inputs % healthEvery === 0) await expectAlive(tally);
          const problems = grpcStatusProblems(
            status.code,
            status.details,
            c.longStrings,
            callsDownstream(method),
          );
          if (problems.length > 0) tally.fail(`${pathOf(method)}: ${problems.join("; ")}`);
        }),
        { numRuns: methods.length * runsPerMethod },
      );
      await expectAlive(tally);
    } finally {
      record(`gRPC: ${methods.length} methods, admin or peer token`, tally, `${tally.accepted} OK`);
    }
    expect(tally.problems).toEqual([]);
  }, 600_000);

  it("without a token, every method refuses (or serves if public), never with a server fault", async () => {
    const tally = new HostileTally();
    let refused = 0;
    try {
      await fc.assert(
        fc.asyncProperty(grpcCases(1), async (c) => {
          const method = methods[c.index] as DescMethod;
          tally.inputs++;
          // A refusal comes at once: a stream that must refuse is given all the time it needs,
          // so that a slow refusal on a loaded machine is never taken for a stream left open.
          const isPublic = accessOf(method) === Access.PUBLIC;
          const status = await call(
            method,
            c.bytes,
            undefined,
            isPublic ? streamWaitMs : unaryDeadlineMs,
          );
          tally.requests++;
          const problems = grpcStatusProblems(
            status.code,
            status.details,
            c.longStrings,
            callsDownstream(method),
          );
          if (status.code === grpc.status.UNAUTHENTICATED) refused++;
          if (!isPublic && status.code === grpc.status.OK) {
            problems.push(`served without a token: ${sketch(status.details)}`);
          }
          if (problems.length > 0) tally.fail(`${pathOf(method)}: ${problems.join("; ")}`);
        }),
        { numRuns: methods.length * Math.ceil(runsPerMethod / 2) },
      );
      await expectAlive(tally);
    } finally {
      record("gRPC: no token", tally, `${refused} refused UNAUTHENTICATED`);
    }
    expect(tally.problems).toEqual([]);
    expect(refused).toBeGreaterThan(0);
  }, 600_000);
});
