import {
  create,
  type DescField,
  type DescMessage,
  getOption,
  hasOption,
  type Message,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";
import {
  isReflectMessage,
  type ReflectList,
  type ReflectMap,
  type ReflectMessage,
  reflect,
} from "@bufbuild/protobuf/reflect";
import {
  type FieldRules,
  FieldRulesSchema,
  field as fieldRulesOption,
} from "../../gen/orchestrator/v1/options_pb.js";

/** One broken rule: where it is, and what the value must be. Never carries the value itself. */
export interface FieldViolation {
  /** Path of proto field names: `name`, `tags[2]`, `metadata["env"]`, `metadata[…]`, `parent.child`. */
  field: string;
  /** What the value must be, e.g. "is required" or "must be at most 100 characters". */
  description: string;
}

/** Checks one message against its rules; returns the violations in field order, empty when valid. */
export type MessageValidator = (message: Message) => FieldViolation[];

/**
 * Compiles the `(orchestrator.v1.field)` rules of `schema` and of the messages it nests into one
 * validator, once, so that a request pays only for the rules it has. Returns `undefined` when no
 * field of the message or of its nested messages carries rules. Well-known types
 * (`google.protobuf.*`) are not descended into; recursive schemas are compiled once.
 *
 * At most one violation is reported per value (the first rule it breaks, in the order required,
 * length, pattern, URL, `in`, bounds, size), and the elements of a list or map that has too many
 * items are not checked, so that an oversized request costs no more than its first failure.
 *
 * @throws Error when a rule does not apply to its field's type, or a pattern is not a valid
 * ECMAScript regular expression: a mistake in the protos, reported at startup.
 */
export function compileValidator(schema: DescMessage): MessageValidator | undefined {
  const root = createCompiler().compileMessage(schema);
  if (root === undefined) return undefined;
  return (message) => {
    const violations: FieldViolation[] = [];
    // Validation only reads, so reflect's write-time checks would be pure overhead.
    checkMessage(root, reflect(schema, message, false), "", violations);
    return violations;
  };
}

/** Checks one field of a message, appending its violations; `prefix` is the message's own path. */
type FieldCheck = (message: ReflectMessage, prefix: string, out: FieldViolation[]) => void;

/** A message's field checks; filled after creation, so that recursive schemas can refer to it. */
interface CompiledMessage {
  readonly checks: FieldCheck[];
}

/** Checks one value (a singular field, list element, map key or map value) against its rules. */
type ValueCheck = (value: unknown) => string | undefined;

/** What a rule looks at; reflection gives 64-bit integers as bigint and messages as ReflectMessage. */
type ValueType = "string" | "bytes" | "number" | "bool" | "message";

function checkMessage(
  compiled: CompiledMessage,
  message: ReflectMessage,
  prefix: string,
  out: FieldViolation[],
): void {
  for (const check of compiled.checks) check(message, prefix, out);
}

function createCompiler() {
  const compiled = new Map<DescMessage, CompiledMessage>();
  const reachesRulesMemo = new Map<DescMessage, boolean>();

  function reachesRules(schema: DescMessage): boolean {
    let reaches = reachesRulesMemo.get(schema);
    if (reaches === undefined) {
      reaches = searchRules(schema, new Set());
      reachesRulesMemo.set(schema, reaches);
    }
    return reaches;
  }

  function compileMessage(schema: DescMessage): CompiledMessage | undefined {
    if (!reachesRules(schema)) return undefined;
    const known = compiled.get(schema);
    if (known !== undefined) return known;
    const entry: CompiledMessage = { checks: [] };
    compiled.set(schema, entry);
    for (const field of schema.fields) {
      const check = compileField(field, rulesOf(field), nestedOf(field));
      if (check !== undefined) entry.checks.push(check);
    }
    return entry;
  }

  function nestedOf(field: DescField): CompiledMessage | undefined {
    const nested = field.message;
    return nested === undefined || isWellKnown(nested) ? undefined : compileMessage(nested);
  }

  return { compileMessage };
}

/** True when `schema` or a message reachable from it has a field with rules. */
function searchRules(schema: DescMessage, seen: Set<DescMessage>): boolean {
  if (isWellKnown(schema) || seen.has(schema)) return false;
  seen.add(schema);
  return schema.fields.some(
    (field) =>
      hasOption(field, fieldRulesOption) ||
      (field.message !== undefined && searchRules(field.message, seen)),
  );
}

function isWellKnown(schema: DescMessage): boolean {
  return schema.typeName.startsWith("google.protobuf.");
}

function rulesOf(field: DescField): FieldRules | undefined {
  return hasOption(field, fieldRulesOption) ? getOption(field, fieldRulesOption) : undefined;
}

function compileField(
  field: DescField,
  rules: FieldRules | undefined,
  nested: CompiledMessage | undefined,
): FieldCheck | undefined {
  if (rules === undefined && nested === undefined) return undefined;
  const where = `${field.parent.typeName}.${field.name}`;
  const fieldRules = rules ?? noRules;
  switch (field.fieldKind) {
    case "list":
      return compileList(field, fieldRules, nested, where);
    case "map":
      return compileMap(field, fieldRules, nested, where);
    case "message":
      demandNoRepeatedRules(fieldRules, where);
      return compileSingularMessage(field, fieldRules, nested, where);
    default:
      demandNoRepeatedRules(fieldRules, where);
      return compileSingularScalar(field, fieldRules, valueTypeOf(field), where);
  }
}

// Stands in for a field that has no rules of its own but nests messages that do.
const noRules: FieldRules = create(FieldRulesSchema);

function compileSingularScalar(
  field: DescField,
  rules: FieldRules,
  type: ValueType,
  where: string,
): FieldCheck {
  const checks = compileValueChecks(rules, type, where);
  const { name } = field;
  return (message, prefix, out) => {
    const value = message.get(field);
    if (isZero(value)) {
      if (rules.required) {
        report(out, prefix, name, "is required");
        return;
      }
      // Proto3 strings have no presence: empty means unset, which only `required` forbids.
      if (type === "string") return;
    }
    const failure = firstFailure(checks, value);
    if (failure !== undefined) report(out, prefix, name, failure);
  };
}

function compileSingularMessage(
  field: DescField & { fieldKind: "message" },
  rules: FieldRules,
  nested: CompiledMessage | undefined,
  where: string,
): FieldCheck {
  const checks = compileValueChecks(rules, "message", where);
  const { name } = field;
  return (message, prefix, out) => {
    if (!message.isSet(field)) {
      if (rules.required) report(out, prefix, name, "is required");
      return;
    }
    const value = message.get(field);
    const failure = firstFailure(checks, value);
    if (failure !== undefined) {
      report(out, prefix, name, failure);
    } else if (nested !== undefined) {
      checkMessage(nested, value, join(prefix, name), out);
    }
  };
}

function compileList(
  field: DescField & { fieldKind: "list" },
  rules: FieldRules,
  nested: CompiledMessage | undefined,
  where: string,
): FieldCheck {
  demand(rules.keys === undefined, where, "keys", "a repeated field");
  const itemChecks = compileElementChecks(rules.items, valueTypeOf(field), `${where} items`);
  const { name } = field;
  const hasElementChecks = itemChecks.length > 0 || nested !== undefined;
  return (message, prefix, out) => {
    const list: ReflectList = message.get(field);
    if (!checkCount(list.size, rules, out, prefix, name) || !hasElementChecks) return;
    const path = join(prefix, name);
    let index = 0;
    for (const item of list) {
      checkElement(item, itemChecks, nested, () => `${path}[${index}]`, "", out);
      index++;
    }
  };
}

function compileMap(
  field: DescField & { fieldKind: "map" },
  rules: FieldRules,
  nested: CompiledMessage | undefined,
  where: string,
): FieldCheck {
  const keyType = scalarValueType(field.mapKey);
  const valueType = field.mapKind === "message" ? "message" : valueTypeOf(field);
  const keyChecks = compileElementChecks(rules.keys, keyType, `${where} keys`);
  const valueChecks = compileElementChecks(rules.items, valueType, `${where} items`);
  const { name } = field;
  const hasElementChecks = keyChecks.length > 0 || valueChecks.length > 0 || nested !== undefined;
  return (message, prefix, out) => {
    const map: ReflectMap = message.get(field);
    if (!checkCount(map.size, rules, out, prefix, name) || !hasElementChecks) return;
    const path = join(prefix, name);
    for (const [key, value] of map) {
      const keyPath = () => `${path}${mapKeySegment(key)}`;
      checkElement(key, keyChecks, undefined, keyPath, "key ", out);
      checkElement(value, valueChecks, nested, keyPath, "", out);
    }
  };
}

/** Applies `required` and `max_items` to a list or map; false when its elements need no look. */
function checkCount(
  size: number,
  rules: FieldRules,
  out: FieldViolation[],
  prefix: string,
  name: string,
): boolean {
  if (size === 0) {
    if (rules.required) report(out, prefix, name, "is required");
    return false;
  }
  if (rules.maxItems !== undefined && size > rules.maxItems) {
    report(out, prefix, name, `must have at most ${rules.maxItems} items`);
    return false;
  }
  return true;
}

// The path is built only on failure or descent: valid elements cost no string work.
function checkElement(
  value: unknown,
  checks: readonly ValueCheck[],
  nested: CompiledMessage | undefined,
  path: () => string,
  descriptionPrefix: string,
  out: FieldViolation[],
): void {
  const failure = firstFailure(checks, value);
  if (failure !== undefined) {
    out.push({ field: path(), description: descriptionPrefix + failure });
  } else if (nested !== undefined && isReflectMessage(value)) {
    checkMessage(nested, value, path(), out);
  }
}

/** Rules of list elements and map keys or values: unlike singular fields, empty values count. */
function compileElementChecks(
  rules: FieldRules | undefined,
  type: ValueType,
  where: string,
): ValueCheck[] {
  if (rules === undefined) return [];
  demandNoRepeatedRules(rules, where);
  const checks = compileValueChecks(rules, type, where);
  if (rules.required) {
    demand(type !== "message", where, "required", "message items");
    checks.unshift((value) => (isZero(value) ? "is required" : undefined));
  }
  return checks;
}

function compileValueChecks(rules: FieldRules, type: ValueType, where: string): ValueCheck[] {
  return [
    ...compileStringChecks(rules, type, where),
    ...compileNumberChecks(rules, type, where),
    ...compileSizeChecks(rules, type, where),
  ];
}

function compileStringChecks(rules: FieldRules, type: ValueType, where: string): ValueCheck[] {
  const isString = type === "string";
  const checks: ValueCheck[] = [];
  const { maxLen, minLen, pattern, httpUrl } = rules;
  if (maxLen !== undefined) {
    demand(isString, where, "max_len", type);
    checks.push(
      stringCheck((v) => exceedsCodePoints(v, maxLen), `must be at most ${maxLen} characters`),
    );
  }
  if (minLen !== undefined) {
    demand(isString, where, "min_len", type);
    checks.push(
      stringCheck(
        (v) => fallsShortOfCodePoints(v, minLen),
        `must be at least ${minLen} characters`,
      ),
    );
  }
  if (pattern !== "") {
    demand(isString, where, "pattern", type);
    const regexp = compilePattern(pattern, where);
    checks.push(stringCheck((v) => !regexp.test(v), `must match ${pattern}`));
  }
  if (httpUrl) {
    demand(isString, where, "http_url", type);
    checks.push(stringCheck((v) => !isHttpUrl(v), "must be an absolute http or https URL"));
  }
  if (rules.in.length > 0) {
    demand(isString, where, "in", type);
    const allowed = new Set(rules.in);
    checks.push(stringCheck((v) => !allowed.has(v), `must be one of: ${rules.in.join(", ")}`));
  }
  return checks;
}

function compileNumberChecks(rules: FieldRules, type: ValueType, where: string): ValueCheck[] {
  const checks: ValueCheck[] = [];
  const { gte, lte } = rules;
  // Negated comparisons so that NaN breaks a bound; number and bigint compare exactly in ECMAScript.
  if (gte !== undefined) {
    demand(type === "number", where, "gte", type);
    checks.push(numberCheck((v) => !(v >= gte), `must be ≥ ${gte}`));
  }
  if (lte !== undefined) {
    demand(type === "number", where, "lte", type);
    checks.push(numberCheck((v) => !(v <= lte), `must be ≤ ${lte}`));
  }
  return checks;
}

function compileSizeChecks(rules: FieldRules, type: ValueType, where: string): ValueCheck[] {
  const { maxBytes } = rules;
  if (maxBytes === undefined) return [];
  demand(type === "message", where, "max_bytes", type);
  // Through reflection a Struct field is a real message (its property holds a JSON object).
  const exceeds = (value: unknown) =>
    isReflectMessage(value) && toBinary(value.desc, value.message).length > maxBytes;
  return [(value) => (exceeds(value) ? `must be at most ${maxBytes} bytes` : undefined)];
}

function stringCheck(fails: (value: string) => boolean, description: string): ValueCheck {
  return (value) => (typeof value === "string" && fails(value) ? description : undefined);
}

function numberCheck(fails: (value: number | bigint) => boolean, description: string): ValueCheck {
  return (value) =>
    (typeof value === "number" || typeof value === "bigint") && fails(value)
      ? description
      : undefined;
}

function firstFailure(checks: readonly ValueCheck[], value: unknown): string | undefined {
  for (const check of checks) {
    const failure = check(value);
    if (failure !== undefined) return failure;
  }
  return undefined;
}

function compilePattern(pattern: string, where: string): RegExp {
  try {
    return new RegExp(pattern, "u");
  } catch (cause) {
    throw new Error(`${where}: invalid pattern ${pattern}`, { cause });
  }
}

function demand(applies: boolean, where: string, rule: string, target: string): void {
  if (!applies) throw new Error(`${where}: rule ${rule} does not apply to ${target}`);
}

/** `max_items`, `items` and `keys` only make sense on the repeated field itself. */
function demandNoRepeatedRules(rules: FieldRules, where: string): void {
  demand(rules.maxItems === undefined, where, "max_items", "a singular value");
  demand(rules.items === undefined, where, "items", "a singular value");
  demand(rules.keys === undefined, where, "keys", "a singular value");
}

function valueTypeOf(field: DescField): ValueType {
  if (field.enum !== undefined) return "number";
  return field.scalar === undefined ? "message" : scalarValueType(field.scalar);
}

function scalarValueType(scalar: ScalarType): ValueType {
  switch (scalar) {
    case ScalarType.STRING:
      return "string";
    case ScalarType.BYTES:
      return "bytes";
    case ScalarType.BOOL:
      return "bool";
    default:
      return "number";
  }
}

function isZero(value: unknown): boolean {
  if (value instanceof Uint8Array) return value.length === 0;
  return value === "" || value === 0 || value === 0n || value === false;
}

/** Code points of `value` exceed `max`; the UTF-16 length bounds them, so long strings are cheap. */
function exceedsCodePoints(value: string, max: number): boolean {
  return value.length > max && codePointLength(value) > max;
}

/** Code points of `value` fall short of `min`; a string of 2·min UTF-16 units always has enough. */
function fallsShortOfCodePoints(value: string, min: number): boolean {
  return value.length < min || (value.length < 2 * min && codePointLength(value) < min);
}

function codePointLength(value: string): number {
  let pairs = 0;
  for (let i = 0; i < value.length - 1; i++) {
    if (isHighSurrogate(value.charCodeAt(i)) && isLowSurrogate(value.charCodeAt(i + 1))) {
      pairs++;
      i++;
    }
  }
  return value.length - pairs;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}

function isHttpUrl(value: string): boolean {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  return (
    (url.protocol === "http:" || url.protocol === "https:") &&
    url.hostname !== "" &&
    url.username === "" &&
    url.password === ""
  );
}

// Keys are caller input: shown only when short and made of characters safe in any log or header.
const safeMapKey = /^[A-Za-z0-9._-]{0,64}$/;

function mapKeySegment(key: unknown): string {
  if (typeof key !== "string") return `[${String(key)}]`;
  return safeMapKey.test(key) ? `["${key}"]` : "[…]";
}

function join(prefix: string, name: string): string {
  return prefix === "" ? name : `${prefix}.${name}`;
}

function report(out: FieldViolation[], prefix: string, name: string, description: string): void {
  out.push({ field: join(prefix, name), description });
}
