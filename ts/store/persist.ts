/**
 * Persisting a StateMachine in a SnapshotStore: a save after each transition (taken from the
 * machine's `transition` event, so every transition is covered however it was started), with
 * compare-and-set against the version last read or written, and a reload from the store when
 * a save loses the race.
 * @packageDocumentation
 */
import { checkTimeout } from '../core/abort.js'
import { TypedEmitter } from '../core/emitter.js'
import { ErrorCode, PolyCallError, invalidArgument, isPolyCallError } from '../core/errors.js'
import type { StateMachine, StateMachineSnapshot, TransitionCallOptions, TransitionRecord } from '../state/machine.js'
import { checkId, checkIfVersion, type SnapshotStore } from './store.js'

/** Options of {@link persistState}. */
export interface PersistOptions {
  /**
   * The stored version the machine's current content corresponds to (what {@link resumeState}
   * or `store.load()` returned); 0 when nothing is stored yet. The first save is conditional on
   * it. @defaultValue 0
   */
  version?: number | undefined
  /** Bound of each store call (load or save). @defaultValue 10000 */
  timeout?: number | undefined
}

/** Options of {@link resumeState}. */
export interface ResumeOptions {
  /** Bound of each store call, including the initial load. @defaultValue 10000 */
  timeout?: number | undefined
}

/** Payload of {@link PersistedStateEvents.saved}. */
export interface SavedEvent {
  /** The version written. */
  version: number
  /** The transitions that write covered (several when transitions came faster than saves). */
  records: TransitionRecord[]
}

/** Payload of {@link PersistedStateEvents.conflict} and {@link PersistedStateEvents.failed}. */
export interface LostEvent {
  /** `ERR_POLYCALL_CONFLICT`, or the store's error (`ERR_POLYCALL_STORE_FAILED`, `ERR_POLYCALL_TIMEOUT`, ...). */
  error: PolyCallError
  /** The transitions that were not saved; the machine no longer holds them after the reload. */
  lost: TransitionRecord[]
  /** The version the machine was reloaded at, or undefined when the reload failed too. */
  version: number | undefined
}

/** Events of a {@link PersistedState}. */
export interface PersistedStateEvents {
  /** Transitions were saved. */
  saved: [event: SavedEvent]
  /** Another writer saved first: these transitions lost and the machine was reloaded. */
  conflict: [event: LostEvent]
  /** A save or reload failed for another reason (store unreachable, timeout). */
  failed: [event: LostEvent]
}

interface Batch {
  records: TransitionRecord[]
  /** What to save; undefined for transitions seen during a reload, which are never saved. */
  snapshot: StateMachineSnapshot | undefined
  resolve: (version: number) => void
  reject: (error: PolyCallError) => void
  done: Promise<number>
}

function newBatch(snapshot: StateMachineSnapshot | undefined): Batch {
  let resolve!: (version: number) => void
  let reject!: (error: PolyCallError) => void
  const done = new Promise<number>((res, rej) => {
    resolve = res
    reject = rej
  })
  // A batch nobody awaits (transitions started with sm.transition()) must not reject unhandled.
  done.catch(() => {})
  return { records: [], snapshot, resolve, reject, done }
}

/** Consecutive reloads (with transitions arriving during each) before a reload gives up. */
const MAX_RELOADS = 16

/**
 * A state machine attached to a snapshot store: each transition is saved with
 * compare-and-set. Create it with {@link persistState} or {@link resumeState}.
 *
 * When a save loses (another process saved this id first), the transitions it carried are
 * reported lost — `transition()` rejects with `ERR_POLYCALL_CONFLICT`, the `conflict` event
 * lists them — and the machine is restored from the store, so it continues from the winner's
 * state. The same happens when a save fails for another reason, after checking whether the
 * failed write was applied after all (then it counts as saved).
 *
 * @example
 * ```ts
 * const persisted = await resumeState(sm, store, 'order-42')
 * try {
 *   await persisted.transition('PAID') // resolves once saved
 * } catch (err) {
 *   if (isPolyCallError(err) && err.code === 'ERR_POLYCALL_CONFLICT') console.log('lost; now', sm.current)
 * }
 * await persisted.close()
 * ```
 */
