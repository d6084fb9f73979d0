import type { IncomingHttpHeaders } from "node:http";
import Fastify, { type FastifyReply } from "fastify";

/**
 * How a route of a {@link Downstream} answers. `sequence` answers its steps one call after the
 * other and then repeats its last step.
 */
export type DownstreamAnswer =
  /** This JSON body (default status 200), after `delayMs` if given. */
  | {
      readonly kind: "json";
      readonly body: unknown;
      readonly status?: number;
      readonly delayMs?: number;
    }
  /** A status with a small JSON error body. */
  | { readonly kind: "fail"; readonly status: number }
  /** Nothing, ever: the request is held until the client gives up or the downstream closes. */
  | { readonly kind: "hang" }
  /** 200 with a body that is not JSON, though it says it is. */
  | { readonly kind: "garbage" }
  /** The connection is destroyed before any answer. */
  | { readonly kind: "reset" }
  /**
   * These exact bytes with this content type (default status 200): an HTML error page where
   * JSON was expected, a body larger than any client should take.
   */
  | {
      readonly kind: "raw";
      readonly body: string | Buffer;
      readonly contentType: string;
      readonly status?: number;
    }
  | { readonly kind: "sequence"; readonly steps: readonly DownstreamAnswer[] };

/** One request a downstream received. */
export interface DownstreamRequest {
  readonly method: string;
  /** Without the query string. */
  readonly path: string;
  readonly query: Readonly<Record<string, unknown>>;
  readonly headers: IncomingHttpHeaders;
  /** The parsed JSON body, or undefined. */
  readonly body: unknown;
}

/**
 * A real HTTP service on loopback standing in for an agent, the consistency engine, the doc
 * store, reporting, notification or the secure analyzer: a small fastify app whose routes a test
 * sets (`answer`), which records every request, and which can be told to fail, hang, reset or
 * answer garbage. An unset route answers 404.
 */
export interface Downstream {
  /** `http://127.0.0.1:<port>`, without a trailing slash. */
  readonly url: string;
  /** Every request received, oldest first. */
  readonly requests: readonly DownstreamRequest[];
  /** The requests to `METHOD path`. */
  requestsTo(method: string, path: string): DownstreamRequest[];
  /** How `METHOD path` answers from now on. */
  answer(method: string, path: string, answer: DownstreamAnswer): void;
  /** Stops listening and drops every connection, held requests included. Idempotent. */
  close(): Promise<void>;
}

/** Starts a {@link Downstream} on 127.0.0.1 and a free port. */
export async function startDownstream(): Promise<Downstream> {
  const app = Fastify({ logger: false, bodyLimit: 16 * 1024 * 1024 });
  const requests: DownstreamRequest[] = [];
  const answers = new Map<string, { answer: DownstreamAnswer; calls: number }>();

  app.all("/*", async (request, reply) => {
    const path = request.url.split("?")[0] ?? "/";
    requests.push({
      method: request.method,
      path,
      query: (request.query ?? {}) as Record<string, unknown>,
      headers: request.headers,
      body: request.body,
    });
    const route = answers.get(`${request.method} ${path}`);
    if (route === undefined) return reply.code(404).send({ error: "not found" });
    const answer = current(route.answer, route.calls++);
    return respond(answer, reply);
  });

  await app.listen({ port: 0, host: "127.0.0.1" });
  const address = app.server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  let closing: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    requestsTo: (method, path) => requests.filter((r) => r.method === method && r.path === path),
    answer(method, path, answer) {
      answers.set(`${method.toUpperCase()} ${path}`, { answer, calls: 0 });
    },
    close() {
      closing ??= (async () => {
        app.server.closeAllConnections();
        await app.close();
      })();
      return closing;
    },
  };
}

/** The answer for the `call`th request (from 0) of a route. */
function current(answer: DownstreamAnswer, call: number): DownstreamAnswer {
  if (answer.kind !== "sequence") return answer;
  const step = answer.steps[Math.min(call, answer.steps.length - 1)];
  if (step === undefined) throw new Error("a sequence needs at least one step");
  return current(step, 0);
}

async function respond(answer: DownstreamAnswer, reply: FastifyReply): Promise<FastifyReply> {
  switch (answer.kind) {
    case "json":
      if (answer.delayMs) await new Promise((resolve) => setTimeout(resolve, answer.delayMs));
      return reply.code(answer.status ?? 200).send(answer.body);
    case "fail":
      return reply.code(answer.status).send({ error: `failing with ${answer.status}` });
    case "garbage":
      return reply.code(200).header("content-type", "application/json").send("{not json at all");
    case "raw":
      return reply
        .code(answer.status ?? 200)
        .header("content-type", answer.contentType)
        .send(answer.body);
    case "reset":
      reply.raw.socket?.destroy();
      return reply;
    case "hang":
      // Never answered: the client's timeout, or close() (which drops connections), ends it.
      return new Promise<FastifyReply>(() => {});
    case "sequence":
      return respond(current(answer, 0), reply);
  }
}
