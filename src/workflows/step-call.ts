import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { DomainError } from "../errors/domain-error.js";
import type { HttpClient, OutboundCall } from "../http-client/http-client.js";
import { isOutboundError } from "../http-client/outbound-errors.js";
import { type TargetResolver, urlOf } from "../http-client/service-targets.js";
import type { StepCall } from "./definitions.js";

/** One call a step makes (its action, or its compensation), everything it sends decided. */
export interface StepRequest {
  /** The service, by name: resolved now, so a registration or a health change is followed. */
  readonly target: string;
  readonly call: StepCall;
  readonly body: JsonObject;
  /** Correlation id and traceparent of the run's call, sent as headers. */
  readonly origin: OutboundCall;
  /** "<run_id>:<step>" or "<run_id>:<step>:undo": lets the client and the target repeat it. */
  readonly idempotencyKey: string;
  /** Each HTTP attempt's timeout. */
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
}

/**
 * Why an attempt of a step failed, in words safe to show a client (no host, no stack). A
 * `permanent` failure (the target refused the request: 4xx but 408 and 429) is not attempted again.
 */
export class StepFailure extends Error {
  override readonly name = "StepFailure";

  constructor(
    message: string,
    readonly permanent = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * Makes one step call through the one outbound client and returns the answer's JSON object (a
 * JSON answer that is not an object is wrapped as `{value}`; an empty body is `{}`).
 * @throws StepFailure for every failure of the call (unresolvable target, network, timeout,
 *   non-2xx answer, a body that is not JSON); the signal's reason when `signal` aborts it.
 */
export async function callStep(
  deps: { readonly http: HttpClient; readonly targets: TargetResolver },
  request: StepRequest,
): Promise<JsonObject> {
  const { target, call } = request;
  let status: number;
  let body: Buffer;
  try {
    const resolved = deps.targets.resolve(target);
    const response = await deps.http.request({
      method: call.method,
      url: urlOf(resolved, call.path),
      ...(call.method === "GET" ? {} : { json: request.body }),
      call: request.origin,
      idempotencyKey: request.idempotencyKey,
      timeoutMs: request.timeoutMs,
      signal: request.signal,
    });
    ({ status, body } = response);
  } catch (error) {
    if (request.signal.aborted) throw request.signal.reason;
    throw new StepFailure(`${call.method} ${target} ${call.path}: ${safeMessage(error)}`, false, {
      cause: error,
    });
  }
  if (status < 200 || status > 299) {
    const permanent = status >= 400 && status < 500 && status !== 408 && status !== 429;
    throw new StepFailure(`${call.method} ${target} ${call.path}: HTTP ${status}`, permanent);
  }
  return outputOf(body, `${call.method} ${target} ${call.path}`);
}

/** A message that may be shown: ours say nothing of hosts; anything else is not repeated. */
function safeMessage(error: unknown): string {
  if (isOutboundError(error) || error instanceof DomainError) return error.message;
  return "unexpected failure";
}

function outputOf(body: Buffer, what: string): JsonObject {
  if (body.length === 0) return {};
  let parsed: JsonValue;
  try {
    parsed = JSON.parse(body.toString("utf8")) as JsonValue;
  } catch (error) {
    throw new StepFailure(`${what}: the answer is not JSON`, false, { cause: error });
  }
  return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)
    ? parsed
    : { value: parsed };
}
