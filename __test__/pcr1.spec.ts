// PCR1 in both directions, against a peer written from docs/protocol.md (PCR1)'s byte layouts.
import test from 'ava'
import { once } from 'node:events'
import { ErrorCode, PolyCallClient, PolyCallServer, type PolyCallError } from '../ts/index.js'
import { createPcr1DemoServer } from '../ts/demo/pcr1-service.js'
import { CONTROL, CONTROL_REPLY, Pcr1Peer, REQUEST, RESPONSE, pcr1Frame, pcr1Server } from './helpers/pcr1.js'

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex')

async function demo(t: import('ava').ExecutionContext, options: ConstructorParameters<typeof PolyCallServer>[0] = {}) {
  const server = createPcr1DemoServer(options)
  const { port } = await server.listen(0, '127.0.0.1')
  t.teardown(() => server.destroy())
  return { server, port }
}

// ---- our server, the spec's client ---------------------------------------------------------

test('server: the §5 exchanges, byte for byte', async (t) => {
  const { port } = await demo(t)
  const peer = await Pcr1Peer.connect(t, port)
  peer.write(
    Buffer.concat([
      hex('50 43 52 31 01 00 00 00 00 00 00 07 00 00 00 5b'),
      Buffer.from('{"service":"inventory","operation":"get","deadline_ms":2000,"input":{"item_id":"widget-a"}}'),
    ]),
  )
  const reply = (await peer.next())!
  t.deepEqual(
    reply.raw,
    Buffer.concat([
      hex('50 43 52 31 02 00 00 00 00 00 00 07 00 00 00 49'),
      Buffer.from('{"ok":true,"output":{"item_id":"widget-a","quantity":42,"in_stock":true}}'),
    ]),
  )
  peer.write(Buffer.concat([hex('50 43 52 31 03 00 00 00 00 00 00 15 00 00 00 11'), Buffer.from('{"action":"ping"}')]))
  t.deepEqual(
    (await peer.next())!.raw,
    Buffer.concat([hex('50 43 52 31 04 00 00 00 00 00 00 15 00 00 00 28'), Buffer.from('{"ok":true,"data":{"pong":true,"abi":1}}')]),
  )
})

test('server: every request-level error code, and the connection stays open', async (t) => {
  const { port } = await demo(t, { controlToken: 'tok' })
  const peer = await Pcr1Peer.connect(t, port)
  const cases: [number, unknown, string][] = [
    [REQUEST, '[1,2]', 'request.malformed'],
    [REQUEST, { service: 'inventory', operation: 'get', deadline_ms: -1, input: {} }, 'request.malformed'],
    [REQUEST, { service: 'inventory', operation: 'get', deadline_ms: 700000, input: {} }, 'request.malformed'],
    [REQUEST, { service: 'nope', operation: 'x', deadline_ms: 1000, input: {} }, 'operation.unknown'],
    [REQUEST, { service: 'inventory', operation: 'get', deadline_ms: 1000, input: { item_id: 5 } }, 'input.invalid'],
    [REQUEST, { service: 'inventory', operation: 'get', deadline_ms: 1000, input: { item_id: 'zzz' } }, 'item.unknown'],
    [REQUEST, { service: 'debug', operation: 'sleep', deadline_ms: 10, input: { ms: 500 } }, 'deadline.exceeded'],
    [CONTROL, { action: 'explode' }, 'control.unknown'],
    [CONTROL, { action: 'shutdown', auth_token: 'wrong' }, 'auth.denied'],
    [RESPONSE, { ok: true, output: 1 }, 'frame.type'],
    [CONTROL_REPLY, { ok: true, data: {} }, 'frame.type'],
  ]
  let corr = 100
  for (const [type, body, code] of cases) {
    peer.write(pcr1Frame(type, ++corr, body))
    const f = (await peer.next())!
    t.is(f.corr, corr, code)
    t.is(f.type, type === REQUEST ? RESPONSE : CONTROL_REPLY, code)
    t.is((f.body as { ok: boolean }).ok, false, code)
    t.is((f.body as { error: { code: string } }).error.code, code)
  }
  peer.write(pcr1Frame(REQUEST, 999, { service: 'debug', operation: 'echo', deadline_ms: 1000, input: 'still here' }))
  t.deepEqual((await peer.next())!.body, { ok: true, output: { echo: 'still here' } })
})

