// Every resource a peer can make the server hold has a bound: deadlines, PCR1 reply slots, the
// write buffer, frame time. Servers whose memory is measured run in their own process.
import test from 'ava'
import { once } from 'node:events'
import { Capability, ErrorCode, MessageType, PolyCallServer, buildHandshake, encodeFrame, type ServerOptions } from '../../ts/index.js'
import { CONTROL, CONTROL_REPLY, REQUEST, RESPONSE, Pcr1Peer, pcr1Frame } from '../helpers/pcr1.js'
import { startChild } from './fixtures/child.js'
import { V1Peer, commandFrame, errorCode, frameCounter, open, settled, unpack, until, writeAll } from './fixtures/peers.js'

const MiB = 1024 * 1024

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

/** A v1 handshake asking for msgpack, written raw. */
const hello = () => encodeFrame({ type: MessageType.Handshake, sequence: 1, payload: buildHandshake(Capability.Msgpack) })

test('finding 4: a peer-chosen deadline is clamped to maxDeadline', async (t) => {
  let seen = 0
  const { port } = await serve(t, { maxDeadline: 200 }, (s) =>
    s.route('wait', (ctx) => {
      seen = ctx.deadline - Date.now()
      return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)))
    }),
  )
  const peer = await V1Peer.connect(t, port)
  await peer.hello()
  const sent = performance.now()
  const reply = await peer.call(2, 'wait', null, 1e12)
  const after = performance.now() - sent
  t.is(errorCode(reply), ErrorCode.DEADLINE_EXCEEDED)
  // ctx.deadline is wall-clock ms computed from the monotonic start: allow a few ms of skew.
  t.true(seen <= 205 && seen > 0, `ctx.deadline ${seen} ms ahead`)
  t.true(after >= 150 && after < 2000, `answered after ${after} ms`)
})

test.serial('finding 4: a far-future-deadline flood leaves the heap of a 64 MiB server where it was', async (t) => {
  const child = await startChild(t, {}, 64)
  const socket = await open(t, child.port)
  const replies = frameCounter(socket)
  socket.write(hello())
  await replies.until(1)
  // Warm up (code, pools, tables) with ordinary deadlines, then take the baseline.
  const warm: Buffer[] = []
  for (let i = 0; i < 2000; i++) warm.push(commandFrame(2 + i, 'svc.ping', null, 5000))
  await writeAll(socket, Buffer.concat(warm))
  await replies.until(2001)
  const before = await child.stats()
  // Every request carries its own far-future deadline: 1e12 ms (31 years) plus 4 ms per request.
  const n = 80_000
  const batch = 10_000
  for (let start = 0; start < n; start += batch) {
    const frames: Buffer[] = []
    for (let i = start; i < start + batch; i++) frames.push(commandFrame(10_000 + i, 'svc.ping', null, 1e12 + 4 * i))
    await writeAll(socket, Buffer.concat(frames))
  }
  await replies.until(2001 + n, 60_000)
  const after = await child.stats()
  const grown = after.heapUsed - before.heapUsed
  t.log(`heap ${(before.heapUsed / MiB).toFixed(1)} -> ${(after.heapUsed / MiB).toFixed(1)} MiB after ${n} far-future deadlines`)
  t.true(grown < 4 * MiB, `the heap grew ${(grown / MiB).toFixed(1)} MiB`)
  t.is(after.stats.requests.succeeded, 2000 + n)
  t.is(child.process.exitCode, null)
})

