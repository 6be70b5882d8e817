// Servers in separate processes, killed and restarted for real.
import test from 'ava'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { ErrorCode, PolyCallClient, type PolyCallError } from '../ts/index.js'

const fixture = fileURLToPath(new URL('./fixtures/server-process.ts', import.meta.url))

async function spawnServer(t: import('ava').ExecutionContext, port = 0, tag = 'server'): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, String(port), tag], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  let out = ''
  for await (const chunk of child.stdout!) {
    out += String(chunk)
    const m = /ready (\d+)/.exec(out)
    if (m) return { child, port: Number(m[1]) }
  }
  throw new Error(`server process exited: ${out}`)
}

test('a server killed mid-request: pending calls settle with CONNECTION_LOST (written) well before their deadline', async (t) => {
  const { child, port } = await spawnServer(t)
  const client = new PolyCallClient({ port, reconnect: false })
  t.teardown(() => client.destroy())
  t.is(await client.request('ok'), 'server')
  const started = Date.now()
  const pending = [1, 2, 3].map(() => client.request('slow', undefined, { timeout: 20_000 }))
  await new Promise((r) => setTimeout(r, 100))
  child.kill('SIGKILL')
  const results = await Promise.allSettled(pending)
  for (const r of results) {
    t.is(r.status, 'rejected')
    const err = (r as PromiseRejectedResult).reason as PolyCallError & { written?: boolean }
    t.is(err.code, ErrorCode.CONNECTION_LOST)
    t.true(err.written)
  }
  t.true(Date.now() - started < 20_000)
})

test('reconnect after restart: the client comes back to a new server process on the same port', async (t) => {
  const first = await spawnServer(t, 0, 'first')
  const client = new PolyCallClient({ port: first.port, reconnect: { initialDelay: 50, maxDelay: 200 } })
  t.teardown(() => client.destroy())
  t.is(await client.request('ok'), 'first')
  const disconnected = once(client, 'disconnect')
  const exited = once(first.child, 'exit')
  first.child.kill('SIGKILL')
  await Promise.all([disconnected, exited])
  const second = await spawnServer(t, first.port, 'second')
  t.is(second.port, first.port)
  t.is(await client.request('ok', undefined, { timeout: 10_000 }), 'second')
  t.is(await client.request('pid'), second.child.pid)
  t.true(client.stats().reconnects >= 1)
})
