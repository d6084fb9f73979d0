import { createHash } from "node:crypto";
import { parse as parseYaml } from "yaml";
import { DomainError } from "../errors/domain-error.js";

/** A parsed OpenAPI 3.x or Swagger 2.0 document, checked only as far as summarising needs. */
export interface OpenApiDocument {
  readonly openapi?: unknown;
  readonly swagger?: unknown;
  readonly paths: Readonly<Record<string, unknown>>;
  readonly [key: string]: unknown;
}

/** What a poll keeps of a document: see {@link summarizeOpenApi}. */
export interface OpenApiSummary {
  /** sha256 (hex) of the canonical JSON of the whole document. */
  readonly hash: string;
  /** Canonical JSON of each operation's contract, keyed "METHOD /path". */
  readonly operations: Readonly<Record<string, string>>;
}

/**
 * How the operations of two summaries differ. Lists are sorted and hold at most
 * {@link maxDiffListed} operations each (the first ones); the counts say how many there are in all,
 * so that a diff of a huge document stays small.
 */
export interface OpenApiDiff {
  readonly added: readonly string[];
  readonly removed: readonly string[];
  readonly changed: readonly string[];
  readonly addedCount: number;
  readonly removedCount: number;
  readonly changedCount: number;
  /** True when some client of the old contract may break; see {@link diffOpenApi}. */
  readonly breaking: boolean;
  /** One line per breaking change found, "METHOD /path: what", at most 100. */
  readonly breakingReasons: readonly string[];
}

/** Operations named per list of an {@link OpenApiDiff}. */
export const maxDiffListed = 100;

/** Options of {@link summarizeOpenApi}. */
export interface SummaryOptions {
  /** Operations a document may have; more are refused before any is summarised. Default: none. */
  readonly maxOperations?: number;
}

/** Deeper documents are refused: real ones nest a few dozen levels, and recursion needs a bound. */
const maxDocumentDepth = 64;
/** YAML aliases resolved per document; a handful is normal, thousands is a billion-laughs bomb. */
const maxAliasCount = 100;
/** Summary nodes per document; refs expanded at every use could otherwise grow exponentially. */
const maxSummaryNodes = 250_000;
/** Schema nesting kept in a summary; deeper levels become `{ truncated: true }`. */
const maxSchemaDepth = 32;
/** `$ref`s followed one inside another in a schema; deeper ones stay `{ $ref }` markers. */
const maxRefDepth = 4;
/** `$ref` hops followed to reach a parameter, response, request body or path item. */
const maxRefHops = 8;
const maxBreakingReasons = 100;

const httpMethods = ["get", "put", "post", "delete", "patch", "head", "options", "trace"] as const;

type JsonObject = { readonly [key: string]: unknown };

/**
 * Parses an OpenAPI document: as JSON when it parses as JSON (or `contentType` says JSON), as
 * YAML otherwise. YAML aliases are limited (against alias bombs) and so is nesting.
 * @throws DomainError "invalid" when the body is not UTF-8, not JSON/YAML, nests too deep, or is
 *   not an object with `openapi` 3.x or `swagger` 2.0 and a `paths` object. Messages never quote
 *   the document.
 */
export function parseOpenApiDocument(body: Buffer, contentType: string | null): OpenApiDocument {
  const value = parseText(decodeUtf8(body), contentType !== null && /json/i.test(contentType));
  checkDepth(value);
  if (!isObject(value)) throw invalid("OpenAPI document is not an object");
  if (!isSupportedVersion(value)) {
    throw invalid("not an OpenAPI 3.x or Swagger 2.0 document (no openapi or swagger version)");
  }
  if (!isObject(value.paths)) throw invalid("OpenAPI document has no paths object");
  return value as OpenApiDocument;
}

function decodeUtf8(body: Buffer): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(body);
  } catch (error) {
    throw invalid("OpenAPI document is not UTF-8 text", error);
  }
}

