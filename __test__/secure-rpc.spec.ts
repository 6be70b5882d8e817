// Secure sessions through the public API over real loopback sockets: round trips for each
// pattern, over TLS too, admission by key, how requireAuth and authenticate see the key,
// refusals and their codes, options.
import test from 'ava'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { connect as netConnect, createServer as createNetServer, type AddressInfo } from 'node:net'
import {
  Capability,
  ErrorCode,
  Identity,
  PolyCallClient,
  PolyCallServer,
  type PeerInfo,
  preferredCipher,
  type SecureCipher,
  type SecureClientOptions,
  type SecurePattern,
} from '../ts/index.js'
import { identity, newClient, nextDisconnect, rejection, startServer } from './helpers/secure.js'

const pem = (name: string) => readFileSync(new URL(`./fixtures/tls/${name}`, import.meta.url))
const ca = pem('ca.crt')
const serverTls = { key: pem('server.key'), cert: pem('server.crt') }

const PATTERNS: SecurePattern[] = ['IK', 'NK', 'XX']

function clientSecure(pattern: SecurePattern, server: Identity, client: Identity): SecureClientOptions {
  if (pattern === 'IK') return { serverKey: server.toString(), identity: client }
  if (pattern === 'NK') return { serverKey: server.publicKey }
  return { serverKey: (key) => key === server.toString(), identity: client }
}

type Who = { principal: unknown; secure: string | null; publicKey: string | null; tls: boolean }

for (const pattern of PATTERNS) {
  test(`${pattern}: requests round-trip sealed, many in flight, and the server sees the pattern and the key`, async (t) => {
    const serverId = identity(t)
    const clientId = identity(t)
    const { server, port } = await startServer(t, { secure: { identity: serverId } })
    const client = newClient(t, port, { secure: clientSecure(pattern, serverId, clientId) })
    await client.connect()
    const caps = client.stats().capabilities
    t.truthy(caps & Capability.Secure)
    t.falsy(caps & Capability.Compression)
    const who = (await client.request('who')) as Who
    t.is(who.secure, pattern)
    t.is(who.publicKey, pattern === 'NK' ? null : clientId.toString())
    // No `clients` list: the key is known, but it authenticates nobody.
    t.is(who.principal, null)
    const values = await Promise.all(Array.from({ length: 300 }, (_, i) => client.request('echo', { i, s: 'x'.repeat(i) })))
    t.true(values.every((v, i) => (v as { i: number }).i === i))
    const big = Buffer.alloc(200_000, 7)
    t.true(Buffer.from((await client.request('echo', big)) as Uint8Array).equals(big))
    t.is(server.stats().connections.current, 1)
  })
}

test('secure sessions over TLS: both layers at once, the mTLS certificate and the key both reach the server', async (t) => {
  const serverId = identity(t)
  const clientId = identity(t)
  const { port } = await startServer(t, {
    tls: { ...serverTls, ca, requestCert: true, rejectUnauthorized: true },
    secure: { identity: serverId, clients: [clientId.publicKey], required: true },
    requireAuth: true,
  })
  const client = newClient(t, port, {
    tls: { ca, key: pem('client.key'), cert: pem('client.crt') },
    secure: { serverKey: serverId.toString(), identity: clientId },
  })
  const who = (await client.request('who')) as Who & { principal: { publicKey: string; subject: Record<string, string> } }
  t.true(who.tls)
  t.is(who.secure, 'IK')
  t.is(who.principal.publicKey, clientId.toString())
  t.is(who.principal.subject['CN'], 'client-1')
  t.deepEqual(await client.request('echo', [1, 2, 3]), [1, 2, 3])
})

test('a plaintext client still gets served by a server whose secure sessions are optional; a legacy one too', async (t) => {
  const serverId = identity(t)
  const { port } = await startServer(t, { secure: { identity: serverId } })
  const plain = newClient(t, port, {})
  t.deepEqual(await plain.request('who'), { principal: null, secure: null, publicKey: null, tls: false })
  t.falsy(plain.stats().capabilities & Capability.Secure)
  const legacy = newClient(t, port, { legacy: true })
  t.is(await legacy.request('echo', 'hi'), 'hi')
  t.true(legacy.stats().legacy)
})

