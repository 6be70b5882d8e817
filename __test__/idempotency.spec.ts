// Idempotency keys against real servers on loopback: a relay that loses a RESPONSE on purpose,
// retries while the first run is still going, scopes, bounds, and the wire form of the key.
import test, { type ExecutionContext } from 'ava'
import { once } from 'node:events'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { Packr } from 'msgpackr'
import {
  Capability,
  ErrorCode,
  FrameDecoder,
  MemoryIdempotencyStore,
  MessageType,
  PolyCallClient,
  PolyCallError,
  PolyCallServer,
  buildHandshake,
  type RequestContext,
  type ServerOptions,
} from '../ts/index.js'
import { RawPeer } from './helpers/net.js'

const packr = new Packr({ useRecords: false, moreTypes: false })

interface Counted {
  server: PolyCallServer
  port: number
  runs: Map<string, number>
  keys: (string | undefined)[]
}

async function counted(t: ExecutionContext, options: ServerOptions = {}, ms = 0): Promise<Counted> {
  const server = new PolyCallServer({ onError: () => {}, ...options })
  const c: Counted = { server, port: 0, runs: new Map(), keys: [] }
  server.route('charge', async (ctx: RequestContext) => {
    const id = String((ctx.data as { id: string }).id)
    c.runs.set(id, (c.runs.get(id) ?? 0) + 1)
    c.keys.push(ctx.idempotencyKey)
    if (ms > 0) await new Promise((r) => setTimeout(r, ms))
    if ((ctx.data as { fail?: boolean }).fail) throw new PolyCallError('ERR_APP_DECLINED', 'card declined')
    return { id, charged: c.runs.get(id), big: (ctx.data as { big?: number }).big ? 'x'.repeat((ctx.data as { big: number }).big) : undefined }
  })
  c.port = (await server.listen(0, '127.0.0.1')).port
  t.teardown(() => server.destroy())
  return c
}

/**
 * A TCP relay between a client and a server that loses replies on purpose: `drop(n)` makes it
 * swallow the next n COMMAND replies (RESPONSE or ERROR with a sequence above 1) and cut both
 * connections right after, as a network failure would; `cut()` cuts every connection now (the
 * specs call it once the handler is seen running, so its reply is still to come).
 */
class LossyRelay {
  readonly server: Server
  port = 0
  #drops = 0
  dropped = 0
  readonly #sockets = new Set<Socket>()

  constructor(private readonly upstream: number) {
    this.server = createServer((down) => {
      const up = connect({ host: '127.0.0.1', port: this.upstream })
      this.#sockets.add(down).add(up)
      const cut = () => {
        down.destroy()
        up.destroy()
      }
      down.on('error', cut).on('close', cut)
      up.on('error', cut).on('close', cut)
      down.on('data', (chunk: Buffer) => up.write(chunk))
      const fromServer = new FrameDecoder()
      up.on('data', (chunk: Buffer) => {
        for (const f of fromServer.push(chunk)) {
          const reply = (f.type === MessageType.Response || f.type === MessageType.Error) && f.sequence > 1
          if (reply && this.#drops > 0) {
            this.#drops--
            this.dropped++
            cut()
            return
          }
          down.write(Buffer.concat([encodeHeader(f), f.payload]))
        }
      })
    })
  }

