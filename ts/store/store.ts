/**
 * Snapshot stores: where state-machine snapshots live between processes and hosts, with
 * optimistic concurrency. Every record carries a version (1 for the first save, one more for
 * each save after it); a writer that names the version it read (`ifVersion`) loses with
 * `ERR_POLYCALL_CONFLICT` when another writer saved in between.
 * @packageDocumentation
 */
import { abortedError, checkSignal, checkTimeout, type CallOptions } from '../core/abort.js'
import { ErrorCode, PolyCallError, invalidArgument } from '../core/errors.js'
import type { StateMachineSnapshot } from '../state/machine.js'

/** A stored snapshot and its version. */
export interface StoredSnapshot<T = StateMachineSnapshot> {
  /** The snapshot as it was saved (a fresh copy each time: changing it changes nothing stored). */
  snapshot: T
  /** The record's version: 1 after the first save, one more after each save. */
  version: number
}

/** Options of {@link SnapshotStore.save} and {@link SnapshotStore.delete}. */
export interface SaveOptions extends CallOptions {
  /**
   * Write only if the stored version is this one (0: only if nothing is stored); otherwise
   * the call rejects with `ERR_POLYCALL_CONFLICT` and nothing changes. Omitted, the write is
   * unconditional (last writer wins). @defaultValue unconditional
   */
  ifVersion?: number | undefined
}

/**
 * Where snapshots are kept, by id, with optimistic concurrency. polycall ships
 * {@link MemorySnapshotStore} (one process), {@link FileSnapshotStore} (one host, several
 * processes) and {@link RedisSnapshotStore} (several hosts); any object with these three
 * methods and the same guarantees works with {@link persistState}.
 *
 * @typeParam T - the snapshot type (JSON-serialisable) @defaultValue StateMachineSnapshot
 * @example
 * ```ts
 * const stored = await store.load('order-42')
 * const version = await store.save('order-42', sm.snapshot(), { ifVersion: stored?.version ?? 0 })
 * ```
 */
export interface SnapshotStore<T = StateMachineSnapshot> {
  /**
   * Reads a record.
   *
   * @param id - the record's id (1 to 256 UTF-8 bytes)
   * @param options - `timeout`, `signal`
   * @returns the snapshot and its version, or undefined when nothing is stored under `id`
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT`, `ERR_POLYCALL_PAYLOAD_TOO_LARGE` (a stored record
   *   over the store's `maxBytes`), `ERR_POLYCALL_STORE_FAILED`, `ERR_POLYCALL_TIMEOUT`, `ERR_POLYCALL_ABORTED`
   */
  load(id: string, options?: CallOptions): Promise<StoredSnapshot<T> | undefined>
  /**
   * Writes a record, atomically: a reader sees the old record or the new one, never a mix.
   *
   * @param id - the record's id (1 to 256 UTF-8 bytes)
   * @param snapshot - JSON-serialisable data
   * @param options - `ifVersion` (compare-and-set), `timeout`, `signal`
   * @returns the new version
   * @throws `ERR_POLYCALL_CONFLICT` when `ifVersion` is not the stored version,
   *   `ERR_POLYCALL_INVALID_ARGUMENT` (bad id, data that is not JSON), `ERR_POLYCALL_PAYLOAD_TOO_LARGE`,
   *   `ERR_POLYCALL_STORE_FAILED`, `ERR_POLYCALL_TIMEOUT`, `ERR_POLYCALL_ABORTED` (a write that
   *   timed out or was aborted may still have been applied: load to know)
   */
  save(id: string, snapshot: T, options?: SaveOptions): Promise<number>
  /**
   * Removes a record.
   *
   * @param id - the record's id
   * @param options - `ifVersion` (remove only that version), `timeout`, `signal`
   * @returns whether a record was removed
   * @throws `ERR_POLYCALL_CONFLICT` when a record exists and `ifVersion` is not its version,
   *   `ERR_POLYCALL_STORE_FAILED`, `ERR_POLYCALL_TIMEOUT`, `ERR_POLYCALL_ABORTED`
   */
  delete(id: string, options?: SaveOptions): Promise<boolean>
}

/** Options shared by the stores polycall ships. */
export interface SnapshotStoreOptions {
  /**
   * Largest serialised snapshot (UTF-8 bytes of its JSON), refused on save and on load with
   * `ERR_POLYCALL_PAYLOAD_TOO_LARGE`. @defaultValue 8388608 (8 MiB)
   */
  maxBytes?: number | undefined
}

/** @internal Default of {@link SnapshotStoreOptions.maxBytes}. */
export const DEFAULT_MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024
/** @internal Longest id in UTF-8 bytes. */
export const MAX_ID_BYTES = 256
const LONE_SURROGATE = /\p{Cs}/u

/** @internal Checks an id. */
export function checkId(id: unknown): string {
  if (typeof id !== 'string' || id.length === 0) throw invalidArgument('a snapshot id must be a non-empty string')
  if (LONE_SURROGATE.test(id)) throw invalidArgument('a snapshot id must not contain lone surrogates')
  if (Buffer.byteLength(id) > MAX_ID_BYTES) throw invalidArgument(`a snapshot id must be at most ${MAX_ID_BYTES} UTF-8 bytes`)
  return id
}