test('secure.required: a plaintext and a legacy client get one ERROR ERR_POLYCALL_INSECURE_PEER, not retried; secure clients are served', async (t) => {
  const serverId = identity(t)
  const { server, port } = await startServer(t, { secure: { identity: serverId, required: true } })
  for (const options of [{}, { legacy: true }]) {
    const client = newClient(t, port, { ...options, reconnect: { initialDelay: 10 } })
    const gone = nextDisconnect(server)
    const err = await rejection(client.connect())
    t.is(err.code, ErrorCode.INSECURE_PEER)
    t.is((await gone).error?.code, ErrorCode.INSECURE_PEER)
    t.is(client.stats().reconnects, 0)
  }
  const secure = newClient(t, port, { secure: { serverKey: serverId.toString() } })
  t.is(await secure.request('echo', 1), 1)
})

test('a secure client refuses a server that offers no secure session (ERR_POLYCALL_INSECURE_PEER) and does not retry', async (t) => {
  const { port } = await startServer(t, {})
  const serverId = identity(t)
  const client = newClient(t, port, { secure: { serverKey: serverId.toString() }, reconnect: { initialDelay: 10 } })
  const err = await rejection(client.request('echo', 1))
  t.is(err.code, ErrorCode.INSECURE_PEER)
  t.is(client.stats().reconnects, 0)
  const again = await rejection(client.request('echo', 1))
  t.is(again.code, ErrorCode.INSECURE_PEER)
})

test('a client pinned to another key gets ERR_POLYCALL_HANDSHAKE_FAILED, distinct from network errors, and does not retry', async (t) => {
  const serverId = identity(t)
  const otherId = identity(t)
  const clientId = identity(t)
  const { port } = await startServer(t, { secure: { identity: serverId } })
  for (const secure of [
    { serverKey: otherId.toString() },
    { serverKey: otherId.publicKey, identity: clientId },
    { serverKey: (key: string) => key === otherId.toString() },
    {
      serverKey: () => {
        throw new Error('no')
      },
    },
    { serverKey: async () => 'yes' as unknown as boolean },
  ] satisfies SecureClientOptions[]) {
    const client = newClient(t, port, { secure, reconnect: { initialDelay: 10 } })
    const err = await rejection(client.connect())
    t.is(err.code, ErrorCode.HANDSHAKE_FAILED)
    t.is(client.stats().reconnects, 0)
  }
  // The server keeps serving.
  const good = newClient(t, port, { secure: { serverKey: serverId.toString() } })
  t.is(await good.request('echo', 'still'), 'still')
})

test('secure.clients as a list: listed keys get in authenticated (requireAuth met without AUTH); others are refused per pattern', async (t) => {
  const serverId = identity(t)
  const allowed = identity(t)
  const stranger = identity(t)
  const { server, port } = await startServer(t, { requireAuth: true, secure: { identity: serverId, clients: [allowed.toString()] } })
  const ik = newClient(t, port, { secure: { serverKey: serverId.toString(), identity: allowed } })
  t.deepEqual(((await ik.request('who')) as Who).principal, { publicKey: allowed.toString() })
  const xx = newClient(t, port, { secure: { serverKey: () => true, identity: allowed } })
  t.deepEqual(((await xx.request('who')) as Who).principal, { publicKey: allowed.toString() })
  // IK and NK are refused in the handshake; XX, whose key comes with its third message, right after it.
  for (const secure of [
    { serverKey: serverId.toString(), identity: stranger },
    { serverKey: serverId.toString() },
    { serverKey: () => true, identity: stranger },
    { serverKey: () => true },
  ] satisfies SecureClientOptions[]) {
    const client = newClient(t, port, { secure, reconnect: { initialDelay: 10 } })
    const gone = nextDisconnect(server)
    const err = await rejection(client.request('who'))
    t.is(err.code, ErrorCode.UNAUTHENTICATED)
    t.is((await gone).error?.code, ErrorCode.UNAUTHENTICATED)
    t.is(client.stats().reconnects, 0)
  }
  t.deepEqual(((await ik.request('who')) as Who).principal, { publicKey: allowed.toString() })
})