  async listen(t: ExecutionContext): Promise<this> {
    this.server.listen(0, '127.0.0.1')
    await once(this.server, 'listening')
    this.port = (this.server.address() as { port: number }).port
    t.teardown(async () => {
      for (const s of this.#sockets) s.destroy()
      await new Promise((r) => this.server.close(r))
    })
    return this
  }

  drop(n: number): void {
    this.#drops = n
  }

  cut(): void {
    for (const s of this.#sockets) s.destroy()
  }
}

/** The 16-byte v1 header of a decoded frame (the relay re-sends frames as they came). */
function encodeHeader(f: { version: number; type: number; flags: number; sequence: number; checksum: number; payload: Buffer }): Buffer {
  const h = Buffer.alloc(16)
  h[0] = f.version
  h[1] = f.type
  h.writeUInt16LE(f.flags, 2)
  h.writeUInt32LE(f.sequence, 4)
  h.writeUInt32LE(f.payload.length, 8)
  h.writeUInt32LE(f.checksum, 12)
  return h
}

function client(t: ExecutionContext, port: number): PolyCallClient {
  const c = new PolyCallClient({ host: '127.0.0.1', port, reconnect: { initialDelay: 20, maxDelay: 50, jitter: 0 } })
  t.teardown(() => c.destroy())
  return c
}

test('a lost RESPONSE: the idempotent call is retried with its key and answered from the record; the handler ran once', async (t) => {
  const up = await counted(t)
  const relay = await new LossyRelay(up.port).listen(t)
  const c = client(t, relay.port)
  await c.connect()
  relay.drop(1)
  const out = await c.request<{ id: string; charged: number }>('charge', { id: 'order-1' }, { idempotent: true, timeout: 5000 })
  t.is(relay.dropped, 1)
  t.deepEqual(out, { id: 'order-1', charged: 1, big: undefined })
  t.is(up.runs.get('order-1'), 1)
  t.is(c.stats().requests.retried, 1)
  // The handler saw the key once; the retry carried the same one (it never reached a handler).
  t.is(up.keys.length, 1)
  t.regex(up.keys[0]!, /^[0-9a-f]{32}$/)
})

test('a lost RESPONSE of an error: the retry gets the same error, the handler ran once', async (t) => {
  const up = await counted(t)
  const relay = await new LossyRelay(up.port).listen(t)
  const c = client(t, relay.port)
  await c.connect()
  relay.drop(1)
  await t.throwsAsync(c.request('charge', { id: 'order-2', fail: true }, { idempotent: true, timeout: 5000 }), { code: 'ERR_APP_DECLINED' })
  t.is(relay.dropped, 1)
  t.is(up.runs.get('order-2'), 1)
})

test('without idempotency records the same lost RESPONSE runs the handler twice (what the keys prevent)', async (t) => {
  const up = await counted(t, { idempotency: false })
  const relay = await new LossyRelay(up.port).listen(t)
  const c = client(t, relay.port)
  await c.connect()
  t.is(c.stats().capabilities & Capability.IdempotencyKeys, 0)
  relay.drop(1)
  const out = await c.request<{ charged: number }>('charge', { id: 'order-3' }, { idempotent: true, timeout: 5000 })
  t.is(out.charged, 2)
  t.is(up.runs.get('order-3'), 2)
})

test('a retry while the first run is still going waits for it and gets its outcome; the handler ran once', async (t) => {
  const up = await counted(t, {}, 400)
  const relay = await new LossyRelay(up.port).listen(t)
  const c = client(t, relay.port)
  await c.connect()
  const call = c.request<{ id: string; charged: number }>('charge', { id: 'order-4' }, { idempotent: true, timeout: 5000 })
  await until(() => up.runs.get('order-4') === 1, 'the first run started')
  relay.cut()
  const out = await call
  t.deepEqual(out, { id: 'order-4', charged: 1, big: undefined })
  t.is(up.runs.get('order-4'), 1)
  t.is(c.stats().requests.retried, 1)
})

/** A raw v1 peer that negotiated msgpack and idempotency keys, sending keyed COMMANDs itself. */
async function keyedPeer(t: ExecutionContext, port: number, credentials?: unknown): Promise<{ call: (cmd: string, data: unknown, key: Buffer) => Promise<{ type: number; value: unknown }> }> {
  const peer = await RawPeer.connect(t, port)
  peer.send(MessageType.Handshake, 1, buildHandshake(Capability.Msgpack | Capability.IdempotencyKeys))
  const hello = await peer.next()
  t.is(hello?.type, MessageType.Response)
  let seq = 2
  if (credentials !== undefined) {
    peer.send(MessageType.Auth, seq++, Buffer.from(JSON.stringify(credentials)))
    t.is((await peer.next())?.type, MessageType.Response)
  }
  return {
    async call(cmd, data, key) {
      peer.send(MessageType.Command, seq++, packr.pack([cmd, data, 5000, { k: key }]))
      const f = await peer.next()
      return { type: f!.type, value: packr.unpack(f!.payload) }
    },
  }
}

const key = (n: number) => Buffer.alloc(16, n)

/** A bounded poll on what the servers recorded. */
async function until(check: () => boolean, what: string, timeout = 10_000): Promise<void> {
  const end = Date.now() + timeout
  while (!check()) {
    if (Date.now() > end) throw new Error(`${what} within ${timeout} ms`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

test('a key is answered from its record on any connection of its scope; another command with it is refused', async (t) => {
  const up = await counted(t)
  const a = await keyedPeer(t, up.port)
  const b = await keyedPeer(t, up.port)
  const first = await a.call('charge', { id: 'k1' }, key(1))
  const again = await b.call('charge', { id: 'k1' }, key(1))
  t.deepEqual(again, first)
  t.is(up.runs.get('k1'), 1)
  const other = await a.call('/elsewhere', { id: 'k1' }, key(1))
  t.is(other.type, MessageType.Error)
  t.is((other.value as { code: string }).code, ErrorCode.BAD_REQUEST)
  // A key of the wrong size is refused, never run without its record.
  const short = await a.call('charge', { id: 'k2' }, Buffer.alloc(8))
  t.is((short.value as { code: string }).code, ErrorCode.BAD_REQUEST)
  t.is(up.runs.get('k2'), undefined)
})

test('keys are scoped by principal: the same key of two principals runs twice, never answers the other', async (t) => {
  const up = await counted(t, { authenticate: (c) => (c as unknown as { user: string }).user })
  const ada = await keyedPeer(t, up.port, { user: 'ada' })
  const bob = await keyedPeer(t, up.port, { user: 'bob' })
  const ada2 = await keyedPeer(t, up.port, { user: 'ada' })
  await ada.call('charge', { id: 's1' }, key(9))
  const forBob = await bob.call('charge', { id: 's1' }, key(9))
  t.is((forBob.value as { charged: number }).charged, 2)
  const forAda = await ada2.call('charge', { id: 's1' }, key(9))
  t.is((forAda.value as { charged: number }).charged, 1)
  t.is(up.runs.get('s1'), 2)
})

test('bounds: a full store refuses new keys with BUSY (they never run) and still answers the keys it holds', async (t) => {
  const store = new MemoryIdempotencyStore({ maxEntries: 5, maxOutcomeBytes: 1000 })
  const up = await counted(t, { idempotency: { store } })
  const p = await keyedPeer(t, up.port)
  for (let i = 0; i < 5; i++) t.is((await p.call('charge', { id: `b${i}` }, key(i + 10))).type, MessageType.Response)
  t.is(store.size.entries, 5)
  const over = await p.call('charge', { id: 'b5' }, key(15))
  t.is((over.value as { code: string }).code, ErrorCode.BUSY)
  t.is(up.runs.get('b5'), undefined)
  t.is(((await p.call('charge', { id: 'b0' }, key(10))).value as { charged: number }).charged, 1)
  t.is(store.size.entries, 5)
  t.true(store.size.bytes > 5 * 96 && store.size.bytes < 5 * 400, `${store.size.bytes} bytes`)

  // An outcome over maxOutcomeBytes reaches its caller; a retry gets OUTCOME_UNKNOWN, not a second run.
  const small = new MemoryIdempotencyStore({ maxOutcomeBytes: 1000 })
  const up2 = await counted(t, { idempotency: { store: small } })
  const q = await keyedPeer(t, up2.port)
  const big = await q.call('charge', { id: 'big', big: 5000 }, key(20))
  t.is((big.value as { big: string }).big.length, 5000)
  const retry = await q.call('charge', { id: 'big', big: 5000 }, key(20))
  t.is((retry.value as { code: string }).code, ErrorCode.OUTCOME_UNKNOWN)
  t.is(up2.runs.get('big'), 1)
})

test('bounds: maxBytes holds records to their byte budget; records expire with their call deadline', async (t) => {
  const store = new MemoryIdempotencyStore({ maxBytes: 4000 })
  const up = await counted(t, { idempotency: { store, window: 200 } })
  const p = await keyedPeer(t, up.port)
  let refused = 0
  for (let i = 0; i < 40; i++) {
    const r = await p.call('charge', { id: `m${i}` }, key(100 + i))
    if (r.type === MessageType.Error) {
      t.is((r.value as { code: string }).code, ErrorCode.BUSY)
      refused++
    }
  }
  t.true(refused > 0)
  t.true(store.size.bytes <= 4000, `${store.size.bytes} bytes held`)
  // The window (200 ms here) passes: the records go, and new keys are taken again.
  const end = Date.now() + 5000
  while (store.size.entries > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50))
  t.is(store.size.entries, 0)
  t.is((await p.call('charge', { id: 'later' }, key(200))).type, MessageType.Response)
})

test('two servers sharing one store answer each other\'s retries', async (t) => {
  const store = new MemoryIdempotencyStore()
  const a = await counted(t, { idempotency: { store } }, 200)
  const b = await counted(t, { idempotency: { store } }, 200)
  const pa = await keyedPeer(t, a.port)
  const pb = await keyedPeer(t, b.port)
  // The retry on b arrives while a still runs the first: it waits and gets a's outcome.
  const firstCall = pa.call('charge', { id: 'x' }, key(42))
  await until(() => a.runs.get('x') === 1, 'a runs it')
  const [first, second] = await Promise.all([firstCall, pb.call('charge', { id: 'x' }, key(42))])
  t.deepEqual(second, first)
  t.is(a.runs.get('x'), 1)
  t.is(b.runs.get('x'), undefined)
})

test('a keyed run whose connection goes keeps running and records its outcome; the server drains it', async (t) => {
  const up = await counted(t, {}, 300)
  const relay = await new LossyRelay(up.port).listen(t)
  const c = new PolyCallClient({ host: '127.0.0.1', port: relay.port, reconnect: false })
  t.teardown(() => c.destroy())
  await c.connect()
  const call = c.request('charge', { id: 'd1' }, { idempotent: true, timeout: 5000 })
  await until(() => up.runs.get('d1') === 1, 'the run started')
  relay.cut()
  const lost = await t.throwsAsync(call)
  t.is((lost as PolyCallError).code, ErrorCode.CONNECTION_LOST)
  t.is(up.runs.get('d1'), 1)
  t.is(up.server.stats().requests.inFlight, 1)
  await up.server.close({ timeout: 5000 })
  t.is(up.server.stats().requests.inFlight, 0)
  t.is(up.server.stats().requests.succeeded, 1)
})
