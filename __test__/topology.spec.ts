// A real topology started by the test: three polycall server processes on loopback, a shared
// Redis (idempotency records and the log of handler runs), and nginx `stream` in front of them;
// a pipelined load, then one server is killed (SIGKILL) or drained (SIGTERM) under it. The same
// with the client's own balancing over the three endpoints (no nginx), and PCR1 through nginx.
//
// Definitions, reconciled from the servers' run log (every handler's first act is
// `RPUSH log "<call id> <server> start"`, its side effect) against the client's outcomes:
// - sent: calls the load made (half of them idempotent);
// - run twice: a call id with two or more `start` records;
// - lost: an idempotent call that failed with anything but ERR_POLYCALL_OUTCOME_UNKNOWN, or
//   any call that succeeded without a `start` record of the server that answered;
// - outcome unknown: the explicit window where exactly-once cannot be known: a retry whose key's
//   first run was on the killed server and never recorded its outcome (it may have had its side
//   effect: at most one `start`, on the killed server, and no `end`). It is a coded error, never
//   a second run;
// - failed (coded): a non-idempotent call that failed, with its code (CONNECTION_LOST with
//   `written: true` when it was sent to the server that went away);
// - retried: the clients' `stats().requests.retried` (failovers and resends after reconnects).
import test, { type ExecutionContext } from 'ava'
import { createClient } from 'redis'
import { ErrorCode, PolyCallClient, isPolyCallError, type PolyCallError } from '../ts/index.js'
import { nginxSkipReason, startNginx } from './helpers/nginx.js'
import { FixtureProcess } from './helpers/processes.js'
import { redisServerPath, redisSkipReason, startRedis } from './helpers/redis.js'

const skip = nginxSkipReason || (redisServerPath ? '' : redisSkipReason)
const maybe = skip ? test.skip : test.serial
if (skip) test.skip(`topology specs skipped: ${skip}`, () => {})

interface Topology {
  servers: { process: FixtureProcess; port: number; name: string }[]
  runs(): Promise<Map<string, { starts: string[]; ends: string[] }>>
}

async function topology(t: ExecutionContext, protocol: 'v1' | 'pcr1'): Promise<Topology> {
  const redis = await startRedis(t)
  const reader = await createClient({ url: redis.url, socket: { reconnectStrategy: false } }).connect()
  t.teardown(async () => {
    if (reader.isOpen) await reader.close().catch(() => {})
  })
  const servers = await Promise.all(
    ['s1', 's2', 's3'].map(async (name) => {
      const process = new FixtureProcess(t, 'topology-server.ts', [JSON.stringify({ name, redis: redis.url, protocol, lease: 1000 })])
      const m = await process.event('listening', 30_000)
      return { process, port: m.port as number, name }
    }),
  )
  return {
    servers,
    async runs() {
      const map = new Map<string, { starts: string[]; ends: string[] }>()
      for (const line of await reader.lRange('topology:runs', 0, -1)) {
        const [id, server, what] = line.split(' ') as [string, string, string]
        const e = map.get(id) ?? { starts: [], ends: [] }
        ;(what === 'start' ? e.starts : e.ends).push(server)
        map.set(id, e)
      }
      return map
    },
  }
}

interface Outcome {
  id: string
  idempotent: boolean
  ok: boolean
  by?: string
  code?: string
  written?: boolean
}

/**
 * `total` calls, `concurrency` in flight at a time, spread over `clients`; after `killAfter`
 * answers, `kill()` runs once (without holding the load up).
 */
async function load(clients: PolyCallClient[], command: string, total: number, concurrency: number, killAfter: number, kill: () => void): Promise<Outcome[]> {
  const outcomes: Outcome[] = []
  let next = 0
  let answered = 0
  let killed = false
  await Promise.all(
    Array.from({ length: concurrency }, async (_, lane) => {
      const client = clients[lane % clients.length]!
      while (next < total) {
        const i = next++
        const id = `c${i}`
        const idempotent = i % 2 === 0
        try {
          const out = await client.request<{ id: string; by: string }>(command, { id, ms: 20 }, { idempotent, timeout: 10_000 })
          outcomes.push({ id, idempotent, ok: true, by: out.by })
        } catch (e) {
          const err = e as PolyCallError & { written?: boolean }
          outcomes.push({ id, idempotent, ok: false, code: isPolyCallError(err) ? err.code : String(e), ...(err.written !== undefined ? { written: err.written } : {}) })
        }
        if (++answered === killAfter && !killed) {
          killed = true
          kill()
        }
      }
    }),
  )
  return outcomes
}

interface Counts {
  sent: number
  succeeded: number
  lost: number
  runTwice: number
  outcomeUnknown: number
  failedCoded: Record<string, number>
  retried: number
}

