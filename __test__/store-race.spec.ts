// Processes racing on one machine id never both commit: real child processes, many rounds.
import anyTest, { type ExecutionContext, type TestFn } from 'ava'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createClient } from 'redis'
import { FileSnapshotStore, RedisSnapshotStore, type SnapshotStore } from '../ts/index.js'
import { FixtureProcess } from './helpers/processes.js'
import { redisServerPath, redisSkipReason, startRedis } from './helpers/redis.js'

const PROCESSES = 3

async function race(t: ExecutionContext, kind: 'file' | 'redis', where: string, store: SnapshotStore, rounds: number) {
  const racers = Array.from({ length: PROCESSES }, () => new FixtureProcess(t, 'store-racer.ts', [kind, where, 'race', String(rounds)]))
  await Promise.all(racers.map((r) => r.event('ready')))
  for (const r of racers) r.send({ go: true })
  const results = await Promise.all(racers.map((r) => r.event('done', 60_000)))
  const committed = results.flatMap((r) => r.committed as number[])
  const conflicts = results.reduce((n, r) => n + (r.conflicts as number), 0)
  const stored = (await store.load('race'))!
  t.log(`${kind}: ${PROCESSES} processes x ${rounds} attempts: ${committed.length} commits, ${conflicts} conflicts, final version ${stored.version}`)
  // Every attempt either committed or lost with CONFLICT.
  t.is(committed.length + conflicts, PROCESSES * rounds)
  // No version was committed twice, none is missing, and the racers did race.
  t.is(new Set(committed).size, committed.length)
  t.deepEqual([...committed].sort((a, b) => a - b), Array.from({ length: stored.version }, (_, i) => i + 1))
  t.true(conflicts > 0)
  // The stored machine holds exactly one transition per commit, in one unbroken chain.
  const history = stored.snapshot.history
  t.is(history.length, stored.version)
  history.forEach((r, i) => {
    t.is(r.from, `S${i % 4}`)
    t.is(r.to, `S${(i + 1) % 4}`)
  })
  t.is(stored.snapshot.currentState, `S${stored.version % 4}`)
}

anyTest('file store: processes racing on one id never both commit', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'polycall-race-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await race(t, 'file', dir, new FileSnapshotStore({ dir }), 100)
})

const redisTest: TestFn = redisServerPath ? anyTest : (anyTest.skip as TestFn)
if (!redisServerPath) {
  anyTest('Redis race skipped', (t) => {
    t.log(redisSkipReason)
    t.pass()
  })
}

redisTest('Redis store: processes racing on one id never both commit', async (t) => {
  const redis = await startRedis(t)
  const client = createClient({ url: redis.url, socket: { reconnectStrategy: false } })
  client.on('error', () => {})
  await client.connect()
  t.teardown(async () => {
    if (client.isOpen) await client.close()
  })
  await race(t, 'redis', redis.url, new RedisSnapshotStore(client), 200)
})
