import { DomainError } from "../errors/domain-error.js";
import type { HttpClient, OutboundMethod } from "../http-client/http-client.js";
import {
  isOutboundError,
  toDomainError,
  upstreamStatusError,
} from "../http-client/outbound-errors.js";
import {
  type ResolvedTarget,
  type TargetName,
  type TargetResolver,
  urlOf,
} from "../http-client/service-targets.js";

/** What every job is built on: the node's one outbound client and its target resolver. */
export interface JobDeps {
  readonly http: HttpClient;
  readonly targets: TargetResolver;
}

/** The call a job runs on behalf of: propagated to every service the job calls. */
export interface JobCall {
  readonly correlationId: string;
  /** The caller's span (the outbound client's span continues it). */
  readonly traceparent?: string | undefined;
  /** Aborts the job's outbound calls when the caller goes away. */
  readonly signal?: AbortSignal | undefined;
}

/** One call to a downstream service, as {@link callDownstream} makes it. */
export interface DownstreamCall {
  readonly target: ResolvedTarget;
  readonly method: OutboundMethod;
  /** Absolute path on the target, e.g. "/documents". */
  readonly path: string;
  readonly json?: unknown;
  /** Lets a POST be retried: the target recognises a repeat by it. */
  readonly idempotencyKey?: string;
  /** What the answer is, for the message of an unreadable one ("report"). */
  readonly answer: string;
}

/**
 * Resolves a well-known service name.
 * @throws DomainError "failed_precondition" naming the setting when it is neither registered
 *   HEALTHY nor configured.
 */
export function resolveTarget(deps: JobDeps, name: TargetName): ResolvedTarget {
  return deps.targets.resolve(name);
}

/**
 * Calls a downstream service and parses its JSON answer (an empty body reads as null). Every
 * failure becomes a DomainError whose message names the service, never its host:
 * @throws DomainError "timeout" or "unavailable" for the outbound client's failures (see
 *   `toDomainError`); "unavailable" or "failed_precondition" for a non-2xx answer (see
 *   `upstreamStatusError`); "unavailable" for an answer that is not JSON ("reporting answered an
 *   unreadable report").
 * @throws the signal's reason when the caller aborts.
 */
export async function callDownstream(
  deps: JobDeps,
  call: JobCall,
  request: DownstreamCall,
): Promise<unknown> {
  const service = request.target.service;
  let response: Awaited<ReturnType<HttpClient["request"]>>;
  try {
    response = await deps.http.request({
      method: request.method,
      url: urlOf(request.target, request.path),
      accept: "application/json",
      call: { correlationId: call.correlationId, traceparent: call.traceparent },
      ...(request.json === undefined ? {} : { json: request.json }),
      ...(request.idempotencyKey === undefined ? {} : { idempotencyKey: request.idempotencyKey }),
      ...(call.signal === undefined ? {} : { signal: call.signal }),
    });
  } catch (error) {
    if (isOutboundError(error)) throw toDomainError(error, service);
    throw error;
  }
  if (response.status < 200 || response.status > 299) {
    throw upstreamStatusError(response.status, service);
  }
  return parseAnswer(response.body, service, request.answer);
}

function parseAnswer(body: Buffer, service: string, answer: string): unknown {
  if (body.length === 0) return null;
  try {
    return JSON.parse(body.toString("utf8"));
  } catch (error) {
    throw unreadable(service, answer, error);
  }
}

/** The refusal of an answer that is not what `service` should have sent. */
export function unreadable(service: string, answer: string, cause?: unknown): DomainError {
  return new DomainError("unavailable", `${service} answered an unreadable ${answer}`, { cause });
}

/** True for a plain JSON object (not an array, not null). */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * An idempotency key for one step of this call: the same on every retry of the step, different
 * for another call even when a client reuses its correlation id (the call's own span id tells
 * them apart).
 */
export function stepKey(call: JobCall, step: string): string {
  const spanId = call.traceparent?.split("-")[2];
  return spanId === undefined
    ? `${call.correlationId}:${step}`
    : `${call.correlationId}:${spanId}:${step}`;
}
