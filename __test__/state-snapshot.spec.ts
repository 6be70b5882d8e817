import test, { type ExecutionContext } from 'ava'
import {
  ErrorCode,
  StateMachine,
  cStateChecksum,
  nodeStateChecksum,
  stateEndpoint,
  type PolyCallError,
  type StateMachineSnapshot,
  type StateSnapshot,
} from '../ts/index.js'
import { javaHash as javaHashJs } from '../benchmarks/plain-ts-state.js'
import { demoMachine } from '../ts/demo/service.js'
import { hex, vectors } from './helpers/vectors.js'

const T0 = 1_700_000_000_000

function fresh(t: ExecutionContext): StateMachine {
  const sm = new StateMachine()
  t.teardown(() => sm.free())
  return sm
}

async function demo(t: ExecutionContext): Promise<StateMachine> {
  const sm = demoMachine()
  t.teardown(() => sm.free())
  await sm.transition('READY')
  await sm.transition('RUNNING')
  sm.lock('PAUSED')
  sm.state('READY').setMetadata('note', { quote: '"', tab: '\t', emoji: '😀' })
  // An integer-like key: JSON.parse puts it first, so the core writes it first too.
  sm.state('READY').setMetadata('7', 'seven')
  return sm
}

/** The snapshot with every timestamp removed (they differ between two snapshots of one machine). */
function timeless(snap: StateMachineSnapshot): unknown {
  const { timestamp: _t, checksum: _c, ...rest } = snap
  return { ...rest, states: rest.states.map(({ snapshot: { timestamp: _s, ...s }, ...e }) => ({ ...e, snapshot: s })) }
}

function code(t: ExecutionContext, e: unknown, expected: string, errno?: number) {
  const err = e as PolyCallError
  t.is(err.code, expected)
  t.is(err.errno, errno)
}

const jsVector = (name: string) => vectors.state_machine.js_state_checksum.find((v) => v.name === name)!

test('C state checksum vectors (LP64, NULL actions)', (t) => {
  const cases = vectors.state_machine.c_state_checksum_lp64.vectors
  t.is(cases.length, 8)
  for (const v of cases) {
    t.is(cStateChecksum(v.name, { final: v.is_final, id: v.id }), v.checksum, v.name)
    // The covered bytes keep at most 31 name bytes: the stored name gives the same value.
    t.is(cStateChecksum(v.stored_name, { final: v.is_final, id: v.id }), v.checksum)
    t.is(hex(v.covered_bytes_hex).subarray(0, 32).toString('latin1').replace(/\0+$/, ''), v.stored_name)
  }
  t.is(cStateChecksum('INIT'), 0x494e4954)
  t.throws(() => cStateChecksum('A', { id: -1 }), { code: ErrorCode.INVALID_ARGUMENT })
})

test('node-polycall state checksum and endpoint vectors', (t) => {
  t.is(vectors.state_machine.js_state_checksum.length, 4)
  for (const v of vectors.state_machine.js_state_checksum) {
    t.is(nodeStateChecksum(v.json), v.checksum, v.name)
    t.is(javaHashJs(v.json), v.checksum)
    if (v.json !== '{}') t.is(nodeStateChecksum(JSON.parse(v.json)), v.checksum)
  }
  for (const v of vectors.state_machine.js_endpoint_names) t.is(stateEndpoint(v.state_name), v.endpoint)
  const sm = fresh(t)
  for (const v of vectors.state_machine.js_endpoint_names) t.is(sm.addState(v.state_name).endpoint, v.endpoint)
})

