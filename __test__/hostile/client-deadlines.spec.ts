// One timeout, one code: a call whose own timeout passed rejects with ERR_POLYCALL_TIMEOUT
// whichever side noticed first; ERR_POLYCALL_DEADLINE_EXCEEDED is for deadlines the caller
// propagated (RequestOptions.deadline) or that the server chose itself.
//
// Which side notices first is arranged by construction, through the order of Node's event loop:
// a callback that blocks in the timers phase is followed by the I/O phase (the client reads the
// server's verdict before its own timer runs; see ServerFirst), while the client's timer, once
// due, runs before any later reply is even sent. The tests that block the loop run serially, so no other test's
// timers are due while they do.
import test, { type ExecutionContext } from 'ava'
import { Packr } from 'msgpackr'
import { once } from 'node:events'
import { createServer, type Socket } from 'node:net'
import {
  Capability,
  ErrorCode,
  FrameDecoder,
  MessageType,
  PolyCallClient,
  PolyCallError,
  PolyCallServer,
  buildHandshake,
  encodeFrame,
  type ClientOptions,
  type Frame,
} from '../../ts/index.js'
import { SocketPeer } from '../helpers/peer.js'
import { RESPONSE, pcr1Frame, pcr1Server } from '../helpers/pcr1.js'

const packr = new Packr({ useRecords: false })

class ServerPeer extends SocketPeer<Frame> {
  readonly #decoder = new FrameDecoder()
  constructor(socket: Socket) {
    super(socket, 'frame')
  }
  protected decode(chunk: Buffer): Frame[] {
    return this.#decoder.push(chunk).map((f) => ({ ...f, payload: Buffer.from(f.payload) }))
  }
  send(type: MessageType, sequence: number, payload?: Uint8Array): void {
    this.socket.write(encodeFrame({ type, sequence, payload }))
  }
}

interface Command {
  sequence: number
  command: string
  /** The deadline the COMMAND carried: ms the caller still allowed. */
  timeout: number | undefined
  /** performance.now() when it arrived. */
  at: number
}

/**
 * A polycall-speaking raw server (msgpack, cancel) that hands every COMMAND to `onCommand`;
 * cancellation notices are ignored.
 */
async function scripted(t: ExecutionContext, onCommand: (c: Command, peer: ServerPeer) => void): Promise<number> {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    const peer = new ServerPeer(socket)
    void (async () => {
      const hello = await peer.next()
      if (!hello) return
      peer.send(MessageType.Response, hello.sequence, buildHandshake(Capability.Msgpack | Capability.Cancel))
      for (;;) {
        const f = await peer.next(60_000).catch(() => undefined)
        if (!f) return
        if (f.type !== MessageType.Command) continue
        const [command, , timeout] = packr.unpack(f.payload) as [string, unknown, number | undefined]
        onCommand({ sequence: f.sequence, command, timeout, at: performance.now() }, peer)
      }
    })()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((r) => server.close(() => r()))
  })
  return (server.address() as { port: number }).port
}

function client(t: ExecutionContext, port: number, options: Partial<ClientOptions> = {}): PolyCallClient {
  const c = new PolyCallClient({ host: '127.0.0.1', port, reconnect: false, ...options })
  t.teardown(() => c.close({ timeout: 1000 }))
  return c
}

const verdict = (message = 'the deadline passed on the server') => packr.pack({ code: ErrorCode.DEADLINE_EXCEEDED, message })

/**
 * The server-first arrangement. When the request arrives, the peer writes the server's verdict
 * at once and arms a timer whose callback blocks this process (the client's too) until `margin`
 * ms past the call's bound. The block runs in the timers phase, so when it ends the client's
 * deadline has passed, the verdict (written one bound earlier) waits in the client's socket, and
 * the I/O phase that comes next reads it before the next timers phase can run the client's own
 * timer. That holds when, as the callback starts, the client has not read the verdict yet
 * (`pending`) and its timer is not yet due (its bound is at least `SLACK` ms away: `bound` is
 * taken just before the call): the callback records whether both held. Each attempt has a
 * number that the call carries to the peer, so what an earlier attempt left behind does nothing.
 */
class ServerFirst {
  attempt = 0
  /** performance.now() + the call's bound, taken just before the call is made. */
  bound = 0
  /** Whether this attempt's callback found the preconditions true. */
  held = false
  /** What the callback found, for the log. */
  found = 'the callback did not run'

  /** Whether the client still waits for the call (set by the test). */
  pending: () => boolean = () => true

