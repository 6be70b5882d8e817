// Attacks on secure sessions through a capturing relay between a real client and a real server
// on loopback: what the wire shows, tampering with every header field and the payload, replay,
// reordering, dropping, splicing frames across sessions, downgrades, an impostor server, and
// compression (its round trip and a decompression bomb). Each asserts the codes and that the
// server keeps serving its other clients.
import test, { type ExecutionContext } from 'ava'
import { Capability, ErrorCode, ProtocolFlag, preferredCipher, type SecureCipher, type SecureClientOptions, type SecurePattern } from '../ts/index.js'
import { refreshChecksum, startRelay, type Rewrite } from './helpers/relay.js'
import { identity, newClient, nextDisconnect, rejection, startServer } from './helpers/secure.js'

const SECURE = 0x0008
/** The frame flag of a sealed batch (docs/protocol-extensions.md). */
const BATCH_FLAG = 0x0100

/** A frame with one byte changed by `f`, checksum recomputed unless `keepChecksum`. */
function edit(frame: Buffer, offset: number, f: (b: number) => number, keepChecksum = false): Buffer {
  const out = Buffer.from(frame)
  out[offset] = f(out[offset]!) & 0xff
  return keepChecksum ? out : refreshChecksum(out)
}

/** The server keeps serving: a direct client (not through the relay) gets its answer. */
async function stillServes(t: ExecutionContext, port: number, secure: SecureClientOptions): Promise<void> {
  const direct = newClient(t, port, { secure })
  t.is(await direct.request('echo', 'still here'), 'still here')
}

async function setup(t: ExecutionContext, rewrite: { toServer?: Rewrite; toClient?: Rewrite } = {}, serverOptions = {}) {
  const serverId = identity(t)
  const { server, port } = await startServer(t, { secure: { identity: serverId, ...serverOptions } })
  const relay = await startRelay(t, { target: port, ...rewrite })
  const secure = { serverKey: serverId.toString() }
  return { server, port, relay, serverId, secure }
}

function hasBytes(haystack: Buffer, needle: string): boolean {
  return haystack.includes(Buffer.from(needle))
}

test('the wire shows no payload, credential or principal of a sealed session; the same session in plaintext shows them all', async (t) => {
  const secrets = { payload: 'payload-d15c0-ff', username: 'user-c0ffee', password: 'password-5ec2e7', principal: 'principal-7f3a9' }
  const serverId = identity(t)
  const clientId = identity(t)
  for (const secured of [true, false]) {
    const { port } = await startServer(t, {
      requireAuth: true,
      heartbeatInterval: 100,
      authenticate: (c) => ((c as { password?: string }).password === secrets.password ? { name: secrets.principal } : null),
      ...(secured ? { secure: { identity: serverId } } : {}),
    })
    const relay = await startRelay(t, { target: port })
    const client = newClient(t, relay.port, {
      credentials: { username: secrets.username, password: secrets.password },
      heartbeatInterval: 100,
      ...(secured ? { secure: { serverKey: serverId.toString(), identity: clientId } } : {}),
    })
    t.is(await client.request('echo', secrets.payload), secrets.payload)
    t.deepEqual(((await client.request('who')) as { principal: unknown }).principal, { name: secrets.principal })
    // Heartbeats flow too: wait (bounded) until the server has sent one.
    for (let i = 0; i < 100 && !relay.links[0]!.frames.toClient.some((f) => f[1] === 6); i++) await new Promise((r) => setTimeout(r, 20))
    const wire = relay.wire()
    for (const [what, value] of Object.entries(secrets)) t.is(hasBytes(wire, value), !secured, `${what} ${secured ? 'hidden' : 'visible'}`)
    if (!secured) continue
    const link = relay.links[0]!
    const sealed = [...link.frames.toServer.slice(1), ...link.frames.toClient.slice(1)]
    t.true(sealed.length >= 6)
    t.true(link.frames.toClient.slice(1).some((f) => f[1] === 6), 'a sealed heartbeat')
    for (const f of sealed) t.is(f.readUInt16LE(2) & ProtocolFlag.Encrypted, ProtocolFlag.Encrypted)
    // The hello and the reply are the only plaintext frames, and carry the Secure bit.
    t.is(link.frames.toServer[0]![1], 1)
    t.is(link.frames.toServer[0]!.readUInt16LE(22) & SECURE, SECURE)
    t.is(link.frames.toClient[0]![1], 4)
    t.is(link.frames.toClient[0]!.readUInt16LE(22) & SECURE, SECURE)
  }
})

