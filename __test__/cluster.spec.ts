// serveCluster with real processes: a primary forking workers that share one port. Serial: each
// test runs three processes, and the machine has two cores.
import test, { type ExecutionContext } from 'ava'
import { mkdtemp, rm, writeFile, unlink } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ErrorCode, PolyCallClient, PolyCallServer, serveCluster, type ClusterOptions, type ClusterStats, type PolyCallError } from '../ts/index.js'
import { FixtureProcess } from './helpers/processes.js'

type Pid = { pid: number; id: number; generation: number }

async function startCluster(t: ExecutionContext, options: ClusterOptions, env: NodeJS.ProcessEnv = {}) {
  const proc = new FixtureProcess(t, 'cluster-server.ts', [JSON.stringify({ drainTimeout: 10_000, ...options })], env)
  const ready = await proc.event('ready', 30_000)
  return { proc, port: ready.port as number, workers: ready.workers as Pid[] }
}

function client(t: ExecutionContext, port: number, reconnect = false): PolyCallClient {
  const c = new PolyCallClient({ port, reconnect: reconnect ? { initialDelay: 20, maxDelay: 200 } : false, timeout: 10_000 })
  t.teardown(() => c.destroy())
  return c
}

async function stats(proc: FixtureProcess, timeout = 2000): Promise<ClusterStats> {
  const from = proc.messages.length
  proc.send({ cmd: 'stats', timeout })
  return (await proc.event('stats', 10_000, from)) as unknown as ClusterStats
}

/** Runs `calls` loops of sequential idempotent requests until `stop` resolves; counts outcomes. */
function load(c: PolyCallClient, calls: number, stop: Promise<void>, command = 'pid', data?: unknown) {
  const outcome = { ok: 0, failed: [] as string[], pids: new Set<number>(), generations: new Set<number>() }
  let stopped = false
  void stop.then(() => (stopped = true))
  const loops = Array.from({ length: calls }, async () => {
    while (!stopped) {
      try {
        const r = (await c.request(command, data, { idempotent: true, timeout: 10_000 })) as Pid
        outcome.ok++
        outcome.pids.add(r.pid)
        if (r.generation !== undefined) outcome.generations.add(r.generation)
      } catch (e) {
        const code = (e as PolyCallError).code
        if (code === ErrorCode.CLOSED) return // the test is over (teardown destroyed the client)
        outcome.failed.push(code)
        if (outcome.failed.length > 1000) return
      }
    }
  })
  return { outcome, done: Promise.all(loops) }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((r) => (resolve = r))
  return { promise, resolve }
}

