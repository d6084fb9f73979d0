import { Code, ConnectError } from "@connectrpc/connect";
import { DomainError, type DomainErrorKind } from "./domain-error.js";

/** The Connect code of every domain error kind: the one table the interceptor chain uses. */
export const codeOfKind: Readonly<Record<DomainErrorKind, Code>> = Object.freeze({
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  invalid: Code.InvalidArgument,
  conflict: Code.Aborted,
  failed_precondition: Code.FailedPrecondition,
  permission_denied: Code.PermissionDenied,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
  timeout: Code.DeadlineExceeded,
  internal: Code.Internal,
});

/**
 * Turns what a domain call threw into what a client may see: a DomainError keeps its message and
 * gets its code; a ConnectError passes; anything else is rethrown for the telemetry interceptor to
 * log and hide. The DomainError (and so its own cause) becomes the ConnectError's `cause`, which
 * server logs show and no transport sends: the wire carries only code, message and details.
 */
export function toConnectError(error: unknown): unknown {
  if (error instanceof DomainError) {
    return new ConnectError(
      error.kind === "internal" ? "internal error" : error.message,
      codeOfKind[error.kind],
      undefined,
      undefined,
      error,
    );
  }
  return error;
}