function parseText(text: string, saysJson: boolean): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    if (saysJson) throw invalid("OpenAPI document is not valid JSON", error);
  }
  try {
    // logLevel "error": a hostile document must not be able to emit process warnings.
    return parseYaml(text, { maxAliasCount, logLevel: "error" });
  } catch (error) {
    throw invalid("OpenAPI document is neither JSON nor YAML", error);
  }
}

/** Iterative, so that the check itself cannot overflow the stack; also stops YAML alias cycles. */
function checkDepth(value: unknown): void {
  const stack: [unknown, number][] = [[value, 1]];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const [node, depth] = next;
    if (typeof node !== "object" || node === null) continue;
    if (depth > maxDocumentDepth) {
      throw invalid(`OpenAPI document nests deeper than ${maxDocumentDepth} levels`);
    }
    for (const child of Object.values(node)) stack.push([child, depth + 1]);
  }
}

function isSupportedVersion(document: JsonObject): boolean {
  const { openapi, swagger } = document;
  if (typeof openapi === "string") return /^3\.\d+/.test(openapi);
  // Unquoted in YAML, `openapi: 3.1` and `swagger: 2.0` read as numbers.
  if (typeof openapi === "number") return openapi >= 3 && openapi < 4;
  return swagger === "2.0" || swagger === 2;
}

function invalid(message: string, cause?: unknown): DomainError {
  return new DomainError("invalid", message, cause === undefined ? undefined : { cause });
}

/**
 * Summarises a document for drift detection.
 *
 * `hash` covers the whole document, descriptions and examples included, so any edit changes it;
 * key order and JSON-versus-YAML do not. `operations` keeps only the contract of each operation
 * (descriptions, summaries, examples dropped), so an edit that changes no contract changes no
 * operation: parameters (path-level merged with operation-level) as sorted `{name, in,
 * required}`; the request body's required flag and schema per content type (a Swagger 2 body
 * parameter counts as a request body, under `consumes`); each response's schema per content type
 * (Swagger 2: under `produces`). Schemas keep `type`, `format`, `enum`, `required`, `properties`,
 * `items`, `oneOf`/`anyOf`/`allOf`. Local `$ref`s are resolved; within one schema each `$ref` is
 * expanded at its first use (in sorted order) and is a `{ $ref }` marker elsewhere, which also ends
 * cycles; `$ref`s nested more than 4 deep and external ones stay markers.
 * @throws DomainError "invalid" when the document has more than `options.maxOperations`
 *   operations, or its schemas expand to more than 250,000 summary nodes.
 */
export function summarizeOpenApi(
  document: OpenApiDocument,
  options: SummaryOptions = {},
): OpenApiSummary {
  const found = operationsOf(document);
  const { maxOperations = Number.POSITIVE_INFINITY } = options;
  if (found.length > maxOperations) {
    throw invalid(`OpenAPI document has ${found.length} operations, more than ${maxOperations}`);
  }
  const hash = createHash("sha256").update(canonicalJson(document)).digest("hex");
  const context: SummaryContext = {
    root: document,
    consumes: mediaTypes(document.consumes),
    produces: mediaTypes(document.produces),
    nodes: 0,
  };
  const operations: Record<string, string> = {};
  for (const { key, item, operation } of found) {
    operations[key] = canonicalJson(summarizeOperation(context, item, operation));
  }
  return { hash, operations };
}

interface FoundOperation {
  /** "METHOD /path". */
  readonly key: string;
  /** The path item, for its path-level parameters. */
  readonly item: JsonObject;
  readonly operation: JsonObject;
}

/** Every operation of the document, in the order of its summary (paths sorted). */
function operationsOf(document: OpenApiDocument): FoundOperation[] {
  const found: FoundOperation[] = [];
  for (const path of Object.keys(document.paths).sort()) {
    // Other keys of `paths` are extensions (x-...), not routes.
    if (!path.startsWith("/")) continue;
    const item = dereference(document, document.paths[path]);
    if (item === undefined) continue;
    for (const method of httpMethods) {
      const operation = item[method];
      if (isObject(operation))
        found.push({ key: `${method.toUpperCase()} ${path}`, item, operation });
    }
  }
  return found;
}