test('secure.clients as a check: only a truthy answer admits (sync or async); falsy, a throw and a rejection refuse', async (t) => {
  const serverId = identity(t)
  const ids = Array.from({ length: 6 }, () => identity(t))
  const seen: (string | undefined)[] = []
  const answers = new Map<string, (peer: PeerInfo) => unknown>([
    [ids[0]!.toString(), () => ({ user: 'ada' })],
    [ids[1]!.toString(), async () => ({ user: 'bob' })],
    [ids[2]!.toString(), () => 0],
    [
      ids[3]!.toString(),
      () => {
        throw new Error('nope')
      },
    ],
    [ids[4]!.toString(), async () => Promise.reject(new Error('nope'))],
    [ids[5]!.toString(), async () => ''],
  ])
  const { port } = await startServer(t, {
    secure: {
      identity: serverId,
      clients: (key, peer) => {
        seen.push(key)
        t.is(peer.remoteAddress, '127.0.0.1')
        return key === undefined ? undefined : answers.get(key)?.(peer)
      },
    },
  })
  for (const [i, pattern] of [
    [0, 'IK'],
    [1, 'XX'],
  ] as const) {
    const c = newClient(t, port, { secure: pattern === 'IK' ? { serverKey: serverId.toString(), identity: ids[i]! } : { serverKey: () => true, identity: ids[i]! } })
    t.deepEqual(((await c.request('who')) as Who).principal, i === 0 ? { user: 'ada' } : { user: 'bob' })
  }
  for (const i of [2, 3, 4, 5]) {
    for (const xx of [false, true]) {
      const c = newClient(t, port, { secure: xx ? { serverKey: () => true, identity: ids[i]! } : { serverKey: serverId.toString(), identity: ids[i]! } })
      t.is((await rejection(c.request('who'))).code, ErrorCode.UNAUTHENTICATED, `client ${i}${xx ? ' XX' : ' IK'}`)
    }
  }
  const nk = newClient(t, port, { secure: { serverKey: serverId.toString() } })
  t.is((await rejection(nk.request('who'))).code, ErrorCode.UNAUTHENTICATED)
  t.true(seen.includes(undefined))
})

test('authenticate sees the verified key in peer.publicKey and can turn it into the principal; a refused AUTH still refuses', async (t) => {
  const serverId = identity(t)
  const clientId = identity(t)
  const { port } = await startServer(t, {
    requireAuth: true,
    secure: { identity: serverId },
    authenticate: (credentials, peer) =>
      (credentials as { password?: string }).password === 'pw' && peer.publicKey ? { key: peer.publicKey, via: peer.secure } : null,
  })
  const client = newClient(t, port, { secure: { serverKey: serverId.toString(), identity: clientId }, credentials: { username: 'u', password: 'pw' } })
  t.deepEqual(((await client.request('who')) as Who).principal, { key: clientId.toString(), via: 'IK' })
  // Without credentials a requireAuth server refuses commands, sealed or not.
  const bare = newClient(t, port, { secure: { serverKey: serverId.toString(), identity: clientId } })
  t.is((await rejection(bare.request('who'))).code, ErrorCode.UNAUTHENTICATED)
  // An NK client has no key: this authenticate refuses it.
  const anonymous = newClient(t, port, { secure: { serverKey: serverId.toString() }, credentials: { username: 'u', password: 'pw' } })
  t.is((await rejection(anonymous.connect())).code, ErrorCode.UNAUTHENTICATED)
})

test('compression negotiated on both sides: large payloads round-trip; one side alone does not compress', async (t) => {
  const serverId = identity(t)
  const { port } = await startServer(t, { secure: { identity: serverId, compress: true } })
  const both = newClient(t, port, { secure: { serverKey: serverId.toString(), compress: true } })
  await both.connect()
  t.truthy(both.stats().capabilities & Capability.Compression)
  const text = 'polycall '.repeat(50_000)
  t.is(await both.request('echo', text), text)
  const one = newClient(t, port, { secure: { serverKey: serverId.toString() } })
  await one.connect()
  t.falsy(one.stats().capabilities & Capability.Compression)
  t.is(await one.request('echo', text), text)
})

