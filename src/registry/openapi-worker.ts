// The entry of the OpenAPI analysis worker thread (see openapi-analyzer.ts): piscina calls the
// default export with each task.
import { DomainError } from "../errors/domain-error.js";
import {
  analyzeOpenApi,
  type OpenApiAnalysis,
  type OpenApiAnalysisTask,
} from "./openapi-analysis.js";

/** What the worker answers: the analysis, or why the document was refused. */
export type OpenApiWorkerReply =
  | { readonly analysis: OpenApiAnalysis }
  | { readonly refused: string };

/**
 * Analyses one document. A refusal is answered as plain data: an error crossing threads keeps
 * its message and stack but loses its class and kind. Anything else (a bug) is thrown.
 */
export default function analyzeInWorker(task: OpenApiAnalysisTask): OpenApiWorkerReply {
  try {
    return { analysis: analyzeOpenApi(task) };
  } catch (error) {
    if (error instanceof DomainError && error.kind === "invalid") return { refused: error.message };
    throw error;
  }
}
