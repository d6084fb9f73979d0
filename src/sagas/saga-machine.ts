import { DomainError } from "../errors/domain-error.js";
import type { SagaStatus, SagaStepStatus } from "./model.js";

/**
 * What a saga transition does besides changing the status (and the version, and `updatedAt`,
 * which every transition changes).
 */
export interface SagaEffects {
  /** The saga is finished: `finishedAt` is set and its PENDING steps become SKIPPED. */
  readonly finish: boolean;
  /** The event emitted by the process that made the transition, if any. */
  readonly event: string | undefined;
}

/** What a step transition does besides changing the step's status and version. */
export interface StepEffects {
  /** A new attempt of the action: `attempts` + 1, `startedAt` now, `finishedAt` cleared. */
  readonly attempt: boolean;
  /** The attempt ended: `finishedAt` now. */
  readonly finish: boolean;
  /** The step was undone: `compensatedAt` now. */
  readonly compensate: boolean;
  /** The step's error is cleared, unless the transition gives one. */
  readonly clearError: boolean;
  /** The transition may record the step's output. */
  readonly output: boolean;
}

/** One legal saga transition. */
export interface SagaRule {
  readonly of: "saga";
  readonly from: SagaStatus;
  readonly to: SagaStatus;
  /** Every step must be in one of these statuses; `undefined`: any. */
  readonly stepsIn: readonly SagaStepStatus[] | undefined;
  readonly effects: SagaEffects;
  /** What it means, for the docs. */
  readonly meaning: string;
}

/** One legal step transition. */
export interface StepRule {
  readonly of: "step";
  readonly from: SagaStepStatus;
  readonly to: SagaStepStatus;
  /** The saga must be in one of these statuses. */
  readonly sagaIn: readonly SagaStatus[];
  readonly effects: StepEffects;
  readonly meaning: string;
}

export type MachineRule = SagaRule | StepRule;

const sagaEffects = (finish: boolean, event?: string): SagaEffects =>
  Object.freeze({ finish, event });

const stepEffects = (effects: Partial<StepEffects> = {}): StepEffects =>
  Object.freeze({
    attempt: false,
    finish: false,
    compensate: false,
    clearError: false,
    output: false,
    ...effects,
  });

function saga(
  from: SagaStatus,
  to: SagaStatus,
  stepsIn: readonly SagaStepStatus[] | undefined,
  effects: SagaEffects,
  meaning: string,
): SagaRule {
  return Object.freeze({ of: "saga", from, to, stepsIn, effects, meaning });
}

function step(
  from: SagaStepStatus,
  to: SagaStepStatus,
  sagaIn: readonly SagaStatus[],
  effects: StepEffects,
  meaning: string,
): StepRule {
  return Object.freeze({ of: "step", from, to, sagaIn, effects, meaning });
}

// While a saga is still settling (compensating, or aborted with steps to undo), attempts in
// flight may still land and completed steps be undone.
const settling: readonly SagaStatus[] = ["RUNNING", "COMPENSATING", "ABORTED"];
const undoing: readonly SagaStatus[] = ["COMPENSATING", "ABORTED"];

/**
 * The saga state machine and the step state machine, in one table: every legal transition, with
 * its condition and its effects. Anything not listed is illegal (DomainError
 * "failed_precondition"). Both stores apply it (the Redis store's scripts are generated from it),
 * the README shows it ({@link sagaMachineMarkdown}) and the contract suite walks it exhaustively.
 *
 * Every transition is a compare-and-set: a saga transition on the saga's version, a step
 * transition on the step's own version, so that two processes can never both move the same step,
 * while parallel steps of a fan-out never conflict with each other. The saga's version grows with
 * every change of the saga or its steps, so a saga transition is decided on everything it saw.
 */
