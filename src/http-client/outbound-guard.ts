import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from "node:dns";
import { BlockList, isIP, type LookupFunction, SocketAddress } from "node:net";
import { domainToASCII } from "node:url";
import { OutboundError } from "./outbound-errors.js";

/** One entry of `OUTBOUND_ALLOW`, as {@link parseAllowEntry} reads it. */
export type AllowEntry =
  /** A host name matched exactly (lower case, IDN in punycode, no trailing dot). */
  | { readonly kind: "host"; readonly host: string }
  /** `*.example.com`: any name ending in `.example.com` (not `example.com` itself). */
  | { readonly kind: "suffix"; readonly suffix: string }
  /** An address (a /32 or /128) or a CIDR. */
  | {
      readonly kind: "subnet";
      readonly network: string;
      readonly prefix: number;
      readonly family: "ipv4" | "ipv6";
    };

/** A parsed entry, or why the text is not one (a phrase to follow the echoed entry). */
export type AllowEntryResult =
  | { readonly ok: true; readonly entry: AllowEntry }
  | { readonly ok: false; readonly problem: string };

/** Whether a destination may be called; a refusal says which rule refused it, for people. */
export type Verdict =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly reason: string };

/** Resolves a host name to every address it has, as `dns.lookup(host, { all: true })` does. */
export type Resolve = (
  hostname: string,
  options: { readonly family: 0 | 4 | 6; readonly hints?: number | undefined },
) => Promise<readonly LookupAddress[]>;

/** Options of {@link createOutboundGuard}. */
export interface OutboundGuardOptions {
  /**
   * `OUTBOUND_ALLOW`'s entries. Default: none, meaning every destination is allowed but the
   * always-refused ranges ({@link refusedRanges}).
   */
  readonly allow: readonly string[];
}

/** The decisions on one client's destinations, before and while it connects. */
export interface OutboundGuard {
  /**
   * The check made before any connection, and again on every redirect's location: the scheme
   * must be http: or https:, and a host written as an address is checked as a resolved one
   * (no lookup runs for it).
   */
  checkUrl(url: URL): Verdict;
  /** Whether `address`, which `hostname` resolved to (or is), may be connected to. */
  checkAddress(hostname: string, address: string): Verdict;
  /**
   * A `lookup` for `net.connect` (undici's `connect` option): it resolves, then refuses the
   * connection with an OutboundError "destination_refused" when any address is refused, so a
   * name cannot smuggle a refused address in, on the first connection or any later one.
   */
  readonly lookup: LookupFunction;
}

interface RefusedRange {
  readonly network: string;
  readonly prefix: number;
  readonly family: "ipv4" | "ipv6";
  /** Completes "<host> is ..." in a refusal. */
  readonly rule: string;
}

/**
 * Ranges no call goes to unless an OUTBOUND_ALLOW address or CIDR inside them names them: the
 * cloud metadata services live there (169.254.169.254, fd00:ec2::254), and an unspecified
 * address reaches the node itself. Node's BlockList matches an IPv4 rule against the address's
 * IPv4-mapped IPv6 form too (::ffff:169.254.169.254). Loopback and private ranges are not here:
 * tests and in-cluster services use them; OUTBOUND_ALLOW restricts them when needed.
 */
export const refusedRanges: readonly RefusedRange[] = Object.freeze([
  { network: "169.254.0.0", prefix: 16, family: "ipv4", rule: "a link-local/metadata address" },
  { network: "fe80::", prefix: 10, family: "ipv6", rule: "a link-local address" },
  { network: "fd00:ec2::254", prefix: 128, family: "ipv6", rule: "a cloud metadata address" },
  // NAT64 (RFC 6052) would carry 169.254.169.254 on an IPv6-only network.
  {
    network: "64:ff9b::a9fe:0",
    prefix: 112,
    family: "ipv6",
    rule: "a link-local/metadata address",
  },
  { network: "0.0.0.0", prefix: 8, family: "ipv4", rule: "an unspecified (0.0.0.0/8) address" },
  { network: "::", prefix: 128, family: "ipv6", rule: "the unspecified address" },
] as const);

const hostLabel = "[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?";
const hostPattern = new RegExp(`^${hostLabel}(?:\\.${hostLabel})*$`);

