import type { LookupAddress } from "node:dns";
import { describe, expect, it } from "vitest";
import { isOutboundError } from "./outbound-errors.js";
import {
  createOutboundGuard,
  parseAllowEntry,
  type Resolve,
  type Verdict,
} from "./outbound-guard.js";

function urlVerdict(url: string, allow: readonly string[] = []): Verdict {
  return createOutboundGuard({ allow }).checkUrl(new URL(url));
}

function reasonOf(verdict: Verdict): string {
  if (verdict.allowed) throw new Error("expected a refusal");
  return verdict.reason;
}

describe("parseAllowEntry", () => {
  it.each([
    ["api.example.com", { kind: "host", host: "api.example.com" }],
    ["API.Example.COM.", { kind: "host", host: "api.example.com" }],
    ["bücher.example", { kind: "host", host: "xn--bcher-kva.example" }],
    ["*.example.com", { kind: "suffix", suffix: ".example.com" }],
    ["10.1.2.3", { kind: "subnet", network: "10.1.2.3", prefix: 32, family: "ipv4" }],
    ["10.0.0.0/8", { kind: "subnet", network: "10.0.0.0", prefix: 8, family: "ipv4" }],
    ["fd00::/8", { kind: "subnet", network: "fd00::", prefix: 8, family: "ipv6" }],
    ["[::1]", { kind: "subnet", network: "::1", prefix: 128, family: "ipv6" }],
  ] as const)("reads %s", (text, entry) => {
    expect(parseAllowEntry(text)).toEqual({ ok: true, entry });
  });

  it.each([
    "",
    "*",
    "*.",
    "http://api.example.com",
    "api.example.com:8080",
    "two words",
    "10.1",
    "1.2.3.4/33",
    "::1/129",
    "10.0.0.0/",
    "10.0.0.0/8/8",
    "name/8",
    "a..b",
  ])("refuses %j", (text) => {
    expect(parseAllowEntry(text).ok).toBe(false);
  });
});

describe("the guard's URL check", () => {
  it.each(["ftp://example.com/", "file:///etc/passwd", "gopher://example.com/", "data:,x"])(
    "refuses the scheme of %s",
    (url) => {
      expect(reasonOf(urlVerdict(url))).toMatch(/is not http: or https:/);
    },
  );

  it.each([
    "http://127.0.0.1:8080/",
    "https://10.1.2.3/",
    "http://192.168.0.1/",
    "http://[::1]:5099/",
    "http://api.example.com/",
  ])("allows %s by default (loopback and private ranges included)", (url) => {
    expect(urlVerdict(url)).toEqual({ allowed: true });
  });

  it.each([
    ["http://169.254.169.254/latest/meta-data/", "a link-local/metadata address"],
    ["http://169.254.1.1/", "a link-local/metadata address"],
    ["http://[fe80::1]/", "a link-local address"],
    ["http://[fd00:ec2::254]/", "a cloud metadata address"],
    ["http://[::ffff:169.254.169.254]/", "a link-local/metadata address"],
    ["http://[::ffff:a9fe:a9fe]/", "a link-local/metadata address"],
    ["http://[64:ff9b::169.254.169.254]/", "a link-local/metadata address"],
    ["http://0.0.0.0:8080/", "an unspecified (0.0.0.0/8) address"],
    ["http://0/", "an unspecified (0.0.0.0/8) address"],
    ["http://[::]/", "the unspecified address"],
    ["http://[::ffff:0.0.0.0]/", "an unspecified (0.0.0.0/8) address"],
  ])("always refuses %s, naming the rule", (url, rule) => {
    expect(reasonOf(urlVerdict(url))).toContain(`is ${rule}; add it to OUTBOUND_ALLOW`);
  });

  it("names the address and the way out", () => {
    expect(reasonOf(urlVerdict("http://169.254.169.254/"))).toBe(
      "169.254.169.254 is a link-local/metadata address; add it to OUTBOUND_ALLOW to call it",
    );
  });
});

