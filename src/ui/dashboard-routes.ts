import { readFileSync } from "node:fs";
import type { FastifyInstance } from "fastify";

/** The dashboard's files, served as they are: no build step, at start or at run time. */
const files: Readonly<Record<string, string>> = {
  "": "text/html; charset=utf-8",
  "app.js": "text/javascript; charset=utf-8",
  "style.css": "text/css; charset=utf-8",
};

/**
 * The page only talks to this node's own API; nothing inline, nothing from elsewhere, never
 * framed (clickjacking of the DLQ retry button).
 */
const securityHeaders = Object.freeze({
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-cache",
});

/**
 * Serves the dashboard at `/ui/` (`/ui` redirects there). The page holds no data of its own: it
 * reads everything through the public API, with the token the operator gives it when auth is on,
 * so serving it needs no token. The files are read once, at the first request, from
 * `src/ui/static/` of the checkout (found from this module, wherever it runs from: the sources,
 * the compiled tree or the bundle).
 */
export function registerDashboardRoutes(fastify: FastifyInstance): void {
  let loaded: ReadonlyMap<string, Buffer> | undefined;
  const load = () => {
    loaded ??= new Map(
      Object.keys(files).map((name) => [
        name,
        readFileSync(new URL(name === "" ? "index.html" : name, staticDir())),
      ]),
    );
    return loaded;
  };
  fastify.get("/ui", (_request, reply) => reply.redirect("/ui/", 308));
  fastify.get<{ Params: { file: string } }>("/ui/:file", (request, reply) => {
    const name = request.params.file;
    const type = Object.hasOwn(files, name) ? files[name] : undefined;
    if (type === undefined) {
      return reply.code(404).send({ code: "not_found", message: "no such file", details: [] });
    }
    return reply.headers(securityHeaders).type(type).send(load().get(name));
  });
}

/** `src/ui/static/` beside the nearest package.json above this module. */
function staticDir(): URL {
  for (let dir = new URL(".", import.meta.url); ; dir = new URL("..", dir)) {
    try {
      readFileSync(new URL("package.json", dir));
      return new URL("src/ui/static/", dir);
    } catch (error) {
      if (dir.pathname === "/") throw error;
    }
  }
}
