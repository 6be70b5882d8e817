// PCR1 extensions over real sockets on loopback: the `polycall.extensions` offer a polycall client
// sends after connecting, idempotency keys answered from the record after a lost RESPONSE (also
// for an error outcome, and while the first run is still going), trace context, and what peers
// other than polycall see (the C runtime's `control.unknown`, a peer that never answers, a
// server without idempotency records, a `legacy: true` client).
import test, { type ExecutionContext } from 'ava'
import { once } from 'node:events'
import { connect, createServer, type Server, type Socket } from 'node:net'
import {
  Capability,
  ErrorCode,
  PolyCallClient,
  PolyCallError,
  PolyCallServer,
  type ClientOptions,
  type RequestContext,
  type ServerOptions,
} from '../ts/index.js'
import { CONTROL, CONTROL_REPLY, Pcr1Peer, Pcr1Reader, REQUEST, RESPONSE, pcr1Frame, pcr1Server, type RawPcr1Frame } from './helpers/pcr1.js'

const BOTH = Capability.IdempotencyKeys | Capability.TraceContext
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
const PLAIN_KEYS = ['deadline_ms', 'input', 'operation', 'service']
const OFFER = { action: 'polycall.extensions', offer: ['idempotency_key', 'traceparent'] }

interface Counted {
  server: PolyCallServer
  port: number
  runs: Map<string, number>
  keys: (string | undefined)[]
  traces: (string | undefined)[]
  /** Set while a `shop.slow` run waits: resolving it lets the run finish. */
  release: (() => void) | undefined
  running: Promise<void>
}

/** A PCR1 server whose `shop.*` handlers count their runs per `id`. */
async function counted(t: ExecutionContext, options: ServerOptions = {}): Promise<Counted> {
  const server = new PolyCallServer({ protocol: 'pcr1', onError: () => {}, ...options })
  let started!: () => void
  const c: Counted = { server, port: 0, runs: new Map(), keys: [], traces: [], release: undefined, running: new Promise((r) => (started = r)) }
  const count = (ctx: RequestContext) => {
    const id = String((ctx.data as { id: string }).id)
    c.runs.set(id, (c.runs.get(id) ?? 0) + 1)
    c.keys.push(ctx.idempotencyKey)
    c.traces.push(ctx.trace?.traceId)
    return id
  }
  server.route('shop.charge', (ctx) => ({ id: count(ctx), charged: true }))
  server.route('shop.decline', (ctx) => {
    count(ctx)
    throw new PolyCallError('card.declined', 'the card was declined')
  })
  server.route('shop.invalid', (ctx) => {
    count(ctx)
    throw new PolyCallError('ERR_POLYCALL_INVALID_INPUT', 'no such card')
  })
  server.route('shop.slow', async (ctx) => {
    const id = count(ctx)
    await new Promise<void>((resolve) => {
      c.release = resolve
      started()
    })
    return { id, slow: true }
  })
  c.port = (await server.listen(0, '127.0.0.1')).port
  t.teardown(() => server.destroy())
  return c
}

/** A raw PCR1 server that answers the offer with `answer` and every REQUEST with `"served"`, recording the REQUESTs. */
async function answeringServer(t: ExecutionContext, answer: (offer: RawPcr1Frame) => Buffer): Promise<{ port: number; requests: RawPcr1Frame[] }> {
  const requests: RawPcr1Frame[] = []
  const { port } = await pcr1Server(
    t,
    (f, socket) => {
      if (f.type === CONTROL) socket.write(answer(f))
      else {
        requests.push(f)
        socket.write(pcr1Frame(RESPONSE, f.corr, { ok: true, output: 'served' }))
      }
    },
    { offer: 'handler' },
  )
  return { port, requests }
}

/**
 * A TCP relay between a PCR1 client and server that records every frame the client sends and
 * loses replies on purpose: `drop(n)` swallows the next n RESPONSE frames and cuts both
 * connections right after, as a network failure would; `cut()` cuts every connection now.
 */
class Pcr1Relay {
  port = 0
  /** Every frame towards the server, on every link, in order. */
  readonly toServer: RawPcr1Frame[] = []
  links = 0
  dropped = 0
  #drops = 0
  readonly #server: Server
  readonly #sockets = new Set<Socket>()

