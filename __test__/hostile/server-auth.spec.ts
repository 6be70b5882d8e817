// Authentication that cannot be bypassed: a verifier must positively return a principal.
import test from 'ava'
import { readFileSync } from 'node:fs'
import {
  Capability,
  ErrorCode,
  MessageType,
  PolyCallClient,
  PolyCallServer,
  type ClientOptions,
  type PolyCallError,
  type ServerOptions,
} from '../../ts/index.js'
import { CONTROL, CONTROL_REPLY, Pcr1Peer, pcr1Frame } from '../helpers/pcr1.js'
import { V1Peer, errorCode, unpack, until } from './fixtures/peers.js'

const pem = (name: string) => readFileSync(new URL(`../fixtures/tls/${name}`, import.meta.url))
const ca = pem('ca.crt')
const serverTls = { key: pem('server.key'), cert: pem('server.crt') }
const clientCert = { ca, key: pem('client.key'), cert: pem('client.crt') }

async function serve(t: import('ava').ExecutionContext, options: ServerOptions, setup?: (s: PolyCallServer) => void) {
  const server = new PolyCallServer(options)
  setup?.(server)
  const { port } = await server.listen(0, '127.0.0.1')
  t.teardown(async () => {
    server.destroy()
    await server.close()
  })
  return { server, port }
}

function client(t: import('ava').ExecutionContext, port: number, options: Partial<ClientOptions> = {}) {
  const c = new PolyCallClient({ host: '127.0.0.1', reconnect: false, ...options, port })
  t.teardown(async () => {
    c.destroy()
    await c.close()
  })
  return c
}

test('requireAuth with no way to verify is refused at construction', (t) => {
  const invalid = { code: ErrorCode.INVALID_ARGUMENT }
  t.throws(() => new PolyCallServer({ requireAuth: true }), invalid)
  // A client certificate the TLS layer does not enforce verifies nothing.
  t.throws(() => new PolyCallServer({ requireAuth: true, tls: { ...serverTls, ca, requestCert: true, rejectUnauthorized: false } }), invalid)
  t.throws(() => new PolyCallServer({ requireAuth: true, tls: { ...serverTls, ca, requestCert: false } }), invalid)
  t.throws(() => new PolyCallServer({ requireAuth: true, tls: serverTls }), invalid)
  // Enforced client certificates, or a hook, are ways to verify.
  t.notThrows(() => new PolyCallServer({ requireAuth: true, tls: { ...serverTls, ca, requestCert: true } }).destroy())
  t.notThrows(() => new PolyCallServer({ requireAuth: true, tls: { ...serverTls, ca, requestCert: true, rejectUnauthorized: true } }).destroy())
  t.notThrows(() => new PolyCallServer({ requireAuth: true, authenticate: () => ({ user: 'x' }) }).destroy())
  t.throws(() => new PolyCallServer({ authTimeout: -1 }), invalid)
})

test('finding 1: an AUTH frame with no verifier is refused, also under unenforced mTLS; handlers never run as undefined', async (t) => {
  const principals: unknown[] = []
  const { port } = await serve(t, { tls: { ...serverTls, ca, requestCert: true, rejectUnauthorized: false } }, (s) =>
    s.route('me', (ctx) => {
      principals.push(ctx.principal)
      return { principal: ctx.principal ?? null }
    }),
  )
  const peer = await V1Peer.connect(t, port, clientCert)
  await peer.hello()
  const answer = await peer.auth(2, {})
  t.is(answer?.type, MessageType.Error)
  t.is(answer?.sequence, 2)
  t.is(errorCode(answer), ErrorCode.UNAUTHENTICATED)
  // Without requireAuth the command is still served, but as nobody.
  const reply = await peer.call(3, 'me')
  t.is(reply?.type, MessageType.Response)
  t.deepEqual(unpack(reply!.payload), { principal: null })
  t.deepEqual(principals, [undefined])
})

