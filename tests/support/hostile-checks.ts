// What every answer to a hostile request must satisfy, on REST and on gRPC, and the tally the
// reliability table reports.
import type { DescMethod } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { JobsService } from "../../gen/orchestrator/v1/jobs_pb.js";
import { configKeys } from "../../src/config/keys.js";
import { echoedIn } from "./hostile-messages.js";

/** An address nobody serves: a downstream service there is down, refused at once. */
const downAddress = "http://127.0.0.1:9";

/**
 * The environment of the node a hostile run attacks: auth on (an admin token and the peer
 * token, so that every method is reachable), and every downstream service (each URL key of the
 * services section) at an address nobody serves, so that what calls out fails at once, without
 * DNS or waiting.
 */
export function hostileNodeEnv(tokens: { admin: string; peer: string }): Record<string, string> {
  const env: Record<string, string> = {
    AUTH_TOKENS: `admin:${tokens.admin}`,
    PEER_TOKEN: tokens.peer,
    OUTBOUND_TIMEOUT_MS: "1000",
    OUTBOUND_MAX_ATTEMPTS: "1",
  };
  for (const key of configKeys) {
    if (key.section === "services" && key.name.endsWith("_URL")) env[key.name] = downAddress;
  }
  return env;
}

/**
 * Whether the method's answer depends on a downstream service: the jobs, each of which calls
 * one. Their services are down in a hostile run (see {@link hostileNodeEnv}), so UNAVAILABLE
 * (503) is their right answer, and the only place it is.
 */
export function callsDownstream(method: DescMethod): boolean {
  return method.parent.typeName === JobsService.typeName;
}

/** Largest error body (REST) or status message (gRPC) an answer may carry, in bytes. */
export const maxErrorBytes = 4096;

/** What one group of a hostile run did: inputs generated, answers received, broken properties. */
export class HostileTally {
  inputs = 0;
  requests = 0;
  /** Inputs the node accepted (2xx, OK): how far past validation the generators reach. */
  accepted = 0;
  readonly problems: string[] = [];

  /** Records a broken property; the group fails on the first one, with fast-check's seed. */
  fail(problem: string): never {
    this.problems.push(problem);
    throw new Error(problem);
  }
}

/** A short, printable view of a request for failure messages. */
export function sketch(text: string, max = 160): string {
  const shown = JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);
  return text.length > max ? `${shown} (${text.length} characters)` : shown;
}

/**
 * The problems of one REST answer: a 5xx (503 only where a dependency is down), an error body not shaped `{code, message, details}` or over {@link maxErrorBytes},
 * or an error that repeats a long string of the request. `hasBody` is false for an answer to
 * HEAD, which has none; `dependencyDown` allows 503 (see {@link callsDownstream}).
 */
export function restAnswerProblems(
  status: number,
  text: string,
  longStrings: readonly string[],
  options: { hasBody: boolean; dependencyDown: boolean },
): string[] {
  const problems: string[] = [];
  if (status >= 500 && !(status === 503 && options.dependencyDown)) {
    problems.push(`status ${status}`);
  }
  if (status < 400 || !options.hasBody) return problems;
  if (Buffer.byteLength(text) > maxErrorBytes) {
    problems.push(`error body of ${Buffer.byteLength(text)} bytes`);
  }
  if (!isErrorBody(text)) problems.push(`error body not {code, message, details}: ${sketch(text)}`);
  const echoed = echoedIn(text, longStrings);
  if (echoed !== undefined) problems.push(`error echoes ${sketch(echoed, 40)}`);
  return problems;
}

/** Whether `text` is `{code: string, message: string, details: array}` (other keys allowed). */
export function isErrorBody(text: string): boolean {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return false;
  }
  if (typeof body !== "object" || body === null) return false;
  const { code, message, details } = body as Record<string, unknown>;
  return typeof code === "string" && typeof message === "string" && Array.isArray(details);
}

/** Codes that say the server failed, not the request: never an answer to a client's input. */
const serverFaultCodes: ReadonlySet<number> = new Set([Code.Internal, Code.Unknown, Code.DataLoss]);

/**
 * The problems of one gRPC status: a server-fault code (UNAVAILABLE too, unless
 * `dependencyDown`: see {@link callsDownstream}), a long or echoing message.
 */
export function grpcStatusProblems(
  code: number,
  details: string,
  longStrings: readonly string[],
  dependencyDown: boolean,
): string[] {
  const problems: string[] = [];
  const fault = serverFaultCodes.has(code) || (code === Code.Unavailable && !dependencyDown);
  if (fault) problems.push(`code ${Code[code] ?? code}: ${sketch(details)}`);
  if (Buffer.byteLength(details) > maxErrorBytes) {
    problems.push(`status message of ${Buffer.byteLength(details)} bytes`);
  }
  const echoed = echoedIn(details, longStrings);
  if (echoed !== undefined) problems.push(`status message echoes ${sketch(echoed, 40)}`);
  return problems;
}
