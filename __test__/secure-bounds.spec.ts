// The bounds of the secure path, pushed past by raw peers over real sockets (a handshake that
// never completes, bytes sent while a step is pending, a sealed frame over the payload limit),
// and secret keys that no property or method of anything reachable from JS exposes.
import test from 'ava'
import { createPrivateKey, createPublicKey, hkdfSync } from 'node:crypto'
import { connect, type Socket } from 'node:net'
import { inspect } from 'node:util'
import { ErrorCode, FrameDecoder, Identity, MessageType, encodeFrame, type Frame } from '../ts/index.js'
import { SecureChannel } from '../ts/secure/channel.js'
import { identity, newClient, nextDisconnect, rejection, startServer, within } from './helpers/secure.js'

/** A raw peer: a socket, the frames it has read, and a way to wait for the next one or the close. */
function rawPeer(t: import('ava').ExecutionContext, port: number) {
  const socket: Socket = connect({ host: '127.0.0.1', port })
  socket.on('error', () => {})
  const decoder = new FrameDecoder()
  const frames: Frame[] = []
  let wake: (() => void) | undefined
  socket.on('data', (chunk) => {
    try {
      frames.push(...decoder.push(chunk))
    } catch {
      // a sealed reply the raw peer cannot read is fine here
    }
    wake?.()
  })
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  t.teardown(async () => {
    socket.destroy()
    await closed
  })
  const frame = async (ms = 5000): Promise<Frame> => {
    while (frames.length === 0) await within(new Promise<void>((r) => (wake = r)), ms, 'a frame')
    return frames.shift()!
  }
  return { socket, frame, closed }
}

test('an XX client that never sends its third message is closed after handshakeTimeout; others are served meanwhile', async (t) => {
  const serverId = identity(t)
  const { server, port } = await startServer(t, { secure: { identity: serverId }, handshakeTimeout: 300 })
  const me = identity(t)
  const { channel, hello } = SecureChannel.initiator({ pattern: 'XX', identity: me, flags: 0x0007 })
  t.teardown(() => channel.destroy())
  const peer = rawPeer(t, port)
  const gone = nextDisconnect(server)
  const started = performance.now()
  peer.socket.write(encodeFrame({ type: MessageType.Handshake, sequence: 1, payload: hello }))
  const reply = await peer.frame()
  t.is(reply.type, MessageType.Response)
  t.is(channel.readReply(reply.payload).established, false)
  // ... and nothing more: the server's handshake timer ends it.
  const good = newClient(t, port, { secure: { serverKey: serverId.toString() } })
  t.is(await good.request('echo', 'meanwhile'), 'meanwhile')
  t.is((await gone).error?.code, ErrorCode.PROTOCOL)
  await within(peer.closed, 5000, 'close')
  const took = performance.now() - started
  t.true(took >= 250 && took < 5000, `closed after ${Math.round(took)} ms`)
})

test('bytes sent while a handshake step is pending stay bounded: the connection ends at handshakeTimeout holding a bounded amount', async (t) => {
  const serverId = identity(t)
  // A check that never answers keeps the IK step pending.
  const { server, port } = await startServer(t, { secure: { identity: serverId, clients: () => new Promise(() => {}) }, handshakeTimeout: 500 })
  const me = identity(t)
  const { channel, hello } = SecureChannel.initiator({ pattern: 'IK', identity: me, serverKey: serverId.publicKey, flags: 0x0007 })
  t.teardown(() => channel.destroy())
  const peer = rawPeer(t, port)
  const gone = nextDisconnect(server)
  const flood = Buffer.alloc(4 * 1024 * 1024, 0x41)
  peer.socket.write(Buffer.concat([encodeFrame({ type: MessageType.Handshake, sequence: 1, payload: hello }), flood]))
  const { error } = await gone
  t.true(error?.code === ErrorCode.PROTOCOL || error?.code === ErrorCode.HANDSHAKE_FAILED, String(error?.code))
  const held = server.stats().bytesIn
  t.true(held < 1024 * 1024, `the server read ${held} of ${flood.length} bytes`)
  t.log(`read ${held} bytes of a ${flood.length}-byte flood before closing (${error?.code})`)
})

test('bytes held during a pending step are read in the new mode once it is done: garbage after the hello is ERR_POLYCALL_TAMPERED', async (t) => {
  const serverId = identity(t)
  let release!: () => void
  const answered = new Promise<void>((r) => (release = r))
  const { server, port } = await startServer(t, {
    secure: { identity: serverId, clients: async () => (await answered, { ok: true }) },
    handshakeTimeout: 10_000,
  })
  const me = identity(t)
  const { channel, hello } = SecureChannel.initiator({ pattern: 'IK', identity: me, serverKey: serverId.publicKey, flags: 0x0007 })
  t.teardown(() => channel.destroy())
  const peer = rawPeer(t, port)
  const gone = nextDisconnect(server)
  // The hello and 96 KiB of garbage behind it: while the check is pending the server reads at
  // most one socket chunk and keeps it; once the key is admitted, the rest must be sealed frames.
  peer.socket.write(Buffer.concat([encodeFrame({ type: MessageType.Handshake, sequence: 1, payload: hello }), Buffer.alloc(96 * 1024, 0x41)]))
  for (let i = 0; i < 200 && server.stats().bytesIn === 0; i++) await new Promise((r) => setTimeout(r, 10))
  t.true(server.stats().bytesIn <= 64 * 1024, `${server.stats().bytesIn} bytes read while the step is pending`)
  release()
  t.is((await gone).error?.code, ErrorCode.TAMPERED)
})

