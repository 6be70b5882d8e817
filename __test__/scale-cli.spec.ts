// `polycall serve --workers N` as a real process tree: a cluster primary and N workers on one port.
import test from 'ava'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { PolyCallClient } from '../ts/index.js'

const cli = fileURLToPath(new URL('../ts/cli.ts', import.meta.url))
const run = promisify(execFile)

/** The pids of a process's children, read from /proc (Linux), or undefined elsewhere. */
function children(pid: number): number[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return undefined
  }
}

async function until<T>(check: () => T | undefined | false, timeout: number, what: string | (() => string)): Promise<T> {
  const end = Date.now() + timeout
  for (;;) {
    const v = check()
    if (v) return v
    if (Date.now() > end) throw new Error(`${typeof what === 'string' ? what : what()} within ${timeout} ms`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

function serveWorkers(t: import('ava').ExecutionContext, ...args: string[]): Promise<{ child: ChildProcess; port: number; out: () => string; errors: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', cli, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let errors = ''
  child.stderr!.on('data', (c) => (errors += String(c)))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(killer)
    }
  })
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (chunk) => {
      out += String(chunk)
      const m = /listening on [\d.]+:(\d+) with (\d+) workers?/.exec(out)
      if (m) resolve({ child, port: Number(m[1]), out: () => out, errors: () => errors })
    })
    child.once('exit', () => reject(new Error(`serve exited: ${out} ${errors}`)))
  })
}

test('serve --workers 2: two worker processes share the port, a killed worker is replaced, SIGTERM drains and exits 0', async (t) => {
  const { child, port, out, errors } = await serveWorkers(t, '--workers', '2')
  t.regex(out(), /with 2 workers/)
  const pid = child.pid!
  const first = await until(() => (children(pid)?.length === 2 ? children(pid) : undefined), 20_000, 'two workers')
  // Both workers serve: connections are handed out round robin, so several clients reach both.
  const clients = Array.from({ length: 4 }, () => new PolyCallClient({ host: '127.0.0.1', port, reconnect: false }))
  t.teardown(() => Promise.all(clients.map((c) => c.close())))
  const answers = await Promise.all(clients.map((c) => c.request('echo', 'hi', { timeout: 5000 })))
  t.deepEqual(answers, ['hi', 'hi', 'hi', 'hi'])
  await Promise.all(clients.map((c) => c.close()))

  // A worker that dies is replaced on the same port.
  process.kill(first[0]!, 'SIGKILL')
  const replaced = await until(
    () => {
      const now = children(pid)
      return now?.length === 2 && !now.includes(first[0]!) ? now : undefined
    },
    20_000,
    'a replacement worker',
  )
  t.true(replaced.includes(first[1]!))
  await until(() => /exited \(SIGKILL\); replacing it/.test(errors()), 5000, () => `the exit reported (stderr: ${errors()}; stdout: ${out()})`)
  const again = new PolyCallClient({ host: '127.0.0.1', port, reconnect: false })
  t.teardown(() => again.close())
  t.is(await again.request('echo', 'back', { timeout: 5000 }), 'back')
  await again.close()

  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const [code] = (await exited) as [number | null]
  t.is(code, 0)
  for (const w of replaced) t.throws(() => process.kill(w, 0))
})

test('serve --workers with a bad count exits 1 with a message', async (t) => {
  for (const bad of ['0', 'two', '1.5']) {
    const r = await run(process.execPath, ['--import', 'tsx', cli, 'serve', '--port', '0', '--workers', bad], { timeout: 30_000 }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    )
    t.is(r.code, 1)
    t.regex(r.stderr, /--workers must be an integer in 1\.\.1024/)
  }
})
