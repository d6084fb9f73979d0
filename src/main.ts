import { createApp } from "./app.js";
import { ConfigError, loadConfig } from "./config/index.js";

/** Reads the configuration, starts the node, and shuts it down gracefully on SIGTERM or SIGINT. */
async function main(): Promise<void> {
  const { config, effective, warnings } = loadConfig();
  const app = await createApp(config, effective);
  for (const warning of warnings) app.logger.warn(warning);
  const stop = (signal: string) => {
    app.logger.info({ signal }, "signal received");
    app.close().then(
      () => process.exit(0),
      (error: unknown) => {
        app.logger.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
  process.on("uncaughtException", (error) => {
    app.logger.fatal({ err: error }, "uncaught exception");
    process.exit(1);
  });
  await app.listen();
}

main().catch((error: unknown) => {
  // Before the logger exists, a start failure is one plain line on stderr: what to fix, not a stack.
  const message =
    error instanceof ConfigError
      ? `invalid configuration: ${error.message}`
      : `failed to start: ${error instanceof Error ? error.message : String(error)}`;
  process.stderr.write(`${message}\n`);
  process.exit(1);
});