/**
 * Reads one `OUTBOUND_ALLOW` entry: an IPv4 or IPv6 address, a CIDR (`10.0.0.0/8`, `fd00::/8`),
 * `*.suffix`, or an exact host name. Never throws.
 */
export function parseAllowEntry(text: string): AllowEntryResult {
  const trimmed = text.trim();
  const slash = trimmed.indexOf("/");
  if (slash >= 0 && isIP(trimmed.slice(0, slash)) !== 0) return parseSubnet(trimmed);
  const address = unbracketed(trimmed);
  const family = isIP(address);
  if (family !== 0) {
    return subnetEntry(address, family === 4 ? 32 : 128, family === 4 ? "ipv4" : "ipv6");
  }
  if (trimmed.startsWith("*.")) {
    const suffix = hostName(trimmed.slice(2));
    return suffix === undefined
      ? { ok: false, problem: "is not *. followed by a host name" }
      : { ok: true, entry: { kind: "suffix", suffix: `.${suffix}` } };
  }
  const host = hostName(trimmed);
  return host === undefined
    ? { ok: false, problem: "is not a host name, *.suffix, IP address or CIDR" }
    : { ok: true, entry: { kind: "host", host } };
}

function parseSubnet(text: string): AllowEntryResult {
  const [network = "", prefixText = "", ...rest] = text.split("/");
  const family = isIP(network);
  const max = family === 4 ? 32 : 128;
  const prefix = Number(prefixText);
  if (family === 0 || rest.length > 0 || !/^\d{1,3}$/.test(prefixText) || prefix > max) {
    return { ok: false, problem: "is not a CIDR (an IP address, /, a prefix length)" };
  }
  return subnetEntry(network, prefix, family === 4 ? "ipv4" : "ipv6");
}

function subnetEntry(network: string, prefix: number, family: "ipv4" | "ipv6"): AllowEntryResult {
  return { ok: true, entry: { kind: "subnet", network, prefix, family } };
}

/**
 * The name in the form URLs carry it (lower case, punycode, no trailing dot), or undefined when
 * it is not a name. A name whose last label is a number is one the URL parser reads as an IPv4
 * address ("10.1" is 10.0.0.1), so it would never match: refused.
 */
