import { Code } from "@connectrpc/connect";

/**
 * The HTTP status of every Connect code, as the REST gateway answers it: the usual mapping of
 * google.rpc codes (and Connect's), so that curl users see what HTTP means.
 */
export const httpStatusOfCode: Readonly<Record<Code, number>> = Object.freeze({
  [Code.Canceled]: 499,
  [Code.Unknown]: 500,
  [Code.InvalidArgument]: 400,
  [Code.DeadlineExceeded]: 504,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.PermissionDenied]: 403,
  [Code.ResourceExhausted]: 429,
  [Code.FailedPrecondition]: 400,
  [Code.Aborted]: 409,
  [Code.OutOfRange]: 400,
  [Code.Unimplemented]: 501,
  [Code.Internal]: 500,
  [Code.Unavailable]: 503,
  [Code.DataLoss]: 500,
  [Code.Unauthenticated]: 401,
});

/** The code's name as the Connect protocol writes it in JSON errors, e.g. "not_found". */
export function codeName(code: Code): string {
  return (Code[code] ?? "Unknown").replace(/[A-Z]/g, (c, i: number) =>
    i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`,
  );
}