/** Bounded poll: resolves once `check` holds, fails after `timeout` ms. */
async function until(check: () => boolean | Promise<boolean>, timeout = 15_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeout
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`${what} not reached within ${timeout} ms`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

test.serial('two workers serve one port; stats aggregate across workers; a blocked worker is reported missing', async (t) => {
  const { proc, port, workers } = await startCluster(t, { workers: 2 })
  t.is(workers.length, 2)
  const pids = new Set<number>()
  for (let i = 0; i < 20; i++) {
    const c = client(t, port)
    pids.add(((await c.request('pid')) as Pid).pid)
    await c.close()
  }
  // Round-robin scheduling hands connections to both workers.
  t.deepEqual([...pids].sort(), workers.map((w) => w.pid).sort())
  const c = client(t, port)
  for (let i = 0; i < 30; i++) t.is(await c.request('echo', i), i)

  const s = await stats(proc)
  t.deepEqual(s.missing, [])
  t.is(s.workers.length, 2)
  t.is(s.total.requests.total, 50)
  t.is(s.total.requests.succeeded, 50)
  t.is(s.total.connections.total, 21)
  t.is(s.total.connections.current, 1)
  t.is(s.total.requests.total, s.workers[0]!.stats.requests.total + s.workers[1]!.stats.requests.total)
  t.is(s.total.latency.count, 50)
  t.is(s.total.bytesIn, s.workers[0]!.stats.bytesIn + s.workers[1]!.stats.bytesIn)

  // A worker asks the primary for the cluster-wide figures.
  const fromWorker = (await c.request('stats')) as ClusterStats
  t.is(fromWorker.workers.length, 2)
  t.true(fromWorker.total.requests.total >= 50)

  // A worker whose event loop is blocked does not hold the others' answer.
  const mine = ((await c.request('pid')) as Pid).id
  const blocked = c.request('block', 4000)
  // The block may start after a first stats request reached the worker: ask until it is missing.
  let partial: ClusterStats | undefined
  let took = 0
  await until(async () => {
    const started = Date.now()
    partial = await stats(proc, 300)
    took = Date.now() - started
    return partial.missing.length > 0
  }, 3500, 'the blocked worker missing')
  t.true(took < 3000, `stats took ${took} ms`)
  t.deepEqual(partial!.missing, [mine])
  t.is(partial!.workers.length, 1)
  await blocked
})

test.serial('a worker killed with SIGKILL is replaced, and the port keeps serving', async (t) => {
  const { proc, port, workers } = await startCluster(t, { workers: 2, respawn: { initialDelay: 50 } })
  const clients = Array.from({ length: 4 }, () => client(t, port, true))
  const on = await Promise.all(clients.map(async (c) => ((await c.request('pid')) as Pid).pid))
  const victim = on[0]!
  const stop = deferred()
  // Paced by the handler (10 ms per call), so the load does not starve the specs running beside this one.
  const runs = clients.map((c) => load(c, 2, stop.promise, 'slow', 10))
  const from = proc.messages.length
  process.kill(victim, 'SIGKILL')
  const exit = await proc.next((m) => m.event === 'exit' && m.pid === victim, 10_000, from)
  t.is(exit.signal, 'SIGKILL')
  t.false(exit.expected)
  const respawn = await proc.event('respawn', 10_000, from)
  t.is(respawn.delay, 50)
  const replacement = await proc.event('listening', 15_000, from)
  t.not(replacement.pid, victim)
  // Calls keep being answered through it all, then by the new worker too.
  const survivor = workers.find((w) => w.pid !== victim)!.pid
  const seen = new Set<number>()
  await until(async () => {
    const c = client(t, port)
    seen.add(((await c.request('pid')) as Pid).pid)
    await c.close()
    return seen.has(replacement.pid as number) && seen.has(survivor)
  }, 15_000, 'both workers answering')
  const before = runs.reduce((n, r) => n + r.outcome.ok, 0)
  await until(() => runs.reduce((n, r) => n + r.outcome.ok, 0) > before + 40, 15_000, 'more calls')
  stop.resolve()
  await Promise.all(runs.map((r) => r.done))
  const failed = runs.flatMap((r) => r.outcome.failed)
  t.log(`${runs.reduce((n, r) => n + r.outcome.ok, 0)} calls answered, ${failed.length} failed, around one SIGKILL`)
  t.deepEqual(failed, [])
  t.false(seen.has(victim))
  const s = await stats(proc)
  t.is(s.respawns, 1)
  t.is(s.workers.length, 2)
})

test.serial('SIGHUP rolls every worker without failing a call; pipelined calls sent while draining may get UNAVAILABLE', async (t) => {
  const { proc, port, workers } = await startCluster(t, { workers: 2 })
  const stop = deferred()
  const sequential = Array.from({ length: 4 }, () => load(client(t, port, true), 1, stop.promise, 'slow', 20))
  const pipelined = load(client(t, port, true), 8, stop.promise, 'slow', 20)
  await until(() => sequential.every((r) => r.outcome.ok > 2) && pipelined.outcome.ok > 8, 15_000, 'load running')
  const from = proc.messages.length
  proc.child.kill('SIGHUP')
  const restarted = await proc.event('restarted', 30_000, from)
  t.is(restarted.generation, 1)
  const now = restarted.workers as Pid[]
  t.is(now.length, 2)
  t.true(now.every((w) => w.generation === 1))
  t.true(now.every((w) => !workers.some((o) => o.pid === w.pid)))
  const exits = proc.messages.slice(from).filter((m) => m.event === 'exit')
  t.is(exits.length, 2)
  t.true(exits.every((e) => e.expected === true && e.code === 0))
  // Every client reaches the new generation; then stop.
  await until(() => sequential.every((r) => r.outcome.generations.has(1)), 15_000, 'clients on the new generation')
  stop.resolve()
  await Promise.all([...sequential, pipelined].map((r) => r.done))
  const ok = sequential.reduce((n, r) => n + r.outcome.ok, 0)
  const failed = sequential.flatMap((r) => r.outcome.failed)
  t.log(`sequential clients: ${ok} calls answered, ${failed.length} failed across the roll`)
  const refused = pipelined.outcome.failed
  t.log(`pipelined client: ${pipelined.outcome.ok} answered, ${refused.length} refused (${[...new Set(refused)].join()})`)
  t.deepEqual(failed, [])
  // A call sent on a connection already draining was never run: it is refused with UNAVAILABLE, nothing else.
  t.true(pipelined.outcome.failed.every((code) => code === ErrorCode.UNAVAILABLE))
})

test.serial('SIGTERM drains every worker: the call in flight completes, the primary exits 0', async (t) => {
  const { proc, port } = await startCluster(t, { workers: 2, drainTimeout: 30_000 })
  const c = client(t, port)
  const slow = c.request('slow', 600)
  await until(async () => (await stats(proc)).total.requests.inFlight === 1, 10_000, 'the call in flight')
  const started = Date.now()
  proc.child.kill('SIGTERM')
  t.truthy(await slow)
  const { code, signal } = await proc.exited
  const took = Date.now() - started
  t.log(`exited ${took} ms after SIGTERM with a 600 ms call in flight`)
  t.is(code, 0)
  t.is(signal, null)
  t.true(took < 10_000) // graceful: far below the 30 s drain timeout
  const exits = proc.messages.filter((m) => m.event === 'exit')
  t.is(exits.length, 2)
  t.true(exits.every((e) => e.expected === true && e.code === 0))
  t.truthy(proc.messages.find((m) => m.event === 'closed'))
  const after = new PolyCallClient({ port, reconnect: false, connectTimeout: 2000 })
  t.teardown(() => after.destroy())
  await t.throwsAsync(after.request('pid'), { code: ErrorCode.CONNECT_FAILED })
})

test.serial('workers that keep dying are respawned with growing delays (restart-storm bound)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'polycall-cluster-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const flag = join(dir, 'crash')
  const { proc, port, workers } = await startCluster(
    t,
    { workers: 2, respawn: { initialDelay: 50, multiplier: 2, maxDelay: 200, resetAfter: 60_000 } },
    { CRASH_FLAG: flag },
  )
  await writeFile(flag, '1')
  const from = proc.messages.length
  process.kill(workers[0]!.pid, 'SIGKILL')
  // Each replacement exits right after listening: the delays grow, then stay at maxDelay.
  await until(() => proc.messages.slice(from).filter((m) => m.event === 'respawn').length >= 5, 60_000, 'five respawns')
  await unlink(flag)
  const respawns = proc.messages.slice(from).filter((m) => m.event === 'respawn')
  t.deepEqual(
    respawns.slice(0, 5).map((m) => m.delay),
    [50, 100, 200, 200, 200],
  )
  t.deepEqual(
    respawns.slice(0, 5).map((m) => m.failures),
    [1, 2, 3, 4, 5],
  )
  // Once the cause is gone the next replacement stays, and two workers serve again.
  await until(async () => {
    const s = await stats(proc)
    return s.workers.length === 2 && s.missing.length === 0
  }, 60_000, 'two workers again')
  const c = client(t, port)
  t.truthy(await c.request('pid'))
  const exits = proc.messages.slice(from).filter((m) => m.event === 'exit')
  // Each crash waited its delay: five crashes (and at most a few more before the flag was
  // seen gone), not hundreds.
  t.true(exits.length >= 5 && exits.length <= 8, `${exits.length} exits`)
})