test('the calls of one tick travel as sealed batches: fewer sealed frames than calls, every one answered; an altered batch is ERR_POLYCALL_TAMPERED', async (t) => {
  const { port, relay, secure } = await setup(t)
  const client = newClient(t, relay.port, { secure })
  await client.connect()
  t.truthy(client.stats().capabilities & Capability.SealedBatches, 'both sides agreed on batches')
  const before = relay.links[0]!.frames.toServer.length
  const values = Array.from({ length: 40 }, (_, i) => `call ${i}`)
  t.deepEqual(await Promise.all(values.map((v) => client.request('echo', v))), values)
  const sent = relay.links[0]!.frames.toServer.slice(before)
  const batches = sent.filter((f) => f.readUInt16LE(2) & BATCH_FLAG)
  t.true(sent.length < values.length / 4, `40 calls in ${sent.length} sealed frames`)
  t.true(batches.length >= 1)
  for (const f of batches) {
    t.is(f.readUInt16LE(2), BATCH_FLAG | ProtocolFlag.Encrypted)
    t.is(f.readUInt32LE(4), 0, 'a batch shows no sequence')
    t.is(f.readUInt32LE(12), 0, 'nor a checksum')
    t.true(f.length <= 16 + 4096 + 16)
  }
  t.false(hasBytes(relay.wire('toServer'), 'call 1'))
  // A byte of a batch changed in transit: the whole batch is refused, the session ends.
  const { server: server2, port: port2, relay: relay2, secure: secure2 } = await setup(t, {
    toServer: (f) => (f.readUInt16LE(2) & BATCH_FLAG ? edit(f, 40, (b) => b ^ 1) : undefined),
  })
  const victim = newClient(t, relay2.port, { secure: secure2 })
  await victim.connect()
  const gone = nextDisconnect(server2)
  const calls = await Promise.all(values.map((v) => victim.request('echo', v).then(() => 'ok', (e: { code: string }) => e.code)))
  t.is((await gone).error?.code, ErrorCode.TAMPERED)
  t.true(calls.includes(ErrorCode.CONNECTION_LOST))
  await stillServes(t, port2, secure2)
  await stillServes(t, port, secure)
})

const TAMPERS: [string, (f: Buffer) => Buffer | Buffer[]][] = [
  ['version', (f) => edit(f, 0, () => 2)],
  ['type', (f) => edit(f, 1, () => 6)],
  ['flags', (f) => edit(f, 2, (b) => b ^ ProtocolFlag.Urgent)],
  ['sequence', (f) => edit(f, 4, (b) => b + 1)],
  [
    'length',
    (f) => {
      const out = Buffer.from(f.subarray(0, f.length - 1))
      out.writeUInt32LE(out.length - 16, 8)
      return refreshChecksum(out)
    },
  ],
  ['checksum', (f) => edit(f, 12, (b) => b ^ 1, true)],
  ['ciphertext', (f) => edit(f, 16, (b) => b ^ 0x80)],
  ['tag', (f) => edit(f, f.length - 1, (b) => b ^ 1)],
]

for (const [field, tamper] of TAMPERS) {
  test(`a sealed request with its ${field} altered in transit is ERR_POLYCALL_TAMPERED and ends only that session`, async (t) => {
    const { server, port, relay, secure } = await setup(t, { toServer: (f, i) => (i === 1 ? tamper(f) : undefined) })
    const client = newClient(t, relay.port, { secure })
    await client.connect()
    const gone = nextDisconnect(server)
    const err = await rejection(client.request('echo', 'hello'))
    t.is(err.code, ErrorCode.CONNECTION_LOST)
    t.is((await gone).error?.code, ErrorCode.TAMPERED)
    await stillServes(t, port, secure)
  })
}

test('a reply altered on its way to the client fails the call with ERR_POLYCALL_TAMPERED', async (t) => {
  const { port, relay, secure } = await setup(t, { toClient: (f, i) => (i === 1 ? edit(f, 20, (b) => b ^ 4) : undefined) })
  const client = newClient(t, relay.port, { secure })
  t.is((await rejection(client.request('echo', 'hello'))).code, ErrorCode.TAMPERED)
  await stillServes(t, port, secure)
})

const ORDER_ATTACKS: [string, (frames: Buffer[]) => Buffer[]][] = [
  ['replayed', ([a]) => [a!, a!]],
  ['reordered', ([a, b]) => [b!, a!]],
  ['dropped', ([, b]) => [b!]],
]

