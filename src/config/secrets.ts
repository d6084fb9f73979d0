import { join } from "node:path";
import { ConfigError, echoValue } from "./keys.js";

/** Where secrets are looked for. */
export interface SecretSources {
  /** Environment variables; `NAME` and `NAME_FILE` are read. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Directory of one file per secret, named in lower case (Docker and Kubernetes mount them here). */
  readonly secretsDir: string;
  /** Reads a whole file as UTF-8; throws an error with a `code` such as `ENOENT` when it cannot. */
  readonly readFile: (path: string) => string;
}

/** A secret's value and where it came from. Never log `value`. */
export interface Secret {
  readonly value: string;
  /** `env` for the variable itself; `file` for `NAME_FILE` or the secrets directory. */
  readonly source: "env" | "file";
}

/**
 * Looks a secret up: env `NAME`, else the file named by env `NAME_FILE`, else
 * `<secretsDir>/<name in lower case>`, else `undefined`. An empty `NAME` or `NAME_FILE` counts as
 * unset, since compose files often pass `NAME=${NAME}` through empty. Trailing newlines are cut
 * from files (what `echo` leaves behind).
 *
 * @throws TypeError when `name` is not an upper-case variable name (a programming error).
 * @throws ConfigError when `NAME_FILE` cannot be read, when a file in the secrets directory exists
 *   but cannot be read, or when either file is empty. The message names the variable and the path,
 *   never the contents.
 */
export function getSecret(name: string, sources: SecretSources): Secret | undefined {
  // The name becomes a path below the secrets directory, so it must not be able to escape it.
  if (!/^[A-Z][A-Z0-9_]*$/.test(name)) throw new TypeError(`not a secret name: ${name}`);
  const fromEnv = sources.env[name];
  if (fromEnv !== undefined && fromEnv !== "") return { value: fromEnv, source: "env" };

  const fileVariable = `${name}_FILE`;
  const namedFile = sources.env[fileVariable];
  if (namedFile !== undefined && namedFile !== "") {
    return readSecretFile(sources, namedFile, fileVariable, "env", false);
  }
  return readSecretFile(sources, join(sources.secretsDir, name.toLowerCase()), name, "file", true);
}

function readSecretFile(
  sources: SecretSources,
  path: string,
  variable: string,
  source: "env" | "file",
  missingIsUnset: boolean,
): Secret | undefined {
  let text: string;
  try {
    text = sources.readFile(path);
  } catch (error) {
    const code = errorCode(error);
    if (missingIsUnset && (code === "ENOENT" || code === "ENOTDIR")) return undefined;
    throw new ConfigError(variable, source, `cannot read ${echoValue(path)} (${code ?? "error"})`);
  }
  const value = text.replace(/[\r\n]+$/, "");
  // An empty secret would silently turn authentication off, which is never what a file meant.
  if (value === "") throw new ConfigError(variable, source, `${echoValue(path)} is empty`);
  return { value, source: "file" };
}

/** The `code` of a Node system error (`ENOENT`, `EACCES`, ...), if there is one. */
export function errorCode(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null || !("code" in error)) return undefined;
  return typeof error.code === "string" ? error.code : undefined;
}
