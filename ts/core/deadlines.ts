/**
 * Many deadlines on one timer.
 *
 * A `setTimeout` per request costs a timer-list insert, an `unref` and a `clearTimeout`, and at
 * one request in flight Node also creates and drops the timer list each time. Here deadlines are
 * grouped into buckets of {@link GRANULARITY_MS}; a min-heap orders the buckets and one unref'd
 * timer waits for the earliest. Adding and removing a deadline is a Set operation. A deadline
 * fires at most one bucket late.
 * @internal
 * @packageDocumentation
 */
import { MAX_TIMER_DELAY, now } from './abort.js'

/** Bucket width in milliseconds. */
export const GRANULARITY_MS = 4

/** Something with a deadline: the scheduler keeps its bucket on it. */
export interface Expiring {
  /** @internal Bucket index while scheduled, -1 otherwise. */
  deadlineBucket: number
}

export class Deadlines<T extends Expiring> {
  readonly #onExpire: (item: T) => void
  readonly #buckets = new Map<number, Set<T>>()
  readonly #heap: number[] = []
  #timer: NodeJS.Timeout | undefined
  #armedFor = Infinity

  /** @param onExpire - called once for each item whose deadline passed */
  constructor(onExpire: (item: T) => void) {
    this.#onExpire = onExpire
  }

  /** Schedules `item` at the monotonic time `deadline` (Infinity: never). */
  add(item: T, deadline: number): void {
    if (deadline === Infinity) {
      item.deadlineBucket = -1
      return
    }
    const bucket = Math.ceil(deadline / GRANULARITY_MS)
    let set = this.#buckets.get(bucket)
    if (!set) {
      set = new Set()
      this.#buckets.set(bucket, set)
      this.#push(bucket)
      if (bucket < this.#armedFor) this.#arm(bucket)
    }
    set.add(item)
    item.deadlineBucket = bucket
  }

  /** Unschedules `item` (no-op when it is not scheduled). */
  delete(item: T): void {
    const bucket = item.deadlineBucket
    if (bucket < 0) return
    item.deadlineBucket = -1
    const set = this.#buckets.get(bucket)
    if (set && set.delete(item) && set.size === 0) this.#buckets.delete(bucket)
    // The heap keeps the bucket number; an empty bucket is skipped when it comes up.
  }

  /** Number of scheduled items. */
  get size(): number {
    let n = 0
    for (const set of this.#buckets.values()) n += set.size
    return n
  }

  #fire = (): void => {
    this.#timer = undefined
    this.#armedFor = Infinity
    const current = Math.floor(now() / GRANULARITY_MS)
    while (this.#heap.length > 0 && this.#heap[0]! <= current) {
      const bucket = this.#pop()
      const set = this.#buckets.get(bucket)
      if (!set) continue
      this.#buckets.delete(bucket)
      for (const item of set) {
        item.deadlineBucket = -1
        this.#onExpire(item)
      }
    }
    while (this.#heap.length > 0 && !this.#buckets.has(this.#heap[0]!)) this.#pop()
    if (this.#heap.length > 0) this.#arm(this.#heap[0]!)
  }

  #arm(bucket: number): void {
    if (this.#timer) clearTimeout(this.#timer)
    this.#armedFor = bucket
    const delay = Math.min(MAX_TIMER_DELAY, Math.max(0, bucket * GRANULARITY_MS - now()))
    this.#timer = setTimeout(this.#fire, delay)
    this.#timer.unref()
  }

  #push(bucket: number): void {
    const h = this.#heap
    h.push(bucket)
    let i = h.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (h[parent]! <= bucket) break
      h[i] = h[parent]!
      i = parent
    }
    h[i] = bucket
  }

  #pop(): number {
    const h = this.#heap
    const top = h[0]!
    const last = h.pop()!
    if (h.length > 0) {
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        if (l >= h.length) break
        const r = l + 1
        const c = r < h.length && h[r]! < h[l]! ? r : l
        if (h[c]! >= last) break
        h[i] = h[c]!
        i = c
      }
      h[i] = last
    }
    return top
  }
}
