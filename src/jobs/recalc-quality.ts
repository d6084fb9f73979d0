import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import {
  callDownstream,
  isJsonObject,
  type JobCall,
  type JobDeps,
  resolveTarget,
  unreadable,
} from "./downstream-call.js";

/** What {@link recalcQuality} found. */
export type QualityRecalculation =
  | {
      readonly status: "completed";
      readonly flagged: number;
      readonly total: number;
      /** When the count was made, ms since the epoch. */
      readonly timestamp: number;
    }
  | { readonly status: "skipped"; readonly reason: string };

/**
 * Reads the doc store's quality list (`GET /documents/quality`, a JSON array of documents or
 * `{documents: [...]}`) and counts those whose `flagged` is true. A node without a doc store
 * skips the job rather than failing it: the job is scheduled everywhere, the doc store is not.
 * @throws DomainError as `callDownstream` does; "unavailable" when the answer is not a list.
 */
export async function recalcQuality(
  deps: JobDeps & { readonly clock: Clock },
  call: JobCall,
): Promise<QualityRecalculation> {
  let target: ReturnType<typeof resolveTarget>;
  try {
    target = resolveTarget(deps, "doc-store");
  } catch (error) {
    if (error instanceof DomainError && error.kind === "failed_precondition") {
      return { status: "skipped", reason: error.message };
    }
    throw error;
  }
  const answer = await callDownstream(deps, call, {
    target,
    method: "GET",
    path: "/documents/quality",
    answer: "quality list",
  });
  const documents = documentsOf(answer);
  if (documents === undefined) throw unreadable(target.service, "quality list");
  const flagged = documents.filter((d) => isJsonObject(d) && d.flagged === true).length;
  return { status: "completed", flagged, total: documents.length, timestamp: deps.clock.now() };
}

function documentsOf(answer: unknown): readonly unknown[] | undefined {
  if (Array.isArray(answer)) return answer;
  if (isJsonObject(answer) && Array.isArray(answer.documents)) return answer.documents;
  return undefined;
}