  arm(attempt: number, write: () => void, margin = 30): void {
    if (attempt !== this.attempt) return
    setTimeout(() => {
      if (attempt !== this.attempt) return
      const pending = this.pending()
      const ahead = this.bound - performance.now()
      this.held = pending && ahead > SLACK
      this.found = `call ${pending ? 'pending' : 'settled'}, bound ${ahead.toFixed(0)} ms ahead`
      const until = this.bound + margin
      while (performance.now() < until) {
        // blocking on purpose: see above
      }
    }, 0)
    write()
    // The timer must be due when the timers phase comes (its shortest delay is 1 ms), or the
    // I/O phase would hand the client the verdict before its deadline.
    const due = performance.now() + 2
    while (performance.now() < due) {
      // see above
    }
  }
}

/** Room for a timer to fire early (its clock is read once per loop turn) or this test to lag. */
const SLACK = 25
const BOUND = 150

/**
 * Runs the server-first arrangement until its precondition held (a machine stalled for longer
 * than the call's bound can run the client's timer first), at most eight times, and returns
 * that attempt's rejection. `call` gets the attempt's number to send along.
 */
async function serverFirst(t: ExecutionContext, arrangement: ServerFirst, call: (attempt: number) => Promise<unknown>): Promise<PolyCallError> {
  for (let attempt = 1; attempt <= 8; attempt++) {
    // Start on a fresh turn of the loop, so the client's timer is armed from a fresh clock.
    await new Promise((r) => setImmediate(r))
    arrangement.attempt = attempt
    arrangement.held = false
    arrangement.found = 'the callback did not run'
    arrangement.bound = performance.now() + BOUND
    const err = await call(attempt).then(
      () => new PolyCallError('ERR_TEST', 'the call resolved'),
      (e: unknown) => e as PolyCallError,
    )
    if (arrangement.held) return err
    t.log(`attempt ${attempt}: the arrangement did not hold (${arrangement.found}); arranging again`)
  }
  t.fail('the server-first arrangement never held')
  return new PolyCallError('ERR_TEST', 'no attempt held')
}

/** The attempt number a v1 call carries as its command, `name/attempt`. */
const attemptOf = (c: Command) => Number(c.command.split('/')[1])

const rejection = async (t: ExecutionContext, p: Promise<unknown>) => (await t.throwsAsync(p)) as PolyCallError & { remote?: boolean }

test.serial('the server noticed first: its DEADLINE_EXCEEDED becomes the caller\'s TIMEOUT, the verdict rides along as cause', async (t) => {
  const arrangement = new ServerFirst()
  const port = await scripted(t, (c, peer) => arrangement.arm(attemptOf(c), () => peer.send(MessageType.Error, c.sequence, verdict())))
  const cl = client(t, port)
  await cl.connect()
  arrangement.pending = () => cl.stats().requests.inFlight > 0
  const err = await serverFirst(t, arrangement, (n) => cl.request(`slow/${n}`, undefined, { timeout: BOUND }))
  t.is(err.code, ErrorCode.TIMEOUT)
  const cause = err.cause as PolyCallError & { remote?: boolean }
  t.is(cause?.code, ErrorCode.DEADLINE_EXCEEDED, 'the verdict was read first')
  t.true(cause?.remote)
  t.true(cl.stats().requests.timedOut >= 1)
})

test('the client noticed first: TIMEOUT, and the verdict that follows is only an unsolicited frame', async (t) => {
  let timedOut!: Promise<PolyCallError>
  const port = await scripted(t, (c, peer) => {
    // The verdict leaves only once the caller has its TIMEOUT.
    void timedOut.then(() => peer.send(MessageType.Error, c.sequence, verdict()))
  })
  const cl = client(t, port)
  await cl.connect()
  const late = once(cl, 'unsolicited', { signal: AbortSignal.timeout(10_000) })
  timedOut = rejection(t, cl.request('slow', undefined, { timeout: 100 }))
  const err = await timedOut
  t.is(err.code, ErrorCode.TIMEOUT)
  t.is(err.cause, undefined)
  const [frame] = (await late) as [Frame]
  t.is(frame.type, MessageType.Error)
})

test('against a real server, twenty calls past their timeout all reject with TIMEOUT', async (t) => {
  const server = new PolyCallServer()
  server.route('hang', (ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))))
  const { port } = await server.listen(0, '127.0.0.1')
  t.teardown(() => server.close({ timeout: 1000 }))
  const cl = client(t, port)
  await cl.connect()
  const results = await Promise.allSettled(Array.from({ length: 20 }, () => cl.request('hang', undefined, { timeout: 60 })))
  const codes = results.map((r) => ((r as PromiseRejectedResult).reason as PolyCallError).code)
  t.deepEqual(codes, Array<string>(20).fill(ErrorCode.TIMEOUT))
  for (const r of results) {
    const cause = ((r as PromiseRejectedResult).reason as PolyCallError).cause as PolyCallError | undefined
    if (cause !== undefined) t.is(cause.code, ErrorCode.DEADLINE_EXCEEDED)
  }
})

