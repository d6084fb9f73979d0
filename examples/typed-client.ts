// A service that registers itself with the typed client, stays registered while it runs, and
// follows the registry. Elsewhere, import from "orchestrator/client" instead of the source path.
import {
  createOrchestratorClient,
  WatchEventType,
  type WatchServicesResponse,
} from "../src/client/index.js";

export async function main(baseUrl: string, token?: string): Promise<WatchServicesResponse[]> {
  const client = createOrchestratorClient({
    baseUrl, // e.g. http://127.0.0.1:8080: gRPC, Connect and REST share the port
    ...(token === undefined ? {} : { token }), // sent as authorization: Bearer <token>
    protocol: "grpc", // the default; "connect" speaks the Connect protocol with JSON
    timeoutMs: 5_000,
  });
  try {
    // Typed requests and answers, on the generated descriptors.
    const { revision } = await client.registry.listServices({ namePrefix: "billing" });
    console.log("registry at revision", revision);

    // Registers, heartbeats at a third of the 30 s lease, registers again if the orchestrator
    // forgets the entry, retries while it is unreachable; stop() deregisters.
    const registration = await client.keepRegistered({
      name: "billing",
      baseUrl: "http://127.0.0.1:9/billing",
      tags: ["payments"],
      ttlSeconds: 30,
    });

    // Every change after `revision`, resumed from the last one seen if the stream is cut (from
    // revision 0, an empty registry's, it starts with a snapshot and a SNAPSHOT_END marker).
    const stop = new AbortController();
    const seen: WatchServicesResponse[] = [];
    for await (const change of client.followRegistry({
      namePrefix: "billing",
      startRevision: revision,
      signal: stop.signal,
    })) {
      seen.push(change);
      console.log(WatchEventType[change.type], change.service?.name, change.revision);
      if (change.type === WatchEventType.PUT) await registration.stop(); // deregisters
      if (change.type === WatchEventType.DELETE) stop.abort(); // ends the loop
    }
    return seen;
  } finally {
    client.close();
  }
}
