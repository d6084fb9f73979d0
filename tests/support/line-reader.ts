/** Reads UTF-8 lines from a stream of byte chunks; `next()` gives undefined at the end. */
export function lineReader(chunks: AsyncIterator<Uint8Array>): {
  next(): Promise<string | undefined>;
} {
  const decoder = new TextDecoder();
  let buffer = "";
  let ended = false;
  return {
    async next() {
      for (;;) {
        const newline = buffer.indexOf("\n");
        if (newline >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          return line;
        }
        if (ended) {
          const rest = buffer;
          buffer = "";
          return rest === "" ? undefined : rest;
        }
        const chunk = await chunks.next();
        if (chunk.done) {
          ended = true;
          buffer += decoder.decode();
        } else {
          buffer += decoder.decode(chunk.value, { stream: true });
        }
      }
    },
  };
}
