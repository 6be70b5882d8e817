// A refused connection fails fast and says why; a client with work pending keeps the process
// alive, an idle one does not. The process-lifetime cases run as real child processes.
import test, { type ExecutionContext } from 'ava'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { fileURLToPath } from 'node:url'
import { ErrorCode, PolyCallClient, PolyCallServer, type PolyCallError, type ServerOptions } from '../../ts/index.js'

const root = fileURLToPath(new URL('../..', import.meta.url))

/** A port on 127.0.0.1 that nothing listens on (bound once, then closed). */
async function closedPort(): Promise<number> {
  const probe: Server = createServer()
  probe.listen(0, '127.0.0.1')
  await once(probe, 'listening')
  const { port } = probe.address() as { port: number }
  await new Promise<void>((r) => probe.close(() => r()))
  return port
}

async function startServer(
  t: ExecutionContext,
  setup: (s: PolyCallServer) => void = () => {},
  port = 0,
  options: ServerOptions = {},
): Promise<{ server: PolyCallServer; port: number }> {
  const server = new PolyCallServer(options)
  setup(server)
  const info = await server.listen(port, '127.0.0.1')
  t.teardown(() => server.close({ timeout: 1000 }))
  return { server, port: info.port }
}

interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/**
 * Runs `body` as an ES module in a fresh Node process (`PolyCallClient`, `PolyCallServer` and
 * `PORT` in scope) and waits for it to exit by itself; after `limit` ms it is killed, which the
 * result shows as `signal: 'SIGKILL'`.
 */
async function run(t: ExecutionContext, body: string, port: number, limit = 15_000): Promise<Exit> {
  const source = `import { PolyCallClient, PolyCallServer } from './ts/index.ts'\nconst PORT = ${port}\n${body}`
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', source], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c: Buffer) => (stdout += String(c)))
  child.stderr.on('data', (c: Buffer) => (stderr += String(c)))
  const killer = setTimeout(() => child.kill('SIGKILL'), limit)
  const [code, signal] = await exited
  clearTimeout(killer)
  return { code, signal, stdout: stdout.trim(), stderr: stderr.trim() }
}

test('a refused first connection rejects the waiting call at once with CONNECT_FAILED and ECONNREFUSED as cause', async (t) => {
  const port = await closedPort()
  const client = new PolyCallClient({ port }) // default options: reconnection on, 5 s timeout
  t.teardown(() => client.close())
  const started = performance.now()
  const err = (await t.throwsAsync(client.request('x'))) as PolyCallError
  const took = performance.now() - started
  t.is(err.code, ErrorCode.CONNECT_FAILED)
  t.is((err.cause as NodeJS.ErrnoException | undefined)?.code, 'ECONNREFUSED')
  t.regex(err.message, /retrying in the background/)
  t.true(took < 1000, `rejected after ${took.toFixed(0)} ms`)
})

test('connect() to a refused port rejects at once the same way; without reconnection the message says nothing of retries', async (t) => {
  const port = await closedPort()
  for (const reconnect of [true, false]) {
    const client = new PolyCallClient({ port, reconnect })
    t.teardown(() => client.close())
    const started = performance.now()
    const err = (await t.throwsAsync(client.connect())) as PolyCallError
    const took = performance.now() - started
    t.is(err.code, ErrorCode.CONNECT_FAILED)
    t.is((err.cause as NodeJS.ErrnoException | undefined)?.code, 'ECONNREFUSED')
    t.is(/retrying in the background/.test(err.message), reconnect)
    t.true(took < 1000, `rejected after ${took.toFixed(0)} ms`)
  }
})

