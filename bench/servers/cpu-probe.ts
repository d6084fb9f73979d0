/**
 * Lets the benchmark read this server process's CPU time over IPC, so that CPU per call is
 * measured on the server alone, not on the client sharing the machine.
 */
export function answerCpuProbes(): void {
  process.on("message", (message: unknown) => {
    if (message === "cpu") process.send?.({ cpu: process.cpuUsage() });
  });
}

/** Tells the parent the server is listening on `port`. */
export function reportReady(port: number): void {
  process.send?.({ ready: port });
}
