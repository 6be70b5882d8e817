import test, { type ExecutionContext } from 'ava'
import { randomBytes } from 'node:crypto'
import { ErrorCode, FrameDecoder, Identity, MessageType, buildHandshake, encodeFrame, type Frame, type PolyCallError } from '../ts/index.js'
import { COMPRESSION_CAPABILITY, HOLD_LIMIT, SECURE_CAPABILITY, SecureChannel, type SecurePattern } from '../ts/secure/channel.js'
import { compressPayload, decompressPayload } from '../ts/secure/compress.js'

const PATTERNS: SecurePattern[] = ['IK', 'NK', 'XX']
const OFFER = 0x0007

interface Pair {
  client: SecureChannel
  server: SecureChannel
  serverId: Identity
  clientId: Identity
}

interface PairOptions {
  offer?: number
  accept?: number
  client?: { rekeyFrames?: number; rekeyBytes?: number; maxPayload?: number; compressThreshold?: number }
  server?: { rekeyFrames?: number; rekeyBytes?: number; maxPayload?: number; compressThreshold?: number }
}

function ids(t: ExecutionContext): { serverId: Identity; clientId: Identity } {
  const serverId = Identity.generate()
  const clientId = Identity.generate()
  t.teardown(() => {
    serverId.destroy()
    clientId.destroy()
  })
  return { serverId, clientId }
}

/** A whole handshake over real v1 frames, both sides driven through push(). */
function pair(t: ExecutionContext, pattern: SecurePattern, o: PairOptions = {}): Pair {
  const { serverId, clientId } = ids(t)
  const offer = o.offer ?? OFFER
  const { channel: client, hello } = SecureChannel.initiator({
    pattern,
    identity: pattern === 'NK' ? undefined : clientId,
    serverKey: pattern === 'XX' ? undefined : serverId.toString(),
    flags: offer,
    maxInFlight: 64,
    ...o.client,
  })
  const server = SecureChannel.responder({ identity: serverId, ...o.server })
  t.teardown(() => {
    client.destroy()
    server.destroy()
  })
  let frames = server.push(encodeFrame({ type: MessageType.Handshake, sequence: 1, payload: hello }))
  t.is(frames.length, 1)
  t.true(server.held)
  const offered = server.readHello(frames[0]!.payload)
  t.true(offered.secure)
  t.is(offered.pattern, pattern)
  t.is(offered.flags, offer | SECURE_CAPABILITY)
  t.is(offered.maxInFlight, 64)
  if (pattern === 'IK') t.true(offered.clientKey!.equals(clientId.publicKey))
  else t.is(offered.clientKey, undefined)
  const reply = server.accept(o.accept ?? offer, 256)
  t.deepEqual(server.resume(), [])
  frames = client.push(encodeFrame({ type: MessageType.Response, sequence: 1, payload: reply }))
  t.true(client.held)
  const r = client.readReply(frames[0]!.payload)
  t.true(r.serverKey.equals(serverId.publicKey))
  t.is(r.maxInFlight, 256)
  t.is(r.established, pattern !== 'XX')
  t.deepEqual(client.resume(), [])
  if (pattern === 'XX') {
    t.false(client.established)
    const third = client.finish()
    frames = server.push(encodeFrame({ type: MessageType.Handshake, sequence: 2, payload: third }))
    t.true(server.readFinish(frames[0]!.payload).equals(clientId.publicKey))
    t.deepEqual(server.resume(), [])
  }
  t.true(client.established && server.established)
  return { client, server, serverId, clientId }
}

function texts(frames: Frame[]): string[] {
  return frames.map((f) => f.payload.toString())
}

function code(t: ExecutionContext, f: () => unknown, expected: string, message?: string): PolyCallError {
  const err = t.throws(f, undefined, message) as PolyCallError
  t.is(err?.code, expected, message)
  return err
}

