// The v1 wire as other implementations speak it: byte-level peers built from docs/protocol.md §3-§5,
// legacy conventions, bad input, slow peers, heartbeats and sequence wraparound.
import test from 'ava'
import { once } from 'node:events'
import { createServer, type Socket } from 'node:net'
import {
  Capability,
  ErrorCode,
  FrameDecoder,
  MessageType,
  PolyCallError,
  buildHandshake,
  encodeFrame,
  parseHandshake,
  type Frame,
} from '../ts/index.js'
import { RawPeer, delay, newClient, startServer } from './helpers/net.js'

const json = (v: unknown) => Buffer.from(JSON.stringify(v))

test('a node-polycall-style client: empty handshake, JSON AUTH and COMMAND, one frame per write', async (t) => {
  const { port } = await startServer(
    t,
    {
      requireAuth: true,
      authenticate: (c) => {
        const { username, password } = c as { username: string; password: string }
        if (username !== 'test' || password !== 'test') throw new Error('no')
        return { username }
      },
    },
    (s) => {
      s.route('status', (ctx) => ({ status: 'ok', who: ctx.principal, data: ctx.data }))
      s.route('fail', () => {
        throw new PolyCallError('ERR_APP_BROKEN', 'it broke')
      })
    },
  )
  const peer = await RawPeer.connect(t, port)
  // §4: node-polycall's hello is an empty HANDSHAKE, flags 0x0008, sequence 1.
  peer.socket.write(Buffer.from('01010800010000000000000000000000', 'hex'))
  const hello = (await peer.next()) as Frame
  t.is(hello.type, MessageType.Response)
  t.is(hello.sequence, 1)
  t.deepEqual(parseHandshake(hello.payload), { form: 'long', version: 1, flags: 0, legacy: true })
  // §11 V3: AUTH, sequence 2, flags 0x0009, {"username":"test","password":"test"}.
  peer.socket.write(
    Buffer.from('0102090002000000250000006d3159e67b22757365726e616d65223a2274657374222c2270617373776f7264223a2274657374227d', 'hex'),
  )
  const auth = (await peer.next()) as Frame
  t.is(auth.type, MessageType.Response)
  t.is(auth.sequence, 2)
  t.deepEqual(JSON.parse(auth.payload.toString()), { authenticated: true })
  // §11 V4: COMMAND, sequence 3, {"command":"status","data":{}}.
  peer.socket.write(Buffer.from('01030800030000001e000000bb66e7ad7b22636f6d6d616e64223a22737461747573222c2264617461223a7b7d7d', 'hex'))
  const reply = (await peer.next()) as Frame
  t.is(reply.type, MessageType.Response)
  t.is(reply.sequence, 3)
  t.is(reply.flags, 0)
  t.deepEqual(JSON.parse(reply.payload.toString()), { status: 'ok', who: { username: 'test' }, data: {} })
  // ERROR payloads are UTF-8 text for legacy peers.
  peer.send(MessageType.Command, 4, json({ command: 'fail', data: null }))
  const err = (await peer.next()) as Frame
  t.is(err.type, MessageType.Error)
  t.is(err.sequence, 4)
  t.is(err.payload.toString(), 'ERR_APP_BROKEN: it broke')
})

test('a go-polycall-style client: 4-byte hello, no wait, no AUTH, COMMAND in the same write', async (t) => {
  const { port } = await startServer(t, {}, (s) => s.route('ping', () => 'pong'))
  const peer = await RawPeer.connect(t, port)
  peer.socket.write(
    Buffer.concat([
      encodeFrame({ type: MessageType.Handshake, sequence: 1, payload: Buffer.from('434c5000', 'hex') }),
      encodeFrame({ type: MessageType.Command, sequence: 2, payload: json({ command: 'ping', data: null }) }),
    ]),
  )
  const hello = (await peer.next()) as Frame
  t.is(hello.sequence, 1)
  const reply = (await peer.next()) as Frame
  t.is(reply.sequence, 2)
  t.is(reply.payload.toString(), '"pong"')
})

test('a C-style peer: long handshake with a garbage pad byte, opaque text COMMAND with a trailing NUL', async (t) => {
  const { port } = await startServer(t, {}, (s) => s.route('status', () => 'fine'))
  const peer = await RawPeer.connect(t, port)
  peer.socket.write(Buffer.from('0101080001000000080000002b2a03a0434c500001aa0000', 'hex'))
  t.is((await peer.next())?.sequence, 1)
  peer.send(MessageType.Command, 2, Buffer.from('status\0'))
  const reply = (await peer.next()) as Frame
  t.is(reply.type, MessageType.Response)
  t.is(reply.payload.toString(), '"fine"')
})