test('a DEADLINE_EXCEEDED long before the caller\'s own timeout is the server\'s own verdict and stays as it is', async (t) => {
  const port = await scripted(t, (c, peer) => peer.send(MessageType.Error, c.sequence, verdict('my own, shorter deadline')))
  const err = await rejection(t, client(t, port).request('x', undefined, { timeout: 5000 }))
  t.is(err.code, ErrorCode.DEADLINE_EXCEEDED)
  t.true(err.remote)
})

test('a propagated deadline alone bounds the call: it travels as the COMMAND deadline and rejects with DEADLINE_EXCEEDED', async (t) => {
  const seen: Command[] = []
  let arrived!: () => void
  const first = new Promise<void>((r) => (arrived = r))
  const port = await scripted(t, (c) => {
    seen.push(c)
    arrived()
  })
  const cl = client(t, port)
  await cl.connect()
  const before = Date.now()
  const err = await rejection(t, cl.request('x', undefined, { deadline: before + 150, timeout: Infinity }))
  t.is(err.code, ErrorCode.DEADLINE_EXCEEDED)
  t.is(err.cause, undefined)
  t.true(Date.now() - before >= 140)
  // Written at once on the live connection, with the time left then.
  await first
  t.true(seen[0]!.timeout! >= 140 && seen[0]!.timeout! <= 151, `COMMAND deadline ${seen[0]!.timeout}`)
  // Without a timeout option the client's default (5 s) is later: the deadline still decides.
  t.is((await rejection(t, cl.request('x', undefined, { deadline: Date.now() + 50 }))).code, ErrorCode.DEADLINE_EXCEEDED)
  // The caller's own, shorter timeout decides when it comes first.
  t.is((await rejection(t, cl.request('x', undefined, { deadline: Date.now() + 5000, timeout: 50 }))).code, ErrorCode.TIMEOUT)
  t.is(cl.stats().requests.timedOut, 1)
})

test.serial('a propagated deadline: the server noticing first still gives DEADLINE_EXCEEDED, with its verdict as cause', async (t) => {
  const arrangement = new ServerFirst()
  const port = await scripted(t, (c, peer) => arrangement.arm(attemptOf(c), () => peer.send(MessageType.Error, c.sequence, verdict())))
  const cl = client(t, port)
  await cl.connect()
  arrangement.pending = () => cl.stats().requests.inFlight > 0
  // Date.now() has whole milliseconds: the deadline is at least BOUND ms away.
  const err = await serverFirst(t, arrangement, (n) => cl.request(`x/${n}`, undefined, { deadline: Date.now() + BOUND + 1, timeout: Infinity }))
  t.is(err.code, ErrorCode.DEADLINE_EXCEEDED)
  t.is((err.cause as PolyCallError | undefined)?.code, ErrorCode.DEADLINE_EXCEEDED)
})

test('a propagated deadline that already passed rejects at once and sends nothing; a bad one is refused', async (t) => {
  const seen: string[] = []
  const port = await scripted(t, (c, peer) => {
    seen.push(c.command)
    peer.send(MessageType.Response, c.sequence, packr.pack('ok'))
  })
  const cl = client(t, port)
  await cl.connect()
  t.is((await rejection(t, cl.request('late', undefined, { deadline: Date.now() - 1 }))).code, ErrorCode.DEADLINE_EXCEEDED)
  for (const deadline of [Number.NaN, '1' as unknown as number]) {
    t.is((await rejection(t, cl.request('bad', undefined, { deadline }))).code, ErrorCode.INVALID_ARGUMENT)
  }
  t.is(await cl.request('ok', undefined, { deadline: Infinity }), 'ok')
  t.deepEqual(seen, ['ok'])
})

test('a handler passes ctx.deadline (and ctx.signal) on: the downstream calls reject DEADLINE_EXCEEDED, the original callers TIMEOUT', async (t) => {
  const downstream = new PolyCallServer()
  downstream.route('hang', (ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))))
  const { port: downPort } = await downstream.listen(0, '127.0.0.1')
  t.teardown(() => downstream.close({ timeout: 1000 }))
  const down = client(t, downPort)
  const inner: { signal: boolean; error: Promise<PolyCallError> }[] = []
  const front = new PolyCallServer()
  front.route('front', (ctx) => {
    // The deadline alone, or with the signal (which the caller's cancellation, as it times out,
    // or the front's own deadline aborts): the bound is the same one either way.
    const signal = Number(ctx.data) === 1
    const call = down.request('hang', undefined, signal ? { deadline: ctx.deadline, signal: ctx.signal } : { deadline: ctx.deadline })
    inner.push({ signal, error: call.then(() => new PolyCallError('ERR_TEST', 'resolved'), (e: unknown) => e as PolyCallError) })
    return call
  })
  const { port } = await front.listen(0, '127.0.0.1')
  t.teardown(() => front.close({ timeout: 1000 }))
  const up = client(t, port)
  await Promise.all([up.connect(), down.connect()])
  const outer = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => up.request('front', i % 2, { timeout: 200 })))
  for (const r of outer) t.is(((r as PromiseRejectedResult).reason as PolyCallError).code, ErrorCode.TIMEOUT)
  // Every request reaches the front's handler, if need be after its caller gave up.
  const until = performance.now() + 10_000
  while (inner.length < 12 && performance.now() < until) await new Promise((r) => setTimeout(r, 10))
  t.is(inner.length, 12)
  for (const { signal, error } of inner) {
    const e = await error
    if (e.code === ErrorCode.DEADLINE_EXCEEDED) continue
    t.true(signal, 'with only the deadline there is only one bound')
    // With the signal, the caller's cancellation (sent as its own timeout passed) can reach the
    // front before the front's deadline, which starts when the request arrives: then the
    // downstream call was cancelled, not timed out, and says so.
    t.is(e.code, ErrorCode.ABORTED)
    t.is((e.cause as PolyCallError).code, ErrorCode.CANCELLED)
  }
})

