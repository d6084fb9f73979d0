/** One condition readiness depends on; `probe` resolves to a problem, or undefined when fine. */
export interface ReadinessCheck {
  readonly name: string;
  probe(signal: AbortSignal): Promise<string | undefined> | string | undefined;
}

/** The outcome of one readiness check. */
export interface ReadinessResult {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

/**
 * Runs every check concurrently, each bounded by `timeoutMs` (a check that does not answer in time
 * fails), and never throws: a check that throws fails with a generic detail.
 */
export async function evaluateReadiness(
  checks: readonly ReadinessCheck[],
  timeoutMs: number,
): Promise<ReadinessResult[]> {
  return Promise.all(checks.map((check) => runCheck(check, timeoutMs)));
}

async function runCheck(check: ReadinessCheck, timeoutMs: number): Promise<ReadinessResult> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<string>((resolve) => {
    timer = setTimeout(() => {
      controller.abort();
      resolve(`no answer within ${timeoutMs} ms`);
    }, timeoutMs);
  });
  try {
    const problem = await Promise.race([
      Promise.resolve().then(() => check.probe(controller.signal)),
      timedOut,
    ]);
    return { name: check.name, ok: problem === undefined, detail: problem ?? "" };
  } catch {
    return { name: check.name, ok: false, detail: "check failed" };
  } finally {
    clearTimeout(timer);
  }
}
