// Runs src/main.ts as `npm start` does, noting every module file it loads. On SIGUSR2 it writes,
// as one JSON line on stderr (`{"loaded": {...}}`), the packages loaded so far and Node's own
// modules (its fetch implementation among them, loaded by the first Headers of a process).
// For tests that check what a node loads only when a feature is configured or used.
import { createRequire, register } from "node:module";

const urls = new Set<string>();
const { port1, port2 } = new MessageChannel();
port1.on("message", (url: string) => urls.add(url));
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

/** The package a module file belongs to, e.g. "@opentelemetry/core", or undefined for ours. */
function packageOf(file: string): string | undefined {
  return /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file)?.[1];
}

process.on("SIGUSR2", () => {
  const files = [...urls, ...Object.keys(createRequire(import.meta.url).cache)];
  const packages = [...new Set(files.map(packageOf).filter((p) => p !== undefined))].sort();
  const builtins = (process as { moduleLoadList?: string[] }).moduleLoadList ?? [];
  process.stderr.write(`${JSON.stringify({ loaded: { packages, builtins } })}\n`);
});

await import("../../src/main.js");
