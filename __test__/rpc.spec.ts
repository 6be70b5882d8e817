import test from 'ava'
import * as diagnostics from 'node:diagnostics_channel'
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { Duplex } from 'node:stream'
import { Packr } from 'msgpackr'
import {
  Capability,
  ErrorCode,
  MessageType,
  PolyCallClient,
  PolyCallError,
  PolyCallServer,
  buildHandshake,
  encodeFrame,
  parseHandshake,
  type ClientOptions,
  type PeerInfo,
  type RequestContext,
} from '../ts/index.js'
import { RawPeer, delay, newClient, startServer } from './helpers/net.js'

test('a request reaches its handler with params, query, data and returns the result', async (t) => {
  const { port } = await startServer(t, {}, (s) =>
    s.route('/users/:id', async (ctx) => ({ id: ctx.params.id, query: ctx.query, data: ctx.data, method: ctx.method, path: ctx.path })),
  )
  const client = newClient(t, port)
  await client.connect()
  t.true(client.connected)
  t.is(client.stats().capabilities, Capability.Msgpack | Capability.Cancel | Capability.Heartbeat | Capability.IdempotencyKeys | Capability.TraceContext)
  const out = await client.request('/users/42?full=1', { hello: [1, 2] })
  t.deepEqual(out, { id: '42', query: { full: '1' }, data: { hello: [1, 2] }, method: 'GET', path: '/users/42' })
})

test('method handlers, plain command names and NOT_FOUND', async (t) => {
  const { port } = await startServer(t, {}, (s) => {
    s.route('/orders', { GET: () => 'list', POST: (ctx) => ({ created: ctx.data }) })
    s.route('status', () => 'up')
  })
  const client = newClient(t, port)
  t.is(await client.request('/orders'), 'list')
  t.is(await client.request('GET /orders'), 'list')
  t.deepEqual(await client.request('POST /orders', { sku: 'a1' }), { created: { sku: 'a1' } })
  t.is(await client.request('status'), 'up')
  const err = await t.throwsAsync(client.request('DELETE /orders'))
  t.is((err as PolyCallError).code, ErrorCode.NOT_FOUND)
  t.is((await t.throwsAsync(client.request('/missing')) as PolyCallError).code, ErrorCode.NOT_FOUND)
})

test('middleware runs as an onion and can replace the result', async (t) => {
  const order: string[] = []
  const { port } = await startServer(t, {}, (s) => {
    s.use(async (ctx, next) => {
      order.push('a-in')
      await next()
      order.push('a-out')
      ctx.result = { wrapped: ctx.result, by: ctx.state['who'] }
    })
    s.use(async (ctx, next) => {
      order.push('b-in')
      ctx.state['who'] = 'b'
      await next()
      order.push('b-out')
    })
    s.route('/x', () => {
      order.push('handler')
      return 7
    })
  })
  const client = newClient(t, port)
  t.deepEqual(await client.request('/x'), { wrapped: 7, by: 'b' })
  t.deepEqual(order, ['a-in', 'b-in', 'handler', 'b-out', 'a-out'])
})

