// The client against peers that answer with the wrong frames (PROTOCOL.md §4-§5,
// PROTOCOL-PCR1.md §2): only a RESPONSE or ERROR echoing a step's sequence (or, for the hello
// only, a HANDSHAKE carrying the magic) completes a setup step; only the frame type that answers
// a request answers it. An echo server like the C library's demo never authenticates anybody.
import test, { type ExecutionContext } from 'ava'
import { Packr } from 'msgpackr'
import { once } from 'node:events'
import { createServer, type Server, type Socket } from 'node:net'
import {
  Capability,
  ErrorCode,
  FrameDecoder,
  MessageType,
  PolyCallClient,
  buildHandshake,
  encodeFrame,
  type ClientOptions,
  type Frame,
  type PolyCallError,
} from '../../ts/index.js'
import { SocketPeer } from '../helpers/peer.js'
import { CONTROL, CONTROL_REPLY, REQUEST, RESPONSE, pcr1Frame, pcr1Server } from '../helpers/pcr1.js'

const json = (v: unknown) => Buffer.from(JSON.stringify(v))
const OFFER = Capability.Msgpack | Capability.Cancel
const packr = new Packr({ useRecords: false })

/** The server end of one accepted connection, as a queue of decoded frames. */
class ServerPeer extends SocketPeer<Frame> {
  readonly #decoder = new FrameDecoder()
  constructor(socket: Socket) {
    super(socket, 'frame')
  }
  protected decode(chunk: Buffer): Frame[] {
    return this.#decoder.push(chunk).map((f) => ({ ...f, payload: Buffer.from(f.payload) }))
  }
  send(type: MessageType, sequence: number, payload?: Uint8Array): void {
    this.socket.write(encodeFrame({ type, sequence, payload }))
  }
  /** Reads the next frame and checks its type. */
  async expect(t: ExecutionContext, type: MessageType): Promise<Frame> {
    const f = await this.next()
    t.is(f?.type, type)
    return f!
  }
}

async function listen(t: ExecutionContext, onSocket: (socket: Socket) => void): Promise<number> {
  const sockets = new Set<Socket>()
  const server: Server = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    onSocket(socket)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((r) => server.close(() => r()))
  })
  return (server.address() as { port: number }).port
}

/** A raw server that runs `script` against each connection. */
function scripted(t: ExecutionContext, script: (peer: ServerPeer) => Promise<void>): Promise<number> {
  return listen(t, (socket) => {
    script(new ServerPeer(socket)).catch((e: unknown) => t.fail(`peer script: ${String(e)}`))
  })
}

/** The C library's demo executable: every byte comes back unchanged (PROTOCOL.md §10.19). */
const echoServer = (t: ExecutionContext) => listen(t, (socket) => socket.pipe(socket))

function client(t: ExecutionContext, port: number, options: Partial<ClientOptions> = {}): PolyCallClient {
  const c = new PolyCallClient({ host: '127.0.0.1', port, reconnect: false, ...options })
  t.teardown(() => c.close({ timeout: 1000 }))
  return c
}

const code = async (t: ExecutionContext, p: Promise<unknown>) => ((await t.throwsAsync(p)) as PolyCallError).code

test('an echo server: the hello completes as a legacy peer, but authenticate() fails at once with PROTOCOL', async (t) => {
  const port = await echoServer(t)
  const c = client(t, port)
  await c.connect({ timeout: 2000 })
  t.true(c.connected)
  t.is(c.stats().capabilities, 0, 'an echoed hello carries no capability bits: a legacy peer')
  const started = performance.now()
  t.is(await code(t, c.authenticate({ username: 'ada', password: 'wrong' }, { timeout: 5000 })), ErrorCode.PROTOCOL)
  const took = performance.now() - started
  t.true(took < 1000, `refused in ${took.toFixed(0)} ms, not at the timeout`)
  // The echoed COMMAND answers nothing either: the call runs into its own timeout.
  t.is(await code(t, c.request('status', undefined, { timeout: 100 })), ErrorCode.TIMEOUT)
})

