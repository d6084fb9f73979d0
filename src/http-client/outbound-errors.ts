import { DomainError, type DomainErrorKind } from "../errors/domain-error.js";

/** The closed set of ways an outbound call fails before a status code can be returned. */
export const outboundErrorKinds = [
  "invalid_url",
  "destination_refused",
  "timeout",
  "too_large",
  "redirect_refused",
  "too_many_redirects",
  "network",
  "circuit_open",
] as const;

/** One of {@link outboundErrorKinds}. */
export type OutboundErrorKind = (typeof outboundErrorKinds)[number];

/**
 * Why an outbound call failed. The message is written to be shown to a client: it never names a
 * host, an address or a raw socket error; the underlying error, if any, is kept in `cause` for logs.
 * One exception, "destination_refused": its message names the host the caller asked for (and the
 * address, when a refused range holds it) and the rule that refused it, so the refusal can be
 * fixed; the address a name resolves to is named only when it is a refused, well-known one.
 */
export class OutboundError extends Error {
  override readonly name = "OutboundError";

  constructor(
    readonly kind: OutboundErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** True when `error` is an {@link OutboundError}. */
export function isOutboundError(error: unknown): error is OutboundError {
  return error instanceof OutboundError;
}

/**
 * What each outbound failure means to the domain, in one table: a URL we cannot use is a setup
 * problem to fix (failed_precondition), and so is a destination OUTBOUND_ALLOW or the metadata
 * ranges refuse: retrying will not help, the configuration (the service's URL, or the allow-list)
 * must change, as with invalid_url; everything else says the target cannot serve us now.
 * The Record type makes an unmapped kind a compile error; a test checks the same at run time.
 */
const domainKinds: Readonly<Record<OutboundErrorKind, DomainErrorKind>> = Object.freeze({
  invalid_url: "failed_precondition",
  destination_refused: "failed_precondition",
  timeout: "timeout",
  circuit_open: "unavailable",
  network: "unavailable",
  too_large: "unavailable",
  redirect_refused: "unavailable",
  too_many_redirects: "unavailable",
});

/**
 * The domain's reading of an outbound failure. `target` is the service name the caller knows the
 * target by ("doc-store"), never a URL: it starts the message, which may be sent to clients.
 * The outbound error is kept as `cause`, for logs.
 */
export function toDomainError(error: OutboundError, target: string): DomainError {
  return new DomainError(domainKinds[error.kind], `${target}: ${error.message}`, { cause: error });
}

/**
 * The domain's reading of a non-2xx answer from `target` (a service name, never a URL): 5xx and
 * 429 say the target cannot serve us now (unavailable); any other status (404 included: the
 * target lacks what we rely on) is a failed_precondition. The message names target and status only.
 * @throws RangeError when `status` is not an integer in 300..599.
 */
export function upstreamStatusError(status: number, target: string): DomainError {
  if (!Number.isInteger(status) || status < 300 || status > 599) {
    throw new RangeError("status must be an integer in 300..599");
  }
  const kind: DomainErrorKind =
    status >= 500 || status === 429 ? "unavailable" : "failed_precondition";
  return new DomainError(kind, `${target} answered ${status}`);
}
