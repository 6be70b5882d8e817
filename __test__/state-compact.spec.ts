import test from 'ava'
import fc from 'fast-check'
import { ErrorCode, Identity, StateMachine, type StateMachineSnapshot } from '../ts/index.js'

const NAMES = ['INIT', 'READY', 'a b', 'café', 'q"uote', '😀', 'x', '\u0000nul']

function timeless(snap: StateMachineSnapshot): string {
  const { timestamp: _t, checksum: _c, ...rest } = snap
  return JSON.stringify({ ...rest, states: rest.states.map(({ snapshot: { timestamp: _s, ...s }, ...e }) => ({ ...e, snapshot: s })) })
}

async function code(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'restored',
    (e: { code?: string }) => e.code ?? String(e),
  )
}

/** Recomputes a compact snapshot's CRC-32 after an edit (zlib's crc32, as the layout says). */
function reseal(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes)
  let c = ~0
  const feed = (b: number) => {
    c ^= b
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
  }
  for (let i = 0; i < 12; i++) feed(out[i]!)
  for (let i = 16; i < out.length; i++) feed(out[i]!)
  new DataView(out.buffer).setUint32(12, ~c >>> 0, true)
  return out
}

const steps = fc.array(
  fc.record({
    from: fc.nat({ max: NAMES.length - 1 }),
    to: fc.nat({ max: NAMES.length - 1 }),
    lock: fc.boolean(),
    move: fc.boolean(),
    meta: fc.option(fc.tuple(fc.constantFrom('owner', 'n', '7', '02', 'é'), fc.jsonValue({ maxDepth: 2 })), { freq: 3 }),
  }),
  { minLength: 1, maxLength: 14 },
)

/** A machine built from random steps through the public API. */
async function machineOf(list: Array<{ from: number; to: number; lock: boolean; move: boolean; meta: [string, unknown] | null }>) {
  const sm = new StateMachine({ maxStates: 8, maxTransitions: 64, maxHistory: 6 })
  for (const n of NAMES) sm.addState(n, { final: n === 'x' })
  for (const s of list) {
    try {
      sm.addTransition(NAMES[s.from]!, NAMES[s.to]!)
    } catch {
      // duplicates and transitions out of the final state are refused; fine here
    }
    if (s.move) await sm.transition(NAMES[s.to]!).catch(() => {})
    if (s.meta && !sm.state(NAMES[s.from]!).locked) sm.setMetadata(NAMES[s.from]!, s.meta[0], s.meta[1])
    if (s.lock && !sm.state(NAMES[s.from]!).locked) sm.lock(NAMES[s.from]!)
  }
  return sm
}

test('compact snapshots round-trip to the same machine, bytes and JSON snapshot alike', async (t) => {
  await fc.assert(
    fc.asyncProperty(steps, async (list) => {
      const sm = await machineOf(list)
      const copy = new StateMachine({ maxStates: 8, maxTransitions: 64, maxHistory: 6 })
      const viaJson = new StateMachine({ maxStates: 8, maxTransitions: 64, maxHistory: 6 })
      try {
        const bytes = sm.snapshotBytes()
        if (!(bytes instanceof Uint8Array) || bytes.length >= JSON.stringify(sm.snapshot()).length) return false
        if ((await copy.restore(bytes)) !== 'polycall') return false
        if (timeless(copy.snapshot()) !== timeless(sm.snapshot())) return false
        if (copy.current !== sm.current || copy.history().length !== sm.history().length) return false
        // The restored machine writes the same compact bytes, apart from the time they carry.
        const again = copy.snapshotBytes()
        if (again.length !== bytes.length) return false
        // Its JSON form restores strictly to the same machine.
        await viaJson.restore(JSON.stringify(copy.snapshot()))
        if (timeless(viaJson.snapshot()) !== timeless(sm.snapshot())) return false
        // Transitions of the restored machine are the original's.
        for (const n of NAMES) if (JSON.stringify(copy.state(n).transitions) !== JSON.stringify(sm.state(n).transitions)) return false
        return true
      } finally {
        sm.free()
        copy.free()
        viaJson.free()
      }
    }),
    { numRuns: 300 },
  )
  t.pass()
})

test('corrupted, truncated or extended compact bytes are refused with codes, changing nothing', async (t) => {
  await fc.assert(
    fc.asyncProperty(steps, fc.nat(), fc.integer({ min: 1, max: 255 }), fc.nat(), async (list, at, flip, cut) => {
      const sm = await machineOf(list)
      const live = new StateMachine()
      try {
        live.addState('keep')
        const before = timeless(live.snapshot())
        const bytes = sm.snapshotBytes()
        const flipped = new Uint8Array(bytes)
        flipped[at % bytes.length]! ^= flip
        const bad = [flipped, bytes.subarray(0, cut % bytes.length), Buffer.concat([bytes, Buffer.of(0)])]
        for (const b of bad) {
          const c = await code(live.restore(b))
          if (c !== ErrorCode.INTEGRITY_CHECK_FAILED && c !== ErrorCode.INVALID_SNAPSHOT) return false
        }
        return timeless(live.snapshot()) === before && live.current === 'keep'
      } finally {
        sm.free()
        live.free()
      }
    }),
    { numRuns: 300 },
  )
  t.pass()
})

