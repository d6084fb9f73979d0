import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  HealthCheckResponse_ServingStatus as ProtoServingStatus,
} from "../../gen/health/v1/health_pb.js";
import type { ServingState, ServingStatus } from "../system/serving-status.js";

/** Longest service name echoed back in an error, so a caller cannot make us echo megabytes. */
const maxEchoedNameLength = 100;

/**
 * Creates the `grpc.health.v1.Health` service over the node's serving status.
 *
 * Every name in `serviceNames`, and the empty name (the whole server), reports the node's state:
 * SERVING, or NOT_SERVING once draining has begun. `Check` of any other name throws
 * `ConnectError` with `Code.NotFound`, as the gRPC health spec asks. `Watch` of an unknown name
 * sends SERVICE_UNKNOWN and keeps the stream open. Every `Watch` ends without error when the
 * caller goes away, or when the node drains (for a known name, right after sending NOT_SERVING).
 */
export function createGrpcHealthService(
  status: ServingStatus,
  serviceNames: readonly string[],
): ServiceImpl<typeof Health> {
  const known = new Set(["", ...serviceNames]);
  return {
    check(request) {
      if (!known.has(request.service)) throw unknownService(request.service);
      return { status: toProtoStatus(status.state) };
    },
    list() {
      const current = toProtoStatus(status.state);
      return {
        statuses: Object.fromEntries([...known].map((name) => [name, { status: current }])),
      };
    },
    watch(request, context) {
      return watchStatus(status, known.has(request.service), context);
    },
  };
}

/**
 * Yields the current status, then one message per change, until the call is aborted or the node
 * drains. A change listener and the abort signal wake the loop, so it never polls; changes that
 * come and go while the client is slow to read are coalesced into the latest status.
 */
async function* watchStatus(
  status: ServingStatus,
  serviceKnown: boolean,
  context: HandlerContext,
): AsyncGenerator<{ status: ProtoServingStatus }> {
  const { signal } = context;
  const current = (): ProtoServingStatus =>
    serviceKnown ? toProtoStatus(status.state) : ProtoServingStatus.SERVICE_UNKNOWN;
  let wake: (() => void) | undefined;
  const unsubscribe = status.onChange(() => wake?.());
  const onAbort = (): void => wake?.();
  signal.addEventListener("abort", onAbort);
  try {
    let sent = current();
    yield { status: sent };
    while (!signal.aborted) {
      if (sent !== current()) {
        sent = current();
        yield { status: sent };
        continue;
      }
      // A draining node never serves again; ending lets clients move to another node and lets
      // shutdown finish without waiting for watchers.
      if (status.draining) return;
      // The state was just read and the listeners run synchronously, so no change can slip in
      // between that read and installing `wake`.
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      wake = undefined;
    }
  } finally {
    unsubscribe();
    signal.removeEventListener("abort", onAbort);
  }
}

function toProtoStatus(state: ServingState): ProtoServingStatus {
  return state === "SERVING" ? ProtoServingStatus.SERVING : ProtoServingStatus.NOT_SERVING;
}

function unknownService(name: string): ConnectError {
  return new ConnectError(`unknown service ${truncate(name, maxEchoedNameLength)}`, Code.NotFound);
}

/** Cuts `text` to at most `max` UTF-16 units without splitting a surrogate pair. */
function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  const cut = text.slice(0, max);
  const last = cut.charCodeAt(cut.length - 1);
  return last >= 0xd800 && last <= 0xdbff ? cut.slice(0, -1) : cut;
}