test('an echo server with credentials set: connect() refuses with PROTOCOL and does not retry', async (t) => {
  const port = await echoServer(t)
  const c = client(t, port, { credentials: { username: 'ada', password: 's3cret' }, reconnect: { initialDelay: 10 } })
  let retries = 0
  c.on('reconnecting', () => retries++)
  t.is(await code(t, c.connect({ timeout: 5000 })), ErrorCode.PROTOCOL)
  t.false(c.connected)
  t.is(retries, 0, 'a protocol failure is permanent')
})

test('hello: HEARTBEAT, COMMAND and AUTH frames echoing its sequence are ignored; the ERROR after them refuses', async (t) => {
  for (const type of [MessageType.Heartbeat, MessageType.Command, MessageType.Auth]) {
    const port = await scripted(t, async (peer) => {
      const hello = await peer.expect(t, MessageType.Handshake)
      peer.send(type, hello.sequence, json({ not: 'an answer' }))
      peer.send(MessageType.Error, hello.sequence, Buffer.from('ERR_POLYCALL_BUSY: go away'))
    })
    t.is(await code(t, client(t, port).connect({ timeout: 2000 })), ErrorCode.BUSY, `after a ${MessageType[type]}`)
  }
})

test('hello: non-answers first, then the real RESPONSE; its capabilities are the ones negotiated', async (t) => {
  const port = await scripted(t, async (peer) => {
    const hello = await peer.expect(t, MessageType.Handshake)
    peer.send(MessageType.Heartbeat, hello.sequence, Buffer.alloc(8))
    peer.send(MessageType.Command, hello.sequence, json({ command: 'x' }))
    peer.send(MessageType.Response, hello.sequence, buildHandshake(OFFER, 7))
    const cmd = await peer.expect(t, MessageType.Command)
    peer.send(MessageType.Response, cmd.sequence, packr.pack(true))
  })
  const c = client(t, port)
  await c.connect({ timeout: 2000 })
  t.is(c.stats().capabilities, OFFER)
  t.true(await c.request('x'))
})

test('hello: a HANDSHAKE without the magic, or an empty one, is a protocol error, not a completion', async (t) => {
  for (const payload of [Buffer.from('504c4300', 'hex'), Buffer.alloc(0), Buffer.from('43', 'hex')]) {
    const port = await scripted(t, async (peer) => {
      const hello = await peer.expect(t, MessageType.Handshake)
      peer.send(MessageType.Handshake, hello.sequence, payload)
    })
    t.is(await code(t, client(t, port).connect({ timeout: 2000 })), ErrorCode.PROTOCOL, `HANDSHAKE ${payload.toString('hex') || '(empty)'}`)
  }
})

test('hello: a HANDSHAKE with the magic completes it (an echo peer, §4), the 4-byte form too', async (t) => {
  for (const payload of [Buffer.from('434c5000', 'hex'), Buffer.from('434c500001000000', 'hex')]) {
    const port = await scripted(t, async (peer) => {
      const hello = await peer.expect(t, MessageType.Handshake)
      peer.send(MessageType.Handshake, hello.sequence, payload)
    })
    const c = client(t, port)
    await c.connect({ timeout: 2000 })
    t.is(c.stats().capabilities, 0)
  }
})

test('AUTH: HEARTBEAT, COMMAND and HANDSHAKE echoing its sequence are ignored; the ERROR after them refuses', async (t) => {
  for (const type of [MessageType.Heartbeat, MessageType.Command, MessageType.Handshake]) {
    const port = await scripted(t, async (peer) => {
      const hello = await peer.expect(t, MessageType.Handshake)
      peer.send(MessageType.Response, hello.sequence, buildHandshake(OFFER))
      const auth = await peer.expect(t, MessageType.Auth)
      peer.send(type, auth.sequence, type === MessageType.Handshake ? buildHandshake(0) : Buffer.alloc(8))
      peer.send(MessageType.Error, auth.sequence, packr.pack({ code: ErrorCode.UNAUTHENTICATED, message: 'no' }))
    })
    const c = client(t, port)
    await c.connect({ timeout: 2000 })
    t.is(await code(t, c.authenticate({ username: 'ada' }, { timeout: 2000 })), ErrorCode.UNAUTHENTICATED, `after a ${MessageType[type]}`)
  }
})