export const sagaMachine: readonly MachineRule[] = Object.freeze([
  saga("PENDING", "RUNNING", undefined, sagaEffects(false, "saga.started"), "started"),
  saga(
    "PENDING",
    "ABORTED",
    undefined,
    sagaEffects(true, "saga.aborted"),
    "cancelled before it started",
  ),
  saga(
    "RUNNING",
    "COMPLETED",
    ["COMPLETED", "SKIPPED"],
    sagaEffects(true, "saga.completed"),
    "every step done",
  ),
  saga(
    "RUNNING",
    "FAILED",
    ["PENDING", "FAILED", "SKIPPED"],
    sagaEffects(true, "saga.failed"),
    "a step failed, nothing to undo and nothing in flight",
  ),
  saga(
    "RUNNING",
    "COMPENSATING",
    undefined,
    sagaEffects(false),
    "a step failed: the completed ones are undone, last group first",
  ),
  saga(
    "RUNNING",
    "ABORTED",
    undefined,
    sagaEffects(true, "saga.aborted"),
    "cancelled; attempts in flight may still land, and completed steps be undone",
  ),
  saga(
    "COMPENSATING",
    "COMPENSATED",
    ["PENDING", "FAILED", "COMPENSATED", "SKIPPED"],
    sagaEffects(true, "saga.compensated"),
    "every completed step undone",
  ),
  saga(
    "COMPENSATING",
    "FAILED",
    ["PENDING", "COMPLETED", "FAILED", "COMPENSATED", "SKIPPED"],
    sagaEffects(true, "saga.failed"),
    "a compensation failed; nothing in flight",
  ),
  step("PENDING", "RUNNING", ["RUNNING"], stepEffects({ attempt: true }), "its first attempt"),
  step("PENDING", "SKIPPED", settling, stepEffects(), "not run"),
  step(
    "RUNNING",
    "RUNNING",
    ["RUNNING"],
    stepEffects({ attempt: true }),
    "a new attempt: a retry, or taken over from a node that died",
  ),
  step(
    "RUNNING",
    "COMPLETED",
    settling,
    stepEffects({ finish: true, clearError: true, output: true }),
    "the action succeeded",
  ),
  step(
    "RUNNING",
    "FAILED",
    settling,
    stepEffects({ finish: true, output: true }),
    "the action failed",
  ),
  step("FAILED", "RUNNING", ["RUNNING"], stepEffects({ attempt: true }), "retried"),
  step("COMPLETED", "COMPENSATING", undoing, stepEffects(), "its compensation starts"),
  step(
    "COMPENSATING",
    "COMPENSATING",
    undoing,
    stepEffects(),
    "its compensation again: a retry, or taken over",
  ),
  step(
    "COMPENSATING",
    "COMPENSATED",
    undoing,
    stepEffects({ compensate: true, clearError: true }),
    "undone",
  ),
  step("COMPENSATING", "FAILED", undoing, stepEffects(), "its compensation failed"),
]);

/** The saga transitions of {@link sagaMachine}. */
export const sagaRules: readonly SagaRule[] = Object.freeze(
  sagaMachine.filter((rule): rule is SagaRule => rule.of === "saga"),
);

/** The step transitions of {@link sagaMachine}. */
export const stepRules: readonly StepRule[] = Object.freeze(
  sagaMachine.filter((rule): rule is StepRule => rule.of === "step"),
);

/** The rule of a saga transition, or `undefined` when the table has none. */
export function sagaRule(from: SagaStatus, to: SagaStatus): SagaRule | undefined {
  return sagaRules.find((rule) => rule.from === from && rule.to === to);
}

/** The rule of a step transition, or `undefined` when the table has none. */
export function stepRule(from: SagaStepStatus, to: SagaStepStatus): StepRule | undefined {
  return stepRules.find((rule) => rule.from === from && rule.to === to);
}

/** Why a saga transition is refused: the table has no such transition. */
export function illegalSagaTransition(from: SagaStatus, to: SagaStatus): DomainError {
  return new DomainError("failed_precondition", `a saga cannot go from ${from} to ${to}`);
}

/** Why a saga transition is refused: a step is in a status the transition does not allow. */
export function sagaStepsNotReady(
  from: SagaStatus,
  to: SagaStatus,
  step: { readonly name: string; readonly status: SagaStepStatus },
): DomainError {
  return new DomainError(
    "failed_precondition",
    `a saga cannot go from ${from} to ${to} while its step ${step.name} is ${step.status}`,
  );
}

