// Processes racing on one machine id never both commit: real child processes, many rounds.
import anyTest, { type ExecutionContext, type TestFn } from 'ava'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createClient } from 'redis'
import { FileSnapshotStore, RedisSnapshotStore, type SnapshotStore } from '../ts/index.js'
import { FixtureProcess } from './helpers/processes.js'
import { redisServerPath, redisSkipReason, startRedis } from './helpers/redis.js'

const PROCESSES = 2

/**
 * Rounds in lock step: every process gets "go" at the same moment, makes one attempt from the
 * version it holds, and reports. Exactly one may commit per round; the others lose with
 * CONFLICT and reload, so the next round starts again from one shared version.
 */
async function race(t: ExecutionContext, kind: 'file' | 'redis', where: string, store: SnapshotStore, rounds: number) {
  const racers = Array.from({ length: PROCESSES }, () => new FixtureProcess(t, 'store-racer.ts', [kind, where, 'race']))
  await Promise.all(racers.map((r) => r.event('ready')))
  const committed: number[] = []
  let conflicts = 0
  let bothCommitted = 0
  for (let round = 0; round < rounds; round++) {
    for (const r of racers) r.send({ round })
    const results = await Promise.all(racers.map((r) => r.next((m) => m.event === 'round' && m.round === round, 20_000)))
    const won = results.filter((m) => m.committed !== null).map((m) => m.committed as number)
    if (won.length > 1) bothCommitted++
    committed.push(...won)
    conflicts += results.length - won.length
  }
  for (const r of racers) r.send({ end: true })
  await Promise.all(racers.map((r) => r.exited))
  const stored = (await store.load('race'))!
  t.log(`${kind}: ${PROCESSES} processes x ${rounds} rounds: ${committed.length} commits, ${conflicts} conflicts, final version ${stored.version}`)
  t.is(bothCommitted, 0)
  // Every round had its one winner, no version was committed twice, none is missing.
  t.is(committed.length, rounds)
  t.is(conflicts, rounds * (PROCESSES - 1))
  t.deepEqual(committed, Array.from({ length: rounds }, (_, i) => i + 1))
  // The stored machine holds exactly one transition per commit, in one unbroken chain.
  const history = stored.snapshot.history
  t.is(stored.version, rounds)
  t.is(history.length, rounds)
  history.forEach((r, i) => {
    t.is(r.from, `S${i % 4}`)
    t.is(r.to, `S${(i + 1) % 4}`)
  })
  t.is(stored.snapshot.currentState, `S${rounds % 4}`)
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
  await race(t, 'redis', redis.url, new RedisSnapshotStore(client), 100)
})
