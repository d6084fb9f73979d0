// The whole orchestrator (every interceptor, the one-port listener, the gRPC fast path), as
// `npm start` runs it, on a free port.
import { createApp } from "../../src/app.js";
import { loadConfig } from "../../src/config/index.js";
import { answerCpuProbes, reportReady } from "./cpu-probe.js";

const { config, effective } = loadConfig({
  env: { ...process.env, PORT: process.env.PORT ?? "0", HOST: "127.0.0.1" },
});
const app = await createApp(config, effective);
const address = await app.listen();
answerCpuProbes();
reportReady(address.port);
process.on("SIGTERM", () => void app.close().then(() => process.exit(0)));