test('a busy tick mixes frames sealed in the write arena with staged large ones: order, compression and rekeys hold', async (t) => {
  const serverId = identity(t)
  const { port } = await startServer(t, { secure: { identity: serverId, compress: true, rekeyFrames: 3 } })
  // A relay that counts what the client sends.
  let upstream = 0
  const relay = createNetServer((inbound) => {
    const out = netConnect(port, '127.0.0.1')
    inbound.on('data', (d: Buffer) => (upstream += d.length))
    inbound.pipe(out).pipe(inbound)
    inbound.on('error', () => out.destroy())
    out.on('error', () => inbound.destroy())
  })
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => relay.close(() => resolve())))
  const client = newClient(t, (relay.address() as AddressInfo).port, {
    secure: { serverKey: serverId.toString(), compress: true, rekeyFrames: 2 },
  })
  await client.connect()
  // Sizes on both sides of the arena's limit (about 2 KiB), compressible and not, and empty.
  const sizes = [0, 10, 600, 1500, 2000, 2100, 5000, 30_000]
  const payloads = Array.from({ length: 64 }, (_, i) => {
    const n = sizes[i % sizes.length]!
    return i % 3 === 0 ? randomBytes(n).toString('base64').slice(0, n) : `${i}:`.padEnd(n, 'z')
  })
  const out = await Promise.all(payloads.map((p) => client.request('echo', p)))
  t.deepEqual(out, payloads)
  // Compressible frames that fit the arena are compressed there, before sealing.
  const small = Array.from({ length: 40 }, (_, i) => `${i}:`.padEnd(1800, 'q'))
  const before = upstream
  t.deepEqual(await Promise.all(small.map((p) => client.request('echo', p))), small)
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.true(upstream - before < 40 * 1800 / 4, `${upstream - before} bytes sent for ${40 * 1800} bytes of payloads`)
})

test('rekeying after a few frames keeps a long session working both ways', async (t) => {
  const serverId = identity(t)
  const { port } = await startServer(t, { secure: { identity: serverId, rekeyFrames: 7, rekeyBytes: 4096 } })
  const client = newClient(t, port, { secure: { serverKey: serverId.toString(), rekeyFrames: 5, rekeyBytes: 3000 } })
  for (let round = 0; round < 5; round++) {
    const out = await Promise.all(Array.from({ length: 40 }, (_, i) => client.request('echo', `${round}:${i}:${'y'.repeat(100)}`)))
    t.true(out.every((v, i) => v === `${round}:${i}:${'y'.repeat(100)}`))
  }
})

test('cancellation travels sealed: a cancelled call aborts its handler, and the connection serves on', async (t) => {
  const serverId = identity(t)
  let aborted!: (code: string) => void
  const abortedCode = new Promise<string>((resolve) => (aborted = resolve))
  const { port } = await startServer(t, { secure: { identity: serverId } }, (s) =>
    s.route(
      'slow',
      (ctx) =>
        new Promise((resolve) =>
          ctx.signal.addEventListener('abort', () => {
            aborted((ctx.signal.reason as { code: string }).code)
            resolve(0)
          }),
        ),
    ),
  )
  const client = newClient(t, port, { secure: { serverKey: serverId.toString() } })
  const ac = new AbortController()
  const call = client.request('slow', undefined, { signal: ac.signal })
  t.is(await client.request('echo', 'first'), 'first')
  ac.abort()
  t.is((await rejection(call)).code, ErrorCode.ABORTED)
  t.is(await abortedCode, ErrorCode.CANCELLED)
  t.is(await client.request('echo', 'after'), 'after')
})

