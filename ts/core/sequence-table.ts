/**
 * A map from sequence numbers (u32) to pending calls.
 *
 * A `Map` that sees a set and a delete per request rehashes into a fresh table every few hundred
 * requests, and V8 links each retired table to its successor (for live iterators). Once one
 * table of that chain has been promoted to the old generation, every later table stays reachable
 * through it until the next full collection: at 300,000 requests per second that promoted
 * megabytes between two scavenges and made each scavenge take milliseconds. This table is open
 * addressing (linear probing) over two flat arrays: a removed call is unreachable at once, and
 * the table allocates only when it grows or sweeps out deleted slots.
 *
 * Sequence numbers are handed out consecutively, so the key itself (masked) is the slot: the
 * calls in flight sit side by side, each at its own slot, and a lookup is one probe. A delete
 * leaves a marker that the next key landing on that slot reuses (a backward-shift delete would
 * walk the whole run of calls in flight every time).
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */

/** A deleted slot: lookups continue past it, inserts reuse it. */
const DELETED: unique symbol = Symbol('deleted')
type Slot<T> = T | typeof DELETED | undefined

const NO_KEYS = new Uint32Array(0)
// Shared by empty tables and never written: set() grows before it stores.
const NO_VALUES: undefined[] = []

export class SequenceTable<T> {
  // An empty table allocates nothing: an idle server connection carries one.
  #keys: Uint32Array = NO_KEYS
  #values: Slot<T>[] = NO_VALUES
  #mask = 0
  #size = 0
  /** Live plus deleted slots: what lengthens probes. */
  #used = 0

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
      if (v === undefined) return undefined
      if (v !== DELETED && keys[i] === key) return v
    }
  }

  has(key: number): boolean {
    return this.get(key) !== undefined
  }

  /** Stores `value` (never undefined) under `key`, replacing what was there. */
  set(key: number, value: T): void {
    if ((this.#used + 1) * 2 > this.#values.length) this.#rehash()
    const keys = this.#keys
    const values = this.#values
    const mask = this.#mask
    let free = -1
    for (let i = key & mask; ; i = (i + 1) & mask) {
      const v = values[i]
      if (v === undefined) {
        if (free < 0) {
          free = i
          this.#used++
        }
        break
      }
      if (v === DELETED) {
        if (free < 0) free = i
      } else if (keys[i] === key) {
        values[i] = value
        return
      }
    }
    keys[free] = key
    values[free] = value
    this.#size++
  }

  delete(key: number): boolean {
    if (this.#size === 0) return false
    const keys = this.#keys
    const values = this.#values
    const mask = this.#mask
    for (let i = key & mask; ; i = (i + 1) & mask) {
      const v = values[i]
      if (v === undefined) return false
      if (v !== DELETED && keys[i] === key) {
        this.#size--
        if (values[(i + 1) & mask] === undefined) {
          // Nothing probes past this slot: free it, and the deleted slots just before it.
          values[i] = undefined
          this.#used--
          for (let j = (i - 1) & mask; values[j] === DELETED; j = (j - 1) & mask) {
            values[j] = undefined
            this.#used--
          }
        } else values[i] = DELETED
        return true
      }
    }
  }

  /** The stored values, in no particular order (a copy). */
  values(): T[] {
    const out: T[] = []
    for (const v of this.#values) if (v !== undefined && v !== DELETED) out.push(v)
    return out
  }

  clear(): void {
    if (this.#used > 0) this.#values.fill(undefined)
    this.#size = 0
    this.#used = 0
  }

  /** Doubles the table, or sweeps deleted slots out when they are most of what is used. */
  #rehash(): void {
    const keys = this.#keys
    const values = this.#values
    const n = this.#size * 4 >= values.length ? Math.max(8, values.length * 2) : values.length
    this.#keys = new Uint32Array(n)
    this.#values = new Array<Slot<T>>(n).fill(undefined)
    this.#mask = n - 1
    this.#size = 0
    this.#used = 0
    for (let i = 0; i < values.length; i++) {
      const v = values[i]
      if (v !== undefined && v !== DELETED) this.set(keys[i]!, v)
    }
  }
}
