import type { Piscina } from "piscina";
import { DomainError } from "../errors/domain-error.js";
import type { OpenApiBaseline } from "./model.js";
import type { OpenApiAnalysis, OpenApiAnalysisTask } from "./openapi-analysis.js";
import type { OpenApiWorkerReply } from "./openapi-worker.js";

/** Options of {@link createOpenApiAnalyzer}. */
export interface OpenApiAnalyzerOptions {
  /** Worker threads analysing documents at once; more documents wait their turn. Default: 1. */
  workers: number;
  /** Operations a document may have; a document with more is refused. Default: 10,000. */
  maxOperations: number;
  /**
   * Bytes a baseline may take as stored; a document whose summary is larger is refused.
   * Default: 1 MiB.
   */
  maxBaselineBytes: number;
  /**
   * How long an idle worker thread is kept, in ms; the next analysis starts a new one.
   * Default: 30,000.
   */
  idleTimeoutMs: number;
}

/** The defaults {@link createOpenApiAnalyzer} merges its options over. */
const openApiAnalyzerDefaults: Readonly<OpenApiAnalyzerOptions> = Object.freeze({
  workers: 1,
  maxOperations: 10_000,
  maxBaselineBytes: 1024 * 1024,
  idleTimeoutMs: 30_000,
});

/** One fetched document and the baseline to compare it with. */
export interface OpenApiAnalysisInput {
  /** The document as fetched. Its memory is handed to the worker: do not read it afterwards. */
  readonly body: Buffer;
  /** The response's content type; null when absent. */
  readonly contentType: string | null;
  /** The service's stored baseline, if any. */
  readonly baseline?: Pick<OpenApiBaseline, "hash" | "summary">;
}

/** Parses, summarises and diffs OpenAPI documents off the event loop. */
export interface OpenApiAnalyzer {
  /**
   * Analyses one document in a worker thread (see `analyzeOpenApi`). The event loop only moves
   * bytes: the body and the stored summary are handed over, and a small result comes back.
   * @throws DomainError "invalid" when the document is refused (unreadable, or over a bound),
   *   with a message safe to show; "unavailable" once closed; "internal" when the worker failed
   *   (the pool replaces a worker that died).
   */
  analyze(input: OpenApiAnalysisInput): Promise<OpenApiAnalysis>;
  /** Worker threads running now: none before the first analysis, nor after `close()`. */
  readonly threads: number;
  /** Stops every worker thread; analyses in flight reject with "unavailable". Idempotent. */
  close(): Promise<void>;
}

const workerFile = workerEntry();

/**
 * Creates the analyzer behind OpenAPI polls. Its worker threads start with the first analysis,
 * not before, and leave after `idleTimeoutMs` without work.
 * @throws RangeError when `workers`, `maxOperations` or `maxBaselineBytes` is not a positive
 *   integer.
 */
export function createOpenApiAnalyzer(
  options: Partial<OpenApiAnalyzerOptions> = {},
): OpenApiAnalyzer {
  const settings = Object.freeze({ ...openApiAnalyzerDefaults, ...options });
  for (const key of ["workers", "maxOperations", "maxBaselineBytes"] as const) {
    if (!Number.isInteger(settings[key]) || settings[key] < 1) {
      throw new RangeError(`${key} must be a positive integer`);
    }
  }
  const limits = {
    maxOperations: settings.maxOperations,
    maxBaselineBytes: settings.maxBaselineBytes,
  };
  type Pool = Piscina<OpenApiAnalysisTask, OpenApiWorkerReply>;
  // The pool, and piscina itself, come with the first analysis: a node may never make one.
  let starting: Promise<Pool> | undefined;
  let started: Pool | undefined;
  let closed = false;

  const start = async (): Promise<Pool> => {
    const { Piscina } = await import("piscina");
    started = new Piscina<OpenApiAnalysisTask, OpenApiWorkerReply>({
      filename: workerFile.url,
      ...(workerFile.execArgv ? { execArgv: workerFile.execArgv } : {}),
      minThreads: 0,
      maxThreads: settings.workers,
      idleTimeout: settings.idleTimeoutMs,
    });
    return started;
  };

  return {
    async analyze(input) {
      if (closed) throw shutDown();
      starting ??= start();
      const pool = await starting;
      if (closed) throw shutDown();
      const body = ownedBytes(input.body);
      const summary = input.baseline && ownedBytes(input.baseline.summary);
      const task: OpenApiAnalysisTask = {
        body,
        contentType: input.contentType,
        baseline: input.baseline && summary ? { hash: input.baseline.hash, summary } : undefined,
        limits,
      };
      let reply: OpenApiWorkerReply;
      try {
        reply = await pool.run(task, {
          transferList: summary ? [body.buffer, summary.buffer] : [body.buffer],
        });
      } catch (error) {
        throw closed
          ? shutDown()
          : new DomainError("internal", "OpenAPI analysis failed", { cause: error });
      }
      if ("refused" in reply) throw new DomainError("invalid", reply.refused);
      return reply.analysis;
    },
    get threads() {
      return started?.threads.length ?? 0;
    },
    async close() {
      closed = true;
      // A pool still starting is destroyed once started: its analyses then reject as closed.
      await (await starting)?.destroy();
    },
  };
}

/**
 * Bytes the event loop can hand to the worker without copying: the view itself when it spans its
 * own ArrayBuffer (a fetched body does), else a copy (a small Buffer may sit in Node's shared
 * pool, which must not be transferred; a Redis reply may be a slice of a larger one).
 */
function ownedBytes(view: Uint8Array): Uint8Array<ArrayBuffer> {
  const { buffer } = view;
  if (
    buffer instanceof ArrayBuffer &&
    view.byteOffset === 0 &&
    view.byteLength === buffer.byteLength
  ) {
    return view as Uint8Array<ArrayBuffer>;
  }
  return new Uint8Array(view);
}

function shutDown(): DomainError {
  return new DomainError("unavailable", "shutting down");
}

/**
 * The worker's module, beside this one. Running from TypeScript sources (tests, `tsx`), the worker
 * needs the same loader: `--import tsx`, named by its resolved URL so that it does not depend on
 * the working directory. Compiled (`dist/`), it is plain JavaScript and inherits the process's
 * options.
 */
function workerEntry(): { url: string; execArgv?: string[] } {
  const fromSource = import.meta.url.endsWith(".ts");
  const url = new URL(`./openapi-worker.${fromSource ? "ts" : "js"}`, import.meta.url).href;
  return fromSource ? { url, execArgv: ["--import", import.meta.resolve("tsx")] } : { url };
}