describe("OUTBOUND_ALLOW", () => {
  it("matches *.suffix wildcards on sub-domains only", () => {
    const guard = createOutboundGuard({ allow: ["*.example.com"] });
    expect(guard.checkAddress("a.example.com", "203.0.113.7").allowed).toBe(true);
    expect(guard.checkAddress("a.b.example.com", "203.0.113.7").allowed).toBe(true);
    expect(guard.checkAddress("a.example.com.", "203.0.113.7").allowed).toBe(true);
    expect(guard.checkAddress("example.com", "203.0.113.7").allowed).toBe(false);
    expect(guard.checkAddress("badexample.com", "203.0.113.7").allowed).toBe(false);
  });

  it("matches exact host names, and does not show the address a refused name resolves to", () => {
    const guard = createOutboundGuard({ allow: ["api.example.com"] });
    expect(guard.checkAddress("api.example.com", "10.0.0.5").allowed).toBe(true);
    const reason = reasonOf(guard.checkAddress("other.example.com", "10.0.0.5"));
    expect(reason).toBe(
      "other.example.com is not in OUTBOUND_ALLOW (neither the name nor its address)",
    );
  });

  it("matches IPv4 and IPv6 CIDRs, for names and address literals alike", () => {
    const guard = createOutboundGuard({ allow: ["10.0.0.0/8", "fd00::/8", "192.0.2.1"] });
    expect(guard.checkAddress("svc.internal", "10.200.3.4").allowed).toBe(true);
    expect(guard.checkAddress("svc.internal", "11.0.0.1").allowed).toBe(false);
    expect(guard.checkUrl(new URL("http://[fd12::1]/")).allowed).toBe(true);
    expect(guard.checkUrl(new URL("http://[fe00::1]/")).allowed).toBe(false);
    expect(guard.checkUrl(new URL("http://192.0.2.1/")).allowed).toBe(true);
    expect(reasonOf(guard.checkUrl(new URL("http://192.0.2.2/")))).toBe(
      "192.0.2.2 is not in OUTBOUND_ALLOW",
    );
  });

  it("matches an IPv4 entry against the IPv4-mapped IPv6 form of its addresses", () => {
    const guard = createOutboundGuard({ allow: ["127.0.0.1/32"] });
    expect(guard.checkUrl(new URL("http://[::ffff:127.0.0.1]/")).allowed).toBe(true);
    expect(guard.checkUrl(new URL("http://[::ffff:127.0.0.2]/")).allowed).toBe(false);
  });

  it("lifts the metadata refusal only for an address or CIDR inside the refused range", () => {
    const named = createOutboundGuard({ allow: ["169.254.169.254", "fd00:ec2::254"] });
    expect(named.checkUrl(new URL("http://169.254.169.254/")).allowed).toBe(true);
    expect(named.checkUrl(new URL("http://[::ffff:169.254.169.254]/")).allowed).toBe(true);
    expect(named.checkUrl(new URL("http://[fd00:ec2::254]/")).allowed).toBe(true);
    expect(named.checkUrl(new URL("http://169.254.169.253/")).allowed).toBe(false);

    const range = createOutboundGuard({ allow: ["169.254.0.0/16"] });
    expect(range.checkUrl(new URL("http://169.254.1.2/")).allowed).toBe(true);

    const everything = createOutboundGuard({ allow: ["0.0.0.0/0", "::/0"] });
    expect(everything.checkUrl(new URL("http://203.0.113.9/")).allowed).toBe(true);
    expect(everything.checkUrl(new URL("http://169.254.169.254/")).allowed).toBe(false);
    expect(everything.checkUrl(new URL("http://[fe80::1]/")).allowed).toBe(false);
  });

  it("does not lift the refusal for a host name: its address is what is refused", () => {
    const guard = createOutboundGuard({ allow: ["metadata.test"] });
    expect(reasonOf(guard.checkAddress("metadata.test", "169.254.169.254"))).toBe(
      "metadata.test resolves to 169.254.169.254, is a link-local/metadata address; add it to OUTBOUND_ALLOW to call it",
    );
  });

  it("refuses an invalid entry at creation, naming it", () => {
    expect(() => createOutboundGuard({ allow: ["10.0.0.0/8", "http://x"] })).toThrow(
      new RangeError(
        'OUTBOUND_ALLOW entry "http://x" is not a host name, *.suffix, IP address or CIDR',
      ),
    );
  });
});

describe("the guard's lookup", () => {
  function resolving(table: Record<string, readonly string[]>): Resolve {
    return async (hostname) =>
      (table[hostname] ?? []).map(
        (address): LookupAddress => ({ address, family: address.includes(":") ? 6 : 4 }),
      );
  }

  function lookup(
    guard: ReturnType<typeof createOutboundGuard>,
    hostname: string,
    all: boolean,
  ): Promise<{ error: unknown; address: unknown; family: unknown }> {
    return new Promise((resolve) => {
      guard.lookup(hostname, { all }, (error, address, family) =>
        resolve({ error, address, family }),
      );
    });
  }

  const guard = createOutboundGuard(
    {},
    resolving({
      "svc.test": ["127.0.0.1", "::1"],
      "metadata.test": ["169.254.169.254"],
      "mixed.test": ["127.0.0.1", "169.254.169.254"],
    }),
  );

  it("answers as dns.lookup does, one address or all of them", async () => {
    expect(await lookup(guard, "svc.test", false)).toEqual({
      error: null,
      address: "127.0.0.1",
      family: 4,
    });
    expect((await lookup(guard, "svc.test", true)).address).toEqual([
      { address: "127.0.0.1", family: 4 },
      { address: "::1", family: 6 },
    ]);
  });

  it("refuses a name resolving to a refused address, alone or among others", async () => {
    for (const name of ["metadata.test", "mixed.test"]) {
      const { error } = await lookup(guard, name, true);
      expect(isOutboundError(error) && error.kind).toBe("destination_refused");
      expect((error as Error).message).toContain(`${name} resolves to 169.254.169.254`);
    }
  });

  it("fails as dns.lookup does for a name without addresses", async () => {
    const { error } = await lookup(guard, "nowhere.test", false);
    expect((error as NodeJS.ErrnoException).code).toBe("ENOTFOUND");
  });
});