for (const [name, result] of [
  ['false', false],
  ['null', null],
  ['undefined', undefined],
  ['0', 0],
  ['an empty string', ''],
] as const) {
  test(`finding 2: a hook that returns ${name} refuses; commands stay refused on a requireAuth server`, async (t) => {
    let served = 0
    const { port } = await serve(t, { requireAuth: true, authenticate: () => result }, (s) =>
      s.route('me', () => {
        served++
        return 'served'
      }),
    )
    const c = client(t, port)
    const err = (await t.throwsAsync(c.authenticate({ username: 'ada', password: 'wrong' }))) as PolyCallError
    t.is(err.code, ErrorCode.UNAUTHENTICATED)
    const raw = await V1Peer.connect(t, port)
    await raw.hello()
    t.is(errorCode(await raw.auth(2, { username: 'ada', password: 'wrong' })), ErrorCode.UNAUTHENTICATED)
    t.is(errorCode(await raw.call(3, 'me')), ErrorCode.UNAUTHENTICATED)
    t.is(served, 0)
  })
}

test('finding 2: an async hook that resolves falsy or rejects refuses; a throw never leaks the credentials', async (t) => {
  const { port } = await serve(t, {
    requireAuth: true,
    authenticate: async (c) => {
      const { password } = c as { password: string }
      if (password === 'reject') throw new Error(`bad ${password}`)
      return password === 'ok' ? { user: 'ada' } : null
    },
  })
  const peer = await V1Peer.connect(t, port)
  await peer.hello()
  const refused = await peer.auth(2, { password: 'null' })
  t.is(errorCode(refused), ErrorCode.UNAUTHENTICATED)
  const thrown = await peer.auth(3, { password: 'reject' })
  t.is(errorCode(thrown), ErrorCode.UNAUTHENTICATED)
  t.false(thrown!.payload.toString('latin1').includes('reject'))
  const ok = await peer.auth(4, { password: 'ok' })
  t.is(ok?.type, MessageType.Response)
})

test('finding 3: a failed re-AUTH drops the session to unauthenticated; it is not served as the earlier user', async (t) => {
  const authenticate = (c: unknown) => {
    const { username, password } = c as { username: string; password: string }
    return password === `${username}-pw` ? { user: username } : false
  }
  const route = (s: PolyCallServer) => s.route('me', (ctx) => ctx.principal ?? null)
  const strict = await serve(t, { requireAuth: true, authenticate }, route)
  const peer = await V1Peer.connect(t, strict.port)
  await peer.hello()
  t.is((await peer.auth(2, { username: 'ada', password: 'ada-pw' }))?.type, MessageType.Response)
  t.deepEqual(unpack((await peer.call(3, 'me'))!.payload), { user: 'ada' })
  t.is(errorCode(await peer.auth(4, { username: 'bob', password: 'guess' })), ErrorCode.UNAUTHENTICATED)
  t.is(errorCode(await peer.call(5, 'me')), ErrorCode.UNAUTHENTICATED)
  // Authenticating again works, as the new user.
  t.is((await peer.auth(6, { username: 'bob', password: 'bob-pw' }))?.type, MessageType.Response)
  t.deepEqual(unpack((await peer.call(7, 'me'))!.payload), { user: 'bob' })

  // Without requireAuth the session is served as nobody after the failure.
  const open = await serve(t, { authenticate }, route)
  const other = await V1Peer.connect(t, open.port)
  await other.hello()
  t.is((await other.auth(2, { username: 'ada', password: 'ada-pw' }))?.type, MessageType.Response)
  t.is(errorCode(await other.auth(3, { username: 'ada', password: 'nope' })), ErrorCode.UNAUTHENTICATED)
  t.is(unpack((await other.call(4, 'me'))!.payload), null)
})

