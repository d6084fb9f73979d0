import type { JsonObject } from "@bufbuild/protobuf";
import { DomainError } from "../errors/domain-error.js";
import type { IdSource } from "../ids.js";
import { boundedError, type NewSaga, type Saga, type SagaStep, type SagaSummary } from "./model.js";
import type { StepRule } from "./saga-machine.js";
import type { SagaListQuery, StepTransition } from "./saga-store.js";

/** What a saga store keeps, and how big a saga may be. */
export interface SagaStoreLimits {
  /** How long a finished saga is kept, in ms. Default 7 days. */
  readonly retentionMs: number;
  /** Finished sagas kept at most; beyond them the oldest finished go. Default 10,000. */
  readonly maxFinished: number;
  /** Bytes of all stored sagas (see {@link sagaWeight}). Default 64 MiB. */
  readonly maxBytes: number;
  /** Bytes of one saga, its steps' outputs and errors included. Default 1 MiB. */
  readonly maxSagaBytes: number;
  /** Steps of one saga. Default 256. */
  readonly maxSteps: number;
  /** Bytes of one step's output, as JSON. Default 64 KiB. */
  readonly maxOutputBytes: number;
  /** Bytes of a saga's context, as JSON. Default 16 KiB. */
  readonly maxContextBytes: number;
  /** Ids no saga may take, with the reason (a REST route takes them). Default none. */
  readonly reservedIds: ReadonlyMap<string, string>;
}

/** The defaults of {@link SagaStoreLimits}, as each field says. */
export const sagaStoreDefaults: Readonly<SagaStoreLimits> = Object.freeze({
  retentionMs: 7 * 24 * 3_600_000,
  maxFinished: 10_000,
  maxBytes: 64 * 1024 * 1024,
  maxSagaBytes: 1024 * 1024,
  maxSteps: 256,
  maxOutputBytes: 64 * 1024,
  maxContextBytes: 16 * 1024,
  reservedIds: new Map<string, string>(),
});

/**
 * The limits, `options` merged over the defaults.
 * @throws RangeError when a bound is not a non-negative integer (positive, but for retention).
 */
export function sagaStoreLimits(options: Partial<SagaStoreLimits> = {}): SagaStoreLimits {
  const limits = Object.freeze({ ...sagaStoreDefaults, ...options });
  for (const name of [
    "retentionMs",
    "maxFinished",
    "maxBytes",
    "maxSagaBytes",
    "maxSteps",
    "maxOutputBytes",
    "maxContextBytes",
  ] as const) {
    const value = limits[name];
    const least =
      name === "retentionMs" || name === "maxOutputBytes" || name === "maxContextBytes" ? 0 : 1;
    if (!Number.isSafeInteger(value) || value < least) {
      throw new RangeError(`${name} must be an integer of at least ${least}, not ${value}`);
    }
  }
  return limits;
}

// What a saga costs beyond its strings: its record, its keys, its index entries.
const sagaOverhead = 512;
// What a step costs beyond its error and output: its status, version, times, attempts.
const stepOverhead = 128;

/** The bytes of a string as UTF-8: what Redis' `#` counts in a script. */
export function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

/**
 * A step's definition as stored: the part of a step that never changes. Both stores weigh this
 * very text, so that their byte bounds agree to the byte.
 */
export function encodeStepDefinition(step: SagaStep): string {
  return JSON.stringify({
    name: step.name,
    action: step.action,
    compensation: step.compensation,
    group: step.group,
  });
}

/** The bytes a saga counts for against the bounds, beside its steps' errors and outputs. */
export function sagaBaseWeight(saga: Saga, definitions: readonly string[]): number {
  return (
    sagaOverhead +
    stepOverhead * saga.steps.length +
    utf8Bytes(saga.name) +
    utf8Bytes(saga.runId) +
    utf8Bytes(saga.correlationId) +
    (saga.context === undefined ? 0 : utf8Bytes(JSON.stringify(saga.context))) +
    definitions.reduce((sum, d) => sum + utf8Bytes(d), 0) +
    utf8Bytes(saga.error)
  );
}

