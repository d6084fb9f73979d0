import { maxHeaderSize, STATUS_CODES } from "node:http";
import { Code } from "@connectrpc/connect";
import type { FastifyError } from "fastify";
import { HttpRefusal } from "../gateway/error-body.js";

/**
 * What a client is told about an error fastify raised on its request (its router, its body
 * reading, its content-type parsers): an {@link HttpRefusal} with the status fastify chose and a
 * message of ours. fastify's own messages repeat the input (the whole path, the media type), so
 * none of them is ever sent. Returns undefined for an error of the server's own (status 500 and
 * above), which the caller logs and hides.
 */
export function refusalOfFastifyError(
  error: FastifyError,
  limits: { readonly bodyLimitBytes: number; readonly maxParamLength: number },
): HttpRefusal | undefined {
  const status = error.statusCode ?? 500;
  if (status >= 500) return undefined;
  switch (error.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new HttpRefusal(
        413,
        Code.ResourceExhausted,
        `request body exceeds the limit of ${limits.bodyLimitBytes} bytes`,
      );
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new HttpRefusal(
        415,
        Code.InvalidArgument,
        "unsupported content type: send application/json",
      );
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return new HttpRefusal(
        400,
        Code.InvalidArgument,
        "request body does not match its content-length",
      );
    case "FST_ERR_BAD_URL":
      return new HttpRefusal(
        400,
        Code.InvalidArgument,
        "the path is not valid: a % must start a percent-encoded UTF-8 byte (%XX)",
      );
    case "FST_ERR_MAX_PARAM_LENGTH":
      return new HttpRefusal(
        414,
        Code.InvalidArgument,
        `a path segment is longer than ${limits.maxParamLength} characters`,
      );
    default:
      return new HttpRefusal(status, Code.InvalidArgument, reasonOf(status));
  }
}

function reasonOf(status: number): string {
  return `request refused: ${STATUS_CODES[status] ?? "client error"}`.toLowerCase();
}

/**
 * What a client is told when Node's HTTP/1.1 parser cannot read its request (a request head over
 * Node's limit, a malformed request line or header, headers that never finish), before any
 * route or fastify sees it: the status Node itself would send, with a message of ours. Node's
 * own answer has an empty body; every refusal of the port has `{code, message, details}`.
 *
 * @param code the parser's error code, e.g. `HPE_HEADER_OVERFLOW`.
 */
export function refusalOfParserError(code: string | undefined): HttpRefusal {
  switch (code) {
    case "HPE_HEADER_OVERFLOW":
      return new HttpRefusal(
        431,
        Code.ResourceExhausted,
        `the request line and headers exceed the limit of ${maxHeaderSize} bytes`,
      );
    case "HPE_CHUNK_EXTENSIONS_OVERFLOW":
      return new HttpRefusal(413, Code.ResourceExhausted, "chunk extensions are too large");
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return new HttpRefusal(408, Code.DeadlineExceeded, "the request was not received in time");
    default:
      return new HttpRefusal(400, Code.InvalidArgument, "malformed HTTP request");
  }
}
