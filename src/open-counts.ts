/**
 * How many things (connections, watches) each key (a client address) holds open now. A key whose
 * count falls to zero is forgotten, so what it keeps is bounded by what is open.
 */
export class OpenCounts {
  private readonly counts = new Map<string, number>();

  /** Open now under `key`. */
  of(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  open(key: string): void {
    this.counts.set(key, this.of(key) + 1);
  }

  close(key: string): void {
    const left = this.of(key) - 1;
    if (left <= 0) this.counts.delete(key);
    else this.counts.set(key, left);
  }
}
