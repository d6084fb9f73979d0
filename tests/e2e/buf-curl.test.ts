import { execFile } from "node:child_process";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";

// buf curl knows nothing of our protos: everything it does here it learns from server reflection,
// over HTTP/2 with prior knowledge on the one port.

const buf = resolve(import.meta.dirname, "../../node_modules/.bin/buf");

let node: RunningOrchestrator;

beforeAll(async () => {
  node = await startOrchestrator();
});

afterAll(async () => {
  await node?.close();
});

interface BufCurlResult {
  /** The process's exit code: 0 on success. */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `buf curl --http2-prior-knowledge <args>`, without a shell, for at most 30 s. */
function bufCurl(...args: string[]): Promise<BufCurlResult> {
  return new Promise((done, fail) => {
    execFile(
      buf,
      ["curl", "--http2-prior-knowledge", ...args],
      { timeout: 30_000, killSignal: "SIGKILL" },
      (error, stdout, stderr) => {
        if (error === null) return done({ code: 0, stdout, stderr });
        // A non-zero exit is an answer (an RPC error); being killed or not starting is not.
        if (typeof error.code !== "number") return fail(error);
        done({ code: error.code, stdout, stderr });
      },
    );
  });
}

function expectSuccess(result: BufCurlResult): void {
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: "" });
}

describe("buf curl", () => {
  it("lists the methods through reflection", async () => {
    const result = await bufCurl("--list-methods", node.url);

    expectSuccess(result);
    const methods = result.stdout.split("\n");
    expect(methods).toContain("orchestrator.v1.SystemService/Health");
    expect(methods).toContain("orchestrator.v1.SystemService/WatchHealth");
    expect(methods).toContain("orchestrator.v1.RegistryService/RegisterService");
    expect(methods).toContain("grpc.health.v1.Health/Check");
  });

  it.each(["grpc", "connect", "grpcweb"])("calls Health over --protocol %s", async (protocol) => {
    const result = await bufCurl(
      "--protocol",
      protocol,
      `${node.url}/orchestrator.v1.SystemService/Health`,
    );

    expectSuccess(result);
    expect(JSON.parse(result.stdout)).toMatchObject({
      status: "healthy",
      service: "orchestrator",
      nodeId: node.app.node.nodeId,
    });
  });

  it("calls with the default protocol (grpc)", async () => {
    const result = await bufCurl(`${node.url}/orchestrator.v1.SystemService/Info`);

    expectSuccess(result);
    expect(JSON.parse(result.stdout)).toMatchObject({
      nodeId: node.app.node.nodeId,
      incarnationId: node.app.node.incarnationId,
    });
  });

  it.each(["grpc-v1alpha", "grpc-v1"])("reflects with --reflect-protocol %s", async (reflect) => {
    const result = await bufCurl(
      "--reflect-protocol",
      reflect,
      `${node.url}/grpc.health.v1.Health/Check`,
    );

    expectSuccess(result);
    expect(JSON.parse(result.stdout)).toEqual({ status: "SERVING" });
  });

  it("prints invalid_argument for a request breaking a field rule", async () => {
    const result = await bufCurl(
      "-d",
      JSON.stringify({ name: "Bad Name!", baseUrl: "http://billing.internal" }),
      `${node.url}/orchestrator.v1.RegistryService/RegisterService`,
    );

    expect(result.code).not.toBe(0);
    const error = JSON.parse(result.stderr) as { code: string; message: string };
    expect(error.code).toBe("invalid_argument");
    expect(error.message).toBe("invalid request: name: must match ^[a-z0-9][a-z0-9._-]*$");
  });
});