test('IK, NK and XX handshakes over v1 frames; frames sealed both ways and opened in one push', (t) => {
  for (const pattern of PATTERNS) {
    const { client, server, serverId, clientId } = pair(t, pattern)
    const payloads = Array.from({ length: 50 }, (_, i) => Buffer.alloc((i * 97) % 1500, `frame ${i} `))
    const wire = client.seal(payloads.map((payload, i) => ({ type: MessageType.Command, sequence: i + 2, payload })))
    t.false(wire.includes(Buffer.from('frame 1 ')), 'no plaintext on the wire')
    // Every sealed frame keeps the v1 layout: ENCRYPTED set, checksum field 0 (the tag
    // authenticates all 16 header bytes), so a plain v1 decoder refuses the first non-empty one.
    const heads: Buffer[] = []
    for (let at = 0; at < wire.length; at += 16 + wire.readUInt32LE(at + 8)) heads.push(wire.subarray(at, at + 16))
    t.is(heads.length, 50)
    t.true(heads.every((h) => (h[2]! & 1) === 1 && h.readUInt32LE(12) === 0))
    t.is((t.throws(() => new FrameDecoder().push(Buffer.from(wire))) as PolyCallError).code, ErrorCode.CHECKSUM_MISMATCH)
    const got = server.push(wire)
    t.deepEqual(
      got.map((f) => [f.type, f.sequence, f.flags]),
      payloads.map((_, i) => [MessageType.Command, i + 2, 1]),
    )
    t.deepEqual(texts(got), payloads.map(String))
    // Byte by byte: the decoder assembles frames across chunks.
    const back = server.seal([
      { type: MessageType.Response, sequence: 2, payload: Buffer.from('reply') },
      { type: MessageType.Heartbeat, sequence: 0, flags: 4 },
      { type: MessageType.Response, sequence: 3, payload: Buffer.alloc(3000, 'x') },
    ])
    const received: Frame[] = []
    for (let i = 0; i < back.length; i++) received.push(...client.push(back.subarray(i, i + 1)))
    t.deepEqual(
      received.map((f) => [f.type, f.sequence, f.flags, f.payload.length]),
      [
        [MessageType.Response, 2, 1, 5],
        [MessageType.Heartbeat, 0, 5, 0],
        [MessageType.Response, 3, 1, 3000],
      ],
    )
    const cs = client.state
    const ss = server.state
    t.is(cs.mode, 'sealed')
    t.is(cs.pattern, pattern)
    t.true(cs.remoteKey!.equals(serverId.publicKey))
    if (pattern === 'NK') t.is(ss.remoteKey, undefined)
    else t.true(ss.remoteKey!.equals(clientId.publicKey))
    t.true(cs.handshakeHash!.equals(ss.handshakeHash!))
    t.is(cs.agreedFlags, OFFER | SECURE_CAPABILITY)
  }
})

test('an altered header field or payload byte is refused with ERR_POLYCALL_TAMPERED', (t) => {
  const names = ['version', 'type', 'flags', 'flags', 'sequence', 'sequence', 'sequence', 'sequence']
  const cases: Array<[string, number, number]> = [
    ...names.map((n, i): [string, number, number] => [n, i, i === 1 ? 0x06 : 0x01]),
    ['length (shorter)', 8, 0x02],
    ['checksum', 12, 0x01],
    ['checksum', 15, 0x80],
    ['ciphertext', 16, 0x01],
    ['tag', -1, 0x01],
  ]
  for (const [name, at, mask] of cases) {
    const { client, server } = pair(t, 'IK')
    const wire = client.seal([
      { type: MessageType.Command, sequence: 7, payload: Buffer.from('first') },
      { type: MessageType.Command, sequence: 8, payload: Buffer.from('second') },
    ])
    const firstLength = 16 + 5 + 16
    const offset = at >= 0 ? firstLength + at : wire.length + at
    wire[offset]! ^= mask
    const err = code(t, () => server.push(wire), ErrorCode.TAMPERED, name) as PolyCallError & { frames: Frame[] }
    t.deepEqual(texts(err.frames), ['first'], `${name}: the frame before it still arrives`)
    const again = t.throws(() => server.push(Buffer.alloc(1))) as PolyCallError
    t.is(again, err, 'the failure is sticky')
  }
  // A longer length field waits for bytes that never come: the end of the stream refuses it.
  const { client, server } = pair(t, 'NK')
  const wire = client.seal([{ type: MessageType.Command, sequence: 1, payload: Buffer.from('x') }])
  wire[9]! ^= 0x01
  t.deepEqual(server.push(wire), [])
  code(t, () => server.end(), ErrorCode.TRUNCATED_PAYLOAD)
})

