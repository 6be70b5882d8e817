/**
 * User state machines: {@link StateMachine} and its {@link State} views, over the Rust core
 * (`polycall_core::state`). The core owns the states, the transition table, the current state,
 * locks, metadata, history, counters and checksums, and decides whether a transition may
 * happen; guards, hooks and state handlers are JS functions run here, and their outcome is
 * recorded by the core.
 *
 * Rules (docs/protocol.md §9.2, node-polycall's): a transition is keyed `from -> to` and fires only
 * from its source; the checks run in node-polycall's order (missing transition, self-transition
 * unless `allowSelfTransitions`, locked source or target, then the guard); locking is strict;
 * history keeps the newest `maxHistory` entries. Additions: a final state cannot be left, limits
 * default to the C library's 32 states / 64 transitions / 31-byte names, errors carry the C
 * library's `polycall_sm_status_t` in `errno`.
 *
 * Performance: a transition with no guard or hook is one synchronous call into the addon without
 * arguments (the machine and the target go into a shared mailbox; the core checks, commits and
 * records it, stamped by the addon's clock), and `transition()` returns an already-settled
 * promise; the `transition` event is built only while someone listens. Anything with a guard or
 * hook goes through a FIFO queue, so transitions never interleave. Snapshots cross the boundary
 * once each way: as JSON text, or in the compact binary form of {@link StateMachine.snapshotBytes}.
 */
import { EventEmitter } from 'node:events'
import type { BindingStateInfo } from '../../binding.cjs'
import { ErrorCode, PolyCallError, invalidArgument } from '../core/errors.js'
import { checkOptionKeys, optionKeys } from '../core/options.js'
import { fromNative, native } from '../native.js'
import type { Identity } from '../secure/identity.js'
import { signSnapshot, verifySnapshot } from '../secure/signature.js'
import { type Deadline, MAX_DELAY, type WaitOptions, checkSignal, checkTimeout, deadline, raceDeadline } from './wait.js'

/** Options of {@link StateMachine}. */
export interface StateMachineOptions {
  /**
   * History entries kept; the oldest is dropped first. 0 also means 100 (node-polycall's rule).
   * @defaultValue 100
   */
  maxHistory?: number | undefined
  /**
   * Whether a transition from a state to itself may fire (it must still be added).
   * @defaultValue false
   */
  allowSelfTransitions?: boolean | undefined
  /** Most states; one more throws `ERR_POLYCALL_MAX_STATES_REACHED`. @defaultValue 32 (the C library's) */
  maxStates?: number | undefined
  /** Most transitions; one more throws `ERR_POLYCALL_MAX_TRANSITIONS_REACHED`. @defaultValue 64 (the C library's) */
  maxTransitions?: number | undefined
  /**
   * Longest state name in UTF-8 bytes; longer throws `ERR_POLYCALL_STATE_NAME_TOO_LONG`.
   * @defaultValue 31 (the C library's 32-byte field minus its NUL)
   */
  maxNameLength?: number | undefined
}

/** @internal Every key of {@link StateMachineOptions}: others are refused. */
const STATE_MACHINE_OPTION_KEYS = optionKeys<StateMachineOptions>()(['maxHistory', 'allowSelfTransitions', 'maxStates', 'maxTransitions', 'maxNameLength'])

/** What guards and hooks receive. */
export interface TransitionContext {
  /** The state being left. */
  readonly from: string
  /** The state being entered. */
  readonly to: string
  /** Aborts when the caller's `signal` or `timeout` ends the call; pass it on to long work. */
  readonly signal: AbortSignal
}

/** Decides whether a transition may fire; a falsy result, a throw or a rejection refuses it. */
export type Guard = (context: TransitionContext) => unknown

/** Runs around a transition or on entering or leaving a state; a throw or rejection fails it. */
export type TransitionHook = (context: TransitionContext) => void | Promise<void>

/** Options of {@link StateMachine.addTransition}. */
export interface TransitionOptions {
  /** Sync or async; runs after the core's checks, before anything else. @defaultValue none */
  guard?: Guard | undefined
  /** Runs after the guard and the source state's `onExit`, before the switch. @defaultValue none */
  before?: TransitionHook | undefined
  /** Runs after the switch and the target state's `onEnter`. @defaultValue none */
  after?: TransitionHook | undefined
}

/** Options of {@link StateMachine.addState}. */
export interface StateOptions {
  /** The endpoint. @defaultValue `"/" + name` trimmed, lower-cased, whitespace runs as `-` (node-polycall's) */
  endpoint?: string | undefined
  /** A final state cannot be left and takes no outgoing transition. @defaultValue false */
  final?: boolean | undefined
  /** Do not make this state current even if the machine has none yet. @defaultValue false */
  deferred?: boolean | undefined
  /** Extra metadata (JSON-serialisable values), stored after `createdAt`, `version`, `lastModified`. @defaultValue none */
  metadata?: Record<string, unknown> | undefined
  /** Handler run when a transition enters this state (after the switch, before `after`). @defaultValue none */
  onEnter?: TransitionHook | undefined
  /** Handler run when a transition leaves this state (after the guard, before `before`). @defaultValue none */
  onExit?: TransitionHook | undefined
  /** Integrity hook for {@link StateMachine.verify}; returning false fails the check (the C library's user hook). @defaultValue none */
  verify?: ((state: State) => boolean) | undefined
}

/** Options of {@link StateMachine.transition}: bound the wait for the queue, the guard and the hooks. */
export type TransitionCallOptions = WaitOptions

/** A completed transition (also the history entry). */
export interface TransitionRecord {
  /** The state left. */
  from: string
  /** The state entered. */
  to: string
  /** When, in milliseconds since the Unix epoch. */
  timestamp: number
}

/** Payload of the `locked` and `unlocked` events. */
export interface LockEvent {
  /** The state. */
  state: string
  /** When, in milliseconds since the Unix epoch. */
  timestamp: number
}

/** Events of a {@link StateMachine}. */
export interface StateMachineEvents {
  /** A transition completed (emitted before its `transition()` promise settles). */
  transition: [record: TransitionRecord]
  /** A state was locked. */
  locked: [event: LockEvent]
  /** A state was unlocked. */
  unlocked: [event: LockEvent]
  /** A `transition()` call failed (emitted only while someone listens, so it never throws). */
  error: [error: PolyCallError]
}

/** node-polycall's JSON form of a state: the text its checksum covers, keys in this order. */
export interface NodeStateJson {
  /** State name. */
  name: string
  /** Locked flag. */
  isLocked: boolean
  /** Endpoint. */
  endpoint: string
  /**
   * Metadata in JavaScript's property order: integer-like keys first, then insertion order
   * (`createdAt`, `version`, `lastModified`, then `lockedAt` and user keys as they were set).
   */
  metadata: Record<string, unknown>
  /** Targets of the state's outgoing transitions, in the order added. */
  transitions: string[]
}

/** node-polycall's state snapshot. */
export interface StateSnapshot {
  /** When it was taken (ms). */
  timestamp: number
  /** The state. */
  state: NodeStateJson
  /** Java `String.hashCode` of `JSON.stringify(state)` over UTF-16 units, unsigned; 0 is malformed. */
  checksum: number
}

