import {
  callDownstream,
  type JobCall,
  type JobDeps,
  resolveTarget,
  stepKey,
} from "./downstream-call.js";

/** How the demo bundle is asked for. */
export interface DemoRequest {
  /** "json" or "markdown"; empty means "json". */
  readonly format: string;
  /** Empty: every service. */
  readonly logService: string;
  /** Empty: every level. */
  readonly logLevel: string;
  /** 0: the reporting service's default. */
  readonly logLimit: number;
}

/** The demo bundle: two reports as the reporting service made them. */
export interface DemoBundle {
  readonly summary: unknown;
  readonly logAnalysis: unknown;
}

/**
 * Builds the demo bundle from two reports fetched in parallel: `POST {reporting}/reports/generate
 * {format}` and `POST {reporting}/reports/log_analysis {format, service, level, limit}` (empty
 * filters left out). Either failing fails the bundle. Both are reads: each carries an idempotency
 * key of this call and is retried on transient failures.
 * @throws DomainError "failed_precondition" when reporting is not set up; as `callDownstream`
 *   does.
 */
export async function runDemo(
  deps: JobDeps,
  call: JobCall,
  request: DemoRequest,
): Promise<DemoBundle> {
  const target = resolveTarget(deps, "reporting");
  const format = request.format === "" ? "json" : request.format;
  const filters = {
    ...(request.logService === "" ? {} : { service: request.logService }),
    ...(request.logLevel === "" ? {} : { level: request.logLevel }),
    ...(request.logLimit === 0 ? {} : { limit: request.logLimit }),
  };
  const [summary, logAnalysis] = await Promise.all([
    callDownstream(deps, call, {
      target,
      method: "POST",
      path: "/reports/generate",
      json: { format },
      idempotencyKey: stepKey(call, "demo:summary"),
      answer: "summary",
    }),
    callDownstream(deps, call, {
      target,
      method: "POST",
      path: "/reports/log_analysis",
      json: { format, ...filters },
      idempotencyKey: stepKey(call, "demo:log-analysis"),
      answer: "log analysis",
    }),
  ]);
  return { summary, logAnalysis };
}