test('replayed, reordered, dropped and spliced frames are refused', (t) => {
  const frame = (c: SecureChannel, seq: number) => c.seal([{ type: MessageType.Command, sequence: seq, payload: Buffer.from(`m${seq}`) }])
  // Replay.
  let p = pair(t, 'IK')
  const first = frame(p.client, 1)
  t.deepEqual(texts(p.server.push(Buffer.from(first))), ['m1'])
  code(t, () => p.server.push(Buffer.from(first)), ErrorCode.TAMPERED, 'replay')
  // Reorder.
  p = pair(t, 'NK')
  const a = frame(p.client, 1)
  const b = frame(p.client, 2)
  code(t, () => p.server.push(Buffer.concat([b, a])), ErrorCode.TAMPERED, 'reorder')
  // Drop.
  p = pair(t, 'XX')
  frame(p.client, 1)
  code(t, () => p.server.push(frame(p.client, 2)), ErrorCode.TAMPERED, 'drop')
  // Splice a frame from another session between the same two identities.
  const one = pair(t, 'IK')
  const two = pair(t, 'IK')
  code(t, () => two.server.push(frame(one.client, 1)), ErrorCode.TAMPERED, 'splice')
  // Reflect a client's own frame back at it.
  p = pair(t, 'IK')
  code(t, () => p.client.push(frame(p.client, 1)), ErrorCode.TAMPERED, 'reflection')
  // Plaintext after the switch point.
  p = pair(t, 'IK')
  code(t, () => p.server.push(encodeFrame({ type: MessageType.Command, sequence: 3, payload: Buffer.from('{}') })), ErrorCode.TAMPERED, 'plaintext')
})

test('both directions rekey at the frame or byte counts their senders announced', (t) => {
  const { client, server } = pair(t, 'XX', { client: { rekeyFrames: 3 }, server: { rekeyFrames: 0, rekeyBytes: 500 } })
  for (let i = 0; i < 40; i++) {
    const payload = Buffer.alloc(i * 5, i)
    const up = server.push(client.seal([{ type: MessageType.Command, sequence: i, payload }]))
    t.true(up[0]!.payload.equals(payload))
    const down = client.push(server.seal([{ type: MessageType.Response, sequence: i, payload }]))
    t.true(down[0]!.payload.equals(payload))
  }
  const c = client.state
  const s = server.state
  t.is(c.rekeysSent, 13)
  t.is(s.rekeysReceived, 13)
  t.true(s.rekeysSent > 5)
  t.is(c.rekeysReceived, s.rekeysSent)
})

test('compression: negotiated round trip above the threshold; a bomb is refused before decompressing', (t) => {
  const offer = OFFER | COMPRESSION_CAPABILITY
  const { client, server } = pair(t, 'IK', { offer, accept: offer, client: { compressThreshold: 256 } })
  t.is(client.state.agreedFlags & COMPRESSION_CAPABILITY, COMPRESSION_CAPABILITY)
  const text = Buffer.from('{"users":[' + Array.from({ length: 300 }, (_, i) => `{"id":${i},"name":"user ${i}"}`).join(',') + ']}')
  const wire = client.seal([
    { type: MessageType.Command, sequence: 1, payload: text },
    { type: MessageType.Command, sequence: 2, payload: Buffer.from('tiny') },
  ])
  t.true(wire.length < text.length / 3, `${wire.length} bytes on the wire for ${text.length}`)
  t.is(wire[2]! & 0x03, 0x03, 'ENCRYPTED and COMPRESSED')
  const got = server.push(wire)
  t.true(got[0]!.payload.equals(text))
  t.is(got[0]!.flags & 0x02, 0, 'delivered decompressed')
  t.is(got[1]!.payload.toString(), 'tiny')

  // A peer allowed 1 MiB compresses 1 MB of zeros into a few KiB; this server allows 64 KiB.
  const bomb = pair(t, 'NK', { offer, accept: offer, server: { maxPayload: 64 * 1024 } })
  const zeros = bomb.client.seal([{ type: MessageType.Command, sequence: 1, payload: Buffer.alloc(1_000_000) }])
  t.true(zeros.length < 8192)
  code(t, () => bomb.server.push(zeros), ErrorCode.DECOMPRESSION_LIMIT)

  // The payload helpers, for plain connections.
  const packed = compressPayload(text, 512)!
  t.true(packed.length < text.length)
  t.true(decompressPayload(packed).equals(text))
  t.is(compressPayload(Buffer.from('short'), 512), undefined)
  t.is(compressPayload(randomBytes(600), 512), undefined, 'incompressible')
  const small = compressPayload(Buffer.alloc(1 << 20), 0)!
  code(t, () => decompressPayload(small, 1000), ErrorCode.DECOMPRESSION_LIMIT)
  const lying = Buffer.from(small)
  lying.writeUInt32LE(10, 0)
  code(t, () => decompressPayload(lying), ErrorCode.DECOMPRESSION_FAILED)
  code(t, () => decompressPayload(Buffer.from([1, 0])), ErrorCode.DECOMPRESSION_FAILED)
})