test('frames not allowed in the session state get an ERROR echoing their sequence, not a disconnect', async (t) => {
  const { port } = await startServer(t, {}, (s) => s.route('x', () => 1))
  const peer = await RawPeer.connect(t, port)
  peer.send(MessageType.Command, 5, json({ command: 'x' }))
  const early = (await peer.next()) as Frame
  t.is(early.type, MessageType.Error)
  t.is(early.sequence, 5)
  t.regex(early.payload.toString(), /^ERR_POLYCALL_PROTOCOL: COMMAND is not allowed in session state INIT/)
  peer.send(MessageType.Handshake, 6, buildHandshake(0))
  t.is((await peer.next())?.sequence, 6)
  peer.send(MessageType.Response, 7, json({}))
  const stray = (await peer.next()) as Frame
  t.is(stray.type, MessageType.Error)
  t.is(stray.sequence, 7)
  peer.send(MessageType.Handshake, 8, buildHandshake(0))
  t.is((await peer.next())?.sequence, 8, 'a second handshake is refused the same way')
  peer.send(MessageType.Command, 9, json({ command: 'x' }))
  t.is((await peer.next())?.payload.toString(), '1', 'the connection still serves')
})

test('bad handshakes: too short and bad magic are refused with ERROR and the connection closes', async (t) => {
  const { port } = await startServer(t)
  for (const [payload, code] of [
    ['434c50', ErrorCode.HANDSHAKE_PAYLOAD_TOO_SHORT],
    ['00504c43', ErrorCode.HANDSHAKE_BAD_MAGIC],
  ] as const) {
    const peer = await RawPeer.connect(t, port)
    peer.send(MessageType.Handshake, 1, Buffer.from(payload, 'hex'))
    const err = (await peer.next()) as Frame
    t.is(err.type, MessageType.Error)
    t.is(err.sequence, 1)
    t.true(err.payload.toString().startsWith(code))
    await peer.closed
  }
})

test('garbage and oversized frames: ERROR with the code, that connection closes, others keep working', async (t) => {
  const { port, server } = await startServer(t, {}, (s) => s.route('ok', () => 'ok'))
  const bystander = newClient(t, port)
  t.is(await bystander.request('ok'), 'ok')

  const garbage = await RawPeer.connect(t, port)
  garbage.socket.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))
  const e1 = (await garbage.next()) as Frame
  t.is(e1.type, MessageType.Error)
  t.is(e1.sequence, 0)
  t.true(e1.payload.toString().startsWith(ErrorCode.VERSION_MISMATCH))
  await garbage.closed

  const huge = await RawPeer.connect(t, port)
  huge.send(MessageType.Handshake, 1, buildHandshake(0))
  await huge.next()
  // A header announcing 0xffffffff bytes: refused at once, no payload awaited or buffered.
  huge.socket.write(Buffer.from('0103000009000000ffffffff00000000', 'hex'))
  const e2 = (await huge.next()) as Frame
  t.true(e2.payload.toString().startsWith(`${ErrorCode.PAYLOAD_TOO_LARGE}: payload_length 4294967295 exceeds`))
  await huge.closed

  const corrupt = await RawPeer.connect(t, port)
  const bad = encodeFrame({ type: MessageType.Handshake, sequence: 1, payload: buildHandshake(0) })
  bad[12]! ^= 0xff
  corrupt.socket.write(bad)
  t.true(((await corrupt.next()) as Frame).payload.toString().startsWith(ErrorCode.CHECKSUM_MISMATCH))
  await corrupt.closed

  t.is(await bystander.request('ok'), 'ok')
  t.is(server.stats().connections.current, 1)
})

test('a smaller maxPayload refuses larger requests at the header', async (t) => {
  const { port } = await startServer(t, { maxPayload: 64 }, (s) => s.route('x', () => 1))
  const client = newClient(t, port)
  t.is(await client.request('x', 'small'), 1)
  const err = (await t.throwsAsync(client.request('x', 'y'.repeat(200)))) as PolyCallError
  t.is(err.code, ErrorCode.PAYLOAD_TOO_LARGE)
})

test('slow peers: no handshake, or a header that never completes, are closed after handshakeTimeout', async (t) => {
  const { port } = await startServer(t, { handshakeTimeout: 150 })
  const silent = await RawPeer.connect(t, port)
  const slow = await RawPeer.connect(t, port)
  slow.socket.write(Buffer.from('0101080001', 'hex'))
  const [a, b] = await Promise.all([silent.next(3000), slow.next(3000)])
  for (const f of [a, b]) {
    t.is(f?.type, MessageType.Error)
    t.true(f!.payload.toString().startsWith(ErrorCode.PROTOCOL))
  }
  await Promise.all([silent.closed, slow.closed])
})

