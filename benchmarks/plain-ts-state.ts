/**
 * A plain-TypeScript state machine with the same rules as polycall's StateMachine (docs/protocol.md
 * §9.2 as polycall applies it): transitions keyed `from -> to`, fired only from their source;
 * check order (no current state, final source, missing transition, self-transition, locked
 * source, locked target, guard); strict locks; history capped at `maxHistory`; the same limits
 * and error codes; the same snapshot text (node-polycall state JSON and checksums, machine
 * checksum). It is the baseline of benchmarks/state.bench.ts and the reference model of the
 * property tests. It is written for speed in the same way the native path is: ids in arrays,
 * a ring buffer for history, no async work for guard-less transitions.
 *
 * Metadata is serialised through a plain object, so integer-like keys come first, as they do in
 * polycall's state JSON.
 */
import { PolyCallError } from '../ts/index.js'

type Guard = () => unknown

interface PlainState {
  name: string
  endpoint: string
  final: boolean
  locked: boolean
  meta: Map<string, unknown>
  targets: number[]
  guards: Map<number, Guard>
}

interface PlainStateJson {
  name: string
  isLocked: boolean
  endpoint: string
  metadata: Record<string, unknown>
  transitions: string[]
}

export interface PlainRecord {
  from: string
  to: string
  timestamp: number
}

export interface PlainOptions {
  maxHistory?: number
  allowSelfTransitions?: boolean
  maxStates?: number
  maxTransitions?: number
  maxNameLength?: number
}

const FORMAT = 'polycall.state-machine/1'
const fail = (code: string, message: string) => new PolyCallError(`ERR_POLYCALL_${code}`, message)
const utf8 = new TextEncoder()

/** Java's String.hashCode over UTF-16 units, unsigned. */
export function javaHash(text: string): number {
  let h = 0
  for (let i = 0; i < text.length; i++) h = (Math.imul(h, 31) + text.charCodeAt(i)) | 0
  return h >>> 0
}

export function plainEndpoint(name: string): string {
  return '/' + name.trim().toLowerCase().replace(/\s+/g, '-')
}

export class PlainStateMachine {
  #states: PlainState[] = []
  #ids = new Map<string, number>()
  #current = -1
  #transitions = 0
  #ring: PlainRecord[] = []
  #ringStart = 0
  #busy: Promise<unknown> | undefined
  readonly maxHistory: number
  readonly allowSelfTransitions: boolean
  readonly maxStates: number
  readonly maxTransitions: number
  readonly maxNameLength: number

  constructor(options: PlainOptions = {}) {
    this.maxHistory = options.maxHistory || 100
    this.allowSelfTransitions = options.allowSelfTransitions ?? false
    this.maxStates = options.maxStates ?? 32
    this.maxTransitions = options.maxTransitions ?? 64
    this.maxNameLength = options.maxNameLength ?? 31
  }

  get current(): string | undefined {
    return this.#states[this.#current]?.name
  }