test.serial('finding 5: PCR1 head-of-line flood: slots, control frames and refusals count against maxInFlight; reading pauses', async (t) => {
  const maxInFlight = 64
  const child = await startChild(t, { protocol: 'pcr1', maxInFlight }, 64)
  const socket = await open(t, child.port)
  const decoded: { type: number; corr: number }[] = []
  let buffered = Buffer.alloc(0)
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk])
    while (buffered.length >= 16 && buffered.length >= 16 + buffered.readUInt32BE(12)) {
      decoded.push({ type: buffered.readUInt8(4), corr: buffered.readUInt32BE(8) })
      buffered = buffered.subarray(16 + buffered.readUInt32BE(12))
    }
  })
  const before = await child.stats()
  // One slow request, then a flood of pings, requests and frames a client may not send.
  const slow = pcr1Frame(REQUEST, 1, { service: 'svc', operation: 'gate', deadline_ms: 60_000, input: null })
  const flood: Buffer[] = [slow]
  const n = 30_000
  for (let i = 0; i < n; i++) {
    const corr = 2 + i
    if (i % 3 === 0) flood.push(pcr1Frame(CONTROL, corr, { action: 'ping' }))
    else if (i % 3 === 1) flood.push(pcr1Frame(REQUEST, corr, { service: 'svc', operation: 'ping', deadline_ms: 1000, input: null }))
    else flood.push(pcr1Frame(RESPONSE, corr, { ok: true, output: null }))
  }
  const bytes = Buffer.concat(flood)
  socket.write(bytes)
  // The server stops reading: what it took settles far below what was sent.
  const held = await settled(
    () => child.stats(),
    (a, b) => a.stats.bytesIn === b.stats.bytesIn,
  )
  const grown = held.heapUsed - before.heapUsed
  t.log(`read ${held.stats.bytesIn} of ${bytes.length} bytes; heap grew ${(grown / 1024).toFixed(0)} KiB`)
  t.true(held.stats.bytesIn < 512 * 1024, `read ${held.stats.bytesIn} bytes while the head was slow`)
  t.true(grown < 2 * MiB, `the heap grew ${(grown / MiB).toFixed(1)} MiB`)
  t.is(decoded.length, 0, 'nothing is answered before the head of the line')
  // Releasing the head lets everything through, answered in order, nothing dropped.
  await child.release()
  await until(() => decoded.length === n + 1, 30_000)
  t.deepEqual(
    decoded.slice(0, 4).map((f) => f.corr),
    [1, 2, 3, 4],
  )
  t.true(decoded.every((f, i) => f.corr === i + 1))
  t.true(decoded.filter((f) => f.type === CONTROL_REPLY).length > 0)
})

test.serial('finding 6: a peer that never reads is held to maxWriteBuffer and closed after drainTimeout', async (t) => {
  const maxWriteBuffer = 2 * MiB
  const drainTimeout = 400
  const child = await startChild(t, { maxWriteBuffer, drainTimeout, bigBytes: 256 * 1024 }, 256)
  const socket = await open(t, child.port)
  socket.write(hello())
  await once(socket, 'data')
  const before = await child.stats()
  // 1,000 COMMANDs in one write (about 20 KiB) asking for 256 KiB each: 256 MiB of replies.
  const frames: Buffer[] = []
  for (let i = 0; i < 1000; i++) frames.push(commandFrame(2 + i, 'svc.big'))
  socket.pause()
  const sent = performance.now()
  socket.write(Buffer.concat(frames))
  // Sample what the server holds until it drops the connection (bounded: it must).
  let closedAfter: number | undefined
  let queued = 0
  let rss = 0
  let stats = before
  while (performance.now() - sent < drainTimeout + 5000) {
    stats = await child.stats()
    queued = Math.max(queued, stats.stats.bytesQueued)
    rss = Math.max(rss, stats.rss - before.rss)
    if (stats.stats.connections.current === 0) {
      closedAfter = performance.now() - sent
      break
    }
  }
  t.log(`queued at most ${(queued / MiB).toFixed(2)} MiB, RSS +${(rss / MiB).toFixed(1)} MiB, closed after ${closedAfter?.toFixed(0)} ms`)
  t.true(queued > 0 && queued <= maxWriteBuffer + 512 * 1024, `queued ${queued} bytes`)
  t.true(rss < 64 * MiB, `RSS grew ${(rss / MiB).toFixed(1)} MiB`)
  t.true(closedAfter !== undefined && closedAfter < drainTimeout + 3000, `closed after ${closedAfter} ms`)
  t.true(stats.stats.requests.succeeded < 200, `${stats.stats.requests.succeeded} replies produced for a peer that never read`)
  t.is(stats.stats.connections.current, 0)
})

test('finding 6: a slow reader gets every reply in order; frames decoded past the limit wait for the drain', async (t) => {
  const { port, server } = await serve(t, { maxWriteBuffer: 256 * 1024 }, (s) => s.route('big', () => Buffer.alloc(64 * 1024, 1)))
  const socket = await open(t, port)
  const replies = frameCounter(socket)
  socket.write(hello())
  await replies.until(1)
  const frames: Buffer[] = []
  for (let i = 0; i < 200; i++) frames.push(commandFrame(2 + i, 'big'))
  socket.pause()
  socket.write(Buffer.concat(frames))
  let peak = 0
  await until(() => {
    peak = Math.max(peak, server.stats().bytesQueued)
    return server.stats().requests.succeeded > 0
  })
  // Read in bursts, measuring what the server holds in between.
  while (replies.count < 201) {
    peak = Math.max(peak, server.stats().bytesQueued)
    socket.resume()
    await new Promise((r) => setImmediate(r))
    socket.pause()
    await new Promise((r) => setTimeout(r, 5))
  }
  socket.resume()
  t.deepEqual(
    replies.sequences,
    Array.from({ length: 201 }, (_, i) => i + 1),
  )
  t.true(peak <= 256 * 1024 + 128 * 1024, `the server queued ${peak} bytes`)
})