test('node-polycall state snapshots restore exactly (the §9.2 vectors)', (t) => {
  const sm = fresh(t)
  sm.addState('ready')
  sm.addState('Ready State')
  sm.addState('running')
  sm.addState('error')
  for (const name of ['ready', 'locked_with_transitions']) {
    const v = jsVector(name)
    const snap: StateSnapshot = { timestamp: T0, state: JSON.parse(v.json), checksum: v.checksum }
    sm.restoreState(snap)
    const state = sm.state(snap.state.name)
    t.is(JSON.stringify(state.toJSON()), v.json)
    t.is(state.checksum, v.checksum)
    t.is(sm.verify(state.name, { checksum: v.checksum }), v.checksum)
  }
  const rs = sm.state('Ready State')
  t.true(rs.locked)
  t.deepEqual(rs.transitions, ['running', 'error'])
  t.is(rs.diagnostics().lockedAt, 1_700_000_000_900)
  // And the snapshot we write of it is node-polycall's: same state object, same checksum.
  const ours = rs.snapshot()
  t.is(ours.checksum, jsVector('locked_with_transitions').checksum)
  t.is(JSON.stringify(ours.state), jsVector('locked_with_transitions').json)
  t.deepEqual(Object.keys(ours), ['timestamp', 'state', 'checksum'])
})

test('state restore rules: integrity 7, unknown 1, locked 8, version 9, zero checksum', (t) => {
  const sm = fresh(t)
  const a = sm.addState('A')
  sm.addState('B')
  sm.addTransition('A', 'B')
  const snap = a.snapshot()
  t.is(snap.checksum, a.checksum)
  const e7 = t.throws(() => sm.restoreState({ ...snap, state: { ...snap.state, endpoint: '/evil' } }))
  code(t, e7, ErrorCode.INTEGRITY_CHECK_FAILED, 7)
  a.lock()
  code(t, t.throws(() => a.restore(snap)), ErrorCode.STATE_LOCKED, 8)
  a.unlock()
  a.setMetadata('k', 1)
  code(t, t.throws(() => a.restore(snap)), ErrorCode.STATE_VERSION_MISMATCH, 9)
  code(t, t.throws(() => sm.state('B').restore(snap)), ErrorCode.INVALID_STATE, 1)
  const other = fresh(t)
  other.addState('X')
  code(t, t.throws(() => other.restoreState(snap)), ErrorCode.INVALID_STATE, 1)
  code(t, t.throws(() => sm.restoreState({ ...snap, checksum: 0 })), ErrorCode.INVALID_SNAPSHOT)
  code(t, t.throws(() => a.restore('{not json')), ErrorCode.INVALID_SNAPSHOT)
  code(t, t.throws(() => sm.restoreState('{not json')), ErrorCode.INVALID_SNAPSHOT)
  // At the right version, restore brings back the lock flag and the transitions.
  const b = sm.state('B')
  const bSnap = b.snapshot()
  sm.addTransition('B', 'A')
  b.lock()
  b.unlock()
  b.restore(bSnap)
  t.deepEqual(b.transitions, [])
  t.deepEqual(sm.transitions(), [{ from: 'A', to: 'B' }])
})

test('a machine snapshot restores to an equal machine whose transitions work', async (t) => {
  const sm = await demo(t)
  const snap = sm.snapshot()
  t.is(snap.format, 'polycall.state-machine/1')
  const copy = fresh(t)
  t.is(await copy.restore(snap), 'polycall')
  t.deepEqual(timeless(copy.snapshot()), timeless(snap))
  t.is(copy.current, 'RUNNING')
  t.deepEqual(copy.history(), sm.history())
  t.true(copy.state('PAUSED').locked)
  t.deepEqual(copy.state('READY').metadata.get('note'), { quote: '"', tab: '\t', emoji: '😀' })
  t.deepEqual(Object.keys(snap.states[1]!.snapshot.state.metadata), ['7', 'createdAt', 'version', 'lastModified', 'note'])
  // node-polycall loses the transition table on restore; polycall rebuilds it.
  t.deepEqual(copy.transitions(), sm.transitions())
  copy.unlock('PAUSED')
  await copy.transition('PAUSED')
  await copy.transition('RUNNING')
  await copy.transition('ERROR')
  t.is(copy.current, 'ERROR')
  // Through JSON text too, as a store would keep it.
  const again = fresh(t)
  await again.restore(JSON.stringify(snap))
  t.deepEqual(timeless(again.snapshot()), timeless(snap))
})