for (const [what, attack] of ORDER_ATTACKS) {
  test(`a ${what} sealed frame is ERR_POLYCALL_TAMPERED`, async (t) => {
    // Two requests in two ticks leave as two sealed frames (one tick's would share a sealed
    // batch): hold the first until the second arrives.
    const held: Buffer[] = []
    const { server, port, relay, secure } = await setup(t, {
      toServer: (f, i) => {
        if (i < 1 || i > 2) return undefined
        held.push(f)
        return held.length === 2 ? attack(held) : []
      },
    })
    const client = newClient(t, relay.port, { secure })
    await client.connect()
    const gone = nextDisconnect(server)
    const first = client.request('echo', 1)
    await new Promise<void>((resolve) => setImmediate(resolve))
    const calls = [first, client.request('echo', 2)].map((p) => p.then(() => 'ok', (e: { code: string }) => e.code))
    t.is((await gone).error?.code, ErrorCode.TAMPERED)
    // Whatever was answered before the bad frame, nothing after it is: at least one call fails.
    t.true((await Promise.all(calls)).includes(ErrorCode.CONNECTION_LOST))
    await stillServes(t, port, secure)
  })
}

test('a frame spliced in from another session is ERR_POLYCALL_TAMPERED; the session it came from goes on', async (t) => {
  let relayRef: Awaited<ReturnType<typeof startRelay>> | undefined
  const { server, port, relay, secure } = await setup(t, {
    toServer: (f, i, link) => (link.id === 1 && i === 1 ? relayRef!.links[0]!.frames.toServer[1]! : undefined),
  })
  relayRef = relay
  const first = newClient(t, relay.port, { secure })
  t.is(await first.request('echo', 'same length A'), 'same length A')
  const second = newClient(t, relay.port, { secure })
  await second.connect()
  const gone = nextDisconnect(server)
  t.is((await rejection(second.request('echo', 'same length B'))).code, ErrorCode.CONNECTION_LOST)
  t.is((await gone).error?.code, ErrorCode.TAMPERED)
  t.is(await first.request('echo', 'A again'), 'A again')
  await stillServes(t, port, secure)
})

for (const pattern of ['IK', 'NK', 'XX'] as SecurePattern[]) {
  test(`${pattern}: a man in the middle with its own key is refused with ERR_POLYCALL_HANDSHAKE_FAILED, and not retried`, async (t) => {
    const real = identity(t)
    const own = identity(t)
    const clientId = identity(t)
    // The impostor terminates the client's connection with a secure server of its own key.
    const { port: impostor } = await startServer(t, { secure: { identity: own } })
    const secure: SecureClientOptions =
      pattern === 'IK'
        ? { serverKey: real.toString(), identity: clientId }
        : pattern === 'NK'
          ? { serverKey: real.toString() }
          : { serverKey: (key) => key === real.toString() }
    const client = newClient(t, impostor, { secure, reconnect: { initialDelay: 10 } })
    t.is((await rejection(client.connect())).code, ErrorCode.HANDSHAKE_FAILED)
    t.is(client.stats().reconnects, 0)
  })
}

const DOWNGRADES: [string, 'toServer' | 'toClient', (b: number) => number, string][] = [
  ['the Secure bit stripped from the hello', 'toServer', (b) => b & ~SECURE, ErrorCode.INSECURE_PEER],
  ['the Secure bit stripped from the reply', 'toClient', (b) => b & ~SECURE, ErrorCode.INSECURE_PEER],
  ['another capability bit flipped in the hello', 'toServer', (b) => b ^ 0x0004, ErrorCode.HANDSHAKE_FAILED],
  ['another capability bit flipped in the reply', 'toClient', (b) => b ^ 0x0002, ErrorCode.HANDSHAKE_FAILED],
]

for (const [what, direction, flip, code] of DOWNGRADES) {
  for (const pattern of ['NK', 'XX'] as SecurePattern[]) {
    test(`${pattern}: ${what} is refused (${code})`, async (t) => {
      const { port, relay, secure, serverId } = await setup(t, { [direction]: (f: Buffer, i: number) => (i === 0 ? edit(f, 22, flip) : undefined) })
      const client = newClient(t, relay.port, {
        secure: pattern === 'XX' ? { serverKey: (key) => key === serverId.toString() } : secure,
        reconnect: { initialDelay: 10 },
      })
      t.is((await rejection(client.connect())).code, code)
      t.is(client.stats().reconnects, 0)
      await stillServes(t, port, secure)
    })
  }
}

/** Byte 15 of the hello payload (frame offset 31): the client's cipher, 1 AESGCM, 0 ChaChaPoly. */
const CIPHER_AT = 31
const CIPHER_ID: Record<SecureCipher, number> = { AESGCM: 1, ChaChaPoly: 0 }

