import type { Message } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";

// Built when first needed: the process's first ConnectError loads Node's fetch implementation (its
// Headers), which a node's start does not otherwise need.
let closedEarlyError: ConnectError | undefined;
const closedEarly = () =>
  (closedEarlyError ??= new ConnectError("the stream was closed before it ended", Code.Canceled));

/**
 * Opens a streaming call (`open`, called here, so that a layer that throws at once is reported
 * like one that throws later), passes its messages through and tells `onEnd` once how it ended: with
 * `undefined` when it ended normally; with the error it threw; with the reason its call was
 * aborted (a deadline, a cancelled client) when it ended quietly on that signal; or with a
 * CANCELED error when the transport stopped reading before the end (the client went away).
 * When the stream threw, what `onEnd` returns (if anything) is thrown in place of the error, so
 * that an interceptor may replace it.
 */
export async function* reportingEnd(
  open: () => AsyncIterable<Message>,
  context: HandlerContext,
  onEnd: (error: unknown) => unknown,
): AsyncIterable<Message> {
  let reported = false;
  try {
    yield* open();
    reported = true;
    onEnd(abortReasonOf(context));
  } catch (error) {
    reported = true;
    throw onEnd(error) ?? error;
  } finally {
    if (!reported) onEnd(abortReasonOf(context) ?? closedEarly());
  }
}

/** Why the call was aborted, if it was, as the client saw it. */
function abortReasonOf(context: HandlerContext): ConnectError | undefined {
  if (!context.signal.aborted) return undefined;
  const reason: unknown = context.signal.reason;
  return reason instanceof ConnectError ? reason : undefined;
}