test('snapshot checksums can be checked with JSON.stringify alone', async (t) => {
  const snap = (await demo(t)).snapshot()
  const { checksum, ...body } = snap
  t.is(javaHashJs(JSON.stringify(body)), checksum!)
  for (const s of snap.states) t.is(javaHashJs(JSON.stringify(s.snapshot.state)), s.snapshot.checksum)
  // node-polycall reads timestamp, currentState, states[{name, snapshot}] and history.
  t.deepEqual(Object.keys(snap), ['format', 'timestamp', 'currentState', 'states', 'transitions', 'history', 'checksum'])
  t.deepEqual(Object.keys(snap.states[0]!), ['name', 'snapshot', 'final'])
  t.deepEqual(Object.keys(snap.states[0]!.snapshot.state), ['name', 'isLocked', 'endpoint', 'metadata', 'transitions'])
})

test('a tampered snapshot is refused and the machine is left as it was', async (t) => {
  const snap = (await demo(t)).snapshot()
  const target = fresh(t)
  target.addState('keep')
  const before = JSON.stringify(timeless(target.snapshot()))
  const attempts: [StateMachineSnapshot, string, number?][] = [
    [{ ...snap, currentState: 'INIT' }, ErrorCode.INTEGRITY_CHECK_FAILED, 7],
    [{ ...snap, history: [] }, ErrorCode.INTEGRITY_CHECK_FAILED, 7],
    [{ ...snap, checksum: (snap.checksum! ^ 1) >>> 0 }, ErrorCode.INTEGRITY_CHECK_FAILED, 7],
    [{ ...snap, transitions: [] }, ErrorCode.INTEGRITY_CHECK_FAILED, 7],
    [{ ...snap, format: 'other' }, ErrorCode.INVALID_SNAPSHOT],
  ]
  // A state edited with the machine checksum recomputed still fails its own checksum.
  const edited = structuredClone(snap)
  edited.states[0]!.snapshot.state.isLocked = true
  const { checksum: _c, ...body } = edited
  edited.checksum = javaHashJs(JSON.stringify(body))
  attempts.push([edited, ErrorCode.INTEGRITY_CHECK_FAILED, 7])
  // A consistent but edited table (resealed) disagrees with the states' own lists.
  const table = structuredClone(snap)
  table.transitions = table.transitions!.slice(1)
  const { checksum: _d, ...tableBody } = table
  table.checksum = javaHashJs(JSON.stringify(tableBody))
  attempts.push([table, ErrorCode.INVALID_SNAPSHOT])
  for (const [bad, expected, errno] of attempts) {
    code(t, await t.throwsAsync(target.restore(bad)), expected, errno)
    t.is(JSON.stringify(timeless(target.snapshot())), before)
  }
  code(t, await t.throwsAsync(target.restore('{')), ErrorCode.INVALID_SNAPSHOT)
  code(t, await t.throwsAsync(target.restore(null as never)), ErrorCode.INVALID_SNAPSHOT)
})

test('restore checks limits against the live configuration', async (t) => {
  const snap = (await demo(t)).snapshot()
  const small = new StateMachine({ maxStates: 4 })
  t.teardown(() => small.free())
  code(t, await t.throwsAsync(small.restore(snap)), ErrorCode.MAX_STATES_REACHED, 3)
  const few = new StateMachine({ maxTransitions: 4 })
  t.teardown(() => few.free())
  code(t, await t.throwsAsync(few.restore(snap)), ErrorCode.MAX_TRANSITIONS_REACHED, 4)
  const short = new StateMachine({ maxHistory: 1 })
  t.teardown(() => short.free())
  await short.restore(snap)
  t.deepEqual(short.history(), snap.history.slice(-1))
})

