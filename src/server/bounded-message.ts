/** Longest error message sent to a client, in characters. */
export const maxErrorMessageLength = 512;

/**
 * Cuts an error message to a bounded length, so that no response, header or trailer grows with
 * what a client sent (a long path, a huge invalid value).
 */
export function boundedMessage(message: string): string {
  if (message.length <= maxErrorMessageLength) return message;
  return `${message.slice(0, maxErrorMessageLength - 1)}…`;
}

/** Longest piece of a client's input quoted in an error message, in characters. */
export const maxQuotedInputLength = 64;

/**
 * A piece of a client's input (a path, a header value) as an error message may quote it: as a
 * JSON string, cut to {@link maxQuotedInputLength} characters, so that a message points at what
 * was wrong without repeating a long input.
 */
export function quotedInput(text: string): string {
  if (text.length <= maxQuotedInputLength) return JSON.stringify(text);
  return `${JSON.stringify(text.slice(0, maxQuotedInputLength))}… (${text.length} characters)`;
}