test('server: a handler past its deadline_ms is aborted and answered deadline.exceeded', async (t) => {
  let reason: unknown
  const server = new PolyCallServer({ protocol: 'pcr1' })
  server.route('slow.op', (ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject((reason = ctx.signal.reason)))))
  const { port } = await server.listen(0)
  t.teardown(() => server.destroy())
  const peer = await Pcr1Peer.connect(t, port)
  peer.write(pcr1Frame(REQUEST, 3, { service: 'slow', operation: 'op', deadline_ms: 50, input: null }))
  const f = (await peer.next())!
  t.is((f.body as { error: { code: string } }).error.code, 'deadline.exceeded')
  t.is((reason as PolyCallError).code, ErrorCode.DEADLINE_EXCEEDED)
})

test('server: pipelined requests are answered in request order, as the C runtime does', async (t) => {
  const { port } = await demo(t)
  const peer = await Pcr1Peer.connect(t, port)
  const req = (corr: number, operation: string, input: unknown) => pcr1Frame(REQUEST, corr, { service: 'debug', operation, deadline_ms: 5000, input })
  peer.write(Buffer.concat([req(1, 'sleep', { ms: 80 }), req(2, 'echo', 'b'), req(3, 'sleep', { ms: 10 }), req(4, 'echo', 'd')]))
  const got = [await peer.next(), await peer.next(), await peer.next(), await peer.next()]
  t.deepEqual(
    got.map((f) => f!.corr),
    [1, 2, 3, 4],
  )
  t.deepEqual(got[0]!.body, { ok: true, output: { slept_ms: 80 } })
  t.deepEqual(got[1]!.body, { ok: true, output: { echo: 'b' } })
})

test('server: bad magic, oversize length, non-zero reserved bits -> corr-0 frame.invalid, then close', async (t) => {
  const { port, server } = await demo(t)
  const bad = [
    pcr1Frame(REQUEST, 1, {}, { magic: 'PCR2' }),
    pcr1Frame(REQUEST, 1, {}, { length: 1_048_577 }).subarray(0, 16),
    pcr1Frame(REQUEST, 1, {}, { reserved: 1 }),
    pcr1Frame(REQUEST, 1, {}, { flags: 0x80 }),
    pcr1Frame(9, 1, {}),
  ]
  for (const bytes of bad) {
    const peer = await Pcr1Peer.connect(t, port)
    peer.write(bytes)
    const f = (await peer.next())!
    t.is(f.type, CONTROL_REPLY)
    t.is(f.corr, 0)
    t.is((f.body as { error: { code: string } }).error.code, 'frame.invalid')
    await peer.closed
  }
  const good = await Pcr1Peer.connect(t, port)
  good.write(pcr1Frame(CONTROL, 5, { action: 'ping' }))
  t.is((await good.next())!.corr, 5)
  t.is(server.stats().connections.current, 1)
})

test('server: a frame that stalls mid-way is dropped after the stall timeout', async (t) => {
  const { port } = await demo(t, { stallTimeout: 100 })
  const peer = await Pcr1Peer.connect(t, port)
  peer.write(pcr1Frame(REQUEST, 1, { service: 'debug', operation: 'echo', deadline_ms: 1000, input: 1 }).subarray(0, 20))
  const f = (await peer.next(3000))!
  t.is(f.corr, 0)
  t.is((f.body as { error: { code: string } }).error.code, 'frame.invalid')
  await peer.closed
})

test('server: at the connection limit a new connection gets corr-0 server.busy and is closed', async (t) => {
  const { port } = await demo(t, { maxConnections: 1 })
  const first = await Pcr1Peer.connect(t, port)
  first.write(pcr1Frame(CONTROL, 1, { action: 'ping' }))
  await first.next()
  const second = await Pcr1Peer.connect(t, port)
  const f = (await second.next())!
  t.is(f.corr, 0)
  t.is((f.body as { error: { code: string } }).error.code, 'server.busy')
  await second.closed
})

