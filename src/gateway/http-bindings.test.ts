import { describe, expect, it } from "vitest";
import { RegistryService } from "../../gen/orchestrator/v1/registry_pb.js";
import { SystemService } from "../../gen/orchestrator/v1/system_pb.js";
import { apiServices } from "../services/api-services.js";
import { httpBindingsOf, shadowedPathValues } from "./http-bindings.js";

const api = apiServices;

describe("httpBindingsOf", () => {
  it("reads a method's verb and template", () => {
    const [binding, ...more] = httpBindingsOf(RegistryService.method.heartbeat);
    expect(more).toEqual([]);
    expect(binding).toMatchObject({ verb: "POST", template: "/registry/{name}/heartbeat" });
  });

  it("gives none for a method without a rule", () => {
    expect(httpBindingsOf(SystemService.method.ping)).toEqual([]);
  });
});

describe("shadowedPathValues", () => {
  it("finds the values of the protos' path variables that literal routes take", () => {
    const found = shadowedPathValues(api).map((s) => ({
      rpc: `${s.method.parent.name}.${s.method.name}`,
      field: s.fieldPath.map((f) => f.name).join("."),
      value: s.value,
      reason: s.reason,
    }));
    expect(found).toEqual([
      {
        rpc: "RegistryService.GetService",
        field: "name",
        value: "watch",
        reason: "GET /registry/watch is a route of its own, not GET /registry/{name}",
      },
      {
        rpc: "InfrastructureService.GetSaga",
        field: "saga_id",
        value: "stats",
        reason:
          "GET /infrastructure/saga/stats is a route of its own, not GET /infrastructure/saga/{saga_id}",
      },
    ]);
  });
});