test('compact restore keeps the strict rules: forged content behind a valid CRC, locks, limits', async (t) => {
  const sm = new StateMachine()
  t.teardown(() => sm.free())
  for (const n of ['A', 'B', 'C']) sm.addState(n)
  sm.addTransition('A', 'B')
  sm.addTransition('B', 'C')
  await sm.transition('B')
  sm.lock('A')
  const bytes = sm.snapshotBytes()
  t.deepEqual([...bytes.subarray(0, 5)], [0x50, 0x43, 0x53, 0x4d, 1], 'PCSM, version 1')

  // A lock flag cleared and the CRC recomputed: the state checksum catches it.
  const flagsOfA = bytes.indexOf(Buffer.from('\u0001A\u0002/a'))
  t.true(flagsOfA > 0)
  const unlocked = new Uint8Array(bytes)
  unlocked[flagsOfA + 5] = 0
  const target = new StateMachine()
  t.teardown(() => target.free())
  const err = await t.throwsAsync(target.restore(reseal(unlocked)), { code: ErrorCode.INTEGRITY_CHECK_FAILED })
  t.is((err as { errno?: number } | undefined)?.errno, 7)
  t.is(target.states().length, 0)

  // Not compact bytes at all, or another version.
  await t.throwsAsync(target.restore(new Uint8Array(0)), { code: ErrorCode.INVALID_SNAPSHOT })
  await t.throwsAsync(target.restore(Buffer.from('{"states":[]}')), { code: ErrorCode.INVALID_SNAPSHOT })
  const v2 = new Uint8Array(bytes)
  v2[4] = 2
  await t.throwsAsync(target.restore(reseal(v2)), { code: ErrorCode.INVALID_SNAPSHOT })

  // Limits of the live configuration, and a locked live state.
  const small = new StateMachine({ maxStates: 2 })
  t.teardown(() => small.free())
  await t.throwsAsync(small.restore(bytes), { code: ErrorCode.MAX_STATES_REACHED })
  const lockedLive = new StateMachine()
  t.teardown(() => lockedLive.free())
  lockedLive.addState('Z')
  lockedLive.lock('Z')
  await t.throwsAsync(lockedLive.restore(bytes), { code: ErrorCode.STATE_LOCKED })
  t.deepEqual(lockedLive.states().map((s) => s.name), ['Z'])

  // The untouched bytes restore, locks included; the caller's buffer may change afterwards.
  const mine = Buffer.from(bytes)
  t.is(await target.restore(mine), 'polycall')
  mine.fill(0)
  t.deepEqual(target.states().map((s) => [s.name, s.locked]), [
    ['A', true],
    ['B', false],
    ['C', false],
  ])
  t.is(target.current, 'B')
  await target.transition('C')
  t.is(target.current, 'C')
})

test('a restore of bytes that waits its turn uses the bytes as they were when it was called', async (t) => {
  const sm = new StateMachine()
  t.teardown(() => sm.free())
  for (const n of ['A', 'B']) sm.addState(n)
  sm.addTransition('A', 'B')
  const bytes = Buffer.from(sm.snapshotBytes())
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  const target = new StateMachine()
  t.teardown(() => target.free())
  target.addState('P')
  target.addState('Q')
  target.addTransition('P', 'Q', { guard: () => gate.then(() => true) })
  const moving = target.transition('Q')
  const restoring = target.restore(bytes)
  bytes.fill(0xff)
  release()
  await moving
  t.is(await restoring, 'polycall')
  t.deepEqual(target.states().map((s) => s.name), ['A', 'B'])
})

test('verify refuses compact bytes, which carry no signature; signed JSON snapshots still restore', async (t) => {
  const id = Identity.generate()
  t.teardown(() => id.destroy())
  const sm = new StateMachine()
  t.teardown(() => sm.free())
  sm.addState('A')
  sm.addState('B')
  sm.addTransition('A', 'B')
  await sm.transition('B')
  const target = new StateMachine()
  t.teardown(() => target.free())
  await t.throwsAsync(target.restore(sm.snapshotBytes(), { verify: id }), { code: ErrorCode.BAD_SIGNATURE })
  t.is(target.states().length, 0)
  t.is(await target.restore(sm.snapshot({ sign: id }), { verify: id }), 'polycall')
  t.is(target.current, 'B')
})

test('two copies of the module in one process each fire their own transitions', async (t) => {
  const copy = (await import(`../ts/state/machine.js?copy=${Date.now()}`)) as typeof import('../ts/state/machine.js')
  t.not(copy.StateMachine, StateMachine)
  const a = new StateMachine()
  const b = new copy.StateMachine()
  t.teardown(() => {
    a.free()
    b.free()
  })
  for (const m of [a, b]) {
    m.addState('X')
    m.addState('Y')
    m.addState('Z')
    m.addTransition('X', 'Y')
    m.addTransition('Y', 'Z')
    m.addTransition('Z', 'X')
  }
  await a.transition('Y')
  await b.transition('Y')
  await b.transition('Z')
  await a.transition('Z')
  await a.transition('X')
  t.is(a.current, 'X')
  t.is(b.current, 'Z')
  t.deepEqual(a.history().map((h) => h.to), ['Y', 'Z', 'X'])
  t.deepEqual(b.history().map((h) => h.to), ['Y', 'Z'])
})
