import { describe, expect, it } from "vitest";
import { exemptionOf } from "./rate-limit.js";

describe("exemptionOf", () => {
  const isExempt = exemptionOf(["127.0.0.0/8", "::1", "10.0.0.0/8", "fd00::/8", "192.168.1.7"]);

  it.each([
    ["127.0.0.1", true],
    ["127.9.9.9", true],
    ["::ffff:127.0.0.1", true],
    ["::1", true],
    ["10.200.3.4", true],
    ["::ffff:10.0.0.1", true],
    ["fd12::5", true],
    ["192.168.1.7", true],
    ["192.168.1.8", false],
    ["::ffff:192.168.1.8", false],
    ["11.0.0.1", false],
    ["fe80::1", false],
    ["2001:db8::1", false],
  ])("%s exempt: %s", (address, expected) => {
    expect(isExempt(address)).toBe(expected);
    // The remembered answer is the same.
    expect(isExempt(address)).toBe(expected);
  });

  it("exempts nothing when the list is empty", () => {
    expect(exemptionOf([])("127.0.0.1")).toBe(false);
  });
});
