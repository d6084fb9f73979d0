import { Code, ConnectError } from "@connectrpc/connect";
import { quotedInput } from "../server/bounded-message.js";
import { HttpRefusal } from "./error-body.js";

// Only these texts can hold a key that would reach an object's prototype: "\u" covers a key
// spelled with escapes ("\u005f_proto__"), which JSON.parse decodes.
const mayHoldRefusedKey = /__proto__|constructor|\\u/;

/**
 * Parses a REST request body as JSON. Keys that reach an object's prototype are refused, as
 * fastify's own parser refuses them, but by name: `__proto__` anywhere, and `constructor` when
 * its value has a `prototype` (a map key that merely reads "constructor" is data).
 *
 * @param contentEncoding the request's `content-encoding`: bodies are read as sent, uncompressed.
 * @throws HttpRefusal 415 when the body is encoded (gzip, br, ...).
 * @throws ConnectError INVALID_ARGUMENT when the body is empty, is not JSON, or holds a refused
 * key, naming which.
 */
export function parseJsonBody(text: string, contentEncoding: string | undefined): unknown {
  if (contentEncoding !== undefined && contentEncoding.toLowerCase() !== "identity") {
    throw new HttpRefusal(
      415,
      Code.InvalidArgument,
      `unsupported content-encoding ${quotedInput(contentEncoding)}: send the JSON body uncompressed`,
    );
  }
  if (text === "") throw invalid("request body is empty: send a JSON object");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid("request body is not valid JSON");
  }
  const refused = mayHoldRefusedKey.test(text) ? refusedKeyIn(value) : undefined;
  if (refused !== undefined) {
    throw invalid(`request body has the key ${refused}, which is refused: it is not a field name`);
  }
  return value;
}

/** The first key, at any depth, that would reach an object's prototype if the value were merged. */
function refusedKeyIn(value: unknown): string | undefined {
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const node = pending.pop();
    if (typeof node !== "object" || node === null) continue;
    if (Object.hasOwn(node, "__proto__")) return "__proto__";
    const ctor = (node as { constructor?: unknown }).constructor;
    if (
      Object.hasOwn(node, "constructor") &&
      typeof ctor === "object" &&
      ctor !== null &&
      Object.hasOwn(ctor, "prototype")
    ) {
      return "constructor";
    }
    for (const child of Object.values(node)) pending.push(child);
  }
  return undefined;
}

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}
