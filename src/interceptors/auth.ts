import { createHash } from "node:crypto";
import { type DescMethod, getOption, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Access, access } from "../../gen/orchestrator/v1/options_pb.js";
import { type AuthRole, type AuthToken, describeRole } from "../config/index.js";
import { callMetaOf } from "./call-meta.js";
import type { Interceptor } from "./chain.js";

/** Who presented a known token: a role of AUTH_TOKENS (or OPERATOR_TOKEN), or a peer. */
export type Caller = AuthRole | { readonly kind: "peer" };

/** Why a call was refused: the label values of `orchestrator_auth_failures_total`. */
export type DenialReason = "missing_token" | "unknown_token" | "wrong_role" | "wrong_service";

/** A refused call, as metrics and the `auth.denied` event see it. Never holds the token. */
export interface AuthDenial {
  /** The method's name (`RegisterService`) or the route (`/metrics`). */
  readonly what: string;
  readonly reason: DenialReason;
  /** The caller's role when the token was known (`viewer`, `service/billing`, `peer`). */
  readonly role?: string;
  readonly clientAddress?: string;
}

export interface AuthOptions {
  /** Tokens and their roles (AUTH_TOKENS and OPERATOR_TOKEN). Default none: auth is off. */
  readonly tokens?: readonly AuthToken[];
  /** The peers' credential, the only one ACCESS_PEER methods take. Default unset. */
  readonly peerToken?: string | undefined;
  /** Told of every refused call (after the error is built, before it is thrown). Default none. */
  readonly onDenied?: (denial: AuthDenial) => void;
  /**
   * Rules of services whose protos are not ours, by service type name. Default
   * {@link externalAccess}: gRPC health and reflection public.
   */
  readonly externalAccess?: ReadonlyMap<string, Access>;
}

/** One access decision to make. */
export interface AccessRequest {
  readonly access: Access;
  /** The `authorization` header as received. */
  readonly authorization: string | null | undefined;
  /** Names the method or route in errors and denials. */
  readonly what: string;
  /** For ACCESS_SERVICE: the service the request is about (its `name` field). */
  readonly service?: string;
  readonly clientAddress?: string;
}

/**
 * Checks one call; returns when it may go on.
 * @throws ConnectError UNAUTHENTICATED when the token is missing or unknown; PERMISSION_DENIED when
 * it is known but its role may not make the call.
 */
export type AccessCheck = (request: AccessRequest) => void;

/**
 * The one auth check: every protocol's RPCs (through {@link createAuthInterceptor}) and the
 * routes outside the RPC chain (`/metrics`) call it, so the same token gets the same answer
 * everywhere. With no tokens, auth is off and only ACCESS_PEER methods may still need PEER_TOKEN.
 * Tokens are found by digest ({@link createCallerLookup}).
 */
export function createAccessCheck(options: AuthOptions): AccessCheck {
  const identify = createCallerLookup(options);
  const authEnabled = (options.tokens ?? []).length > 0;
  const peerRequired = options.peerToken !== undefined && options.peerToken !== "";
  const deny = denier(options.onDenied);
  return (request) => {
    if (request.access === Access.PUBLIC) return;
    const open = request.access === Access.PEER ? !peerRequired && !authEnabled : !authEnabled;
    if (open) return;
    const presented = identify(request.authorization);
    if (presented === "none") throw deny(request, "missing_token");
    if (presented === "unknown") throw deny(request, "unknown_token");
    const refusal = refusalOf(request, presented.caller);
    if (refusal !== undefined) throw deny(request, refusal, presented.caller);
  };
}

/** A known token's caller, and the token's SHA-256 digest: a key for it that is not the token. */
export interface Identified {
  readonly caller: Caller;
  readonly digest: string;
}

/** Who an `authorization` header names: a known caller, no bearer token, or an unknown one. */
export type CallerLookup = (
  authorization: string | null | undefined,
) => Identified | "none" | "unknown";

/**
 * Finds the caller of a bearer token by its SHA-256 digest: the lookup compares digests, whose
 * content an attacker cannot steer byte by byte, so its time says nothing about any stored token.
 */
export function createCallerLookup(
  options: Pick<AuthOptions, "tokens" | "peerToken">,
): CallerLookup {
  const callers = callersByDigest(options);
  return (authorization) => {
    const presented = bearerTokenOf(authorization ?? null);
    if (presented === undefined) return "none";
    const digest = digestHex(presented);
    const caller = callers.get(digest);
    return caller === undefined ? "unknown" : { caller, digest };
  };
}

/** Whether a caller may make a call: undefined when allowed, else why not. */
function refusalOf(request: AccessRequest, caller: Caller): DenialReason | undefined {
  const kind = caller.kind;
  switch (request.access) {
    case Access.VIEWER:
      return kind === "viewer" || kind === "operator" || kind === "admin"
        ? undefined
        : "wrong_role";
    case Access.OPERATOR:
      return kind === "operator" || kind === "admin" ? undefined : "wrong_role";
    case Access.ADMIN:
      return kind === "admin" ? undefined : "wrong_role";
    case Access.PEER:
      return kind === "peer" ? undefined : "wrong_role";
    case Access.SERVICE:
      if (kind === "operator" || kind === "admin") return undefined;
      if (caller.kind !== "service") return "wrong_role";
      return caller.service === request.service ? undefined : "wrong_service";
    default:
      return "wrong_role";
  }
}

