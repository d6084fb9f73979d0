// Preloaded into an orchestrator (`node --import`, see `imports` of startOrchestratorProcess), it
// notes every module file the process loads. On SIGUSR2 it writes, as one JSON line on stderr
// (`{"loaded": {...}}`), the packages loaded from node_modules so far, every module file, and
// Node's own modules (its fetch implementation among them, loaded by the first Headers of a
// process). For tests that check what a node loads only when a feature is configured or used.
// Plain JavaScript, so that the production bundle runs without the TypeScript loader (tsx's hooks
// would also stand between the bundle and Node's module loader, hiding what Node alone does).
import { createRequire, register } from "node:module";

/** @type {Set<string>} */
const urls = new Set();
const { port1, port2 } = new MessageChannel();
port1.on("message", (url) => urls.add(url));
port1.unref();
// ES modules are seen by a loader hook (it runs on a thread of its own); CommonJS ones, loaded by
// `require` inside packages, are all in the require cache.
const hook = `
let port;
export function initialize(data) { port = data.port; }
export async function load(url, context, next) {
  port.postMessage(url);
  return next(url, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hook)}`, {
  data: { port: port2 },
  transferList: [port2],
});

/**
 * The package a module file belongs to, e.g. "@opentelemetry/core", or undefined for ours.
 * @param {string} file
 * @returns {string | undefined}
 */
function packageOf(file) {
  return /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file)?.[1];
}

process.on("SIGUSR2", () => {
  const files = [...urls, ...Object.keys(createRequire(import.meta.url).cache)];
  const packages = [...new Set(files.map(packageOf).filter((p) => p !== undefined))].sort();
  const builtins = process.moduleLoadList ?? [];
  process.stderr.write(`${JSON.stringify({ loaded: { packages, files, builtins } })}\n`);
});