test('options: unknown keys in secure are refused by name; PCR1, legacy and missing keys are refused at construction', (t) => {
  const id = Identity.generate()
  t.teardown(() => id.destroy())
  const code = (f: () => unknown, c: string = ErrorCode.INVALID_ARGUMENT) => t.is((t.throws(f) as { code?: string } | undefined)?.code, c)
  code(() => new PolyCallServer({ secure: { identity: id, requierd: true } as never }))
  code(() => new PolyCallClient({ port: 1, secure: { serverKey: id.toString(), idenity: id } as never }))
  code(() => new PolyCallServer({ protocol: 'pcr1', secure: { identity: id } }))
  code(() => new PolyCallClient({ port: 1, protocol: 'pcr1', secure: { serverKey: id.publicKey } }))
  code(() => new PolyCallClient({ port: 1, legacy: true, secure: { serverKey: id.publicKey } }))
  code(() => new PolyCallClient({ port: 1, secure: {} as never }))
  code(() => new PolyCallServer({ secure: { identity: 'x' as never } }))
  code(() => new PolyCallServer({ secure: { identity: id, patterns: ['KK' as never] } }))
  code(() => new PolyCallServer({ secure: { identity: id, rekeyFrames: -1 } }))
  code(() => new PolyCallClient({ port: 1, secure: { serverKey: 'x25519:nope' } }), ErrorCode.INVALID_KEY)
  code(() => new PolyCallClient({ port: 1, secure: { serverKey: new Uint8Array(32) } }), ErrorCode.INVALID_KEY)
  code(() => new PolyCallServer({ secure: { identity: id, clients: ['ed25519:abc'] } }), ErrorCode.INVALID_KEY)
  // requireAuth is satisfiable by secure.clients alone.
  t.notThrows(() => new PolyCallServer({ requireAuth: true, secure: { identity: id, clients: [id.publicKey] } }).destroy())
  code(() => new PolyCallServer({ requireAuth: true, secure: { identity: id } }))
  const destroyed = Identity.generate()
  destroyed.destroy()
  code(() => new PolyCallServer({ secure: { identity: destroyed } }))
})

test('ciphers: a client of either cipher is served; a server ciphers list refuses the other with ERR_POLYCALL_HANDSHAKE_FAILED', async (t) => {
  const serverId = identity(t)
  const clientId = identity(t)
  t.true(['AESGCM', 'ChaChaPoly'].includes(preferredCipher()))
  const { port } = await startServer(t, { secure: { identity: serverId } })
  const big = Buffer.alloc(70_000, 3)
  for (const cipher of ['AESGCM', 'ChaChaPoly'] as SecureCipher[]) {
    for (const pattern of PATTERNS) {
      const client = newClient(t, port, { secure: { ...clientSecure(pattern, serverId, clientId), cipher } })
      t.is(await client.request('echo', `${pattern} ${cipher}`), `${pattern} ${cipher}`)
      t.true(Buffer.from((await client.request('echo', big)) as Uint8Array).equals(big))
    }
    const other: SecureCipher = cipher === 'AESGCM' ? 'ChaChaPoly' : 'AESGCM'
    const { port: strict } = await startServer(t, { secure: { identity: serverId, ciphers: [other] } })
    for (const pattern of PATTERNS) {
      const refused = newClient(t, strict, { secure: { ...clientSecure(pattern, serverId, clientId), cipher }, reconnect: { initialDelay: 10 } })
      t.is((await rejection(refused.connect())).code, ErrorCode.HANDSHAKE_FAILED)
      t.is(refused.stats().reconnects, 0)
    }
    t.is(await newClient(t, strict, { secure: { serverKey: serverId.toString(), cipher: other } }).request('echo', 1), 1)
  }
  const code = (f: () => unknown) => t.is((t.throws(f) as { code?: string } | undefined)?.code, ErrorCode.INVALID_ARGUMENT)
  code(() => new PolyCallClient({ port: 1, secure: { serverKey: serverId.toString(), cipher: 'AES' as never } }))
  code(() => new PolyCallServer({ secure: { identity: serverId, ciphers: [] } }))
  code(() => new PolyCallServer({ secure: { identity: serverId, ciphers: ['chacha' as never] } }))
  code(() => new PolyCallServer({ secure: { identity: serverId, ciphers: 'AESGCM' as never } }))
})

test('a server patterns list refuses other patterns with ERR_POLYCALL_HANDSHAKE_FAILED in the handshake', async (t) => {
  const serverId = identity(t)
  const clientId = identity(t)
  const { port } = await startServer(t, { secure: { identity: serverId, patterns: ['IK'] } })
  t.is((await rejection(newClient(t, port, { secure: { serverKey: serverId.toString() } }).connect())).code, ErrorCode.HANDSHAKE_FAILED)
  t.is((await rejection(newClient(t, port, { secure: { serverKey: () => true } }).connect())).code, ErrorCode.HANDSHAKE_FAILED)
  t.is(await newClient(t, port, { secure: { serverKey: serverId.toString(), identity: clientId } }).request('echo', 2), 2)
})
