import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it, vi } from "vitest";
import {
  Health,
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/health/v1/health_pb.js";
import { SystemService } from "../../gen/orchestrator/v1/system_pb.js";
import { createServingStatus, type ServingStatus } from "../system/serving-status.js";
import { createGrpcHealthService } from "./grpc-health-service.js";

/** A serving status that counts live change listeners, to prove watchers unsubscribe. */
function countingStatus(): { status: ServingStatus; listeners: () => number } {
  const inner = createServingStatus();
  let live = 0;
  const status: ServingStatus = {
    get state() {
      return inner.state;
    },
    get draining() {
      return inner.draining;
    },
    drainSignal: inner.drainSignal,
    onChange(listener) {
      live++;
      const unsubscribe = inner.onChange(listener);
      return () => {
        live--;
        unsubscribe();
      };
    },
    startDraining: () => inner.startDraining(),
  };
  return { status, listeners: () => live };
}

function setup() {
  const { status, listeners } = countingStatus();
  const transport = createRouterTransport((router) => {
    router.service(Health, createGrpcHealthService(status, [SystemService.typeName]));
  });
  return { status, listeners, client: createClient(Health, transport) };
}

async function expectNotFound(call: Promise<unknown>): Promise<ConnectError> {
  const error = await call.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(ConnectError);
  const connectError = ConnectError.from(error);
  expect(connectError.code).toBe(Code.NotFound);
  return connectError;
}

describe("createGrpcHealthService", () => {
  describe("Check", () => {
    it("reports the server and each named service SERVING", async () => {
      const { client } = setup();
      expect((await client.check({ service: "" })).status).toBe(Status.SERVING);
      expect((await client.check({ service: SystemService.typeName })).status).toBe(Status.SERVING);
    });

    it("fails with NOT_FOUND for an unknown service, naming at most 100 chars of it", async () => {
      const { client } = setup();
      const error = await expectNotFound(client.check({ service: `x.${"y".repeat(500)}` }));
      expect(error.rawMessage).toBe(`unknown service x.${"y".repeat(98)}`);
    });

    it("reports NOT_SERVING once draining", async () => {
      const { client, status } = setup();
      status.startDraining();
      expect((await client.check({ service: "" })).status).toBe(Status.NOT_SERVING);
      expect((await client.check({ service: SystemService.typeName })).status).toBe(
        Status.NOT_SERVING,
      );
    });
  });

  describe("List", () => {
    it("lists the server and every named service", async () => {
      const { client } = setup();
      const { statuses } = await client.list({});
      expect(Object.keys(statuses).sort()).toEqual(["", SystemService.typeName]);
      expect(statuses[SystemService.typeName]?.status).toBe(Status.SERVING);
    });
  });

  describe("Watch", () => {
    it("sends SERVING at once, then NOT_SERVING on drain, then ends", async () => {
      const { client, status, listeners } = setup();
      const received: Status[] = [];
      for await (const response of client.watch({ service: SystemService.typeName })) {
        received.push(response.status);
        if (received.length === 1) status.startDraining();
      }
      expect(received).toEqual([Status.SERVING, Status.NOT_SERVING]);
      expect(listeners()).toBe(0);
    });

    it("sends NOT_SERVING and ends when the node is already draining", async () => {
      const { client, status, listeners } = setup();
      status.startDraining();
      const received = await collect(client.watch({ service: "" }));
      expect(received).toEqual([Status.NOT_SERVING]);
      expect(listeners()).toBe(0);
    });

    it("sends SERVICE_UNKNOWN for an unknown service and keeps the stream open", async () => {
      const { client, status, listeners } = setup();
      const stream = client.watch({ service: "no.such.Service" })[Symbol.asyncIterator]();
      expect((await stream.next()).value?.status).toBe(Status.SERVICE_UNKNOWN);
      const next = stream.next();
      // Still open: no second message arrives while the node is unchanged.
      const settled = await Promise.race([next.then(() => true), sleep(20).then(() => false)]);
      expect(settled).toBe(false);
      // The node going away ends it without an error.
      status.startDraining();
      expect((await next).done).toBe(true);
      expect(listeners()).toBe(0);
    });

    it("ends and unsubscribes when the client aborts", async () => {
      const { client, listeners } = setup();
      const abort = new AbortController();
      const stream = client
        .watch({ service: "" }, { signal: abort.signal })
        [Symbol.asyncIterator]();
      expect((await stream.next()).value?.status).toBe(Status.SERVING);
      expect(listeners()).toBe(1);
      const next = stream.next();
      abort.abort();
      const error = await next.then(
        () => undefined,
        (reason: unknown) => ConnectError.from(reason),
      );
      expect(error?.code).toBe(Code.Canceled);
      await vi.waitFor(() => expect(listeners()).toBe(0));
    });
  });
});

async function collect(stream: AsyncIterable<HealthCheckResponse>): Promise<Status[]> {
  const statuses: Status[] = [];
  for await (const response of stream) statuses.push(response.status);
  return statuses;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
