/**
 * What `restore()` refuses: snapshots with their integrity members deleted (strict by default,
 * `legacy` to opt into node-polycall's layout), current states and histories the snapshot's own
 * transitions cannot explain, and restoring over a locked state.
 */
import test, { type ExecutionContext } from 'ava'
import { ErrorCode, StateMachine, type PolyCallError, type StateMachineSnapshot, type TransitionRecord } from '../ts/index.js'
import { javaHash } from '../benchmarks/plain-ts-state.js'

function fresh(t: ExecutionContext, build?: (sm: StateMachine) => void): StateMachine {
  const sm = new StateMachine()
  t.teardown(() => sm.free())
  build?.(sm)
  return sm
}

/** INIT -> READY -> VAULT, where the guard of READY -> VAULT always refuses. */
async function guarded(t: ExecutionContext): Promise<StateMachine> {
  const sm = fresh(t, (m) => {
    m.addState('INIT')
    m.addState('READY')
    m.addState('VAULT')
    m.addTransition('INIT', 'READY')
    m.addTransition('READY', 'VAULT', { guard: () => false })
  })
  await sm.transition('READY')
  const refused = await t.throwsAsync(sm.transition('VAULT'))
  t.is((refused as PolyCallError).code, ErrorCode.GUARD_REJECTED)
  return sm
}

/** The snapshot as it reads once someone deletes `format`, `transitions` and `checksum`. */
function stripped(snap: StateMachineSnapshot): StateMachineSnapshot {
  const { format: _f, transitions: _t, checksum: _c, ...rest } = structuredClone(snap)
  return rest
}

/** Recomputes the machine checksum after an edit (it is not a MAC; anyone can). */
function resealed(snap: StateMachineSnapshot): StateMachineSnapshot {
  const { checksum: _c, ...body } = snap
  return { ...body, checksum: javaHash(JSON.stringify(body)) }
}

/** What restoring `snap` into `sm` gives: 'ok' or the error code; on a refusal nothing may change. */
async function attempt(t: ExecutionContext, sm: StateMachine, snap: StateMachineSnapshot, legacy?: boolean): Promise<string> {
  const before = { current: sm.current, history: sm.history(), transitions: sm.transitions(), names: sm.states().map((s) => s.name) }
  try {
    await sm.restore(snap, legacy === undefined ? {} : { legacy })
    return 'ok'
  } catch (e) {
    const err = e as PolyCallError
    t.deepEqual({ current: sm.current, history: sm.history(), transitions: sm.transitions(), names: sm.states().map((s) => s.name) }, before)
    if (err.code === ErrorCode.STATE_LOCKED) t.is(err.errno, 8)
    return err.code
  }
}

const step = (from: string, to: string, timestamp = 1_700_000_000_000): TransitionRecord => ({ from, to, timestamp })

test('a snapshot whose integrity members were deleted is refused unless legacy is asked for', async (t) => {
  const source = await guarded(t)
  const snap = source.snapshot()
  const target = fresh(t, (m) => m.addState('keep'))
  t.is(await attempt(t, target, stripped(snap)), ErrorCode.INVALID_SNAPSHOT)
  t.is(await attempt(t, target, stripped(snap), false), ErrorCode.INVALID_SNAPSHOT)
  t.deepEqual(target.states().map((s) => s.name), ['keep'])
  // Deleting only some of them is refused in both modes (resealed, so the checksum is not what fails).
  for (const key of ['format', 'transitions', 'checksum'] as const) {
    let partial = structuredClone(snap)
    delete partial[key]
    if (key !== 'checksum') partial = resealed(partial)
    t.is(await attempt(t, target, partial), ErrorCode.INVALID_SNAPSHOT, key)
    t.is(await attempt(t, target, partial, true), ErrorCode.INVALID_SNAPSHOT, key)
  }
  // Opting in, an unedited stripped snapshot is a consistent node-polycall snapshot.
  t.is(await attempt(t, target, stripped(snap), true), 'ok')
  t.is(target.current, 'READY')
  t.deepEqual(target.history(), source.history())
})

test('a state reachable only through a refusing guard cannot be set by restore', async (t) => {
  const sm = await guarded(t)
  const snap = sm.snapshot()
  const target = fresh(t, (m) => m.addState('keep'))
  // Edit the current state of the stripped snapshot: no checksum covers it any more.
  const intoVault = { ...stripped(snap), currentState: 'VAULT' }
  t.is(await attempt(t, target, intoVault), ErrorCode.INVALID_SNAPSHOT)
  // Even with legacy: the history ends in READY.
  t.is(await attempt(t, target, intoVault, true), ErrorCode.INVALID_SNAPSHOT)
  // Or with the history dropped: a machine that never moved is in its first state.
  t.is(await attempt(t, target, { ...intoVault, history: [] }, true), ErrorCode.INVALID_SNAPSHOT)
  // Or with a history that jumps there: INIT -> VAULT is no transition.
  t.is(await attempt(t, target, { ...intoVault, history: [step('INIT', 'VAULT')] }, true), ErrorCode.INVALID_SNAPSHOT)
  // Our own layout, edited and resealed: the history must still end in the current state.
  t.is(await attempt(t, target, resealed({ ...snap, currentState: 'VAULT' })), ErrorCode.INVALID_SNAPSHOT)
  t.deepEqual(target.states().map((s) => s.name), ['keep'])
  // The guarded machine itself never left READY.
  t.is(await attempt(t, sm, intoVault, true), ErrorCode.INVALID_SNAPSHOT)
  t.is(sm.current, 'READY')
})

