import {
  callDownstream,
  isJsonObject,
  type JobCall,
  type JobDeps,
  resolveTarget,
  stepKey,
  unreadable,
} from "./downstream-call.js";

/** A text to summarize within the secure analyzer's policy. */
export interface SummarizationRequest {
  readonly content: string;
  readonly keywords: readonly string[];
  readonly keywordDocument: string;
  /** Summarize with every provider rather than the allowed ones. */
  readonly overridePolicy: boolean;
}

/** The analyzer's suggestion and the summary made with it. */
export interface Summarization {
  readonly suggestion: unknown;
  readonly result: unknown;
  readonly policyOverride: boolean;
  readonly providersUsed: readonly string[];
}

/**
 * Policy-aware summarization in two calls to the secure analyzer. `POST /suggest {content,
 * keywords, keyword_document}` answers which providers the content may go to
 * (`allowed_providers`, and optionally every provider it knows as `providers`); then `POST
 * /summarize {content, providers, override_policy}` with the allowed providers, or, with
 * `overridePolicy`, with every provider (`providers` of the suggestion; none listed lets the
 * analyzer use its defaults). Neither call changes anything: both carry an idempotency key of
 * this call and are retried on transient failures.
 * @throws DomainError "failed_precondition" when the secure analyzer is not set up; as
 *   `callDownstream` does; "unavailable" when the suggestion lacks `allowed_providers`.
 */
export async function suggestSummarization(
  deps: JobDeps,
  call: JobCall,
  request: SummarizationRequest,
): Promise<Summarization> {
  const target = resolveTarget(deps, "secure-analyzer");
  const suggestion = await callDownstream(deps, call, {
    target,
    method: "POST",
    path: "/suggest",
    json: {
      content: request.content,
      keywords: request.keywords,
      keyword_document: request.keywordDocument,
    },
    idempotencyKey: stepKey(call, "suggest"),
    answer: "suggestion",
  });
  const allowed = isJsonObject(suggestion) ? stringsOf(suggestion.allowed_providers) : undefined;
  if (!isJsonObject(suggestion) || allowed === undefined) {
    throw unreadable(target.service, "suggestion");
  }
  const providers = request.overridePolicy ? (stringsOf(suggestion.providers) ?? []) : allowed;
  const result = await callDownstream(deps, call, {
    target,
    method: "POST",
    path: "/summarize",
    json: {
      content: request.content,
      ...(providers.length === 0 && request.overridePolicy ? {} : { providers }),
      override_policy: request.overridePolicy,
    },
    idempotencyKey: stepKey(call, "summarize"),
    answer: "summary",
  });
  return { suggestion, result, policyOverride: request.overridePolicy, providersUsed: providers };
}

function stringsOf(value: unknown): string[] | undefined {
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) return undefined;
  return value;
}
