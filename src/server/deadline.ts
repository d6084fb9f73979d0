import type { IncomingHttpHeaders } from "node:http";
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * The longest deadline a call is served with, in milliseconds: 2,147,483 seconds (24.8 days),
 * just under the longest delay a Node timer takes (2^31-1 ms; a longer one fires after 1 ms).
 * A client may ask for any valid deadline; a longer one is served as this one, on every protocol.
 * Whole seconds, so that the Connect router's headers can carry it exactly.
 */
export const longestDeadlineMs = 2_147_483_000;

/** The gRPC deadline header; the REST gateway honours it too. */
export const grpcTimeoutHeader = "grpc-timeout";
/** The Connect protocol's deadline header, in milliseconds. */
export const connectTimeoutHeader = "connect-timeout-ms";

// The gRPC spec's TimeoutValue (1 to 8 ASCII digits) and TimeoutUnit.
const grpcTimeoutPattern = /^(\d{1,8})([HMSmun])$/;
const msPerUnit: Readonly<Record<string, number>> = Object.freeze({
  H: 3_600_000,
  M: 60_000,
  S: 1_000,
  m: 1,
  u: 0.001,
  n: 0.000_001,
});
// The Connect protocol's Timeout-Milliseconds: 1 to 10 ASCII digits.
const connectTimeoutPattern = /^\d{1,10}$/;

/**
 * The deadline a `grpc-timeout` header asks for, in milliseconds, capped at
 * {@link longestDeadlineMs}; undefined when there is no header (no deadline).
 * @throws ConnectError INVALID_ARGUMENT when the value is not 1-8 digits and a unit (H, M, S, m,
 * u, n), without repeating the value.
 */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const match = grpcTimeoutPattern.exec(value);
  if (match === null) {
    throw new ConnectError(
      "invalid grpc-timeout: expected 1 to 8 digits and a unit (H, M, S, m, u or n)",
      Code.InvalidArgument,
    );
  }
  const ms = Number(match[1]) * (msPerUnit[match[2] as string] as number);
  return Math.min(ms, longestDeadlineMs);
}

/**
 * Makes the deadline headers of a request safe for the Connect router, which arms a timer for
 * whatever a header says: a deadline beyond {@link longestDeadlineMs} would overflow it (and
 * fire after 1 ms) and is written down to that, as our own transports cap it. A malformed value
 * is left malformed, for the router to refuse with INVALID_ARGUMENT as our transports do, but cut
 * to a few characters, since the router's message repeats it.
 */
export function capDeadlineHeaders(headers: IncomingHttpHeaders): void {
  const grpc = headers[grpcTimeoutHeader];
  if (typeof grpc === "string") {
    const match = grpcTimeoutPattern.exec(grpc);
    if (match === null) headers[grpcTimeoutHeader] = malformed(grpc);
    else if (Number(match[1]) * (msPerUnit[match[2] as string] as number) > longestDeadlineMs) {
      headers[grpcTimeoutHeader] = `${longestDeadlineMs / 1000}S`;
    }
  }
  const connect = headers[connectTimeoutHeader];
  if (typeof connect === "string") {
    if (!connectTimeoutPattern.test(connect)) headers[connectTimeoutHeader] = malformed(connect);
    else if (Number(connect) > longestDeadlineMs) {
      headers[connectTimeoutHeader] = String(longestDeadlineMs);
    }
  }
}

function malformed(value: string): string {
  return value.length <= 16 ? value : `${value.slice(0, 16)}...`;
}
