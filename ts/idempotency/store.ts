/**
 * Idempotency records: what a server remembers of each keyed call (docs/scaling.md), so that a
 * retry of the call is answered with the first run's outcome instead of running the handler
 * again, also while the first run is still going. {@link IdempotencyStore} is the contract;
 * {@link MemoryIdempotencyStore} keeps records in the process (bounded in entries and bytes),
 * {@link RedisIdempotencyStore} (ts/idempotency/redis.ts) shares them between hosts.
 * @packageDocumentation
 */
import { invalidArgument } from '../core/errors.js'

/** Which record: the caller's scope (its principal), its key, and the command it was for. */
export interface IdempotencyRef {
  /** The scope of the key (see `IdempotencyOptions.scope`); `''` for unauthenticated callers. */
  scope: string
  /** The key, as lowercase hex. */
  key: string
  /** The command of the first run: a retry must name the same one. */
  command: string
}

/** A recorded outcome: the reply as msgpack (the value, or `{ code, message, data? }` for an error). */
export interface IdempotencyOutcome {
  /** The run returned a value (otherwise it failed). */
  ok: boolean
  /** msgpack: the value, or `{ code, message, data? }`. */
  payload: Uint8Array
}

/**
 * What {@link IdempotencyStore.begin} found:
 * - `started`: no record; one saying "running, here" was made, and the caller runs the handler;
 * - `done`: the first run's outcome;
 * - `running`: the first run is under way (`changed` resolves when the record next changes, for
 *   stores that can tell; others are read again);
 * - `unknown`: the first run may have run but its outcome cannot be given (its host died
 *   mid-run, or the outcome was too large to keep);
 * - `mismatch`: the key was used for another command;
 * - `full`: the store is at its bound and takes no new record (the call does not run).
 */
export type IdempotencyState =
  | {
      /** No record was there; one saying "running, here" was made. */
      state: 'started'
    }
  | {
      /** The first run ended. */
      state: 'done'
      /** What it ended with. */
      outcome: IdempotencyOutcome
    }
  | {
      /** The first run is under way. */
      state: 'running'
      /** Resolves when the record next changes (stores that can tell). */
      changed?: Promise<void> | undefined
    }
  | {
      /** The first run's outcome cannot be given. */
      state: 'unknown'
      /** Its host stopped mid-run, its outcome was too large to keep, or the record is gone. */
      reason: 'lost' | 'not-kept' | 'expired'
    }
  | {
      /** The key was used for another command. */
      state: 'mismatch'
    }
  | {
      /** The store takes no new record. */
      state: 'full'
      /** Which bound, for the refusal's message. */
      reason: string
    }

/**
 * Where a server keeps its idempotency records. Every method may return a value or a promise.
 * A store is shared by the servers that may see retries of one another's calls: all workers
 * of a cluster, all hosts behind a balancer.
 */
export interface IdempotencyStore {
  /**
   * Atomically: reads the record of `ref`, or, when there is none, records "running" for this
   * caller and answers `started`.
   */
  begin(ref: IdempotencyRef, options: { ttl: number }): IdempotencyState | Promise<IdempotencyState>
  /** Reads the record without creating one (a missing record reads as `unknown`, `expired`). */
  read(ref: IdempotencyRef): IdempotencyState | Promise<IdempotencyState>
  /**
   * Records the outcome of a run this caller started (`undefined`: the run ended but its outcome
   * cannot be kept, so retries get `unknown`). Only the caller that got `started` completes.
   * `outcome.payload` is valid during this call only: a store keeps a copy.
   */
  complete(ref: IdempotencyRef, outcome: IdempotencyOutcome | undefined, options: { ttl: number }): void | Promise<void>
  /** Drops the "running" record of a run this caller started but never ran (its caller went first). */
  release(ref: IdempotencyRef): void | Promise<void>
}

/** Options of {@link MemoryIdempotencyStore}. */
export interface MemoryIdempotencyStoreOptions {
  /** Records kept at once (running and done); past it new keyed calls are refused with `ERR_POLYCALL_BUSY`. @defaultValue 100000 */
  maxEntries?: number | undefined
  /** Bytes of records kept at once (outcomes, keys, commands, about 96 bytes of bookkeeping each). @defaultValue 33554432 (32 MiB) */
  maxBytes?: number | undefined
  /** Largest outcome kept; a larger one is answered to its caller but retries get `ERR_POLYCALL_OUTCOME_UNKNOWN`. @defaultValue 1048576 */
  maxOutcomeBytes?: number | undefined
}

/** What one record costs beside its strings and outcome (the entry, its heap slot, the map slot). */
const ENTRY_OVERHEAD = 96

interface Entry {
  readonly id: string
  readonly command: string
  state: 'running' | 'done' | 'unknown'
  reason: 'lost' | 'not-kept'
  ok: boolean
  /** The outcome's bytes as a latin1 string: one small heap object per record, no backing store. */
  payload: string | undefined
  bytes: number
  expires: number
  /** Resolves the promise of callers waiting for this record to change. */
  wake: (() => void) | undefined
  changed: Promise<void> | undefined
}

function checkBound(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw invalidArgument(`${name} must be an integer ≥ 1`)
  return value
}

/**
 * Idempotency records in this process: the default store of every server, and the one to share
 * between servers of one process. Bounded in entries and bytes; records expire after their
 * `ttl` (the call's deadline and a second, at most the server's `window`). Records are never
 * evicted early: an evicted record could let a retry run twice, so a full store refuses new
 * keyed calls (`ERR_POLYCALL_BUSY`, they never ran) until records expire.
 *
 * @example
 * ```ts
 * const store = new MemoryIdempotencyStore({ maxEntries: 50_000 })
 * const a = new PolyCallServer({ idempotency: { store } })
 * const b = new PolyCallServer({ idempotency: { store } }) // retries on b see a's outcomes
 * ```
 */