/** @internal Checks `maxBytes`. */
export function checkMaxBytes(value: unknown): number {
  if (value === undefined) return DEFAULT_MAX_SNAPSHOT_BYTES
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) throw invalidArgument('maxBytes must be a positive integer')
  return value
}

/** @internal Checks `ifVersion`: undefined or an integer ≥ 0. */
export function checkIfVersion(value: unknown): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw invalidArgument('ifVersion must be an integer ≥ 0')
  return value
}

/** @internal Checks the options of a store call; throws at once when the signal has aborted. */
export function checkCall(options: CallOptions | undefined): void {
  if (options === undefined) return
  if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object')
  const signal = checkSignal(options.signal)
  checkTimeout(options.timeout)
  if (signal?.aborted) throw abortedError(signal)
}

/** @internal Serialises a snapshot, bounded by `maxBytes`. */
export function serialise(snapshot: unknown, maxBytes: number): string {
  let text: string | undefined
  try {
    text = JSON.stringify(snapshot)
  } catch (cause) {
    throw new PolyCallError(ErrorCode.INVALID_ARGUMENT, 'the snapshot cannot be serialised as JSON', { cause })
  }
  if (text === undefined) throw invalidArgument('the snapshot cannot be serialised as JSON')
  tooLarge(Buffer.byteLength(text), maxBytes)
  return text
}

/** @internal Throws PAYLOAD_TOO_LARGE past the bound. */
export function tooLarge(bytes: number, maxBytes: number): void {
  if (bytes > maxBytes) {
    throw new PolyCallError(ErrorCode.PAYLOAD_TOO_LARGE, `a snapshot of ${bytes} bytes is over the store's maxBytes of ${maxBytes}`)
  }
}

/** @internal Parses stored snapshot text. */
export function parseStored(text: string, id: string): unknown {
  try {
    return JSON.parse(text) as unknown
  } catch (cause) {
    throw new PolyCallError(ErrorCode.STORE_FAILED, `the stored snapshot of ${JSON.stringify(id)} is not valid JSON`, { cause })
  }
}

/** @internal The error of a lost compare-and-set. */
export function conflict(id: string, expected: number, actual: number): PolyCallError {
  const err = new PolyCallError(
    ErrorCode.CONFLICT,
    `the snapshot ${JSON.stringify(id)} is at version ${actual}, not ${expected}: another writer saved first`,
  ) as PolyCallError & { version: number }
  err.version = actual
  return err
}

/** @internal Wraps a store back end's failure (unless it is already coded). */
export function storeFailed(e: unknown, what: string): PolyCallError {
  if (e instanceof PolyCallError) return e
  if (e !== null && typeof e === 'object' && (e as { name?: unknown }).name === 'PolyCallError') return e as PolyCallError
  const message = e instanceof Error ? e.message : String(e)
  return new PolyCallError(ErrorCode.STORE_FAILED, `${what}: ${message}`, { cause: e })
}

/**
 * Keeps snapshots in this process's memory: the default store, for one process and for tests.
 * Records are kept as JSON text, so a caller's later changes to an object it saved or loaded
 * change nothing stored. Records stay until deleted.
 *
 * @typeParam T - the snapshot type @defaultValue StateMachineSnapshot
 * @example
 * ```ts
 * const store = new MemorySnapshotStore()
 * const persisted = await resumeState(sm, store, 'order-42')
 * ```
 */
export class MemorySnapshotStore<T = StateMachineSnapshot> implements SnapshotStore<T> {
  readonly #records = new Map<string, { text: string; version: number }>()
  readonly #maxBytes: number

  /**
   * @param options - `maxBytes`
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad option
   */
  constructor(options: SnapshotStoreOptions = {}) {
    this.#maxBytes = checkMaxBytes(options.maxBytes)
  }

  /** Number of records held. */
  get size(): number {
    return this.#records.size
  }

  /** {@inheritDoc SnapshotStore.load} */
  async load(id: string, options?: CallOptions): Promise<StoredSnapshot<T> | undefined> {
    checkId(id)
    checkCall(options)
    const record = this.#records.get(id)
    if (!record) return undefined
    return { snapshot: JSON.parse(record.text) as T, version: record.version }
  }

  /** {@inheritDoc SnapshotStore.save} */
  async save(id: string, snapshot: T, options: SaveOptions = {}): Promise<number> {
    checkId(id)
    checkCall(options)
    const ifVersion = checkIfVersion(options.ifVersion)
    const text = serialise(snapshot, this.#maxBytes)
    const current = this.#records.get(id)?.version ?? 0
    if (ifVersion !== undefined && ifVersion !== current) throw conflict(id, ifVersion, current)
    const version = current + 1
    this.#records.set(id, { text, version })
    return version
  }

  /** {@inheritDoc SnapshotStore.delete} */
  async delete(id: string, options: SaveOptions = {}): Promise<boolean> {
    checkId(id)
    checkCall(options)
    const ifVersion = checkIfVersion(options.ifVersion)
    const current = this.#records.get(id)?.version
    if (current === undefined) return false
    if (ifVersion !== undefined && ifVersion !== current) throw conflict(id, ifVersion, current)
    return this.#records.delete(id)
  }
}
