/**
 * Calls `fn` on every item, at most `limit` calls in flight at once: a fixed number of workers,
 * each taking the next item when its call is done. Items start in order. Rejects as soon as a
 * call rejects (calls in flight then go on, and workers still take items).
 */
export async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (let index = next++; index < items.length; index = next++) {
      await fn(items[index] as T, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