interface SummaryContext {
  readonly root: OpenApiDocument;
  /** Swagger 2 document-level media types, the default of operations that set none. */
  readonly consumes: readonly string[];
  readonly produces: readonly string[];
  nodes: number;
}

interface ParameterSummary {
  readonly name: string;
  readonly in: string;
  readonly required: boolean;
}

interface RequestBodySummary {
  readonly required: boolean;
  readonly content: Record<string, SchemaSummary>;
}

/** The contract of one operation, as stored (canonical JSON) in a baseline. */
interface OperationSummary {
  readonly parameters: readonly ParameterSummary[];
  readonly requestBody?: RequestBodySummary;
  /** Status code → content type → schema summary. */
  readonly responses: Record<string, Record<string, SchemaSummary>>;
}

type SchemaSummary = { [key: string]: unknown };

function summarizeOperation(
  context: SummaryContext,
  item: JsonObject,
  operation: JsonObject,
): OperationSummary {
  const parameters = new Map<string, JsonObject>();
  // Operation-level parameters override path-level ones with the same name and location.
  for (const list of [item.parameters, operation.parameters]) {
    if (!Array.isArray(list)) continue;
    for (const entry of list) {
      const parameter = dereference(context.root, entry);
      if (typeof parameter?.name !== "string" || typeof parameter.in !== "string") continue;
      parameters.set(`${parameter.in}\u0000${parameter.name}`, parameter);
    }
  }
  const summaries: ParameterSummary[] = [];
  let requestBody: RequestBodySummary | undefined;
  for (const parameter of parameters.values()) {
    if (parameter.in === "body") {
      const consumes = mediaTypes(operation.consumes, context.consumes);
      requestBody = {
        required: parameter.required === true,
        content: perMediaType(context, consumes, parameter.schema),
      };
      continue;
    }
    summaries.push({
      name: String(parameter.name),
      in: String(parameter.in),
      required: parameter.in === "path" || parameter.required === true,
    });
  }
  summaries.sort((a, b) => compareText(a.in, b.in) || compareText(a.name, b.name));
  requestBody ??= summarizeRequestBody(context, operation.requestBody);
  const responses = summarizeResponses(context, operation);
  return requestBody === undefined
    ? { parameters: summaries, responses }
    : { parameters: summaries, requestBody, responses };
}

function summarizeRequestBody(
  context: SummaryContext,
  value: unknown,
): RequestBodySummary | undefined {
  const body = dereference(context.root, value);
  if (body === undefined) return undefined;
  return { required: body.required === true, content: summarizeContent(context, body.content) };
}

function summarizeResponses(
  context: SummaryContext,
  operation: JsonObject,
): Record<string, Record<string, SchemaSummary>> {
  const responses = nullRecord<Record<string, SchemaSummary>>();
  if (!isObject(operation.responses)) return responses;
  const produces = mediaTypes(operation.produces, context.produces);
  for (const status of Object.keys(operation.responses).sort()) {
    if (status.startsWith("x-")) continue;
    const response = dereference(context.root, operation.responses[status]);
    if (response === undefined) continue;
    responses[status] =
      response.content !== undefined
        ? summarizeContent(context, response.content)
        : perMediaType(context, produces, response.schema);
  }
  return responses;
}

function summarizeContent(
  context: SummaryContext,
  content: unknown,
): Record<string, SchemaSummary> {
  const summary = nullRecord<SchemaSummary>();
  if (!isObject(content)) return summary;
  for (const mediaType of Object.keys(content).sort()) {
    const media = content[mediaType];
    summary[mediaType] = isObject(media) ? summarizeRootSchema(context, media.schema) : {};
  }
  return summary;
}

/** Swagger 2: one schema, offered under every media type the operation consumes or produces. */
function perMediaType(
  context: SummaryContext,
  types: readonly string[],
  schema: unknown,
): Record<string, SchemaSummary> {
  const summary = nullRecord<SchemaSummary>();
  if (schema === undefined) return summary;
  for (const mediaType of types) summary[mediaType] = summarizeRootSchema(context, schema);
  return summary;
}

