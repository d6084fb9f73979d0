import { createHash } from "node:crypto";
import { DomainError } from "../errors/domain-error.js";
import { forEachLimited } from "../for-each-limited.js";
import {
  callDownstream,
  isJsonObject,
  type JobCall,
  type JobDeps,
  resolveTarget,
  unreadable,
} from "./downstream-call.js";

/** What {@link notifyConsolidation} sends. */
export interface ConsolidationNotice {
  /** Lowest confidence of a candidate notified, in 0..1. */
  readonly minConfidence: number;
  /** Most candidates notified; 0 means {@link defaultNoticeLimit}. */
  readonly limit: number;
  /** Handed to the notification service as the target of channel "webhook"; never called here. */
  readonly webhookUrl?: string | undefined;
}

/** What {@link notifyConsolidation} did. */
export interface ConsolidationNotified {
  readonly status: "ok";
  /** Notices the notification service answered 2xx. */
  readonly sent: number;
  /** Candidates kept: one notice attempted for each. */
  readonly candidates: number;
}

/** Candidates notified when the request says 0. */
export const defaultNoticeLimit = 100;
/** Notices in flight at once. */
const noticeConcurrency = 4;

/**
 * Reads the consolidation candidates of the reporting service (`GET
 * /reports/confluence/consolidation`: an array, or `{candidates: [...]}`, of objects with a
 * numeric `confidence`), keeps those at or above `minConfidence` in the order given, at most
 * `limit`, and posts one notice for each to the notification service (`POST /notify`). Each
 * notice carries an Idempotency-Key derived from the correlation id and the candidate, so a retry
 * (ours or the caller's, with the same correlation id) cannot notify twice. A notice that fails is
 * not sent and is not an error: `sent` says how many went. The webhook URL is only handed over:
 * the orchestrator calls configured or registered services, never a URL a client gives.
 * @throws DomainError "failed_precondition" when reporting or the notification service is not set
 *   up (before anything is read); as `callDownstream` does for the candidates' read;
 *   "unavailable" when the candidates are not a list.
 */
export async function notifyConsolidation(
  deps: JobDeps,
  call: JobCall,
  notice: ConsolidationNotice,
): Promise<ConsolidationNotified> {
  const reporting = resolveTarget(deps, "reporting");
  const notification = resolveTarget(deps, "notification-service");
  const answer = await callDownstream(deps, call, {
    target: reporting,
    method: "GET",
    path: "/reports/confluence/consolidation",
    answer: "consolidation list",
  });
  const all = candidatesOf(answer);
  if (all === undefined) throw unreadable(reporting.service, "consolidation list");
  const kept = all
    .filter((c) => c.confidence >= notice.minConfidence)
    .slice(0, notice.limit === 0 ? defaultNoticeLimit : notice.limit);
  let sent = 0;
  await forEachLimited(kept, noticeConcurrency, async (candidate) => {
    try {
      await callDownstream(deps, call, {
        target: notification,
        method: "POST",
        path: "/notify",
        json: noticeBody(candidate, notice, call),
        idempotencyKey: `${call.correlationId}:consolidation:${candidateKey(candidate)}`,
        answer: "notification receipt",
      });
      sent++;
    } catch (error) {
      // A failed notice is counted out, not fatal; the caller giving up is.
      if (!(error instanceof DomainError)) throw error;
    }
  });
  return { status: "ok", sent, candidates: kept.length };
}

interface Candidate {
  readonly confidence: number;
  readonly fields: Record<string, unknown>;
}

function candidatesOf(answer: unknown): Candidate[] | undefined {
  const list = Array.isArray(answer)
    ? answer
    : isJsonObject(answer) && Array.isArray(answer.candidates)
      ? answer.candidates
      : undefined;
  if (list === undefined) return undefined;
  // A candidate without a numeric confidence cannot pass any threshold: it is left out.
  return list.flatMap((fields: unknown) =>
    isJsonObject(fields) &&
    typeof fields.confidence === "number" &&
    Number.isFinite(fields.confidence)
      ? [{ confidence: fields.confidence, fields }]
      : [],
  );
}

/** The candidate's own id when it has one, else a digest of its fields. */
function candidateKey(candidate: Candidate): string {
  const id = candidate.fields.id;
  if ((typeof id === "string" && id !== "") || typeof id === "number") return String(id);
  const digest = createHash("sha256").update(JSON.stringify(candidate.fields)).digest("hex");
  return digest.slice(0, 32);
}

function noticeBody(candidate: Candidate, notice: ConsolidationNotice, call: JobCall) {
  const { fields, confidence } = candidate;
  const title = typeof fields.title === "string" ? fields.title : candidateKey(candidate);
  const where =
    notice.webhookUrl === undefined || notice.webhookUrl === ""
      ? {}
      : { channel: "webhook", target: notice.webhookUrl };
  return {
    ...where,
    title: `Consolidation candidate: ${title}`,
    message: `Confluence pages that may be consolidated (confidence ${confidence.toFixed(2)}).`,
    metadata: { candidate: fields, confidence, correlation_id: call.correlationId },
  };
}