export class MemoryIdempotencyStore implements IdempotencyStore {
  /** The entry bound. */
  readonly maxEntries: number
  /** The byte bound. */
  readonly maxBytes: number
  /** The largest outcome kept. */
  readonly maxOutcomeBytes: number
  readonly #entries = new Map<string, Entry>()
  /** Entries by expiry (a binary heap). */
  readonly #heap: Entry[] = []
  #bytes = 0

  /**
   * @param options - bounds
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad bound
   */
  constructor(options: MemoryIdempotencyStoreOptions = {}) {
    this.maxEntries = checkBound(options.maxEntries, 'maxEntries', 100_000)
    this.maxBytes = checkBound(options.maxBytes, 'maxBytes', 32 * 1024 * 1024)
    this.maxOutcomeBytes = checkBound(options.maxOutcomeBytes, 'maxOutcomeBytes', 1024 * 1024)
  }

  /** Records held and their bytes (after expired ones are dropped). */
  get size(): {
    /** Records held. */
    entries: number
    /** Their bytes, as the bound counts them. */
    bytes: number
  } {
    this.#sweep(performance.now())
    return { entries: this.#entries.size, bytes: this.#bytes }
  }

  begin(ref: IdempotencyRef, options: { ttl: number }): IdempotencyState {
    const t = performance.now()
    this.#sweep(t)
    const id = `${ref.scope}\u0000${ref.key}`
    const found = this.#entries.get(id)
    if (found) return this.#state(found, ref)
    const bytes = ENTRY_OVERHEAD + 2 * (id.length + ref.command.length)
    if (this.#entries.size >= this.maxEntries) return { state: 'full', reason: `${this.maxEntries} idempotency records are held` }
    if (this.#bytes + bytes > this.maxBytes) return { state: 'full', reason: `idempotency records hold ${this.#bytes} of ${this.maxBytes} bytes` }
    const entry: Entry = {
      id,
      command: ref.command,
      state: 'running',
      reason: 'lost',
      ok: false,
      payload: undefined,
      bytes,
      expires: t + options.ttl,
      wake: undefined,
      changed: undefined,
    }
    this.#entries.set(id, entry)
    this.#bytes += bytes
    this.#push(entry)
    return { state: 'started' }
  }

  read(ref: IdempotencyRef): IdempotencyState {
    this.#sweep(performance.now())
    const found = this.#entries.get(`${ref.scope}\u0000${ref.key}`)
    return found ? this.#state(found, ref) : { state: 'unknown', reason: 'expired' }
  }

  complete(ref: IdempotencyRef, outcome: IdempotencyOutcome | undefined): void {
    const entry = this.#entries.get(`${ref.scope}\u0000${ref.key}`)
    if (!entry || entry.state !== 'running') return
    const p = outcome?.payload
    if (outcome !== undefined && p !== undefined && p.length <= this.maxOutcomeBytes && this.#bytes + p.length <= this.maxBytes) {
      entry.state = 'done'
      entry.ok = outcome.ok
      entry.payload = Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString('latin1')
      entry.bytes += p.length
      this.#bytes += p.length
    } else {
      entry.state = 'unknown'
      entry.reason = 'not-kept'
    }
    this.#wake(entry)
  }

  release(ref: IdempotencyRef): void {
    const entry = this.#entries.get(`${ref.scope}\u0000${ref.key}`)
    if (!entry || entry.state !== 'running') return
    this.#entries.delete(entry.id)
    this.#bytes -= entry.bytes
    // Its heap slot stays until it expires; the sweep skips entries no longer in the map.
    this.#wake(entry)
  }

  #state(entry: Entry, ref: IdempotencyRef): IdempotencyState {
    if (entry.command !== ref.command) return { state: 'mismatch' }
    switch (entry.state) {
      case 'done':
        return { state: 'done', outcome: { ok: entry.ok, payload: Buffer.from(entry.payload!, 'latin1') } }
      case 'unknown':
        return { state: 'unknown', reason: entry.reason }
      default:
        entry.changed ??= new Promise<void>((resolve) => (entry.wake = resolve))
        return { state: 'running', changed: entry.changed }
    }
  }

  #wake(entry: Entry): void {
    const wake = entry.wake
    entry.wake = undefined
    entry.changed = undefined
    wake?.()
  }

  /** Drops expired records (a running one stays until its run completes). */
  #sweep(t: number): void {
    const heap = this.#heap
    while (heap.length > 0 && heap[0]!.expires <= t) {
      const entry = this.#pop()!
      if (this.#entries.get(entry.id) !== entry) continue
      if (entry.state === 'running') {
        // A run past its record's time: keep it until it completes, a second at a time.
        entry.expires = t + 1000
        this.#push(entry)
        continue
      }
      this.#entries.delete(entry.id)
      this.#bytes -= entry.bytes
    }
  }

  #push(entry: Entry): void {
    const heap = this.#heap
    heap.push(entry)
    let i = heap.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (heap[parent]!.expires <= entry.expires) break
      heap[i] = heap[parent]!
      i = parent
    }
    heap[i] = entry
  }

  #pop(): Entry | undefined {
    const heap = this.#heap
    const top = heap[0]
    const last = heap.pop()
    if (heap.length === 0 || last === undefined) return top
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      if (l >= heap.length) break
      const r = l + 1
      const c = r < heap.length && heap[r]!.expires < heap[l]!.expires ? r : l
      if (heap[c]!.expires >= last.expires) break
      heap[i] = heap[c]!
      i = c
    }
    heap[i] = last
    return top
  }
}
