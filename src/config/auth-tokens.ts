import { ConfigError, type ConfigValueSource } from "./keys.js";

/** A role a bearer token grants. `service` tokens are bound to one service name. */
export type AuthRole =
  | { readonly kind: "viewer" | "operator" | "admin" }
  | { readonly kind: "service"; readonly service: string };

/** One configured token and the role it grants. Never log `token`. */
export interface AuthToken {
  readonly role: AuthRole;
  readonly token: string;
}

const ranked = new Set(["viewer", "operator", "admin"]);
/** The registry's own rule for service names (RegisterServiceRequest.name). */
const serviceName = /^[a-z0-9][a-z0-9._-]*$/;
const maxServiceName = 100;

/**
 * Parses `AUTH_TOKENS`: comma-separated `role:token` pairs, where a role is `viewer`, `operator`,
 * `admin` or `service/<name>`; spaces around pairs are ignored. An empty text is no tokens.
 *
 * @throws ConfigError (key AUTH_TOKENS) on a pair without ":", an unknown role, an empty token, an
 *   invalid service name, or a token given twice. Messages name the pair by its position and the
 *   role, never the token.
 */
export function parseAuthTokens(text: string, source: ConfigValueSource): readonly AuthToken[] {
  const fail = (detail: string) => new ConfigError("AUTH_TOKENS", source, detail);
  const tokens: AuthToken[] = [];
  const seen = new Set<string>();
  const pairs = text.trim() === "" ? [] : text.split(",");
  pairs.forEach((pair, index) => {
    const where = `pair ${index + 1}`;
    const colon = pair.indexOf(":");
    if (colon < 0) throw fail(`${where} is not "role:token"`);
    const role = roleOf(pair.slice(0, colon).trim(), (detail) => fail(`${where}: ${detail}`));
    const token = pair.slice(colon + 1).trim();
    if (token === "") throw fail(`${where} (${describeRole(role)}) has an empty token`);
    if (/\s/.test(token)) throw fail(`${where} (${describeRole(role)}) has a token with spaces`);
    if (seen.has(token)) {
      throw fail(
        `${where} (${describeRole(role)}) repeats a token given earlier; each must be unique`,
      );
    }
    seen.add(token);
    tokens.push(Object.freeze({ role, token }));
  });
  return Object.freeze(tokens);
}

function roleOf(text: string, fail: (detail: string) => ConfigError): AuthRole {
  if (ranked.has(text)) return Object.freeze({ kind: text as "viewer" | "operator" | "admin" });
  if (text.startsWith("service/")) {
    const service = text.slice("service/".length);
    if (!serviceName.test(service) || service.length > maxServiceName) {
      throw fail(
        `"service/<name>" needs a service name of at most ${maxServiceName} characters a-z, 0-9, ".", "_", "-", starting with a letter or digit`,
      );
    }
    return Object.freeze({ kind: "service", service });
  }
  throw fail(`unknown role; expected viewer, operator, admin or service/<name>`);
}

/** The role as people write it: `operator`, `service/billing`. */
export function describeRole(role: AuthRole): string {
  return role.kind === "service" ? `service/${role.service}` : role.kind;
}