test('PolyCallErrors travel with their code; unexpected errors become INTERNAL without details', async (t) => {
  const reported: unknown[] = []
  const { port } = await startServer(t, { onError: (e) => reported.push(e) }, (s) => {
    s.route('/app', () => {
      throw new PolyCallError('ERR_APP_NOT_FOUND', 'no such user')
    })
    s.route('/bug', () => {
      throw new TypeError('secret detail at /srv/app.js:10')
    })
  })
  const client = newClient(t, port)
  const tracing = newClient(t, port, { callerStacks: true })
  async function lookUpUser(c: PolyCallClient) {
    return await c.request('/app')
  }
  const app = (await t.throwsAsync(lookUpUser(client))) as PolyCallError & { remote?: boolean }
  t.is(app.code, 'ERR_APP_NOT_FOUND')
  t.is(app.message, 'no such user')
  t.true(app.remote)
  const traced = (await t.throwsAsync(lookUpUser(tracing))) as PolyCallError
  t.is(traced.code, 'ERR_APP_NOT_FOUND')
  t.regex(traced.stack ?? '', /at async lookUpUser \(.*rpc\.spec\.ts/, 'with callerStacks the stack points at the caller')
  const bug = (await t.throwsAsync(client.request('/bug'))) as PolyCallError
  t.is(bug.code, ErrorCode.INTERNAL)
  t.false(bug.message.includes('secret'))
  t.is(reported.length, 1)
  t.true(reported[0] instanceof TypeError)
})

test('10,000 pipelined requests at 128 in flight: every response matches its request', async (t) => {
  const { port, server } = await startServer(t, { maxInFlight: 128 }, (s) =>
    s.route('/echo/:n', (ctx) => ({ n: Number(ctx.params.n), data: ctx.data })),
  )
  const client = newClient(t, port, { maxInFlight: 128 })
  await client.connect()
  let next = 0
  let mismatches = 0
  let peak = 0
  const worker = async () => {
    while (next < 10_000) {
      const n = next++
      const out = (await client.request(`/echo/${n}`, { n })) as { n: number; data: { n: number } }
      if (out.n !== n || out.data.n !== n) mismatches++
      peak = Math.max(peak, server.stats().requests.inFlight)
    }
  }
  await Promise.all(Array.from({ length: 128 }, worker))
  t.is(mismatches, 0)
  t.is(server.stats().requests.succeeded, 10_000)
  t.is(client.stats().requests.succeeded, 10_000)
  t.true(peak <= 128)
})

test('scalar requests and replies of busy ticks (written in place in the write arena) arrive intact', async (t) => {
  const { port, server } = await startServer(t, { maxInFlight: 256 }, (s) => {
    s.route('echo', (ctx) => ctx.data)
    s.route('echO', (ctx) => ctx.data)
    s.route('échø', (ctx) => ctx.data)
  })
  const client = newClient(t, port, { maxInFlight: 256 })
  await client.connect()
  const value = (n: number): unknown => {
    switch (n % 9) {
      case 0:
        return Buffer.from(`bytes ${n}`.repeat(1 + (n % 7)))
      case 1:
        return `text ${n} ✓`.repeat(1 + (n % 5))
      case 2:
        return n
      case 3:
        return -n - 0.5
      case 4:
        return n % 2 === 0
      case 5:
        return null
      case 6:
        return undefined
      case 7:
        return 2 ** 40 + n
      default:
        return new Uint8Array(1500).fill(n & 0xff)
    }
  }
  const names = ['echo', 'echO', 'échø', 'echo']
  let next = 0
  let mismatches = 0
  const worker = async () => {
    while (next < 4000) {
      const n = next++
      const sent = value(n)
      const got = await client.request(names[n % names.length]!, sent, { timeout: 10_000 })
      const same =
        sent instanceof Uint8Array ? got instanceof Uint8Array && Buffer.from(got).equals(sent) : Object.is(got, sent)
      if (!same) mismatches++
    }
  }
  await Promise.all(Array.from({ length: 128 }, worker))
  t.is(mismatches, 0)
  t.is(server.stats().requests.succeeded, 4000)
})

test('responses complete out of order when slow and fast handlers interleave', async (t) => {
  // Each handler waits on a gate the test opens, so the completion order is chosen, not timed.
  const gates = new Map<string, () => void>()
  let arrived = 0
  let allArrived!: () => void
  const everyoneIn = new Promise<void>((r) => (allArrived = r))
  const { port } = await startServer(t, {}, (s) =>
    s.route('/work/:id', async (ctx) => {
      await new Promise<void>((resolve) => {
        gates.set(ctx.params['id']!, resolve)
        if (++arrived === 6) allArrived()
      })
      return ctx.params['id']
    }),
  )
  const client = newClient(t, port)
  await client.connect()
  const ids = ['a', 'b', 'c', 'd', 'e', 'f']
  const finished: string[] = []
  const calls = ids.map((id) => client.request(`/work/${id}`).then((v) => (finished.push(v as string), v)))
  await everyoneIn
  const releaseOrder = ['e', 'b', 'f', 'a', 'd', 'c']
  for (const id of releaseOrder) {
    gates.get(id)!()
    await new Promise((r) => setImmediate(r))
  }
  t.deepEqual(await Promise.all(calls), ids, 'each call got its own answer')
  t.deepEqual(finished, releaseOrder, 'answers arrive in completion order, not request order')
})

test('cancellation reaches the handler: ctx.signal aborts with CANCELLED and no reply is sent', async (t) => {
  let aborted: unknown
  let started!: () => void
  const handlerStarted = new Promise<void>((r) => (started = r))
  const handlerAborted = new Promise<void>((resolve) => {
    void startServer(t, {}, (s) =>
      s.route('/slow', async (ctx: RequestContext) => {
        started()
        await new Promise<void>((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)))
      }).use(async (_ctx, next) => {
        try {
          await next()
        } catch (e) {
          aborted = e
          resolve()
          throw e
        }
      }),
    ).then(({ port }) => run(port))
  })
  let serverRef!: PolyCallServer
  async function run(port: number) {
    const client = newClient(t, port)
    const controller = new AbortController()
    const call = client.request('/slow', undefined, { signal: controller.signal, timeout: 10_000 })
    await handlerStarted
    controller.abort(new Error('user gave up'))
    const err = (await t.throwsAsync(call)) as PolyCallError
    t.is(err.code, ErrorCode.ABORTED)
    t.is((err.cause as Error).message, 'user gave up')
  }
  await handlerAborted
  t.is((aborted as PolyCallError).code, ErrorCode.CANCELLED)
  void serverRef
})