function denier(onDenied: AuthOptions["onDenied"]) {
  return (request: AccessRequest, reason: DenialReason, caller?: Caller): ConnectError => {
    onDenied?.({
      what: request.what,
      reason,
      ...(caller === undefined ? {} : { role: roleName(caller) }),
      ...(request.clientAddress ? { clientAddress: request.clientAddress } : {}),
    });
    return errorOf(request, reason, caller);
  };
}

/** The client's error: it names the method and what is needed, never the token presented. */
function errorOf(request: AccessRequest, reason: DenialReason, caller?: Caller): ConnectError {
  const needs = neededRole(request.access);
  switch (reason) {
    case "missing_token":
      return new ConnectError(
        `${request.what} needs ${needs}: send "authorization: Bearer <token>"`,
        Code.Unauthenticated,
      );
    case "unknown_token":
      return new ConnectError("invalid token", Code.Unauthenticated);
    case "wrong_service":
      return new ConnectError(
        `${request.what}: a ${roleName(caller)} token may only act on its own service`,
        Code.PermissionDenied,
      );
    default:
      return new ConnectError(`${request.what} needs ${needs}`, Code.PermissionDenied);
  }
}

function neededRole(level: Access): string {
  switch (level) {
    case Access.VIEWER:
      return "a viewer, operator or admin token";
    case Access.OPERATOR:
      return "an operator or admin token";
    case Access.ADMIN:
      return "an admin token";
    case Access.PEER:
      return "the peer token";
    default:
      return "an operator or admin token, or the service's own token";
  }
}

function roleName(caller: Caller | undefined): string {
  if (caller === undefined) return "unknown";
  return caller.kind === "peer" ? "peer" : describeRole(caller);
}

function callersByDigest(
  options: Pick<AuthOptions, "tokens" | "peerToken">,
): ReadonlyMap<string, Caller> {
  const callers = new Map<string, Caller>();
  for (const { role, token } of options.tokens ?? []) callers.set(digestHex(token), role);
  if (options.peerToken) callers.set(digestHex(options.peerToken), { kind: "peer" });
  return callers;
}

/**
 * The access rule of every method, read once from its `(orchestrator.v1.access)` option, or from
 * `fallback` for services declared outside our protos (gRPC health and reflection).
 * @throws Error when a method has none: a new RPC must say who may call it.
 */
export function accessOf(
  method: DescMethod,
  fallback: ReadonlyMap<string, Access> = externalAccess,
): Access {
  const declared = getOption(method, access);
  const level =
    declared === Access.UNSPECIFIED ? (fallback.get(method.parent.typeName) ?? declared) : declared;
  if (level === Access.UNSPECIFIED) {
    throw new Error(
      `${method.parent.typeName}.${method.name} has no (orchestrator.v1.access) option: declare who may call it`,
    );
  }
  if (level === Access.SERVICE && !method.input.fields.some((f) => f.localName === "name")) {
    throw new Error(
      `${method.parent.typeName}.${method.name} is ACCESS_SERVICE without a name field`,
    );
  }
  return level;
}

/**
 * Services whose protos are not ours, so their methods cannot carry our option. gRPC health is
 * public like `/health`; reflection is public because it shows only the schema, which the
 * protos and the README already publish, and tools (buf curl, grpcurl) ask it before any call.
 */
export const externalAccess: ReadonlyMap<string, Access> = new Map([
  ["grpc.health.v1.Health", Access.PUBLIC],
  ["grpc.reflection.v1.ServerReflection", Access.PUBLIC],
  ["grpc.reflection.v1alpha.ServerReflection", Access.PUBLIC],
]);

/**
 * Enforces each method's access rule (see {@link accessOf}) on every protocol, with
 * {@link createAccessCheck}. It runs after decoding, so an ACCESS_SERVICE rule reads the service
 * name from the request itself.
 * @throws Error when services are wrapped, for a method without a rule.
 */
export function createAuthInterceptor(options: AuthOptions): Interceptor {
  const check = createAccessCheck(options);
  const authEnabled = (options.tokens ?? []).length > 0;
  const peerRequired = options.peerToken !== undefined && options.peerToken !== "";
  return (method) => {
    const level = accessOf(method, options.externalAccess);
    // An open method costs nothing: not even reading the headers (on REST that builds a Headers,
    // which loads Node's fetch).
    const open = level === Access.PEER ? !peerRequired && !authEnabled : !authEnabled;
    if (level === Access.PUBLIC || open) return undefined;
    const what = method.name;
    return {
      unary: (next) => (request, context) => {
        try {
          check({
            access: level,
            authorization: context.requestHeader.get("authorization"),
            what,
            ...(level === Access.SERVICE ? { service: nameOf(request) } : {}),
            clientAddress: callMetaOf(context).clientAddress,
          });
        } catch (error) {
          // A unary call fails by its promise, whatever the transport does with a throw.
          return Promise.reject(error);
        }
        return next(request, context);
      },
      streaming: (next) => (requests, context) => {
        check({
          access: level,
          authorization: context.requestHeader.get("authorization"),
          what,
          clientAddress: callMetaOf(context).clientAddress,
        });
        return next(requests, context);
      },
    };
  };
}

function nameOf(request: Message): string {
  const name = (request as unknown as { name?: unknown }).name;
  return typeof name === "string" ? name : "";
}

function bearerTokenOf(header: string | null): string | undefined {
  const match = header === null ? null : /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

function digestHex(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}
