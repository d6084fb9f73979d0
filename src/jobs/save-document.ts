import { createHash } from "node:crypto";
import { DomainError } from "../errors/domain-error.js";
import {
  callDownstream,
  isJsonObject,
  type JobCall,
  type JobDeps,
  resolveTarget,
} from "./downstream-call.js";

/** A document to save, as {@link saveDocument} takes it. */
export interface DocumentToSave {
  /** Empty: the doc store chooses. */
  readonly id: string;
  readonly content: string;
  /** The sha256 of content in lowercase hex, or empty. */
  readonly contentHash: string;
  readonly metadata?: Readonly<Record<string, unknown>> | undefined;
}

/** A save the doc store acknowledged. */
export interface SavedDocument {
  readonly status: "saved";
  /** The doc store's id when it answered one, else the request's. */
  readonly id: string;
  /** The doc store's answer. */
  readonly result: unknown;
}

/**
 * Saves a document: `POST {doc-store}/documents {id, content, content_hash, metadata}`, with the
 * id (or, without one, the content's sha256) as Idempotency-Key, so the client's retries cannot
 * save twice. Answers only after a 2xx: a timeout or a failure never reads as saved.
 * @throws DomainError "invalid" naming content_hash when it is not the sha256 of content;
 *   "unavailable" naming the setting when no doc store is set up; "timeout" when the doc store
 *   does not answer in time; "unavailable" for its 5xx or an unreadable answer;
 *   "failed_precondition" for its other non-2xx answers.
 */
export async function saveDocument(
  deps: JobDeps,
  call: JobCall,
  document: DocumentToSave,
): Promise<SavedDocument> {
  const hash = createHash("sha256").update(document.content, "utf8").digest("hex");
  if (document.contentHash !== "" && document.contentHash !== hash) {
    throw new DomainError("invalid", "content_hash: is not the sha256 of content");
  }
  const target = docStore(deps);
  const result = await callDownstream(deps, call, {
    target,
    method: "POST",
    path: "/documents",
    json: {
      ...(document.id === "" ? {} : { id: document.id }),
      content: document.content,
      content_hash: hash,
      metadata: document.metadata ?? {},
    },
    idempotencyKey: document.id === "" ? hash : document.id,
    answer: "save receipt",
  });
  const answeredId = isJsonObject(result) && typeof result.id === "string" ? result.id : "";
  return { status: "saved", id: answeredId || document.id, result };
}

/**
 * The doc store, or UNAVAILABLE: a save cannot be skipped the way a scheduled job can, and the
 * client should retry once the doc store is set up.
 */
function docStore(deps: JobDeps) {
  try {
    return resolveTarget(deps, "doc-store");
  } catch (error) {
    if (error instanceof DomainError && error.kind === "failed_precondition") {
      throw new DomainError("unavailable", error.message, { cause: error });
    }
    throw error;
  }
}