test('the caller\'s timeout travels as ctx.deadline', async (t) => {
  let deadline = 0
  const { port } = await startServer(t, {}, (s) => s.route('/d', (ctx) => ((deadline = ctx.deadline), 'ok')))
  const client = newClient(t, port)
  const before = Date.now()
  await client.request('/d', undefined, { timeout: 2000 })
  t.true(deadline > before + 1500 && deadline <= Date.now() + 2000, `deadline ${deadline - before} ms after the call`)
  await client.request('/d', undefined, { timeout: Infinity })
  t.is(deadline, Infinity)
})

test('a deadline that passes on the server aborts the handler and answers DEADLINE_EXCEEDED', async (t) => {
  let reason: unknown
  let aborted!: () => void
  const handlerAborted = new Promise<void>((r) => (aborted = r))
  const { port } = await startServer(t, {}, (s) =>
    s.route('/hang', async (ctx) => {
      await new Promise<void>((r) => ctx.signal.addEventListener('abort', () => r()))
      reason = ctx.signal.reason
      aborted()
      return 'too late'
    }),
  )
  // A peer that sends a 100 ms deadline and never cancels, so only the server's clock acts.
  const packr = new Packr({ useRecords: false })
  const peer = await RawPeer.connect(t, port)
  peer.send(MessageType.Handshake, 1, buildHandshake(Capability.Msgpack))
  await peer.next()
  peer.send(MessageType.Command, 2, packr.pack(['/hang', null, 100]))
  const reply = await peer.next()
  t.is(reply?.type, MessageType.Error)
  t.is(reply?.sequence, 2)
  t.is((packr.unpack(reply!.payload) as { code: string }).code, ErrorCode.DEADLINE_EXCEEDED)
  await handlerAborted
  t.is((reason as PolyCallError).code, ErrorCode.DEADLINE_EXCEEDED)
})