function mediaTypes(value: unknown, fallback: readonly string[] = ["application/json"]): string[] {
  if (!Array.isArray(value)) return [...fallback];
  const types = value.filter((type): type is string => typeof type === "string");
  return types.length > 0 ? [...new Set(types)].sort() : [...fallback];
}

function summarizeRootSchema(context: SummaryContext, schema: unknown): SchemaSummary {
  return summarizeSchema(context, schema, new Set(), 0, 0);
}

function summarizeSchema(
  context: SummaryContext,
  schema: unknown,
  expanded: Set<string>,
  depth: number,
  refDepth: number,
): SchemaSummary {
  context.nodes += 1;
  if (context.nodes > maxSummaryNodes) {
    throw invalid(`OpenAPI document too complex to summarise (over ${maxSummaryNodes} nodes)`);
  }
  // JSON Schema booleans (OpenAPI 3.1): true accepts anything, false nothing.
  if (schema === false) return { not: {} };
  if (!isObject(schema)) return {};
  if (depth > maxSchemaDepth) return { truncated: true };
  const ref = schema.$ref;
  if (typeof ref === "string") {
    if (expanded.has(ref) || refDepth >= maxRefDepth) return { $ref: ref };
    const target = resolvePointer(context.root, ref);
    if (target === undefined) return { $ref: ref };
    expanded.add(ref);
    return summarizeSchema(context, target, expanded, depth + 1, refDepth + 1);
  }
  const nested = (value: unknown) => summarizeSchema(context, value, expanded, depth + 1, refDepth);
  const summary: SchemaSummary = nullRecord();
  if (typeof schema.type === "string") summary.type = schema.type;
  if (Array.isArray(schema.type)) summary.type = sortedStrings(schema.type);
  if (typeof schema.format === "string") summary.format = schema.format;
  if (Array.isArray(schema.enum)) summary.enum = sortedValues(schema.enum);
  if (Array.isArray(schema.required)) summary.required = sortedStrings(schema.required);
  if (isObject(schema.properties)) {
    const properties = nullRecord<SchemaSummary>();
    for (const name of Object.keys(schema.properties).sort()) {
      properties[name] = nested(schema.properties[name]);
    }
    summary.properties = properties;
  }
  if (schema.items !== undefined) summary.items = nested(schema.items);
  for (const combinator of ["allOf", "anyOf", "oneOf"] as const) {
    const variants = schema[combinator];
    if (Array.isArray(variants)) summary[combinator] = variants.map(nested);
  }
  return summary;
}

/** Follows `$ref`s (a bounded number of hops) to the object they name; undefined if none. */
function dereference(root: JsonObject, value: unknown): JsonObject | undefined {
  let current = value;
  for (let hop = 0; hop <= maxRefHops; hop++) {
    if (!isObject(current)) return undefined;
    if (typeof current.$ref !== "string") return current;
    current = resolvePointer(root, current.$ref);
  }
  return undefined;
}

/** Resolves a local JSON pointer ("#/components/schemas/Pet"); undefined for any other ref. */
function resolvePointer(root: JsonObject, ref: string): unknown {
  if (!ref.startsWith("#/")) return undefined;
  let current: unknown = root;
  for (const raw of ref.slice(2).split("/")) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw).replaceAll("~1", "/").replaceAll("~0", "~");
    } catch {
      return undefined;
    }
    // Own properties only: "#/constructor" must not reach Object.prototype.
    if (typeof current !== "object" || current === null || !Object.hasOwn(current, segment)) {
      return undefined;
    }
    current = (current as JsonObject)[segment];
  }
  return current;
}

/**
 * Compares two operation summaries. `breaking` is set when an operation was removed, a required
 * parameter appeared (new, or optional → required), a request body became required, a request
 * schema requires a new property, a 2xx response or one of its content types was removed, or a
 * response schema narrowed: a property removed, a type changed (integer → number is not), enum
 * values removed, at any depth the summaries keep (items included). Schemas hidden behind `$ref`
 * markers or truncation are not compared, so this is a cheap lower bound, not a proof.
 */