/** One state of a {@link StateMachineSnapshot}. */
export interface StateMachineSnapshotState {
  /** State name. */
  name: string
  /** The state's own snapshot. */
  snapshot: StateSnapshot
  /** Final flag (absent from node-polycall snapshots: false). */
  final?: boolean
}

/**
 * A machine snapshot: plain JSON-serialisable data. polycall writes node-polycall's layout
 * (`timestamp`, `currentState`, `states`, `history`) plus `format`, `final` flags, the
 * `transitions` table and `checksum`, the Java hash of the snapshot's compact JSON without its
 * `checksum` member. A node-polycall snapshot (no `format`, `transitions`, `checksum`) restores
 * only with `{ legacy: true }` (see {@link RestoreOptions.legacy}).
 */
export interface StateMachineSnapshot {
  /** `'polycall.state-machine/1'`; absent in node-polycall snapshots. */
  format?: string
  /** When it was taken (ms). */
  timestamp: number
  /** The current state, or null. */
  currentState: string | null
  /** The states, in the order they were added. */
  states: StateMachineSnapshotState[]
  /** The transition table; absent in node-polycall snapshots. */
  transitions?: {
    /** The source state. */
    from: string
    /** The target state. */
    to: string
  }[]
  /** History, oldest first. */
  history: TransitionRecord[]
  /** Machine checksum; absent in node-polycall snapshots. */
  checksum?: number
}

/**
 * Options of {@link StateMachine.restore}. Restore is strict by default: only polycall's own
 * layout, with its `format`, `transitions` table and machine `checksum`, is accepted.
 */
export interface RestoreOptions extends WaitOptions {
  /**
   * Also accept node-polycall's layout: a snapshot with none of `format`, `transitions` and
   * `checksum`. No machine checksum covers its current state, history or table, so it is
   * checked as far as it can be: every state's own checksum and references; a history in
   * which each entry is a transition of the restored table (the states' `transitions` lists,
   * plus the live transitions between states the snapshot also has), starts where the entry
   * before it ended, and ends in the current state; with no history, the first state (or none)
   * as the current state. A node-polycall machine that ran with `recordHistory: false`, deferred
   * its first state, or whose `after` hook threw has a current state its history does not
   * explain, and is refused. What no check can show is that a guard approved each step: only
   * pass `legacy` for snapshots from a source you trust.
   *
   * A snapshot with some but not all of the three members is refused either way: it is one of
   * polycall's with parts deleted.
   * @defaultValue false
   */
  legacy?: boolean | undefined
}

/** Options of {@link StateMachine.snapshot}. */
export interface SnapshotOptions {
  /**
   * Sign the snapshot with this identity's Ed25519 key: a `signature` member is added
   * (docs/security.md, "Snapshot signatures"). Checksums catch corruption; only a signature
   * catches a deliberate edit.
   * @defaultValue unsigned
   */
  sign?: Identity | undefined
}

/** Options of {@link StateMachine.restore} about signatures. */
export interface VerifyOptions {
  /**
   * Restore only a snapshot signed by this key (an identity, its `signingKey` bytes or the
   * `ed25519:` text): an unsigned, altered or otherwise signed snapshot is refused with
   * `ERR_POLYCALL_BAD_SIGNATURE` before anything changes.
   * @defaultValue none: a signature is neither needed nor checked
   */
  verify?: Identity | Uint8Array | string | undefined
}

/** Which layout a restored snapshot had. */
export type SnapshotFormat = 'polycall' | 'node-polycall'

/** What {@link StateMachine.diagnostics} reports about a state. */
export interface StateDiagnostics {
  /** State name. */
  name: string
  /** Metadata `version`: 1 at creation, bumped by each metadata change. */
  version: number
  /** Metadata `createdAt` (ms). */
  createdAt: number
  /** Metadata `lastModified` (ms). */
  lastModified: number
  /** Metadata `lockedAt` (ms), while locked. */
  lockedAt?: number
  /** Whether the state is locked. */
  locked: boolean
  /** Whether the state is final. */
  final: boolean
  /** The stored node-polycall checksum. */
  checksum: number
  /** The C-compatible checksum (NULL-action LP64 layout, id = the state's index). */
  cChecksum: number
  /** Transitions that entered the state. */
  transitionsIn: number
  /** Transitions that left the state. */
  transitionsOut: number
  /** Transitions from the state that were refused or failed. */
  failedTransitions: number
  /** Integrity checks run on the state. */
  integrityChecks: number
  /** Integrity checks that failed. */
  integrityFailures: number
}

/** Options of {@link StateMachine.watch}. */
export interface WatchOptions extends WaitOptions {
  /**
   * Transitions buffered while the consumer is busy; one more ends the iterator with
   * `ERR_POLYCALL_ITERATOR_OVERFLOW` (after the buffered ones). The machine never waits for a
   * consumer.
   * @defaultValue 1024
   */
  bufferSize?: number | undefined
}

interface EdgeHooks {
  guard: Guard | undefined
  before: TransitionHook | undefined
  after: TransitionHook | undefined
}

interface StateHooks {
  onEnter: TransitionHook | undefined
  onExit: TransitionHook | undefined
  verify: ((state: State) => boolean) | undefined
}

interface Waiter {
  resolve: () => void
  reject: (e: unknown) => void
  cleanup: (() => void) | undefined
}

/** Id the core never gives a state: transitions to unknown names are refused by the core. */
const NO_STATE = 0xffffffff
const FREED = -1
/** `#current` while the machine has no current state (names[-1] is undefined). */
const NO_CURRENT = -1
const MAX_STATES_LIMIT = 1 << 20
const NEVER = new AbortController().signal
const LONE_SURROGATE = /\p{Cs}/u

/**
 * The transition mailbox shared with the addon (`sm_step`): `[handle, target id]`, written just
 * before each call, so the hot call takes no arguments. The addon keeps one mailbox per thread,
 * so every copy of this module in the thread (a process that loads both the sources and the
 * build, say) shares one array, kept under a registered symbol: a second copy registering its
 * own would leave the first one's writes unread.
 */
const MAILBOX_KEY = Symbol.for('polycall.state.mailbox')
const MAILBOX = ((globalThis as { [MAILBOX_KEY]?: Float64Array })[MAILBOX_KEY] ??= new Float64Array(2))
native.smSetMailbox(MAILBOX)

// Safety net only: machines are freed explicitly by free() and dispose.
const finalizer = new FinalizationRegistry<number>((handle) => native.smFree(handle))

function call<T>(fn: () => T): T {
  try {
    return fn()
  } catch (e) {
    throw fromNative(e)
  }
}

function isFunctionOrUndefined(v: unknown): boolean {
  return v === undefined || typeof v === 'function'
}

function limit(value: unknown, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidArgument(`${name} ${String(value)} is not an integer in ${min}..${max}`)
  }
  return value
}

function isDeadlineError(e: unknown): boolean {
  return e instanceof PolyCallError && (e.code === ErrorCode.ABORTED || e.code === ErrorCode.TIMEOUT)
}