/** A node-polycall machine snapshot: `{timestamp, currentState, states:[{name, snapshot}], history}`. */
function nodePolycallSnapshot(): StateMachineSnapshot {
  const state = (json: string, checksum: number) => ({ timestamp: T0, state: JSON.parse(json), checksum })
  const plain = (name: string, transitions: string[] = []) => {
    const json = JSON.stringify({
      name,
      isLocked: false,
      endpoint: `/${name}`,
      metadata: { createdAt: T0, version: 1, lastModified: T0 },
      transitions,
    })
    return { name, snapshot: state(json, javaHashJs(json)) }
  }
  const ready = jsVector('ready')
  const locked = jsVector('locked_with_transitions')
  return {
    timestamp: T0,
    currentState: 'ready',
    states: [
      { name: 'ready', snapshot: state(ready.json, ready.checksum) },
      { name: 'Ready State', snapshot: state(locked.json, locked.checksum) },
      plain('running'),
      plain('error'),
    ],
    // A machine that never moved: node-polycall makes its first state current.
    history: [],
  }
}

test('a node-polycall machine snapshot restores; its transitions come from the states and the live table', async (t) => {
  const sm = fresh(t)
  const calls: string[] = []
  sm.addState('ready')
  sm.addState('running')
  sm.addState('gone')
  sm.addTransition('ready', 'running', { guard: () => (calls.push('guard kept'), true) })
  sm.addTransition('ready', 'gone')
  // Strict by default: node-polycall's layout has no machine checksum, so it needs `legacy`.
  code(t, await t.throwsAsync(sm.restore(nodePolycallSnapshot())), ErrorCode.INVALID_SNAPSHOT)
  t.true(sm.has('gone'))
  t.is(await sm.restore(nodePolycallSnapshot(), { legacy: true }), 'node-polycall')
  t.is(sm.current, 'ready')
  t.false(sm.has('gone'))
  t.deepEqual(sm.transitions(), [
    { from: 'ready', to: 'running' },
    { from: 'Ready State', to: 'running' },
    { from: 'Ready State', to: 'error' },
  ])
  t.deepEqual(sm.history(), [])
  t.true(sm.state('Ready State').locked)
  await sm.transition('running')
  t.deepEqual(calls, ['guard kept'])
  code(t, await t.throwsAsync(sm.restore(nodePolycallSnapshot(), { legacy: 'yes' as never })), ErrorCode.INVALID_ARGUMENT)
  // A node-polycall state checksum of 0 marks a malformed snapshot; a wrong one fails integrity.
  const other = fresh(t)
  const zero = nodePolycallSnapshot()
  zero.states[0]!.snapshot.checksum = 0
  code(t, await t.throwsAsync(other.restore(zero, { legacy: true })), ErrorCode.INVALID_SNAPSHOT)
  const wrong = nodePolycallSnapshot()
  wrong.states[0]!.snapshot.checksum += 1
  code(t, await t.throwsAsync(other.restore(wrong, { legacy: true })), ErrorCode.INTEGRITY_CHECK_FAILED, 7)
})

test('our machine snapshot reads the way node-polycall restores it', async (t) => {
  // node-polycall's restore: for each {name, snapshot}, recompute the hash of
  // JSON.stringify(snapshot.state) and compare with snapshot.checksum (0 is malformed); then take
  // currentState and history. Everything it needs is there, unchanged in meaning.
  const snap = (await demo(t)).snapshot()
  for (const { name, snapshot } of snap.states) {
    t.not(snapshot.checksum, 0)
    t.is(javaHashJs(JSON.stringify(snapshot.state)), snapshot.checksum, name)
    t.is(snapshot.state.name, name)
  }
  t.is(typeof snap.currentState, 'string')
  t.true(snap.history.every((h) => typeof h.from === 'string' && typeof h.to === 'string' && typeof h.timestamp === 'number'))
})

test('restore waits for a running transition', async (t) => {
  const sm = fresh(t)
  sm.addState('A')
  sm.addState('B')
  let open!: (v: boolean) => void
  sm.addTransition('A', 'B', { guard: () => new Promise<boolean>((r) => (open = r)) })
  const snap = sm.snapshot()
  const moving = sm.transition('B')
  const restoring = sm.restore(snap)
  await Promise.resolve()
  open(true)
  t.is((await moving).to, 'B')
  await restoring
  t.is(sm.current, 'A')
  code(t, await t.throwsAsync(sm.restore(snap, { signal: AbortSignal.abort() })), ErrorCode.ABORTED)
})