async function reconcile(t: ExecutionContext, topo: Topology, outcomes: Outcome[], killed: string, retried: number): Promise<Counts> {
  const runs = await topo.runs()
  const counts: Counts = { sent: outcomes.length, succeeded: 0, lost: 0, runTwice: 0, outcomeUnknown: 0, failedCoded: {}, retried }
  for (const [, r] of runs) if (r.starts.length > 1) counts.runTwice++
  for (const o of outcomes) {
    const r = runs.get(o.id) ?? { starts: [], ends: [] }
    if (o.ok) {
      counts.succeeded++
      if (!r.starts.includes(o.by!)) {
        counts.lost++
        t.log(`lost: ${o.id} answered by ${o.by} with no run there`)
      }
    } else if (o.code === ErrorCode.OUTCOME_UNKNOWN) {
      counts.outcomeUnknown++
      // The window: at most one run, on the server that went away, whose outcome was never
      // recorded (it may even have finished its side effect: an `end` before the kill).
      t.true(r.starts.length <= 1 && r.starts.every((s) => s === killed), `${o.id}: ${JSON.stringify(r)}`)
    } else if (o.idempotent) {
      counts.lost++
      t.log(`lost: ${o.id} failed with ${o.code}`)
    } else {
      counts.failedCoded[o.code!] = (counts.failedCoded[o.code!] ?? 0) + 1
      t.true(o.code!.startsWith('ERR_POLYCALL_'), `${o.id}: ${o.code}`)
      if (o.code === ErrorCode.CONNECTION_LOST) t.true(o.written !== undefined, `${o.id}: written is set`)
    }
  }
  return counts
}

function killer(topo: Topology, signal: NodeJS.Signals): () => void {
  return () => {
    topo.servers[0]!.process.child.kill(signal)
  }
}

const TOTAL = 600
const CONCURRENCY = 24

for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
  maybe(`v1 through nginx, ${signal} to one of three servers under load: no idempotent call lost or run twice`, async (t) => {
    const topo = await topology(t, 'v1')
    const nginx = await startNginx(t, { upstreams: topo.servers.map((s) => s.port) })
    const clients = Array.from({ length: 6 }, () => new PolyCallClient({ host: '127.0.0.1', port: nginx.port, reconnect: { initialDelay: 50, maxDelay: 500 } }))
    t.teardown(() => Promise.all(clients.map((c) => c.close({ timeout: 2000 }))))
    await Promise.all(clients.map((c) => c.connect()))
    const outcomes = await load(clients, 'work', TOTAL, CONCURRENCY, 150, killer(topo, signal))
    const retried = clients.reduce((n, c) => n + c.stats().requests.retried, 0)
    const counts = await reconcile(t, topo, outcomes, 's1', retried)
    t.log(`v1 nginx ${signal}: ${JSON.stringify(counts)}`)
    t.is(counts.sent, TOTAL)
    t.is(counts.lost, 0)
    t.is(counts.runTwice, 0)
    t.true((await topo.servers[0]!.process.exited).signal === signal || signal === 'SIGTERM')
    if (signal === 'SIGTERM') {
      // A drain lets every call in flight finish and hands back what it did not run: nothing's
      // outcome is unknown, nothing fails.
      t.is(counts.outcomeUnknown, 0)
      t.deepEqual(counts.failedCoded, {})
      t.is((await topo.servers[0]!.process.exited).code, 0)
    }
  })

  maybe(`v1 with the client's own balancing over three endpoints, ${signal} to one: no idempotent call lost or run twice`, async (t) => {
    const topo = await topology(t, 'v1')
    const client = new PolyCallClient({
      endpoints: topo.servers.map((s) => `127.0.0.1:${s.port}`),
      connectionsPerEndpoint: 2,
      reconnect: { initialDelay: 50, maxDelay: 500 },
    })
    t.teardown(() => client.close({ timeout: 2000 }))
    await client.connect()
    const outcomes = await load([client], 'work', TOTAL, CONCURRENCY, 150, killer(topo, signal))
    const counts = await reconcile(t, topo, outcomes, 's1', client.stats().requests.retried)
    t.log(`v1 client balancing ${signal}: ${JSON.stringify(counts)}`)
    t.is(counts.lost, 0)
    t.is(counts.runTwice, 0)
    // The killed server's share went elsewhere.
    const s1 = client.stats().endpoints!.find((e) => e.endpoint.endsWith(`:${topo.servers[0]!.port}`))!
    t.not(s1.state, 'ready')
    if (signal === 'SIGTERM') {
      t.is(counts.outcomeUnknown, 0)
      // A draining server refuses what it gets after the drain began: never run, always sent elsewhere.
      t.deepEqual(counts.failedCoded, {})
    }
  })
}

maybe('PCR1 through nginx, SIGKILL to one of three servers under load: no idempotent call lost or run twice, the others coded', async (t) => {
  const topo = await topology(t, 'pcr1')
  const nginx = await startNginx(t, { upstreams: topo.servers.map((s) => s.port) })
  const clients = Array.from({ length: 6 }, () => new PolyCallClient({ host: '127.0.0.1', port: nginx.port, protocol: 'pcr1', reconnect: { initialDelay: 50, maxDelay: 500 } }))
  t.teardown(() => Promise.all(clients.map((c) => c.close({ timeout: 2000 }))))
  await Promise.all(clients.map((c) => c.connect()))
  const outcomes = await load(clients, 'topology.work', TOTAL, CONCURRENCY, 150, killer(topo, 'SIGKILL'))
  const retried = clients.reduce((n, c) => n + c.stats().requests.retried, 0)
  const counts = await reconcile(t, topo, outcomes, 's1', retried)
  t.log(`pcr1 nginx SIGKILL: ${JSON.stringify(counts)}`)
  t.is(counts.sent, TOTAL)
  t.is(counts.lost, 0)
  t.is(counts.runTwice, 0)
  t.is((await topo.servers[0]!.process.exited).signal, 'SIGKILL')
})