test('finding 3: a client certificate principal is dropped by a refused AUTH on a server without a hook', async (t) => {
  const { port } = await serve(t, { requireAuth: true, tls: { ...serverTls, ca, requestCert: true } }, (s) =>
    s.route('me', (ctx) => (ctx.principal as { subject: { CN: string } }).subject.CN),
  )
  const peer = await V1Peer.connect(t, port, clientCert)
  await peer.hello()
  t.is(unpack((await peer.call(2, 'me'))!.payload), 'client-1')
  t.is(errorCode(await peer.auth(3, { username: 'root' })), ErrorCode.UNAUTHENTICATED)
  t.is(errorCode(await peer.call(4, 'me')), ErrorCode.UNAUTHENTICATED)
})

test('finding 7: a requireAuth peer that never authenticates is closed after authTimeout, heartbeats or not', async (t) => {
  const authTimeout = 1000
  const { port, server } = await serve(t, {
    requireAuth: true,
    authTimeout,
    // Heartbeats both ways; the dead-peer check (3 periods of silence) stays out of the way.
    heartbeatInterval: 1000,
    authenticate: (c) => ((c as { ok?: boolean }).ok ? { user: 'ok' } : false),
  })
  server.route('x', () => 'x')
  // One peer authenticates; one heartbeats and never authenticates; one sends nothing at all.
  const good = await V1Peer.connect(t, port)
  await good.hello(Capability.Msgpack | Capability.Heartbeat)
  t.is((await good.auth(2, { ok: true }))?.type, MessageType.Response)
  const started = performance.now()
  const [beating, silent] = await Promise.all([V1Peer.connect(t, port), V1Peer.connect(t, port)])
  await beating.hello(Capability.Msgpack | Capability.Heartbeat)
  const beat = setInterval(() => {
    beating.send(MessageType.Heartbeat, 0, Buffer.alloc(8))
    good.send(MessageType.Heartbeat, 0, Buffer.alloc(8))
  }, 50)
  t.teardown(() => clearInterval(beat))
  // The notice comes first, coded; heartbeats from the server may precede it.
  const notice = await beating.reply()
  t.is(errorCode(notice), ErrorCode.UNAUTHENTICATED)
  const closedAfter = (await beating.closedAt) - started
  const silentAfter = (await silent.closedAt) - started
  t.log(`closed ${closedAfter.toFixed(0)} ms (heartbeating) and ${silentAfter.toFixed(0)} ms (silent) after connecting`)
  t.true(closedAfter >= authTimeout - 50, `closed after ${closedAfter} ms`)
  t.true(closedAfter < authTimeout + 2500, `closed after ${closedAfter} ms`)
  t.true(silentAfter < authTimeout + 2500, `silent peer closed after ${silentAfter} ms`)
  // The authenticated peer outlived both and is still served.
  const reply = await good.call(3, 'x')
  t.is(reply?.sequence, 3)
  t.is(unpack(reply!.payload), 'x')
  await until(() => server.stats().connections.current === 1)
  t.is(server.stats().connections.current, 1)
})

test('PCR1 shutdown: only the exact token shuts down; wrong, longer, shorter or missing tokens are auth.denied', async (t) => {
  const { server, port } = await serve(t, { protocol: 'pcr1', controlToken: 's3cret-token' })
  const peer = await Pcr1Peer.connect(t, port)
  let corr = 1
  for (const auth_token of [undefined, '', 's3cret-tokeN', 's3cret-token-and-more', 's3cret', 3]) {
    peer.write(pcr1Frame(CONTROL, corr, auth_token === undefined ? { action: 'shutdown' } : { action: 'shutdown', auth_token }))
    const f = (await peer.next())!
    t.is(f.type, CONTROL_REPLY)
    t.is(f.corr, corr++)
    t.is((f.body as { error: { code: string } }).error.code, 'auth.denied')
  }
  t.false(server.closed)
  peer.write(pcr1Frame(CONTROL, corr, { action: 'shutdown', auth_token: 's3cret-token' }))
  t.deepEqual(((await peer.next())!.body as { data: unknown }).data, { shutting_down: true })
  await server.close()
})
