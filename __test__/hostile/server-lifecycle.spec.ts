// close() and destroy() settle whatever state the server's sockets are in.
import test from 'ava'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { connect } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { ErrorCode, PolyCallClient, PolyCallServer, type PolyCallError, type ServerOptions } from '../../ts/index.js'
import { V1Peer, commandFrame, open, unpack, until } from './fixtures/peers.js'

const pem = (name: string) => readFileSync(new URL(`../fixtures/tls/${name}`, import.meta.url))
const ca = pem('ca.crt')
const serverTls = { key: pem('server.key'), cert: pem('server.crt') }

/** Resolves with how long `p` took, or with Infinity when it did not settle within `ms`. */
async function timed(p: Promise<unknown>, ms: number): Promise<number> {
  const start = performance.now()
  let timer: NodeJS.Timeout | undefined
  const settledIn = await Promise.race([
    p.then(() => performance.now() - start),
    new Promise<number>((r) => (timer = setTimeout(() => r(Infinity), ms))),
  ])
  clearTimeout(timer)
  return settledIn
}

async function listen(t: import('ava').ExecutionContext, options: ServerOptions, setup?: (s: PolyCallServer) => void) {
  const server = new PolyCallServer(options)
  setup?.(server)
  const { port } = await server.listen(0, '127.0.0.1')
  t.teardown(async () => {
    server.destroy()
    await server.close()
  })
  return { server, port }
}

/** A client that rejects the server's certificate (it trusts no CA the server's chain ends in). */
async function rejectingClient(t: import('ava').ExecutionContext, port: number): Promise<void> {
  const client = new PolyCallClient({ host: '127.0.0.1', port, tls: true, reconnect: false })
  t.teardown(async () => {
    client.destroy()
    await client.close()
  })
  const err = (await t.throwsAsync(client.connect())) as PolyCallError
  t.is(err.code, ErrorCode.CONNECT_FAILED)
}

test('finding 11: close() settles after a client failed the TLS handshake (it rejected the certificate)', async (t) => {
  const { server, port } = await listen(t, { tls: serverTls })
  await rejectingClient(t, port)
  await rejectingClient(t, port)
  const took = await timed(server.close(), 3000)
  t.log(`close() settled in ${took.toFixed(1)} ms`)
  t.true(took < 3000, 'close() settled')
})

test('finding 11: destroy() settles too, and with a timeout close() does', async (t) => {
  const a = await listen(t, { tls: serverTls })
  await rejectingClient(t, a.port)
  const closed = once(a.server, 'close')
  a.server.destroy()
  t.true((await timed(closed, 3000)) < 3000, 'destroy() closed the server')

  const b = await listen(t, { tls: serverTls })
  await rejectingClient(t, b.port)
  t.true((await timed(b.server.close({ timeout: 100 }), 3000)) < 3000, 'close({ timeout }) settled')
})

test('finding 11: a TLS connection that never sends a ClientHello is closed by handshakeTimeout and by close()', async (t) => {
  const { server, port } = await listen(t, { tls: serverTls, handshakeTimeout: 300 })
  // A raw TCP peer that says nothing.
  const mute = await open(t, port)
  const started = performance.now()
  await once(mute, 'close')
  const after = performance.now() - started
  t.true(after < 300 + 2500, `closed after ${after} ms`)
  // Another one, then close(): it does not wait for the handshake.
  await open(t, port)
  t.true((await timed(server.close(), 3000)) < 1000, 'close() settled at once')
})

test('TLS connections before their handshake count against maxConnections', async (t) => {
  const { server, port } = await listen(t, { tls: serverTls, maxConnections: 2, handshakeTimeout: 5000 }, (s) => s.route('x', () => 'x'))
  const mutes = await Promise.all([0, 1].map(() => open(t, port)))
  const third = connect({ port, host: '127.0.0.1' })
  third.on('error', () => {})
  await once(third, 'close')
  t.true(server.stats().connections.rejected >= 1)
  await Promise.all(
    mutes.map((m) => {
      const closed = once(m, 'close')
      m.destroy()
      return closed
    }),
  )
  // A TLS client gets in once the mute ones are gone (the server may notice a moment later).
  let served = false
  for (let attempt = 0; attempt < 20 && !served; attempt++) {
    const socket = tlsConnect({ port, host: '127.0.0.1', ca, servername: 'localhost' })
    socket.on('error', () => {})
    const closed = new Promise<void>((r) => socket.once('close', () => r()))
    served = await new Promise<boolean>((resolve) => {
      socket.once('secureConnect', () => resolve(true))
      socket.once('close', () => resolve(false))
    })
    socket.destroy()
    await closed
  }
  t.true(served)
})

test('close() settles when a peer never reads its replies and never closes its side', async (t) => {
  const { server, port } = await listen(t, { drainTimeout: 300 }, (s) => s.route('big', () => Buffer.alloc(256 * 1024)))
  const peer = await V1Peer.connect(t, port)
  await peer.hello()
  peer.socket.pause()
  const frames: Buffer[] = []
  for (let i = 0; i < 100; i++) frames.push(commandFrame(2 + i, 'big'))
  peer.socket.write(Buffer.concat(frames))
  await until(() => server.stats().requests.succeeded > 0)
  const took = await timed(server.close(), 4000)
  t.log(`close() settled in ${took.toFixed(0)} ms`)
  t.true(took < 300 + 3000, `close() settled in ${took} ms`)
})

test('close() settles when a reading peer never closes its side after the server ended', async (t) => {
  const { server, port } = await listen(t, { drainTimeout: 300 })
  // allowHalfOpen: the peer keeps its side open after the server's FIN.
  const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true })
  socket.on('error', () => {})
  t.teardown(() => socket.destroy())
  await once(socket, 'connect')
  socket.resume()
  await until(() => server.stats().connections.current === 1)
  const took = await timed(server.close(), 4000)
  t.true(took < 300 + 3000, `close() settled in ${took} ms`)
})

test('a TLS peer that half-closes after its request still gets the reply', async (t) => {
  const { port } = await listen(t, { tls: serverTls }, (s) => s.route('late', () => new Promise((r) => setTimeout(() => r('late'), 50))))
  const peer = await V1Peer.connect(t, port, { ca, allowHalfOpen: true })
  await peer.hello()
  peer.socket.end(commandFrame(2, 'late'))
  const reply = await peer.next()
  t.is(reply?.sequence, 2)
  t.is(unpack(reply!.payload), 'late')
  await peer.closed
})

test('a peer that pipelines past maxInFlight and half-closes in the same write gets every reply', async (t) => {
  const { port } = await listen(t, { maxInFlight: 2 }, (s) => s.route('slow', (ctx) => new Promise((r) => setTimeout(() => r(ctx.data), 5))))
  const peer = await V1Peer.connect(t, port, undefined, true)
  await peer.hello()
  const frames: Buffer[] = []
  for (let i = 0; i < 20; i++) frames.push(commandFrame(2 + i, 'slow', i))
  peer.socket.end(Buffer.concat(frames))
  const replies = []
  for (let i = 0; i < 20; i++) replies.push(await peer.reply())
  t.deepEqual(
    replies.map((f) => f?.sequence),
    Array.from({ length: 20 }, (_, i) => 2 + i),
  )
  t.deepEqual(
    replies.map((f) => unpack(f!.payload)),
    Array.from({ length: 20 }, (_, i) => i),
  )
  await peer.closed
})
