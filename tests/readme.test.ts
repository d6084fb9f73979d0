import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Access } from "../gen/orchestrator/v1/options_pb.js";
import { servedServiceTypes } from "../src/app.js";
import { configKeys } from "../src/config/index.js";
import { restRoutesOf } from "../src/gateway/rest-gateway.js";
import { accessOf } from "../src/interceptors/auth.js";
import { wrapService } from "../src/interceptors/chain.js";
import { apiServices } from "../src/services/api-services.js";
import { unimplementedService } from "../src/services/unimplemented.js";

// The README is the user's reference: it must name every configuration key and every REST route
// the protos declare, so that neither can change without the documentation.
const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");

describe("README", () => {
  it.each(configKeys.map((key) => key.name))("documents the configuration key %s", (name) => {
    expect(readme).toContain(`| \`${name}\` |`);
  });

  const services = apiServices.map((service) =>
    wrapService(service, unimplementedService(service, "test"), []),
  );
  it("has the roles table the access options make", () => {
    expect(readme).toContain(rolesTable());
  });

  it.each(restRoutesOf(services).map((r) => `| ${r.method} | ${r.path} |`))(
    "lists the route %s",
    (row) => {
      expect(readme).toContain(row);
    },
  );
});

const roleOfAccess: Readonly<Record<Access, string>> = {
  [Access.UNSPECIFIED]: "(none: the start fails)",
  [Access.PUBLIC]: "public",
  [Access.VIEWER]: "viewer",
  [Access.OPERATOR]: "operator",
  [Access.ADMIN]: "admin",
  [Access.PEER]: "peer (PEER_TOKEN)",
  [Access.SERVICE]: "service/<name> of the service named, or operator",
};

/** One row per method of every served service, with its REST route when it has one. */
function rolesTable(): string {
  const routes = restRoutesOf(
    servedServiceTypes.map((s) => wrapService(s, unimplementedService(s, "test"), [])),
  );
  const rows = servedServiceTypes.flatMap((service) =>
    service.methods.map((method) => {
      const rest = routes
        .filter(
          (r) =>
            r.target.method.parent.typeName === service.typeName &&
            r.target.method.name === method.name,
        )
        .map((r) => `${r.method} ${r.path}`)
        .join(", ");
      return `| ${service.typeName} | ${method.name} | ${rest} | ${roleOfAccess[accessOf(method)]} |`;
    }),
  );
  return ["| Service | Method | REST | Least role |", "|---|---|---|---|", ...rows].join("\n");
}

/** Prints the table, for pasting into the README: `PRINT_ROLES_TABLE=1 npx vitest run tests/readme.test.ts`. */
if (process.env.PRINT_ROLES_TABLE) process.stdout.write(`${rolesTable()}\n`);
