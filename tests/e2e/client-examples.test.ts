import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { afterEach, describe, expect, it, vi } from "vitest";
import { main as plainGrpcJs } from "../../examples/plain-grpc-js.js";
import { main as typedClient } from "../../examples/typed-client.js";
import { WatchEventType } from "../../src/client/index.js";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { repoRoot } from "../support/process.js";

// The README's client examples are files under examples/: each is run against a real node here,
// and the README must show each file as it is.

const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
const exampleText = (file: string) =>
  readFileSync(new URL(`../../examples/${file}`, import.meta.url), "utf8");

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startNode(): Promise<RunningOrchestrator> {
  const node = await startOrchestrator({ env: { HEALTH_CHECK_INTERVAL_MS: "3600000" } });
  cleanups.push(() => node.close());
  return node;
}

describe("client examples", () => {
  it.each(["typed-client.ts", "plain-grpc-js.ts"])("README shows %s as it is", (file) => {
    expect(readme).toContain(`\`\`\`ts\n${exampleText(file)}\`\`\`\n`);
  });

  it("typed-client.ts registers, follows its own registration and deregistration", async () => {
    const node = await startNode();
    vi.spyOn(console, "log").mockImplementation(() => {});
    const seen = await typedClient(node.url);
    // Its own registration (in the snapshot or after it, as the watch and the write meet), then,
    // after the deregistration, the DELETE that ends the loop.
    expect(
      seen.every((c) => c.type === WatchEventType.SNAPSHOT_END || c.service?.name === "billing"),
    ).toBe(true);
    expect(seen.some((c) => c.type === WatchEventType.PUT)).toBe(true);
    const last = seen.at(-1);
    expect(last?.snapshot).toBe(false);
    expect(last?.type).toBe(WatchEventType.DELETE);
  });

  it("plain-grpc-js.ts registers and lists with grpc-js and proto-loader alone", async () => {
    const node = await startNode();
    vi.spyOn(console, "log").mockImplementation(() => {});
    const services = await plainGrpcJs(node.address);
    expect(services).toHaveLength(1);
    expect(services[0]).toMatchObject({
      name: "plain-billing",
      base_url: "http://127.0.0.1:9/billing",
    });
    expect(typeof services[0]?.revision).toBe("string");
    expect(services[0]?.status).toMatch(/^SERVICE_STATUS_/);
  });
});

describe("orchestrator/client", () => {
  // Where `npm run build` (tsconfig.build.json: rootDir ".", outDir "dist") puts src/client/index.ts.
  // Resolved by Node itself, from the package's own "exports"; the build is not run here (about a
  // minute of tsc), so only the mapping is checked.
  it("resolves to the compiled src/client/index.ts", () => {
    const build = JSON.parse(readFileSync(`${repoRoot}tsconfig.build.json`, "utf8")) as {
      compilerOptions: { outDir: string; rootDir: string; declaration: boolean };
    };
    expect(build.compilerOptions).toMatchObject({
      outDir: "dist",
      rootDir: ".",
      declaration: true,
    });
    const resolved = execFileSync(
      process.execPath,
      ["--input-type=module", "-e", 'console.log(import.meta.resolve("orchestrator/client"))'],
      { cwd: repoRoot, encoding: "utf8" },
    ).trim();
    expect(resolved).toBe(pathToFileURL(`${repoRoot}dist/src/client/index.js`).href);
  });
});
