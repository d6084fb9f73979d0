import type { DescField, Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import type { ShadowedValue } from "../gateway/http-bindings.js";
import type { Interceptor } from "./chain.js";
import { compileValidator, type FieldViolation, type MessageValidator } from "./field-rules.js";

/** Violations named in an error's message and details; the first ones are enough to fix a call. */
const maxReportedViolations = 10;
/** Longest error message, in UTF-16 units, so that a bad request cannot make a huge error. */
const maxMessageLength = 512;

export interface ValidationOptions {
  /**
   * Values a method's request field may not take, beside its rules in the protos: the path
   * variable values another route takes first (see `shadowedPathValues`), refused on every
   * protocol so that a value behaves alike everywhere. Default: none.
   */
  readonly refusedValues?: readonly ShadowedValue[];
}

/**
 * Enforces the `(orchestrator.v1.field)` rules of each method's request message, on every
 * protocol. Rules are compiled once per method when services are wrapped; methods whose request
 * carries no rules are left alone. Unary requests are checked before the implementation runs;
 * streamed requests one by one as the implementation consumes them.
 *
 * A request that breaks a rule fails with {@link invalidRequestError}.
 *
 * @throws Error at wrap time when a rule in the protos is malformed (see `compileValidator`).
 */
export function createValidationInterceptor(options: ValidationOptions = {}): Interceptor {
  const refused = options.refusedValues ?? [];
  return (method) => {
    const validate = withRefusedValues(
      compileValidator(method.input),
      refused.filter(
        (r) => r.method.parent.typeName === method.parent.typeName && r.method.name === method.name,
      ),
    );
    if (validate === undefined) return undefined;
    const assertValid = (request: Message): void => {
      const violations = validate(request);
      if (violations.length > 0) throw invalidRequestError(violations);
    };
    return {
      unary: (next) => async (request, context) => {
        assertValid(request);
        return next(request, context);
      },
      streaming: (next) => (requests, context) => next(validated(requests, assertValid), context),
    };
  };
}

/**
 * The error for a request that breaks field rules: INVALID_ARGUMENT with a `google.rpc.BadRequest`
 * detail, and a message such as `invalid request: name: is required; base_url: must be an absolute
 * http or https URL`. Both name at most the first 10 violations; the message is cut to 512
 * characters.
 */
export function invalidRequestError(violations: readonly FieldViolation[]): ConnectError {
  const reported = violations.slice(0, maxReportedViolations);
  const summary = reported.map((v) => `${v.field}: ${v.description}`).join("; ");
  return new ConnectError(
    truncate(`invalid request: ${summary}`, maxMessageLength),
    Code.InvalidArgument,
    undefined,
    [{ desc: BadRequestSchema, value: { fieldViolations: reported } }],
  );
}

async function* validated(
  requests: AsyncIterable<Message>,
  assertValid: (request: Message) => void,
): AsyncIterable<Message> {
  for await (const request of requests) {
    assertValid(request);
    yield request;
  }
}

function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = max - 1;
  // Never leave half a surrogate pair before the ellipsis.
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}…`;
}

/** The validator, extended with a check that each refused value is absent. */
function withRefusedValues(
  validate: MessageValidator | undefined,
  refused: readonly ShadowedValue[],
): MessageValidator | undefined {
  if (refused.length === 0) return validate;
  return (request) => {
    const violations = validate?.(request) ?? [];
    for (const { fieldPath, value, reason } of refused) {
      if (valueAt(request, fieldPath) !== value) continue;
      violations.push({
        field: fieldPath.map((field) => field.name).join("."),
        description: `must not be ${JSON.stringify(value)}: ${reason}`,
      });
    }
    return violations;
  };
}

function valueAt(message: Message, path: readonly DescField[]): unknown {
  let value: unknown = message;
  for (const field of path) {
    if (typeof value !== "object" || value === null) return undefined;
    value = (value as Record<string, unknown>)[field.localName];
  }
  return value;
}
