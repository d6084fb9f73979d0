import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger, flushLogger, type LoggerOptions, redactionCensor } from "./logger.js";

/** A destination that keeps every line, so tests read exactly what pino wrote. */
function memoryDestination(): {
  write(line: string): void;
  lines: string[];
  records(): Array<Record<string, unknown>>;
} {
  const lines: string[] = [];
  return {
    lines,
    write(line: string) {
      lines.push(line);
    },
    records: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

const base: LoggerOptions = {
  level: "info",
  service: "orchestrator",
  nodeId: "node-1",
  version: "1.2.3",
};

describe("createLogger", () => {
  it("writes one JSON line per record with ISO time, label level and the base bindings", () => {
    const destination = memoryDestination();
    const logger = createLogger({ ...base, destination });

    logger.info({ correlation_id: "c-1" }, "started");

    expect(destination.lines).toHaveLength(1);
    expect(destination.lines[0]?.endsWith("\n")).toBe(true);
    const [record] = destination.records();
    expect(record).toMatchObject({
      level: "info",
      service: "orchestrator",
      node_id: "node-1",
      version: "1.2.3",
      correlation_id: "c-1",
      msg: "started",
    });
    expect(record).not.toHaveProperty("pid");
    expect(record).not.toHaveProperty("hostname");
    const time = record?.time;
    expect(typeof time).toBe("string");
    expect(new Date(time as string).toISOString()).toBe(time);
  });

  it("honours the level", () => {
    const destination = memoryDestination();
    const logger = createLogger({ ...base, level: "warn", destination });

    logger.info("dropped");
    logger.warn("kept");
    logger.error("kept too");

    expect(destination.records().map((r) => r.level)).toEqual(["warn", "error"]);
  });

  it("throws for an unknown level", () => {
    expect(() =>
      createLogger({ ...base, level: "loud", destination: memoryDestination() }),
    ).toThrow();
  });

  describe("redaction", () => {
    const secret = "s3cr3t-value";
    const cases: Array<[string, Record<string, unknown>, (r: Record<string, unknown>) => unknown]> =
      [
        [
          "req.headers.authorization",
          { req: { headers: { authorization: secret } } },
          (r) => at(r, "req", "headers", "authorization"),
        ],
        [
          "req.headers.cookie",
          { req: { headers: { cookie: secret } } },
          (r) => at(r, "req", "headers", "cookie"),
        ],
        [
          "res.headers.set-cookie",
          { res: { headers: { "set-cookie": secret } } },
          (r) => at(r, "res", "headers", "set-cookie"),
        ],
        [
          "headers.authorization",
          { headers: { authorization: secret } },
          (r) => at(r, "headers", "authorization"),
        ],
        [
          "headers.x-api-key",
          { headers: { "x-api-key": secret } },
          (r) => at(r, "headers", "x-api-key"),
        ],
        ["password", { password: secret }, (r) => r.password],
        ["token", { token: secret }, (r) => r.token],
        ["secret", { secret }, (r) => r.secret],
        ["authorization", { authorization: secret }, (r) => r.authorization],
        ["*.password", { user: { password: secret } }, (r) => at(r, "user", "password")],
        ["*.token", { session: { token: secret } }, (r) => at(r, "session", "token")],
        ["*.secret", { client: { secret } }, (r) => at(r, "client", "secret")],
        [
          "*.authorization",
          { upstream: { authorization: secret } },
          (r) => at(r, "upstream", "authorization"),
        ],
        ["*.apiKey", { config: { apiKey: secret } }, (r) => at(r, "config", "apiKey")],
        [
          "*.access_token",
          { oauth: { access_token: secret } },
          (r) => at(r, "oauth", "access_token"),
        ],
        [
          "*.client_secret",
          { oauth: { client_secret: secret } },
          (r) => at(r, "oauth", "client_secret"),
        ],
      ];

    it.each(cases)("censors %s", (_path, fields, read) => {
      const destination = memoryDestination();
      const logger = createLogger({ ...base, destination });

      logger.info({ ...fields, note: "visible" }, "with a secret");

      expect(destination.lines.join("")).not.toContain(secret);
      const [record] = destination.records();
      expect(record && read(record)).toBe(redactionCensor);
      expect(record?.note).toBe("visible");
    });

    it("censors secrets in child bindings and keeps ordinary fields", () => {
      const destination = memoryDestination();
      const logger = createLogger({ ...base, destination }).child({
        token: secret,
        tenant: "acme",
      });

      logger.warn({ req: { headers: { authorization: secret, accept: "application/json" } } }, "x");

      expect(destination.lines.join("")).not.toContain(secret);
      const [record] = destination.records();
      expect(record?.tenant).toBe("acme");
      expect(at(record ?? {}, "req", "headers", "accept")).toBe("application/json");
    });
  });

  describe("with a shipper", () => {
    it("writes every record at the logger's level to both the destination and the shipper", () => {
      const destination = memoryDestination();
      const shipped = memoryDestination();
      const logger = createLogger({
        ...base,
        level: "debug",
        destination,
        shipper: { stream: shipped },
      });

      logger.trace("below the level");
      logger.debug({ password: "hunter2" }, "one");
      logger.error("two");

      expect(destination.records().map((r) => r.msg)).toEqual(["one", "two"]);
      expect(shipped.lines).toEqual(destination.lines);
      expect(shipped.records()[0]?.password).toBe(redactionCensor);
    });

    it("follows a level changed at run time", () => {
      const destination = memoryDestination();
      const shipped = memoryDestination();
      const logger = createLogger({ ...base, destination, shipper: { stream: shipped } });

      logger.debug("hidden");
      logger.level = "debug";
      logger.debug("shown");

      expect(shipped.records().map((r) => r.msg)).toEqual(["shown"]);
      expect(destination.records().map((r) => r.msg)).toEqual(["shown"]);
    });
  });
});

describe("flushLogger", () => {
  let directory: string | undefined;

  afterEach(() => {
    if (directory !== undefined) rmSync(directory, { recursive: true, force: true });
    directory = undefined;
  });

  it("writes out everything an asynchronous pino destination still holds", async () => {
    directory = mkdtempSync(join(tmpdir(), "logger-test-"));
    const file = join(directory, "out.log");
    const destination = pino.destination({ dest: file, sync: false });
    await once(destination, "ready");
    const logger = createLogger({ ...base, destination, shipper: { stream: memoryDestination() } });

    for (let i = 0; i < 1000; i += 1) logger.info({ i }, "line");
    await flushLogger(logger.child({ part: "child" }));

    const lines = readFileSync(file, "utf8").trim().split("\n");
    expect(lines).toHaveLength(1000);
    expect(JSON.parse(lines[999] ?? "{}")).toMatchObject({ i: 999 });
    destination.end();
    await once(destination, "close");
  });

  it("resolves for a destination that cannot flush", async () => {
    await expect(
      flushLogger(createLogger({ ...base, destination: memoryDestination() })),
    ).resolves.toBeUndefined();
  });
});

function at(record: Record<string, unknown>, ...path: string[]): unknown {
  let value: unknown = record;
  for (const key of path) {
    value =
      typeof value === "object" && value !== null
        ? (value as Record<string, unknown>)[key]
        : undefined;
  }
  return value;
}
