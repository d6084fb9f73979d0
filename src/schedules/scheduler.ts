import { Cron } from "croner";
import type { Logger } from "pino";
import type { ScheduleLock } from "./schedule-lock.js";

/** One job on a schedule, as configured (`SCHEDULED_JOBS`). */
export interface Schedule {
  readonly job: string;
  /** A cron expression: five fields, or six with seconds first (croner's syntax). */
  readonly cron: string;
}

/** What `/info` shows of a schedule. */
export interface ScheduleStatus {
  readonly job: string;
  readonly cron: string;
  /** Unix ms of the next firing; undefined once stopped. */
  readonly nextRunAt: number | undefined;
  /** Unix ms of the last firing this node ran (claimed), if any. */
  readonly lastRunAt: number | undefined;
  /** "ok", "failed: <message>", "running", or "" before the first run here. */
  readonly lastOutcome: string;
  /** Firings this node ran, and those another node claimed first. */
  readonly runs: number;
  readonly skipped: number;
}

/** A job the scheduler can run: resolves when done; a rejection is logged as its failure. */
export type ScheduledJob = (firing: { readonly firingMs: number }) => Promise<unknown>;

/** What {@link createScheduler} is built from. */
export interface SchedulerDeps {
  readonly schedules: readonly Schedule[];
  /** The jobs by name; every schedule's job must be here. */
  readonly jobs: ReadonlyMap<string, ScheduledJob>;
  readonly lock: ScheduleLock;
  /** Who claims: the node id. */
  readonly holder: string;
  readonly logger: Logger;
  /** How long a claim is kept. Default 10 minutes. */
  readonly claimTtlMs?: number;
}

/** Runs jobs on their schedules, each firing once across the nodes sharing the lock. */
export interface Scheduler {
  start(): void;
  /** Stops firing and waits for the runs in progress. */
  stop(): Promise<void>;
  status(): ScheduleStatus[];
}

/**
 * The names of the jobs in `schedules` that `jobs` does not have: a schedule of an unknown job
 * stops the start.
 */
export function unknownJobs(
  schedules: readonly Schedule[],
  jobs: ReadonlyMap<string, ScheduledJob>,
): string[] {
  return schedules.map((s) => s.job).filter((job) => !jobs.has(job));
}

/**
 * Fires each schedule with croner. A firing is named by its scheduled second (the firing time
 * rounded to the nearest second: cron's finest unit), so that every node computes the same name
 * for it; the node that claims that name runs the job, the others count it as skipped. A job
 * still running when its next firing comes is not started twice on this node (croner's
 * `protect`).
 * @throws Error naming the jobs `jobs` lacks.
 */
export function createScheduler(deps: SchedulerDeps): Scheduler {
  const missing = unknownJobs(deps.schedules, deps.jobs);
  if (missing.length > 0) {
    throw new Error(
      `SCHEDULED_JOBS names unknown jobs: ${missing.join(", ")} (known: ${[...deps.jobs.keys()].join(", ") || "none"})`,
    );
  }
  const ttlMs = deps.claimTtlMs ?? 10 * 60_000;
  const running = new Set<Promise<unknown>>();
  const entries = deps.schedules.map((schedule) => {
    const entry = {
      schedule,
      cron: undefined as unknown as Cron,
      lastRunAt: undefined as number | undefined,
      lastOutcome: "",
      runs: 0,
      skipped: 0,
    };
    // Made paused now (a bad expression fails here, before the node listens), resumed by start.
    entry.cron = new Cron(schedule.cron, { paused: true, protect: true }, () => {
      const run = fire(entry);
      running.add(run);
      return run.finally(() => running.delete(run));
    });
    return entry;
  });

  const fire = async (entry: (typeof entries)[number]): Promise<void> => {
    const firingMs = Math.round(Date.now() / 1000) * 1000;
    const { job } = entry.schedule;
    let claimed: boolean;
    try {
      claimed = await deps.lock.claim(job, firingMs, deps.holder, ttlMs);
    } catch (error) {
      deps.logger.warn(
        { err: error, job, firing: new Date(firingMs).toISOString() },
        "scheduled job skipped: its claim failed",
      );
      return;
    }
    if (!claimed) {
      entry.skipped++;
      return;
    }
    entry.runs++;
    entry.lastRunAt = firingMs;
    entry.lastOutcome = "running";
    const run = deps.jobs.get(job) as ScheduledJob;
    try {
      await run({ firingMs });
      entry.lastOutcome = "ok";
    } catch (error) {
      entry.lastOutcome = `failed: ${error instanceof Error ? error.message : String(error)}`.slice(
        0,
        512,
      );
      deps.logger.warn({ err: error, job }, "scheduled job failed");
    }
  };

  return {
    start() {
      for (const entry of entries) entry.cron.resume();
    },
    async stop() {
      for (const entry of entries) entry.cron.stop();
      await Promise.allSettled([...running]);
    },
    status() {
      return entries.map((entry) => ({
        job: entry.schedule.job,
        cron: entry.schedule.cron,
        nextRunAt: entry.cron.nextRun()?.getTime(),
        lastRunAt: entry.lastRunAt,
        lastOutcome: entry.lastOutcome,
        runs: entry.runs,
        skipped: entry.skipped,
      }));
    },
  };
}
