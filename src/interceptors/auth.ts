import { createHash, timingSafeEqual } from "node:crypto";
import { getOption } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Access, access } from "../../gen/orchestrator/v1/options_pb.js";
import type { Interceptor } from "./chain.js";

export interface AuthOptions {
  /** Required as a bearer token on ACCESS_OPERATOR methods when set. Default: unset (open). */
  operatorToken?: string | undefined;
  /** Required as a bearer token on ACCESS_PEER methods when set. Default: unset (open). */
  peerToken?: string | undefined;
}

/**
 * Checks the `authorization` header of a call to something of access `level`, named `what` in
 * the error ("GetEffectiveConfig", "/metrics"). Returns when the call may go on.
 * @throws ConnectError UNAUTHENTICATED when the token is missing or unknown; PERMISSION_DENIED
 * when it is a valid token of the wrong kind (a peer token on an operator method).
 */
export type AccessCheck = (
  level: Access,
  authorization: string | null | undefined,
  what: string,
) => void;

/**
 * The one auth check: every protocol's RPCs (through {@link createAuthInterceptor}) and the
 * routes outside the RPC chain (`/metrics`) call it, so that the same token gets the same answer
 * everywhere. A level whose token is not configured is open.
 */
export function createAccessCheck(options: AuthOptions): AccessCheck {
  const operator = options.operatorToken ? digest(options.operatorToken) : undefined;
  const peer = options.peerToken ? digest(options.peerToken) : undefined;
  return (level, authorization, what) => {
    const required =
      level === Access.OPERATOR ? operator : level === Access.PEER ? peer : undefined;
    if (required === undefined) return;
    const other = level === Access.OPERATOR ? peer : operator;
    const who = level === Access.OPERATOR ? "an operator" : "a peer";
    const presented = bearerTokenOf(authorization ?? null);
    if (presented === undefined) {
      throw new ConnectError(
        `${what} needs ${who} token: send "authorization: Bearer <token>"`,
        Code.Unauthenticated,
      );
    }
    const hash = digest(presented);
    if (timingSafeEqual(hash, required)) return;
    if (other !== undefined && timingSafeEqual(hash, other)) {
      throw new ConnectError(`${what} needs ${who} token`, Code.PermissionDenied);
    }
    throw new ConnectError("invalid token", Code.Unauthenticated);
  };
}

/**
 * Enforces each method's `(orchestrator.v1.access)` option, declared once in the protos, on every
 * protocol, with {@link createAccessCheck}. A method whose access needs no configured token costs
 * nothing.
 */
export function createAuthInterceptor(options: AuthOptions): Interceptor {
  const check = createAccessCheck(options);
  const open = Object.freeze({ operator: !options.operatorToken, peer: !options.peerToken });
  return (method) => {
    const level = getOption(method, access);
    if (level === Access.OPERATOR ? open.operator : level === Access.PEER ? open.peer : true) {
      return undefined;
    }
    return {
      unary: (next) => (request, context) => {
        check(level, context.requestHeader.get("authorization"), method.name);
        return next(request, context);
      },
      streaming: (next) => (requests, context) => {
        check(level, context.requestHeader.get("authorization"), method.name);
        return next(requests, context);
      },
    };
  };
}

function bearerTokenOf(header: string | null): string | undefined {
  const match = header === null ? null : /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

// Comparing fixed-length digests keeps the comparison constant-time whatever the token lengths.
function digest(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}