test('every call waiting on the failed attempt rejects with it; calls during the backoff fail fast; the background retry serves later calls', async (t) => {
  const port = await closedPort()
  const client = new PolyCallClient({ port, reconnect: { initialDelay: 2000, multiplier: 1, jitter: 0 } })
  t.teardown(() => client.close())
  const failures: PolyCallError[] = []
  client.on('reconnecting', ({ error }) => failures.push(error))
  const results = await Promise.allSettled([1, 2, 3].map(() => client.request('x', undefined, { timeout: 5000 })))
  for (const r of results) t.is(((r as PromiseRejectedResult).reason as PolyCallError).code, ErrorCode.CONNECT_FAILED)
  t.is(failures.length, 1, 'one attempt for all three calls')
  // No attempt runs until the backoff ends: a call now fails at once with the last failure.
  let started = performance.now()
  const fast = (await t.throwsAsync(client.request('x', undefined, { timeout: 5000 }))) as PolyCallError
  t.is(fast.code, ErrorCode.CONNECT_FAILED)
  t.is((fast.cause as NodeJS.ErrnoException | undefined)?.code, 'ECONNREFUSED')
  t.regex(fast.message, /next attempt in \d+ ms/)
  t.true(performance.now() - started < 1000)
  t.is(failures.length, 1, 'a failing-fast call makes no attempt')
  // connect() does not wait for the backoff: it makes an attempt now.
  started = performance.now()
  t.is(((await t.throwsAsync(client.connect())) as PolyCallError).code, ErrorCode.CONNECT_FAILED)
  t.true(performance.now() - started < 1000, 'well before the scheduled attempt')
  t.is(failures.length, 2)
  // The server comes up; the background retry connects; calls from then on are served.
  const connected = once(client, 'connect')
  await startServer(t, (s) => s.route('x', () => 'served'), port)
  await connected
  t.is(await client.request('x'), 'served')
})

test('after a connection was established, a lost one is retried for idempotent calls as before', async (t) => {
  const first = await startServer(t, (s) => s.route('x', () => 'first'))
  const client = new PolyCallClient({ port: first.port, reconnect: { initialDelay: 20, maxDelay: 50 } })
  t.teardown(() => client.close())
  t.is(await client.request('x'), 'first')
  const lost = once(client, 'disconnect')
  first.server.destroy()
  await lost
  // Waits for the reconnect within its own timeout (no fail-fast: the client was connected once).
  const call = client.request('x', undefined, { idempotent: true, timeout: 5000 })
  await once(client, 'reconnecting')
  await startServer(t, (s) => s.route('x', () => 'second'), first.port)
  t.is(await call, 'second')
})

test('a script whose only pending work is a call to a closed port prints the coded rejection and exits 0', async (t) => {
  const port = await closedPort()
  const out = await run(
    t,
    `const client = new PolyCallClient({ port: PORT })
try { await client.request('x') } catch (e) { console.log(e.code, e.cause?.code) }`,
    port,
  )
  t.is(out.signal, null)
  t.is(out.code, 0, out.stderr)
  t.is(out.stdout, `${ErrorCode.CONNECT_FAILED} ECONNREFUSED`)
})

test('a .then()-only script settles its call (and connect()) before it exits', async (t) => {
  const port = await closedPort()
  const out = await run(
    t,
    `const client = new PolyCallClient({ port: PORT })
client.request('x').then(() => console.log('resolved'), (e) => console.log('request', e.code))
new PolyCallClient({ port: PORT, reconnect: false }).connect().then(() => console.log('connected'), (e) => console.log('connect', e.code))`,
    port,
  )
  t.is(out.code, 0, out.stderr)
  t.deepEqual(out.stdout.split('\n').sort(), [`connect ${ErrorCode.CONNECT_FAILED}`, `request ${ErrorCode.CONNECT_FAILED}`])
})

const tlsFixture = (name: string) => readFileSync(new URL(`../fixtures/tls/${name}`, import.meta.url))

