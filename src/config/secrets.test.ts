import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConfigError } from "./keys.js";
import { getSecret, type SecretSources } from "./secrets.js";

let dir: string;
let secretsDir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "orchestrator-secrets-"));
  secretsDir = join(dir, "secrets");
  mkdirSync(secretsDir);
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function sources(env: Record<string, string>): SecretSources {
  return { env, secretsDir, readFile: (path) => readFileSync(path, "utf8") };
}

function thrown(run: () => unknown): ConfigError {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("expected a ConfigError");
}

describe("getSecret", () => {
  it("prefers the variable itself over NAME_FILE and the secrets directory", () => {
    writeFileSync(join(dir, "token"), "from-named-file\n");
    writeFileSync(join(secretsDir, "operator_token"), "from-secrets-dir\n");
    const env = { OPERATOR_TOKEN: "from-env", OPERATOR_TOKEN_FILE: join(dir, "token") };
    expect(getSecret("OPERATOR_TOKEN", sources(env))).toEqual({ value: "from-env", source: "env" });
  });

  it("reads NAME_FILE before the secrets directory, without the trailing newline", () => {
    writeFileSync(join(dir, "token"), "s3cret value\r\n");
    writeFileSync(join(secretsDir, "operator_token"), "from-secrets-dir\n");
    const env = { OPERATOR_TOKEN_FILE: join(dir, "token") };
    expect(getSecret("OPERATOR_TOKEN", sources(env))).toEqual({
      value: "s3cret value",
      source: "file",
    });
  });

  it("falls back to the lower-cased file in the secrets directory", () => {
    writeFileSync(join(secretsDir, "peer_token"), "peer-s3cret\n");
    expect(getSecret("PEER_TOKEN", sources({}))).toEqual({ value: "peer-s3cret", source: "file" });
  });

  it("treats empty variables as unset", () => {
    writeFileSync(join(secretsDir, "peer_token"), "peer-s3cret");
    const env = { PEER_TOKEN: "", PEER_TOKEN_FILE: "" };
    expect(getSecret("PEER_TOKEN", sources(env))).toEqual({ value: "peer-s3cret", source: "file" });
  });

  it("is undefined when set nowhere, even without a secrets directory", () => {
    expect(getSecret("PEER_TOKEN", sources({}))).toBeUndefined();
    const missingDir = { ...sources({}), secretsDir: join(dir, "absent") };
    expect(getSecret("PEER_TOKEN", missingDir)).toBeUndefined();
  });

  it("refuses a NAME_FILE that cannot be read, naming the variable", () => {
    const env = { OPERATOR_TOKEN_FILE: join(dir, "missing") };
    const error = thrown(() => getSecret("OPERATOR_TOKEN", sources(env)));
    expect(error.key).toBe("OPERATOR_TOKEN_FILE");
    expect(error.source).toBe("env");
    expect(error.message).toMatch(
      /^OPERATOR_TOKEN_FILE from env: cannot read ".*missing" \(ENOENT\)$/,
    );
  });

  it("refuses an empty secret file rather than turning authentication off", () => {
    writeFileSync(join(dir, "token"), "\n");
    const error = thrown(() =>
      getSecret("OPERATOR_TOKEN", sources({ OPERATOR_TOKEN_FILE: join(dir, "token") })),
    );
    expect(error.key).toBe("OPERATOR_TOKEN_FILE");
    expect(error.message).toContain("is empty");
  });

  it("refuses a secrets-directory entry that exists but cannot be read", () => {
    mkdirSync(join(secretsDir, "operator_token"));
    const error = thrown(() => getSecret("OPERATOR_TOKEN", sources({})));
    expect(error.key).toBe("OPERATOR_TOKEN");
    expect(error.source).toBe("file");
    expect(error.message).toContain("(EISDIR)");
  });

  it("never puts the contents of a file in a message", () => {
    const readFile = (): string => {
      throw Object.assign(new Error("EACCES: hunter2 leaked"), { code: "EACCES" });
    };
    const env = { OPERATOR_TOKEN_FILE: "/var/token" };
    const error = thrown(() => getSecret("OPERATOR_TOKEN", { env, secretsDir, readFile }));
    expect(error.message).toBe('OPERATOR_TOKEN_FILE from env: cannot read "/var/token" (EACCES)');
  });

  it("refuses a name that could escape the secrets directory", () => {
    expect(() => getSecret("../etc/passwd", sources({}))).toThrow(TypeError);
  });
});