test('authentication: required, refused, accepted; the principal reaches handlers; credentials are never echoed', async (t) => {
  const seen: unknown[] = []
  const { port } = await startServer(
    t,
    {
      requireAuth: true,
      authenticate: (credentials) => {
        const { username, password } = credentials as { username: string; password: string }
        if (username === 'ada' && password === 'lovelace') return { user: 'ada', role: 'admin' }
        throw new Error(`bad password ${password}`)
      },
    },
    (s) => s.route('/me', (ctx) => ctx.principal),
  )
  const onError = (m: unknown) => seen.push(m)
  diagnostics.subscribe('polycall:server:error', onError)
  t.teardown(() => diagnostics.unsubscribe('polycall:server:error', onError))
  // Refused before authenticating.
  const anon = newClient(t, port)
  const e1 = (await t.throwsAsync(anon.request('/me'))) as PolyCallError
  t.is(e1.code, ErrorCode.UNAUTHENTICATED)
  // Wrong credentials.
  const wrong = newClient(t, port)
  const e2 = (await t.throwsAsync(wrong.authenticate({ username: 'ada', password: 'hunter2' }))) as PolyCallError
  t.is(e2.code, ErrorCode.UNAUTHENTICATED)
  t.false(e2.message.includes('hunter2'))
  t.false(JSON.stringify(seen).includes('hunter2'))
  // Right credentials.
  const good = newClient(t, port)
  await good.authenticate({ username: 'ada', password: 'lovelace' })
  t.deepEqual(await good.request('/me'), { user: 'ada', role: 'admin' })
  // Credentials given up front authenticate on connect.
  const upfront = newClient(t, port, { credentials: { username: 'ada', password: 'lovelace' } })
  t.deepEqual(await upfront.request('/me'), { user: 'ada', role: 'admin' })
})

test('requireAuth: a COMMAND before READY is refused with an ERROR echoing its sequence', async (t) => {
  const { port } = await startServer(t, { requireAuth: true, authenticate: () => ({}) }, (s) => s.route('/x', () => 1))
  const peer = await RawPeer.connect(t, port)
  peer.send(MessageType.Handshake, 1, buildHandshake(Capability.Msgpack))
  const hello = await peer.next()
  t.is(hello?.type, MessageType.Response)
  t.is(hello?.sequence, 1)
  peer.send(MessageType.Command, 77, Buffer.from('{"command":"/x","data":null}'))
  const refused = await peer.next()
  t.is(refused?.type, MessageType.Error)
  t.is(refused?.sequence, 77)
})

test('limits: at maxInFlight the server stops reading; requests beyond it wait, then are served in turn', async (t) => {
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  let running = 0
  let most = 0
  const { port, server } = await startServer(t, { maxInFlight: 2 }, (s) => {
    s.route('/wait', async () => {
      most = Math.max(most, ++running)
      await gate
      running--
      return 'done'
    })
    s.route('/ok', () => 'ok')
  })
  const peer = await RawPeer.connect(t, port)
  peer.send(MessageType.Handshake, 1, buildHandshake(0))
  await peer.next()
  const cmd = (c: string) => Buffer.from(JSON.stringify({ command: c, data: null }))
  // Five commands in one write: two fill the limit, the other three wait in the server.
  peer.socket.write(Buffer.concat([2, 3, 4, 5, 6].map((sequence) => encodeFrame({ type: MessageType.Command, sequence, payload: cmd('/wait') }))))
  for (let i = 0; i < 100 && server.stats().requests.inFlight < 2; i++) await delay(10)
  t.is(server.stats().requests.inFlight, 2)
  t.is(server.stats().requests.total, 2)
  release()
  const answered = []
  for (let i = 0; i < 5; i++) answered.push((await peer.next())!)
  t.deepEqual(answered.map((f) => f.sequence).sort(), [2, 3, 4, 5, 6])
  t.true(answered.every((f) => f.type === MessageType.Response))
  t.is(most, 2)
  peer.send(MessageType.Command, 7, cmd('/ok'))
  const ok = await peer.next()
  t.is(ok?.sequence, 7)
  t.is(ok?.payload.toString(), '"ok"')
})

