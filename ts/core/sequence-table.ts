/**
 * A map from sequence numbers (u32) to pending calls.
 *
 * A `Map` that sees a set and a delete per request rehashes into a fresh table every few hundred
 * requests, and V8 links each retired table to its successor (for live iterators). Once one
 * table of that chain has been promoted to the old generation, every later table stays reachable
 * through it until the next full collection: at 300,000 requests per second that promoted
 * megabytes between two scavenges and made each scavenge take milliseconds. This table is open
 * addressing over two flat arrays with backward-shift deletion: it only allocates when it
 * grows, and a removed call is unreachable at once.
 *
 * Sequence numbers are handed out consecutively, so the key itself (masked) is the slot.
 * @internal
 * @packageDocumentation
 */
const NO_KEYS = new Uint32Array(0)
// Shared by empty tables and never written: set() grows before it stores.
const NO_VALUES: undefined[] = []

export class SequenceTable<T> {
  // An empty table allocates nothing: an idle server connection carries one.
  #keys: Uint32Array = NO_KEYS
  #values: (T | undefined)[] = NO_VALUES as (T | undefined)[]
  #mask = 0
  #size = 0

  get size(): number {
    return this.#size
  }

  get(key: number): T | undefined {
    if (this.#size === 0) return undefined
    const keys = this.#keys
    const values = this.#values
    const mask = this.#mask
    for (let i = key & mask; ; i = (i + 1) & mask) {
      const v = values[i]
      if (v === undefined || keys[i] === key) return v
    }
  }

  has(key: number): boolean {
    return this.get(key) !== undefined
  }

  /** Stores `value` (never undefined) under `key`, replacing what was there. */
  set(key: number, value: T): void {
    if ((this.#size + 1) * 2 > this.#values.length) this.#grow()
    const keys = this.#keys
    const values = this.#values
    const mask = this.#mask
    for (let i = key & mask; ; i = (i + 1) & mask) {
      if (values[i] === undefined) {
        keys[i] = key
        values[i] = value
        this.#size++
        return
      }
      if (keys[i] === key) {
        values[i] = value
        return
      }
    }
  }

  delete(key: number): boolean {
    if (this.#size === 0) return false
    const keys = this.#keys
    const values = this.#values
    const mask = this.#mask
    let i = key & mask
    for (; ; i = (i + 1) & mask) {
      const v = values[i]
      if (v === undefined) return false
      if (keys[i] === key) break
    }
    // Backward-shift: pull later entries of the probe run into the hole, so lookups never need
    // tombstones.
    for (let j = (i + 1) & mask; values[j] !== undefined; j = (j + 1) & mask) {
      const home = keys[j]! & mask
      // Move j into i unless its home lies cyclically in (i, j].
      const stays = i <= j ? home > i && home <= j : home > i || home <= j
      if (!stays) {
        keys[i] = keys[j]!
        values[i] = values[j]
        i = j
      }
    }
    values[i] = undefined
    this.#size--
    return true
  }

  /** The stored values, in no particular order (a copy). */
  values(): T[] {
    const out: T[] = []
    for (const v of this.#values) if (v !== undefined) out.push(v)
    return out
  }

  clear(): void {
    if (this.#size > 0) this.#values.fill(undefined)
    this.#size = 0
  }

  #grow(): void {
    const keys = this.#keys
    const values = this.#values
    const n = Math.max(8, values.length * 2)
    this.#keys = new Uint32Array(n)
    this.#values = new Array<T | undefined>(n).fill(undefined)
    this.#mask = n - 1
    this.#size = 0
    for (let i = 0; i < values.length; i++) {
      const v = values[i]
      if (v !== undefined) this.set(keys[i]!, v)
    }
  }
}
