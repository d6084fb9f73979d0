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
  const kept: Record<string, string> = {};
  let count = 0;
  for (const [key, value] of entries) {
    if (count === spanLimits.attributes) break;
    if (put(kept, key, value)) count++;
  }
  return kept;
}

/** {@link attributesOf} an object's own properties, without an array per entry. */
export function attributesOfObject(
  object: Readonly<Record<string, unknown>>,
): Record<string, string> {
  const kept: Record<string, string> = {};
  let count = 0;
  for (const key in object) {
    if (count === spanLimits.attributes) break;
    if (Object.hasOwn(object, key) && put(kept, key, object[key])) count++;
  }
  return kept;
}

/** Puts one attribute, cut to the limits; false when its value is undefined or null. */
function put(kept: Record<string, string>, key: string, value: unknown): boolean {
  if (value === undefined || value === null) return false;
  const name = cut(key, spanLimits.attributeKey);
  const text = cut(typeof value === "string" ? value : textOf(value), spanLimits.attributeValue);
  // A plain object keeps one V8 shape for spans with the same keys (a prototype-less dictionary
  // would not); "__proto__" is defined as an own property like any other key.
  if (name === "__proto__") {
    Object.defineProperty(kept, name, { value: text, enumerable: true, writable: true });
  } else kept[name] = text;
  return true;
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
