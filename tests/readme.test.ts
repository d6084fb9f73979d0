import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { configKeys } from "../src/config/index.js";
import { restRoutesOf } from "../src/gateway/rest-gateway.js";
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
  it.each(restRoutesOf(services).map((r) => `| ${r.method} | ${r.path} |`))(
    "lists the route %s",
    (row) => {
      expect(readme).toContain(row);
    },
  );
});