test.serial('a signal aborted with a DEADLINE_EXCEEDED reason, or after the propagated deadline, ends the call with DEADLINE_EXCEEDED; otherwise ABORTED', async (t) => {
  const port = await scripted(t, () => {})
  const cl = client(t, port)
  await cl.connect()
  const reason = new PolyCallError(ErrorCode.DEADLINE_EXCEEDED, 'the parent request ran out of time')
  const before = await rejection(t, cl.request('x', undefined, { signal: AbortSignal.abort(reason) }))
  t.is(before.code, ErrorCode.DEADLINE_EXCEEDED)
  t.is(before.cause, reason)
  const controller = new AbortController()
  const during = cl.request('x', undefined, { signal: controller.signal })
  controller.abort(reason)
  t.is((await rejection(t, during)).code, ErrorCode.DEADLINE_EXCEEDED)
  // The signal fires once the propagated deadline has passed (the caller's cancellation as it
  // timed out): the deadline ended the call.
  const late = new AbortController()
  const lateCall = cl.request('x', undefined, { signal: late.signal, deadline: Date.now() + 30, timeout: Infinity })
  const spin = performance.now() + 40
  while (performance.now() < spin) {
    // past the deadline before the abort, without giving the client's timer a turn
  }
  late.abort(new PolyCallError(ErrorCode.CANCELLED, 'the caller went away'))
  const lateErr = await rejection(t, lateCall)
  t.is(lateErr.code, ErrorCode.DEADLINE_EXCEEDED)
  t.is((lateErr.cause as PolyCallError).code, ErrorCode.CANCELLED)
  const other = new AbortController()
  const plain = cl.request('x', undefined, { signal: other.signal })
  other.abort(new PolyCallError(ErrorCode.CANCELLED, 'the caller went away'))
  const err = await rejection(t, plain)
  t.is(err.code, ErrorCode.ABORTED)
  t.is((err.cause as PolyCallError).code, ErrorCode.CANCELLED)
  t.is(cl.stats().requests.aborted, 1)
})

test.serial('PCR1: deadline.exceeded after the caller\'s timeout is TIMEOUT; the runtime\'s early verdict stays deadline.exceeded', async (t) => {
  const arrangement = new ServerFirst()
  const { port } = await pcr1Server(t, (f, socket) => {
    const body = f.body as { deadline_ms: number; operation: string; input: { attempt?: number } }
    const payload = pcr1Frame(RESPONSE, f.corr, { ok: false, error: { code: 'deadline.exceeded', message: 'sleep exceeds the deadline' } })
    if (body.operation === 'early') socket.write(payload)
    else arrangement.arm(body.input.attempt ?? 0, () => socket.write(payload))
  })
  const cl = client(t, port, { protocol: 'pcr1' })
  await cl.connect()
  arrangement.pending = () => cl.stats().requests.inFlight > 0
  const late = await serverFirst(t, arrangement, (attempt) => cl.request('debug.sleep', { ms: 1000, attempt }, { timeout: BOUND }))
  t.is(late.code, ErrorCode.TIMEOUT)
  t.is((late.cause as PolyCallError | undefined)?.code, 'deadline.exceeded')
  const early = await rejection(t, cl.request('debug.early', { ms: 10_000 }, { timeout: 5000 }))
  t.is(early.code, 'deadline.exceeded')
  t.true(early.remote)
  const propagated = await serverFirst(t, arrangement, (attempt) =>
    cl.request('debug.sleep', { ms: 1000, attempt }, { deadline: Date.now() + BOUND + 1, timeout: Infinity }),
  )
  t.is(propagated.code, ErrorCode.DEADLINE_EXCEEDED)
  t.is((propagated.cause as PolyCallError | undefined)?.code, 'deadline.exceeded')
})
