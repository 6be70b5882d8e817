// The multi-endpoint client against real servers on loopback: balancing shares, ejection and
// return, failover of idempotent calls, coded failure of non-idempotent ones, draining servers,
// endpoint functions.
import test, { type ExecutionContext } from 'ava'
import { once } from 'node:events'
import { createServer, type Server } from 'node:net'
import { ErrorCode, PolyCallClient, PolyCallError, PolyCallServer, isPolyCallError, type MultiEndpointOptions } from '../ts/index.js'

interface Upstream {
  name: string
  server: PolyCallServer
  port: number
  /** Handler runs per route, counted when the handler starts. */
  runs: Map<string, number>
  /** While true, `work` throws (the caller sees ERR_POLYCALL_INTERNAL). */
  failing: boolean
  /** Ends the `hold` calls. */
  release: () => void
}

async function upstream(t: ExecutionContext, name: string, delayMs = 0): Promise<Upstream> {
  const server = new PolyCallServer({ onError: () => {} })
  let held: Promise<void> = new Promise(() => {})
  const u: Upstream = { name, server, port: 0, runs: new Map(), failing: false, release: () => {} }
  held = new Promise<void>((r) => (u.release = r))
  server.route('hold', async () => {
    count('hold')
    await held
    return name
  })
  const count = (k: string) => u.runs.set(k, (u.runs.get(k) ?? 0) + 1)
  server.route('who', () => {
    count('who')
    return name
  })
  server.route('work', async (ctx) => {
    count('work')
    count(`work:${String(ctx.data)}`)
    if (u.failing) throw new Error('broken')
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs))
    return name
  })
  server.route('slow', async (ctx) => {
    count('slow')
    count(`slow:${String(ctx.data)}`)
    await new Promise((r) => setTimeout(r, 300))
    return name
  })
  u.port = (await server.listen(0, '127.0.0.1')).port
  t.teardown(() => server.destroy())
  return u
}

function pool(t: ExecutionContext, options: MultiEndpointOptions): PolyCallClient {
  const client = new PolyCallClient({ reconnect: { initialDelay: 50, maxDelay: 200 }, ...options })
  t.teardown(() => client.destroy())
  return client
}

/** A bounded poll on the client's own figures (no sleeps as synchronisation). */
async function until(check: () => boolean, what: string, timeout = 10_000): Promise<void> {
  const end = Date.now() + timeout
  while (!check()) {
    if (Date.now() > end) throw new Error(`${what} within ${timeout} ms`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

const ready = (client: PolyCallClient, n: number) =>
  until(() => (client.stats().endpoints ?? []).filter((e) => e.state === 'ready').length === n, `${n} endpoints ready`)

async function connectAll(client: PolyCallClient, n: number): Promise<void> {
  await client.connect()
  // Calls bring the others up; wait until every endpoint has its connection.
  await client.request('who', undefined, { timeout: 5000 })
  await ready(client, n)
}

const tally = (names: string[]) => names.reduce<Record<string, number>>((m, n) => ((m[n] = (m[n] ?? 0) + 1), m), {})

test('round-robin: each ready endpoint in turn, an exact share of sequential calls', async (t) => {
  const ups = await Promise.all(['a', 'b', 'c'].map((n) => upstream(t, n)))
  const client = pool(t, { endpoints: ups.map((u) => `127.0.0.1:${u.port}`) })
  await connectAll(client, 3)
  const names: string[] = []
  for (let i = 0; i < 300; i++) names.push(await client.request<string>('who'))
  t.deepEqual(tally(names), { a: 100, b: 100, c: 100 })
  const stats = client.stats()
  t.is(stats.endpoints!.length, 3)
  t.true(stats.endpoints!.every((e) => e.state === 'ready' && e.connections === 1 && e.failed === 0))
  t.is(stats.requests.succeeded, 301 + 0)
})

test('least-in-flight: a slow endpoint gets a small share, round-robin gives it a third', async (t) => {
  const slow = await upstream(t, 'slow', 60)
  const fast = await Promise.all(['b', 'c'].map((n) => upstream(t, n)))
  const ups = [slow, ...fast]
  const run = async (balance: 'least-in-flight' | 'round-robin') => {
    const client = pool(t, { endpoints: ups.map((u) => ({ host: '127.0.0.1', port: u.port })), balance })
    await connectAll(client, 3)
    const names: string[] = []
    // Six calls in flight at a time, 120 in all.
    let next = 0
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        while (next < 120) {
          next++
          names.push(await client.request<string>('work', next))
        }
      }),
    )
    await client.close()
    return tally(names)
  }
  const lif = await run('least-in-flight')
  t.true((lif.slow ?? 0) < 24, `least-in-flight share of the slow endpoint: ${JSON.stringify(lif)}`)
  t.true((lif.b ?? 0) > 40 && (lif.c ?? 0) > 40, JSON.stringify(lif))
  const rr = await run('round-robin')
  t.true(Math.abs((rr.slow ?? 0) - 40) <= 2, `round robin: ${JSON.stringify(rr)}`)
})