test('an idle connection is closed after idleTimeout; the client reconnects for the next call', async (t) => {
  const { port, server } = await startServer(t, { idleTimeout: 100 }, (s) => s.route('x', () => 'x'))
  const client = newClient(t, port, { reconnect: { initialDelay: 10 } })
  const lost = once(client, 'disconnect')
  t.is(await client.request('x'), 'x')
  await lost
  t.is(await client.request('x'), 'x')
  t.is(server.stats().connections.total, 2)
})

test('heartbeats keep an idle connection alive and detect a silent peer', async (t) => {
  const { port, server } = await startServer(t, { heartbeatInterval: 100 }, (s) => s.route('x', () => 'x'))
  const client = newClient(t, port, { heartbeatInterval: 100 })
  t.is(await client.request('x'), 'x')
  // While idle, heartbeats keep arriving at the server (each is a 24-byte frame).
  const before = server.stats().bytesIn
  const deadline = Date.now() + 5000
  while (server.stats().bytesIn < before + 48 && Date.now() < deadline) await delay(20)
  t.true(server.stats().bytesIn >= before + 48, 'the idle client sent heartbeats')
  t.true(client.connected)
  // A server that negotiates heartbeats and then falls silent.
  const mute = createServer((socket: Socket) => {
    const d = new FrameDecoder()
    socket.on('data', (chunk) => {
      for (const f of d.push(chunk)) {
        if (f.type === MessageType.Handshake) {
          socket.write(encodeFrame({ type: MessageType.Response, sequence: f.sequence, payload: buildHandshake(Capability.Heartbeat) }))
        }
      }
    })
    socket.on('error', () => {})
  })
  mute.listen(0, '127.0.0.1')
  await once(mute, 'listening')
  t.teardown(() => mute.close())
  const victim = newClient(t, (mute.address() as { port: number }).port, { heartbeatInterval: 30 })
  await victim.connect()
  const [err] = (await once(victim, 'disconnect')) as [PolyCallError]
  t.is(err.code, ErrorCode.CONNECTION_LOST)
  t.regex(err.message, /peer sent nothing/)
})

test('sequence numbers wrap past 0xffffffff (skipping 0, kept for connection notices) and keep correlating', async (t) => {
  const seen: number[] = []
  const { port } = await startServer(t, {}, (s) => s.route('n/:i', (ctx) => ((seen.push(ctx.sequence), Number(ctx.params.i)))))
  const client = newClient(t, port, { sequenceStart: 0xfffffffd })
  const out = await Promise.all(Array.from({ length: 6 }, (_, i) => client.request(`n/${i}`)))
  t.deepEqual(out, [0, 1, 2, 3, 4, 5])
  t.true(seen.includes(0xffffffff))
  t.false(seen.includes(0))
  t.true(seen.includes(1))
})

test('our client against a legacy server: JSON payloads, one request at a time, unknown replies as events', async (t) => {
  const legacy = createServer((socket: Socket) => {
    const d = new FrameDecoder()
    let inFlight = 0
    let maxInFlight = 0
    socket.on('data', (chunk) => {
      for (const f of d.push(chunk)) {
        if (f.type === MessageType.Handshake) {
          // node-polycall never parses its own reply; answer RESPONSE with an empty payload.
          socket.write(encodeFrame({ type: MessageType.Response, sequence: f.sequence }))
        } else if (f.type === MessageType.Command) {
          const { command, data } = JSON.parse(f.payload.toString()) as { command: string; data: unknown }
          inFlight++
          maxInFlight = Math.max(maxInFlight, inFlight)
          setTimeout(() => {
            inFlight--
            socket.write(encodeFrame({ type: MessageType.Response, sequence: f.sequence, payload: json({ command, data, maxInFlight }) }))
            socket.write(encodeFrame({ type: MessageType.Response, sequence: 999, payload: json('stray') }))
          }, 5)
        }
      }
    })
    socket.on('error', () => {})
  })
  legacy.listen(0, '127.0.0.1')
  await once(legacy, 'listening')
  t.teardown(() => legacy.close())
  const client = newClient(t, (legacy.address() as { port: number }).port)
  const strays: { sequence: number }[] = []
  client.on('unsolicited', (f) => strays.push(f))
  await client.connect()
  t.true(client.stats().legacy)
  const results = (await Promise.all([1, 2, 3].map((i) => client.request('echo', { i })))) as { data: { i: number }; maxInFlight: number }[]
  t.deepEqual(
    results.map((r) => r.data.i),
    [1, 2, 3],
  )
  t.true(results.every((r) => r.maxInFlight === 1), 'never more than one request outstanding')
  while (strays.length < 3) await once(client, 'unsolicited')
  t.true(strays.every((f) => f.sequence === 999))
})
