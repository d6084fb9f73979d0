import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { InfrastructureService } from "../../gen/orchestrator/v1/infrastructure_pb.js";
import { SystemService } from "../../gen/orchestrator/v1/system_pb.js";
import { composeServices, servicePart } from "./capability.js";

describe("composeServices", () => {
  it("serves each method from the capability that implements it, and 501 for the rest", async () => {
    const events = servicePart(InfrastructureService, {
      async getEventHistory() {
        return { events: [], count: 7 };
      },
    });
    const sagas = servicePart(InfrastructureService, {
      async getSagaStats() {
        return { totalSagas: 3 };
      },
    });
    const composed = composeServices(
      [InfrastructureService, SystemService],
      [{ services: [events] }, { services: [sagas] }],
    );
    const infrastructure = composed.get(InfrastructureService) as unknown as Record<
      string,
      (...args: unknown[]) => Promise<unknown>
    >;
    expect(await infrastructure.getEventHistory?.({}, {})).toMatchObject({ count: 7 });
    expect(await infrastructure.getSagaStats?.({}, {})).toMatchObject({ totalSagas: 3 });
    const missing = await infrastructure.getDlqStats?.({}, {}).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ConnectError);
    expect((missing as ConnectError).code).toBe(Code.Unimplemented);
    // A service no capability touches is served whole, every method 501.
    const system = composed.get(SystemService) as unknown as Record<string, unknown>;
    for (const method of SystemService.methods)
      expect(system[method.localName]).toBeTypeOf("function");
  });

  it("refuses two capabilities implementing the same method", () => {
    const part = servicePart(InfrastructureService, {
      async getSagaStats() {
        return {};
      },
    });
    expect(() =>
      composeServices([InfrastructureService], [{ services: [part] }, { services: [part] }]),
    ).toThrow(/GetSagaStats|getSagaStats/);
  });
});
