/**
 * How much of a span the trace store keeps, whoever recorded it: strings are cut (never refused)
 * and attributes past the first `attributes` are dropped, as OpenTelemetry's span limits do, so
 * that one span costs at most about 20 KiB whatever a sender puts in it.
 */
export const spanLimits = Object.freeze({
  /** Characters of a span's name. */
  name: 256,
  /** Characters of the service name. */
  service: 128,
  /** Attributes kept per span. */
  attributes: 32,
  /** Characters of an attribute key. */
  attributeKey: 128,
  /** Characters of an attribute value (as text). */
  attributeValue: 512,
  /** Characters of a status message. */
  statusMessage: 512,
});

/** `text` cut to `max` characters (UTF-16 units; a split surrogate pair is dropped whole). */
export function cut(text: string, max: number): string {
  if (text.length <= max) return text;
  const end = isHighSurrogate(text.charCodeAt(max - 1)) ? max - 1 : max;
  return text.slice(0, end);
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

/**
 * Attributes as the store keeps them: at most `spanLimits.attributes`, keys and values cut,
 * values as text (arrays and objects as JSON). Undefined and null values are skipped.
 */
export function attributesOf(
  entries: Iterable<readonly [string, unknown]>,
): Record<string, string> {
  // No prototype: a key such as "__proto__" is an attribute like any other.
  const kept = Object.create(null) as Record<string, string>;
  let count = 0;
  for (const [key, value] of entries) {
    if (value === undefined || value === null) continue;
    if (count === spanLimits.attributes) break;
    const text = typeof value === "string" ? value : textOf(value);
    kept[cut(key, spanLimits.attributeKey)] = cut(text, spanLimits.attributeValue);
    count++;
  }
  return kept;
}

function textOf(value: unknown): string {
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") {
    return String(value);
  }
  try {
    return JSON.stringify(value, (_key, v: unknown) => (typeof v === "bigint" ? String(v) : v));
  } catch {
    return String(value);
  }
}
