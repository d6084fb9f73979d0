import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type Downstream, startDownstream } from "../support/downstream.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { expectStatus, type Json, patience, rest } from "../support/rest.js";

// The outbound guard through a real node: a job whose target is the metadata address, or outside
// OUTBOUND_ALLOW, fails with 400 FAILED_PRECONDITION naming the rule, a health probe of such a
// target reports the same, and the node goes on serving. The metadata address is never
// connected to: it is refused as written, before any I/O.

const waitLong = { timeout: patience, interval: 100 };

let docStore: Downstream;
/** Its doc store is the metadata address; no allow-list. */
let open: RunningOrchestrator;
/** OUTBOUND_ALLOW=127.0.0.1/32; its doc store listens on 127.0.0.1. */
let restricted: RunningOrchestrator;

const quickOutbound = {
  OUTBOUND_TIMEOUT_MS: "2000",
  OUTBOUND_RETRY_BASE_DELAY_MS: "1",
  OUTBOUND_RETRY_MAX_DELAY_MS: "5",
  // Would open on the first counted failure: a refusal must not be one.
  OUTBOUND_BREAKER_THRESHOLD: "1",
};

beforeAll(async () => {
  docStore = await startDownstream();
  docStore.answer("GET", "/documents/quality", { kind: "json", body: [{ flagged: true }] });
  [open, restricted] = await Promise.all([
    startOrchestrator({
      env: { ...quickOutbound, DOC_STORE_URL: "http://169.254.169.254/latest" },
    }),
    startOrchestrator({
      env: { ...quickOutbound, DOC_STORE_URL: docStore.url, OUTBOUND_ALLOW: "127.0.0.1/32" },
    }),
  ]);
}, patience);

afterAll(async () => {
  await Promise.all([open?.close(), restricted?.close()]);
  await docStore?.close();
});

async function recalcQuality(node: RunningOrchestrator): Promise<{ status: number; body: Json }> {
  return rest(node.url, "POST", "/jobs/recalc-quality", {});
}

function serviceHealth(body: Json, name: string): Json {
  return ((body.services ?? {}) as Record<string, Json>)[name] ?? {};
}

describe("a job whose target the guard refuses", () => {
  it("answers 400 failed_precondition naming the metadata rule, and the node keeps serving", async () => {
    for (let call = 0; call < 2; call++) {
      const answer = await recalcQuality(open);
      expect(answer.status).toBe(400);
      expect(answer.body.code).toBe("failed_precondition");
      expect(answer.body.message).toBe(
        "doc-store: 169.254.169.254 is a link-local/metadata address; add it to OUTBOUND_ALLOW to call it",
      );
    }
    await expectStatus(rest(open.url, "GET", "/health"), 200);
  });

  it("with OUTBOUND_ALLOW=127.0.0.1/32, reaches 127.0.0.1 and refuses 127.0.0.2", async () => {
    const answer = await recalcQuality(restricted);
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ status: "completed", flagged: 1, total: 1 });

    await expectStatus(
      rest(restricted.url, "POST", "/registry/register", {
        name: "doc-store",
        base_url: docStore.url.replace("127.0.0.1", "127.0.0.2"),
        ttl_seconds: 0,
      }),
      200,
    );
    // The registration is UNKNOWN until probed; the probe is refused, so the configured URL
    // stays in use for the job, while /health/system shows why the registered one fails.
    await vi.waitFor(async () => {
      const body = await expectStatus(rest(restricted.url, "GET", "/health/system"), 200);
      expect(serviceHealth(body, "doc-store").error).toBe("127.0.0.2 is not in OUTBOUND_ALLOW");
    }, waitLong);
    await expectStatus(rest(restricted.url, "GET", "/health"), 200);
  });
});

describe("the log shipper", () => {
  it("ships to a collector OUTBOUND_ALLOW lists, through the node's guarded client", async () => {
    const collector = await startDownstream();
    collector.answer("POST", "/logs/batch", { kind: "json", body: {} });
    const node = await startOrchestrator({
      env: { LOG_COLLECTOR_URL: collector.url, OUTBOUND_ALLOW: "127.0.0.1" },
    });
    try {
      await vi.waitFor(() => {
        expect(collector.requestsTo("POST", "/logs/batch").length).toBeGreaterThan(0);
      }, waitLong);
    } finally {
      await node.close();
      await collector.close();
    }
  });
});

describe("a health probe of a refused target", () => {
  it("reports the refusal as the probe's error", async () => {
    await expectStatus(
      rest(open.url, "POST", "/registry/register", {
        name: "metadata",
        base_url: "http://[::ffff:169.254.169.254]:80",
        ttl_seconds: 0,
      }),
      200,
    );
    await vi.waitFor(async () => {
      const body = await expectStatus(rest(open.url, "GET", "/health/system"), 200);
      expect(serviceHealth(body, "metadata").error).toBe(
        "::ffff:a9fe:a9fe is a link-local/metadata address; add it to OUTBOUND_ALLOW to call it",
      );
    }, waitLong);
  });
});
