import { describe, expect, it } from "vitest";
import { DomainError } from "../errors/domain-error.js";
import type { SagaStep } from "../sagas/model.js";
import { builtInWorkflows, type WorkflowDefinition } from "./definitions.js";
import { callText, groupsOf, idempotentRunId, planSteps, undoOrder } from "./run-plan.js";

const workflow = (name: string): WorkflowDefinition => {
  const found = builtInWorkflows.find((w) => w.name === name);
  if (found === undefined) throw new Error(`no ${name}`);
  return found;
};

describe("planSteps", () => {
  it("expands per-source steps in the order given, once each, then the later groups", () => {
    const steps = planSteps(workflow("ingestion"), ["jira", "github", "jira"]);
    expect(steps.map((s) => [s.index, s.name, s.target, s.group, s.source])).toEqual([
      [0, "ingest:jira", "jira-agent", 0, "jira"],
      [1, "ingest:github", "github-agent", 0, "github"],
      [2, "analyze", "consistency-engine", 1, undefined],
    ]);
    expect(callText(steps[0]?.target ?? "", steps[0]?.compensation)).toBe(
      "POST jira-agent /ingest/rollback",
    );
  });

  it("plans a workflow without sources as declared", () => {
    const steps = planSteps(workflow("quality_assessment"), []);
    expect(steps.map((s) => s.name)).toEqual(["recalculate", "assess"]);
    expect(callText("doc-store", steps[0]?.compensation)).toBe("");
  });

  it.each([
    ["ingestion", [], /sources: workflow ingestion needs at least one of github/],
    ["ingestion", ["svn"], /sources: .*no source "svn"/],
    ["consistency_analysis", ["github"], /sources: .*has no source "github" \(it has none\)/],
  ])("refuses %s with %j as invalid naming sources", (name, sources, message) => {
    const refuse = () => planSteps(workflow(name), sources);
    expect(refuse).toThrow(DomainError);
    expect(refuse).toThrow(message);
  });
});

describe("groupsOf", () => {
  it("groups by group, lowest first, keeping the order within a group", () => {
    const steps = [
      { name: "a", group: 2 },
      { name: "b", group: 0 },
      { name: "c", group: 2 },
      { name: "d", group: 1 },
    ];
    expect(groupsOf(steps).map((g) => g.map((s) => s.name))).toEqual([["b"], ["d"], ["a", "c"]]);
  });
});

describe("undoOrder", () => {
  const step = (index: number, status: SagaStep["status"], finishedAt?: number): SagaStep => ({
    index,
    name: `s${index}`,
    action: "",
    compensation: "",
    group: 0,
    status,
    attempts: 1,
    error: "",
    startedAt: 0,
    finishedAt,
    compensatedAt: undefined,
    output: undefined,
    version: 3,
  });

  it("takes the completed steps, the last completed first; the later step first on a tie", () => {
    const order = undoOrder([
      step(0, "COMPLETED", 30),
      step(1, "COMPLETED", 10),
      step(2, "FAILED", 40),
      step(3, "COMPLETED", 30),
      step(4, "PENDING"),
    ]);
    expect(order.map((s) => s.index)).toEqual([3, 0, 1]);
  });
});

describe("idempotentRunId", () => {
  it("is the same for the same workflow and key, and differs otherwise", () => {
    const id = idempotentRunId("ingestion", "key-1");
    expect(id).toMatch(/^run-[0-9a-f]{32}$/);
    expect(idempotentRunId("ingestion", "key-1")).toBe(id);
    expect(idempotentRunId("ingestion", "key-2")).not.toBe(id);
    expect(idempotentRunId("doc_ingestion", "key-1")).not.toBe(id);
  });
});
