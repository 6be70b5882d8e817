import test from 'ava'
import fc from 'fast-check'
import { ErrorCode, StateMachine, type StateMachineSnapshot } from '../ts/index.js'
import { PlainStateMachine } from '../benchmarks/plain-ts-state.js'

const NAMES = ['INIT', 'READY', 'a b', 'café', 'q"uote', '😀', 'x']

type Op =
  | { kind: 'addState'; name: number; final: boolean; deferred: boolean }
  | { kind: 'addTransition'; from: number; to: number }
  | { kind: 'transition'; to: number }
  | { kind: 'follow'; pick: number }
  | { kind: 'lock'; name: number }
  | { kind: 'unlock'; name: number }
  | { kind: 'roundTrip' }

const name = fc.nat({ max: NAMES.length - 1 })
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('addState' as const), name, final: fc.boolean(), deferred: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('addTransition' as const), from: name, to: name }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('transition' as const), to: name }) },
  // Follows one of the current state's transitions (picked when it runs), so most succeed.
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('follow' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('lock' as const), name }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('unlock' as const), name }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'roundTrip' as const }) },
)
// Most runs start with some states and transitions, so that later operations mostly succeed.
const setup: fc.Arbitrary<Op[]> = fc
  .tuple(
    fc.uniqueArray(name, { minLength: 2, maxLength: NAMES.length }),
    fc.array(fc.tuple(name, name), { maxLength: 20 }),
    fc.nat({ max: 9 }),
  )
  .map(([names, edges, finalEvery]) => [
    ...names.map((n, i): Op => ({ kind: 'addState', name: n, final: finalEvery > 0 && i % finalEvery === finalEvery - 1, deferred: false })),
    ...edges.map(([from, to]): Op => ({ kind: 'addTransition', from: names[from % names.length]!, to: names[to % names.length]! })),
  ])
const options = fc.record({
  maxStates: fc.integer({ min: 2, max: 7 }),
  maxTransitions: fc.integer({ min: 2, max: 16 }),
  maxHistory: fc.integer({ min: 1, max: 6 }),
  allowSelfTransitions: fc.boolean(),
})

/** The error code of a call, or 'ok'. */
async function outcome(fn: () => unknown): Promise<string> {
  try {
    await fn()
    return 'ok'
  } catch (e) {
    return (e as { code?: string }).code ?? String(e)
  }
}

function timeless(snap: StateMachineSnapshot): unknown {
  const { timestamp: _t, checksum: _c, ...rest } = snap
  return { ...rest, states: rest.states.map(({ snapshot: { timestamp: _s, ...s }, ...e }) => ({ ...e, snapshot: s })) }
}

