import test, { type ExecutionContext } from 'ava'
import { on, once } from 'node:events'
import {
  ErrorCode,
  PolyCallError,
  StateMachine,
  isPolyCallError,
  type StateMachineOptions,
  type TransitionRecord,
} from '../ts/index.js'
import { demoMachine } from '../ts/demo/service.js'

/** The C library's demo machine (docs/protocol.md §9.1). */
function demo(t: ExecutionContext, options?: StateMachineOptions): StateMachine {
  const sm = demoMachine(options)
  t.teardown(() => sm.free())
  return sm
}

function fresh(t: ExecutionContext, options?: StateMachineOptions): StateMachine {
  const sm = new StateMachine(options)
  t.teardown(() => sm.free())
  return sm
}

async function rejects(t: ExecutionContext, p: Promise<unknown>, code: string, errno?: number): Promise<PolyCallError> {
  const err = (await t.throwsAsync(p)) as PolyCallError
  t.true(isPolyCallError(err))
  t.is(err.code, code)
  t.is(err.errno, errno)
  return err
}

function throws(t: ExecutionContext, fn: () => unknown, code: string, errno?: number): PolyCallError {
  const err = t.throws(fn) as PolyCallError
  t.true(isPolyCallError(err))
  t.is(err.code, code)
  t.is(err.errno, errno)
  return err
}

/**
 * polycall's timeout timers are unref()ed, so a test that waits only on one must hold the event
 * loop open itself (a real program has its sockets and servers doing that).
 */
function keepAlive(t: ExecutionContext): void {
  const timer = setInterval(() => {}, 1000)
  t.teardown(() => clearInterval(timer))
}