export class PersistedState extends TypedEmitter<PersistedStateEvents> {
  /** The machine. */
  readonly machine: StateMachine
  /** The store. */
  readonly store: SnapshotStore
  /** The record's id in the store. */
  readonly id: string
  readonly #timeout: number
  #version: number
  #pending: Batch | undefined
  #saving: Promise<void> | undefined
  #reloading: Promise<void> | undefined
  /** Transitions seen while a reload was under way: built on the lost state, or on the reloaded one. */
  #duringReload: Batch | undefined
  #needsReload = false
  #closed = false
  readonly #batches = new WeakMap<TransitionRecord, Batch>()
  readonly #onTransition = (record: TransitionRecord) => this.#record(record)

  /** @internal Use {@link persistState} or {@link resumeState}. */
  constructor(machine: StateMachine, store: SnapshotStore, id: string, version: number, timeout: number) {
    super()
    this.machine = machine
    this.store = store
    this.id = id
    this.#version = version
    this.#timeout = timeout
    machine.on('transition', this.#onTransition)
  }

  /** The stored version the machine corresponds to once pending saves are done (0: nothing stored). */
  get version(): number {
    return this.#version
  }

  /** True once {@link PersistedState.close} was called. */
  get closed(): boolean {
    return this.#closed
  }

  /**
   * Runs `machine.transition(to)` (after any reload under way), then waits until it is saved.
   *
   * @param to - the target state
   * @param options - `timeout` and `signal` of the transition itself (the save is bounded by the store timeout)
   * @returns the transition, once stored
   * @throws `ERR_POLYCALL_CONFLICT` when another writer saved first (the machine has been
   *   reloaded when this rejects), the store's errors (`ERR_POLYCALL_STORE_FAILED`,
   *   `ERR_POLYCALL_TIMEOUT`, ...), every error of {@link StateMachine.transition}, and
   *   `ERR_POLYCALL_CLOSED` after close
   */
  async transition(to: string, options?: TransitionCallOptions): Promise<TransitionRecord> {
    if (this.#closed) throw new PolyCallError(ErrorCode.CLOSED, 'the persisted state was closed')
    while (this.#reloading) await this.#reloading
    const record = await this.machine.transition(to, options)
    const batch = this.#batches.get(record)
    if (batch) await batch.done
    return record
  }

  /**
   * Waits until every transition so far is saved or reported lost.
   *
   * @returns when no save or reload is under way
   */
  async flush(): Promise<void> {
    while (this.#saving || this.#reloading) {
      await this.#saving
      await this.#reloading
    }
  }

  /**
   * Stops saving: waits for the saves under way ({@link PersistedState.flush}), then detaches
   * from the machine. Idempotent.
   *
   * @returns when detached
   */
  async close(): Promise<void> {
    this.#closed = true
    await this.flush()
    this.machine.off('transition', this.#onTransition)
  }

  /** `await using persisted = await resumeState(...)` closes it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  #record(record: TransitionRecord): void {
    if (this.#reloading) {
      const lost = (this.#duringReload ??= newBatch(undefined))
      lost.records.push(record)
      this.#batches.set(record, lost)
      return
    }
    // The snapshot is taken now, synchronously, so it holds exactly this transition's result.
    let snapshot: StateMachineSnapshot
    try {
      snapshot = this.machine.snapshot()
    } catch (e) {
      // Never throw into the machine's emit: report the transition lost instead.
      const lost = newBatch(undefined)
      lost.records.push(record)
      this.#batches.set(record, lost)
      this.#needsReload = true
      this.#lose(lost, isPolyCallError(e) ? e : new PolyCallError(ErrorCode.INTERNAL, String(e), { cause: e }), 'failed')
      return
    }
    const batch = (this.#pending ??= newBatch(snapshot))
    batch.snapshot = snapshot
    batch.records.push(record)
    this.#batches.set(record, batch)
    this.#kick()
  }

  /** Starts the save loop unless it runs; a batch queued while it was finishing starts it again. */
  #kick(): void {
    if (this.#saving || !this.#pending) return
    this.#saving = this.#saveLoop().finally(() => {
      this.#saving = undefined
      this.#kick()
    })
  }

  async #saveLoop(): Promise<void> {
    while (this.#pending) {
      const batch = this.#pending
      this.#pending = undefined
      if (this.#needsReload) {
        await this.#reload()
        if (this.#needsReload) {
          this.#lose(batch, new PolyCallError(ErrorCode.STORE_FAILED, 'the machine could not be reloaded after an earlier failure'), 'failed')
          continue
        }
        // The reload replaced this batch's content: it is lost.
        this.#lose(batch, new PolyCallError(ErrorCode.CONFLICT, 'the machine was reloaded before this transition was saved'), 'conflict')
        continue
      }
      try {
        const version = await this.store.save(this.id, batch.snapshot!, { ifVersion: this.#version, timeout: this.#timeout })
        this.#version = version
        batch.resolve(version)
        this.emit('saved', { version, records: batch.records })
      } catch (e) {
        const error = isPolyCallError(e) ? e : new PolyCallError(ErrorCode.STORE_FAILED, String(e), { cause: e })
        await this.#afterFailure(batch, error)
      }
    }
  }

  /** A save failed: reload, and report the batch (and anything queued behind it) lost, unless it was applied. */
  async #afterFailure(batch: Batch, error: PolyCallError): Promise<void> {
    const behind = this.#pending
    this.#pending = undefined
    const expected = JSON.stringify(batch.snapshot)
    const before = this.#version
    this.#needsReload = true
    const stored = await this.#reload()
    const kind = error.code === ErrorCode.CONFLICT ? 'conflict' : 'failed'
    if (kind === 'failed' && stored && stored.version === before + 1 && stored.text === expected) {
      // The write went through although its reply was lost: it counts. Transitions queued
      // behind it were undone by the reload.
      batch.resolve(stored.version)
      this.emit('saved', { version: stored.version, records: batch.records })
    } else this.#lose(batch, error, kind)
    if (behind) this.#lose(behind, error, kind)
  }

  #lose(batch: Batch, error: PolyCallError, kind: 'conflict' | 'failed'): void {
    const err = new PolyCallError(
      error.code,
      `${batch.records.map((r) => `${r.from} -> ${r.to}`).join(', ')} not saved: ${error.message}`,
      { cause: error },
    ) as PolyCallError & { lost: TransitionRecord[] }
    err.lost = batch.records
    batch.reject(err)
    this.emit(kind, { error: err, lost: batch.records, version: this.#needsReload ? undefined : this.#version })
  }

  /**
   * Restores the machine from the store. Transitions seen while restoring may have happened
   * before the restore (built on the lost state) or after it: either way the store does not
   * have them, so they are reported lost and the machine is restored again.
   */
  async #reload(): Promise<{ version: number; text: string } | undefined> {
    let result: { version: number; text: string } | undefined
    for (let round = 0; round < MAX_RELOADS; round++) {
      let finish!: () => void
      this.#reloading = new Promise<void>((r) => (finish = r))
      try {
        const stored = await this.store.load(this.id, { timeout: this.#timeout })
        if (stored) {
          const text = JSON.stringify(stored.snapshot)
          await this.machine.restore(text, { timeout: this.#timeout })
          result = { version: stored.version, text }
          this.#version = stored.version
        } else {
          // The record was deleted: the machine keeps its state and the next save creates it again.
          result = undefined
          this.#version = 0
        }
        this.#needsReload = false
      } catch (e) {
        const error = isPolyCallError(e) ? e : new PolyCallError(ErrorCode.STORE_FAILED, String(e), { cause: e })
        this.#needsReload = true
        this.emit('failed', { error, lost: [], version: undefined })
      } finally {
        this.#reloading = undefined
        finish()
      }
      const seen = this.#duringReload
      this.#duringReload = undefined
      if (!seen) return result
      this.#lose(seen, new PolyCallError(ErrorCode.CONFLICT, 'the transition was made while the machine was being reloaded'), 'conflict')
      if (this.#needsReload) return result
    }
    this.#needsReload = true
    return result
  }
}

/**
 * Attaches a machine to a store: from now on every transition is saved under `id`, each save
 * conditional on the version before it. Use {@link resumeState} to start from what is stored.
 *
 * @param machine - the state machine
 * @param store - where snapshots go
 * @param id - the record's id
 * @param options - `version` the machine corresponds to (0: nothing stored yet), store call `timeout`
 * @returns the attachment; `close()` detaches it
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad argument
 * @example
 * ```ts
 * const persisted = persistState(sm, new MemorySnapshotStore(), 'order-42')
 * await persisted.transition('READY') // saved as version 1
 * ```
 */
export function persistState(machine: StateMachine, store: SnapshotStore, id: string, options: PersistOptions = {}): PersistedState {
  checkArguments(machine, store)
  checkId(id)
  const version = checkIfVersion(options.version) ?? 0
  const timeout = checkTimeout(options.timeout) ?? 10_000
  return new PersistedState(machine, store, id, version, timeout)
}

/**
 * Restores a machine from the store (when a snapshot is stored under `id`; strictly: the
 * snapshot's checksums must be present and match), then attaches it like {@link persistState}.
 * The machine must have the hooks and guards it needs registered already: restore keeps them
 * for the transitions the snapshot has.
 *
 * @param machine - the state machine (its content is replaced by the stored snapshot, if any)
 * @param store - where snapshots are
 * @param id - the record's id
 * @param options - store call `timeout`
 * @returns the attachment, with `restored` telling whether a snapshot was found
 * @throws `ERR_POLYCALL_INTEGRITY_CHECK_FAILED` or `ERR_POLYCALL_INVALID_SNAPSHOT` for a stored
 *   snapshot that does not verify, the store's errors, `ERR_POLYCALL_INVALID_ARGUMENT`
 * @example
 * ```ts
 * const persisted = await resumeState(sm, store, 'order-42')
 * console.log(persisted.restored ? `resumed at ${sm.current}` : 'new machine')
 * ```
 */
export async function resumeState(
  machine: StateMachine,
  store: SnapshotStore,
  id: string,
  options: ResumeOptions = {},
): Promise<
  PersistedState & {
    /** True when the store held a snapshot and the machine was restored from it. */
    readonly restored: boolean
  }
> {
  checkArguments(machine, store)
  checkId(id)
  const timeout = checkTimeout(options.timeout) ?? 10_000
  const stored = await store.load(id, { timeout })
  if (stored) await machine.restore(JSON.stringify(stored.snapshot), { timeout })
  const persisted = new PersistedState(machine, store, id, stored?.version ?? 0, timeout) as PersistedState & { restored: boolean }
  persisted.restored = stored !== undefined
  return persisted
}

function checkArguments(machine: StateMachine, store: SnapshotStore): void {
  if (machine === null || typeof machine !== 'object' || typeof machine.snapshot !== 'function' || typeof machine.restore !== 'function') {
    throw invalidArgument('machine must be a StateMachine')
  }
  if (store === null || typeof store !== 'object' || typeof store.load !== 'function' || typeof store.save !== 'function') {
    throw invalidArgument('store must be a SnapshotStore')
  }
}