/** The bytes a step's changing parts count for. */
export function stepWeight(step: Pick<SagaStep, "error" | "output">): number {
  return (
    utf8Bytes(step.error) + (step.output === undefined ? 0 : utf8Bytes(encodeOutput(step.output)))
  );
}

/**
 * The bytes a saga counts for against `maxSagaBytes` and `maxBytes`: its strings and outputs
 * (UTF-8), 512 per saga and 128 per step.
 */
export function sagaWeight(saga: Saga): number {
  return (
    sagaBaseWeight(saga, saga.steps.map(encodeStepDefinition)) +
    saga.steps.reduce((sum, s) => sum + stepWeight(s), 0)
  );
}

function encodeOutput(output: JsonObject): string {
  return JSON.stringify(output);
}

const idPattern = /^[A-Za-z0-9._:-]{1,128}$/;

/** A new saga as stored: validated, every default filled in, at version 1. */
export interface SagaDraft {
  readonly saga: Saga;
  /** {@link encodeStepDefinition} of each step. */
  readonly definitions: readonly string[];
  readonly weight: number;
  /** Its place in the listing of its status. */
  readonly listingKey: string;
}

/**
 * Checks a new saga against the limits and builds it, PENDING at `now`.
 * @throws DomainError "invalid" naming the field out of its bounds, or the reserved id.
 */
export function draftSaga(
  input: NewSaga,
  limits: SagaStoreLimits,
  now: number,
  ids: IdSource,
): SagaDraft {
  const sagaId = input.sagaId ?? ids.uuid();
  if (!idPattern.test(sagaId)) invalid("saga_id must be 1 to 128 of A-Z a-z 0-9 . _ : -");
  const reserved = limits.reservedIds.get(sagaId);
  if (reserved !== undefined) invalid(`the saga id ${sagaId} is reserved: ${reserved}`);
  checkLength("name", input.name, 1, 128);
  checkLength("run_id", input.runId ?? "", 0, 128);
  checkLength("correlation_id", input.correlationId ?? "", 0, 128);
  const steps = draftSteps(input, limits);
  if (input.lease !== undefined) checkLease(input.lease.holder, input.lease.ttlMs);
  const context = input.context === undefined ? undefined : encodeOutput(input.context);
  if (context !== undefined && utf8Bytes(context) > limits.maxContextBytes) {
    invalid(
      `context would take ${utf8Bytes(context)} bytes, more than the ${limits.maxContextBytes} allowed`,
    );
  }
  const saga: Saga = {
    sagaId,
    name: input.name,
    runId: input.runId ?? "",
    correlationId: input.correlationId ?? "",
    status: "PENDING",
    steps,
    createdAt: now,
    updatedAt: now,
    finishedAt: undefined,
    error: "",
    version: 1,
    context: context === undefined ? undefined : decodeOutput(context),
    lease:
      input.lease === undefined
        ? undefined
        : Object.freeze({
            holder: input.lease.holder,
            token: 1,
            expiresAt: Math.floor(now + input.lease.ttlMs),
          }),
  };
  const definitions = steps.map(encodeStepDefinition);
  const weight = sagaBaseWeight(saga, definitions);
  if (weight > limits.maxSagaBytes) {
    invalid(`the saga would take ${weight} bytes, more than the ${limits.maxSagaBytes} allowed`);
  }
  return { saga, definitions, weight, listingKey: listingKey(now, sagaId) };
}

function draftSteps(input: NewSaga, limits: SagaStoreLimits): SagaStep[] {
  if (!Array.isArray(input.steps) || input.steps.length === 0) invalid("steps: at least one");
  if (input.steps.length > limits.maxSteps) {
    invalid(`steps: at most ${limits.maxSteps}, not ${input.steps.length}`);
  }
  const names = new Set<string>();
  let previousGroup = 0;
  return input.steps.map((declared, index) => {
    const field = `steps[${index}]`;
    checkLength(`${field}.name`, declared.name, 1, 128);
    if (names.has(declared.name))
      invalid(`${field}.name: ${declared.name} is taken by another step`);
    names.add(declared.name);
    checkLength(`${field}.action`, declared.action ?? "", 0, 512);
    checkLength(`${field}.compensation`, declared.compensation ?? "", 0, 512);
    const group = declared.group ?? 0;
    if (!Number.isInteger(group) || group < 0 || group > 2_147_483_647) {
      invalid(`${field}.group must be an integer from 0 to 2147483647`);
    }
    if (group < previousGroup) invalid(`${field}.group must not be less than the previous step's`);
    previousGroup = group;
    return {
      index,
      name: declared.name,
      action: declared.action ?? "",
      compensation: declared.compensation ?? "",
      group,
      status: "PENDING",
      attempts: 0,
      error: "",
      startedAt: undefined,
      finishedAt: undefined,
      compensatedAt: undefined,
      output: undefined,
      version: 1,
    };
  });
}