function hostName(text: string): string | undefined {
  // domainToASCII reads its input as a URL's host and drops what follows one ("name/8" → "name").
  if (/[\s/\\:?#@[\]%]/.test(text)) return undefined;
  const ascii = domainToASCII(text.endsWith(".") ? text.slice(0, -1) : text);
  if (ascii === "" || ascii.length > 253 || !hostPattern.test(ascii)) return undefined;
  const last = ascii.slice(ascii.lastIndexOf(".") + 1);
  return /^(\d+|0x[0-9a-f]*)$/.test(last) ? undefined : ascii;
}

function unbracketed(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

const defaultResolve: Resolve = (hostname, options) =>
  new Promise((resolve, reject) => {
    dnsLookup(hostname, { all: true, ...options }, (error, addresses) =>
      error ? reject(error) : resolve(addresses),
    );
  });

/**
 * Creates the guard of one HTTP client from `OUTBOUND_ALLOW`'s entries. `resolve` (default:
 * dns.lookup) lets tests map names to addresses without DNS.
 * @throws RangeError naming the first entry that {@link parseAllowEntry} refuses.
 */
export function createOutboundGuard(
  options: Partial<OutboundGuardOptions> = {},
  resolve: Resolve = defaultResolve,
): OutboundGuard {
  const check = compileAllowList(options.allow ?? []);
  return {
    checkUrl(url) {
      if (url.protocol !== "http:" && url.protocol !== "https:") {
        return refused(`${url.protocol} is not http: or https:`);
      }
      const address = unbracketed(url.hostname);
      return isIP(address) === 0 ? allowed : check(address, address);
    },
    checkAddress: check,
    lookup: guardedLookup(check, resolve),
  };
}

type Check = (hostname: string, address: string) => Verdict;

const allowed: Verdict = Object.freeze({ allowed: true });

function refused(reason: string): Verdict {
  return { allowed: false, reason };
}

/** Each refused range with a BlockList of its own, so a match says which rule refused. */
const refusedRangeLists = refusedRanges.map((range) => {
  const list = new BlockList();
  list.addSubnet(range.network, range.prefix, range.family);
  return { range, list };
});

/** Every refused range in one list: the one check most addresses (allowed ones) need. */
const anyRefusedRange = new BlockList();
for (const range of refusedRanges) {
  anyRefusedRange.addSubnet(range.network, range.prefix, range.family);
}

function familyOf(address: string): "ipv4" | "ipv6" {
  return isIP(address) === 6 ? "ipv6" : "ipv4";
}

/**
 * Whether an allowed subnet lies inside a refused range, and so names part of it on purpose:
 * `169.254.169.254` or `169.254.0.0/16` lifts the refusal of 169.254.169.254, a broad
 * `0.0.0.0/0` (meant as "any address") does not.
 */
function liftsRefusal(entry: Extract<AllowEntry, { kind: "subnet" }>): boolean {
  return refusedRangeLists.some(
    ({ range, list }) =>
      range.family === entry.family &&
      entry.prefix >= range.prefix &&
      list.check(entry.network, entry.family),
  );
}

/** The check of (name, address) pairs that OUTBOUND_ALLOW's entries make. */
function compileAllowList(texts: readonly string[]): Check {
  const hosts = new Set<string>();
  const suffixes: string[] = [];
  const addresses = new BlockList();
  const lifted = new BlockList();
  for (const text of texts) {
    const parsed = parseAllowEntry(text);
    if (!parsed.ok) {
      throw new RangeError(`OUTBOUND_ALLOW entry ${JSON.stringify(text)} ${parsed.problem}`);
    }
    const { entry } = parsed;
    if (entry.kind === "host") hosts.add(entry.host);
    else if (entry.kind === "suffix") suffixes.push(entry.suffix);
    else {
      addresses.addSubnet(entry.network, entry.prefix, entry.family);
      if (liftsRefusal(entry)) lifted.addSubnet(entry.network, entry.prefix, entry.family);
    }
  }
  const restricted = texts.length > 0;
  const nameAllowed = (hostname: string): boolean => {
    const name = hostname.endsWith(".") ? hostname.slice(0, -1) : hostname;
    return hosts.has(name) || suffixes.some((suffix) => name.endsWith(suffix));
  };
  return (hostname, address) => {
    // Parsed once: BlockList.check would parse a string again on each of the lists.
    const socket = new SocketAddress({ address, family: familyOf(address) });
    const range = anyRefusedRange.check(socket)
      ? refusedRangeLists.find(({ list }) => list.check(socket))?.range
      : undefined;
    const named = hostname === address ? address : `${hostname} resolves to ${address},`;
    if (range !== undefined && !lifted.check(socket)) {
      return refused(`${named} is ${range.rule}; add it to OUTBOUND_ALLOW to call it`);
    }
    if (!restricted || nameAllowed(hostname) || addresses.check(socket)) return allowed;
    // The address a name resolves to is not shown: it may be internal, and the caller knows the name.
    return refused(
      hostname === address
        ? `${address} is not in OUTBOUND_ALLOW`
        : `${hostname} is not in OUTBOUND_ALLOW (neither the name nor its address)`,
    );
  };
}

function lookupFamily(family: LookupOptions["family"]): 0 | 4 | 6 {
  if (family === 4 || family === "IPv4") return 4;
  if (family === 6 || family === "IPv6") return 6;
  return 0;
}

/**
 * net.connect's `lookup`, checking every address before any is connected to. One refused
 * address refuses the name: a name that mixes a metadata address with others is no honest target.
 */
function guardedLookup(check: Check, resolve: Resolve): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname, { family: lookupFamily(options.family), hints: options.hints }).then(
      (addresses) => {
        const first = addresses[0];
        if (first === undefined) {
          const error = Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), {
            code: "ENOTFOUND",
          });
          return callback(error, []);
        }
        for (const { address } of addresses) {
          const verdict = check(hostname, address);
          if (!verdict.allowed) {
            return callback(new OutboundError("destination_refused", verdict.reason), []);
          }
        }
        if (options.all === true) return callback(null, [...addresses]);
        return callback(null, first.address, first.family);
      },
      (error: NodeJS.ErrnoException) => callback(error, []),
    );
  };
}
