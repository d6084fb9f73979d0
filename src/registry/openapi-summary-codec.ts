import { brotliCompressSync, brotliDecompressSync, constants } from "node:zlib";
import type { OpenApiSummary } from "./openapi.js";

/**
 * The stored form of a summary's operations: this magic, then the Brotli-compressed JSON of the
 * operations (`"METHOD /path"` → canonical contract). Summaries are highly repetitive: GitHub's
 * REST API (1,223 operations, 4.7 MB of summary JSON) compresses to 66 KB, the 85,000-operation
 * document of issue 7 (6.8 MB) to 105 KB.
 */
const magic = Buffer.from("OAS1");

/** Brotli quality 5: within a few percent of the best ratio at a tenth of its time. */
const quality = 5;

/**
 * What a stored summary may inflate to. Far above any summary the summary budgets let through
 * (a few MB), it only stops a corrupted or forged value from exhausting the worker's memory.
 */
const maxInflatedBytes = 256 * 1024 * 1024;

/** Encodes the operations of a summary for a baseline. Runs in the analysis worker. */
export function encodeSummary(operations: OpenApiSummary["operations"]): Uint8Array {
  const json = Buffer.from(JSON.stringify(operations));
  const compressed = brotliCompressSync(json, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: quality,
      [constants.BROTLI_PARAM_SIZE_HINT]: json.length,
    },
  });
  return Buffer.concat([magic, compressed]);
}

/**
 * Decodes what {@link encodeSummary} wrote; undefined for anything else (a corrupted value, or
 * one written by another version), which the caller treats as no baseline at all.
 */
export function decodeSummary(bytes: Uint8Array): OpenApiSummary["operations"] | undefined {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buffer.length < magic.length || !buffer.subarray(0, magic.length).equals(magic)) {
    return undefined;
  }
  let value: unknown;
  try {
    const json = brotliDecompressSync(buffer.subarray(magic.length), {
      maxOutputLength: maxInflatedBytes,
    });
    value = JSON.parse(json.toString("utf8"));
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  for (const contract of Object.values(value)) if (typeof contract !== "string") return undefined;
  return value as OpenApiSummary["operations"];
}