/** A step change as stored: its error bounded, its output encoded and within its bound. */
export interface StepChangeDraft {
  readonly error: string | undefined;
  readonly output: string | undefined;
}

/**
 * Checks what a step transition carries, before it reaches the store. Whether the rule takes an
 * output is checked by the store, against the step's stored status.
 * @throws DomainError "invalid" for a version that is not a positive integer, or an output over
 *   `maxOutputBytes`.
 */
export function draftStepChange(change: StepTransition, limits: SagaStoreLimits): StepChangeDraft {
  checkVersion(change.expectedVersion);
  const output = change.output === undefined ? undefined : encodeOutput(change.output);
  if (output !== undefined && utf8Bytes(output) > limits.maxOutputBytes) {
    invalid(
      `output would take ${utf8Bytes(output)} bytes, more than the ${limits.maxOutputBytes} allowed`,
    );
  }
  return {
    error: change.error === undefined ? undefined : boundedError(change.error),
    output,
  };
}

/** A saga transition's error as stored: cut to 1,024 characters; `undefined` when not given. */
export function boundedSagaError(error: string | undefined): string | undefined {
  return error === undefined ? undefined : boundedError(error);
}

/** @throws DomainError "invalid" unless `version` is a positive integer. */
export function checkVersion(version: number): void {
  if (!Number.isSafeInteger(version) || version < 1) {
    invalid(`expected version must be a positive integer, not ${version}`);
  }
}

/** Why a step transition carrying output is refused by a rule that takes none. */
export function outputNotTaken(rule: StepRule): DomainError {
  return new DomainError("invalid", `a step going from ${rule.from} to ${rule.to} takes no output`);
}

/**
 * Where a saga sorts in the listing of its status: by creation time, then id. Fixed width, so
 * that the order of the text (as Redis' ZRANGEBYLEX compares) is the order of the times.
 */
export function listingKey(createdAt: number, sagaId: string): string {
  const at = Math.max(0, Math.min(Math.floor(createdAt), Number.MAX_SAFE_INTEGER));
  return `${String(at).padStart(16, "0")}|${sagaId}`;
}

/** Where a finished saga sorts among finished ones: by finish time, then id. */
export function finishedKey(finishedAt: number, sagaId: string): string {
  return listingKey(finishedAt, sagaId);
}

const listingKeyPattern = /^\d{16}\|[A-Za-z0-9._:-]{1,128}$/;

/** The page size and the listing key to continue after, checked. */
export function pageOf(query: SagaListQuery): { pageSize: number; after: string } {
  const pageSize = query.pageSize ?? 100;
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1_000) {
    invalid(`page_size must be from 1 to 1000, not ${pageSize}`);
  }
  const token = query.pageToken ?? "";
  if (token === "") return { pageSize, after: "" };
  const after = Buffer.from(token, "base64url").toString("utf8");
  if (!listingKeyPattern.test(after)) invalid("page_token is not one this listing gave");
  return { pageSize, after };
}

/** The token of the page after the one ending with `last`. */
export function pageTokenAfter(last: string): string {
  return Buffer.from(last, "utf8").toString("base64url");
}

/** A saga without its steps. */
export function summaryOf(saga: Saga): SagaSummary {
  const { steps, ...rest } = saga;
  return { ...rest, stepCount: steps.length };
}

/** Why a saga id names nothing. */
export function sagaNotFound(sagaId: string): DomainError {
  return new DomainError("not_found", `saga ${sagaId} not found`);
}

/** Why a step transition names a step the saga does not have. */
export function noSuchStep(sagaId: string, stepIndex: number): DomainError {
  return new DomainError("invalid", `saga ${sagaId} has no step ${stepIndex}`);
}