/** A promise with its resolve/reject exposed, to control async guards and hooks. */
function deferred<T = void>() {
  let resolve!: (v: T) => void
  let reject!: (e: unknown) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

test('the first state added becomes current unless deferred', (t) => {
  const sm = fresh(t)
  t.is(sm.current, undefined)
  sm.addState('A', { deferred: true })
  t.is(sm.current, undefined)
  sm.addState('B')
  sm.addState('C')
  t.is(sm.current, 'B')
  t.deepEqual(
    sm.states().map((s) => s.name),
    ['A', 'B', 'C'],
  )
})

test('transitions follow the table and are recorded in history', async (t) => {
  const sm = demo(t)
  const before = Date.now()
  const rec = await sm.transition('READY')
  t.is(rec.from, 'INIT')
  t.is(rec.to, 'READY')
  t.true(rec.timestamp >= before && rec.timestamp <= Date.now())
  await sm.transition('RUNNING')
  await sm.transition('PAUSED')
  await sm.transition('RUNNING')
  t.is(sm.current, 'RUNNING')
  t.deepEqual(
    sm.history().map(({ from, to }) => `${from}->${to}`),
    ['INIT->READY', 'READY->RUNNING', 'RUNNING->PAUSED', 'PAUSED->RUNNING'],
  )
  t.deepEqual(sm.history()[0], rec)
})

test('a transition fires only from its own source state', async (t) => {
  const sm = demo(t)
  // RUNNING -> PAUSED exists, but the machine is in INIT (the C library would fire it anyway).
  const err = await rejects(t, sm.transition('PAUSED'), ErrorCode.INVALID_TRANSITION, 2)
  t.regex(err.message, /INIT/)
  t.is(sm.current, 'INIT')
  t.deepEqual(sm.history(), [])
})

test('an unknown target is a missing transition', async (t) => {
  const sm = demo(t)
  const err = await rejects(t, sm.transition('NOPE'), ErrorCode.INVALID_TRANSITION, 2)
  t.regex(err.message, /NOPE/)
  t.is(sm.diagnostics('INIT').failedTransitions, 1)
})

test('a machine without a current state refuses transitions', async (t) => {
  const sm = fresh(t)
  sm.addState('A', { deferred: true })
  sm.addState('B', { deferred: true })
  sm.addTransition('A', 'B')
  await rejects(t, sm.transition('B'), ErrorCode.INVALID_TRANSITION, 2)
})

test('self-transitions: missing first, then refused unless allowed', async (t) => {
  const sm = fresh(t)
  sm.addState('A')
  await rejects(t, sm.transition('A'), ErrorCode.INVALID_TRANSITION, 2)
  sm.addTransition('A', 'A')
  await rejects(t, sm.transition('A'), ErrorCode.SELF_TRANSITION, 2)
  t.deepEqual(sm.history(), [])

  const ok = fresh(t, { allowSelfTransitions: true })
  t.true(ok.allowSelfTransitions)
  ok.addState('A')
  ok.addTransition('A', 'A')
  t.deepEqual((await ok.transition('A')).to, 'A')
  t.is(ok.history().length, 1)
})

test('a final state cannot be left and takes no transitions', async (t) => {
  const sm = demo(t)
  for (const to of ['READY', 'RUNNING', 'ERROR']) await sm.transition(to)
  t.true(sm.state('ERROR').final)
  throws(t, () => sm.addTransition('ERROR', 'INIT'), ErrorCode.FINAL_STATE, 2)
  await rejects(t, sm.transition('INIT'), ErrorCode.FINAL_STATE, 2)
  t.is(sm.current, 'ERROR')
})

test('a locked source or target refuses the transition', async (t) => {
  const sm = demo(t)
  sm.lock('READY')
  t.true(sm.state('READY').locked)
  await rejects(t, sm.transition('READY'), ErrorCode.STATE_LOCKED, 8)
  sm.unlock('READY')
  sm.lock('INIT')
  await rejects(t, sm.transition('READY'), ErrorCode.STATE_LOCKED, 8)
  sm.unlock('INIT')
  await sm.transition('READY')
  t.is(sm.current, 'READY')
})

test('locking is strict and records lockedAt without a version bump', (t) => {
  const sm = demo(t)
  throws(t, () => sm.unlock('INIT'), ErrorCode.STATE_NOT_LOCKED)
  const before = Date.now()
  sm.lock('INIT')
  throws(t, () => sm.lock('INIT'), ErrorCode.STATE_LOCKED, 8)
  const d = sm.diagnostics('INIT')
  t.true(d.locked)
  t.true(d.lockedAt! >= before)
  t.is(d.version, 1)
  t.is(sm.state('INIT').metadata.get('lockedAt'), d.lockedAt)
  sm.unlock('INIT')
  t.false(sm.state('INIT').metadata.has('lockedAt'))
  t.is(sm.diagnostics('INIT').lockedAt, undefined)
  throws(t, () => sm.lock('NOPE'), ErrorCode.INVALID_STATE, 1)
})

test('history keeps the newest maxHistory entries; 0 means 100', async (t) => {
  const sm = fresh(t, { maxHistory: 3 })
  sm.addState('A')
  sm.addState('B')
  sm.addTransition('A', 'B')
  sm.addTransition('B', 'A')
  const records: TransitionRecord[] = []
  for (let i = 0; i < 10; i++) records.push(await sm.transition(i % 2 === 0 ? 'B' : 'A'))
  t.deepEqual(sm.history(), records.slice(-3))
  t.is(fresh(t, { maxHistory: 0 }).maxHistory, 100)
  t.is(fresh(t).maxHistory, 100)
})

test('capacity limits default to the C library and can be raised', (t) => {
  const sm = fresh(t)
  for (let i = 0; i < 32; i++) sm.addState(`S${i}`)
  throws(t, () => sm.addState('S32'), ErrorCode.MAX_STATES_REACHED, 3)
  let n = 0
  for (let f = 0; f < 32 && n < 64; f++) for (let to = 0; to < 3 && n < 64; to++, n++) sm.addTransition(`S${f}`, `S${(f + to + 1) % 32}`)
  throws(t, () => sm.addTransition('S31', 'S5'), ErrorCode.MAX_TRANSITIONS_REACHED, 4)
  const name31 = 'n'.repeat(31)
  const big = fresh(t, { maxStates: 40, maxTransitions: 100, maxNameLength: 40 })
  throws(t, () => fresh(t).addState('n'.repeat(32)), ErrorCode.STATE_NAME_TOO_LONG)
  // Names are measured in UTF-8 bytes: 16 two-byte characters are 32 bytes.
  throws(t, () => fresh(t).addState('é'.repeat(16)), ErrorCode.STATE_NAME_TOO_LONG)
  fresh(t).addState(name31)
  for (let i = 0; i < 40; i++) big.addState(`${'x'.repeat(36)}${i}`)
  for (let i = 0; i < 40; i++) {
    big.addTransition(`${'x'.repeat(36)}${i}`, `${'x'.repeat(36)}${(i + 1) % 40}`)
    big.addTransition(`${'x'.repeat(36)}${i}`, `${'x'.repeat(36)}${(i + 2) % 40}`)
  }
  t.is(big.transitions().length, 80)
  throws(t, () => new StateMachine({ maxStates: 0 }), ErrorCode.INVALID_ARGUMENT)
})

test('adding is validated', (t) => {
  const sm = demo(t)
  throws(t, () => sm.addState('INIT'), ErrorCode.DUPLICATE_STATE)
  throws(t, () => sm.addTransition('INIT', 'READY'), ErrorCode.DUPLICATE_TRANSITION)
  throws(t, () => sm.addTransition('INIT', 'NOPE'), ErrorCode.INVALID_STATE, 1)
  throws(t, () => sm.addState(''), ErrorCode.INVALID_ARGUMENT)
  throws(t, () => sm.addState('\ud800'), ErrorCode.INVALID_ARGUMENT)
  throws(t, () => sm.addState(42 as unknown as string), ErrorCode.INVALID_ARGUMENT)
  throws(t, () => sm.addTransition('INIT', 'PAUSED', { guard: 1 as unknown as () => boolean }), ErrorCode.INVALID_ARGUMENT)
  throws(t, () => sm.state('NOPE'), ErrorCode.INVALID_STATE, 1)
})

test('states carry node-polycall endpoints and metadata with versions', (t) => {
  const sm = fresh(t)
  const s = sm.addState('Ready State', { metadata: { owner: 'ops' } })
  t.is(s.endpoint, '/ready-state')
  t.is(sm.addState('custom', { endpoint: '/x' }).endpoint, '/x')
  t.deepEqual([...s.metadata.keys()], ['createdAt', 'version', 'lastModified', 'owner'])
  t.is(s.version, 1)
  // Insertion order holds even for integer-like keys (a plain JS object would put '1' first).
  s.setMetadata('1', true)
  const before = Date.now()
  s.setMetadata('owner', { team: 'core' })
  s.setMetadata('note', [1, 'two'])
  t.is(s.version, 4)
  t.deepEqual(s.metadata.get('owner'), { team: 'core' })
  t.deepEqual([...s.metadata.keys()], ['createdAt', 'version', 'lastModified', 'owner', '1', 'note'])
  const d = s.diagnostics()
  t.true(d.lastModified >= before && d.lastModified >= d.createdAt)
  throws(t, () => s.setMetadata('version', 9), ErrorCode.INVALID_ARGUMENT)
  throws(t, () => s.setMetadata('lockedAt', 9), ErrorCode.INVALID_ARGUMENT)
  throws(t, () => s.setMetadata('f', () => 1), ErrorCode.INVALID_ARGUMENT)
  t.is(s.version, 4)
})

test('sync and async guards decide; a refusal leaves the source state', async (t) => {
  const sm = demo(t)
  let allow = false
  sm.addTransition('INIT', 'PAUSED', { guard: () => allow })
  const err = await rejects(t, sm.transition('PAUSED'), ErrorCode.GUARD_REJECTED, 2)
  t.is(err.cause, undefined)
  t.is(sm.current, 'INIT')
  sm.addTransition('READY', 'PAUSED', { guard: async () => 0 })
  allow = true
  await sm.transition('PAUSED')
  t.is(sm.current, 'PAUSED')
  const sm2 = demo(t)
  sm2.addTransition('INIT', 'RUNNING', { guard: async () => 'yes' })
  t.is((await sm2.transition('RUNNING')).to, 'RUNNING')
  t.is(sm.diagnostics('INIT').failedTransitions, 1)
})

test('a guard that throws or rejects rejects with its error as cause', async (t) => {
  const sm = demo(t)
  const boom = new Error('boom')
  sm.addTransition('INIT', 'PAUSED', {
    guard: () => {
      throw boom
    },
  })
  sm.addTransition('INIT', 'RUNNING', { guard: () => Promise.reject(boom) })
  for (const to of ['PAUSED', 'RUNNING']) {
    const err = await rejects(t, sm.transition(to), ErrorCode.GUARD_REJECTED, 2)
    t.is(err.cause, boom)
    t.is(sm.current, 'INIT')
  }
  t.is(sm.diagnostics('INIT').failedTransitions, 2)
  t.deepEqual(sm.history(), [])
})

test('guard, handlers and hooks run in order around the switch', async (t) => {
  const sm = fresh(t)
  const log: string[] = []
  const seen = (what: string) => () => void log.push(`${what}@${sm.current}`)
  sm.addState('A', { onExit: seen('exit A'), onEnter: seen('enter A') })
  sm.addState('B', { onEnter: seen('enter B'), onExit: seen('exit B') })
  sm.addTransition('A', 'B', {
    guard: (ctx) => {
      log.push(`guard ${ctx.from}->${ctx.to}@${sm.current}`)
      return true
    },
    before: seen('before'),
    after: seen('after'),
  })
  sm.on('transition', (r) => log.push(`event ${r.from}->${r.to}`))
  await sm.transition('B')
  t.deepEqual(log, ['guard A->B@A', 'exit A@A', 'before@A', 'event A->B', 'enter B@B', 'after@B'])
})

test('a failing before hook leaves the source state; a failing after hook keeps the target', async (t) => {
  const sm = demo(t)
  const oops = new Error('oops')
  sm.addTransition('INIT', 'PAUSED', {
    before: () => {
      throw oops
    },
  })
  const e1 = await rejects(t, sm.transition('PAUSED'), ErrorCode.HOOK_FAILED)
  t.is(e1.cause, oops)
  t.is(sm.current, 'INIT')
  t.is(sm.diagnostics('INIT').failedTransitions, 1)

  sm.addTransition('INIT', 'RUNNING', { after: () => Promise.reject(oops) })
  const e2 = await rejects(t, sm.transition('RUNNING'), ErrorCode.HOOK_FAILED)
  t.is(e2.cause, oops)
  t.is(sm.current, 'RUNNING')
  t.deepEqual(
    sm.history().map((h) => h.to),
    ['RUNNING'],
  )
})

test('the core re-checks locks after an async guard', async (t) => {
  const sm = demo(t)
  const gate = deferred<boolean>()
  sm.addTransition('INIT', 'PAUSED', { guard: () => gate.promise })
  const p = sm.transition('PAUSED')
  await Promise.resolve()
  sm.lock('PAUSED')
  gate.resolve(true)
  await rejects(t, p, ErrorCode.STATE_LOCKED, 8)
  t.is(sm.current, 'INIT')
})

test('concurrent transitions are serialised in call order', async (t) => {
  const sm = demo(t)
  const gate = deferred<boolean>()
  sm.addTransition('INIT', 'PAUSED', { guard: () => gate.promise })
  sm.addTransition('PAUSED', 'READY')
  const first = sm.transition('PAUSED')
  // Without the queue this would be checked against INIT and fail.
  const second = sm.transition('READY')
  const third = sm.transition('RUNNING')
  gate.resolve(true)
  t.is((await first).to, 'PAUSED')
  t.is((await second).from, 'PAUSED')
  t.is((await third).from, 'READY')
  t.deepEqual(
    sm.history().map((h) => h.to),
    ['PAUSED', 'READY', 'RUNNING'],
  )
})

test('a queued call can be aborted or time out; the queue moves on', async (t) => {
  keepAlive(t)
  const sm = demo(t)
  const gate = deferred<boolean>()
  sm.addTransition('INIT', 'PAUSED', { guard: () => gate.promise })
  sm.addTransition('PAUSED', 'READY')
  const first = sm.transition('PAUSED')
  const ac = new AbortController()
  const aborted = sm.transition('READY', { signal: ac.signal })
  const timedOut = sm.transition('READY', { timeout: 5 })
  const last = sm.transition('READY')
  const reason = new Error('changed my mind')
  ac.abort(reason)
  const e = await rejects(t, aborted, ErrorCode.ABORTED)
  t.is(e.cause, reason)
  await rejects(t, timedOut, ErrorCode.TIMEOUT)
  gate.resolve(true)
  await first
  t.is((await last).to, 'READY')
  t.deepEqual(
    sm.history().map((h) => h.to),
    ['PAUSED', 'READY'],
  )
})

test('aborting during a guard abandons the transition and releases the queue', async (t) => {
  keepAlive(t)
  const sm = demo(t)
  let guardSignal: AbortSignal | undefined
  sm.addTransition('INIT', 'PAUSED', {
    guard: (ctx) => {
      guardSignal = ctx.signal
      return new Promise<boolean>(() => {}) // never settles
    },
  })
  const ac = new AbortController()
  const p = sm.transition('PAUSED', { signal: ac.signal })
  const next = sm.transition('READY')
  await Promise.resolve()
  ac.abort()
  await rejects(t, p, ErrorCode.ABORTED)
  t.true(guardSignal!.aborted)
  t.is((await next).from, 'INIT')
  t.is(sm.diagnostics('INIT').failedTransitions, 1)
  const timed = fresh(t)
  timed.addState('A')
  timed.addState('B')
  timed.addTransition('A', 'B', { guard: () => new Promise(() => {}) })
  await rejects(t, timed.transition('B', { timeout: 5 }), ErrorCode.TIMEOUT)
  t.is(timed.current, 'A')
})

test('an already aborted signal rejects before any work', async (t) => {
  const sm = demo(t)
  const reason = new Error('stop')
  const e = await rejects(t, sm.transition('READY', { signal: AbortSignal.abort(reason) }), ErrorCode.ABORTED)
  t.is(e.cause, reason)
  t.is(sm.current, 'INIT')
  await rejects(t, sm.transition('READY', { timeout: -1 }), ErrorCode.INVALID_ARGUMENT)
})

test('events: transition, locked, unlocked, error', async (t) => {
  const sm = demo(t)
  // Without an error listener a failure only rejects.
  await rejects(t, sm.transition('NOPE'), ErrorCode.INVALID_TRANSITION, 2)
  const events: string[] = []
  sm.on('transition', (r) => events.push(`transition ${r.from}->${r.to}`))
  sm.on('locked', (e) => events.push(`locked ${e.state}`))
  sm.on('unlocked', (e) => events.push(`unlocked ${e.state}`))
  sm.on('error', (e) => events.push(`error ${e.code}`))
  await sm.transition('READY')
  sm.lock('RUNNING')
  await t.throwsAsync(sm.transition('RUNNING'))
  sm.unlock('RUNNING')
  t.deepEqual(events, ['transition INIT->READY', 'locked RUNNING', `error ${ErrorCode.STATE_LOCKED}`, 'unlocked RUNNING'])
})

test('async iteration yields transitions; break cleans up', async (t) => {
  const sm = demo(t)
  const got: string[] = []
  const consumer = (async () => {
    for await (const r of sm) {
      got.push(`${r.from}->${r.to}`)
      if (got.length === 3) break
    }
  })()
  await sm.transition('READY')
  await sm.transition('RUNNING')
  await sm.transition('PAUSED')
  await consumer
  await sm.transition('RUNNING')
  t.deepEqual(got, ['INIT->READY', 'READY->RUNNING', 'RUNNING->PAUSED'])
  const it = sm.watch()
  await sm.transition('PAUSED')
  t.deepEqual((await it.next()).value?.to, 'PAUSED')
  t.deepEqual(await it.return!(), { value: undefined, done: true })
  await sm.transition('RUNNING')
  t.deepEqual(await it.next(), { value: undefined, done: true })
})

test('iteration: abort, idle timeout, overflow and free end it', async (t) => {
  keepAlive(t)
  const sm = demo(t)
  const ac = new AbortController()
  const aborted = sm.watch({ signal: ac.signal })
  const pending = aborted.next()
  ac.abort('bye')
  const e = (await t.throwsAsync(pending)) as PolyCallError
  t.is(e.code, ErrorCode.ABORTED)
  t.is(e.cause, 'bye')
  t.deepEqual(await aborted.next(), { value: undefined, done: true })

  const idle = sm.watch({ timeout: 5 })
  t.is(((await t.throwsAsync(idle.next())) as PolyCallError).code, ErrorCode.TIMEOUT)

  const slow = sm.watch({ bufferSize: 2 })
  await sm.transition('READY')
  await sm.transition('RUNNING')
  await sm.transition('PAUSED')
  t.is((await slow.next()).value?.to, 'READY')
  t.is((await slow.next()).value?.to, 'RUNNING')
  t.is(((await t.throwsAsync(slow.next())) as PolyCallError).code, ErrorCode.ITERATOR_OVERFLOW)
  t.deepEqual(await slow.next(), { value: undefined, done: true })

  const open = sm.watch()
  const waiting = open.next()
  sm.free()
  t.deepEqual(await waiting, { value: undefined, done: true })
})

test('verify: stored checksum, an expected checksum and the integrity hook, all counted', (t) => {
  const sm = fresh(t)
  let healthy = true
  const a = sm.addState('A', { verify: (s) => s.name === 'A' && healthy })
  const sum = sm.verify('A')
  t.is(sum, a.checksum)
  t.is(a.verify({ checksum: sum }), sum)
  throws(t, () => sm.verify('A', { checksum: (sum + 1) >>> 0 }), ErrorCode.INTEGRITY_CHECK_FAILED, 7)
  healthy = false
  throws(t, () => sm.verify('A'), ErrorCode.INTEGRITY_CHECK_FAILED, 7)
  const d = sm.diagnostics('A')
  t.is(d.integrityChecks, 4)
  t.is(d.integrityFailures, 2)
  throws(t, () => sm.verify('NOPE'), ErrorCode.INVALID_STATE, 1)
})

test('diagnostics count transitions and failures per state', async (t) => {
  const sm = demo(t)
  await sm.transition('READY')
  await sm.transition('RUNNING')
  await sm.transition('PAUSED')
  await sm.transition('RUNNING')
  await t.throwsAsync(sm.transition('INIT'))
  const r = sm.diagnostics('RUNNING')
  t.is(r.transitionsIn, 2)
  t.is(r.transitionsOut, 1)
  t.is(r.failedTransitions, 1)
  t.is(r.version, 1)
  t.false(r.final)
  t.is(r.cChecksum, 0x9da3954e) // the C vector for RUNNING, id 2
  t.is(sm.diagnostics('ERROR').cChecksum, 0x9c52524f)
  t.is(sm.diagnostics('INIT').transitionsOut, 1)
})

test('a freed machine refuses every call with ERR_POLYCALL_CLOSED', async (t) => {
  const sm = demo(t)
  const gate = deferred<boolean>()
  sm.addTransition('INIT', 'PAUSED', { guard: () => gate.promise })
  const running = sm.transition('PAUSED')
  const queued = sm.transition('READY')
  sm.free()
  sm.free()
  await rejects(t, queued, ErrorCode.CLOSED)
  gate.resolve(true)
  await rejects(t, running, ErrorCode.CLOSED)
  await rejects(t, sm.transition('READY'), ErrorCode.CLOSED)
  throws(t, () => sm.addState('X'), ErrorCode.CLOSED)
  throws(t, () => sm.snapshot(), ErrorCode.CLOSED)
  await rejects(t, sm.restore({} as never), ErrorCode.CLOSED)
  {
    using scoped = new StateMachine()
    scoped.addState('A')
  }
  t.pass()
})

test("'transition' listeners are called however they were added, after transitions nobody heard", async (t) => {
  const sm = new StateMachine()
  sm.addState('A')
  sm.addState('B')
  sm.addTransition('A', 'B')
  sm.addTransition('B', 'A')
  let to: 'A' | 'B' = 'A'
  const flip = () => sm.transition((to = to === 'A' ? 'B' : 'A'))
  const heard: string[] = []
  const ways: [string, (listener: (r: TransitionRecord) => void) => Promise<void> | void][] = [
    ['on', (l) => void sm.on('transition', l)],
    ['addListener', (l) => void sm.addListener('transition', l)],
    ['prependListener', (l) => void sm.prependListener('transition', l)],
    ['once', (l) => void sm.once('transition', l)],
    ['prependOnceListener', (l) => void sm.prependOnceListener('transition', l)],
    ['events.once', (l) => void (once(sm, 'transition') as Promise<[TransitionRecord]>).then(([r]) => l(r))],
    [
      'events.on',
      (l) =>
        void (async () => {
          for await (const [r] of on(sm, 'transition') as AsyncIterable<[TransitionRecord]>) {
            l(r)
            break
          }
        })(),
    ],
  ]
  for (const [way, add] of ways) {
    sm.removeAllListeners()
    // Nobody listens: this transition finds no listener (and stops looking for one).
    await flip()
    add((r) => heard.push(`${way} ${r.to}`))
    await flip()
    await new Promise((r) => setImmediate(r))
    t.deepEqual(heard.splice(0), [`${way} ${to}`], way)
  }
  // Removed listeners hear nothing, and one added again is heard.
  const listener = (r: TransitionRecord) => heard.push(`again ${r.to}`)
  sm.removeAllListeners()
  sm.on('transition', listener)
  sm.off('transition', listener)
  await flip()
  sm.on('transition', listener)
  sm.removeAllListeners('transition')
  await flip()
  t.deepEqual(heard, [])
  sm.on('transition', listener)
  await flip()
  t.deepEqual(heard, [`again ${to}`])
})