test('a stripped capability, a plain reply, an impostor or a wrong key fail the handshake with distinct codes', (t) => {
  const { serverId, clientId } = ids(t)
  const impostor = Identity.generate()
  t.teardown(() => impostor.destroy())
  const start = (pattern: SecurePattern, serverKey: Identity = serverId) =>
    SecureChannel.initiator({ pattern, identity: pattern === 'NK' ? undefined : clientId, serverKey: pattern === 'XX' ? undefined : serverKey, flags: OFFER })
  for (const pattern of PATTERNS) {
    // A server (or relay) answering without the secure session.
    let { channel: client } = start(pattern)
    code(t, () => client.readReply(buildHandshake(OFFER, 256)), ErrorCode.INSECURE_PEER, `${pattern}: plain reply`)
    ;({ channel: client } = start(pattern))
    code(t, () => client.readReply(Buffer.alloc(0)), ErrorCode.INSECURE_PEER, `${pattern}: legacy reply`)
    // A relay that clears the Cancel bit in the hello.
    let hello: Buffer
    ;({ channel: client, hello } = start(pattern))
    const altered = Buffer.from(hello)
    altered[6]! &= ~0x02
    let server = SecureChannel.responder({ identity: serverId })
    if (pattern === 'XX') {
      server.readHello(altered)
      code(t, () => client.readReply(server.accept(0x0001, 1)), ErrorCode.HANDSHAKE_FAILED, 'XX detects it in message 2')
    } else {
      code(t, () => server.readHello(altered), ErrorCode.HANDSHAKE_FAILED, `${pattern} detects it in message 1`)
    }
    // The secure bit stripped from the hello: the server sees a plain hello.
    ;({ channel: client, hello } = start(pattern))
    const stripped = Buffer.from(hello)
    stripped[6]! &= ~SECURE_CAPABILITY
    server = SecureChannel.responder({ identity: serverId })
    t.false(server.readHello(stripped).secure)
    server.plain()
    server.destroy()
  }
  for (const pattern of ['IK', 'NK'] as const) {
    // A man in the middle with its own key cannot read message 1.
    const { hello } = start(pattern)
    const mitm = SecureChannel.responder({ identity: impostor })
    code(t, () => mitm.readHello(hello), ErrorCode.HANDSHAKE_FAILED, `${pattern}: impostor`)
    // A client configured with the wrong server key is refused by the real server.
    const wrong = start(pattern, impostor)
    code(t, () => SecureChannel.responder({ identity: serverId }).readHello(wrong.hello), ErrorCode.HANDSHAKE_FAILED)
  }
  // XX: the impostor completes message 2, and the client sees a key that is not the server's.
  const { channel: client, hello } = start('XX')
  const mitm = SecureChannel.responder({ identity: impostor })
  mitm.readHello(hello)
  const r = client.readReply(mitm.accept(OFFER, 1))
  t.false(r.serverKey.equals(serverId.publicKey))
  t.false(client.established)
  // A server that accepts only IK refuses an NK client.
  const onlyIk = SecureChannel.responder({ identity: serverId, patterns: ['IK'] })
  code(t, () => onlyIk.readHello(start('NK').hello), ErrorCode.HANDSHAKE_FAILED)
  code(t, () => onlyIk.accept(0, 1), ErrorCode.HANDSHAKE_FAILED, 'the failure is sticky')
})

