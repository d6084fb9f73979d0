/**
 * What outer layers derive from an entry or a tombstone and keep on it (its API message, the
 * message's encodings, the replication message carrying it): entries never change once written,
 * so what is derived once serves every listing, watcher and peer stream. Kept under symbols on the
 * object itself (a WeakMap costs more per write than it saves). The registry's view forgets them
 * when a newer change supersedes the object: the change log keeps superseded versions for readers
 * that resume, and their derived messages and encodings would otherwise stay with them (tens of
 * MB at a thousand writes a second); one such reader derives them again.
 */
const keys: symbol[] = [];

/**
 * Declares `key` as one under which something derived from entries or tombstones is kept (one
 * per kind, at load): {@link forgetDerived} clears it.
 */
export function forgottenWhenSuperseded(key: symbol): void {
  keys.push(key);
}

/** Forgets everything derived from `carrier` (an entry or tombstone a newer change superseded). */
export function forgetDerived(carrier: object): void {
  const slots = carrier as Record<symbol, unknown>;
  // Set to undefined rather than deleted: deleting a property changes the object's shape.
  for (const key of keys) if (slots[key] !== undefined) slots[key] = undefined;
}