test('finding 6: synchronous handlers count toward maxInFlight until their replies are written', async (t) => {
  const maxInFlight = 8
  const batches: number[] = []
  let batch = 0
  const { port } = await serve(t, { maxInFlight }, (s) =>
    s.route('sync', () => {
      if (batch++ === 0) process.nextTick(() => (batches.push(batch), (batch = 0)))
      return 1
    }),
  )
  const socket = await open(t, port)
  const replies = frameCounter(socket)
  socket.write(hello())
  await replies.until(1)
  const frames: Buffer[] = []
  for (let i = 0; i < 100; i++) frames.push(commandFrame(2 + i, 'sync'))
  socket.write(Buffer.concat(frames))
  await replies.until(101)
  t.is(
    batches.reduce((a, b) => a + b, 0),
    100,
  )
  t.true(Math.max(...batches) <= maxInFlight, `handlers ran in batches of ${batches.join(', ')}`)
})

test('finding 7: a dribbler (one byte at a time) is closed after frameTimeout, independent of stallTimeout', async (t) => {
  const frameTimeout = 300
  const { port, server } = await serve(t, { frameTimeout, stallTimeout: 10_000, maxConnections: 4 }, (s) => s.route('x', () => 'x'))
  const peers = await Promise.all([0, 1, 2].map(() => V1Peer.connect(t, port)))
  for (const p of peers) await p.hello()
  const frame = commandFrame(2, 'x')
  const started = performance.now()
  let i = 0
  const drip = setInterval(() => {
    for (const p of peers) if (!p.socket.destroyed) p.socket.write(frame.subarray(i % frame.length, (i % frame.length) + 1))
    i++
  }, 25)
  t.teardown(() => clearInterval(drip))
  const notices = await Promise.all(peers.map((p) => p.next(5000)))
  for (const n of notices) t.is(errorCode(n), ErrorCode.PROTOCOL)
  const closed = await Promise.all(peers.map(async (p) => (await p.closedAt) - started))
  for (const after of closed) t.true(after >= frameTimeout - 50 && after < frameTimeout + 2500, `closed after ${after} ms`)
  clearInterval(drip)
  // The slots are free again: a whole frame written at once is served.
  await until(() => server.stats().connections.current === 0)
  const fresh = await V1Peer.connect(t, port)
  await fresh.hello()
  t.is(unpack((await fresh.call(2, 'x'))!.payload), 'x')
})

test('finding 7: frameTimeout holds on PCR1 too; a large frame that arrives in time is served', async (t) => {
  const frameTimeout = 1000
  const { port } = await serve(t, { protocol: 'pcr1', frameTimeout, stallTimeout: 0 }, (s) => s.route('svc.echo', (ctx) => ctx.data))
  const big = pcr1Frame(REQUEST, 7, { service: 'svc', operation: 'echo', deadline_ms: 5000, input: 'y'.repeat(600_000) })
  const fast = await Pcr1Peer.connect(t, port)
  for (let at = 0; at < big.length; at += 64 * 1024) fast.write(big.subarray(at, at + 64 * 1024))
  const echoed = (await fast.next())!
  t.is(echoed.corr, 7)
  t.is((echoed.body as { output: string }).output.length, 600_000)
  const slow = await Pcr1Peer.connect(t, port)
  const started = performance.now()
  let at = 0
  const drip = setInterval(() => slow.write(big.subarray(at, ++at)), 25)
  t.teardown(() => clearInterval(drip))
  const notice = (await slow.next(5000))!
  t.is(notice.corr, 0)
  t.is((notice.body as { error: { code: string } }).error.code, 'frame.invalid')
  await slow.closed
  clearInterval(drip)
  const after = performance.now() - started
  t.true(after >= frameTimeout - 50 && after < frameTimeout + 2500, `closed after ${after} ms`)
})
