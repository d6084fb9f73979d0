import { DomainError } from "../errors/domain-error.js";
import type { OpenApiBaseline } from "./model.js";
import {
  diffOpenApi,
  type OpenApiDiff,
  parseOpenApiDocument,
  summarizeOpenApi,
} from "./openapi.js";
import { decodeSummary, encodeSummary } from "./openapi-summary-codec.js";

/** Bounds of one analysis. */
export interface OpenApiAnalysisLimits {
  /** Operations a document may have. */
  readonly maxOperations: number;
  /** Bytes a baseline's summary may take (compressed, as stored). */
  readonly maxBaselineBytes: number;
}

/** One fetched document to analyse, with the service's stored baseline. */
export interface OpenApiAnalysisTask {
  /** The document as fetched. */
  readonly body: Uint8Array;
  /** The response's content type, which says JSON or not; null when absent. */
  readonly contentType: string | null;
  /** The baseline stored for the service, if any. */
  readonly baseline: Pick<OpenApiBaseline, "hash" | "summary"> | undefined;
  readonly limits: OpenApiAnalysisLimits;
}

/**
 * What the analysis of a document found: a few strings and numbers, the capped diff and the new
 * baseline's compressed summary, whatever the size of the document.
 */
export interface OpenApiAnalysis {
  /** sha256 (hex) of the canonical document. */
  readonly hash: string;
  readonly operationCount: number;
  /**
   * "none": there was no baseline, or none readable, so `summary` is the first; "same": the
   * document hash is the baseline's, nothing to store; "moved": the hash moved, `summary`
   * replaces the baseline and `diff` says how its operations differ (possibly not at all).
   */
  readonly against: "none" | "same" | "moved";
  /** The summary to store as the new baseline; absent when `against` is "same". */
  readonly summary?: Uint8Array;
  /** Set when `against` is "moved". */
  readonly diff?: OpenApiDiff;
}

/**
 * Parses, summarises and compares one document with its baseline. CPU-bound and synchronous, in
 * proportion to the document: it runs in the analysis worker, never on the event loop. The
 * stored baseline is decoded only when the document hash moved.
 * @throws DomainError "invalid" when the document cannot be read (see `parseOpenApiDocument`),
 *   has more than `limits.maxOperations` operations, is too complex to summarise, or its summary
 *   takes more than `limits.maxBaselineBytes`. Messages never quote the document.
 */
export function analyzeOpenApi(task: OpenApiAnalysisTask): OpenApiAnalysis {
  const { limits } = task;
  const document = parseOpenApiDocument(bufferOf(task.body), task.contentType);
  const current = summarizeOpenApi(document, { maxOperations: limits.maxOperations });
  const hash = current.hash;
  const operationCount = Object.keys(current.operations).length;
  if (task.baseline?.hash === hash) return { hash, operationCount, against: "same" };
  const summary = encodeSummary(current.operations);
  if (summary.byteLength > limits.maxBaselineBytes) {
    throw baselineTooLarge(summary.byteLength, limits.maxBaselineBytes);
  }
  const before = task.baseline && decodeSummary(task.baseline.summary);
  if (before === undefined) return { hash, operationCount, against: "none", summary };
  const diff = diffOpenApi({ operations: before }, current);
  return { hash, operationCount, against: "moved", summary, diff };
}

function baselineTooLarge(bytes: number, allowed: number): DomainError {
  return new DomainError(
    "invalid",
    `OpenAPI baseline would take ${bytes} bytes, more than ${allowed}`,
  );
}

function bufferOf(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