for (const tls of [false, true]) {
  const over = tls ? ' (TLS)' : ''
  const serverOptions = tls ? { tls: { key: tlsFixture('server.key'), cert: tlsFixture('server.crt') } } : {}
  // The child reads the CA itself; the path goes in as a string literal.
  const clientOptions = tls ? `{ port: PORT, tls: { ca: (await import('node:fs')).readFileSync(${JSON.stringify(fileURLToPath(new URL('../fixtures/tls/ca.crt', import.meta.url)))}) } }` : '{ port: PORT }'

  test(`an idle connected client does not keep the process alive${over}`, async (t) => {
    const { port } = await startServer(t, (s) => s.route('ok', () => 'ok'), 0, serverOptions)
    const out = await run(
      t,
      `const client = new PolyCallClient(${clientOptions})
console.log(await client.request('ok'))`,
      port,
    )
    t.is(out.signal, null, 'exited by itself')
    t.is(out.code, 0, out.stderr)
    t.is(out.stdout, 'ok')
  })

  test(`a pending call on a silent connection keeps the process alive until its timeout settles it${over}`, async (t) => {
    const { port } = await startServer(t, (s) => s.route('hang', () => new Promise(() => {})), 0, serverOptions)
    // connect() leaves the client idle (its socket unref'd); the call makes it busy again.
    const out = await run(
      t,
      `const client = new PolyCallClient(${clientOptions})
await client.connect()
client.request('hang', undefined, { timeout: 300 }).then(() => console.log('resolved'), (e) => console.log(e.code))`,
      port,
    )
    t.is(out.code, 0, out.stderr)
    t.is(out.stdout, ErrorCode.TIMEOUT)
  })
}

test('a call waiting for a reconnect keeps the process alive until it settles', async (t) => {
  // The child connects, the server goes away, and an idempotent call waits for the reconnect:
  // only the backoff timer is left, which must hold the process until the call's timeout.
  let closeServer!: () => void
  const { server, port } = await startServer(t, (s) =>
    s.route('ok', () => {
      setImmediate(() => closeServer())
      return 'ok'
    }),
  )
  closeServer = () => void server.destroy()
  const out = await run(
    t,
    `const client = new PolyCallClient({ port: PORT, reconnect: { initialDelay: 5000 } })
await client.request('ok')
// An idle client holds nothing: the script keeps itself alive until the server is gone.
const keep = setInterval(() => {}, 1000)
await new Promise((r) => client.once('disconnect', r))
clearInterval(keep)
client.request('ok', undefined, { timeout: 400, idempotent: true }).then(() => console.log('resolved'), (e) => console.log(e.code))`,
    port,
  )
  t.is(out.code, 0, out.stderr)
  t.is(out.stdout, ErrorCode.TIMEOUT)
})

test('destroy() ends a connection attempt in progress: the socket goes at once, not at connectTimeout', async (t) => {
  // A server that accepts and never answers the hello: the attempt hangs in its handshake.
  let closed!: () => void
  const serverSawClose = new Promise<void>((r) => (closed = r))
  const silent: Server = createServer((socket) => socket.on('close', () => closed()).on('error', () => {}))
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  t.teardown(() => new Promise<void>((r) => silent.close(() => r())))
  const client = new PolyCallClient({ port: (silent.address() as { port: number }).port, connectTimeout: 30_000 })
  const connecting = client.connect()
  await once(silent, 'connection')
  const started = performance.now()
  client.destroy()
  t.is(((await t.throwsAsync(connecting)) as PolyCallError).code, ErrorCode.CLOSED)
  await serverSawClose
  t.true(performance.now() - started < 1000, `the server saw the close after ${(performance.now() - started).toFixed(0)} ms`)
})

test('a .then()-only close() of a connected client settles before the process exits', async (t) => {
  const { port } = await startServer(t, (s) => s.route('ok', () => 'ok'))
  const out = await run(
    t,
    `const client = new PolyCallClient({ port: PORT })
client.request('ok').then((v) => {
  console.log(v)
  client.close().then(() => console.log('closed', client.closed))
})`,
    port,
  )
  t.is(out.code, 0, out.stderr)
  t.deepEqual(out.stdout.split('\n'), ['ok', 'closed true'])
})
