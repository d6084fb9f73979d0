// Protected mode: with no token the node is open, so it listens on loopback only unless HOST was
// set on purpose. Checked on the address the node actually binds, and through /info.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type App, createApp } from "../../src/app.js";
import { loadConfig } from "../../src/config/index.js";

const opened: { app: App; dir: string }[] = [];
afterEach(async () => {
  for (const { app, dir } of opened.splice(0)) {
    await app.close();
    await rm(dir, { recursive: true, force: true });
  }
});

/** Starts a node from `env` alone, as main.ts does (no HOST unless given), on a free port. */
async function listenWith(env: Record<string, string>) {
  const dir = await mkdtemp(join(tmpdir(), "orchestrator-protected-"));
  const loaded = loadConfig({ env: { PORT: "0", ...env }, cwd: dir, secretsDir: join(dir, "s") });
  const app = await createApp(loaded.config, loaded.effective, {
    logDestination: { write: () => {} },
  });
  opened.push({ app, dir });
  const address = await app.listen();
  return { address, warnings: loaded.warnings };
}

async function infoOf(port: number, token?: string): Promise<Record<string, unknown>> {
  const headers: Record<string, string> =
    token === undefined ? {} : { authorization: `Bearer ${token}` };
  const response = await fetch(`http://127.0.0.1:${port}/info`, { headers });
  expect(response.status).toBe(200);
  return (await response.json()) as Record<string, unknown>;
}

describe("protected mode", () => {
  it("binds 127.0.0.1 when no token and no HOST are set, says so, and /info shows auth off", async () => {
    const { address, warnings } = await listenWith({});
    expect(address.address).toBe("127.0.0.1");
    expect(warnings.join("\n")).toContain("listening on 127.0.0.1 only");
    expect(await infoOf(address.port)).toMatchObject({ auth_enabled: false });
  });

  it("binds the HOST given, even without tokens", async () => {
    const { address, warnings } = await listenWith({ HOST: "0.0.0.0" });
    expect(address.address).toBe("0.0.0.0");
    expect(warnings.join("\n")).not.toContain("127.0.0.1 only");
  });

  it("binds every interface by default when tokens are set, and /info shows auth on", async () => {
    const { address } = await listenWith({ AUTH_TOKENS: "viewer:v-token" });
    expect(address.address).toBe("0.0.0.0");
    expect(await infoOf(address.port, "v-token")).toMatchObject({ auth_enabled: true });
    // Health and readiness stay open.
    expect((await fetch(`http://127.0.0.1:${address.port}/health`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${address.port}/ready`)).status).toBe(200);
  });
});
