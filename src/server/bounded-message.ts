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
