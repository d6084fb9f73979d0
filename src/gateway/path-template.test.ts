import { describe, expect, it } from "vitest";
import { compilePathTemplate } from "./path-template.js";

describe("compilePathTemplate", () => {
  it("routes literal segments and variables", () => {
    const t = compilePathTemplate("/registry/{name}/heartbeat");
    expect(t.routerPath).toBe("/registry/:p0/heartbeat");
    expect([...t.variables]).toEqual([["p0", ["name"]]]);
  });

  it("accepts nested field paths and {var=*}", () => {
    const t = compilePathTemplate("/a/{parent.name=*}/b/{id}");
    expect(t.routerPath).toBe("/a/:p0/b/:p1");
    expect([...t.variables]).toEqual([
      ["p0", ["parent", "name"]],
      ["p1", ["id"]],
    ]);
  });

  it.each(["registry", "/files/{path=**}", "/a/{x}:verb", "/a b"])(
    "refuses %s at start rather than routing it wrongly",
    (template) => {
      expect(() => compilePathTemplate(template)).toThrow(template);
    },
  );
});
