// Authorization middleware over real sockets, with principals that come from secure-session
// keys: requirePrincipal and requireScope, server-wide and per route.
import test from 'ava'
import { ErrorCode, PolyCallError, requirePrincipal, requireScope } from '../ts/index.js'
import { identity, newClient, rejection, startServer } from './helpers/secure.js'

test('requireScope per route and requirePrincipal server-wide: principals from keys, FORBIDDEN and UNAUTHENTICATED', async (t) => {
  const serverId = identity(t)
  const admin = identity(t)
  const reader = identity(t)
  const scopes = new Map([
    [admin.toString(), { name: 'admin', scopes: ['orders:read', 'orders:write'] }],
    [reader.toString(), { name: 'reader', scope: 'orders:read' }],
  ])
  let handled = 0
  const { port } = await startServer(t, { secure: { identity: serverId, clients: (key) => (key ? scopes.get(key) : undefined) } }, (s) => {
    s.route('orders.list', () => (handled++, ['o1']), { use: requireScope('orders:read') })
    s.route('orders.create', () => (handled++, 'o2'), { use: [requireScope('orders:write')] })
    s.route('orders.audit', () => (handled++, 'ok'), { use: requireScope(['orders:write', 'audit'], { match: 'any' }) })
    s.route('admin.only', () => (handled++, 'yes'), { use: requirePrincipal((p) => (p as { name: string }).name === 'admin') })
    s.route('throws', () => 'never', {
      use: requirePrincipal(() => {
        throw new PolyCallError('ERR_APP_X', 'x')
      }),
    })
  })
  const asAdmin = newClient(t, port, { secure: { serverKey: serverId.toString(), identity: admin } })
  const asReader = newClient(t, port, { secure: { serverKey: () => true, identity: reader } })
  t.deepEqual(await asAdmin.request('orders.list'), ['o1'])
  t.is(await asAdmin.request('orders.create'), 'o2')
  t.is(await asAdmin.request('orders.audit'), 'ok')
  t.is(await asAdmin.request('admin.only'), 'yes')
  t.deepEqual(await asReader.request('orders.list'), ['o1'])
  const before = handled
  for (const command of ['orders.create', 'orders.audit', 'admin.only', 'throws']) {
    t.is((await rejection(asReader.request(command))).code, ErrorCode.FORBIDDEN, command)
  }
  t.is(handled, before, 'no refused handler ran')
  // Routes without `use` stay open.
  t.is(await asReader.request('echo', 1), 1)
})

test('requirePrincipal refuses connections nobody authenticated with UNAUTHENTICATED, on every route', async (t) => {
  const serverId = identity(t)
  const { server, port } = await startServer(t, { secure: { identity: serverId } })
  server.use(requirePrincipal())
  const anonymous = newClient(t, port, { secure: { serverKey: serverId.toString() } })
  t.is((await rejection(anonymous.request('echo', 1))).code, ErrorCode.UNAUTHENTICATED)
  const plain = newClient(t, port, {})
  t.is((await rejection(plain.request('who'))).code, ErrorCode.UNAUTHENTICATED)
})

test('schema routes check the scope before validating input; bad arguments are refused at construction', async (t) => {
  const serverId = identity(t)
  const clientId = identity(t)
  const { port } = await startServer(t, { secure: { identity: serverId, clients: [clientId.publicKey] } }, (s) =>
    s.route('typed', {
      input: { '~standard': { version: 1, vendor: 'test', validate: () => ({ issues: [{ message: 'never valid' }] }) } },
      handler: () => 'no',
      use: requireScope('typed:call'),
    }),
  )
  const client = newClient(t, port, { secure: { serverKey: serverId.toString(), identity: clientId } })
  // The principal { publicKey } has no scopes: FORBIDDEN, not INVALID_INPUT.
  t.is((await rejection(client.request('typed', 1))).code, ErrorCode.FORBIDDEN)
  for (const bad of [() => requireScope([]), () => requireScope(''), () => requireScope('a', { match: 'some' as never }), () => requirePrincipal(1 as never)]) {
    t.is((t.throws(bad) as PolyCallError).code, ErrorCode.INVALID_ARGUMENT)
  }
})