  addState(name: string, options: { final?: boolean; deferred?: boolean; endpoint?: string } = {}, now = Date.now()): void {
    if (typeof name !== 'string' || name.length === 0) throw fail('INVALID_ARGUMENT', 'a state name must be a non-empty string')
    if (utf8.encode(name).length > this.maxNameLength) throw fail('STATE_NAME_TOO_LONG', `state name ${name} is too long`)
    if (this.#ids.has(name)) throw fail('DUPLICATE_STATE', `state ${name} already exists`)
    if (this.#states.length >= this.maxStates) throw fail('MAX_STATES_REACHED', 'too many states')
    const id = this.#states.length
    this.#states.push({
      name,
      endpoint: options.endpoint ?? plainEndpoint(name),
      final: options.final ?? false,
      locked: false,
      meta: new Map<string, unknown>([
        ['createdAt', now],
        ['version', 1],
        ['lastModified', now],
      ]),
      targets: [],
      guards: new Map(),
    })
    this.#ids.set(name, id)
    if (this.#current < 0 && !options.deferred) this.#current = id
  }

  addTransition(from: string, to: string, options: { guard?: Guard } = {}): void {
    const f = this.#ids.get(from)
    const t = this.#ids.get(to)
    if (f === undefined || t === undefined) throw fail('INVALID_STATE', `no state ${f === undefined ? from : to}`)
    const source = this.#states[f]!
    if (source.final) throw fail('FINAL_STATE', `state ${from} is final`)
    if (source.targets.includes(t)) throw fail('DUPLICATE_TRANSITION', `${from} -> ${to} exists`)
    if (this.#transitions >= this.maxTransitions) throw fail('MAX_TRANSITIONS_REACHED', 'too many transitions')
    source.targets.push(t)
    if (options.guard) source.guards.set(t, options.guard)
    this.#transitions++
  }

  /** The check of every transition; returns the target's id. */
  #check(to: string): number {
    const source = this.#states[this.#current]
    if (!source) throw fail('INVALID_TRANSITION', `no current state`)
    if (source.final) throw fail('FINAL_STATE', `state ${source.name} is final`)
    const t = this.#ids.get(to)
    if (t === undefined || !source.targets.includes(t)) throw fail('INVALID_TRANSITION', `no transition to ${to}`)
    if (t === this.#current && !this.allowSelfTransitions) throw fail('SELF_TRANSITION', `self-transition of ${to}`)
    if (source.locked) throw fail('STATE_LOCKED', `state ${source.name} is locked`)
    if (this.#states[t]!.locked) throw fail('STATE_LOCKED', `state ${to} is locked`)
    return t
  }

  #commit(t: number): PlainRecord {
    const record = { from: this.#states[this.#current]!.name, to: this.#states[t]!.name, timestamp: Date.now() }
    this.#current = t
    if (this.#ring.length < this.maxHistory) this.#ring.push(record)
    else {
      this.#ring[this.#ringStart] = record
      this.#ringStart = (this.#ringStart + 1) % this.maxHistory
    }
    return record
  }

  transition(to: string): Promise<PlainRecord> {
    if (this.#busy) {
      const run = this.#busy.then(
        () => this.transition(to),
        () => this.transition(to),
      )
      return run
    }
    try {
      const t = this.#check(to)
      const guard = this.#states[this.#current]!.guards.get(t)
      if (!guard) return Promise.resolve(this.#commit(t))
      const run = (async () => {
        let ok: unknown
        try {
          ok = await guard()
        } catch (cause) {
          throw new PolyCallError('ERR_POLYCALL_GUARD_REJECTED', `the guard of ${to} threw`, { cause })
        }
        if (!ok) throw fail('GUARD_REJECTED', `the guard of ${to} refused`)
        return this.#commit(this.#check(to))
      })()
      const busy = run.finally(() => {
        if (this.#busy === busy) this.#busy = undefined
      })
      this.#busy = busy
      return run
    } catch (e) {
      return Promise.reject(e)
    }
  }

  lock(name: string): void {
    const s = this.#state(name)
    if (s.locked) throw fail('STATE_LOCKED', `state ${name} is locked`)
    s.locked = true
    s.meta.set('lockedAt', Date.now())
  }

  unlock(name: string): void {
    const s = this.#state(name)
    if (!s.locked) throw fail('STATE_NOT_LOCKED', `state ${name} is not locked`)
    s.locked = false
    s.meta.delete('lockedAt')
  }

  history(): PlainRecord[] {
    return [...this.#ring.slice(this.#ringStart), ...this.#ring.slice(0, this.#ringStart)]
  }

  #state(name: string): PlainState {
    const id = this.#ids.get(name)
    if (id === undefined) throw fail('INVALID_STATE', `no state ${name}`)
    return this.#states[id]!
  }

  #stateJson(s: PlainState): PlainStateJson {
    return {
      name: s.name,
      isLocked: s.locked,
      endpoint: s.endpoint,
      metadata: Object.fromEntries(s.meta),
      transitions: s.targets.map((t) => this.#states[t]!.name),
    }
  }

  snapshot(now = Date.now()): Record<string, unknown> {
    const body: Record<string, unknown> = {
      format: FORMAT,
      timestamp: now,
      currentState: this.current ?? null,
      states: this.#states.map((s) => {
        const state = this.#stateJson(s)
        return { name: s.name, snapshot: { timestamp: now, state, checksum: javaHash(JSON.stringify(state)) }, final: s.final }
      }),
      transitions: this.#states.flatMap((s) => s.targets.map((t) => ({ from: s.name, to: this.#states[t]!.name }))),
      history: this.history().map(({ from, to, timestamp }) => ({ from, to, timestamp })),
    }
    body['checksum'] = javaHash(JSON.stringify(body))
    return body
  }

  restore(snapshot: Record<string, unknown>): void {
    const { checksum, ...body } = snapshot
    if (checksum !== javaHash(JSON.stringify(body))) throw fail('INTEGRITY_CHECK_FAILED', 'machine checksum')
    type Entry = { name: string; final: boolean; snapshot: { state: PlainStateJson; checksum: number } }
    const entries = body['states'] as Entry[]
    if (entries.length > this.maxStates) throw fail('MAX_STATES_REACHED', 'too many states')
    const ids = new Map<string, number>()
    const states: PlainState[] = entries.map((e, i) => {
      const st = e.snapshot.state
      if (e.snapshot.checksum === 0) throw fail('INVALID_SNAPSHOT', 'state checksum 0')
      if (javaHash(JSON.stringify(st)) !== e.snapshot.checksum) throw fail('INTEGRITY_CHECK_FAILED', `state ${e.name}`)
      if (ids.has(e.name)) throw fail('INVALID_SNAPSHOT', `state ${e.name} twice`)
      ids.set(e.name, i)
      return {
        name: st.name,
        endpoint: st.endpoint,
        final: e.final,
        locked: st.isLocked,
        meta: new Map(Object.entries(st.metadata)),
        targets: [],
        guards: new Map(),
      }
    })
    let count = 0
    for (const [i, e] of entries.entries()) {
      for (const name of e.snapshot.state.transitions) {
        const t = ids.get(name)
        if (t === undefined) throw fail('INVALID_SNAPSHOT', `unknown state ${name}`)
        states[i]!.targets.push(t)
        const guard = this.#states[this.#ids.get(e.name) ?? -1]?.guards.get(this.#ids.get(name) ?? -1)
        if (guard) states[i]!.guards.set(t, guard)
        count++
      }
    }
    if (count > this.maxTransitions) throw fail('MAX_TRANSITIONS_REACHED', 'too many transitions')
    const current = body['currentState'] as string | null
    const history = (body['history'] as PlainRecord[]).slice(-this.maxHistory)
    this.#states = states
    this.#ids = ids
    this.#transitions = count
    this.#current = current === null ? -1 : ids.get(current)!
    this.#ring = history.map(({ from, to, timestamp }) => ({ from, to, timestamp }))
    this.#ringStart = 0
  }
}
