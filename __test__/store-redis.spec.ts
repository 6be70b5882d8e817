// RedisSnapshotStore against a real redis-server on loopback, started and stopped by each test.
import anyTest, { type ExecutionContext, type TestFn } from 'ava'
import { createClient } from 'redis'
import { ErrorCode, RedisSnapshotStore, persistState, resumeState, type PolyCallError } from '../ts/index.js'
import { redisServerPath, redisSkipReason, startRedis } from './helpers/redis.js'
import { cycleMachine, storeContract } from './helpers/stores.js'

// Chosen at load time: without redis-server every test here is a visible, passing skip.
const test: TestFn = redisServerPath ? anyTest : (anyTest.skip as TestFn)
if (!redisServerPath) {
  anyTest('Redis store specs skipped', (t) => {
    t.log(redisSkipReason)
    t.pass()
  })
}

async function connect(t: ExecutionContext, url: string) {
  const client = createClient({ url, socket: { reconnectStrategy: false, connectTimeout: 5000 } })
  client.on('error', () => {}) // failures reach the awaiting call; no unhandled 'error' event
  await client.connect()
  t.teardown(async () => {
    if (client.isOpen) await client.close()
  })
  return client
}

test('Redis store: load, save, compare-and-set, delete, copies, bounds', async (t) => {
  const redis = await startRedis(t)
  const client = await connect(t, redis.url)
  const store = new RedisSnapshotStore<{ n: number }>(client, { maxBytes: 4096, prefix: 'spec:' })
  await storeContract(t, store, 4096)
  // Records are hashes under the prefix: the version and the JSON text.
  await store.save('order-42', { n: 5 })
  t.deepEqual(await client.hGetAll('spec:order-42'), { v: '1', s: '{"n":5}' })
  t.is(store.keyOf('order-42'), 'spec:order-42')
})

test('Redis store: the scripts are loaded on first use after a SCRIPT FLUSH; ttl expires records', async (t) => {
  const redis = await startRedis(t)
  const client = await connect(t, redis.url)
  const store = new RedisSnapshotStore<{ n: number }>(client, { ttl: 60_000 })
  await store.save('a', { n: 1 })
  await client.scriptFlush()
  t.is(await store.save('a', { n: 2 }, { ifVersion: 1 }), 2)
  const ttl = await client.pTTL('polycall:snapshot:a')
  t.true(ttl > 50_000 && ttl <= 60_000, `pttl ${ttl}`)
})

test('Redis store: a record over maxBytes is refused by the server-side script before it is sent', async (t) => {
  const redis = await startRedis(t)
  const client = await connect(t, redis.url)
  await client.hSet('polycall:snapshot:big', { v: '1', s: JSON.stringify('z'.repeat(100_000)) })
  await client.hSet('polycall:snapshot:junk', { v: '1', s: '{nope' })
  await client.hSet('polycall:snapshot:nodata', { v: '3' })
  const store = new RedisSnapshotStore(client, { maxBytes: 1024 })
  t.is(((await t.throwsAsync(store.load('big'))) as PolyCallError).code, ErrorCode.PAYLOAD_TOO_LARGE)
  t.is(((await t.throwsAsync(store.load('junk'))) as PolyCallError).code, ErrorCode.STORE_FAILED)
  t.is(((await t.throwsAsync(store.load('nodata'))) as PolyCallError).code, ErrorCode.STORE_FAILED)
  t.throws(() => new RedisSnapshotStore({} as never), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => new RedisSnapshotStore(client, { ttl: -1 }), { code: ErrorCode.INVALID_ARGUMENT })
})

test('Redis store: a stopped server gives STORE_FAILED, a closed client too; nothing hangs', async (t) => {
  const redis = await startRedis(t)
  const client = await connect(t, redis.url)
  const store = new RedisSnapshotStore<{ n: number }>(client, { timeout: 2000 })
  await store.save('x', { n: 1 })
  const exited = new Promise((r) => redis.child.once('exit', r))
  redis.child.kill('SIGKILL')
  await exited
  const started = performance.now()
  const err = (await t.throwsAsync(store.save('x', { n: 2 }, { ifVersion: 1 }))) as PolyCallError
  t.true([ErrorCode.STORE_FAILED, ErrorCode.TIMEOUT].includes(err.code as never), err.code)
  t.true(performance.now() - started < 5000)
  if (client.isOpen) await client.close().catch(() => {})
  t.is(((await t.throwsAsync(store.load('x'))) as PolyCallError).code, ErrorCode.STORE_FAILED)
})

test('persisted machines on Redis: two clients, one id, the loser reloads the winner\'s state', async (t) => {
  const redis = await startRedis(t)
  const [ca, cb] = await Promise.all([connect(t, redis.url), connect(t, redis.url)])
  const a = cycleMachine()
  const b = cycleMachine()
  t.teardown(() => {
    a.free()
    b.free()
  })
  const pa = await resumeState(a, new RedisSnapshotStore(ca), 'shared')
  const pb = await resumeState(b, new RedisSnapshotStore(cb), 'shared')
  await pa.transition('S1')
  await t.throwsAsync(pb.transition('S1'), { code: ErrorCode.CONFLICT })
  t.is(b.current, 'S1')
  await pb.transition('S2')
  const c = cycleMachine()
  t.teardown(() => c.free())
  const pc = await resumeState(c, new RedisSnapshotStore(ca), 'shared')
  t.is(pc.version, 2)
  t.is(c.current, 'S2')
  const again = persistState(cycleMachine(), new RedisSnapshotStore(cb), 'shared', { version: 2 })
  await again.transition('S1')
  t.is(again.version, 3)
  again.machine.free()
  await Promise.all([pa.close(), pb.close(), pc.close(), again.close()])
})
