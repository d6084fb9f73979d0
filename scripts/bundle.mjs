// The production build `npm start` runs: src/main.ts and its node_modules bundled by esbuild into
// dist/bundle/ (issue 10, catch-up: loading ~700 module files was most of a new node's start).
//
//   node scripts/bundle.mjs          (part of `npm run build`, after tsc has type-checked)
//
// Every dynamic `import()` the code uses to load a feature on demand (ioredis, the OTLP exporter,
// undici, cockatiel) becomes a chunk of its own, loaded only when that feature is used: code
// splitting is on. dist/bundle/meta.json (esbuild's metafile) says which inputs each chunk holds;
// tests/e2e/bundle.test.ts reads it to tell which packages a running node has loaded.
//
// The bundle runs in the checkout, beside node_modules: besides the externals below, a few things
// are still found at run time from where the bundle lies: package.json (src/system/node-info.ts),
// sorted-btree (required through createRequire in src/dlq/memory-dlq-store.ts, so that every
// loader sees the same module object) and the OpenAPI worker's module (dist/bundle/openapi-worker.js).
// Not working in the bundle, and not used by us: @opentelemetry/resources' machine-id lookup (its
// CommonJS code `import()`s files whose chunks export only `default`; only its host detector calls
// it) and grpc-js' channelz and ORCA services (they read .proto files beside grpc-js).
import { readdir, rm, writeFile } from "node:fs/promises";
import { basename } from "node:path";
import { build } from "esbuild";

const root = new URL("../", import.meta.url);
const outdir = new URL("dist/bundle/", root);

/**
 * Packages left in node_modules and loaded from there at run time, each for a reason:
 * - piscina starts its worker threads from its own `dist/worker.js` (found by `__dirname`), which a
 *   bundle does not have; it is loaded by `import("piscina")` at the first OpenAPI analysis.
 * - fastify's schema compilers (ajv, fast-json-stringify) are `require`d by fastify inside a
 *   function, so esbuild would put them in main.js although no route of ours declares a schema;
 *   src/server/http-app.ts loads them from fastify's own node_modules when one does.
 * - light-my-request: fastify requires it inside `inject()` (in-process tests), never in a server.
 * - @grpc/proto-loader: grpc-js requires it inside its channelz and ORCA services, which we do not
 *   use (they also read .proto files beside grpc-js); bundled, it would add protobufjs (~300 KB)
 *   to main.js, which every start parses.
 */
const external = [
  "piscina",
  "@fastify/ajv-compiler",
  "@fastify/fast-json-stringify-compiler",
  "light-my-request",
  "@grpc/proto-loader",
];

// CommonJS packages inside an ES module bundle still call `require` (for Node's own modules) and
// a few read `__dirname` (ioredis' friendly stacks, pino's transports, which we do not use): give
// every output file its own, as Node gives a CommonJS module.
const banner = [
  'import { createRequire as __bundleCreateRequire } from "node:module";',
  'import { fileURLToPath as __bundleFileURLToPath } from "node:url";',
  "const require = __bundleCreateRequire(import.meta.url);",
  "const __filename = __bundleFileURLToPath(import.meta.url);",
  'const __dirname = __bundleFileURLToPath(new URL(".", import.meta.url));',
].join(" ");

const result = await build({
  absWorkingDir: new URL(".", root).pathname,
  entryPoints: {
    main: "src/main.ts",
    // The OpenAPI worker thread's module: src/registry/openapi-analyzer.ts finds it beside itself
    // (`./openapi-worker.js`), so it and every chunk are written flat into dist/bundle/.
    "openapi-worker": "src/registry/openapi-worker.ts",
  },
  outdir: outdir.pathname,
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  splitting: true,
  external,
  banner: { js: banner },
  // Stack traces name our TypeScript lines (`node --enable-source-maps`); the sources' text is not
  // needed for that, and leaving it out keeps the map that Node reads at start small.
  sourcemap: true,
  sourcesContent: false,
  metafile: true,
  logLevel: "warning",
});
await writeFile(new URL("meta.json", outdir), JSON.stringify(result.metafile));

// Chunks of an earlier build (their names carry a hash of their content) go once the new ones are
// written, not before: a node already running from dist/bundle/ keeps finding its lazy chunks
// while a build runs (`npm test` builds the bundle too).
const written = new Set(Object.keys(result.metafile.outputs).map((file) => basename(file)));
for (const file of await readdir(outdir)) {
  if (file !== "meta.json" && !written.has(file)) await rm(new URL(file, outdir));
}