export function diffOpenApi(
  baseline: Pick<OpenApiSummary, "operations">,
  current: Pick<OpenApiSummary, "operations">,
): OpenApiDiff {
  const before = baseline.operations;
  const after = current.operations;
  const added = Object.keys(after).filter((key) => !Object.hasOwn(before, key));
  const removed = Object.keys(before).filter((key) => !Object.hasOwn(after, key));
  const changed = Object.keys(after).filter(
    (key) => Object.hasOwn(before, key) && before[key] !== after[key],
  );
  const reasons = new Set(removed.map((key) => `${key}: operation removed`));
  for (const key of changed) {
    const old = parseOperation(before[key]);
    const now = parseOperation(after[key]);
    if (old !== undefined && now !== undefined) {
      for (const reason of operationBreaks(old, now)) reasons.add(`${key}: ${reason}`);
    }
  }
  const breakingReasons = [...reasons].sort(compareText).slice(0, maxBreakingReasons);
  return {
    added: firstSorted(added),
    removed: firstSorted(removed),
    changed: firstSorted(changed),
    addedCount: added.length,
    removedCount: removed.length,
    changedCount: changed.length,
    breaking: breakingReasons.length > 0,
    breakingReasons,
  };
}

function firstSorted(keys: string[]): string[] {
  return keys.sort(compareText).slice(0, maxDiffListed);
}

/** Reads a stored summary back; undefined when it is not one (written by another version, say). */
function parseOperation(text: string | undefined): OperationSummary | undefined {
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (
    !isObject(value) ||
    !Array.isArray(value.parameters) ||
    !value.parameters.every(isObject) ||
    !isObject(value.responses) ||
    !Object.values(value.responses).every(isObject) ||
    (value.requestBody !== undefined &&
      !(isObject(value.requestBody) && isObject(value.requestBody.content)))
  ) {
    return undefined;
  }
  return value as unknown as OperationSummary;
}

function operationBreaks(before: OperationSummary, after: OperationSummary): string[] {
  const reasons: string[] = [];
  const oldParameters = new Map(before.parameters.map((p) => [`${p.in}\u0000${p.name}`, p]));
  for (const parameter of after.parameters) {
    if (!parameter.required) continue;
    const old = oldParameters.get(`${parameter.in}\u0000${parameter.name}`);
    if (old === undefined) {
      reasons.push(`required ${parameter.in} parameter "${parameter.name}" added`);
    } else if (!old.required) {
      reasons.push(`${parameter.in} parameter "${parameter.name}" became required`);
    }
  }
  if (after.requestBody?.required === true && before.requestBody?.required !== true) {
    reasons.push("request body became required");
  }
  if (before.requestBody !== undefined && after.requestBody !== undefined) {
    for (const [mediaType, schema] of Object.entries(after.requestBody.content)) {
      const old = own(before.requestBody.content, mediaType);
      if (old !== undefined) requiredAdded(old, schema, `request ${mediaType}`, "$", reasons);
    }
  }
  for (const [status, oldContent] of Object.entries(before.responses)) {
    const content = own(after.responses, status);
    const success = /^2(\d\d|XX)$/i.test(status);
    if (content === undefined) {
      if (success) reasons.push(`response ${status} removed`);
      continue;
    }
    for (const [mediaType, oldSchema] of Object.entries(oldContent)) {
      const schema = own(content, mediaType);
      if (schema === undefined) {
        if (success) reasons.push(`response ${status} no longer offers ${mediaType}`);
        continue;
      }
      narrowed(oldSchema, schema, `response ${status} ${mediaType}`, "$", reasons);
    }
  }
  return reasons;
}

