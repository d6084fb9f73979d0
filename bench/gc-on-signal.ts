// Preloaded into the orchestrators that bench:memory starts (with --expose-gc), never into
// production: SIGUSR2 runs a full garbage collection, so that the heap read afterwards is what the
// node retains, not what it has yet to collect.
const collect = (globalThis as { gc?: () => void }).gc;
process.on("SIGUSR2", () => collect?.());