test('XX: message 3 and the first sealed frames leave together; the server holds, then opens them', (t) => {
  const { serverId, clientId } = ids(t)
  const { channel: client, hello } = SecureChannel.initiator({ pattern: 'XX', identity: clientId })
  const server = SecureChannel.responder({ identity: serverId, patterns: ['XX'] })
  t.teardown(() => {
    client.destroy()
    server.destroy()
  })
  server.readHello(server.push(encodeFrame({ type: MessageType.Handshake, sequence: 1, payload: hello }))[0]!.payload)
  const reply = server.accept(0, 8)
  code(t, () => server.seal([{ type: MessageType.Response, sequence: 1 }]), ErrorCode.INVALID_ARGUMENT, 'nothing sealed before message 3')
  server.resume()
  t.true(client.readReply(reply).serverKey.equals(serverId.publicKey))
  const third = encodeFrame({ type: MessageType.Handshake, sequence: 2, payload: client.finish() })
  const auth = client.seal([{ type: MessageType.Auth, sequence: 3, flags: 8, payload: Buffer.from('{"user":"ada"}') }])
  const chunk = Buffer.concat([third, auth])
  const first = server.push(chunk)
  t.is(first.length, 1)
  t.true(server.held)
  // More bytes while held are queued, in order.
  const cmd = client.seal([{ type: MessageType.Command, sequence: 4, payload: Buffer.from('go') }])
  t.deepEqual(server.push(cmd), [])
  t.true(server.readFinish(first[0]!.payload).equals(clientId.publicKey))
  const rest = server.resume()
  t.deepEqual(
    rest.map((f) => [f.type, f.sequence, f.flags, f.payload.toString()]),
    [
      [MessageType.Auth, 3, 9, '{"user":"ada"}'],
      [MessageType.Command, 4, 1, 'go'],
    ],
  )
  t.false(server.held)
})

test('a held channel keeps at most 64 KiB; a half-done handshake holds nothing more', (t) => {
  const { serverId } = ids(t)
  const { hello } = SecureChannel.initiator({ pattern: 'NK', serverKey: serverId })
  const server = SecureChannel.responder({ identity: serverId })
  t.teardown(() => server.destroy())
  t.is(server.push(encodeFrame({ type: MessageType.Handshake, sequence: 1, payload: hello })).length, 1)
  t.true(server.held)
  const piece = Buffer.alloc(16 * 1024)
  for (let sent = 0; sent + piece.length <= HOLD_LIMIT; sent += piece.length) t.deepEqual(server.push(piece), [])
  code(t, () => server.push(Buffer.alloc(1)), ErrorCode.HANDSHAKE_FAILED)
  code(t, () => server.readHello(hello), ErrorCode.HANDSHAKE_FAILED, 'ended')
})

test('large payloads straddle chunks; limits are coded', (t) => {
  const { client, server } = pair(t, 'IK', { server: { maxPayload: 300_000 } })
  const big = Buffer.alloc(300_000)
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff
  const wire = client.seal([{ type: MessageType.Command, sequence: 1, payload: big }])
  const got: Frame[] = []
  for (let i = 0; i < wire.length; i += 1000) got.push(...server.push(wire.subarray(i, i + 1000)))
  t.is(got.length, 1)
  t.true(got[0]!.payload.equals(big))
  code(t, () => server.push(client.seal([{ type: MessageType.Command, sequence: 2, payload: Buffer.alloc(300_001) }])), ErrorCode.PAYLOAD_TOO_LARGE)
  const p = pair(t, 'NK')
  code(t, () => p.client.seal([{ type: MessageType.Command, sequence: 1, payload: Buffer.alloc((1 << 20) - 15) }]), ErrorCode.PAYLOAD_TOO_LARGE)
  t.is(p.client.seal([{ type: MessageType.Command, sequence: 1, payload: Buffer.alloc((1 << 20) - 16) }]).length, (1 << 20) + 16)
  t.is(p.client.seal([]).length, 0)
})

