// polycall/testing: in-memory links with the real framing, session and failure behaviour.
import test from 'ava'
import { once } from 'node:events'
import { ErrorCode, PolyCallServer, type PolyCallError } from '../ts/index.js'
import { connectInMemory } from '../ts/testing/index.js'

function server(t: import('ava').ExecutionContext, options: ConstructorParameters<typeof PolyCallServer>[0] = {}) {
  const s = new PolyCallServer(options)
  t.teardown(() => s.destroy())
  return s
}

test('a client and a server talk in memory: handshake, auth, middleware, errors, pipelining', async (t) => {
  const s = server(t, { requireAuth: true, authenticate: (c: unknown) => ({ user: (c as { u: string }).u }) })
  const seen: string[] = []
  s.use(async (ctx, next) => {
    seen.push(ctx.command)
    await next()
  })
  s.route('/users/:id', (ctx) => ({ id: ctx.params['id'], by: ctx.principal }))
  s.route('fail', () => {
    throw new Error('hidden')
  })
  const { client, link } = await connectInMemory(s, { credentials: { u: 'ada' } })
  t.teardown(() => client.destroy())
  t.deepEqual(await client.request('/users/7'), { id: '7', by: { user: 'ada' } })
  t.is(((await t.throwsAsync(client.request('fail'))) as PolyCallError).code, ErrorCode.INTERNAL)
  const many = await Promise.all(Array.from({ length: 1000 }, (_, i) => client.request(`/users/${i}`)))
  t.true(many.every((r, i) => (r as { id: string }).id === String(i)))
  t.is(seen.length, 1002)
  t.true(link.bytes.toServer > 0 && link.bytes.toClient > 0)
  t.is(s.stats().connections.current, 1)
})

test('drop(): pending calls fail with CONNECTION_LOST (written) and the handler is aborted', async (t) => {
  const s = server(t)
  let reason: unknown
  let entered!: () => void
  const inHandler = new Promise<void>((r) => (entered = r))
  s.route('hang', (ctx) => {
    entered()
    return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject((reason = ctx.signal.reason))))
  })
  const { client, link } = await connectInMemory(s)
  t.teardown(() => client.destroy())
  const call = client.request('hang', undefined, { timeout: 10_000 })
  await inHandler
  link.drop()
  const err = (await t.throwsAsync(call)) as PolyCallError & { written: boolean }
  t.is(err.code, ErrorCode.CONNECTION_LOST)
  t.true(err.written)
  t.is((reason as PolyCallError).code, ErrorCode.CONNECTION_LOST)
})

test('delay(): frames arrive late but in order; a delay longer than the timeout times the call out', async (t) => {
  const s = server(t)
  s.route('n/:i', (ctx) => Number(ctx.params['i']))
  const { client, link } = await connectInMemory(s)
  t.teardown(() => client.destroy())
  link.delay(30)
  t.deepEqual(await Promise.all([1, 2, 3].map((i) => client.request(`n/${i}`))), [1, 2, 3])
  link.delay(200)
  t.is(((await t.throwsAsync(client.request('n/4', undefined, { timeout: 50 }))) as PolyCallError).code, ErrorCode.TIMEOUT)
  link.delay(0)
  t.is(await client.request('n/5'), 5)
})

test('corrupt(): a damaged frame to the server fails that connection with the decoder code', async (t) => {
  const s = server(t)
  s.route('ok', () => 'ok')
  const { client, link } = await connectInMemory(s)
  t.teardown(() => client.destroy())
  link.corrupt({ direction: 'toServer', offset: 0 })
  const err = (await t.throwsAsync(client.request('ok'))) as PolyCallError
  t.is(err.code, ErrorCode.VERSION_MISMATCH)
  t.false(client.connected)
  const again = await connectInMemory(s)
  t.teardown(() => again.client.destroy())
  again.link.corrupt({ direction: 'toClient', offset: 12 })
  const err2 = (await t.throwsAsync(again.client.request('ok'))) as PolyCallError
  t.is(err2.code, ErrorCode.PROTOCOL)
  t.regex(err2.message, /invalid frame/)
})

test('reconnection works through the link; PCR1 servers connect in memory too', async (t) => {
  const s = server(t)
  s.route('ok', () => 'ok')
  const { client, link } = await connectInMemory(s, { reconnect: { initialDelay: 5 } })
  t.teardown(() => client.destroy())
  const back = once(client, 'connect')
  link.drop()
  await back
  t.is(await client.request('ok'), 'ok')
  t.is(link.connections, 2)
  const p = server(t, { protocol: 'pcr1' })
  p.route('debug.echo', (ctx) => ({ echo: ctx.data }))
  const pcr1 = await connectInMemory(p)
  t.teardown(() => pcr1.client.destroy())
  t.deepEqual(await pcr1.client.request('debug.echo', [1]), { echo: [1] })
  t.deepEqual(await pcr1.client.control('ping'), { pong: true, abi: 1 })
})

test('the package exports polycall/testing', async (t) => {
  const specifier = 'polycall/testing' // resolved by Node through package.json exports (dist/)
  const mod = (await import(specifier)) as typeof import('../ts/testing/index.js')
  t.is(typeof mod.connectInMemory, 'function')
  t.is(typeof mod.MemoryLink, 'function')
})
