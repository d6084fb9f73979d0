// The dashboard in a real browser: Debian's chromium, headless, driven by playwright-core. The
// page is served by a real node and reads it only through the public API; a change made through
// the API appears on the open page without a reload. A screenshot of the page with data in it is
// written to the test's temporary directory and checked to be a real PNG image.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";

const executablePath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const viewer = "viewer-dashboard-token";
const operator = "operator-dashboard-token";

let browser: Browser;
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "dashboard-"));
  browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
});
afterAll(async () => {
  await browser?.close();
  await rm(dir, { recursive: true, force: true });
});

async function register(node: RunningOrchestrator, name: string, token?: string): Promise<void> {
  const response = await fetch(`${node.url}/registry/register`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify({ name, base_url: "http://127.0.0.1:9", version: "1.2.3" }),
  });
  expect(response.status, await response.text()).toBe(200);
}

const registryNames = (page: Page) =>
  page.locator("#registry tbody tr td:first-child").allTextContents();

describe("dashboard", () => {
  it("shows the registry, peers, runs, DLQ and events, and follows changes without a reload", async () => {
    const node = await startOrchestrator({
      env: { NODE_ID: "node-ui", ORCHESTRATOR_PEERS: "http://127.0.0.1:9" },
    });
    const page = await browser.newPage();
    const pageErrors: string[] = [];
    page.on("pageerror", (error) => pageErrors.push(error.message));
    try {
      await register(node, "billing");
      await page.goto(`${node.url}/ui/`);
      await expect.poll(() => registryNames(page), { timeout: 15_000 }).toEqual(["billing"]);
      await expect
        .poll(() => page.locator("#registry tbody tr td:nth-child(4)").textContent())
        .toBe("1.2.3");
      // The peer configured (down here) is listed with its state; the node's id is shown.
      await expect
        .poll(() => page.locator("#peers tbody tr td:first-child").allTextContents())
        .toEqual(["http://127.0.0.1:9"]);
      await expect.poll(() => page.locator("#node").textContent()).toContain("node-ui");
      await expect.poll(() => page.locator('#dlq dd[data-stat="total"]').textContent()).toBe("0");

      // Changes made through the API now appear on the open page.
      await register(node, "ledger");
      await expect
        .poll(() => registryNames(page), { timeout: 15_000 })
        .toEqual(["billing", "ledger"]);
      await expect
        .poll(() => page.locator("#events li").allTextContents(), { timeout: 15_000 })
        .toContainEqual(expect.stringContaining("registry.service.registered ledger"));
      const deleted = await fetch(`${node.url}/registry/billing`, { method: "DELETE" });
      expect(deleted.status).toBe(200);
      await expect.poll(() => registryNames(page), { timeout: 15_000 }).toEqual(["ledger"]);
      // A workflow run (it fails: its agent is not there) shows with its steps.
      const run = await fetch(`${node.url}/workflows/run`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ workflow: "ingestion", sources: ["github"] }),
      });
      expect(run.status).toBe(200);
      await expect
        .poll(() => page.locator("#runs tbody tr td:nth-child(4)").allTextContents(), {
          timeout: 20_000,
        })
        .toContainEqual(expect.stringContaining("ingest:github: failed"));

      // Its failed step was dead-lettered; the retry button retries it (and it fails again).
      await expect
        .poll(() => page.locator('#dlq dd[data-stat="total"]').textContent(), { timeout: 15_000 })
        .toBe("1");
      await page.locator("#dlq-retry").click();
      await expect
        .poll(() => page.locator("#dlq-result").textContent(), { timeout: 15_000 })
        .toMatch(/^1 retried, 0 resolved$/);

      // DASHBOARD_SCREENSHOT=<path> keeps the screenshot to look at.
      const screenshot = process.env.DASHBOARD_SCREENSHOT ?? join(dir, "dashboard.png");
      await page.screenshot({ path: screenshot, fullPage: true });
      const png = await readFile(screenshot);
      expect(png.subarray(1, 4).toString("latin1")).toBe("PNG");
      expect(png.length).toBeGreaterThan(10_000);
      expect(pageErrors).toEqual([]);
    } finally {
      await page.close();
      await node.close();
    }
  });

  it("asks for a token when auth is on, and works with a viewer's", async () => {
    const node = await startOrchestrator({
      env: { AUTH_TOKENS: `viewer:${viewer},operator:${operator}` },
    });
    const page = await browser.newPage();
    try {
      await register(node, "billing", operator);
      await page.goto(`${node.url}/ui/`);
      await page.locator("#token").waitFor({ state: "visible", timeout: 15_000 });
      expect(await registryNames(page)).toEqual([]);
      await page.locator("#token").fill(viewer);
      await page.locator("#token-form button").click();
      await expect.poll(() => registryNames(page), { timeout: 15_000 }).toEqual(["billing"]);
      expect(await page.locator("#token-form").isHidden()).toBe(true);
    } finally {
      await page.close();
      await node.close();
    }
  });

  it("serves its files with a strict content security policy, and nothing else under /ui/", async () => {
    const node = await startOrchestrator();
    try {
      const page = await fetch(`${node.url}/ui/`);
      expect(page.status).toBe(200);
      expect(page.headers.get("content-security-policy")).toContain("default-src 'none'");
      expect(page.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
      expect(await page.text()).toContain('<script type="module" src="app.js">');
      expect((await fetch(`${node.url}/ui`, { redirect: "manual" })).headers.get("location")).toBe(
        "/ui/",
      );
      for (const path of ["/ui/index.ts", "/ui/dashboard-routes.ts", "/ui/%2e%2e%2fpackage.json"]) {
        expect((await fetch(`${node.url}${path}`)).status, path).toBe(404);
      }
    } finally {
      await node.close();
    }
  });
});
