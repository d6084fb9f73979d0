import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { InfrastructureService } from "../gen/orchestrator/v1/infrastructure_pb.js";
import { JobsService } from "../gen/orchestrator/v1/jobs_pb.js";
import { PeerService } from "../gen/orchestrator/v1/peer_pb.js";
import { RegistryService } from "../gen/orchestrator/v1/registry_pb.js";
import { SystemService } from "../gen/orchestrator/v1/system_pb.js";
import { WorkflowService } from "../gen/orchestrator/v1/workflow_pb.js";
import { configKeys } from "../src/config/index.js";
import { restRoutesOf } from "../src/gateway/rest-gateway.js";
import { wrapService } from "../src/interceptors/chain.js";
import { unimplementedService } from "../src/services/unimplemented.js";

// The README is the user's reference: it must name every configuration key and every REST route
// the protos declare, so that neither can change without the documentation.
const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");

describe("README", () => {
  it.each(configKeys.map((key) => key.name))("documents the configuration key %s", (name) => {
    expect(readme).toContain(`| \`${name}\` |`);
  });

  const services = [
    SystemService,
    RegistryService,
    PeerService,
    WorkflowService,
    InfrastructureService,
    JobsService,
  ].map((service) => wrapService(service, unimplementedService(service, "test"), []));
  it.each(restRoutesOf(services).map((r) => `| ${r.method} | ${r.path} |`))(
    "lists the route %s",
    (row) => {
      expect(readme).toContain(row);
    },
  );
});
