/** The replication stamp of a change: its hybrid logical clock reading and the node that made it. */
export interface Stamp {
  readonly hlc: bigint;
  readonly origin: string;
}

/**
 * Orders changes for last-writer-wins: by clock, then by node id, so that every node picks the
 * same winner whatever order changes arrive in. Negative when `a` is older than `b`.
 */
export function compareStamps(a: Stamp, b: Stamp): number {
  if (a.hlc !== b.hlc) return a.hlc < b.hlc ? -1 : 1;
  return a.origin < b.origin ? -1 : a.origin > b.origin ? 1 : 0;
}
