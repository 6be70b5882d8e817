// Several frames in one write, so that one socket chunk carries them: a payload is read within
// its own frame and never into the next one, frames after a pause part-way through a chunk wait
// in order, and replies of every kind (scalars, errors, maps, strays) next to each other arrive
// whole.
import test, { type ExecutionContext } from 'ava'
import { once } from 'node:events'
import { createServer, type Socket } from 'node:net'
import { pack, unpack } from 'msgpackr'
import { Capability, ErrorCode, FrameDecoder, MessageType, buildHandshake, checksum, encodeFrame, parseHandshake, type Frame } from '../ts/index.js'
import { RawPeer, newClient, startServer } from './helpers/net.js'

const command = (sequence: number, payload: Uint8Array) => encodeFrame({ type: MessageType.Command, sequence, payload })

/** A raw peer past the handshake, with msgpack payloads. */
async function msgpackPeer(t: ExecutionContext, port: number): Promise<RawPeer> {
  const peer = await RawPeer.connect(t, port)
  peer.send(MessageType.Handshake, 1, buildHandshake(Capability.Msgpack))
  const reply = (await peer.next()) as Frame
  t.is(reply.type, MessageType.Response)
  t.is(parseHandshake(reply.payload).flags & Capability.Msgpack, Capability.Msgpack)
  return peer
}

test('a COMMAND whose msgpack claims more bytes than its frame holds is refused, and the frame after it in the chunk is read on its own', async (t) => {
  const { port } = await startServer(t, {}, (s) => s.route('echo', (ctx) => ctx.data))
  const peer = await msgpackPeer(t, port)
  // [ "echo", bin 16 ] with only 3 of the 16 bytes: the next frame's header and payload would
  // complete it if the reader looked past the frame's end.
  const lying = Buffer.from([0x92, 0xa4, ...Buffer.from('echo'), 0xc4, 0x10, 1, 2, 3])
  const honest = pack(['echo', Buffer.from('0123456789abcdef')])
  // And a string that runs past its frame, then a map value that does.
  const lyingText = Buffer.from([0x92, 0xa4, ...Buffer.from('echo'), 0xa8, 0x41, 0x42])
  const lyingExt = Buffer.from([0x94, 0xa4, ...Buffer.from('echo'), 0x01, 0xc0, 0x81, 0xa1, 0x6b, 0xc4, 0x20, 9])
  peer.socket.write(
    Buffer.concat([command(2, lying), command(3, honest), command(4, lyingText), command(5, lyingExt), command(6, honest)]),
  )
  const replies: Frame[] = []
  for (let i = 0; i < 5; i++) replies.push((await peer.next()) as Frame)
  t.deepEqual(
    replies.map((f) => [f.sequence, f.type]),
    [
      [2, MessageType.Error],
      [3, MessageType.Response],
      [4, MessageType.Error],
      [5, MessageType.Error],
      [6, MessageType.Response],
    ],
  )
  for (const f of [replies[0]!, replies[2]!, replies[3]!]) {
    t.regex(f.payload.toString('latin1'), new RegExp(ErrorCode.BAD_REQUEST), `frame ${f.sequence} is a bad request`)
  }
  // The echo of the honest frames is exactly their 16 bytes, from their own frame.
  for (const f of [replies[1]!, replies[4]!]) t.deepEqual(Buffer.from(f.payload), pack(Buffer.from('0123456789abcdef')))
})

test('frames after reading paused part-way through a chunk wait for the resume and run in order, within maxInFlight', async (t) => {
  const maxInFlight = 3
  let running = 0
  let most = 0
  const order: number[] = []
  const { port } = await startServer(t, { maxInFlight }, (s) =>
    s.route('slow', async (ctx) => {
      const n = ctx.data as number
      running++
      most = Math.max(most, running)
      order.push(n)
      await new Promise((r) => setTimeout(r, 2))
      running--
      return n * 2
    }),
  )
  const peer = await msgpackPeer(t, port)
  const count = 40
  peer.socket.write(Buffer.concat(Array.from({ length: count }, (_, i) => command(10 + i, pack(['slow', i])))))
  const got = new Map<number, unknown>()
  for (let i = 0; i < count; i++) {
    const f = (await peer.next()) as Frame
    t.is(f.type, MessageType.Response, `reply ${f.sequence}`)
    got.set(f.sequence, unpack(f.payload))
  }
  t.is(got.size, count, 'every request was answered once')
  for (let i = 0; i < count; i++) t.is(got.get(10 + i), i * 2, `the answer to request ${i}`)
  t.deepEqual(order, Array.from({ length: count }, (_, i) => i), 'handlers started in arrival order')
  t.true(most <= maxInFlight, `at most ${maxInFlight} handlers ran at once (saw ${most})`)
})

test('replies of every kind in one chunk (a scalar, an ERROR, a stray, a map, bytes) each reach their call whole', async (t) => {
  const strays: Frame[] = []
  const raw = createServer((socket: Socket) => {
    const d = new FrameDecoder()
    const pending: Frame[] = []
    socket.on('data', (chunk) => {
      for (const f of d.push(chunk)) {
        if (f.type === MessageType.Handshake) {
          socket.write(encodeFrame({ type: MessageType.Response, sequence: f.sequence, payload: buildHandshake(Capability.Msgpack, 64) }))
          continue
        }
        pending.push({ ...f, payload: Buffer.from(f.payload) })
        if (pending.length < 4) continue
        // All four answers, and a stray, in one write.
        const [a, b, c, d2] = pending.splice(0)
        socket.write(
          Buffer.concat([
            encodeFrame({ type: MessageType.Response, sequence: a!.sequence, payload: pack(7) }),
            encodeFrame({ type: MessageType.Error, sequence: b!.sequence, payload: pack({ code: ErrorCode.NOT_FOUND, message: 'no such thing' }) }),
            encodeFrame({ type: MessageType.Response, sequence: 4242, payload: pack('stray') }),
            encodeFrame({ type: MessageType.Response, sequence: c!.sequence, payload: pack({ deep: [1, 2, 3] }) }),
            encodeFrame({ type: MessageType.Response, sequence: d2!.sequence, payload: pack(Buffer.from('bytes')) }),
          ]),
        )
      }
    })
    socket.on('error', () => {})
  })
  raw.listen(0, '127.0.0.1')
  await once(raw, 'listening')
  t.teardown(() => raw.close())
  const client = newClient(t, (raw.address() as { port: number }).port)
  client.on('unsolicited', (f) => strays.push(f as Frame))
  await client.connect()
  const results = await Promise.allSettled([client.request('a'), client.request('b'), client.request('c'), client.request('d')])
  t.deepEqual(results[0], { status: 'fulfilled', value: 7 })
  t.is(results[1].status, 'rejected')
  t.like((results[1] as PromiseRejectedResult).reason, { code: ErrorCode.NOT_FOUND, message: 'no such thing', remote: true })
  t.deepEqual(results[2], { status: 'fulfilled', value: { deep: [1, 2, 3] } })
  t.is(results[3].status, 'fulfilled')
  t.deepEqual(Buffer.from((results[3] as PromiseFulfilledResult<Uint8Array>).value), Buffer.from('bytes'))
  t.is(strays.length, 1)
  const stray = strays[0]!
  t.like(stray, { version: 1, type: MessageType.Response, sequence: 4242, checksum: checksum(pack('stray')) })
  t.deepEqual(Buffer.from(stray.payload), pack('stray'))
})
