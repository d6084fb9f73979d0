/** How much a {@link BoundedLog} keeps. */
export interface BoundedLogLimits {
  /** Items kept at most. */
  readonly maxItems: number;
  /** Total weight (bytes, as the log's `weigh` estimates them) kept at most. */
  readonly maxBytes: number;
}

/**
 * The newest items of a sequence, oldest first, bounded both in count and in bytes: a push that
 * goes over either bound drops the oldest items until both hold again (the newest item always
 * stays, even alone over `maxBytes`, so that the log never forgets what just happened). Readers
 * address items by position from the oldest one kept. Pushing and dropping are amortised O(1):
 * dropped slots are reclaimed in batches, never by shifting the array on every push.
 */
export class BoundedLog<T> {
  private items: T[] = [];
  private weights: number[] = [];
  /** Index in `items` of the oldest item kept. */
  private head = 0;
  private total = 0;

  /**
   * @param weigh the bytes an item holds, as far as the caller can tell; called once per push.
   * @throws RangeError when a limit is not a positive integer.
   */
  constructor(
    private readonly limits: BoundedLogLimits,
    private readonly weigh: (item: T) => number,
  ) {
    for (const [name, value] of Object.entries(limits)) {
      if (!Number.isInteger(value) || value < 1) {
        throw new RangeError(`${name} must be a positive integer, not ${value}`);
      }
    }
  }

  /** Items kept. */
  get length(): number {
    return this.items.length - this.head;
  }

  /** Their total weight. */
  get bytes(): number {
    return this.total;
  }

  /** The item at `index` from the oldest kept (0), or undefined. */
  at(index: number): T | undefined {
    return index < 0 || index >= this.length ? undefined : this.items[this.head + index];
  }

  /** The oldest item kept. */
  first(): T | undefined {
    return this.at(0);
  }

  /** Items from position `start` (from the oldest kept) up to, not including, `end`. */
  slice(start: number, end = this.length): T[] {
    return this.items.slice(this.head + Math.max(0, start), this.head + Math.min(end, this.length));
  }

  /**
   * Appends `item`, then drops the oldest items while either limit is exceeded.
   * @returns the items dropped, oldest first (empty when none).
   */
  push(item: T): T[] {
    const weight = this.weigh(item);
    this.items.push(item);
    this.weights.push(weight);
    this.total += weight;
    const dropped: T[] = [];
    while (
      this.length > 1 &&
      (this.length > this.limits.maxItems || this.total > this.limits.maxBytes)
    ) {
      dropped.push(this.items[this.head] as T);
      this.total -= this.weights[this.head] as number;
      // Released at once, so that a dropped item's memory does not wait for the compaction.
      (this.items as (T | undefined)[])[this.head] = undefined;
      this.head++;
    }
    this.compact();
    return dropped;
  }

  /**
   * Drops the `count` oldest items (all of them when there are fewer), as a retention by age does.
   * @returns the items dropped, oldest first.
   */
  dropOldest(count: number): T[] {
    const dropped = this.slice(0, Math.max(0, count));
    for (let i = 0; i < dropped.length; i++) {
      this.total -= this.weights[this.head] as number;
      (this.items as (T | undefined)[])[this.head] = undefined;
      this.head++;
    }
    this.compact();
    return dropped;
  }

  /** Forgets every item. */
  clear(): void {
    this.items = [];
    this.weights = [];
    this.head = 0;
    this.total = 0;
  }

  /** Reclaims dropped slots once they are the larger part of the arrays. */
  private compact(): void {
    if (this.head < 1024 || this.head * 2 < this.items.length) return;
    this.items = this.items.slice(this.head);
    this.weights = this.weights.slice(this.head);
    this.head = 0;
  }
}
