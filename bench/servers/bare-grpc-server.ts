// A bare @grpc/grpc-js server answering grpc.health.v1.Health/Check: the baseline of bench:grpc.
// It prints {"ready": port} on stdout once listening.
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  Health,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../../gen/health/v1/health_pb.js";
import { grpcJsServiceDefinition } from "../../src/clients/grpc-js-client.js";

const server = new grpc.Server();
const serving = create(HealthCheckResponseSchema, {
  status: HealthCheckResponse_ServingStatus.SERVING,
});
const unimplemented: grpc.handleUnaryCall<unknown, unknown> = (_call, callback) =>
  callback({ code: grpc.status.UNIMPLEMENTED });
server.addService(grpcJsServiceDefinition(Health), {
  check: ((_call, callback) => callback(null, serving)) as grpc.handleUnaryCall<unknown, unknown>,
  list: unimplemented,
  watch: (call: grpc.ServerWritableStream<unknown, unknown>) => call.end(),
});
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  process.stdout.write(`${JSON.stringify({ ready: port })}\n`);
});
process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