/** Why a saga transition lost its compare-and-set. */
export function sagaChanged(sagaId: string, version: number): DomainError {
  return new DomainError("conflict", `saga ${sagaId} changed meanwhile (version ${version})`);
}

/** Why a step transition lost its compare-and-set. */
export function stepChanged(sagaId: string, name: string, version: number): DomainError {
  return new DomainError(
    "conflict",
    `step ${name} of saga ${sagaId} changed meanwhile (version ${version})`,
  );
}

/** Why a write would take a saga past `maxSagaBytes`. */
export function sagaTooLarge(weight: number, limit: number): DomainError {
  return new DomainError(
    "invalid",
    `the saga would take ${weight} bytes, more than the ${limit} allowed`,
  );
}

/** Why a write would take the store past `maxBytes` with running sagas alone. */
export function storeFull(limit: number): DomainError {
  return new DomainError(
    "resource_exhausted",
    `the saga store is full: running sagas take its ${limit} bytes`,
  );
}

/** Why a transition carrying a lease is refused: the saga's lease is another's now. */
export function leaseLost(sagaId: string, token: number): DomainError {
  return new DomainError(
    "failed_precondition",
    `the lease of saga ${sagaId} is lost: it was taken over (token ${token})`,
  );
}

/** Whether `error` is {@link leaseLost}'s. */
export function isLeaseLost(error: unknown): boolean {
  return (
    error instanceof DomainError &&
    error.kind === "failed_precondition" &&
    error.message.includes(" is lost: ")
  );
}

/** Why a lease cannot be taken: another holder's has not expired. */
export function leaseHeld(sagaId: string): DomainError {
  return new DomainError("conflict", `saga ${sagaId} is leased by another node`);
}

/** Why a finished saga takes no lease. */
export function leaseOfFinished(sagaId: string, status: string): DomainError {
  return new DomainError("failed_precondition", `saga ${sagaId} is ${status}: it takes no lease`);
}

/** @throws DomainError "invalid" for a holder or ttl out of bounds. */
export function checkLease(holder: string, ttlMs: number): void {
  checkLength("holder", holder, 1, 128);
  if (!Number.isSafeInteger(ttlMs) || ttlMs < 1 || ttlMs > 3_600_000) {
    invalid(`ttl_ms must be from 1 to 3600000, not ${ttlMs}`);
  }
}

/** Why a saga cannot be created under a taken id. */
export function sagaExists(sagaId: string): DomainError {
  return new DomainError("already_exists", `saga ${sagaId} already exists`);
}

function checkLength(field: string, value: string, min: number, max: number): void {
  if (typeof value !== "string" || value.length < min || value.length > max) {
    invalid(`${field} must be ${min} to ${max} characters`);
  }
}

function invalid(message: string): never {
  throw new DomainError("invalid", message);
}

/**
 * The step after `rule` moved it at `now`, carrying `change`: what both stores store. (The Redis
 * store's script does the same to the stored fields.)
 */
export function applyStepRule(
  step: SagaStep,
  rule: StepRule,
  change: StepChangeDraft,
  now: number,
): SagaStep {
  const { effects } = rule;
  return {
    ...step,
    status: rule.to,
    attempts: effects.attempt ? step.attempts + 1 : step.attempts,
    startedAt: effects.attempt ? now : step.startedAt,
    finishedAt: effects.attempt ? undefined : effects.finish ? now : step.finishedAt,
    compensatedAt: effects.compensate ? now : step.compensatedAt,
    error: change.error ?? (effects.clearError ? "" : step.error),
    output: change.output === undefined ? step.output : decodeOutput(change.output),
    version: step.version + 1,
  };
}

/** An output as read back: parsed from its stored JSON and frozen, so no reader can change it. */
export function decodeOutput(json: string): JsonObject {
  return deepFreeze(JSON.parse(json) as JsonObject);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/** Milliseconds from creation to finish, as the stats count them (never negative). */
export function durationOf(saga: Pick<Saga, "createdAt" | "finishedAt">): number {
  return saga.finishedAt === undefined ? 0 : Math.max(0, saga.finishedAt - saga.createdAt);
}
