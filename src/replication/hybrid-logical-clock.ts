import type { Clock } from "../clock.js";

// Wall-clock milliseconds in the high bits, a counter in the low 16: stamps sort by time first,
// and a node can stamp 65,536 changes within one millisecond before it borrows from the next.
const logicalBits = 16n;

/**
 * A hybrid logical clock: stamps that follow wall-clock time, never go backwards, and are always
 * greater than every stamp this node has seen from others. Last-writer-wins merges between nodes
 * compare (stamp, node id).
 */
export class HybridLogicalClock {
  private last = 0n;

  constructor(private readonly clock: Clock) {}

  /** A new stamp, greater than every stamp issued or observed before. */
  now(): bigint {
    const physical = HybridLogicalClock.fromMillis(this.clock.now());
    this.last = physical > this.last ? physical : this.last + 1n;
    return this.last;
  }

  /** Takes note of a stamp made elsewhere, so that the next local stamp is greater. */
  observe(stamp: bigint): void {
    if (stamp > this.last) this.last = stamp;
  }

  /** The first stamp of wall-clock millisecond `ms` (its counter at 0). */
  static fromMillis(ms: number): bigint {
    return BigInt(Math.floor(ms)) << logicalBits;
  }

  /** The wall-clock milliseconds a stamp was made at. */
  static millisOf(stamp: bigint): number {
    return Number(stamp >> logicalBits);
  }
}
