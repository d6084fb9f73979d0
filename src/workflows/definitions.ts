/** The sources an ingestion can read from. */
export const ingestionSources = ["github", "jira", "confluence", "swagger"] as const;

/** One of {@link ingestionSources}. */
export type IngestionSource = (typeof ingestionSources)[number];

/** The HTTP methods a step may call with. */
export const stepMethods = ["GET", "POST", "PUT", "PATCH", "DELETE"] as const;

/** A call a step makes: a method and an absolute path on its target. */
export interface StepCall {
  readonly method: (typeof stepMethods)[number];
  /** Starts with "/". */
  readonly path: string;
}

/** One step of a workflow: a call to a service and, when it must be undone, the call that does. */
export interface StepDefinition {
  /** Unique in its workflow: 1–64 of [a-z0-9_-]. */
  readonly name: string;
  /** The service called by name; "{source}" in it stands for the source of a per-source step. */
  readonly target: string;
  readonly action: StepCall;
  /** Absent when the step changes nothing that would need undoing. */
  readonly compensation?: StepCall;
  /** Lower groups finish before a higher one starts; a group's steps run at once. */
  readonly group: number;
  /** Runs once for each requested source (as "<name>:<source>"). */
  readonly perSource: boolean;
  /** Each attempt's timeout, in ms. */
  readonly timeoutMs: number;
  /** Attempts before the step fails for good (1: no retry). */
  readonly maxAttempts: number;
}

/** A workflow: what `POST /workflows/run` starts. */
export interface WorkflowDefinition {
  /** 1–100 of [a-z0-9][a-z0-9._-]*. */
  readonly name: string;
  readonly description: string;
  /** In execution order: by group, then as declared. */
  readonly steps: readonly StepDefinition[];
  /** Sources its per-source steps may run for; empty when it has none. */
  readonly sources: readonly IngestionSource[];
}

const post = (path: string): StepCall => ({ method: "POST", path });
const agent = "{source}-agent";

/**
 * The workflows every node knows. Ingestion fans out to the agents of the requested sources in
 * parallel, then has the consistency engine analyse what they brought; each call has its undoing.
 */
export const builtInWorkflows: readonly WorkflowDefinition[] = Object.freeze([
  {
    name: "ingestion",
    description:
      "Ingests the requested sources in parallel through their agents, then has the consistency engine analyse the result.",
    sources: [...ingestionSources],
    steps: [
      step("ingest", agent, post("/ingest"), post("/ingest/rollback"), 0, true),
      step("analyze", "consistency-engine", post("/analyze"), post("/analyze/rollback"), 1),
    ],
  },
  {
    name: "doc_ingestion",
    description:
      "Ingests the requested sources' documents through their agents, then stores them in the doc store.",
    sources: [...ingestionSources],
    steps: [
      step("ingest", agent, post("/ingest"), post("/ingest/rollback"), 0, true),
      step("store", "doc-store", post("/documents/import"), post("/documents/import/rollback"), 1),
    ],
  },
  {
    name: "consistency_analysis",
    description:
      "Has the consistency engine analyse what is ingested, then asks reporting for the findings report.",
    sources: [],
    steps: [
      step("analyze", "consistency-engine", post("/analyze"), post("/analyze/rollback"), 0),
      step("report", "reporting", post("/reports/generate"), undefined, 1),
    ],
  },
  {
    name: "quality_assessment",
    description:
      "Recomputes the doc store's quality flags, then has the consistency engine assess the flagged documents.",
    sources: [],
    steps: [
      step("recalculate", "doc-store", post("/documents/quality/recalculate"), undefined, 0),
      step("assess", "consistency-engine", post("/quality/assess"), undefined, 1),
    ],
  },
]);

function step(
  name: string,
  target: string,
  action: StepCall,
  compensation: StepCall | undefined,
  group: number,
  perSource = false,
): StepDefinition {
  return {
    name,
    target,
    action,
    ...(compensation ? { compensation } : {}),
    group,
    perSource,
    timeoutMs: 30_000,
    maxAttempts: 3,
  };
}

const workflowName = /^[a-z0-9][a-z0-9._-]{0,99}$/;
const stepName = /^[a-z0-9_-]{1,64}$/;
const targetName = /^(\{source\}|[a-z0-9])[a-z0-9._{}-]{0,99}$/;

/**
 * The problems of a set of definitions, each naming the workflow and step: an empty list means
 * they may be served. Checked at start, so that a bad definition stops the node, not a run.
 */
export function definitionProblems(definitions: readonly WorkflowDefinition[]): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const workflow of definitions) {
    const where = `workflow ${JSON.stringify(workflow.name)}`;
    if (!workflowName.test(workflow.name))
      problems.push(`${where}: the name is not 1–100 of [a-z0-9._-]`);
    if (seen.has(workflow.name)) problems.push(`${where}: defined twice`);
    seen.add(workflow.name);
    if (workflow.steps.length === 0) problems.push(`${where}: has no step`);
    problems.push(...stepProblems(workflow, where));
  }
  return problems;
}

function stepProblems(workflow: WorkflowDefinition, where: string): string[] {
  const problems: string[] = [];
  const names = new Set<string>();
  let lastGroup = -1;
  for (const s of workflow.steps) {
    const at = `${where}, step ${JSON.stringify(s.name)}`;
    if (!stepName.test(s.name)) problems.push(`${at}: the name is not 1–64 of [a-z0-9_-]`);
    if (names.has(s.name)) problems.push(`${at}: defined twice`);
    names.add(s.name);
    if (!targetName.test(s.target)) problems.push(`${at}: the target is not a service name`);
    if (s.target.includes("{source}") && !s.perSource) {
      problems.push(`${at}: only a per-source step may name {source} in its target`);
    }
    if (s.perSource && workflow.sources.length === 0) {
      problems.push(`${at}: a per-source step in a workflow without sources`);
    }
    for (const [what, call] of [
      ["action", s.action],
      ["compensation", s.compensation],
    ] as const) {
      if (call === undefined) continue;
      if (!stepMethods.includes(call.method))
        problems.push(`${at}: the ${what}'s method is not one of ${stepMethods.join(", ")}`);
      if (!call.path.startsWith("/") || call.path.startsWith("//")) {
        problems.push(`${at}: the ${what}'s path must start with one "/"`);
      }
    }
    if (!Number.isSafeInteger(s.group) || s.group < 0)
      problems.push(`${at}: the group is not a non-negative integer`);
    else if (s.group < lastGroup) problems.push(`${at}: steps must be declared by group`);
    else lastGroup = s.group;
    if (!Number.isSafeInteger(s.timeoutMs) || s.timeoutMs < 1 || s.timeoutMs > 3_600_000) {
      problems.push(`${at}: timeout_ms is not 1..3600000`);
    }
    if (!Number.isSafeInteger(s.maxAttempts) || s.maxAttempts < 1 || s.maxAttempts > 20) {
      problems.push(`${at}: max_attempts is not 1..20`);
    }
  }
  return problems;
}
