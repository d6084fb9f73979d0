/**
 * Strings kept in ascending order (by UTF-16 code units, which for the ASCII keys used here is the
 * byte order Redis' sorted sets use): O(log n) lookups, O(n) inserts and deletes by moving the
 * array, which for the counts the saga store keeps (tens of thousands) costs microseconds.
 */
export class SortedKeys {
  readonly #keys: string[] = [];

  get size(): number {
    return this.#keys.length;
  }

  /** Adds `key`; a key already there is not added twice. */
  add(key: string): void {
    const at = this.#search(key);
    if (this.#keys[at] !== key) this.#keys.splice(at, 0, key);
  }

  /** Removes `key`, if there. */
  delete(key: string): void {
    const at = this.#search(key);
    if (this.#keys[at] === key) this.#keys.splice(at, 1);
  }

  /** The smallest key, if any. */
  first(): string | undefined {
    return this.#keys[0];
  }

  /** Up to `limit` keys greater than `after` ("" for the first), ascending. */
  after(after: string, limit: number): string[] {
    let at = this.#search(after);
    if (this.#keys[at] === after) at++;
    return this.#keys.slice(at, at + limit);
  }

  /** The first index whose key is not less than `key`. */
  #search(key: string): number {
    let low = 0;
    let high = this.#keys.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((this.#keys[middle] as string) < key) low = middle + 1;
      else high = middle;
    }
    return low;
  }
}