/** Why a step transition is refused: the table has no such transition. */
export function illegalStepTransition(
  name: string,
  from: SagaStepStatus,
  to: SagaStepStatus,
): DomainError {
  return new DomainError("failed_precondition", `step ${name} cannot go from ${from} to ${to}`);
}

/** Why a step transition is refused: the saga is in a status the transition does not allow. */
export function stepTransitionNotNow(
  name: string,
  from: SagaStepStatus,
  to: SagaStepStatus,
  sagaStatus: SagaStatus,
): DomainError {
  return new DomainError(
    "failed_precondition",
    `step ${name} cannot go from ${from} to ${to} while the saga is ${sagaStatus}`,
  );
}

/**
 * The rule that allows moving a saga from `from` to `to` with its steps in `steps`.
 * @throws DomainError "failed_precondition" naming the states when it is illegal.
 */
export function checkSagaTransition(
  from: SagaStatus,
  to: SagaStatus,
  steps: readonly { readonly name: string; readonly status: SagaStepStatus }[],
): SagaRule {
  const rule = sagaRule(from, to);
  if (rule === undefined) throw illegalSagaTransition(from, to);
  const blocking =
    rule.stepsIn === undefined ? undefined : steps.find((s) => !rule.stepsIn?.includes(s.status));
  if (blocking !== undefined) throw sagaStepsNotReady(from, to, blocking);
  return rule;
}

/**
 * The rule that allows moving step `name` from `from` to `to` while its saga is `sagaStatus`.
 * @throws DomainError "failed_precondition" naming the states when it is illegal.
 */
export function checkStepTransition(
  name: string,
  from: SagaStepStatus,
  to: SagaStepStatus,
  sagaStatus: SagaStatus,
): StepRule {
  const rule = stepRule(from, to);
  if (rule === undefined) throw illegalStepTransition(name, from, to);
  if (!rule.sagaIn.includes(sagaStatus)) throw stepTransitionNotNow(name, from, to, sagaStatus);
  return rule;
}

/**
 * The table as the README shows it (one Markdown table, both machines); a test keeps the README
 * equal to it.
 */
export function sagaMachineMarkdown(): string {
  const either = (items: readonly string[]) =>
    items.length === 1 ? `${items[0]}` : `${items.slice(0, -1).join(", ")} or ${items.at(-1)}`;
  const rows = sagaMachine.map((rule) =>
    rule.of === "saga"
      ? `| saga | ${rule.from} | ${rule.to} | ${rule.stepsIn ? `every step ${either(rule.stepsIn)}` : "—"} | ${sagaEffectText(rule.effects)} | ${rule.meaning} |`
      : `| step | ${rule.from} | ${rule.to} | saga ${either(rule.sagaIn)} | ${stepEffectText(rule.effects)} | ${rule.meaning} |`,
  );
  return [
    "| Of | From | To | Only when | Effects | Meaning |",
    "|---|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}

function sagaEffectText(effects: SagaEffects): string {
  const parts = [
    ...(effects.finish ? ["finished_at; PENDING steps SKIPPED"] : []),
    ...(effects.event ? [`event \`${effects.event}\``] : []),
  ];
  return parts.length === 0 ? "—" : parts.join("; ");
}

function stepEffectText(effects: StepEffects): string {
  const parts = [
    ...(effects.attempt ? ["attempts + 1; started_at; finished_at cleared"] : []),
    ...(effects.finish ? ["finished_at"] : []),
    ...(effects.compensate ? ["compensated_at"] : []),
    ...(effects.clearError ? ["error cleared"] : []),
    ...(effects.output ? ["may set output"] : []),
  ];
  return parts.length === 0 ? "—" : parts.join("; ");
}

/**
 * The event of a saga transition to `to`, as the table says (every transition to one status
 * emits the same event), or `undefined` for none.
 */
export function sagaEventOf(to: SagaStatus): string | undefined {
  return sagaRules.find((rule) => rule.to === to)?.effects.event;
}
