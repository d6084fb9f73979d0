import { BlockList, isIPv4 } from "node:net";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { BurstyRateLimiter, RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";
import { Access } from "../../gen/orchestrator/v1/options_pb.js";
import type { RateLimitedRole, RateLimitSettings } from "../config/index.js";
import { accessOf, type CallerLookup } from "./auth.js";
import { callMetaOf } from "./call-meta.js";
import type { Interceptor, StreamingCall } from "./chain.js";

/** Which limit refused a call: the label values of `orchestrator_rate_limited_total`. */
export type RateLimitKind = "address" | "token";

/** A refused call, as the metric sees it. Never holds the token or the address. */
export interface RateLimited {
  readonly method: string;
  readonly limit: RateLimitKind;
  /** The token's role (`service` for every service/<name>); empty for the address limit. */
  readonly role: string;
}

export interface RateLimitOptions {
  readonly settings: RateLimitSettings;
  /** Finds a token's role; give it the auth check's tokens. */
  readonly identify: CallerLookup;
  /** Whether any token is configured: without, no call is counted per token. */
  readonly tokensConfigured: boolean;
  /** Told of every refused call. Default none. */
  readonly onLimited?: (refusal: RateLimited) => void;
  /** As for the auth interceptor: rules of services whose protos are not ours. */
  readonly externalAccess?: ReadonlyMap<string, Access>;
}

/** The burst window: a limit of N per second also lets N more through per this many seconds. */
const burstSeconds = 10;

/** One limit: N per second, and N more per {@link burstSeconds} for bursts. */
interface Limit {
  readonly rate: number;
  readonly limiter: BurstyRateLimiter;
}

/**
 * Limits request rates per token (by its role's RATE_LIMIT_ROLES rate) and per client address
 * (RATE_LIMIT_ADDRESS_RPS, unless the address is in RATE_LIMIT_EXEMPT), on every protocol, before
 * the auth check: a client guessing tokens is slowed by its address's limit. A refused call fails
 * with RESOURCE_EXHAUSTED (429 on REST) and a `retry-after` (seconds) in its metadata. The peers'
 * methods are not limited: replication must keep up with every write the cluster takes.
 *
 * Counting is rate-limiter-flexible's memory store: a window per second with a burst allowance
 * ({@link BurstyRateLimiter}), per process. Its keys expire with their window, so what it holds
 * is bounded by the clients seen in the last {@link burstSeconds} seconds; tokens are keyed by
 * their digest and the address limit runs first, so random tokens cannot grow it faster than the
 * addresses' rate allows.
 */
export function createRateLimitInterceptor(options: RateLimitOptions): Interceptor {
  const { settings, identify } = options;
  const perAddress = settings.addressRps > 0 ? limitOf("address", settings.addressRps) : undefined;
  const perRole = new Map<RateLimitedRole, Limit>();
  if (options.tokensConfigured) {
    for (const [role, rate] of Object.entries(settings.roles) as [RateLimitedRole, number][]) {
      if (rate > 0) perRole.set(role, limitOf(`token-${role}`, rate));
    }
  }
  if (perAddress === undefined && perRole.size === 0) return () => undefined;
  const isExempt = exemptionOf(settings.exempt);
  const onLimited = options.onLimited ?? (() => {});

  return (method) => {
    const access = accessOf(method, options.externalAccess);
    if (access === Access.PEER) return undefined;
    const byToken = access !== Access.PUBLIC && perRole.size > 0;
    const admit = (context: HandlerContext): Promise<void> | undefined => {
      const address = callMetaOf(context).clientAddress;
      const addressCounted = perAddress !== undefined && address !== "" && !isExempt(address);
      const token = byToken ? tokenLimitOf(context) : undefined;
      if (!addressCounted && token === undefined) return undefined;
      return (async () => {
        if (addressCounted) await consume(perAddress, address, method, "address", "", onLimited);
        if (token !== undefined) {
          await consume(token.limit, token.digest, method, "token", token.role, onLimited);
        }
      })();
    };
    const tokenLimitOf = (context: HandlerContext) => {
      const presented = identify(context.requestHeader.get("authorization"));
      if (typeof presented === "string" || presented.caller.kind === "peer") return undefined;
      const role = presented.caller.kind;
      const limit = perRole.get(role);
      return limit === undefined ? undefined : { limit, role, digest: presented.digest };
    };
    return {
      unary: (next) => (request, context) => {
        const admission = admit(context);
        return admission === undefined
          ? next(request, context)
          : admission.then(() => next(request, context));
      },
      streaming: (next) => (requests, context) => {
        const admission = admit(context);
        return admission === undefined
          ? next(requests, context)
          : after(admission, next, requests, context);
      },
    };
  };
}

async function* after(
  admission: Promise<void>,
  next: StreamingCall,
  ...args: Parameters<StreamingCall>
): ReturnType<StreamingCall> {
  await admission;
  yield* next(...args);
}

function limitOf(name: string, rate: number): Limit {
  const limiter = new BurstyRateLimiter(
    new RateLimiterMemory({ keyPrefix: name, points: rate, duration: 1 }),
    new RateLimiterMemory({ keyPrefix: `${name}-burst`, points: rate, duration: burstSeconds }),
  );
  return { rate, limiter };
}

async function consume(
  limit: Limit,
  key: string,
  method: DescMethod,
  kind: RateLimitKind,
  role: string,
  onLimited: (refusal: RateLimited) => void,
): Promise<void> {
  try {
    await limit.limiter.consume(key);
  } catch (rejection) {
    // The memory store only ever rejects with a result; anything else is a bug, not a limit.
    if (!(rejection instanceof RateLimiterRes)) throw rejection;
    onLimited({ method: method.name, limit: kind, role });
    throw limitedError(limit.rate, kind, rejection.msBeforeNext);
  }
}

function limitedError(rate: number, kind: RateLimitKind, msBeforeNext: number): ConnectError {
  const seconds = Math.max(1, Math.ceil(msBeforeNext / 1000));
  const whose = kind === "token" ? "this token" : "this client address";
  return new ConnectError(
    `rate limit exceeded: ${whose} may make ${rate} requests per second (and ${rate} more per ${burstSeconds} s); retry after ${seconds} s`,
    Code.ResourceExhausted,
    // Retry-After on HTTP; gRPC clients with a retry policy read the pushback (gRFC A6).
    { "retry-after": String(seconds), "grpc-retry-pushback-ms": String(seconds * 1000) },
  );
}

function blockListOf(entries: readonly string[]): BlockList {
  const list = new BlockList();
  for (const entry of entries) {
    const [address = "", prefix] = entry.split("/");
    const family = isIPv4(address) ? "ipv4" : "ipv6";
    if (prefix === undefined) list.addAddress(address, family);
    else list.addSubnet(address, Number(prefix), family);
  }
  return list;
}

/** Decisions remembered at once: a node's clients are far fewer; past it, they are recomputed. */
const maxRemembered = 4096;

/**
 * Whether an address is exempt from the per-address limit. The answer is remembered per address:
 * a BlockList check builds a SocketAddress each time, which every call would otherwise pay.
 */
export function exemptionOf(entries: readonly string[]): (address: string) => boolean {
  const exempt = blockListOf(entries);
  const remembered = new Map<string, boolean>();
  return (address) => {
    let answer = remembered.get(address);
    if (answer === undefined) {
      // An IPv4 client on a dual-stack socket shows as `::ffff:a.b.c.d`: it is checked as IPv4.
      const mapped = address.startsWith("::ffff:") ? address.slice(7) : undefined;
      answer =
        mapped !== undefined && isIPv4(mapped)
          ? exempt.check(mapped, "ipv4")
          : exempt.check(address, isIPv4(address) ? "ipv4" : "ipv6");
      if (remembered.size >= maxRemembered) remembered.clear();
      remembered.set(address, answer);
    }
    return answer;
  };
}
