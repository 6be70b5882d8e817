/**
 * Many deadlines on one timer.
 *
 * A `setTimeout` per request costs a timer-list insert, an `unref` and a `clearTimeout`, and at
 * one request in flight Node also creates and drops the timer list each time. Here deadlines are
 * grouped into buckets of {@link GRANULARITY_MS}; a min-heap orders the buckets and one unref'd
 * timer waits for the earliest. A bucket is an array and each item remembers its slot, so adding
 * is a push and removing a swap with the last element (a Set's delete rehashes as it shrinks,
 * which showed up in profiles). A deadline fires at most one bucket late.
 *
 * A bucket that empties stays scheduled, so a server whose handlers finish at once does not
 * create, push and drop a bucket per request, and adding to or deleting from an existing bucket
 * costs nothing extra. Before a new bucket is created, the empty ones are swept out (map and
 * heap) if the heap has grown to twice what survived the last sweep, and to at least
 * {@link EMPTY_BUCKETS}: the memory follows the items scheduled (at most twice the buckets
 * alive at the last sweep, plus that many), never the number of distinct deadlines seen, and
 * sweeping costs at most two heap entries' work per bucket created. Empty buckets left after a
 * burst also go when their time comes.
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { MAX_TIMER_DELAY, now } from './abort.js'

/** Bucket width in milliseconds. */
export const GRANULARITY_MS = 4

/** Buckets the heap may hold, empty ones included, before a sweep is considered. */
export const EMPTY_BUCKETS = 64

/** Something with a deadline: the scheduler keeps its bucket and slot on it. */
export interface Expiring {
  /** @internal Bucket number while scheduled, -1 otherwise. */
  deadlineBucket: number
  /** @internal Slot in the bucket while scheduled. */
  deadlineSlot?: number
}

export class Deadlines<T extends Expiring> {
  readonly #onExpire: (item: T) => void
  readonly #buckets = new Map<number, T[]>()
  readonly #heap: number[] = []
  /** Heap size at which the next new bucket first sweeps out the empty ones. */
  #sweepAt = EMPTY_BUCKETS
  #timer: NodeJS.Timeout | undefined
  #armedFor = Infinity
  // The bucket used last and its list: consecutive requests mostly share one, so most adds and
  // deletes skip the map lookup. Forgotten whenever that bucket leaves the map.
  #lastBucket = NaN
  #lastList: T[] | undefined

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
    let list = bucket === this.#lastBucket ? this.#lastList : this.#buckets.get(bucket)
    if (!list) {
      if (this.#heap.length >= this.#sweepAt) this.#sweep()
      list = []
      this.#buckets.set(bucket, list)
      this.#push(bucket)
      if (bucket < this.#armedFor) this.#arm(bucket)
    }
    this.#lastBucket = bucket
    this.#lastList = list
    item.deadlineSlot = list.length
    list.push(item)
    item.deadlineBucket = bucket
  }

  /** Unschedules `item` (no-op when it is not scheduled). */
  delete(item: T): void {
    const bucket = item.deadlineBucket
    if (bucket < 0) return
    item.deadlineBucket = -1
    const list = bucket === this.#lastBucket ? this.#lastList : this.#buckets.get(bucket)
    if (!list) return
    const slot = item.deadlineSlot!
    const last = list.pop()!
    if (last !== item) {
      list[slot] = last
      last.deadlineSlot = slot
    }
  }

  /** Number of scheduled items. */
  get size(): number {
    let n = 0
    for (const list of this.#buckets.values()) n += list.length
    return n
  }

  /** @internal Buckets held (with or without items): what the scheduler's memory follows. */
  get buckets(): number {
    return this.#buckets.size
  }

  /** Drops every empty bucket from the map and the heap, and restores heap order. */
  #sweep(): void {
    const h = this.#heap
    let n = 0
    for (let i = 0; i < h.length; i++) {
      const bucket = h[i]!
      if (this.#buckets.get(bucket)!.length > 0) h[n++] = bucket
      else this.#drop(bucket)
    }
    h.length = n
    for (let i = (n >> 1) - 1; i >= 0; i--) this.#siftDown(i, h[i]!)
    this.#sweepAt = Math.max(EMPTY_BUCKETS, 2 * n)
  }

  #fire = (): void => {
    this.#timer = undefined
    this.#armedFor = Infinity
    const current = Math.floor(now() / GRANULARITY_MS)
    while (this.#heap.length > 0 && this.#heap[0]! <= current) {
      const bucket = this.#pop()
      const list = this.#buckets.get(bucket)
      if (!list) continue
      this.#drop(bucket)
      for (const item of list) {
        // An earlier callback may have settled (and unscheduled) a later item of this bucket.
        if (item.deadlineBucket !== bucket) continue
        item.deadlineBucket = -1
        this.#onExpire(item)
      }
    }
    // Drop emptied buckets from the front, so the timer waits for a bucket with items in it.
    while (this.#heap.length > 0 && this.#buckets.get(this.#heap[0]!)!.length === 0) this.#drop(this.#pop())
    if (this.#heap.length > 0) this.#arm(this.#heap[0]!)
  }

  /** Removes a bucket from the map (and from the cache of the last one used). */
  #drop(bucket: number): void {
    this.#buckets.delete(bucket)
    if (bucket === this.#lastBucket) {
      this.#lastBucket = NaN
      this.#lastList = undefined
    }
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
    if (h.length > 0) this.#siftDown(0, last)
    return top
  }

  /** Places `value` at `i` or below it, moving smaller children up. */
  #siftDown(i: number, value: number): void {
    const h = this.#heap
    for (;;) {
      const l = 2 * i + 1
      if (l >= h.length) break
      const r = l + 1
      const c = r < h.length && h[r]! < h[l]! ? r : l
      if (h[c]! >= value) break
      h[i] = h[c]!
      i = c
    }
    h[i] = value
  }
}