test.serial('a rolling restart whose new worker cannot start stops; the old workers keep serving', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'polycall-cluster-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const flag = join(dir, 'fail')
  const { proc, port, workers } = await startCluster(t, { workers: 2 }, { FAIL_FLAG: flag })
  await writeFile(flag, '1')
  proc.send({ cmd: 'restart' })
  const failed = await proc.event('restart-failed', 30_000)
  t.regex(failed.message as string, /factory refuses/)
  const s = await stats(proc)
  t.deepEqual(s.workers.map((w) => w.pid).sort(), workers.map((w) => w.pid).sort())
  const c = client(t, port)
  t.is(((await c.request('pid')) as Pid).generation, 0)
  // Once the cause is fixed, a restart goes through.
  await unlink(flag)
  const from = proc.messages.length
  proc.send({ cmd: 'restart' })
  await proc.event('restart-done', 30_000, from)
  t.true((await stats(proc)).workers.every((w) => w.generation === 2))
})

test.serial('a worker that does not finish draining is killed after drainTimeout; the primary then exits 1', async (t) => {
  const { proc, port } = await startCluster(t, { workers: 1, drainTimeout: 300 })
  const c = client(t, port)
  t.truthy(await c.request('pid'))
  // A handler that blocks its event loop: the worker cannot even start closing.
  void c.request('block', 15_000).catch(() => {})
  await until(async () => (await stats(proc, 200)).missing.length === 1, 10_000, 'the worker blocked')
  const started = Date.now()
  proc.child.kill('SIGTERM')
  const { code } = await proc.exited
  const took = Date.now() - started
  t.log(`exited ${took} ms after SIGTERM (drainTimeout 300 ms + 5 s grace)`)
  t.is(code, 1)
  t.true(took >= 5000 && took < 14_000, `${took} ms`)
  const exit = proc.messages.find((m) => m.event === 'exit')!
  t.is(exit.signal, 'SIGKILL')
  t.true(exit.expected)
})