for (const cipher of ['AESGCM', 'ChaChaPoly'] as SecureCipher[]) {
  for (const pattern of ['IK', 'NK', 'XX'] as SecurePattern[]) {
    test(`${pattern}, ${cipher}: the hello names the cipher, which works; rewritten on the way it fails the handshake (ERR_POLYCALL_HANDSHAKE_FAILED)`, async (t) => {
      const clientId = identity(t)
      const seen: number[] = []
      const { port, relay, secure, serverId } = await setup(t, {
        // The first connection passes unchanged, the second has its cipher byte rewritten.
        toServer: (f, i, link) => {
          if (i !== 0) return undefined
          seen.push(f[CIPHER_AT]!)
          return link.id === 0 ? undefined : edit(f, CIPHER_AT, (b) => b ^ 1)
        },
      })
      const options: SecureClientOptions =
        pattern === 'IK'
          ? { ...secure, identity: clientId, cipher }
          : pattern === 'NK'
            ? { ...secure, cipher }
            : { serverKey: (key) => key === serverId.toString(), cipher }
      t.is(await newClient(t, relay.port, { secure: options }).request('echo', 'through'), 'through')
      const client = newClient(t, relay.port, { secure: options, reconnect: { initialDelay: 10 } })
      t.is((await rejection(client.connect())).code, ErrorCode.HANDSHAKE_FAILED)
      t.is(client.stats().reconnects, 0)
      t.deepEqual(seen, [CIPHER_ID[cipher], CIPHER_ID[cipher]])
      await stillServes(t, port, secure)
    })
  }
}

test('a client that states no cipher offers this machine\'s preferred one', async (t) => {
  const seen: number[] = []
  const { relay, secure } = await setup(t, { toServer: (f, i) => (i === 0 ? (seen.push(f[CIPHER_AT]!), undefined) : undefined) })
  t.is(await newClient(t, relay.port, { secure }).request('echo', 1), 1)
  t.is(await newClient(t, relay.port, { secure: { ...secure, cipher: 'auto' } }).request('echo', 2), 2)
  t.deepEqual(seen, [CIPHER_ID[preferredCipher()], CIPHER_ID[preferredCipher()]])
})

test('secure.required: a hello whose Secure bit was stripped on the way gets ERR_POLYCALL_INSECURE_PEER', async (t) => {
  const { server, port, relay, secure } = await setup(t, { toServer: (f, i) => (i === 0 ? edit(f, 22, (b) => b & ~SECURE) : undefined) }, { required: true })
  const client = newClient(t, relay.port, { secure })
  const gone = nextDisconnect(server)
  t.is((await rejection(client.connect())).code, ErrorCode.INSECURE_PEER)
  t.is((await gone).error?.code, ErrorCode.INSECURE_PEER)
  await stillServes(t, port, secure)
})

test('compression: large payloads round-trip compressed before sealing (flags 0x0003 on the wire, far fewer bytes)', async (t) => {
  const { relay, secure } = await setup(t, {}, { compress: true })
  const client = newClient(t, relay.port, { secure: { ...secure, compress: true } })
  const text = 'all work and no play makes a dull frame. '.repeat(6000)
  t.is(await client.request('echo', text), text)
  const link = relay.links[0]!
  const both = ProtocolFlag.Encrypted | ProtocolFlag.Compressed
  t.true(link.frames.toServer.some((f) => (f.readUInt16LE(2) & both) === both))
  t.true(link.frames.toClient.some((f) => (f.readUInt16LE(2) & both) === both))
  t.true(relay.wire('toServer').length < text.length / 10, `${relay.wire('toServer').length} bytes for ${text.length}`)
  t.false(hasBytes(relay.wire(), 'all work and no play'))
})

test('a decompression bomb (1 MB of zeros in a few KiB) is refused with ERR_POLYCALL_DECOMPRESSION_LIMIT before it is inflated', async (t) => {
  const { server, port, relay, secure } = await setup(t, {}, { compress: true, maxPayload: 64 * 1024 })
  const client = newClient(t, relay.port, { secure: { ...secure, compress: true } })
  await client.connect()
  const gone = nextDisconnect(server)
  t.is((await rejection(client.request('echo', Buffer.alloc(1_000_000)))).code, ErrorCode.CONNECTION_LOST)
  t.is((await gone).error?.code, ErrorCode.DECOMPRESSION_LIMIT)
  const sent = relay.wire('toServer').length
  t.true(sent < 16 * 1024, `the bomb took ${sent} bytes on the wire`)
  await stillServes(t, port, secure)
})

