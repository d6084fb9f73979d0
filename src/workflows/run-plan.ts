import { createHash } from "node:crypto";
import { DomainError } from "../errors/domain-error.js";
import type { SagaStep } from "../sagas/model.js";
import type { StepCall, StepDefinition, WorkflowDefinition } from "./definitions.js";

/** One step of a run: a definition's step, per-source ones expanded for one source. */
export interface PlannedStep {
  /** Its index in the run's saga. */
  readonly index: number;
  /** "<name>" or, per source, "<name>:<source>": the saga step's name. */
  readonly name: string;
  /** The source of a per-source step; undefined otherwise. */
  readonly source: string | undefined;
  /** The service called, "{source}" replaced: resolved by name when the step runs. */
  readonly target: string;
  readonly action: StepCall;
  readonly compensation: StepCall | undefined;
  readonly group: number;
  readonly timeoutMs: number;
  readonly maxAttempts: number;
}

/**
 * The steps a run of `workflow` makes for `sources`, in saga order: by group, then as declared,
 * a per-source step once for each source in the order given (duplicates once).
 * @throws DomainError "invalid" naming `sources`: none given to a workflow with per-source steps,
 *   or one the workflow does not have (also any, to a workflow without sources).
 */
export function planSteps(workflow: WorkflowDefinition, sources: readonly string[]): PlannedStep[] {
  const wanted = [...new Set(sources)];
  const foreign = wanted.find(
    (source) => !(workflow.sources as readonly string[]).includes(source),
  );
  if (foreign !== undefined) {
    const allowed = workflow.sources.length === 0 ? "none" : workflow.sources.join(", ");
    throw new DomainError(
      "invalid",
      `sources: workflow ${workflow.name} has no source ${JSON.stringify(foreign)} (it has ${allowed})`,
    );
  }
  if (wanted.length === 0 && workflow.steps.some((step) => step.perSource)) {
    throw new DomainError(
      "invalid",
      `sources: workflow ${workflow.name} needs at least one of ${workflow.sources.join(", ")}`,
    );
  }
  const planned: PlannedStep[] = [];
  for (const step of workflow.steps) {
    for (const source of step.perSource ? wanted : [undefined]) {
      planned.push(plannedStep(step, source, planned.length));
    }
  }
  return planned;
}

function plannedStep(step: StepDefinition, source: string | undefined, index: number): PlannedStep {
  return {
    index,
    name: source === undefined ? step.name : `${step.name}:${source}`,
    source,
    target: source === undefined ? step.target : step.target.replaceAll("{source}", source),
    action: step.action,
    compensation: step.compensation,
    group: step.group,
    timeoutMs: step.timeoutMs,
    maxAttempts: step.maxAttempts,
  };
}

/** The steps by group, lowest group first: each inner list runs at once, the lists in order. */
export function groupsOf<T extends { readonly group: number }>(steps: readonly T[]): T[][] {
  const byGroup = new Map<number, T[]>();
  for (const step of steps) {
    const group = byGroup.get(step.group);
    if (group) group.push(step);
    else byGroup.set(step.group, [step]);
  }
  return [...byGroup.entries()].sort(([a], [b]) => a - b).map(([, group]) => group);
}

/**
 * The completed steps of a failed run (and those whose undoing a node that died had begun) in
 * the order they are undone: the reverse of the order
 * they completed (by `finishedAt`; the same instant: the later in the saga first). Undoing the
 * latest first means no step is undone while a step that built on it still stands.
 */
export function undoOrder(steps: readonly SagaStep[]): SagaStep[] {
  return steps
    .filter((step) => step.status === "COMPLETED" || step.status === "COMPENSATING")
    .sort((a, b) => (b.finishedAt ?? 0) - (a.finishedAt ?? 0) || b.index - a.index);
}

/** "POST github-agent /ingest": how a saga step names its call, for operators. */
export function callText(target: string, call: StepCall | undefined): string {
  return call === undefined ? "" : `${call.method} ${target} ${call.path}`;
}

/**
 * The run id of an idempotent start: "run-" and 32 hex digits of a SHA-256 of the workflow and
 * the key, so that the same key (for the same workflow) names the same run on every node.
 */
export function idempotentRunId(workflow: string, idempotencyKey: string): string {
  const digest = createHash("sha256").update(`${workflow}\u0000${idempotencyKey}`).digest("hex");
  return `run-${digest.slice(0, 32)}`;
}