test('pick-first: the first ready endpoint takes every call; the next one when it goes', async (t) => {
  const ups = await Promise.all(['a', 'b', 'c'].map((n) => upstream(t, n)))
  const client = pool(t, { endpoints: ups.map((u) => `127.0.0.1:${u.port}`), balance: 'pick-first' })
  await connectAll(client, 3)
  const names: string[] = []
  for (let i = 0; i < 20; i++) names.push(await client.request<string>('who'))
  t.deepEqual(tally(names), { a: 21 - 1 })
  ups[0]!.server.destroy()
  await until(() => client.stats().endpoints![0]!.state !== 'ready', 'a is seen down')
  for (let i = 0; i < 10; i++) t.is(await client.request('who'), 'b')
})

test('connectionsPerEndpoint opens that many connections to each endpoint and spreads calls over them', async (t) => {
  const ups = await Promise.all(['a', 'b'].map((n) => upstream(t, n)))
  const client = pool(t, { endpoints: ups.map((u) => `127.0.0.1:${u.port}`), connectionsPerEndpoint: 3 })
  await client.connect()
  await Promise.all(Array.from({ length: 30 }, (_, i) => client.request('work', i)))
  await until(() => client.stats().endpoints!.every((e) => e.connections === 3), 'three connections each')
  for (const u of ups) t.is(u.server.stats().connections.current, 3)
})

test('ejection: failures in a row eject an endpoint for baseTime, it takes calls again after; never all', async (t) => {
  const ups = await Promise.all(['a', 'b', 'c'].map((n) => upstream(t, n)))
  const client = pool(t, { endpoints: ups.map((u) => `127.0.0.1:${u.port}`), ejection: { consecutiveFailures: 3, baseTime: 400 } })
  await connectAll(client, 3)
  const events: string[] = []
  client.on('eject', (e) => events.push(`eject ${e.endpoint} ${e.failures} ${e.duration}`))
  client.on('restore', (e) => events.push(`restore ${e.endpoint}`))
  const b = ups[1]!
  const bId = `127.0.0.1:${b.port}`
  b.failing = true
  const ejected = once(client, 'eject')
  const codes: string[] = []
  // Round robin: every third call reaches b; three in a row fail there, then b is ejected.
  for (let i = 0; i < 9; i++) {
    await client.request('work', i).then(
      () => codes.push('ok'),
      (e: PolyCallError) => codes.push(e.code),
    )
  }
  await ejected
  t.is(codes.filter((c) => c === ErrorCode.INTERNAL).length, 3)
  t.deepEqual(events, [`eject ${bId} 3 400`])
  const before = b.runs.get('work') ?? 0
  // While ejected, b gets nothing.
  for (let i = 0; i < 12; i++) t.not(await client.request('work', i), 'b')
  t.is(b.runs.get('work') ?? 0, before)
  t.is(client.stats().endpoints!.find((e) => e.endpoint === bId)!.state, 'ejected')
  b.failing = false
  await once(client, 'restore')
  const after: string[] = []
  for (let i = 0; i < 6; i++) after.push(await client.request<string>('work', i))
  t.is(tally(after).b, 2)
  t.deepEqual(events, [`eject ${bId} 3 400`, `restore ${bId}`])

  // Every endpoint failing: at most half of them are ejected at once (here: one of three).
  for (const u of ups) u.failing = true
  let maxEjected = 0
  for (let i = 0; i < 30; i++) {
    await client.request('work', i).catch(() => {})
    maxEjected = Math.max(maxEjected, client.stats().endpoints!.filter((e) => e.state === 'ejected').length)
  }
  t.is(maxEjected, 1)
})

test('failover: idempotent calls lost with their endpoint are retried on another, non-idempotent ones fail with CONNECTION_LOST (written)', async (t) => {
  const ups = await Promise.all(['a', 'b', 'c'].map((n) => upstream(t, n)))
  const client = pool(t, { endpoints: ups.map((u) => `127.0.0.1:${u.port}`), ejection: false })
  await connectAll(client, 3)
  const a = ups[0]!
  // 30 calls of each kind in flight, a third of them on a.
  const started = Array.from({ length: 60 }, (_, i) =>
    client.request<string>('slow', i, { idempotent: i % 2 === 0, timeout: 5000 }).then(
      (v) => ({ i, ok: true as const, v }),
      (e: PolyCallError & { written?: boolean }) => ({ i, ok: false as const, code: e.code, written: e.written }),
    ),
  )
  await until(() => (a.runs.get('slow') ?? 0) === 20, 'twenty calls running on a')
  a.server.destroy()
  const outcomes = await Promise.all(started)
  const idem = outcomes.filter((o) => o.i % 2 === 0)
  const plain = outcomes.filter((o) => o.i % 2 === 1)
  // Every idempotent call succeeded; the ten that were on a ran again on b or c.
  t.true(idem.every((o) => o.ok && o.v !== 'a'), JSON.stringify(idem.filter((o) => !o.ok)))
  // The non-idempotent ones on a failed with a code that says they had been sent.
  const lost = plain.filter((o) => !o.ok)
  t.is(lost.length, 10)
  t.true(lost.every((o) => !o.ok && o.code === ErrorCode.CONNECTION_LOST && o.written === true))
  t.true(plain.filter((o) => o.ok).every((o) => o.ok && o.v !== 'a'))
  t.is(client.stats().requests.retried, 10)
  t.is(client.stats().endpoints!.find((e) => e.endpoint === `127.0.0.1:${a.port}`)!.failovers, 10)
})

