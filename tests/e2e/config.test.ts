import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningOrchestrator, startOrchestrator } from "../support/orchestrator.js";
import { freePort } from "../support/process.js";

// Configuration as a running node reports it: where each value came from (env > file >
// default), and that secrets, however they were given, never come back out.

interface ConfigValue {
  readonly key: string;
  readonly value: string;
  readonly source: string;
  readonly secret: boolean;
}

const redisPassword = `redis-pw-${randomUUID()}`;
const operatorToken = `operator-token-${randomUUID()}`;
const urlPassword = "hunter2";
const adminToken = `admin-token-${randomUUID()}`;
const secrets = [redisPassword, operatorToken, urlPassword, adminToken];

const fileYaml = [
  "services:",
  "  reporting_url: http://reporting.from-file:5030",
  "orchestrator:",
  "  environment: from-file",
  "",
].join("\n");

async function getText(
  url: string,
  token?: string,
): Promise<{ status: number; text: string; headers: Headers }> {
  const response = await fetch(url, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  return { status: response.status, text: await response.text(), headers: response.headers };
}

describe("configuration through the running node", () => {
  let dir = "";
  let configPath = "";
  let node: RunningOrchestrator;
  let fileOnly: RunningOrchestrator;
  /** Every body this file received from `node`, searched for secrets at the end. */
  const bodies: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "orchestrator-config-"));
    configPath = join(dir, "app.yaml");
    writeFileSync(configPath, fileYaml);
    const passwordFile = join(dir, "redis_password");
    writeFileSync(passwordFile, `${redisPassword}\n`);
    // Nothing listens there: Redis stays unreachable, which only makes readiness fail.
    const closedPort = await freePort();
    [node, fileOnly] = await Promise.all([
      startOrchestrator({
        env: {
          APP_CONFIG_PATH: configPath,
          ENVIRONMENT: "staging",
          OPERATOR_TOKEN: operatorToken,
          AUTH_TOKENS: `admin:${adminToken}`,
          REDIS_PASSWORD_FILE: passwordFile,
          REDIS_URL: `redis://:${urlPassword}@127.0.0.1:${closedPort}/0`,
        },
      }),
      startOrchestrator({ env: { APP_CONFIG_PATH: configPath } }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([node?.close(), fileOnly?.close()]);
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  });

  async function effectiveConfig(running: RunningOrchestrator, token?: string) {
    const reply = await getText(`${running.url}/config/effective`, token);
    if (running === node) bodies.push(reply.text);
    expect(reply.status, reply.text).toBe(200);
    const values = (JSON.parse(reply.text) as { values: ConfigValue[] }).values;
    return (key: string): ConfigValue => {
      const found = values.find((v) => v.key === key);
      expect(found, key).toBeDefined();
      return found as ConfigValue;
    };
  }

  it("GET /config/effective needs an admin token when tokens are set", async () => {
    const without = await getText(`${node.url}/config/effective`);
    bodies.push(without.text);
    expect(without.status).toBe(401);
    expect(JSON.parse(without.text)).toMatchObject({ code: "unauthenticated" });
    const wrong = await getText(`${node.url}/config/effective`, "not-the-token");
    bodies.push(wrong.text);
    expect(wrong.status).toBe(401);
    const operator = await getText(`${node.url}/config/effective`, operatorToken);
    bodies.push(operator.text);
    expect(operator.status).toBe(403);
    await effectiveConfig(node, adminToken);
  });

  it("shows env over file over default, with each value's source", async () => {
    const value = await effectiveConfig(node, adminToken);
    expect(value("ENVIRONMENT")).toMatchObject({ value: "staging", source: "env" });
    expect(value("REPORTING_URL")).toMatchObject({
      value: "http://reporting.from-file:5030",
      source: "file",
    });
    expect(value("NOTIFICATION_URL")).toMatchObject({
      value: "http://notification-service:5095",
      source: "default",
    });
    expect(value("APP_CONFIG_PATH")).toMatchObject({ value: configPath, source: "env" });

    const fromFile = await effectiveConfig(fileOnly);
    expect(fromFile("ENVIRONMENT")).toMatchObject({ value: "from-file", source: "file" });
  });

  it("shows secrets as redacted, whatever their source", async () => {
    const value = await effectiveConfig(node, adminToken);
    expect(value("REDIS_PASSWORD")).toEqual({
      key: "REDIS_PASSWORD",
      value: "[redacted]",
      source: "file",
      secret: true,
    });
    expect(value("OPERATOR_TOKEN")).toEqual({
      key: "OPERATOR_TOKEN",
      value: "[redacted]",
      source: "env",
      secret: true,
    });
    expect(value("AUTH_TOKENS")).toEqual({
      key: "AUTH_TOKENS",
      value: "[redacted]",
      source: "env",
      secret: true,
    });
    expect(value("REDIS_URL").value).toMatch(/^redis:\/\/:\[redacted\]@127\.0\.0\.1:\d+\/0$/);
    expect(value("REDIS_URL").source).toBe("env");
  });

  it("GET /info reports the environment ENVIRONMENT gives", async () => {
    const info = await getText(`${node.url}/info`, operatorToken);
    bodies.push(info.text);
    expect(info.status).toBe(200);
    expect(JSON.parse(info.text)).toMatchObject({ environment: "staging" });
    const other = await getText(`${fileOnly.url}/info`);
    expect(JSON.parse(other.text)).toMatchObject({ environment: "from-file" });
  });

  it("/metrics needs a token too (viewer or above)", async () => {
    const without = await getText(`${node.url}/metrics`);
    bodies.push(without.text);
    expect(without.status).toBe(401);
    expect(JSON.parse(without.text)).toMatchObject({ code: "unauthenticated" });
    const withToken = await getText(`${node.url}/metrics`, operatorToken);
    bodies.push(withToken.text);
    expect(withToken.status).toBe(200);
    expect(withToken.text).toContain("orchestrator_rpc_started_total");
  });

  it("readiness fails while Redis is unreachable, naming redis", async () => {
    const ready = await getText(`${node.url}/ready`);
    bodies.push(ready.text);
    expect(ready.status).toBe(503);
    const body = JSON.parse(ready.text) as {
      ready: boolean;
      checks: { name: string; ok: boolean }[];
    };
    expect(body.ready).toBe(false);
    expect(body.checks).toContainEqual(expect.objectContaining({ name: "redis", ok: false }));
  });

  it("no secret appears in any response or in the logs", async () => {
    // Calls that carry the token, and a failing one, so that the logs have something to say.
    bodies.push((await getText(`${node.url}/info`, operatorToken)).text);
    bodies.push((await getText(`${node.url}/registry?bogus=1`, operatorToken)).text);
    expect(bodies.length).toBeGreaterThan(5);
    for (const body of bodies) {
      for (const secret of secrets) expect(body).not.toContain(secret);
    }
    // The Redis client's failure is logged (with the URL's host, never its password).
    for (let i = 0; i < 400 && !node.logs.some((l) => l.includes("redis unreachable")); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const logs = node.logs.join("\n");
    expect(logs).toContain("orchestrator listening");
    expect(logs).toContain("redis unreachable");
    for (const secret of secrets) expect(logs).not.toContain(secret);
  });
});
