// Idempotency records in a real redis-server: shared by two servers, and a first run whose host
// is killed mid-run (SIGKILL): its retry is refused with ERR_POLYCALL_OUTCOME_UNKNOWN once the
// owner's lease has run out, and the handler never runs a second time.
import test, { type ExecutionContext } from 'ava'
import { createClient } from 'redis'
import { Packr } from 'msgpackr'
import { Capability, ErrorCode, MessageType, PolyCallServer, RedisIdempotencyStore, buildHandshake } from '../ts/index.js'
import { RawPeer } from './helpers/net.js'
import { FixtureProcess } from './helpers/processes.js'
import { redisServerPath, redisSkipReason, startRedis } from './helpers/redis.js'

const maybe = redisServerPath ? test : test.skip
if (!redisServerPath) test.skip(`Redis idempotency specs skipped: ${redisSkipReason}`, () => {})
const packr = new Packr({ useRecords: false, moreTypes: false })

async function redisClient(t: ExecutionContext, url: string) {
  const client = await createClient({ url, socket: { reconnectStrategy: false } }).connect()
  t.teardown(async () => {
    if (client.isOpen) await client.close().catch(() => {})
  })
  return client
}

async function keyed(t: ExecutionContext, port: number) {
  const peer = await RawPeer.connect(t, port)
  peer.send(MessageType.Handshake, 1, buildHandshake(Capability.Msgpack | Capability.IdempotencyKeys))
  t.is((await peer.next())?.type, MessageType.Response)
  let seq = 2
  return {
    send(cmd: string, data: unknown, key: Buffer, timeout = 10_000) {
      peer.send(MessageType.Command, seq++, packr.pack([cmd, data, timeout, { k: key }]))
    },
    async reply(ms?: number) {
      const f = await peer.next(ms)
      return { type: f!.type, value: packr.unpack(f!.payload) as Record<string, unknown> }
    },
  }
}

maybe('two servers on one Redis store answer each other\'s keys; a record outlives neither its ttl nor its scope', async (t) => {
  const redis = await startRedis(t)
  const client = await redisClient(t, redis.url)
  const runs: string[] = []
  const make = async (name: string) => {
    const server = new PolyCallServer({ idempotency: { store: new RedisIdempotencyStore(client, { prefix: 'spec:' }), window: 60_000 } })
    server.route('pay', async (ctx) => {
      runs.push(name)
      await new Promise((r) => setTimeout(r, 150))
      return { by: name, data: ctx.data }
    })
    const { port } = await server.listen(0, '127.0.0.1')
    t.teardown(() => server.destroy())
    return port
  }
  const [a, b] = await Promise.all([make('a'), make('b')])
  const pa = await keyed(t, a)
  const pb = await keyed(t, b)
  const key = Buffer.alloc(16, 7)
  pa.send('pay', { n: 1 }, key)
  // b gets the same key while a still runs it: it waits (polling Redis) and answers a's outcome.
  const end = Date.now() + 10_000
  while (runs.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 5))
  pb.send('pay', { n: 1 }, key)
  const [ra, rb] = await Promise.all([pa.reply(), pb.reply()])
  t.deepEqual(ra, { type: MessageType.Response, value: { by: 'a', data: { n: 1 } } })
  t.deepEqual(rb, ra)
  t.deepEqual(runs, ['a'])
  // The record is a hash under the prefix that expires with its ttl (10 s deadline + 1 s).
  const keys = await client.keys('spec:*')
  const record = keys.find((k) => !k.includes('owner:'))!
  t.is(await client.hGet(record, 's'), 'd')
  const ttl = await client.pTTL(record)
  t.true(ttl > 0 && ttl <= 11_000, `ttl ${ttl}`)
  // Another command under the same key is refused.
  pb.send('other', null, key)
  t.is((await pb.reply()).value.code, ErrorCode.BAD_REQUEST)
})

maybe('a first run whose host is killed mid-run: the retry gets OUTCOME_UNKNOWN after the lease, never a second run', async (t) => {
  const redis = await startRedis(t)
  const reader = await redisClient(t, redis.url)
  const doomed = new FixtureProcess(t, 'topology-server.ts', [JSON.stringify({ name: 'doomed', redis: redis.url, lease: 500, log: 'spec:runs' })])
  const { port } = await doomed.event('listening', 30_000)
  const peer = await keyed(t, port as number)
  const key = Buffer.alloc(16, 3)
  peer.send('work', { id: 'w1', ms: 60_000 }, key)
  // Its handler started (its first act is the log entry), then the host dies.
  const end = Date.now() + 10_000
  while ((await reader.lLen('spec:runs')) === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20))
  doomed.child.kill('SIGKILL')
  await doomed.exited

  const survivor = new PolyCallServer({
    idempotency: { store: new RedisIdempotencyStore(reader, { prefix: 'topology:idem:', lease: 500 }) },
  })
  let ran = 0
  survivor.route('work', () => ++ran)
  const { port: sp } = await survivor.listen(0, '127.0.0.1')
  t.teardown(() => survivor.destroy())
  const retry = await keyed(t, sp)
  const started = performance.now()
  retry.send('work', { id: 'w1', ms: 60_000 }, key)
  const r = await retry.reply(10_000)
  t.is(r.type, MessageType.Error)
  t.is(r.value.code, ErrorCode.OUTCOME_UNKNOWN)
  t.is(ran, 0)
  // It waited for the dead owner's lease (500 ms) at most, with room for a loaded machine.
  t.true(performance.now() - started < 5000)
  t.deepEqual(await reader.lRange('spec:runs', 0, -1), ['w1 doomed start'])
  // Every later retry gets the same answer at once.
  retry.send('work', { id: 'w1', ms: 60_000 }, key)
  t.is((await retry.reply()).value.code, ErrorCode.OUTCOME_UNKNOWN)
})

maybe('an unreachable store refuses keyed calls with UNAVAILABLE: they never run', async (t) => {
  const redis = await startRedis(t)
  const client = await redisClient(t, redis.url)
  const server = new PolyCallServer({ idempotency: { store: new RedisIdempotencyStore(client, { timeout: 500 }) } })
  let ran = 0
  server.route('work', () => ++ran)
  const { port } = await server.listen(0, '127.0.0.1')
  t.teardown(() => server.destroy())
  const p = await keyed(t, port)
  await client.close()
  p.send('work', null, Buffer.alloc(16, 1))
  const r = await p.reply()
  t.is(r.value.code, ErrorCode.UNAVAILABLE)
  t.is(ran, 0)
})