test('server: describe lists routes with summaries and idempotency; health; shutdown with the token', async (t) => {
  const { port, server } = await demo(t, { controlToken: 's3cret' })
  const client = new PolyCallClient({ protocol: 'pcr1', port, reconnect: false })
  t.teardown(() => client.destroy())
  const { operations } = (await client.control('describe')) as { operations: { service: string; operation: string; idempotent: boolean; summary: string }[] }
  t.deepEqual(
    operations.map((o) => `${o.service}.${o.operation}`),
    ['inventory.get', 'debug.echo', 'debug.sleep'],
  )
  t.true(operations.every((o) => o.idempotent && o.summary.length > 0))
  t.like(await client.control('health'), { status: 'ok', connections: 1 })
  const closed = once(server, 'close')
  t.deepEqual(await client.control('shutdown', { authToken: 's3cret' }), { shutting_down: true })
  await closed
  t.true(server.closed)
})

// ---- our client, a spec-built server --------------------------------------------------------

test('client: REQUEST carries service, operation, deadline_ms from the remaining time; output resolves', async (t) => {
  let seen: Record<string, unknown> | undefined
  const { port } = await pcr1Server(t, (f, socket) => {
    seen = f.body as Record<string, unknown>
    t.is(f.flags, 0)
    t.is(f.reserved, 0)
    socket.write(pcr1Frame(RESPONSE, f.corr, { ok: true, output: { item_id: 'widget-a', quantity: 42, in_stock: true } }))
  })
  const client = new PolyCallClient({ protocol: 'pcr1', port, reconnect: false })
  t.teardown(() => client.destroy())
  t.deepEqual(await client.request('inventory.get', { item_id: 'widget-a' }, { timeout: 1500 }), { item_id: 'widget-a', quantity: 42, in_stock: true })
  t.is(seen!['service'], 'inventory')
  t.is(seen!['operation'], 'get')
  t.deepEqual(seen!['input'], { item_id: 'widget-a' })
  t.true(Number.isInteger(seen!['deadline_ms']) && (seen!['deadline_ms'] as number) > 1000 && (seen!['deadline_ms'] as number) <= 1500)
})

test('client: ok:false rejects with the remote code; control actions; pipelined out-of-order replies by corr', async (t) => {
  const { port } = await pcr1Server(t, (f, socket) => {
    const body = f.body as { operation?: string; input?: { n: number }; action?: string; auth_token?: string }
    if (f.type === CONTROL) {
      const ok = body.action === 'ping' || body.auth_token === 'tok'
      socket.write(pcr1Frame(CONTROL_REPLY, f.corr, ok ? { ok: true, data: { action: body.action } } : { ok: false, error: { code: 'auth.denied', message: 'no' } }))
    } else if (body.operation === 'missing') {
      socket.write(pcr1Frame(RESPONSE, f.corr, { ok: false, error: { code: 'operation.unknown', message: 'unknown operation' } }))
    } else {
      // Answer later requests first.
      setTimeout(() => socket.write(pcr1Frame(RESPONSE, f.corr, { ok: true, output: body.input!.n })), 50 - body.input!.n * 10)
    }
  })
  const client = new PolyCallClient({ protocol: 'pcr1', port, reconnect: false })
  t.teardown(() => client.destroy())
  const err = (await t.throwsAsync(client.request('x.missing', {}))) as PolyCallError & { remote: boolean }
  t.is(err.code, 'operation.unknown')
  t.true(err.remote)
  t.deepEqual(await client.control('ping'), { action: 'ping' })
  t.deepEqual(await client.control('shutdown', { authToken: 'tok' }), { action: 'shutdown' })
  t.is(((await t.throwsAsync(client.control('shutdown', { authToken: 'bad' }))) as PolyCallError).code, 'auth.denied')
  t.deepEqual(await Promise.all([0, 1, 2, 3, 4].map((n) => client.request('x.op', { n }))), [0, 1, 2, 3, 4])
})

