import { afterEach, describe, expect, it } from "vitest";
import { type Downstream, startDownstream } from "./downstream.js";

// The stand-in for the services the orchestrator calls, checked through real HTTP calls, so
// that the tests built on it can trust what it says it does.

let downstream: Downstream | undefined;
afterEach(async () => {
  await downstream?.close();
});

describe("a downstream stand-in", () => {
  it("answers a sequence step by step, repeating the last, and records each request", async () => {
    downstream = await startDownstream();
    downstream.answer("POST", "/ingest", {
      kind: "sequence",
      steps: [
        { kind: "fail", status: 503 },
        { kind: "json", body: { ok: true } },
      ],
    });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const response = await fetch(`${downstream.url}/ingest?x=1`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-correlation-id": `c${i}` },
        body: JSON.stringify({ source: "github", i }),
      });
      statuses.push(response.status);
      await response.arrayBuffer();
    }
    expect(statuses).toEqual([503, 200, 200]);
    const seen = downstream.requestsTo("POST", "/ingest");
    expect(seen.map((r) => [r.body, r.headers["x-correlation-id"], r.query])).toEqual([
      [{ source: "github", i: 0 }, "c0", { x: "1" }],
      [{ source: "github", i: 1 }, "c1", { x: "1" }],
      [{ source: "github", i: 2 }, "c2", { x: "1" }],
    ]);
    expect((await fetch(`${downstream.url}/other`)).status).toBe(404);
  });

  it("answers garbage, resets, and holds a request until the client gives up", async () => {
    downstream = await startDownstream();
    downstream.answer("GET", "/garbage", { kind: "garbage" });
    downstream.answer("GET", "/reset", { kind: "reset" });
    downstream.answer("GET", "/hang", { kind: "hang" });
    const garbage = await fetch(`${downstream.url}/garbage`);
    await expect(garbage.json()).rejects.toThrow();
    await expect(fetch(`${downstream.url}/reset`)).rejects.toThrow();
    await expect(
      fetch(`${downstream.url}/hang`, { signal: AbortSignal.timeout(300) }),
    ).rejects.toThrow();
    expect(downstream.requests.map((r) => r.path)).toEqual(["/garbage", "/reset", "/hang"]);
  });

  it("answers raw bytes with the content type and status given", async () => {
    downstream = await startDownstream();
    downstream.answer("GET", "/page", {
      kind: "raw",
      contentType: "text/html",
      body: "<html></html>",
      status: 502,
    });
    downstream.answer("GET", "/big", {
      kind: "raw",
      contentType: "application/json",
      body: Buffer.alloc(1024 * 1024, 0x20),
    });
    const page = await fetch(`${downstream.url}/page`);
    expect([page.status, page.headers.get("content-type"), await page.text()]).toEqual([
      502,
      "text/html",
      "<html></html>",
    ]);
    const big = await fetch(`${downstream.url}/big`);
    expect((await big.arrayBuffer()).byteLength).toBe(1024 * 1024);
  });
});