test('limits: maxConnections refuses the extra connection with BUSY, the others keep working', async (t) => {
  const { port, server } = await startServer(t, { maxConnections: 1 }, (s) => s.route('/ok', () => 'ok'))
  const first = newClient(t, port)
  t.is(await first.request('/ok'), 'ok')
  const second = newClient(t, port)
  const err = (await t.throwsAsync(second.connect())) as PolyCallError
  t.is(err.code, ErrorCode.BUSY)
  t.is(await first.request('/ok'), 'ok')
  t.is(server.stats().connections.rejected, 1)
})

test('graceful close finishes requests in flight, refuses new ones, and is idempotent', async (t) => {
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  let entered!: () => void
  const inHandler = new Promise<void>((r) => (entered = r))
  const server = new PolyCallServer()
  server.route('/slow', async () => {
    entered()
    await gate
    return 'finished'
  })
  const { port } = await server.listen(0)
  t.teardown(() => server.destroy())
  const client = newClient(t, port)
  const slow = client.request('/slow')
  await inHandler
  const closing = server.close()
  t.is(server.close(), closing)
  t.true(server.closed)
  const late = new PolyCallClient({ port, reconnect: false })
  t.teardown(() => late.destroy())
  await t.throwsAsync(late.connect({ timeout: 2000 }))
  release()
  t.is(await slow, 'finished')
  await closing
  t.is(server.stats().connections.current, 0)
})

test('destroy aborts handlers at once and rejects pending calls', async (t) => {
  let signalReason: unknown
  let entered!: () => void
  const inHandler = new Promise<void>((r) => (entered = r))
  const { server, port } = await startServer(t, {}, (s) =>
    s.route('/hang', (ctx) => {
      entered()
      return new Promise((_, reject) =>
        ctx.signal.addEventListener('abort', () => {
          signalReason = ctx.signal.reason
          reject(ctx.signal.reason)
        }),
      )
    }),
  )
  const client = newClient(t, port)
  const call = client.request('/hang', undefined, { timeout: 10_000 })
  await inHandler
  server.destroy()
  server.destroy()
  const err = (await t.throwsAsync(call)) as PolyCallError & { written?: boolean }
  t.is(err.code, ErrorCode.CONNECTION_LOST)
  t.true(err.written)
  t.is((signalReason as PolyCallError).code, ErrorCode.UNAVAILABLE)
  t.true(server.destroyed)
})

test('client close is graceful and idempotent; later calls are CLOSED; await using works', async (t) => {
  const { port } = await startServer(t, {}, (s) => s.route('/later', async () => (await delay(50), 'done')))
  const client = new PolyCallClient({ port })
  const pending = client.request('/later')
  const closing = client.close()
  t.is(client.close(), closing)
  t.is(await pending, 'done')
  await closing
  t.is(((await t.throwsAsync(client.request('/later'))) as PolyCallError).code, ErrorCode.CLOSED)
  let scoped: PolyCallClient | undefined
  {
    await using c = new PolyCallClient({ port })
    scoped = c
    t.is(await c.request('/later'), 'done')
  }
  t.true(scoped.closed)
})

test('per-call timeout and AbortSignal reject with TIMEOUT / ABORTED and bad options are refused', async (t) => {
  const { port } = await startServer(t, {}, (s) => s.route('/hang', () => new Promise(() => {})))
  const client = newClient(t, port)
  t.is(((await t.throwsAsync(client.request('/hang', undefined, { timeout: 50 }))) as PolyCallError).code, ErrorCode.TIMEOUT)
  t.is(
    ((await t.throwsAsync(client.request('/hang', undefined, { signal: AbortSignal.abort('stop') }))) as PolyCallError).code,
    ErrorCode.ABORTED,
  )
  t.is(((await t.throwsAsync(client.request('', undefined))) as PolyCallError).code, ErrorCode.INVALID_ARGUMENT)
  t.is(((await t.throwsAsync(client.request('/x', undefined, { timeout: -1 }))) as PolyCallError).code, ErrorCode.INVALID_ARGUMENT)
  t.is(client.stats().requests.timedOut, 1)
  t.is(client.stats().requests.aborted, 0, 'an already-aborted signal rejects before the call starts')
  t.throws(() => new PolyCallClient({ port: -1 }), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => new PolyCallServer({ maxInFlight: 0 }), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => new PolyCallServer({ requireAuth: true }), { code: ErrorCode.INVALID_ARGUMENT })
})

