import { setTimeout as delay } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Cluster,
  compareStamps,
  entryNamed,
  expectNothingToRepair,
  newerStamp,
  replicated,
  startCluster,
  untilConverged,
  untilPeer,
} from "../support/replication.js";
import {
  deregister,
  type Json,
  register,
  registration,
  rest,
  type ServiceJson,
} from "../support/rest.js";

// Three in-process nodes, each reaching each other through a TCP proxy of its own, so that links
// can be cut at the network level: a partition (packets dropped, only pings and timeouts notice)
// with writes on both sides heals into one registry; and a seeded random run of registrations,
// deletes and heartbeats on random nodes, with links reset at random, ends with identical
// registries holding, for every name, the newest write made to it.

describe("a partition of one node from the other two, then healed", () => {
  let cluster: Cluster | undefined;
  const running = (): Cluster => cluster ?? expect.fail("the cluster did not start");
  const url = (i: number): string => running().urls[i] ?? expect.fail(`no node ${i}`);

  beforeAll(async () => {
    cluster = await startCluster({ size: 3 });
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it("notices the cut, keeps both sides serving, and converges once healed", {
    timeout: 90_000,
  }, async () => {
    const urls = running().urls;
    await register(url(0), registration("contested", { version: "before" }));
    await register(url(1), registration("doomed"));
    await untilConverged(urls);

    // A (0) on one side, B (1) and C (2) on the other: every link between the sides drops
    // packets, in both directions.
    const across = running().proxies.filter(({ from, to }) => (from === 0) !== (to === 0));
    expect(across).toHaveLength(4);
    for (const { proxy } of across) proxy.cut("blackhole");
    // Nothing closes these connections: the HTTP/2 pings (or the silence timeout) notice.
    for (const { from, proxy } of across) {
      await untilPeer(url(from), proxy.url, (peer) => peer.state !== "PEER_STATE_LIVE");
    }

    const onA = await register(url(0), registration("contested", { version: "side-a" }));
    const onlyA = await register(url(0), registration("side-a"));
    const onB = await register(url(1), registration("contested", { version: "side-b" }));
    const onlyC = await register(url(2), registration("side-c"));
    await deregister(url(2), "doomed");
    // B and C still replicate with each other; A does not hear of them.
    const other = await untilConverged([url(1), url(2)], { linksLive: false });
    expect(entryNamed(other, "side-c")).toEqual(replicated(onlyC));
    expect(entryNamed(other, "doomed")).toBeUndefined();
    expect(entryNamed(other, "contested")).toEqual(replicated(onB));
    expect(entryNamed(other, "side-a")).toBeUndefined();
    expect((await rest(url(0), "GET", "/registry/side-c")).status).toBe(404);
    expect((await rest(url(0), "GET", "/registry/doomed")).status).toBe(200);
    for (const base of urls) expect((await rest(base, "GET", "/ready")).status).toBe(200);

    for (const { proxy } of across) proxy.heal();
    const healed = await untilConverged(urls);
    expect(entryNamed(healed, "side-a")).toEqual(replicated(onlyA));
    expect(entryNamed(healed, "side-c")).toEqual(replicated(onlyC));
    expect(entryNamed(healed, "doomed")).toBeUndefined();
    expect(entryNamed(healed, "contested")).toEqual(replicated(newerStamp(onA, onB)));
    for (const base of urls) await expectNothingToRepair(base);
  });
});

/** mulberry32: a small seeded PRNG, so that a failing run can be replayed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What one random operation did, kept to check the final state against. */
interface Outcome {
  readonly name: string;
  /** The entry a successful registration wrote. */
  readonly registered?: ServiceJson;
  /** A delete that removed the entry. */
  readonly deleted?: boolean;
}

describe("random registrations, deletes, heartbeats and link resets on three nodes", () => {
  let cluster: Cluster | undefined;
  const running = (): Cluster => cluster ?? expect.fail("the cluster did not start");

  beforeAll(async () => {
    cluster = await startCluster({ size: 3 });
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it("ends, once quiet, with identical registries holding each name's newest write", {
    timeout: 90_000,
  }, async () => {
    const seed = 20_240_611;
    const random = seededRandom(seed);
    const pick = <T>(items: readonly T[]): T =>
      items[Math.floor(random() * items.length)] ?? expect.fail("picked from nothing");
    const names = Array.from({ length: 16 }, (_, k) => `random-${String(k).padStart(2, "0")}`);
    const urls = running().urls;

    const operate = async (round: number, slot: number): Promise<Outcome> => {
      const base = pick(urls);
      const name = pick(names);
      const dice = random();
      if (dice < 0.5) {
        const extra: Json = {
          version: `r${round}.${slot}`,
          tags: random() < 0.5 ? ["blue"] : ["green", "blue"],
          metadata: { round: String(round) },
          ttl_seconds: random() < 0.5 ? 0 : 3600,
        };
        return { name, registered: await register(base, registration(name, extra)) };
      }
      const [method, path] =
        dice < 0.75 ? ["DELETE", `/registry/${name}`] : ["POST", `/registry/${name}/heartbeat`];
      const reply = await rest(base, method, path, method === "POST" ? {} : undefined);
      // Not registered on that node (yet, or any more): a normal answer in a random run.
      if (reply.status === 404) return { name };
      expect(reply.status, `${method} ${path} on ${base}: ${reply.text}`).toBe(200);
      // A heartbeat writes too (a new stamp on what that node holds), but does not say its stamp.
      return method === "DELETE" ? { name, deleted: true } : { name };
    };

    const links = running().proxies;
    /** When each cut link was cut: the round, and the connections its proxy had accepted. */
    const cutSince = new Map<number, { round: number; accepted: number }>();
    let cuts = 0;
    const outcomes: Outcome[] = [];
    const rounds = 50;
    for (let round = 0; round < rounds; round++) {
      // Now and then a link is reset (at most two at a time) and stays down for a few rounds and
      // until its node has tried to reconnect and been refused; then it comes back. The draws do
      // not depend on timing, so a seed always gives the same operations (when a cut link heals
      // may shift by a round or two with the machine's load).
      const dice = random();
      const which = Math.floor(random() * links.length);
      const link = links[which] ?? expect.fail("no link");
      const since = cutSince.get(which);
      if (dice < 0.2 && since === undefined && cutSince.size < 2) {
        link.proxy.cut("reset");
        cutSince.set(which, { round, accepted: link.proxy.accepted });
        cuts++;
        // Writes that follow happen while the link is known to be down, not before it noticed.
        const owner = urls[link.from] ?? expect.fail("no owner");
        await untilPeer(owner, link.proxy.url, (peer) => peer.state !== "PEER_STATE_LIVE");
      } else if (
        dice < 0.5 &&
        since !== undefined &&
        round - since.round >= 3 &&
        link.proxy.accepted > since.accepted
      ) {
        link.proxy.heal();
        cutSince.delete(which);
      }
      const batch = [0, 1, 2, 3].map((slot) => operate(round, slot));
      outcomes.push(...(await Promise.all(batch)));
      // Paced, so that cut links get to retry (and be refused) while the writes go on.
      await delay(40);
    }
    expect(outcomes).toHaveLength(200);
    // The seed gives a run that does cut links (and so reconnects through the proxies).
    expect(cuts).toBeGreaterThanOrEqual(3);
    for (const { proxy } of links) proxy.heal();

    const converged = await untilConverged(urls);
    for (const base of urls) await expectNothingToRepair(base);

    // Last writer wins: a name still registered holds a registration made to it (or a heartbeat
    // renewing one, which stamps it anew) at least as new as the newest registration; a name gone
    // was deleted at least once.
    for (const name of names) {
      const registered = outcomes.flatMap((o) =>
        o.name === name && o.registered ? [o.registered] : [],
      );
      const final = entryNamed(converged, name) as ServiceJson | undefined;
      const [first, ...others] = registered;
      if (final === undefined) {
        if (first !== undefined) {
          expect(
            outcomes.some((o) => o.name === name && o.deleted),
            `${name} deleted`,
          ).toBe(true);
        }
        continue;
      }
      if (first === undefined) expect.fail(`${name} is registered but was never registered`);
      const newest = others.reduce(newerStamp, first);
      expect(
        compareStamps(final, newest),
        `${name}: not older than the newest registration`,
      ).toBeGreaterThanOrEqual(0);
      const same = registered.find(
        (r) => r.hlc === final.hlc && r.origin_node_id === final.origin_node_id,
      );
      if (same !== undefined) expect(final, name).toEqual(replicated(same));
      else
        expect(
          registered.map((r) => r.version),
          name,
        ).toContain(final.version);
    }
  });
});
