import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DomainError } from "../errors/domain-error.js";
import {
  checkSagaTransition,
  checkStepTransition,
  sagaMachine,
  sagaMachineMarkdown,
} from "./saga-machine.js";

// The machine's table is the documentation's: the README shows it as the code has it.
const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");

describe("the saga machine", () => {
  it("is in the README as the code has it", () => {
    expect(readme).toContain(sagaMachineMarkdown());
  });

  it("lists each transition once", () => {
    const keys = sagaMachine.map((rule) => `${rule.of} ${rule.from} ${rule.to}`);
    expect(new Set(keys).size).toBe(keys.length);
  });

  it("refuses with failed_precondition naming the states", () => {
    const refusal = (run: () => unknown) => {
      try {
        run();
      } catch (error) {
        return error;
      }
      return undefined;
    };
    const saga = refusal(() => checkSagaTransition("COMPLETED", "RUNNING", []));
    expect(saga).toBeInstanceOf(DomainError);
    expect(saga).toMatchObject({
      kind: "failed_precondition",
      message: "a saga cannot go from COMPLETED to RUNNING",
    });
    expect(
      refusal(() => checkSagaTransition("RUNNING", "COMPLETED", [{ name: "a", status: "FAILED" }])),
    ).toMatchObject({
      kind: "failed_precondition",
      message: "a saga cannot go from RUNNING to COMPLETED while its step a is FAILED",
    });
    expect(refusal(() => checkStepTransition("a", "SKIPPED", "RUNNING", "RUNNING"))).toMatchObject({
      kind: "failed_precondition",
      message: "step a cannot go from SKIPPED to RUNNING",
    });
    expect(refusal(() => checkStepTransition("a", "PENDING", "RUNNING", "PENDING"))).toMatchObject({
      kind: "failed_precondition",
      message: "step a cannot go from PENDING to RUNNING while the saga is PENDING",
    });
  });
});