test('AUTH: an AUTH frame coming back is a protocol error at once; a RESPONSE after ignored frames authenticates', async (t) => {
  const port = await scripted(t, async (peer) => {
    const hello = await peer.expect(t, MessageType.Handshake)
    peer.send(MessageType.Response, hello.sequence, buildHandshake(OFFER))
    const first = await peer.expect(t, MessageType.Auth)
    peer.send(MessageType.Auth, first.sequence, first.payload)
    const second = await peer.expect(t, MessageType.Auth)
    peer.send(MessageType.Heartbeat, second.sequence, Buffer.alloc(8))
    peer.send(MessageType.Response, second.sequence, json({ authenticated: true }))
  })
  const c = client(t, port)
  await c.connect({ timeout: 2000 })
  t.is(await code(t, c.authenticate({ username: 'ada' }, { timeout: 2000 })), ErrorCode.PROTOCOL)
  await c.authenticate({ username: 'ada' }, { timeout: 2000 })
  t.true(c.connected)
})

test('AUTH during connect(): an echoed AUTH refuses the connection with PROTOCOL', async (t) => {
  const port = await scripted(t, async (peer) => {
    const hello = await peer.expect(t, MessageType.Handshake)
    peer.send(MessageType.Response, hello.sequence, buildHandshake(OFFER))
    const auth = await peer.expect(t, MessageType.Auth)
    peer.send(MessageType.Auth, auth.sequence, auth.payload)
  })
  const c = client(t, port, { credentials: { username: 'ada', password: 'x' } })
  t.is(await code(t, c.request('x', undefined, { timeout: 2000 })), ErrorCode.PROTOCOL)
})

test('PCR1: a REQUEST is answered only by a RESPONSE, a CONTROL only by a CONTROL_REPLY', async (t) => {
  const { port } = await pcr1Server(t, (f, socket) => {
    if (f.type === REQUEST) {
      // Wrong type first, with an ok body that would resolve the call if it were taken.
      socket.write(pcr1Frame(CONTROL_REPLY, f.corr, { ok: true, data: { pong: true } }))
      socket.write(pcr1Frame(REQUEST, f.corr, f.body))
      socket.write(pcr1Frame(RESPONSE, f.corr, { ok: false, error: { code: 'item.unknown', message: 'no such item' } }))
    } else if (f.type === CONTROL) {
      socket.write(pcr1Frame(RESPONSE, f.corr, { ok: true, output: 'not a control reply' }))
      socket.write(pcr1Frame(CONTROL, f.corr, f.body))
      socket.write(pcr1Frame(CONTROL_REPLY, f.corr, { ok: true, data: { pong: true, abi: 1 } }))
    }
  })
  const c = client(t, port, { protocol: 'pcr1' })
  t.is(await code(t, c.request('inventory.get', { item_id: 'nope' }, { timeout: 2000 })), 'item.unknown')
  t.deepEqual(await c.control('ping', { timeout: 2000 }), { pong: true, abi: 1 })
  t.true(c.connected)
})

test('PCR1: an echo peer answers nothing; calls run into their own timeout', async (t) => {
  const port = await echoServer(t)
  const c = client(t, port, { protocol: 'pcr1' })
  t.is(await code(t, c.request('debug.echo', { a: 1 }, { timeout: 100 })), ErrorCode.TIMEOUT)
  t.is(await code(t, c.control('ping', { timeout: 100 })), ErrorCode.TIMEOUT)
})
