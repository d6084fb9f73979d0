import {
  callDownstream,
  type JobCall,
  type JobDeps,
  resolveTarget,
  stepKey,
} from "./downstream-call.js";

/** The reports the reporting service makes, with their paths. */
export const reportPaths = Object.freeze({
  generate: "/reports/generate",
  life_of_ticket: "/reports/life-of-ticket",
  pr_confidence: "/reports/pr_confidence",
});

/** One of {@link reportPaths}' kinds. */
export type ReportKind = keyof typeof reportPaths;

/** True when `kind` is a {@link ReportKind}. */
export function isReportKind(kind: string): kind is ReportKind {
  return Object.hasOwn(reportPaths, kind);
}

/** A report to ask for. */
export interface ReportRequest {
  readonly kind: ReportKind;
  /** Sent as `format` when not empty. */
  readonly format: string;
  /** The body of the report request. */
  readonly payload?: Readonly<Record<string, unknown>> | undefined;
}

/**
 * Asks the reporting service for a report: `POST {reporting}<path of kind>` with the payload and
 * the format as body; the report is whatever JSON it answers. A report changes nothing, so the
 * call carries an idempotency key of its own and is retried on transient failures.
 * @throws DomainError "failed_precondition" when reporting is not set up; as `callDownstream`
 *   does ("reporting answered an unreadable report" for an answer that is not JSON).
 */
export async function requestReport(
  deps: JobDeps,
  call: JobCall,
  request: ReportRequest,
): Promise<{ readonly kind: ReportKind; readonly report: unknown }> {
  const target = resolveTarget(deps, "reporting");
  const report = await callDownstream(deps, call, {
    target,
    method: "POST",
    path: reportPaths[request.kind],
    json: { ...request.payload, ...(request.format === "" ? {} : { format: request.format }) },
    idempotencyKey: stepKey(call, `report:${request.kind}`),
    answer: "report",
  });
  return { kind: request.kind, report };
}