function checkName(name: unknown, what: string): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) throw invalidArgument(`${what} must be a non-empty string`)
  if (LONE_SURROGATE.test(name)) throw invalidArgument(`${what} contains a lone surrogate`)
}

async function runHook(hook: TransitionHook | undefined, ctx: TransitionContext, d: Deadline, what: string): Promise<void> {
  if (hook === undefined) return
  try {
    await raceDeadline(hook(ctx), d)
  } catch (e) {
    if (isDeadlineError(e)) throw e
    throw new PolyCallError(ErrorCode.HOOK_FAILED, `${what} of ${JSON.stringify(ctx.from)} -> ${JSON.stringify(ctx.to)} failed`, {
      cause: e,
    })
  }
}

/**
 * A machine snapshot's text for the core: with `verify`, only once its signature holds; the
 * `signature` member (which no checksum covers) is taken off either way.
 */
function unsigned(snapshot: unknown, verify: Identity | Uint8Array | string | undefined): string {
  if (verify !== undefined) return JSON.stringify(verifySnapshot(snapshot as object, verify))
  const text = snapshotText(snapshot)
  if (!text.includes('"signature"')) return text
  const parsed = JSON.parse(text) as { signature?: unknown } | null
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed) || !('signature' in parsed)) return text
  const { signature: _signature, ...rest } = parsed
  return JSON.stringify(rest)
}

/** A snapshot's JSON text: strings pass through unchanged, objects go through JSON.stringify. */
function snapshotText(snapshot: unknown): string {
  if (typeof snapshot === 'string') return snapshot
  if (snapshot === null || typeof snapshot !== 'object') {
    throw new PolyCallError(ErrorCode.INVALID_SNAPSHOT, 'a snapshot must be an object or its JSON text')
  }
  try {
    return JSON.stringify(snapshot)
  } catch (cause) {
    throw new PolyCallError(ErrorCode.INVALID_SNAPSHOT, 'the snapshot cannot be serialised as JSON', { cause })
  }
}

let stateInfo: (machine: StateMachine, name: string) => BindingStateInfo

/**
 * A live view of one state of a {@link StateMachine}. It holds no data of its own: every read
 * asks the machine, and it throws `ERR_POLYCALL_INVALID_STATE` once the state is gone (after a
 * restore without it).
 *
 * @example
 * ```ts
 * const ready = sm.addState('READY', { metadata: { owner: 'ops' } })
 * ready.setMetadata('note', 'warming up') // version 2
 * ready.lock()
 * ready.snapshot() // { timestamp, state: { name, isLocked, endpoint, metadata, transitions }, checksum }
 * ```
 */
export class State {
  readonly #machine: StateMachine
  /** The state's name. */
  readonly name: string

  /** @internal States are made by {@link StateMachine.addState}. */
  constructor(machine: StateMachine, name: string) {
    this.#machine = machine
    this.name = name
  }