test('connect failures: refused port fails the first call at once, then reconnect with backoff once the server is up', async (t) => {
  const probe = new PolyCallServer()
  const { port } = await probe.listen(0)
  await probe.close()
  const noRetry = newClient(t, port)
  t.is(((await t.throwsAsync(noRetry.connect())) as PolyCallError).code, ErrorCode.CONNECT_FAILED)
  const attempts: number[] = []
  const client = new PolyCallClient({ port, reconnect: { initialDelay: 20, multiplier: 2, maxDelay: 100 } })
  t.teardown(() => client.destroy())
  client.on('reconnecting', ({ attempt }) => attempts.push(attempt))
  // The first attempt fails: the call waiting on it hears at once; the client retries in the background.
  t.is(((await t.throwsAsync(client.request('/ok', undefined, { timeout: 5000 }))) as PolyCallError).code, ErrorCode.CONNECT_FAILED)
  await delay(100)
  const connected = once(client, 'connect')
  const server = new PolyCallServer()
  server.route('/ok', () => 'late but fine')
  await server.listen(port)
  t.teardown(() => server.destroy())
  await connected
  t.is(await client.request('/ok', undefined, { timeout: 5000 }), 'late but fine')
  t.true(attempts.length >= 1)
  t.deepEqual(attempts, attempts.map((_, i) => i + 1))
})

test('idempotent calls are retried after a lost connection; others reject CONNECTION_LOST with written: true', async (t) => {
  let calls = 0
  let firstArrived!: () => void
  const arrived = new Promise<void>((r) => (firstArrived = r))
  const first = new PolyCallServer()
  first.route('/op', () => {
    calls++
    firstArrived()
    return new Promise(() => {})
  })
  const { port } = await first.listen(0)
  t.teardown(() => first.destroy())
  const client = new PolyCallClient({ port, reconnect: { initialDelay: 10, maxDelay: 50 } })
  t.teardown(() => client.destroy())
  const idem = client.request('/op', undefined, { idempotent: true, timeout: 10_000 })
  const plain = client.request('/op', undefined, { timeout: 10_000 })
  await arrived
  await delay(20)
  first.destroy()
  const err = (await t.throwsAsync(plain)) as PolyCallError & { written?: boolean }
  t.is(err.code, ErrorCode.CONNECTION_LOST)
  t.true(err.written)
  await first.close()
  const second = new PolyCallServer()
  second.route('/op', () => 'second server')
  await second.listen(port)
  t.teardown(() => second.destroy())
  t.is(await idem, 'second server')
  t.is(client.stats().requests.retried, 1)
  t.true(calls >= 1)
})

test('diagnostics channels publish connect, request start/end and errors; stats count them', async (t) => {
  const events: string[] = []
  const names = [
    'polycall:client:connect',
    'polycall:client:request:start',
    'polycall:client:request:end',
    'polycall:server:connect',
    'polycall:server:request:start',
    'polycall:server:request:end',
  ]
  const subs = names.map((n) => {
    const fn = () => events.push(n)
    diagnostics.subscribe(n, fn)
    return () => diagnostics.unsubscribe(n, fn)
  })
  t.teardown(() => subs.forEach((u) => u()))
  const { port, server } = await startServer(t, {}, (s) => s.route('/x', () => 1))
  const client = newClient(t, port)
  await client.request('/x')
  await client.request('/x')
  for (const n of names) t.true(events.includes(n), n)
  const s = server.stats()
  t.is(s.requests.succeeded, 2)
  t.is(s.connections.current, 1)
  t.true(s.latency.count === 2 && s.latency.p99 >= s.latency.p50 && s.latency.max >= s.latency.p99)
  t.true(s.bytesIn > 0 && s.bytesOut > 0)
  t.is(client.stats().latency.count, 2)
})

