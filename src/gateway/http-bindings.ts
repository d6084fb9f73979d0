import {
  type DescField,
  type DescMessage,
  type DescMethod,
  type DescService,
  getOption,
  hasOption,
} from "@bufbuild/protobuf";
import type { HTTPMethods } from "fastify";
import { http } from "../../gen/google/api/annotations_pb.js";
import type { HttpRule } from "../../gen/google/api/http_pb.js";
import { compilePathTemplate } from "./path-template.js";

/** One HTTP binding of an RPC: a google.api.http rule or one of its additional bindings. */
export interface HttpBinding {
  readonly method: DescMethod;
  readonly verb: HTTPMethods;
  /** The path template as written, e.g. "/registry/{name}". */
  readonly template: string;
  readonly rule: HttpRule;
}

/**
 * Every HTTP binding of `method`: its google.api.http rule and the rule's additional bindings;
 * none when it has no rule.
 * @throws Error when a rule has no verb the gateway serves (get, put, post, delete, patch).
 */
export function httpBindingsOf(method: DescMethod): readonly HttpBinding[] {
  let bindings = bindingsByMethod.get(method);
  if (bindings === undefined) {
    bindings = readHttpBindings(method);
    bindingsByMethod.set(method, bindings);
  }
  return bindings;
}

// Read once per method: decoding a rule from the method's options is a start-up cost (the gateway
// and shadowedPathValues both need every rule), and descriptors never change.
const bindingsByMethod = new WeakMap<DescMethod, readonly HttpBinding[]>();

function readHttpBindings(method: DescMethod): readonly HttpBinding[] {
  if (!hasOption(method, http)) return [];
  const rule = getOption(method, http);
  return Object.freeze(
    [rule, ...rule.additionalBindings].map((binding) => ({
      method,
      ...verbAndTemplate(binding, method),
      rule: binding,
    })),
  );
}

function verbAndTemplate(rule: HttpRule, method: DescMethod) {
  const pattern = rule.pattern;
  switch (pattern.case) {
    case "get":
      return { verb: "GET" as const, template: pattern.value };
    case "put":
      return { verb: "PUT" as const, template: pattern.value };
    case "post":
      return { verb: "POST" as const, template: pattern.value };
    case "delete":
      return { verb: "DELETE" as const, template: pattern.value };
    case "patch":
      return { verb: "PATCH" as const, template: pattern.value };
    default:
      throw new Error(`${method.name}: HTTP rule without a supported verb`);
  }
}

/** A value of a path variable that another route takes first, so that it cannot reach its RPC. */
export interface ShadowedValue {
  /** The RPC whose path variable it is. */
  readonly method: DescMethod;
  /** The request field the variable fills, from the request message down. */
  readonly fieldPath: readonly DescField[];
  /** The literal segment that takes the value, e.g. "watch". */
  readonly value: string;
  /** Why, e.g. "GET /registry/watch is a route of its own, not GET /registry/{name}". */
  readonly reason: string;
}

/**
 * The path-variable values that a literal segment of another route takes first: the router
 * prefers a literal to a variable at the same position, so `GET /registry/watch` is the watch
 * stream and `GET /registry/{name}` can never serve a service named "watch". Two routes collide
 * when they have the same verb and number of segments, one has a variable where the other has a
 * literal, and every other position could match both (equal literals, or a variable on either
 * side). Derived from the rules, so that a new route cannot silently shadow values.
 */
export function shadowedPathValues(services: readonly DescService[]): ShadowedValue[] {
  // Each template is split once: every pair of routes is compared, at every start.
  const bindings = services
    .flatMap((service) => service.methods.flatMap(httpBindingsOf))
    .map((binding) => ({ ...binding, segments: segmentsOf(binding.template) }));
  const shadowed: ShadowedValue[] = [];
  for (const variable of bindings) {
    const segments = variable.segments;
    for (const literal of bindings) {
      if (literal.verb !== variable.verb || literal === variable) continue;
      const others = literal.segments;
      if (others.length !== segments.length) continue;
      segments.forEach((segment, i) => {
        const other = others[i];
        if (segment.kind !== "variable" || other?.kind !== "literal") return;
        if (!segments.every((s, j) => j === i || compatible(s, others[j]))) return;
        shadowed.push({
          method: variable.method,
          fieldPath: fieldPathOf(variable.method.input, segment.fieldPath, variable.template),
          value: other.text,
          reason: `${literal.verb} ${literal.template} is a route of its own, not ${variable.verb} ${variable.template}`,
        });
      });
    }
  }
  return shadowed;
}

type Segment =
  | { readonly kind: "literal"; readonly text: string }
  | { readonly kind: "variable"; readonly fieldPath: readonly string[] };

function segmentsOf(template: string): Segment[] {
  const compiled = compilePathTemplate(template);
  return compiled.routerPath
    .slice(1)
    .split("/")
    .map((segment): Segment => {
      if (!segment.startsWith(":")) return { kind: "literal", text: segment };
      return { kind: "variable", fieldPath: compiled.variables.get(segment.slice(1)) ?? [] };
    });
}

function compatible(a: Segment, b: Segment | undefined): boolean {
  if (b === undefined) return false;
  if (a.kind === "variable" || b.kind === "variable") return true;
  return a.text === b.text;
}

function fieldPathOf(input: DescMessage, names: readonly string[], template: string): DescField[] {
  const path: DescField[] = [];
  let message: DescMessage | undefined = input;
  for (const name of names) {
    const field: DescField | undefined = message?.fields.find((f) => f.name === name);
    if (field === undefined) throw new Error(`${template}: ${input.typeName} has no field ${name}`);
    path.push(field);
    message = field.message;
  }
  return path;
}
