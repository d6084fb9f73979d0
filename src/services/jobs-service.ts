import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampFromMs, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { JobsService } from "../../gen/orchestrator/v1/jobs_pb.js";
import type { Clock } from "../clock.js";
import { DomainError } from "../errors/domain-error.js";
import { callMetaOf, traceparentOf } from "../interceptors/call-meta.js";
import type { JobCall, JobDeps } from "../jobs/downstream-call.js";
import { notifyConsolidation } from "../jobs/notify-consolidation.js";
import { recalcQuality } from "../jobs/recalc-quality.js";
import { isReportKind, requestReport } from "../jobs/request-report.js";
import { runDemo } from "../jobs/run-demo.js";
import { saveDocument } from "../jobs/save-document.js";
import { suggestSummarization } from "../jobs/suggest-summarization.js";

/** What {@link createJobsService} is built from. */
export interface JobsServiceDeps extends JobDeps {
  readonly clock: Clock;
}

/**
 * JobsService over the jobs of `src/jobs/`: maps each request to its job's arguments, the call's
 * correlation id, trace context and abort signal to the job's call, and the job's answer to the
 * response. Requests arrive validated (the protos' field rules); the jobs' DomainErrors become
 * codes in the interceptor chain.
 */
export function createJobsService(deps: JobsServiceDeps): ServiceImpl<typeof JobsService> {
  return {
    async recalcQuality(_request, context) {
      const outcome = await recalcQuality(deps, jobCallOf(context));
      if (outcome.status === "skipped") return { status: "skipped", reason: outcome.reason };
      return {
        status: outcome.status,
        flagged: outcome.flagged,
        total: outcome.total,
        timestamp: timestampFromMs(outcome.timestamp),
      };
    },

    async notifyConsolidation(request, context) {
      return notifyConsolidation(deps, jobCallOf(context), {
        minConfidence: request.minConfidence,
        limit: request.limit,
        webhookUrl: request.webhookUrl,
      });
    },

    async saveToDocStore(request, context) {
      const saved = await saveDocument(deps, jobCallOf(context), {
        id: request.id,
        content: request.content,
        contentHash: request.contentHash,
        metadata: request.metadata,
      });
      return { status: saved.status, id: saved.id, result: protoValue(saved.result) };
    },

    async requestReport(request, context) {
      // Validation admits only the three kinds; this keeps the type honest.
      if (!isReportKind(request.kind)) throw new DomainError("invalid", "kind: unknown report");
      const { kind, report } = await requestReport(deps, jobCallOf(context), {
        kind: request.kind,
        format: request.format,
        payload: request.payload,
      });
      return { kind, report: protoValue(report) };
    },

    async suggestSummarization(request, context) {
      const summary = await suggestSummarization(deps, jobCallOf(context), {
        content: request.content,
        keywords: request.keywords,
        keywordDocument: request.keywordDocument,
        overridePolicy: request.overridePolicy,
      });
      return {
        suggestion: protoValue(summary.suggestion),
        result: protoValue(summary.result),
        policyOverride: summary.policyOverride,
        providersUsed: [...summary.providersUsed],
      };
    },

    async runDemo(request, context) {
      const bundle = await runDemo(deps, jobCallOf(context), {
        format: request.format,
        logService: request.logService,
        logLevel: request.logLevel,
        logLimit: request.logLimit,
      });
      return { summary: protoValue(bundle.summary), logAnalysis: protoValue(bundle.logAnalysis) };
    },
  };
}

/** The call a job runs on behalf of: its ids go to every service called, its end stops them. */
function jobCallOf(context: HandlerContext): JobCall {
  const meta = callMetaOf(context);
  return {
    correlationId: meta.correlationId,
    traceparent: traceparentOf(meta),
    signal: context.signal,
  };
}

/** A parsed JSON answer as a google.protobuf.Value. */
function protoValue(json: unknown): Value {
  return fromJson(ValueSchema, json as JsonValue);
}
