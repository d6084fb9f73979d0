/** The closed set of ways a domain operation fails, whatever the store or transport. */
export const domainErrorKinds = [
  "not_found",
  "already_exists",
  "invalid",
  "conflict",
  "failed_precondition",
  "permission_denied",
  "resource_exhausted",
  "unavailable",
  "timeout",
  "internal",
] as const;

export type DomainErrorKind = (typeof domainErrorKinds)[number];

/**
 * The one error type of the domain modules. Its message is written for the caller and may be sent
 * over the wire; its `cause` (a Redis error, a socket error) is for logs only and never is.
 */
export class DomainError extends Error {
  override readonly name = "DomainError";

  constructor(
    readonly kind: DomainErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