test('client: an unsolicited corr-0 CONTROL_REPLY fails every pending call with its code and closes', async (t) => {
  let calls = 0
  const { port } = await pcr1Server(t, (_f, socket) => {
    if (++calls === 3) socket.end(pcr1Frame(CONTROL_REPLY, 0, { ok: false, error: { code: 'server.busy', message: 'full' } }))
  })
  const client = new PolyCallClient({ protocol: 'pcr1', port, reconnect: false })
  t.teardown(() => client.destroy())
  const results = await Promise.allSettled([1, 2, 3].map(() => client.request('a.b', {}, { timeout: 5000 })))
  for (const r of results) t.is(((r as PromiseRejectedResult).reason as PolyCallError).code, 'server.busy')
  t.false(client.connected)
})

test('client: no automatic retry (one attempt), unless the call is idempotent', async (t) => {
  let attempts = 0
  const { port } = await pcr1Server(t, (f, socket) => {
    attempts++
    if (attempts === 1 || attempts === 2) socket.destroy()
    else socket.write(pcr1Frame(RESPONSE, f.corr, { ok: true, output: 'second try' }))
  })
  const client = new PolyCallClient({ protocol: 'pcr1', port, reconnect: { initialDelay: 10 } })
  t.teardown(() => client.destroy())
  const err = (await t.throwsAsync(client.request('a.b', {}))) as PolyCallError & { written: boolean }
  t.is(err.code, ErrorCode.CONNECTION_LOST)
  t.true(err.written)
  t.is(await client.request('a.b', {}, { idempotent: true, timeout: 5000 }), 'second try')
  t.is(attempts, 3)
})

test('client and server together: our client calls our PCR1 server', async (t) => {
  const { port } = await demo(t)
  const client = new PolyCallClient({ protocol: 'pcr1', port })
  t.teardown(() => client.destroy())
  t.deepEqual(await client.request('inventory.get', { item_id: 'gadget-c' }), { item_id: 'gadget-c', quantity: 0, in_stock: false })
  t.is(((await t.throwsAsync(client.request('debug.sleep', { ms: 60_000 }, { timeout: 5000 }))) as PolyCallError).code, 'deadline.exceeded')
  t.is(((await t.throwsAsync(client.request('noservice'))) as PolyCallError).code, ErrorCode.INVALID_ARGUMENT)
  await t.throwsAsync(client.authenticate({}), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => new PolyCallServer({ protocol: 'pcr1', requireAuth: true, authenticate: () => 1 }), { code: ErrorCode.INVALID_ARGUMENT })
})

// ---- frame encoding: the TypeScript path for small frames and the core agree ------------------

test('encodePcr1Frame: small frames written in TypeScript equal the spec layout and the core encoder', async (t) => {
  const { default: fc } = await import('fast-check')
  const { encodePcr1Frame, writePcr1Header } = await import('../ts/pcr1/frame.js')
  const { native } = await import('../ts/native.js')
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 4 }), fc.nat({ max: 0xffffffff }), fc.uint8Array({ maxLength: 3000 }), (type, corr, bytes) => {
      const payload = Buffer.from(bytes)
      const ours = encodePcr1Frame(type, corr, payload)
      t.deepEqual(ours, native.encodePcr1(type, corr, payload))
      t.deepEqual(ours, Buffer.concat([pcr1Frame(type, corr, '', { length: payload.length }), payload]))
      const arena = Buffer.alloc(payload.length + 20, 0xee)
      writePcr1Header(arena, 2, type, corr, payload.length)
      t.deepEqual(arena.subarray(2, 18), ours.subarray(0, 16))
    }),
    { numRuns: 1000 },
  )
  // Refusals still come from the core, with its codes.
  t.throws(() => encodePcr1Frame(5 as never, 1, Buffer.alloc(1)), { code: ErrorCode.PCR1_UNKNOWN_TYPE })
  t.throws(() => encodePcr1Frame(1, 1, Buffer.alloc(1_048_577)), { code: ErrorCode.PCR1_PAYLOAD_TOO_LARGE })
})
