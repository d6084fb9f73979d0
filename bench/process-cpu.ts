import { readFileSync } from "node:fs";

// Linux reports CPU time in clock ticks of 1/100 s (CLK_TCK is 100 on every kernel config we run).
const ticksPerSecond = 100;

/**
 * CPU time (user + system) a process has used so far, in microseconds, read from /proc: the
 * server is measured from outside, as it runs in production, with no probe inside it.
 */
export function processCpuMicros(pid: number): number {
  return statCpuMicros(`/proc/${pid}/stat`);
}

/**
 * CPU time (user + system) the main thread of a process has used so far, in microseconds: for
 * Node, the event loop's own work, apart from worker threads and V8's helper threads.
 */
export function mainThreadCpuMicros(pid: number): number {
  return statCpuMicros(`/proc/${pid}/task/${pid}/stat`);
}

function statCpuMicros(path: string): number {
  const stat = readFileSync(path, "utf8");
  // The command name (field 2) may contain spaces; the fields after it are space-separated.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1_000_000) / ticksPerSecond;
}