test('the handshake reply carries the negotiated capabilities and the server limit', async (t) => {
  const { port } = await startServer(t, { maxInFlight: 33 })
  const peer = await RawPeer.connect(t, port)
  peer.send(MessageType.Handshake, 9, buildHandshake(Capability.Msgpack | 0x8000))
  const reply = await peer.next()
  t.is(reply?.type, MessageType.Response)
  t.is(reply?.sequence, 9)
  t.deepEqual(parseHandshake(reply!.payload), { form: 'long', version: 1, flags: Capability.Msgpack, legacy: false, maxInFlight: 33 })
})

test('the peer is read on first use, and kept for disconnect listeners', async (t) => {
  // No connect/disconnect listeners: the handler's ctx.peer is read from the live socket.
  const { port } = await startServer(t, {}, (s) => {
    s.route('/who', (ctx) => ({ address: ctx.peer.remoteAddress, port: ctx.peer.remotePort, tls: ctx.peer.tls, legacy: ctx.peer.legacy }))
  })
  const client = newClient(t, port)
  const who = (await client.request('/who')) as { address: string; port: number; tls: boolean; legacy: boolean }
  t.is(who.address, '127.0.0.1')
  t.true(Number.isInteger(who.port) && who.port > 0)
  t.false(who.tls)
  t.false(who.legacy, 'a polycall client is not a legacy peer')

  // With a disconnect listener, the address survives the socket.
  const watched = await startServer(t)
  const gone = new Promise<PeerInfo>((resolve) => watched.server.once('disconnect', (peer) => resolve(peer)))
  const seen = new Promise<PeerInfo>((resolve) => watched.server.once('connect', (peer) => resolve(peer)))
  const other = newClient(t, watched.port)
  await other.connect()
  const atConnect = await seen
  await other.close()
  const atDisconnect = await gone
  t.is(atDisconnect, atConnect, 'the same peer object')
  t.is(atDisconnect.remoteAddress, '127.0.0.1')
  t.false(atDisconnect.legacy)
})

test('write arenas reused after complete writes never touch bytes a pending write still holds', async (t) => {
  // A peer asks for 6,000 echoes and does not read: the server's replies back up, and its socket
  // holds views of their write arenas. Meanwhile another pair of connections in this process
  // writes busy ticks, each taking a write arena, which may be one reused after a write that
  // completed at once, never one a pending write still holds. Every reply must be intact.
  const { server, port } = await startServer(t, {}, (s) => s.route('echo', (ctx) => ctx.data))
  const packr = new Packr({ useRecords: false })
  const peer = await RawPeer.connect(t, port)
  peer.send(MessageType.Handshake, 1, buildHandshake(Capability.Msgpack))
  await peer.next()
  peer.socket.pause()
  const payload = (tag: number, i: number, size = 192) => {
    const p = Buffer.alloc(size, i & 0xff)
    p.writeUInt32LE(tag, 0)
    p.writeUInt32LE(i, 4)
    return p
  }
  // Three 1 KB echoes per server tick (under the 4 KiB that would write mid-tick), so the write
  // that backs up is the one at the end of a tick; 6 MB in all, more than the socket buffers of a
  // peer that does not read take.
  const N = 6000
  for (let n = 0; n < N; n += 3) {
    const frames = [n, n + 1, n + 2].map((k) =>
      encodeFrame({ type: MessageType.Command, sequence: k + 2, payload: packr.pack(['echo', payload(1, k, 1000)]) }),
    )
    peer.socket.write(Buffer.concat(frames))
    await new Promise((r) => setImmediate(r))
  }
  const b = newClient(t, port)
  for (let round = 0; round < 100; round++) {
    const replies = await Promise.all(Array.from({ length: 32 }, (_, i) => b.request('echo', payload(2, round * 32 + i))))
    replies.forEach((r, i) => t.deepEqual(Buffer.from(r as Uint8Array), payload(2, round * 32 + i)))
  }
  // The replies to the peer really are held by the server (not all taken by the kernel).
  t.true(server.stats().bytesQueued > 0)
  peer.socket.resume()
  let intact = 0
  for (let n = 0; n < N; n++) {
    const f = await peer.next()
    if (f?.type === MessageType.Response && f.sequence === n + 2 && Buffer.from(packr.unpack(f.payload) as Uint8Array).equals(payload(1, n, 1000))) intact++
  }
  t.is(intact, N)
})

