import { describe, expect, it } from "vitest";
import {
  builtInWorkflows,
  definitionProblems,
  type StepDefinition,
  type WorkflowDefinition,
} from "./definitions.js";

const ingest: StepDefinition = {
  name: "ingest",
  target: "{source}-agent",
  action: { method: "POST", path: "/ingest" },
  compensation: { method: "POST", path: "/ingest/rollback" },
  group: 0,
  perSource: true,
  timeoutMs: 1000,
  maxAttempts: 2,
};

function workflow(overrides: Partial<WorkflowDefinition> = {}): WorkflowDefinition {
  return { name: "w", description: "", sources: ["github"], steps: [ingest], ...overrides };
}

describe("workflow definitions", () => {
  it("accepts the built-in ones, ingestion fanning out to the agents then the engine", () => {
    expect(definitionProblems(builtInWorkflows)).toEqual([]);
    const ingestion = builtInWorkflows.find((w) => w.name === "ingestion");
    expect(ingestion?.steps.map((s) => [s.name, s.target, s.group, s.perSource])).toEqual([
      ["ingest", "{source}-agent", 0, true],
      ["analyze", "consistency-engine", 1, false],
    ]);
    expect(builtInWorkflows.map((w) => w.name)).toEqual([
      "ingestion",
      "doc_ingestion",
      "consistency_analysis",
      "quality_assessment",
    ]);
  });

  it.each<[string, WorkflowDefinition[], string]>([
    ["a bad name", [workflow({ name: "Bad Name" })], 'workflow "Bad Name": the name'],
    ["a name twice", [workflow(), workflow()], 'workflow "w": defined twice'],
    ["no step", [workflow({ steps: [] })], "has no step"],
    ["a step twice", [workflow({ steps: [ingest, ingest] })], 'step "ingest": defined twice'],
    [
      "{source} outside a per-source step",
      [workflow({ steps: [{ ...ingest, perSource: false }] })],
      "only a per-source step may name {source}",
    ],
    [
      "a per-source step without sources",
      [workflow({ sources: [] })],
      "a per-source step in a workflow without sources",
    ],
    [
      "a relative path",
      [workflow({ steps: [{ ...ingest, action: { method: "POST", path: "ingest" } }] })],
      "the action's path must start",
    ],
    [
      "groups out of order",
      [
        workflow({
          steps: [
            { ...ingest, group: 1 },
            { ...ingest, name: "b", group: 0 },
          ],
        }),
      ],
      "steps must be declared by group",
    ],
    ["a zero timeout", [workflow({ steps: [{ ...ingest, timeoutMs: 0 }] })], "timeout_ms"],
    ["too many attempts", [workflow({ steps: [{ ...ingest, maxAttempts: 50 }] })], "max_attempts"],
  ])("refuses %s, naming the workflow and step", (_what, definitions, problem) => {
    const problems = definitionProblems(definitions);
    expect(problems.join("\n")).toContain(problem);
  });
});