test.serial('a worker that cannot start fails serveCluster with LISTEN_FAILED: factory throws, port taken', async (t) => {
  const failing = new FixtureProcess(t, 'cluster-server.ts', [JSON.stringify({ workers: 1 })], { FAIL_FACTORY: '1' })
  const failed = await failing.event('start-failed', 30_000)
  t.is(failed.code, ErrorCode.LISTEN_FAILED)
  t.regex(failed.message as string, /factory refuses/)
  t.is((await failing.exited).code, 1)

  const taken = createServer()
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => taken.close(() => r())))
  const port = (taken.address() as { port: number }).port
  const busy = new FixtureProcess(t, 'cluster-server.ts', [JSON.stringify({ workers: 1, port })])
  const refused = await busy.event('start-failed', 30_000)
  t.is(refused.code, ErrorCode.LISTEN_FAILED)
  t.is((await busy.exited).code, 1)
})

test.serial('scheduling "os": workers accept on the shared socket themselves', async (t) => {
  const { proc, port } = await startCluster(t, { workers: 2, scheduling: 'os' })
  const clients = Array.from({ length: 20 }, () => client(t, port))
  const on = await Promise.all(clients.map(async (c) => ((await c.request('pid')) as Pid).pid))
  const spread = [...new Set(on)].map((pid) => on.filter((p) => p === pid).length)
  t.log(`20 connections over the workers: ${spread.join(' / ')}`)
  t.is(on.length, 20)
  t.is((await stats(proc)).total.connections.current, 20)
})

test('serveCluster checks its arguments before forking anything', async (t) => {
  const factory = () => new PolyCallServer()
  for (const options of [
    { workers: 0 },
    { workers: 1.5 },
    { port: 70_000 },
    { host: '' },
    { scheduling: 'random' },
    { startTimeout: -1 },
    { drainTimeout: Number.NaN },
    { respawn: { multiplier: 0.5 } },
    { respawn: 'often' },
    { signals: 'yes' },
  ]) {
    await t.throwsAsync(serveCluster(factory, options as ClusterOptions), { code: ErrorCode.INVALID_ARGUMENT }, JSON.stringify(options))
  }
  await t.throwsAsync(serveCluster('server' as never), { code: ErrorCode.INVALID_ARGUMENT })
})