test('a sealed frame over maxPayload is refused from its header (ERR_POLYCALL_PAYLOAD_TOO_LARGE); the server serves on', async (t) => {
  const serverId = identity(t)
  const { server, port } = await startServer(t, { secure: { identity: serverId }, maxPayload: 1024 })
  const client = newClient(t, port, { secure: { serverKey: serverId.toString() } })
  t.is(await client.request('echo', 'x'.repeat(900)), 'x'.repeat(900))
  const gone = nextDisconnect(server)
  t.is((await rejection(client.request('echo', 'x'.repeat(4000)))).code, ErrorCode.CONNECTION_LOST)
  t.is((await gone).error?.code, ErrorCode.PAYLOAD_TOO_LARGE)
  const again = newClient(t, port, { secure: { serverKey: serverId.toString() } })
  t.is(await again.request('echo', 1), 1)
})

test('an identity destroyed under a running server: new connections are dropped and reported, not crashed on', async (t) => {
  const serverId = Identity.generate()
  const reported: unknown[] = []
  const { port } = await startServer(t, { secure: { identity: serverId }, onError: (e) => reported.push(e) })
  serverId.destroy()
  const client = newClient(t, port, { secure: { serverKey: serverId.toString() } })
  t.is((await rejection(client.connect())).code, ErrorCode.CONNECT_FAILED)
  t.is((reported[0] as { code?: string }).code, ErrorCode.CLOSED)
})

const createHkdf = (seed: Buffer, info: string) => Buffer.from(hkdfSync('sha256', seed, 'polycall identity v1', info, 32))

/** Every Buffer and string reachable from `roots` through own and inherited properties and getters, and zero-argument methods' results. */
function reachable(roots: unknown[]): (Buffer | string)[] {
  const seen = new Set<unknown>()
  const out: (Buffer | string)[] = []
  const visit = (v: unknown, depth: number): void => {
    if (typeof v === 'string') return void out.push(v)
    if (v instanceof Uint8Array) return void out.push(Buffer.from(v))
    if (v === null || (typeof v !== 'object' && typeof v !== 'function') || seen.has(v) || depth > 6) return
    seen.add(v)
    if (typeof v === 'function') return
    for (let o: object | null = v as object; o && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
      for (const key of Reflect.ownKeys(o)) {
        if (key === 'constructor') continue
        let value: unknown
        try {
          value = Reflect.get(o, key, v)
        } catch {
          continue
        }
        if (typeof value === 'function' && value.length === 0 && o !== v && typeof key === 'string' && /^(to|get|inspect|valueOf)/.test(key)) {
          try {
            value = (value as () => unknown).call(v)
          } catch {
            continue
          }
        }
        visit(value, depth + 1)
      }
    }
  }
  for (const r of roots) visit(r, 0)
  return out
}

test('no property or method of identities, servers, clients, peers or principals exposes secret key bytes', async (t) => {
  const seed = Buffer.from('9f'.repeat(32), 'hex')
  const clientSeed = Buffer.from('3c'.repeat(32), 'hex')
  const serverId = Identity.fromBytes(seed)
  const clientId = Identity.fromBytes(clientSeed)
  t.teardown(() => {
    serverId.destroy()
    clientId.destroy()
  })
  // The secrets as the core derives them (HKDF-SHA256, salt "polycall identity v1").
  const secrets: Buffer[] = []
  for (const [s, id] of [
    [seed, serverId],
    [clientSeed, clientId],
  ] as const) {
    const x25519 = createHkdf(s, 'x25519 static key')
    const ed25519 = createHkdf(s, 'ed25519 signing key')
    // Checked against the public keys: these really are the identity's secrets.
    const pub = createPublicKey(createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: x25519.toString('base64url'), x: id.publicKey.toString('base64url') }, format: 'jwk' }))
    t.true(Buffer.from(pub.export({ format: 'jwk' }).x!, 'base64url').equals(id.publicKey))
    const signPub = createPublicKey(createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: ed25519.toString('base64url'), x: id.signingKey.toString('base64url') }, format: 'jwk' }))
    t.true(Buffer.from(signPub.export({ format: 'jwk' }).x!, 'base64url').equals(id.signingKey))
    secrets.push(s, x25519, ed25519)
  }
  let seenCtx: unknown
  const { server, port } = await startServer(
    t,
    { secure: { identity: serverId, clients: [clientId.publicKey] } },
    (s) =>
      s.route('keep', (ctx) => {
        seenCtx = { peer: ctx.peer, principal: ctx.principal }
        return ctx.principal
      }),
  )
  const client = newClient(t, port, { secure: { serverKey: serverId.toString(), identity: clientId } })
  await client.request('keep')
  const forms = secrets.flatMap((s) => [s, Buffer.from(s.toString('hex')), Buffer.from(s.toString('base64')), Buffer.from(s.toString('base64url'))])
  const values = reachable([serverId, clientId, server, client, seenCtx, serverId.toJSON(), clientId.toJSON(), client.stats(), server.stats()])
  values.push(inspect(serverId, { showHidden: true, depth: 5 }), inspect(client, { showHidden: true, depth: 5 }), JSON.stringify(serverId), String(serverId))
  t.true(values.length > 20)
  for (const v of values) {
    const bytes = typeof v === 'string' ? Buffer.from(v) : v
    for (const f of forms) t.false(bytes.includes(f), 'a secret is reachable from JS')
  }
})