test('a transport that keeps written chunks by reference never sees a write arena reused under it', async (t) => {
  // Only a net.Socket's completed write has been copied into the kernel. This transport (a
  // stream over a real socket) reports each write done at once but forwards the chunk itself a
  // little later: the arena it was cut from must not serve the next tick.
  const { port } = await startServer(t, {}, (s) => s.route('echo', (ctx) => ctx.data))
  const dial = async () => {
    const real = connect({ host: '127.0.0.1', port })
    await once(real, 'connect')
    const wrapper: Duplex & { setNoDelay?: () => void; setKeepAlive?: () => void } = new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, done) {
        done()
        setImmediate(() => real.write(chunk))
      },
      destroy(err, done) {
        real.destroy()
        done(err)
      },
    })
    wrapper.setNoDelay = () => {}
    wrapper.setKeepAlive = () => {}
    real.on('data', (chunk: Buffer) => wrapper.push(chunk))
    real.on('close', () => wrapper.destroy())
    t.teardown(() => real.destroy())
    return wrapper as unknown as Socket
  }
  const client = newClient(t, 0, { dial } as Partial<ClientOptions>)
  await client.connect()
  const payload = (i: number) => Buffer.alloc(100, i & 0xff).fill(i >>> 8, 0, 1)
  const waves = await Promise.all(
    Array.from({ length: 10 }, async (_, w) => {
      for (let k = 0; k < w; k++) await new Promise((r) => setImmediate(r))
      return Promise.all(Array.from({ length: 30 }, (_, i) => client.request('echo', payload(w * 30 + i))))
    }),
  )
  const intact = waves.flat().filter((r, i) => Buffer.from(r as Uint8Array).equals(payload(i))).length
  t.is(intact, 300)
})

test('a tick of calls to an idle server leaves in two writes, the first at once; a busy server gets one', async (t) => {
  let release!: () => void
  const held = new Promise<void>((r) => (release = r))
  const { port } = await startServer(t, {}, (s) => {
    s.route('echo', (ctx) => ctx.data)
    s.route('hold', async () => {
      await held
      return 'released'
    })
  })
  // A real socket whose writes are recorded on their way to the kernel.
  const writes: number[] = []
  const dial = async () => {
    const socket = connect({ host: '127.0.0.1', port })
    await once(socket, 'connect')
    const write = socket.write.bind(socket) as (chunk: Buffer) => boolean
    socket.write = ((chunk: Buffer) => {
      writes.push(chunk.length)
      return write(chunk)
    }) as typeof socket.write
    t.teardown(() => socket.destroy())
    return socket
  }
  const client = newClient(t, 0, { dial } as Partial<ClientOptions>)
  await client.connect()
  const tick = () => Promise.all(Array.from({ length: 16 }, (_, i) => client.request('echo', `value ${i}`)))

  writes.length = 0
  const first = await tick()
  t.deepEqual(first, Array.from({ length: 16 }, (_, i) => `value ${i}`))
  // Nothing was outstanding: the first ~256 bytes left while the rest of the tick was encoded.
  t.is(writes.length, 2, `writes: ${writes.join(', ')}`)
  t.true(writes[0]! >= 256 && writes[0]! < 512, `first write ${writes[0]} bytes`)

  const holding = client.request('hold')
  await delay(20)
  writes.length = 0
  const second = await tick()
  t.deepEqual(second, first)
  // One call was unanswered when the tick began: the server is busy, so the tick is one write.
  t.is(writes.length, 1, `writes: ${writes.join(', ')}`)
  release()
  t.is(await holding, 'released')
})
