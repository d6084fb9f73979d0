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
 * Enforces each method's `(orchestrator.v1.access)` option, declared once in the protos, on every
 * protocol. A method whose access needs no configured token costs nothing. A missing or unknown
 * token is UNAUTHENTICATED; a valid token of the wrong kind (a peer token on an operator method)
 * is PERMISSION_DENIED.
 */
export function createAuthInterceptor(options: AuthOptions): Interceptor {
  const operator = options.operatorToken ? digest(options.operatorToken) : undefined;
  const peer = options.peerToken ? digest(options.peerToken) : undefined;
  return (method) => {
    const level = getOption(method, access);
    const required =
      level === Access.OPERATOR ? operator : level === Access.PEER ? peer : undefined;
    if (required === undefined) return undefined;
    const other = level === Access.OPERATOR ? peer : operator;
    const who = level === Access.OPERATOR ? "an operator" : "a peer";
    const check = (header: string | null) => {
      const presented = bearerTokenOf(header);
      if (presented === undefined) {
        throw new ConnectError(
          `${method.name} needs ${who} token: send "authorization: Bearer <token>"`,
          Code.Unauthenticated,
        );
      }
      const hash = digest(presented);
      if (timingSafeEqual(hash, required)) return;
      if (other !== undefined && timingSafeEqual(hash, other)) {
        throw new ConnectError(`${method.name} needs ${who} token`, Code.PermissionDenied);
      }
      throw new ConnectError("invalid token", Code.Unauthenticated);
    };
    return {
      unary: (next) => (request, context) => {
        check(context.requestHeader.get("authorization"));
        return next(request, context);
      },
      streaming: (next) => (requests, context) => {
        check(context.requestHeader.get("authorization"));
        return next(requests, context);
      },
    };
  };
}

/** Checks a bearer token outside the RPC chain (the /metrics route), the same way. */
export function isAuthorized(header: string | undefined, token: string | undefined): boolean {
  if (!token) return true;
  const presented = bearerTokenOf(header ?? null);
  return presented !== undefined && timingSafeEqual(digest(presented), digest(token));
}

function bearerTokenOf(header: string | null): string | undefined {
  const match = header === null ? null : /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

// Comparing fixed-length digests keeps the comparison constant-time whatever the token lengths.
function digest(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}
