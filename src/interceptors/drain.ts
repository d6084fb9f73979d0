import type { HandlerContext } from "@connectrpc/connect";
import { createLinkedAbortController } from "@connectrpc/connect/protocol";
import type { Interceptor } from "./chain.js";

/**
 * Ends long-lived streams cleanly when the node starts draining: the implementation sees its
 * context's signal abort and the stream ends with OK, while unary calls in flight run to the end of
 * the shutdown grace period. Clients learn from the clean end (and the NOT_SERVING health status)
 * that they should reconnect to another node.
 */
export function createDrainInterceptor(drainSignal: AbortSignal): Interceptor {
  return () => ({
    streaming: (next) =>
      async function* (requests, context) {
        const controller = createLinkedAbortController(context.signal, drainSignal);
        try {
          yield* next(requests, withSignal(context, controller.signal));
        } catch (error) {
          if (!drainSignal.aborted || context.signal.aborted) throw error;
        } finally {
          controller.abort(); // unlinks the listeners from both signals
        }
      },
  });
}

/** The same context with another signal; every other member still reads from the original. */
function withSignal(context: HandlerContext, signal: AbortSignal): HandlerContext {
  return {
    get method() {
      return context.method;
    },
    get service() {
      return context.service;
    },
    signal,
    timeoutMs: () => context.timeoutMs(),
    get requestMethod() {
      return context.requestMethod;
    },
    get requestHeader() {
      return context.requestHeader;
    },
    get responseHeader() {
      return context.responseHeader;
    },
    get responseTrailer() {
      return context.responseTrailer;
    },
    get protocolName() {
      return context.protocolName;
    },
    get values() {
      return context.values;
    },
    get url() {
      return context.url;
    },
  };
}
