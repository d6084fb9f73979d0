import {
  definitionProblems,
  type IngestionSource,
  ingestionSources,
  type StepCall,
  type StepDefinition,
  stepMethods,
  type WorkflowDefinition,
} from "./definitions.js";

/** A problem of a workflow written in the configuration, with where it is. */
export class DefinitionFileError extends Error {
  override readonly name = "DefinitionFileError";
  constructor(
    /** Where in the file, e.g. "workflows[0].steps[1].action". */
    readonly location: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The workflows of the configuration file's `workflows:` list, checked in shape and then as every
 * definition is (see `definitionProblems`), together with `builtIn`: a name already defined is
 * refused, so a file cannot silently change what a built-in workflow does.
 * ```yaml
 * workflows:
 *   - name: security_scan
 *     description: Scans the sources' repositories.
 *     sources: [github]
 *     steps:
 *       - {name: scan, target: "{source}-agent", action: POST /scan, per_source: true}
 *       - {name: report, target: reporting, action: POST /reports/generate, group: 1}
 * ```
 * Step fields: name, target, action ("METHOD /path"), compensation (same, optional), group (0),
 * per_source (false), timeout_ms (30000), max_attempts (3).
 * @throws DefinitionFileError naming the first problem and where it is.
 */
export function workflowsFromFile(
  raw: unknown,
  builtIn: readonly WorkflowDefinition[],
): WorkflowDefinition[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new DefinitionFileError("workflows", "is not a list of workflows");
  const definitions = raw.map((entry, i) => workflowOf(entry, `workflows[${i}]`));
  const taken = new Set(builtIn.map((w) => w.name));
  definitions.forEach((definition, i) => {
    if (taken.has(definition.name)) {
      throw new DefinitionFileError(
        `workflows[${i}].name`,
        `"${definition.name}" is already defined (a built-in workflow or an earlier entry)`,
      );
    }
    taken.add(definition.name);
  });
  const [problem] = definitionProblems(definitions);
  if (problem !== undefined) throw new DefinitionFileError("workflows", problem);
  return definitions;
}

const workflowFields = new Set(["name", "description", "sources", "steps"]);
const stepFields = new Set([
  "name",
  "target",
  "action",
  "compensation",
  "group",
  "per_source",
  "timeout_ms",
  "max_attempts",
]);

function workflowOf(raw: unknown, at: string): WorkflowDefinition {
  const fields = mapping(raw, at, workflowFields);
  const sources = fields.sources ?? [];
  if (!Array.isArray(sources)) throw new DefinitionFileError(`${at}.sources`, "is not a list");
  const steps = fields.steps;
  if (!Array.isArray(steps)) throw new DefinitionFileError(`${at}.steps`, "is not a list of steps");
  return {
    name: text(fields.name, `${at}.name`),
    description:
      fields.description === undefined ? "" : text(fields.description, `${at}.description`),
    sources: sources.map((s, i) => source(s, `${at}.sources[${i}]`)),
    steps: steps.map((s, i) => stepOf(s, `${at}.steps[${i}]`)),
  };
}

function stepOf(raw: unknown, at: string): StepDefinition {
  const fields = mapping(raw, at, stepFields);
  const compensation =
    fields.compensation === undefined ? undefined : call(fields.compensation, `${at}.compensation`);
  return {
    name: text(fields.name, `${at}.name`),
    target: text(fields.target, `${at}.target`),
    action: call(fields.action, `${at}.action`),
    ...(compensation ? { compensation } : {}),
    group: integer(fields.group ?? 0, `${at}.group`),
    perSource: flag(fields.per_source ?? false, `${at}.per_source`),
    timeoutMs: integer(fields.timeout_ms ?? 30_000, `${at}.timeout_ms`),
    maxAttempts: integer(fields.max_attempts ?? 3, `${at}.max_attempts`),
  };
}

function mapping(raw: unknown, at: string, known: ReadonlySet<string>): Record<string, unknown> {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new DefinitionFileError(at, "is not a mapping");
  }
  for (const key of Object.keys(raw)) {
    if (!known.has(key)) throw new DefinitionFileError(`${at}.${key}`, "is not a known field");
  }
  return raw as Record<string, unknown>;
}

function text(raw: unknown, at: string): string {
  if (typeof raw !== "string" || raw.length > 1000) {
    throw new DefinitionFileError(at, "is not a string (at most 1,000 characters)");
  }
  return raw;
}

function integer(raw: unknown, at: string): number {
  if (typeof raw !== "number" || !Number.isSafeInteger(raw)) {
    throw new DefinitionFileError(at, "is not an integer");
  }
  return raw;
}

function flag(raw: unknown, at: string): boolean {
  if (typeof raw !== "boolean") throw new DefinitionFileError(at, "is not true or false");
  return raw;
}

function source(raw: unknown, at: string): IngestionSource {
  const found = ingestionSources.find((s) => s === raw);
  if (found === undefined) {
    throw new DefinitionFileError(at, `is not one of ${ingestionSources.join(", ")}`);
  }
  return found;
}

function call(raw: unknown, at: string): StepCall {
  const [method, path, ...rest] = text(raw, at).trim().split(/\s+/);
  const known = stepMethods.find((m) => m === method);
  if (known === undefined || path === undefined || rest.length > 0) {
    throw new DefinitionFileError(at, `is not "<${stepMethods.join("|")}> /path"`);
  }
  return { method: known, path };
}