  /** The endpoint (node-polycall's default: `/ready-state` for `Ready State`). */
  get endpoint(): string {
    return stateInfo(this.#machine, this.name).endpoint
  }

  /** Whether the state is locked. */
  get locked(): boolean {
    return stateInfo(this.#machine, this.name).locked
  }

  /** Whether the state is final. */
  get final(): boolean {
    return stateInfo(this.#machine, this.name).isFinal
  }

  /** Metadata `version`: 1 at creation, bumped by each {@link State.setMetadata}. */
  get version(): number {
    return stateInfo(this.#machine, this.name).version
  }

  /** The stored node-polycall checksum of the state. */
  get checksum(): number {
    return stateInfo(this.#machine, this.name).checksum
  }

  /** A copy of the metadata, in insertion order. */
  get metadata(): Map<string, unknown> {
    return new Map(JSON.parse(stateInfo(this.#machine, this.name).metadata) as [string, unknown][])
  }

  /** Targets of the state's outgoing transitions, in the order added. */
  get transitions(): string[] {
    this.#machine.state(this.name)
    return this.#machine
      .transitions()
      .filter((t) => t.from === this.name)
      .map((t) => t.to)
  }

  /**
   * Sets a metadata entry; bumps `version` and `lastModified`.
   *
   * @param key - any key but `createdAt`, `version`, `lastModified` and `lockedAt`
   * @param value - a JSON-serialisable value
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a reserved key or a value JSON cannot encode,
   *   `ERR_POLYCALL_INVALID_STATE` when the state is gone
   */
  setMetadata(key: string, value: unknown): void {
    this.#machine.setMetadata(this.name, key, value)
  }

  /** Locks the state; see {@link StateMachine.lock}. */
  lock(): void {
    this.#machine.lock(this.name)
  }

  /** Unlocks the state; see {@link StateMachine.unlock}. */
  unlock(): void {
    this.#machine.unlock(this.name)
  }

  /** node-polycall's snapshot of the state; see {@link StateMachine.stateSnapshot}. */
  snapshot(): StateSnapshot {
    return this.#machine.stateSnapshot(this.name)
  }

  /**
   * Restores the state from one of its snapshots; see {@link StateMachine.restoreState}.
   *
   * @throws `ERR_POLYCALL_INVALID_STATE` when the snapshot is of another state, and what
   *   `restoreState` throws
   */
  restore(snapshot: StateSnapshot | string): void {
    const text = snapshotText(snapshot)
    let named: unknown
    try {
      named = (JSON.parse(text) as { state?: { name?: unknown } } | null)?.state?.name
    } catch (cause) {
      throw new PolyCallError(ErrorCode.INVALID_SNAPSHOT, 'the snapshot is not JSON', { cause })
    }
    if (named !== this.name) {
      throw new PolyCallError(ErrorCode.INVALID_STATE, `a snapshot of ${JSON.stringify(named)} cannot restore ${JSON.stringify(this.name)}`)
    }
    this.#machine.restoreState(text)
  }

  /** Verifies the state; see {@link StateMachine.verify}. */
  verify(options?: { checksum?: number }): number {
    return this.#machine.verify(this.name, options)
  }

  /** Diagnostics of the state; see {@link StateMachine.diagnostics}. */
  diagnostics(): StateDiagnostics {
    return this.#machine.diagnostics(this.name)
  }

  /** node-polycall's JSON form (what the checksum covers). */
  toJSON(): NodeStateJson {
    return this.snapshot().state
  }
}

/**
 * A state machine over the Rust core. Add states and transitions, then `await transition(to)`.
 *
 * Concurrency: `transition()` and `restore()` calls are serialised in a FIFO queue. A call
 * made while another one runs its guard or hooks waits for its turn (bounded by its `signal`
 * and `timeout`) instead of being refused; a transition without guard or hooks that finds the
 * queue empty completes synchronously. `lock()`/`unlock()` are immediate; the core re-checks
 * locks when a waiting transition commits.
 *
 * Events: `transition`, `locked`, `unlocked` and `error` (see {@link StateMachineEvents}). The
 * same transitions are also available by iteration ({@link StateMachine.watch}, `for await`).
 *
 * @example
 * ```ts
 * const sm = new StateMachine({ maxHistory: 100 })
 * sm.addState('INIT')
 * sm.addState('READY')
 * sm.addTransition('INIT', 'READY', { guard: async () => await configLoaded() })
 * await sm.transition('READY')
 * sm.current // 'READY'
 * sm.history() // [{ from: 'INIT', to: 'READY', timestamp: 1700000000000 }]
 * const snap = sm.snapshot()
 * await sm.restore(snap)
 * ```
 */
export class StateMachine extends EventEmitter<StateMachineEvents> {
  #handle: number
  #names: string[] = []
  #ids = new Map<string, number>()
  #current = NO_CURRENT
  #busy = false
  #waiters: Waiter[] = []
  /** Hooks by `from + "\0" + to` (names): what survives a restore. */
  #edgeHooks = new Map<string, EdgeHooks>()
  /** The same hooks by source id, then target id: what the transition path reads. */
  #edgeById: (Map<number, EdgeHooks> | undefined)[] = []
  #stateHooks = new Map<string, StateHooks>()
  #stateById: (StateHooks | undefined)[] = []
  /** Whether any guard, transition hook or enter/exit handler exists (else every transition is one native call). */
  #hooked = false
  #views = new Map<string, State>()
  #iterators = new Set<TransitionIterator>()
  /**
   * Set when a `'transition'` listener is added and cleared by the first transition that finds
   * none left: a transition nobody listens to skips `listenerCount` (about 14 ns, a tenth of an
   * awaited guard-less transition).
   */
  #watched = false

  /** History entries kept. */
  readonly maxHistory: number
  /** Whether self-transitions may fire. */
  readonly allowSelfTransitions: boolean
  /** Most states. */
  readonly maxStates: number
  /** Most transitions. */
  readonly maxTransitions: number
  /** Longest state name, in UTF-8 bytes. */
  readonly maxNameLength: number

  static {
    // Every way of adding a listener goes through one of these three (`once` and
    // `prependOnceListener` call `on` and `prependListener`; `events.once` and `events.on` too).
    for (const name of ['on', 'addListener', 'prependListener'] as const) {
      const add = EventEmitter.prototype[name]
      Object.defineProperty(StateMachine.prototype, name, {
        configurable: true,
        writable: true,
        value: function (this: StateMachine, event: string | symbol, listener: (...args: unknown[]) => void) {
          if (event === 'transition') this.#watched = true
          return add.call(this, event, listener)
        },
      })
    }
    stateInfo = (machine, name) => {
      const handle = machine.#live()
      const id = machine.#id(name)
      return call(() => native.smStateInfo(handle, id))
    }
  }

  /**
   * @param options - history length, self-transitions and capacity limits
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for an option out of range
   */
  constructor(options: StateMachineOptions = {}) {
    super()
    if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object')
    checkOptionKeys(options, STATE_MACHINE_OPTION_KEYS, 'StateMachineOptions')
    const history = limit(options.maxHistory, 'maxHistory', 100, 0, 0xffffffff)
    this.maxHistory = history === 0 ? 100 : history
    const self = options.allowSelfTransitions ?? false
    if (typeof self !== 'boolean') throw invalidArgument('allowSelfTransitions must be a boolean')
    this.allowSelfTransitions = self
    this.maxStates = limit(options.maxStates, 'maxStates', 32, 1, MAX_STATES_LIMIT)
    this.maxTransitions = limit(options.maxTransitions, 'maxTransitions', 64, 0, 0x7fffffff)
    this.maxNameLength = limit(options.maxNameLength, 'maxNameLength', 31, 1, 0xffff)
    this.#handle = call(() =>
      native.smNew(this.maxStates, this.maxTransitions, this.maxNameLength, this.maxHistory, this.allowSelfTransitions),
    )
    finalizer.register(this, this.#handle, this)
  }

  /** The current state's name; undefined until a non-deferred state is added. */
  get current(): string | undefined {
    return this.#names[this.#current]
  }

  /**
   * Adds a state. The first non-deferred state added becomes current.
   *
   * @param name - a non-empty string, unique, at most `maxNameLength` UTF-8 bytes
   * @param options - endpoint, final, deferred, metadata, `onEnter`/`onExit` handlers, integrity hook
   * @returns a live view of the state
   * @throws `ERR_POLYCALL_DUPLICATE_STATE`, `ERR_POLYCALL_MAX_STATES_REACHED` (errno 3),
   *   `ERR_POLYCALL_STATE_NAME_TOO_LONG`, `ERR_POLYCALL_INVALID_ARGUMENT`, `ERR_POLYCALL_CLOSED`
   * @example
   * ```ts
   * sm.addState('ERROR', { final: true, onEnter: ({ from }) => log.warn(`failed in ${from}`) })
   * ```
   */
  addState(name: string, options: StateOptions = {}): State {
    checkName(name, 'a state name')
    if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object')
    const { endpoint, final = false, deferred = false, metadata, onEnter, onExit, verify } = options
    if (endpoint !== undefined && typeof endpoint !== 'string') throw invalidArgument('endpoint must be a string')
    if (typeof final !== 'boolean' || typeof deferred !== 'boolean') throw invalidArgument('final and deferred must be booleans')
    if (!isFunctionOrUndefined(onEnter) || !isFunctionOrUndefined(onExit) || !isFunctionOrUndefined(verify)) {
      throw invalidArgument('onEnter, onExit and verify must be functions')
    }
    let metaText: string | null = null
    if (metadata !== undefined) {
      if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) {
        throw invalidArgument('metadata must be a plain object')
      }
      metaText = JSON.stringify(metadata)
    }
    const handle = this.#live()
    const id = call(() => native.smAddState(handle, name, endpoint ?? null, final, deferred, metaText, Date.now()))
    this.#names[id] = name
    this.#ids.set(name, id)
    this.#current = native.smCurrent(handle)
    if (onEnter || onExit || verify) {
      const hooks = { onEnter, onExit, verify }
      this.#stateHooks.set(name, hooks)
      this.#stateById[id] = hooks
      this.#hooked ||= onEnter !== undefined || onExit !== undefined
    }
    return this.state(name)
  }

  /**
   * Adds the transition `from -> to`, with an optional guard and hooks.
   *
   * @param from - source state
   * @param to - target state (may equal `from`; firing it needs `allowSelfTransitions`)
   * @param options - `guard` (sync or async, falsy refuses), `before`, `after`
   * @throws `ERR_POLYCALL_INVALID_STATE` (errno 1) for an unknown state,
   *   `ERR_POLYCALL_FINAL_STATE` (errno 2) when `from` is final, `ERR_POLYCALL_DUPLICATE_TRANSITION`,
   *   `ERR_POLYCALL_MAX_TRANSITIONS_REACHED` (errno 4), `ERR_POLYCALL_INVALID_ARGUMENT`, `ERR_POLYCALL_CLOSED`
   * @example
   * ```ts
   * sm.addTransition('READY', 'RUNNING', { guard: () => workers > 0, after: () => metrics.inc('started') })
   * ```
   */
  addTransition(from: string, to: string, options: TransitionOptions = {}): void {
    if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object')
    const { guard, before, after } = options
    if (!isFunctionOrUndefined(guard) || !isFunctionOrUndefined(before) || !isFunctionOrUndefined(after)) {
      throw invalidArgument('guard, before and after must be functions')
    }
    const handle = this.#live()
    const fromId = this.#id(from)
    const toId = this.#id(to)
    call(() => native.smAddTransition(handle, fromId, toId))
    if (guard || before || after) {
      const hooks = { guard, before, after }
      this.#edgeHooks.set(`${from}\0${to}`, hooks)
      ;(this.#edgeById[fromId] ??= new Map()).set(toId, hooks)
      this.#hooked = true
    }
  }

  /**
   * Moves from the current state to `to`: checks (core), guard, source `onExit`, `before`,
   * switch and record (core), target `onEnter`, `after`, then the `transition` event. Any
   * failure before the switch leaves the machine in its source state.
   *
   * @param to - the target state
   * @param options - `signal` and `timeout` bounding the wait for the queue, the guard and the hooks
   * @returns the history entry of the transition
   * @throws (rejects with) `ERR_POLYCALL_INVALID_TRANSITION` (errno 2: no such transition or no
   *   current state), `ERR_POLYCALL_SELF_TRANSITION` (2), `ERR_POLYCALL_FINAL_STATE` (2),
   *   `ERR_POLYCALL_STATE_LOCKED` (8), `ERR_POLYCALL_GUARD_REJECTED` (2; `cause` is what the guard
   *   threw), `ERR_POLYCALL_HOOK_FAILED` (`cause` is what the hook threw; if it was `onEnter` or
   *   `after`, the transition stands), `ERR_POLYCALL_ABORTED`, `ERR_POLYCALL_TIMEOUT`,
   *   `ERR_POLYCALL_CLOSED`
   * @example
   * ```ts
   * await sm.transition('RUNNING', { timeout: 1000 })
   * ```
   */
  transition(to: string, options?: TransitionCallOptions): Promise<TransitionRecord> {
    try {
      if (typeof to !== 'string') throw invalidArgument('transition(to): to must be a state name')
      const handle = this.#live()
      if (!this.#busy) {
        if (options !== undefined) {
          checkSignal(options.signal)
          checkTimeout(options.timeout)
          if (options.signal?.aborted) throw deadline(options).error()
        }
        const id = this.#ids.get(to) ?? NO_STATE
        if (!this.#hooked || !this.#hasHooks(this.#current, id)) return Promise.resolve(this.#commit(handle, id, to))
      }
      return this.#queued(to, deadline(options))
    } catch (e) {
      return Promise.reject(this.#failed(e))
    }
  }

  /** History, oldest first (at most `maxHistory` entries). */
  history(): TransitionRecord[] {
    const flat = call(() => native.smHistory(this.#live()))
    const out: TransitionRecord[] = []
    for (let i = 0; i < flat.length; i += 3) {
      out.push({ from: this.#names[flat[i]!]!, to: this.#names[flat[i + 1]!]!, timestamp: flat[i + 2]! })
    }
    return out
  }

  /** The transition table, grouped by source state in the order states were added. */
  transitions(): {
    /** The source state. */
    from: string
    /** The target state. */
    to: string
  }[] {
    const flat = call(() => native.smTransitions(this.#live()))
    const out: { from: string; to: string }[] = []
    for (let i = 0; i < flat.length; i += 2) out.push({ from: this.#names[flat[i]!]!, to: this.#names[flat[i + 1]!]! })
    return out
  }

  /**
   * The state called `name`.
   *
   * @throws `ERR_POLYCALL_INVALID_STATE` (errno 1) when there is none
   */
  state(name: string): State {
    this.#id(name)
    let view = this.#views.get(name)
    if (!view) this.#views.set(name, (view = new State(this, name)))
    return view
  }

  /** Every state, in the order added. */
  states(): State[] {
    return this.#names.map((n) => this.state(n))
  }

  /** Whether a state called `name` exists. */
  has(name: string): boolean {
    return this.#ids.has(name)
  }

  /**
   * Locks a state (records `lockedAt`; the version stays). A locked state can be neither left
   * nor entered, nor restored. Emits `locked`.
   *
   * @throws `ERR_POLYCALL_STATE_LOCKED` (errno 8) when already locked (locking is strict),
   *   `ERR_POLYCALL_INVALID_STATE` (1), `ERR_POLYCALL_CLOSED`
   */
  lock(name: string): void {
    const handle = this.#live()
    const id = this.#id(name)
    const timestamp = Date.now()
    call(() => native.smLock(handle, id, timestamp))
    this.emit('locked', { state: name, timestamp })
  }

  /**
   * Unlocks a state (removes `lockedAt`). Emits `unlocked`.
   *
   * @throws `ERR_POLYCALL_STATE_NOT_LOCKED` when not locked (unlocking is strict),
   *   `ERR_POLYCALL_INVALID_STATE` (1), `ERR_POLYCALL_CLOSED`
   */
  unlock(name: string): void {
    const handle = this.#live()
    const id = this.#id(name)
    call(() => native.smUnlock(handle, id))
    this.emit('unlocked', { state: name, timestamp: Date.now() })
  }

  /**
   * Sets a metadata entry of a state; bumps its `version` and `lastModified`.
   *
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a reserved key (`createdAt`, `version`,
   *   `lastModified`, `lockedAt`) or a value JSON cannot encode, `ERR_POLYCALL_INVALID_STATE` (1)
   */
  setMetadata(name: string, key: string, value: unknown): void {
    if (typeof key !== 'string') throw invalidArgument('a metadata key must be a string')
    const text = JSON.stringify(value) as string | undefined
    if (text === undefined) throw invalidArgument(`metadata ${JSON.stringify(key)} has no JSON form`)
    const handle = this.#live()
    const id = this.#id(name)
    call(() => native.smSetMetadata(handle, id, key, text, Date.now()))
  }

  /**
   * Verifies a state's integrity: recomputes its checksum and compares it with the stored one
   * and, when given, with `options.checksum` (say, from an earlier snapshot); then runs the
   * state's `verify` hook. Every check and failure is counted ({@link StateMachine.diagnostics}).
   *
   * @returns the state's checksum
   * @throws `ERR_POLYCALL_INTEGRITY_CHECK_FAILED` (errno 7; `cause` is what the hook threw, if it
   *   did), `ERR_POLYCALL_INVALID_STATE` (1)
   */
  verify(name: string, options: { checksum?: number } = {}): number {
    const handle = this.#live()
    const id = this.#id(name)
    const expected = options.checksum
    if (expected !== undefined && !(Number.isInteger(expected) && expected >= 0 && expected <= 0xffffffff)) {
      throw invalidArgument('checksum must be a u32')
    }
    const sum = call(() => native.smVerify(handle, id, expected ?? null))
    const hook = this.#stateHooks.get(name)?.verify
    if (hook) {
      let ok: unknown
      let cause: unknown
      try {
        ok = hook(this.state(name))
      } catch (e) {
        cause = e
      }
      if (!ok) {
        call(() => native.smRecordIntegrityFailure(handle, id))
        throw new PolyCallError(ErrorCode.INTEGRITY_CHECK_FAILED, `the integrity hook of ${JSON.stringify(name)} refused it`, {
          cause,
        })
      }
    }
    return sum
  }

  /**
   * Version, times, lock state, checksums (node-polycall's and the C-compatible one) and counters
   * of a state.
   *
   * @throws `ERR_POLYCALL_INVALID_STATE` (1), `ERR_POLYCALL_CLOSED`
   */
  diagnostics(name: string): StateDiagnostics {
    const i = stateInfo(this, name)
    const out: StateDiagnostics = {
      name,
      version: i.version,
      createdAt: i.createdAt,
      lastModified: i.lastModified,
      locked: i.locked,
      final: i.isFinal,
      checksum: i.checksum,
      cChecksum: i.cChecksum,
      transitionsIn: i.transitionsIn,
      transitionsOut: i.transitionsOut,
      failedTransitions: i.failedTransitions,
      integrityChecks: i.integrityChecks,
      integrityFailures: i.integrityFailures,
    }
    if (i.lockedAt !== undefined && i.lockedAt !== null) out.lockedAt = i.lockedAt
    return out
  }

  /**
   * node-polycall's snapshot of one state: `{ timestamp, state, checksum }`.
   *
   * @throws `ERR_POLYCALL_INVALID_STATE` (1), `ERR_POLYCALL_CLOSED`
   */
  stateSnapshot(name: string): StateSnapshot {
    const handle = this.#live()
    const id = this.#id(name)
    return JSON.parse(call(() => native.smStateSnapshot(handle, id, Date.now()))) as StateSnapshot
  }

  /**
   * Restores one state from its snapshot (ours or node-polycall's), by the C library's rules
   * once the checksum holds: the state must exist, be unlocked and be at the snapshot's version.
   * Lock flag, endpoint, metadata and outgoing transitions come from the snapshot.
   *
   * @param snapshot - the snapshot, or its JSON text
   * @throws `ERR_POLYCALL_INTEGRITY_CHECK_FAILED` (7), `ERR_POLYCALL_INVALID_STATE` (1),
   *   `ERR_POLYCALL_STATE_LOCKED` (8), `ERR_POLYCALL_STATE_VERSION_MISMATCH` (9),
   *   `ERR_POLYCALL_INVALID_SNAPSHOT`, `ERR_POLYCALL_MAX_TRANSITIONS_REACHED` (4)
   */
  restoreState(snapshot: StateSnapshot | string): void {
    const text = snapshotText(snapshot)
    const handle = this.#live()
    call(() => native.smRestoreState(handle, text))
    this.#sync()
  }

  /**
   * The machine snapshot: plain JSON-serialisable data (see {@link StateMachineSnapshot}).
   * For storage, {@link StateMachine.snapshotBytes} gives the same content in about a fifth of
   * the size, and takes and restores several times faster.
   *
   * @param options - `sign` to add an Ed25519 signature
   * @returns the snapshot
   * @throws `ERR_POLYCALL_CLOSED` after {@link StateMachine.free} or for a destroyed identity
   * @example
   * ```ts
   * await store.put('sm', JSON.stringify(sm.snapshot()))
   * const signed = sm.snapshot({ sign: identity }) // restore(signed, { verify: identity.signingKey })
   * ```
   */
  snapshot(options: SnapshotOptions = {}): StateMachineSnapshot {
    const handle = this.#live()
    const snap = JSON.parse(call(() => native.smSnapshot(handle, Date.now()))) as StateMachineSnapshot
    return options.sign === undefined ? snap : signSnapshot(snap, options.sign)
  }

  /**
   * The machine snapshot in its compact binary form, written by the core in one call: the same
   * content as {@link StateMachine.snapshot} (states with their lock and final flags, endpoints,
   * metadata, transitions and checksums; the current state; the history; the time it was
   * taken), under a CRC-32 of all of it. {@link StateMachine.restore} takes it back with the
   * same checks as the JSON form, and refuses corrupted or truncated bytes. The layout is in
   * docs/state-machines.md ("Compact snapshots"); node-polycall cannot read it.
   *
   * @returns the snapshot's bytes (a Buffer, the caller's to keep)
   * @throws `ERR_POLYCALL_CLOSED` after {@link StateMachine.free}
   * @example
   * ```ts
   * await writeFile('machine.bin', sm.snapshotBytes())
   * await other.restore(await readFile('machine.bin'))
   * ```
   */
  snapshotBytes(): Buffer {
    const handle = this.#live()
    return call(() => native.smSnapshotBytes(handle, Date.now()))
  }

  /**
   * Replaces states, transitions, current state and history with a snapshot's, after
   * verifying it whole: the machine checksum, every state checksum, names, limits, references,
   * and that the history is a walk ending in the current state (each entry starts where the one
   * before it ended, none leaves a final state). On any error nothing changes. The transition
   * table is rebuilt from the snapshot; guards and hooks registered here for the same
   * `from -> to` (and handlers of same-named states) stay attached. Counters restart at 0.
   * Waits in the transition queue like a transition.
   *
   * The snapshot is an object from {@link StateMachine.snapshot}, its JSON text, or the bytes
   * of {@link StateMachine.snapshotBytes} (any `Uint8Array`, such as a Buffer). Bytes are checked
   * the same way, their CRC-32 in place of the machine checksum; `legacy` does not apply to them.
   *
   * Strict by default: node-polycall's layout (no `format`, `transitions` or `checksum`) is
   * refused unless `options.legacy` is set, so deleting those members does not turn a snapshot
   * into an unchecked one. Its states' own `transitions` lists then become the table, plus the
   * live transitions between states it also has.
   *
   * Locks: restore replaces every live state, so while any live state is locked it refuses with
   * `ERR_POLYCALL_STATE_LOCKED` (the C library's rule for a locked restore target) and changes
   * nothing; unlock first. The snapshot's own locks come back with it.
   *
   * @param snapshot - the snapshot, its JSON text, or its compact bytes
   * @param options - `legacy` (also accept node-polycall's layout), `verify` (the signer's key),
   *   `signal`, `timeout`
   * @returns the layout the snapshot had (`'polycall'` for compact bytes)
   * @throws `ERR_POLYCALL_BAD_SIGNATURE` with `verify`, for an unsigned, altered or otherwise
   *   signed snapshot (compact bytes carry no signature, so `verify` refuses them); (rejects
   *   with) `ERR_POLYCALL_INTEGRITY_CHECK_FAILED` (errno 7) for a checksum or CRC that does not
   *   match, `ERR_POLYCALL_INVALID_SNAPSHOT` for a malformed, truncated or inconsistent one (or
   *   node-polycall's layout without `legacy`), `ERR_POLYCALL_STATE_LOCKED` (8) while a live
   *   state is locked, `ERR_POLYCALL_MAX_STATES_REACHED` (3),
   *   `ERR_POLYCALL_MAX_TRANSITIONS_REACHED` (4), `ERR_POLYCALL_STATE_NAME_TOO_LONG`,
   *   `ERR_POLYCALL_INVALID_ARGUMENT` (a non-boolean `legacy`), `ERR_POLYCALL_ABORTED`,
   *   `ERR_POLYCALL_TIMEOUT`, `ERR_POLYCALL_CLOSED`
   * @example
   * ```ts
   * await sm.restore(JSON.parse(await store.get('sm')))
   * await sm.restore(sm.snapshotBytes())
   * await imported.restore(nodePolycallSnapshot, { legacy: true })
   * ```
   */
  async restore(
    snapshot: StateMachineSnapshot | string | Uint8Array,
    options: RestoreOptions & VerifyOptions = {},
  ): Promise<SnapshotFormat> {
    let input: string | Uint8Array
    if (snapshot instanceof Uint8Array) {
      if (options.verify !== undefined) {
        throw new PolyCallError(
          ErrorCode.BAD_SIGNATURE,
          'restore: compact snapshot bytes carry no signature; verify applies to signed JSON snapshots',
        )
      }
      input = snapshot
    } else {
      input = unsigned(snapshot, options.verify)
    }
    const legacy = options.legacy ?? false
    if (typeof legacy !== 'boolean') throw invalidArgument('legacy must be a boolean')
    const d = deadline(options)
    this.#live()
    if (this.#busy) {
      // The caller may reuse its buffer while this call waits its turn.
      if (typeof input !== 'string') input = new Uint8Array(input)
      await this.#acquire(d)
    } else {
      if (d.signal?.aborted) throw d.error()
      this.#busy = true
    }
    try {
      const handle = this.#live()
      if (typeof input === 'string') {
        const format = call(() => native.smRestore(handle, input, legacy)) as SnapshotFormat
        this.#sync()
        return format
      }
      const bytes = input
      const names = call(() => native.smRestoreBytes(handle, bytes))
      this.#sync(typeof names === 'string' ? names.split('\0') : names)
      return 'polycall'
    } finally {
      this.#release()
    }
  }

  /**
   * The transitions of this machine as an async iterator, from now on. `break` (or `return()`)
   * ends it; so do `signal`, a `timeout` spent waiting for the next transition
   * (`ERR_POLYCALL_TIMEOUT`), and {@link StateMachine.free}.
   *
   * @param options - `signal`, idle `timeout` per wait, `bufferSize`
   * @returns an async iterable iterator of transitions
   * @throws `ERR_POLYCALL_ITERATOR_OVERFLOW` (from `next()`) when more than `bufferSize`
   *   transitions were waiting for the consumer
   * @example
   * ```ts
   * for await (const { from, to } of sm.watch({ signal })) console.log(`${from} -> ${to}`)
   * ```
   */
  watch(options: WatchOptions = {}): AsyncIterableIterator<TransitionRecord> {
    if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object')
    checkSignal(options.signal)
    checkTimeout(options.timeout)
    const size = limit(options.bufferSize, 'bufferSize', 1024, 1, 0x7fffffff)
    const it = new TransitionIterator(() => this.#iterators.delete(it), size, options)
    if (this.#handle === FREED) it.end()
    else this.#iterators.add(it)
    return it
  }

  /** Same as {@link StateMachine.watch} with default options, for `for await (const t of sm)`. */
  [Symbol.asyncIterator](): AsyncIterableIterator<TransitionRecord> {
    return this.watch()
  }

  /**
   * Releases the native state now. Idempotent. Queued calls reject with `ERR_POLYCALL_CLOSED`,
   * iterators end, and later calls throw `ERR_POLYCALL_CLOSED`.
   */
  free(): void {
    if (this.#handle === FREED) return
    native.smFree(this.#handle)
    finalizer.unregister(this)
    this.#handle = FREED
    for (const w of this.#waiters.splice(0)) {
      w.cleanup?.()
      w.reject(new PolyCallError(ErrorCode.CLOSED, 'the state machine was freed'))
    }
    for (const it of [...this.#iterators]) it.end()
  }

  /** Same as {@link StateMachine.free}, for `using sm = new StateMachine()`. */
  [Symbol.dispose](): void {
    this.free()
  }

  #live(): number {
    if (this.#handle === FREED) throw new PolyCallError(ErrorCode.CLOSED, 'the state machine was freed')
    return this.#handle
  }

  #id(name: string): number {
    const id = typeof name === 'string' ? this.#ids.get(name) : undefined
    if (id === undefined) throw new PolyCallError(ErrorCode.INVALID_STATE, `no state ${JSON.stringify(name)}`)
    return id
  }

  #hasHooks(from: number, to: number): boolean {
    return (
      this.#edgeById[from]?.has(to) === true ||
      this.#stateById[from]?.onExit !== undefined ||
      this.#stateById[to]?.onEnter !== undefined
    )
  }

  /**
   * The core checks, switches and records, and stamps the time; on a refusal it keeps the reason
   * for smRaise.
   */
  #commit(handle: number, id: number, to: string): TransitionRecord {
    MAILBOX[0] = handle
    MAILBOX[1] = id
    const timestamp = native.smStep()
    if (timestamp < 0) throw this.#refusal(handle, to)
    const record = { from: this.#names[this.#current]!, to, timestamp }
    this.#current = id
    if (this.#iterators.size > 0) for (const it of this.#iterators) it.push(record)
    if (this.#watched) {
      if (this.listenerCount('transition') > 0) this.emit('transition', record)
      else this.#watched = false
    }
    return record
  }

  #refusal(handle: number, to: string): PolyCallError {
    let err: PolyCallError
    try {
      native.smRaise(handle)
      err = new PolyCallError(ErrorCode.INTERNAL, 'the core refused a transition without a reason')
    } catch (e) {
      err = fromNative(e)
    }
    if (err.code === ErrorCode.INVALID_TRANSITION && !this.#ids.has(to)) {
      err = new PolyCallError(err.code, `no state ${JSON.stringify(to)} to move to`, { cause: err.cause })
    }
    return err
  }

  /** Reports a failed transition() to `error` listeners (only when there are some). */
  #failed(e: unknown): unknown {
    if (e instanceof PolyCallError && this.listenerCount('error') > 0) this.emit('error', e)
    return e
  }

  /** The transition path with guards or hooks, in the FIFO queue. One async frame on purpose. */
  async #queued(to: string, d: Deadline): Promise<TransitionRecord> {
    try {
      if (this.#busy || d.signal !== undefined) await this.#acquire(d)
      else this.#busy = true
    } catch (e) {
      throw this.#failed(e)
    }
    try {
      let handle = this.#live()
      if (d.signal?.aborted) throw d.error()
      const id = this.#ids.get(to) ?? NO_STATE
      const from = this.#current
      const edge = this.#edgeById[from]?.get(id)
      const onExit = this.#stateById[from]?.onExit
      const onEnter = this.#stateById[id]?.onEnter
      // The state may have changed while this call waited: it may need no hooks now.
      if (!edge && !onExit && !onEnter) return this.#commit(handle, id, to)
      if (!native.smPrecheck(handle, id)) throw this.#refusal(handle, to)
      const ctx: TransitionContext = { from: this.#names[from]!, to, signal: d.signal ?? NEVER }
      try {
        const guard = edge?.guard
        if (guard) {
          let ok: unknown
          try {
            ok = d.signal === undefined ? await guard(ctx) : await raceDeadline(guard(ctx), d)
          } catch (e) {
            if (isDeadlineError(e)) throw e
            throw new PolyCallError(ErrorCode.GUARD_REJECTED, `the guard of ${JSON.stringify(ctx.from)} -> ${JSON.stringify(to)} threw`, {
              cause: e,
            })
          }
          if (!ok) throw new PolyCallError(ErrorCode.GUARD_REJECTED, `the guard of ${JSON.stringify(ctx.from)} -> ${JSON.stringify(to)} refused`)
        }
        if (onExit) await runHook(onExit, ctx, d, 'onExit')
        if (edge?.before) await runHook(edge.before, ctx, d, 'before')
      } catch (e) {
        if (this.#handle === handle) native.smRecordFailure(handle)
        throw e
      }
      handle = this.#live()
      const record = this.#commit(handle, id, to)
      if (onEnter) await runHook(onEnter, ctx, d, 'onEnter')
      if (edge?.after) await runHook(edge.after, ctx, d, 'after')
      return record
    } catch (e) {
      throw this.#failed(e)
    } finally {
      this.#release()
    }
  }

  #acquire(d: Deadline): Promise<void> {
    const signal = d.signal
    if (signal?.aborted) return Promise.reject(d.error())
    if (!this.#busy) {
      this.#busy = true
      return Promise.resolve()
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, cleanup: undefined }
      if (signal) {
        const onAbort = () => {
          const at = this.#waiters.indexOf(waiter)
          if (at >= 0) this.#waiters.splice(at, 1)
          reject(d.error())
        }
        signal.addEventListener('abort', onAbort, { once: true })
        waiter.cleanup = () => signal.removeEventListener('abort', onAbort)
      }
      this.#waiters.push(waiter)
    })
  }

  #release(): void {
    const next = this.#waiters.shift()
    if (next) {
      next.cleanup?.()
      next.resolve()
    } else {
      this.#busy = false
    }
  }

  /**
   * Re-reads names (unless given), current state and, when hooks are attached to transitions,
   * the table after a restore; re-attaches hooks by name.
   */
  #sync(names: string[] = native.smNames(this.#live())): void {
    const handle = this.#live()
    this.#names = names
    const ids = new Map<string, number>()
    for (let i = 0; i < names.length; i++) ids.set(names[i]!, i)
    this.#ids = ids
    this.#current = native.smCurrent(handle)
    this.#edgeById = []
    if (this.#edgeHooks.size > 0) {
      const pairs = native.smTransitions(handle)
      const kept = new Set<string>()
      for (let i = 0; i < pairs.length; i += 2) {
        const from = pairs[i]!
        const to = pairs[i + 1]!
        const key = `${names[from]!}\0${names[to]!}`
        const hooks = this.#edgeHooks.get(key)
        if (hooks) {
          kept.add(key)
          ;(this.#edgeById[from] ??= new Map()).set(to, hooks)
        }
      }
      for (const key of [...this.#edgeHooks.keys()]) if (!kept.has(key)) this.#edgeHooks.delete(key)
    }
    for (const name of [...this.#stateHooks.keys()]) if (!ids.has(name)) this.#stateHooks.delete(name)
    for (const name of [...this.#views.keys()]) if (!ids.has(name)) this.#views.delete(name)
    this.#stateById = this.#stateHooks.size > 0 ? names.map((n) => this.#stateHooks.get(n)) : []
    this.#hooked = this.#edgeHooks.size > 0 || this.#stateById.some((h) => h?.onEnter !== undefined || h?.onExit !== undefined)
  }
}

type Pending = { resolve: (r: IteratorResult<TransitionRecord>) => void; reject: (e: unknown) => void }

/**
 * Buffers a machine's transitions for one consumer. The machine pushes synchronously and never
 * waits; a consumer further behind than `bufferSize` gets ITERATOR_OVERFLOW after the buffered
 * records.
 */
class TransitionIterator implements AsyncIterableIterator<TransitionRecord> {
  #buffer: TransitionRecord[] = []
  #head = 0
  #pending: Pending[] = []
  #failure: PolyCallError | undefined
  #done = false
  #timer: ReturnType<typeof setTimeout> | undefined
  readonly #detach: () => void
  readonly #size: number
  readonly #idle: number | undefined
  readonly #signal: AbortSignal | undefined
  readonly #onAbort = () => {
    this.#buffer = []
    this.#head = 0
    this.#fail(new PolyCallError(ErrorCode.ABORTED, 'the iteration was aborted', { cause: this.#signal?.reason }))
  }

  constructor(detach: () => void, size: number, options: WaitOptions) {
    this.#detach = detach
    this.#size = size
    this.#idle = options.timeout
    this.#signal = options.signal
    if (this.#signal?.aborted) this.#onAbort()
    else this.#signal?.addEventListener('abort', this.#onAbort, { once: true })
  }

  push(record: TransitionRecord): void {
    const waiter = this.#pending.shift()
    if (waiter) {
      if (this.#pending.length === 0) this.#stopTimer()
      waiter.resolve({ value: record, done: false })
    } else if (this.#buffer.length - this.#head >= this.#size) {
      this.#fail(new PolyCallError(ErrorCode.ITERATOR_OVERFLOW, `more than ${this.#size} transitions waited for the consumer`))
    } else {
      this.#buffer.push(record)
    }
  }

  next(): Promise<IteratorResult<TransitionRecord>> {
    if (this.#head < this.#buffer.length) {
      const value = this.#buffer[this.#head++]!
      if (this.#head === this.#buffer.length) {
        this.#buffer = []
        this.#head = 0
      }
      return Promise.resolve({ value, done: false })
    }
    if (this.#failure) {
      const failure = this.#failure
      this.#failure = undefined
      return Promise.reject(failure)
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true })
    return new Promise((resolve, reject) => {
      this.#pending.push({ resolve, reject })
      if (this.#idle !== undefined && this.#timer === undefined) {
        const ms = Math.min(Math.ceil(this.#idle), MAX_DELAY)
        this.#timer = setTimeout(() => {
          this.#timer = undefined
          this.#fail(new PolyCallError(ErrorCode.TIMEOUT, `no transition within ${ms} ms`))
        }, ms)
        this.#timer.unref()
      }
    })
  }

  return(): Promise<IteratorResult<TransitionRecord>> {
    this.#buffer = []
    this.#head = 0
    this.#failure = undefined
    this.#close()
    return Promise.resolve({ value: undefined, done: true })
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  /** The machine was freed: deliver what is buffered, then finish. */
  end(): void {
    this.#close()
  }

  #fail(err: PolyCallError): void {
    if (this.#done) return
    const first = this.#pending.shift()
    if (first) first.reject(err)
    else this.#failure = err
    this.#close()
  }

  #stopTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #close(): void {
    if (this.#done) return
    this.#done = true
    this.#stopTimer()
    this.#signal?.removeEventListener('abort', this.#onAbort)
    this.#detach()
    for (const p of this.#pending.splice(0)) p.resolve({ value: undefined, done: true })
  }
}