test('plain sessions: a legacy hello continues unsealed, with optional compression', (t) => {
  const { serverId } = ids(t)
  const server = SecureChannel.responder({ identity: serverId })
  t.teardown(() => server.destroy())
  const hello = encodeFrame({ type: MessageType.Handshake, sequence: 1, payload: buildHandshake(0x0001) })
  const cmd = encodeFrame({ type: MessageType.Command, sequence: 2, payload: Buffer.from('[1]') })
  const first = server.push(Buffer.concat([hello, cmd]))
  t.is(first.length, 1)
  t.false(server.readHello(first[0]!.payload).secure)
  server.plain()
  t.deepEqual(texts(server.resume()), ['[1]'])
  t.is(server.state.mode, 'plain')
  server.setCompression(64)
  const out = server.seal([{ type: MessageType.Response, sequence: 2, payload: Buffer.alloc(4096, 'a') }])
  const decoded = new FrameDecoder().push(out)
  t.is(decoded[0]!.flags, 0x02)
  t.true(decompressPayload(decoded[0]!.payload).equals(Buffer.alloc(4096, 'a')))
  code(t, () => server.plain(), ErrorCode.INVALID_ARGUMENT)
})

test('destroyed channels and identities, and bad arguments, fail with codes', (t) => {
  const { serverId, clientId } = ids(t)
  const { channel } = SecureChannel.initiator({ pattern: 'XX', identity: clientId })
  channel.destroy()
  channel.destroy()
  code(t, () => channel.push(Buffer.alloc(1)), ErrorCode.CLOSED)
  code(t, () => channel.seal([]), ErrorCode.CLOSED)
  code(t, () => channel.finish(), ErrorCode.CLOSED)
  {
    using scoped = SecureChannel.responder({ identity: serverId })
    t.is(scoped.state.mode, 'handshaking')
  }
  const gone = Identity.generate()
  gone.destroy()
  code(t, () => SecureChannel.initiator({ pattern: 'XX', identity: gone }), ErrorCode.CLOSED)
  code(t, () => SecureChannel.responder({ identity: gone }), ErrorCode.CLOSED)
  code(t, () => SecureChannel.initiator({ pattern: 'IK', serverKey: serverId }), ErrorCode.INVALID_ARGUMENT, 'IK needs an identity')
  code(t, () => SecureChannel.initiator({ pattern: 'NK' }), ErrorCode.INVALID_ARGUMENT, 'NK needs the server key')
  code(t, () => SecureChannel.initiator({ pattern: 'XX', identity: clientId, serverKey: serverId }), ErrorCode.INVALID_ARGUMENT)
  code(t, () => SecureChannel.initiator({ pattern: 'NK', serverKey: Buffer.alloc(31) }), ErrorCode.INVALID_KEY)
  code(t, () => SecureChannel.initiator({ pattern: 'NK', serverKey: Buffer.alloc(32) }), ErrorCode.HANDSHAKE_FAILED, 'a low-order key')
  code(t, () => SecureChannel.initiator({ pattern: 'NK', serverKey: 'x25519:nope' }), ErrorCode.INVALID_KEY)
  code(t, () => SecureChannel.initiator({ pattern: 'KK' as SecurePattern, identity: clientId }), ErrorCode.INVALID_ARGUMENT)
  code(t, () => SecureChannel.initiator({ pattern: 'XX', identity: clientId, maxPayload: (1 << 20) + 1 }), ErrorCode.INVALID_ARGUMENT)
  code(t, () => SecureChannel.initiator({ pattern: 'XX', identity: clientId, flags: 0x10000 }), ErrorCode.INVALID_ARGUMENT)
  code(t, () => SecureChannel.responder({ identity: serverId, patterns: [] }), ErrorCode.INVALID_ARGUMENT)
  const p = pair(t, 'IK')
  code(t, () => p.client.seal([{ type: 9 as MessageType, sequence: 1 }]), ErrorCode.INVALID_ARGUMENT)
  code(t, () => p.client.seal([{ type: MessageType.Command, sequence: -1 }]), ErrorCode.INVALID_ARGUMENT)
  code(t, () => p.client.push('bytes' as unknown as Uint8Array), ErrorCode.INVALID_ARGUMENT)
  // The session survives argument errors.
  t.deepEqual(texts(p.server.push(p.client.seal([{ type: MessageType.Command, sequence: 1, payload: Buffer.from('ok') }]))), ['ok'])
})