test('a draining server refuses with UNAVAILABLE; those calls never ran and go to another endpoint, idempotent or not', async (t) => {
  const ups = await Promise.all(['a', 'b'].map((n) => upstream(t, n)))
  const client = pool(t, { endpoints: ups.map((u) => `127.0.0.1:${u.port}`), ejection: false })
  await connectAll(client, 2)
  const a = ups[0]!
  // A call keeps a's connection open while it drains.
  const pinned: Promise<string>[] = []
  for (let i = 0; i < 2; i++) pinned.push(client.request<string>('hold', `pin${i}`, { timeout: 10_000 }))
  await until(() => (a.runs.get('hold') ?? 0) === 1 && (ups[1]!.runs.get('hold') ?? 0) === 1, 'a call held on each')
  const closing = a.server.close()
  const names: string[] = []
  for (let i = 0; i < 10; i++) names.push(await client.request<string>('work', `d${i}`))
  t.deepEqual(tally(names), { b: 10 })
  // Some of them reached a first and were refused there without running.
  t.true(client.stats().requests.retried >= 1)
  for (let i = 0; i < 10; i++) t.is(a.runs.get(`work:d${i}`), undefined)
  for (const u of ups) u.release()
  t.deepEqual((await Promise.all(pinned)).sort(), ['a', 'b'])
  await closing
})

test('an endpoint function is read at start, on its schedule and after failures; a throw keeps the list', async (t) => {
  const ups = await Promise.all(['a', 'b'].map((n) => upstream(t, n)))
  let list = [`127.0.0.1:${ups[0]!.port}`]
  let reads = 0
  let fail = false
  const client = pool(t, {
    endpoints: async () => {
      reads++
      if (fail) throw new Error('discovery is down')
      return list
    },
    refreshInterval: 100,
  })
  t.is(await client.request('who'), 'a')
  const changes: { added: string[]; removed: string[]; error?: string }[] = []
  client.on('endpoints', (e) => changes.push({ added: e.added, removed: e.removed, ...(e.error ? { error: e.error.code } : {}) }))
  list = [`127.0.0.1:${ups[0]!.port}`, `127.0.0.1:${ups[1]!.port}`]
  await once(client, 'endpoints')
  await ready(client, 2)
  const names: string[] = []
  for (let i = 0; i < 10; i++) names.push(await client.request<string>('who'))
  t.deepEqual(tally(names), { a: 5, b: 5 })
  fail = true
  await until(() => changes.some((c) => c.error), 'a failed read reported')
  t.deepEqual(changes[1], { added: [], removed: [], error: ErrorCode.CONNECT_FAILED })
  t.is(client.stats().endpoints!.length, 2)
  fail = false
  list = [`127.0.0.1:${ups[1]!.port}`]
  await until(() => client.stats().endpoints!.length === 1, 'a removed')
  for (let i = 0; i < 5; i++) t.is(await client.request('who'), 'b')
  t.true(reads >= 4)
})

test('before any endpoint connected, calls fail at once with CONNECT_FAILED when none can be reached', async (t) => {
  const closed: Server[] = []
  const ports: number[] = []
  for (let i = 0; i < 2; i++) {
    const s = createServer()
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
    ports.push((s.address() as { port: number }).port)
    closed.push(s)
  }
  await Promise.all(closed.map((s) => new Promise((r) => s.close(r))))
  const client = pool(t, { endpoints: ports.map((p) => `127.0.0.1:${p}`), reconnect: false })
  const err = await t.throwsAsync(client.request('who', undefined, { timeout: 5000 }))
  t.true(isPolyCallError(err))
  t.is((err as PolyCallError).code, ErrorCode.CONNECT_FAILED)
  await t.throwsAsync(client.connect(), { code: ErrorCode.CONNECT_FAILED })
})

test('option checks', (t) => {
  t.throws(() => new PolyCallClient({ endpoints: [] }), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => new PolyCallClient({ endpoints: ['nope'] }), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => new PolyCallClient({ endpoints: ['127.0.0.1:0'] }), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => new PolyCallClient({ endpoints: ['127.0.0.1:1'], balance: 'random' as 'pick-first' }), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => new PolyCallClient({ endpoints: ['127.0.0.1:1'], connectionsPerEndpoint: 0 }), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => new PolyCallClient({ endpoints: ['127.0.0.1:1'], port: 1 } as unknown as MultiEndpointOptions), { code: ErrorCode.INVALID_ARGUMENT })
  const c = new PolyCallClient({ endpoints: ['[::1]:7000', { host: '127.0.0.1', port: 7001 }] })
  t.is(c.host, '::1')
  t.is(c.port, 7000)
  t.deepEqual(
    c.stats().endpoints!.map((e) => e.endpoint),
    ['[::1]:7000', '127.0.0.1:7001'],
  )
  c.destroy()
})
