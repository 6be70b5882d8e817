/**
 * Counters and a latency histogram for `stats()`.
 *
 * The histogram keeps counts in log-linear buckets (32 per power of two, so any reported
 * percentile is within about 3% of the true value) from 1 µs to about an hour, in a fixed
 * Uint32Array: recording is O(1) and memory does not grow with traffic.
 * @packageDocumentation
 */

/** Latency percentiles in milliseconds. */
export interface LatencySummary {
  /** Requests measured. */
  count: number
  /** Median. */
  p50: number
  /** 90th percentile. */
  p90: number
  /** 99th percentile. */
  p99: number
  /** The slowest. */
  max: number
}

// Values below 32 µs get one bucket each; above, each power of two splits into 32 buckets.
const LINEAR = 32
const BUCKETS = LINEAR + (32 - 5) * LINEAR

function bucketOf(us: number): number {
  if (us < LINEAR) return us
  const octave = 31 - Math.clz32(us)
  return LINEAR + (octave - 5) * LINEAR + ((us >>> (octave - 5)) - LINEAR)
}

function upperEdge(index: number): number {
  if (index < LINEAR) return index
  const octave = 5 + Math.floor((index - LINEAR) / LINEAR)
  const sub = (index - LINEAR) % LINEAR
  return ((LINEAR + sub + 1) * 2 ** (octave - 5)) - 1
}

/** @internal */
export class LatencyHistogram {
  #counts = new Uint32Array(BUCKETS)
  #count = 0
  #maxUs = 0

  /** Records one latency in milliseconds. */
  record(ms: number): void {
    const us = Math.min(0x7fffffff, Math.max(0, Math.round(ms * 1000)))
    if (us > this.#maxUs) this.#maxUs = us
    this.#counts[bucketOf(us)]! += 1
    this.#count++
  }

  /** The value (ms) at quantile q in [0, 1], within about 3%. */
  quantile(q: number): number {
    if (this.#count === 0) return 0
    const rank = Math.max(1, Math.ceil(q * this.#count))
    let seen = 0
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.#counts[i]!
      if (seen >= rank) return Math.min(upperEdge(i), this.#maxUs) / 1000
    }
    return this.#maxUs / 1000
  }

  summary(): LatencySummary {
    return {
      count: this.#count,
      p50: this.quantile(0.5),
      p90: this.quantile(0.9),
      p99: this.quantile(0.99),
      max: this.#maxUs / 1000,
    }
  }
}