test('random operation sequences agree with the plain-TS model and keep the invariants', async (t) => {
  await fc.assert(
    fc.asyncProperty(options, setup, fc.array(op, { minLength: 1, maxLength: 40, size: 'medium' }), async (opts, init, more) => {
      const ops = [...init, ...more]
      const sm = new StateMachine(opts)
      const model = new PlainStateMachine(opts)
      try {
        for (const o of ops) {
          let got: string
          let want: string
          switch (o.kind) {
            case 'addState': {
              const init = { final: o.final, deferred: o.deferred }
              got = await outcome(() => sm.addState(NAMES[o.name]!, init))
              want = await outcome(() => model.addState(NAMES[o.name]!, init))
              break
            }
            case 'addTransition':
              got = await outcome(() => sm.addTransition(NAMES[o.from]!, NAMES[o.to]!))
              want = await outcome(() => model.addTransition(NAMES[o.from]!, NAMES[o.to]!))
              break
            case 'transition':
              got = await outcome(() => sm.transition(NAMES[o.to]!))
              want = await outcome(() => model.transition(NAMES[o.to]!))
              break
            case 'follow': {
              const targets = sm.current === undefined ? [] : sm.state(sm.current).transitions
              const to = targets[o.pick % Math.max(1, targets.length)] ?? NAMES[o.pick % NAMES.length]!
              got = await outcome(() => sm.transition(to))
              want = await outcome(() => model.transition(to))
              break
            }
            case 'lock':
              got = await outcome(() => sm.lock(NAMES[o.name]!))
              want = await outcome(() => model.lock(NAMES[o.name]!))
              break
            case 'unlock':
              got = await outcome(() => sm.unlock(NAMES[o.name]!))
              want = await outcome(() => model.unlock(NAMES[o.name]!))
              break
            case 'roundTrip': {
              const snap = sm.snapshot()
              const copy = new StateMachine(opts)
              try {
                await copy.restore(JSON.parse(JSON.stringify(snap)) as StateMachineSnapshot)
                if (JSON.stringify(timeless(copy.snapshot())) !== JSON.stringify(timeless(snap))) return false
              } finally {
                copy.free()
              }
              // Onto itself: refused while one of its states is locked, and then nothing changes.
              const locked = sm.states().some((s) => s.locked)
              got = await outcome(() => sm.restore(snap))
              if (got !== (locked ? ErrorCode.STATE_LOCKED : 'ok')) return false
              if (JSON.stringify(timeless(sm.snapshot())) !== JSON.stringify(timeless(snap))) return false
              // The plain implementation writes the same text for the same data.
              model.restore(snap as unknown as Record<string, unknown>)
              if (JSON.stringify(model.snapshot(snap.timestamp)) !== JSON.stringify(snap)) return false
              got = want = 'ok'
              break
            }
          }
          if (got !== want) return false
          if (sm.current !== model.current) return false
          const history = sm.history()
          if (history.length > sm.maxHistory) return false
          if (JSON.stringify(history.map((h) => [h.from, h.to])) !== JSON.stringify(model.history().map((h) => [h.from, h.to]))) return false
          if (sm.current !== undefined && !sm.has(sm.current)) return false
          if (history.length > 0 && history.at(-1)!.to !== sm.current) return false
        }
        return true
      } finally {
        sm.free()
      }
    }),
    { numRuns: 1000 },
  )
  t.pass()
})

test('a snapshot restores to an equal machine, and any one-character change is refused', async (t) => {
  const build = fc.array(
    fc.record({ from: name, to: name, lock: fc.boolean(), move: fc.boolean() }),
    { minLength: 1, maxLength: 12 },
  )
  await fc.assert(
    fc.asyncProperty(build, fc.nat(), fc.integer({ min: 0x20, max: 0x7e }), async (steps, at, replacement) => {
      const sm = new StateMachine({ maxStates: 8, maxTransitions: 64 })
      const copy = new StateMachine({ maxStates: 8, maxTransitions: 64 })
      try {
        for (const n of NAMES) sm.addState(n, { final: n === 'x' })
        for (const s of steps) {
          try {
            sm.addTransition(NAMES[s.from]!, NAMES[s.to]!)
          } catch {
            // duplicates and transitions out of the final state are refused; fine here
          }
          if (s.move) await sm.transition(NAMES[s.to]!).catch(() => {})
          if (s.lock && !sm.state(NAMES[s.from]!).locked) sm.lock(NAMES[s.from]!)
        }
        const text = JSON.stringify(sm.snapshot())
        await copy.restore(text)
        if (JSON.stringify(timeless(copy.snapshot())) !== JSON.stringify(timeless(JSON.parse(text) as StateMachineSnapshot))) return false
        const ascii: number[] = []
        for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) < 0x80) ascii.push(i)
        const pos = ascii[at % ascii.length]!
        if (text.charCodeAt(pos) === replacement) return true
        const tampered = text.slice(0, pos) + String.fromCharCode(replacement) + text.slice(pos + 1)
        const before = JSON.stringify(timeless(copy.snapshot()))
        const code = await copy.restore(tampered).then(
          () => 'restored',
          (e: { code: string }) => e.code,
        )
        return (
          (code === ErrorCode.INTEGRITY_CHECK_FAILED || code === ErrorCode.INVALID_SNAPSHOT) &&
          JSON.stringify(timeless(copy.snapshot())) === before
        )
      } finally {
        sm.free()
        copy.free()
      }
    }),
    { numRuns: 1000 },
  )
  t.pass()
})