  constructor(upstream: number) {
    this.#server = createServer((down) => {
      this.links++
      const up = connect({ host: '127.0.0.1', port: upstream })
      this.#sockets.add(down).add(up)
      const cut = () => {
        down.destroy()
        up.destroy()
      }
      down.on('error', cut).on('close', cut)
      up.on('error', cut).on('close', cut)
      const fromClient = new Pcr1Reader()
      down.on('data', (chunk: Buffer) => {
        this.toServer.push(...fromClient.push(chunk))
        up.write(chunk)
      })
      const fromServer = new Pcr1Reader()
      up.on('data', (chunk: Buffer) => {
        for (const frame of fromServer.push(chunk)) {
          if (frame.type === RESPONSE && this.#drops > 0) {
            this.#drops--
            this.dropped++
            cut()
            return
          }
          down.write(frame.raw)
        }
      })
    })
  }

  static async start(t: ExecutionContext, upstream: number): Promise<Pcr1Relay> {
    const relay = new Pcr1Relay(upstream)
    relay.#server.listen(0, '127.0.0.1')
    await once(relay.#server, 'listening')
    relay.port = (relay.#server.address() as { port: number }).port
    t.teardown(async () => {
      relay.cut()
      await new Promise((r) => relay.#server.close(r))
    })
    return relay
  }

  drop(n: number): void {
    this.#drops = n
  }

  cut(): void {
    for (const s of this.#sockets) s.destroy()
  }

  /** The bodies of the REQUEST frames the client sent. */
  requests(): Record<string, unknown>[] {
    return this.toServer.filter((f) => f.type === REQUEST).map((f) => f.body as Record<string, unknown>)
  }
}

function client(t: ExecutionContext, port: number, options: Partial<ClientOptions> = {}): PolyCallClient {
  const c = new PolyCallClient({ host: '127.0.0.1', port, protocol: 'pcr1', reconnect: { initialDelay: 20, maxDelay: 50, jitter: 0 }, ...options })
  t.teardown(() => c.destroy())
  return c
}

test('polycall client and server negotiate both extensions; a lost RESPONSE: resent with its key, answered from the record, run once', async (t) => {
  const up = await counted(t)
  const relay = await Pcr1Relay.start(t, up.port)
  const c = client(t, relay.port)
  const connects: number[] = []
  c.on('connect', ({ capabilities }) => connects.push(capabilities))
  await c.connect()
  t.deepEqual(connects, [BOTH])
  t.is(c.stats().capabilities, BOTH)
  // The first frame of the connection is the offer, answered with both extensions.
  t.is(relay.toServer[0]!.type, CONTROL)
  t.deepEqual(relay.toServer[0]!.body, OFFER)
  relay.drop(1)
  const out = await c.request('shop.charge', { id: 'order-1' }, { idempotent: true, timeout: 5000, trace: TRACEPARENT })
  t.deepEqual(out, { id: 'order-1', charged: true })
  t.is(relay.dropped, 1)
  t.is(relay.links, 2)
  t.is(up.runs.get('order-1'), 1)
  t.is(c.stats().requests.retried, 1)
  t.deepEqual(connects, [BOTH, BOTH])
  // Both REQUESTs carried the same key (32 lowercase hex digits) and the trace context; the
  // handler saw the key and the trace once.
  const [first, retry] = relay.requests()
  t.regex(String(first!['idempotency_key']), /^[0-9a-f]{32}$/)
  t.is(retry!['idempotency_key'], first!['idempotency_key'])
  t.is(first!['traceparent'], TRACEPARENT)
  t.deepEqual(Object.keys(first!).sort(), [...PLAIN_KEYS, 'idempotency_key', 'traceparent'].sort())
  t.deepEqual(up.keys, [first!['idempotency_key']])
  t.deepEqual(up.traces, ['4bf92f3577b34da6a3ce929d0e0e4736'])
  // A call that is not idempotent carries no key; one without a trace no traceparent.
  await c.request('shop.charge', { id: 'order-2' }, { timeout: 5000 })
  t.deepEqual(Object.keys(relay.requests()[2]!).sort(), PLAIN_KEYS)
})

test('the error outcome of a keyed call is recorded and replayed with the same PCR1 code', async (t) => {
  const up = await counted(t)
  const relay = await Pcr1Relay.start(t, up.port)
  const c = client(t, relay.port)
  await c.connect()
  for (const [command, code] of [
    ['shop.decline', 'card.declined'],
    ['shop.invalid', 'input.invalid'],
    ['shop.nothing', 'operation.unknown'],
  ] as const) {
    relay.drop(1)
    const dropped = relay.dropped
    const err = (await t.throwsAsync(c.request(command, { id: command }, { idempotent: true, timeout: 5000 }))) as PolyCallError & { remote: boolean }
    t.is(relay.dropped, dropped + 1, command)
    t.is(err.code, code)
    t.true(err.remote)
  }
  t.is(up.runs.get('shop.decline'), 1)
  t.is(up.runs.get('shop.invalid'), 1)
  t.is(c.stats().requests.retried, 3)
  // The replay is what the first run answered, to any connection that sends the key.
  const keyOf = (id: string) => relay.requests().find((r) => (r['input'] as { id: string }).id === id)!['idempotency_key'] as string
  const peer = await Pcr1Peer.connect(t, up.port)
  peer.write(pcr1Frame(CONTROL, 1, OFFER))
  t.deepEqual((await peer.next())!.body, { ok: true, data: { extensions: ['idempotency_key', 'traceparent'] } })
  const idempotency_key = keyOf('shop.decline')
  peer.write(pcr1Frame(REQUEST, 2, { service: 'shop', operation: 'decline', deadline_ms: 5000, input: { id: 'shop.decline' }, idempotency_key }))
  t.deepEqual((await peer.next())!.body, { ok: false, error: { code: 'card.declined', message: 'the card was declined' } })
  t.is(up.runs.get('shop.decline'), 1)
})

test('a retry while the first run is still going waits for it and gets its outcome; the handler runs once', async (t) => {
  const up = await counted(t)
  const relay = await Pcr1Relay.start(t, up.port)
  const c = client(t, relay.port)
  await c.connect()
  const call = c.request('shop.slow', { id: 'slow-1' }, { idempotent: true, timeout: 5000 })
  await up.running
  // The connection goes while the handler runs: the client resends on a new one, and the
  // server's retry finds the key running.
  relay.cut()
  for (let i = 0; i < 1000 && relay.requests().length < 2; i++) await new Promise((r) => setTimeout(r, 5))
  t.is(relay.requests().length, 2)
  up.release!()
  t.deepEqual(await call, { id: 'slow-1', slow: true })
  t.is(up.runs.get('slow-1'), 1)
  t.is(c.stats().requests.retried, 1)
})

test('the C runtime answers the offer control.unknown: the client works and its REQUESTs carry no extra members', async (t) => {
  const frames: RawPcr1Frame[] = []
  const { port } = await pcr1Server(
    t,
    (f, socket) => {
      frames.push(f)
      if (f.type === CONTROL) {
        socket.write(pcr1Frame(CONTROL_REPLY, f.corr, { ok: false, error: { code: 'control.unknown', message: 'unknown control action' } }))
      } else socket.write(pcr1Frame(RESPONSE, f.corr, { ok: true, output: { echo: (f.body as { input: unknown }).input } }))
    },
    { offer: 'handler' },
  )
  const c = client(t, port, { reconnect: false })
  const connects: number[] = []
  c.on('connect', ({ capabilities }) => connects.push(capabilities))
  await c.connect()
  t.deepEqual(await c.request('debug.echo', { a: 1 }, { idempotent: true, trace: TRACEPARENT, timeout: 5000 }), { echo: { a: 1 } })
  t.deepEqual(await c.request('debug.echo', 2, { timeout: 5000 }), { echo: 2 })
  t.deepEqual(connects, [0])
  t.is(frames[0]!.type, CONTROL)
  t.deepEqual(frames[0]!.body, OFFER)
  const requests = frames.filter((f) => f.type === REQUEST)
  t.is(requests.length, 2)
  for (const r of requests) t.deepEqual(Object.keys(r.body as object).sort(), PLAIN_KEYS)
})

test('only a well-formed positive answer naming offered extensions turns anything on', async (t) => {
  const answers: [string, (f: RawPcr1Frame) => Buffer][] = [
    ['an extension never offered', (f) => pcr1Frame(CONTROL_REPLY, f.corr, { ok: true, data: { extensions: ['idempotency_key', 'compression'] } })],
    ['a name twice', (f) => pcr1Frame(CONTROL_REPLY, f.corr, { ok: true, data: { extensions: ['idempotency_key', 'idempotency_key'] } })],
    ['extensions not an array', (f) => pcr1Frame(CONTROL_REPLY, f.corr, { ok: true, data: { extensions: 'idempotency_key' } })],
    ['no data', (f) => pcr1Frame(CONTROL_REPLY, f.corr, { ok: true })],
    ['ok not true', (f) => pcr1Frame(CONTROL_REPLY, f.corr, { ok: 'yes', data: { extensions: ['idempotency_key'] } })],
    ['another error code', (f) => pcr1Frame(CONTROL_REPLY, f.corr, { ok: false, error: { code: 'auth.denied', message: 'no' } })],
    ['not JSON', (f) => pcr1Frame(CONTROL_REPLY, f.corr, 'extensions please')],
    ['a RESPONSE', (f) => pcr1Frame(RESPONSE, f.corr, { ok: true, output: { extensions: ['idempotency_key'] } })],
    ['the CONTROL sent back (an echo peer)', (f) => f.raw],
  ]
  for (const [what, answer] of answers) {
    const { port, requests } = await answeringServer(t, answer)
    const c = client(t, port, { reconnect: false })
    await c.connect()
    t.is(c.stats().capabilities, 0, what)
    t.is(await c.request('debug.echo', null, { idempotent: true, trace: TRACEPARENT, timeout: 5000 }), 'served', what)
    t.deepEqual(Object.keys(requests[0]!.body as object).sort(), PLAIN_KEYS, what)
    await c.close()
  }
  // A positive answer with a subset turns on that subset only.
  const { port, requests } = await answeringServer(t, (f) => pcr1Frame(CONTROL_REPLY, f.corr, { ok: true, data: { extensions: ['traceparent'] } }))
  const c = client(t, port, { reconnect: false })
  await c.connect()
  t.is(c.stats().capabilities, Capability.TraceContext)
  await c.request('debug.echo', null, { idempotent: true, trace: TRACEPARENT, timeout: 5000 })
  t.deepEqual(requests[0]!.body, { service: 'debug', operation: 'echo', deadline_ms: 5000, input: null, traceparent: TRACEPARENT })
})

test('a peer that never answers the offer fails connect() with the same coded timeout as a v1 handshake nobody answers', async (t) => {
  const silent = createServer((socket) => socket.on('error', () => {}))
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  const sockets = new Set<Socket>()
  silent.on('connection', (s) => sockets.add(s))
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise((r) => silent.close(r))
  })
  const port = (silent.address() as { port: number }).port
  const codes = []
  for (const protocol of ['pcr1', 'v1'] as const) {
    const c = client(t, port, { protocol, connectTimeout: 300, reconnect: false })
    const err = (await t.throwsAsync(c.connect({ timeout: 10_000 }))) as PolyCallError
    codes.push([err.code, (err.cause as PolyCallError | undefined)?.code])
    t.false(c.connected)
  }
  t.deepEqual(codes, [
    [ErrorCode.CONNECT_FAILED, ErrorCode.TIMEOUT],
    [ErrorCode.CONNECT_FAILED, ErrorCode.TIMEOUT],
  ])
})

test('a server with idempotency: false accepts traceparent only; the client then sends no key', async (t) => {
  const up = await counted(t, { idempotency: false })
  const peer = await Pcr1Peer.connect(t, up.port)
  peer.write(pcr1Frame(CONTROL, 9, OFFER))
  const reply = (await peer.next())!
  t.is(reply.type, CONTROL_REPLY)
  t.is(reply.corr, 9)
  t.deepEqual(reply.body, { ok: true, data: { extensions: ['traceparent'] } })
  const relay = await Pcr1Relay.start(t, up.port)
  const c = client(t, relay.port, { reconnect: false })
  await c.connect()
  t.is(c.stats().capabilities, Capability.TraceContext)
  t.deepEqual(await c.request('shop.charge', { id: 'k' }, { idempotent: true, trace: TRACEPARENT, timeout: 5000 }), { id: 'k', charged: true })
  t.deepEqual(Object.keys(relay.requests()[0]!).sort(), [...PLAIN_KEYS, 'traceparent'].sort())
  t.deepEqual(up.keys, [undefined])
  t.deepEqual(up.traces, ['4bf92f3577b34da6a3ce929d0e0e4736'])
})

test('after negotiating, a malformed idempotency_key gets request.malformed and the connection serves on; before, it is ignored', async (t) => {
  const up = await counted(t)
  const req = (corr: number, idempotency_key: unknown) =>
    pcr1Frame(REQUEST, corr, { service: 'shop', operation: 'charge', deadline_ms: 5000, input: { id: `r${corr}` }, idempotency_key })
  // Not negotiated: extra members are ignored as they always were.
  const plain = await Pcr1Peer.connect(t, up.port)
  plain.write(req(1, 'not a key'))
  t.deepEqual((await plain.next())!.body, { ok: true, output: { id: 'r1', charged: true } })
  t.deepEqual(up.keys, [undefined])
  const peer = await Pcr1Peer.connect(t, up.port)
  peer.write(pcr1Frame(CONTROL, 1, OFFER))
  t.deepEqual((await peer.next())!.body, { ok: true, data: { extensions: ['idempotency_key', 'traceparent'] } })
  const bad: unknown[] = ['xyz', 'a'.repeat(31), 'a'.repeat(33), 'g'.repeat(32), 7, null, ['a'.repeat(32)], { k: 1 }]
  let corr = 10
  for (const key of bad) {
    peer.write(req(++corr, key))
    const f = (await peer.next())!
    t.is(f.type, RESPONSE)
    t.is(f.corr, corr)
    t.is((f.body as { error?: { code: string } }).error?.code, 'request.malformed', JSON.stringify(key))
  }
  t.is(up.runs.size, 1)
  // The connection is still serving, keyed requests included; uppercase hex names the same key.
  const key = '0123456789abcdef0123456789abcdef'
  peer.write(req(50, key))
  t.deepEqual((await peer.next())!.body, { ok: true, output: { id: 'r50', charged: true } })
  peer.write(req(51, key.toUpperCase()))
  t.deepEqual((await peer.next())!.body, { ok: true, output: { id: 'r50', charged: true } })
  t.deepEqual(up.keys.slice(1), [key])
  // A malformed traceparent is dropped, not fatal.
  peer.write(pcr1Frame(REQUEST, 52, { service: 'shop', operation: 'charge', deadline_ms: 5000, input: { id: 'r52' }, traceparent: 'nonsense' }))
  t.deepEqual((await peer.next())!.body, { ok: true, output: { id: 'r52', charged: true } })
  t.is(up.traces.at(-1), undefined)
  // A malformed offer is request.malformed too, and changes nothing.
  peer.write(pcr1Frame(CONTROL, 53, { action: 'polycall.extensions', offer: 'idempotency_key' }))
  t.is(((await peer.next())!.body as { error: { code: string } }).error.code, 'request.malformed')
  peer.write(req(54, 'xyz'))
  t.is(((await peer.next())!.body as { error: { code: string } }).error.code, 'request.malformed')
})

test('legacy: true sends no offer: the first frame of the connection is the REQUEST', async (t) => {
  const frames: RawPcr1Frame[] = []
  const { port } = await pcr1Server(
    t,
    (f, socket) => {
      frames.push(f)
      socket.write(
        f.type === CONTROL
          ? pcr1Frame(CONTROL_REPLY, f.corr, { ok: true, data: { pong: true, abi: 1 } })
          : pcr1Frame(RESPONSE, f.corr, { ok: true, output: 'served' }),
      )
    },
    { offer: 'handler' },
  )
  const c = client(t, port, { legacy: true, reconnect: false })
  await c.connect()
  t.is(await c.request('debug.echo', null, { idempotent: true, trace: TRACEPARENT, timeout: 5000 }), 'served')
  t.deepEqual(await c.control('ping', { timeout: 5000 }), { pong: true, abi: 1 })
  t.is(frames[0]!.type, REQUEST)
  t.deepEqual(Object.keys(frames[0]!.body as object).sort(), PLAIN_KEYS)
  t.deepEqual(
    frames.map((f) => f.type),
    [REQUEST, CONTROL],
  )
  t.deepEqual(frames[1]!.body, { action: 'ping' })
  t.is(c.stats().capabilities, 0)
})

test('a server at its connection limit refuses during the offer: connect() fails with its server.busy', async (t) => {
  const up = await counted(t, { maxConnections: 1 })
  const first = client(t, up.port, { reconnect: false })
  await first.connect()
  const second = client(t, up.port, { reconnect: false })
  t.is(((await t.throwsAsync(second.connect({ timeout: 5000 }))) as PolyCallError).code, 'server.busy')
  t.false(second.connected)
  t.deepEqual(await first.request('shop.charge', { id: 'still' }, { timeout: 5000 }), { id: 'still', charged: true })
})
