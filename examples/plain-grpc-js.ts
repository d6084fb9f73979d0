// Registering and listing with plain @grpc/grpc-js and @grpc/proto-loader on proto/, without the
// orchestrator's code: what a service in any language does with the .proto files alone.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const protoDir = fileURLToPath(new URL("../proto/", import.meta.url));
// google/api/annotations.proto (the REST rules in the .proto files) comes from google-proto-files.
const googleProtos = dirname(fileURLToPath(import.meta.resolve("google-proto-files/package.json")));

interface ServiceEntry {
  name: string;
  base_url: string;
  status: string;
  revision: string;
}
type Unary<Req, Res> = (
  request: Req,
  callback: (error: grpc.ServiceError | null, response: Res) => void,
) => void;
interface RegistryClient extends grpc.Client {
  RegisterService: Unary<{ name: string; base_url: string; ttl_seconds?: number }, object>;
  ListServices: Unary<{ name_prefix?: string }, { services: ServiceEntry[]; revision: string }>;
}

export async function main(address: string): Promise<ServiceEntry[]> {
  const definition = await protoLoader.load(join(protoDir, "orchestrator/v1/registry.proto"), {
    includeDirs: [protoDir, googleProtos],
    keepCase: true, // field names as in the .proto: base_url, ttl_seconds
    longs: String, // uint64 revisions as decimal strings
    enums: String, // SERVICE_STATUS_HEALTHY rather than 2
    defaults: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    orchestrator: { v1: { RegistryService: new (...args: unknown[]) => RegistryClient } };
  };
  const client = new loaded.orchestrator.v1.RegistryService(
    address,
    grpc.credentials.createInsecure(),
  );
  const call = <Req, Res>(method: Unary<Req, Res>, request: Req) =>
    new Promise<Res>((resolve, reject) =>
      method.call(client, request, (error, response) =>
        error ? reject(error) : resolve(response),
      ),
    );
  try {
    await call(client.RegisterService, {
      name: "plain-billing",
      base_url: "http://127.0.0.1:9/billing",
      ttl_seconds: 60,
    });
    const listed = await call(client.ListServices, { name_prefix: "plain-" });
    for (const s of listed.services) console.log(s.name, s.status, s.revision);
    return listed.services;
  } finally {
    client.close();
  }
}
