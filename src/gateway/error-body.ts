import {
  create,
  type DescMessage,
  type JsonObject,
  type JsonValue,
  toJson,
} from "@bufbuild/protobuf";
import { Code, type ConnectError } from "@connectrpc/connect";
import { jsonWriteOptions } from "../encoding/message-encoding.js";
import { boundedMessage } from "../server/bounded-message.js";
import { codeName, httpStatusOfCode } from "./http-status.js";

/** The JSON body of every REST error: `{code, message, details}`. */
export interface ErrorResponse {
  readonly status: number;
  /** Headers the status calls for: `WWW-Authenticate: Bearer` on a 401 (RFC 6750). */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: JsonObject;
}

const bearerChallenge = Object.freeze({ "www-authenticate": "Bearer" });
const noHeaders = Object.freeze({});

/**
 * Renders a ConnectError for HTTP: the status from the one code table, a bounded message, and each
 * detail as JSON with its "@type". An RPC may fail with a detail of its own response type (readiness
 * does, with the failing checks): that response's fields are then also in the body, so that a 503
 * from GET /ready still says `ready` and `checks`.
 */
export function errorResponseOf(error: ConnectError, output?: DescMessage): ErrorResponse {
  const body: JsonObject = {};
  const details: JsonValue[] = [];
  for (const detail of error.details) {
    if (!("desc" in detail)) {
      details.push({
        "@type": `type.googleapis.com/${detail.type}`,
        value: Buffer.from(detail.value).toString("base64"),
      });
      continue;
    }
    const json = toJson(
      detail.desc,
      create(detail.desc, detail.value),
      jsonWriteOptions,
    ) as JsonObject;
    if (output !== undefined && detail.desc.typeName === output.typeName) Object.assign(body, json);
    details.push({ "@type": `type.googleapis.com/${detail.desc.typeName}`, ...json });
  }
  body.code = codeName(error.code);
  body.message = boundedMessage(error.rawMessage);
  body.details = details;
  const status = httpStatusOfCode[error.code] ?? httpStatusOfCode[Code.Internal];
  return { status, headers: headersOf(status, error), body };
}

/** The challenge of a 401 (RFC 6750), and the Retry-After a rate limit sets on its error. */
function headersOf(status: number, error: ConnectError): Readonly<Record<string, string>> {
  if (status === 401) return bearerChallenge;
  const retryAfter = error.metadata.get("retry-after");
  return retryAfter === null ? noHeaders : { "retry-after": retryAfter };
}

/**
 * A request the HTTP edge refuses itself, before any RPC runs: a URL it cannot route, a body it
 * cannot read (unsupported media type or encoding, too large), a method a route does not take.
 * It has an HTTP status of its own (413, 414, 415, 405...) beside the code its error body names.
 * Its message is written for the caller and quotes input only through `quotedInput`.
 */
export class HttpRefusal extends Error {
  override readonly name = "HttpRefusal";

  constructor(
    readonly status: number,
    readonly code: Code,
    message: string,
  ) {
    super(message);
  }
}

/** Renders an {@link HttpRefusal} as every REST error is rendered: `{code, message, details}`. */
export function refusalResponseOf(refusal: HttpRefusal): ErrorResponse {
  return {
    status: refusal.status,
    headers: noHeaders,
    body: { code: codeName(refusal.code), message: boundedMessage(refusal.message), details: [] },
  };
}