test('forged history is refused', async (t) => {
  const source = fresh(t, (m) => {
    m.addState('A')
    m.addState('B')
    m.addState('C', { final: true })
    m.addTransition('A', 'B')
    m.addTransition('B', 'A')
    m.addTransition('B', 'C')
  })
  await source.transition('B')
  const snap = source.snapshot()
  const target = fresh(t, (m) => m.addState('keep'))
  const legacyWith = (history: TransitionRecord[], currentState: string) => ({ ...stripped(snap), history, currentState })
  const oursWith = (history: TransitionRecord[], currentState: string | null) => resealed({ ...snap, history, currentState })
  // A step that is no transition (A -> C), in node-polycall's layout.
  t.is(await attempt(t, target, legacyWith([step('A', 'C')], 'C'), true), ErrorCode.INVALID_SNAPSHOT)
  // Steps that do not follow on from each other.
  t.is(await attempt(t, target, legacyWith([step('A', 'B'), step('A', 'B')], 'B'), true), ErrorCode.INVALID_SNAPSHOT)
  t.is(await attempt(t, target, oursWith([step('A', 'B'), step('A', 'B')], 'B')), ErrorCode.INVALID_SNAPSHOT)
  // A step out of the final state C.
  const outOfFinal = [step('A', 'B'), step('B', 'C'), step('C', 'A')]
  t.is(await attempt(t, target, legacyWith(outOfFinal, 'A'), true), ErrorCode.INVALID_SNAPSHOT)
  t.is(await attempt(t, target, oursWith(outOfFinal, 'A')), ErrorCode.INVALID_SNAPSHOT)
  // A history that does not end in the current state, or with no current state at all.
  t.is(await attempt(t, target, oursWith([step('A', 'B'), step('B', 'A')], 'B')), ErrorCode.INVALID_SNAPSHOT)
  t.is(await attempt(t, target, oursWith([step('A', 'B')], null)), ErrorCode.INVALID_SNAPSHOT)
  // A history naming a state the snapshot does not have.
  t.is(await attempt(t, target, legacyWith([step('A', 'Z')], 'B'), true), ErrorCode.INVALID_SNAPSHOT)
  t.deepEqual(target.states().map((s) => s.name), ['keep'])
  // A real walk restores.
  const walk = [step('A', 'B'), step('B', 'A'), step('A', 'B')]
  t.is(await attempt(t, target, legacyWith(walk, 'B'), true), 'ok')
  t.deepEqual(target.history(), walk)
})

test('restoring over a locked state refuses with STATE_LOCKED and keeps the lock', async (t) => {
  const sm = fresh(t, (m) => {
    m.addState('RUNNING')
    m.addState('PAUSED')
    m.addTransition('RUNNING', 'PAUSED')
  })
  const unlocked = sm.snapshot()
  sm.lock('PAUSED')
  const locked = sm.snapshot()
  // A snapshot in which PAUSED is unlocked would drop the lock: refused, nothing changes.
  t.is(await attempt(t, sm, unlocked), ErrorCode.STATE_LOCKED)
  t.true(sm.state('PAUSED').locked)
  t.is(sm.state('PAUSED').checksum, locked.states[1]!.snapshot.checksum)
  // So is a snapshot that carries the same lock, a snapshot of another machine, and legacy.
  t.is(await attempt(t, sm, locked), ErrorCode.STATE_LOCKED)
  const other = fresh(t, (m) => m.addState('X'))
  t.is(await attempt(t, sm, other.snapshot()), ErrorCode.STATE_LOCKED)
  t.is(await attempt(t, sm, stripped(other.snapshot()), true), ErrorCode.STATE_LOCKED)
  t.true(sm.state('PAUSED').locked)
  // A bad snapshot reports its own error first.
  t.is(await attempt(t, sm, { ...locked, currentState: 'PAUSED' }), ErrorCode.INTEGRITY_CHECK_FAILED)
  // Unlocked first, it restores, and the snapshot brings its own lock back.
  sm.unlock('PAUSED')
  t.is(await attempt(t, sm, locked), 'ok')
  t.true(sm.state('PAUSED').locked)
  sm.unlock('PAUSED')
  t.is(await attempt(t, sm, unlocked), 'ok')
  t.false(sm.state('PAUSED').locked)
})
