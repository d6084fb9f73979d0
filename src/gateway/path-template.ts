/** A google.api.http path template compiled for the router. */
export interface PathTemplate {
  /** The template as written in the proto, e.g. "/registry/{name}". */
  readonly template: string;
  /** The router's path, e.g. "/registry/:p0". */
  readonly routerPath: string;
  /** Router parameter name → request field path (proto names), e.g. p0 → ["name"]. */
  readonly variables: ReadonlyMap<string, readonly string[]>;
}

const variablePattern = /^\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?:=\*)?\}$/;
const literalPattern = /^[A-Za-z0-9._~-]+$/;

/**
 * Compiles a path template made of literal segments and single-segment variables (`{name}`,
 * `{parent.name}` or `{name=*}`). Anything the gateway cannot route exactly (multi-segment `**`
 * variables, verbs) is refused at start, so that a proto can never silently lose a route.
 * @throws Error naming the template when it is not supported.
 */
export function compilePathTemplate(template: string): PathTemplate {
  if (!template.startsWith("/")) throw new Error(`path template ${template} must start with /`);
  const variables = new Map<string, readonly string[]>();
  const segments = template === "/" ? [""] : template.slice(1).split("/");
  const routed = segments.map((segment) => {
    const variable = variablePattern.exec(segment);
    if (variable?.[1] !== undefined) {
      const name = `p${variables.size}`;
      variables.set(name, variable[1].split("."));
      return `:${name}`;
    }
    if (literalPattern.test(segment)) return segment;
    throw new Error(`path template ${template}: segment ${segment} is not supported`);
  });
  return { template, routerPath: `/${routed.join("/")}`, variables };
}