/** Whether a response schema accepts less than before, as far as the summaries show. */
function narrowed(
  before: unknown,
  after: unknown,
  where: string,
  path: string,
  reasons: string[],
): void {
  if (!comparable(before) || !comparable(after)) return;
  if (typeChanged(before.type, after.type)) {
    reasons.push(`${where}: type changed at ${path}`);
    return;
  }
  if (Array.isArray(before.enum) && Array.isArray(after.enum)) {
    const kept = new Set(after.enum.map(canonicalJson));
    if (before.enum.some((value) => !kept.has(canonicalJson(value)))) {
      reasons.push(`${where}: enum values removed at ${path}`);
    }
  }
  if (isObject(before.properties)) {
    const properties = isObject(after.properties) ? after.properties : {};
    for (const [name, schema] of Object.entries(before.properties)) {
      if (!Object.hasOwn(properties, name)) {
        reasons.push(`${where}: property "${name}" removed at ${path}`);
      } else {
        narrowed(schema, properties[name], where, `${path}.${name}`, reasons);
      }
    }
  }
  if (before.items !== undefined && after.items !== undefined) {
    narrowed(before.items, after.items, where, `${path}[]`, reasons);
  }
  for (const combinator of ["allOf", "anyOf", "oneOf"] as const) {
    const old = before[combinator];
    const now = after[combinator];
    // Variants are matched by position only when their number is unchanged: cheap, not clever.
    if (!Array.isArray(old) || !Array.isArray(now) || old.length !== now.length) continue;
    old.forEach((variant, index) => {
      narrowed(variant, now[index], where, `${path}.${combinator}[${index}]`, reasons);
    });
  }
}

/** Whether a request schema requires a property it did not, at any depth both spell out. */
function requiredAdded(
  before: unknown,
  after: unknown,
  where: string,
  path: string,
  reasons: string[],
): void {
  if (!comparable(before) || !comparable(after)) return;
  const old = new Set(Array.isArray(before.required) ? before.required : []);
  for (const name of Array.isArray(after.required) ? after.required : []) {
    if (!old.has(name))
      reasons.push(`${where}: property "${String(name)}" became required at ${path}`);
  }
  if (isObject(before.properties) && isObject(after.properties)) {
    for (const [name, schema] of Object.entries(after.properties)) {
      if (Object.hasOwn(before.properties, name)) {
        requiredAdded(before.properties[name], schema, where, `${path}.${name}`, reasons);
      }
    }
  }
  if (before.items !== undefined && after.items !== undefined) {
    requiredAdded(before.items, after.items, where, `${path}[]`, reasons);
  }
}

/** A summary that spells out its schema: not a `$ref` marker, not truncated. */
function comparable(schema: unknown): schema is JsonObject {
  return isObject(schema) && schema.$ref === undefined && schema.truncated === undefined;
}

function typeChanged(before: unknown, after: unknown): boolean {
  if (before === undefined || after === undefined) return false;
  const now = new Set(typeList(after));
  if (now.has("number")) now.add("integer");
  return typeList(before).some((type) => !now.has(type));
}

function typeList(type: unknown): string[] {
  if (typeof type === "string") return [type];
  return Array.isArray(type) ? type.map(String) : [];
}

/**
 * JSON with object keys sorted at every level, so that equal documents serialise equally
 * whatever their key order or source syntax.
 */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (isObject(value)) {
    const members: string[] = [];
    for (const key of Object.keys(value).sort()) {
      const member = value[key];
      if (member !== undefined) members.push(`${JSON.stringify(key)}:${canonicalJson(member)}`);
    }
    return `{${members.join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

function sortedStrings(values: readonly unknown[]): string[] {
  return [...new Set(values.filter((value): value is string => typeof value === "string"))].sort(
    compareText,
  );
}

function sortedValues(values: readonly unknown[]): unknown[] {
  const byText = new Map(values.map((value) => [canonicalJson(value), value]));
  return [...byText.keys()].sort(compareText).map((key) => byText.get(key));
}

/** `object[key]` when it is the object's own: keys come from documents ("constructor", say). */
function own<T>(object: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(object, key) ? object[key] : undefined;
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Keys come from the document: a "__proto__" property name must stay a plain key. */
function nullRecord<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}
