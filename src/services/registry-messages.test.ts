import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { ReplicatedEntrySchema } from "../../gen/orchestrator/v1/peer_pb.js";
import { changeOfReplicated } from "./registry-messages.js";

/** A replicated put whose registration time is `registeredAt`. */
function replicatedAt(registeredAt: ReturnType<typeof timestampFromMs>) {
  return create(ReplicatedEntrySchema, {
    revision: 7n,
    entry: {
      name: "timed",
      baseUrl: "http://timed:8080",
      registeredAt,
      originNodeId: "node-b",
      hlc: 1n << 20n,
    },
  });
}

describe("changeOfReplicated", () => {
  it("reads a timestamp's ms as a Date would, NaN beyond a Date's range", () => {
    const timestamps = [
      timestampFromMs(1_765_000_000_123),
      timestampFromMs(-1_000),
      { ...timestampFromMs(0), nanos: 999_999_999 },
      { ...timestampFromMs(0), seconds: 8_640_000_000_000n },
      { ...timestampFromMs(0), seconds: 8_640_000_000_001n },
      { ...timestampFromMs(0), seconds: -(1n << 62n) },
    ];
    for (const timestamp of timestamps) {
      const change = changeOfReplicated(replicatedAt(timestamp));
      if (change.type !== "put") throw new Error("not a put");
      expect(change.entry.registeredAt, String(timestamp.seconds)).toBe(
        timestampDate(timestamp).getTime(),
      );
    }
  });
});
