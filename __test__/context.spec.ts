import test from 'ava'
import { Capability, ErrorCode, createContext, type PolyCallError } from '../ts/index.js'

test('a context applies its defaults to what it creates', async (t) => {
  const ctx = createContext({ timeout: 80, codec: 'json', limits: { maxInFlight: 3 } })
  t.teardown(() => ctx.close())
  const server = ctx.server()
  server.route('hang', () => new Promise(() => {}))
  server.route('ok', () => 'ok')
  const { port } = await server.listen(0)
  const client = ctx.client({ port, reconnect: false })
  // Connect first: the 80 ms request timeout is for the calls, not for a handshake on a busy machine.
  await client.connect()
  // An answered call gets a generous bound of its own: on a loaded machine 80 ms can pass before
  // the reply is read, and what this test checks is where the default comes from (below).
  t.is(await client.request('ok', undefined, { timeout: 10_000 }), 'ok')
  t.is(client.stats().capabilities & Capability.Msgpack, 0, 'JSON payloads, as the context asked')
  t.not(client.stats().capabilities, 0, 'the other extensions stay on')
  const timedOut = (await t.throwsAsync(client.request('hang'))) as PolyCallError
  t.is(timedOut.code, ErrorCode.TIMEOUT)
  t.regex(timedOut.message, /timed out after 80 ms/, "the context's timeout, not the client's default")
  const results = await Promise.allSettled([1, 2, 3, 4, 5].map(() => client.request('hang', undefined, { timeout: 300 })))
  t.true(results.every((r) => r.status === 'rejected'))
  t.true(server.stats().requests.inFlight <= 3, 'the server limit came from the context')
})

test('close() closes everything in reverse order, idempotently; a closed context refuses new work', async (t) => {
  const order: string[] = []
  const ctx = createContext()
  const server = ctx.server()
  server.route('ok', () => 'ok')
  server.on('close', () => order.push('server'))
  const { port } = await server.listen(0)
  const client = ctx.client({ port, reconnect: false })
  client.on('close', () => order.push('client'))
  await client.request('ok')
  const sm = ctx.stateMachine()
  sm.addState('A')
  ctx.track({ close: async () => void order.push('resource') })
  const closing = ctx.close()
  t.is(ctx.close(), closing)
  await closing
  t.deepEqual(order, ['resource', 'client', 'server'])
  t.true(client.closed && server.closed && ctx.closed)
  t.throws(() => sm.addState('B'), { code: ErrorCode.CLOSED })
  t.throws(() => ctx.client({ port }), { code: ErrorCode.CLOSED })
  t.throws(() => ctx.server(), { code: ErrorCode.CLOSED })
  t.throws(() => ctx.stateMachine(), { code: ErrorCode.CLOSED })
})

test('await using closes the context; things closed early are not closed twice; failures are aggregated', async (t) => {
  let closes = 0
  {
    await using ctx = createContext()
    const early = ctx.track({ close: () => void closes++ })
    ctx.track({ [Symbol.asyncDispose]: async () => void closes++ })
    const server = ctx.server()
    await server.listen(0)
    await server.close()
    void early
  }
  t.is(closes, 2)
  const ctx = createContext()
  ctx.track({
    close: () => {
      throw new Error('boom')
    },
  })
  ctx.track({ close: () => void closes++ })
  const err = (await t.throwsAsync(ctx.close())) as AggregateError
  t.true(err instanceof AggregateError)
  t.is(err.errors.length, 1)
  t.is(closes, 3, 'the other resource was still closed')
})

test('the logger hears connections, reconnections and server errors, never credentials', async (t) => {
  const lines: { level: string; message: string; fields: unknown }[] = []
  const at = (level: string) => (message: string, fields?: unknown) => void lines.push({ level, message, fields })
  const ctx = createContext({ logger: { info: at('info'), warn: at('warn'), error: at('error') } })
  t.teardown(() => ctx.close())
  const server = ctx.server({ authenticate: () => ({}) })
  server.route('bug', () => {
    throw new TypeError('handler bug')
  })
  const { port } = await server.listen(0)
  const client = ctx.client({ port, reconnect: false, credentials: { username: 'ada', password: 'secret-pw' } })
  await t.throwsAsync(client.request('bug'))
  await client.close()
  t.true(lines.some((l) => l.level === 'info' && l.message === 'polycall client connected'))
  t.true(lines.some((l) => l.level === 'error' && l.message === 'polycall server error'))
  t.true(lines.some((l) => l.level === 'warn' && l.message === 'polycall client disconnected'))
  t.false(JSON.stringify(lines, (_k, v) => (v instanceof Error ? v.message : v)).includes('secret-pw'))
})
