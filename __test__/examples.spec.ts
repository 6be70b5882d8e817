// The demo behind `npm start` and the shipped examples, run as real processes.
import test from 'ava'
import { execFile, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)
const file = (name: string) => fileURLToPath(new URL(`../examples/${name}`, import.meta.url))

test('npm start demo: handshake, auth, commands, state transitions, clean shutdown, exit 0', async (t) => {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', file('demo.ts')], { timeout: 60_000 })
  t.regex(stdout, /negotiated capabilities: Msgpack, Cancel, Heartbeat/)
  t.regex(stdout, /ERR_POLYCALL_UNAUTHENTICATED: authenticate before sending commands/)
  t.regex(stdout, /demo\/demo accepted/)
  t.regex(stdout, /100 answers, all correct: true/)
  t.regex(stdout, /INIT -> READY/)
  t.regex(stdout, /refused: ERR_POLYCALL_INVALID_TRANSITION/)
  t.regex(stdout, /closed cleanly/)
  // Client and server totals agree, or the demo says why not.
  t.regex(stdout, /the totals (agree|differ by 1: the session refused the command sent before authenticating)/)
})

test('the state-machine example drives the C demo machine and restores its snapshot', async (t) => {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', file('state-machine.ts')], { timeout: 60_000 })
  t.regex(stdout, /INIT -> READY/)
  t.regex(stdout, /ERR_POLYCALL_STATE_LOCKED \(errno 8\)/)
})

test('the client example against the server example', async (t) => {
  const server = spawn(process.execPath, ['--import', 'tsx', file('server.ts')], { env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => server.kill('SIGKILL'))
  const port = await new Promise<string>((resolve, reject) => {
    let out = ''
    server.stdout!.on('data', (c) => {
      out += String(c)
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out)
      if (m) resolve(m[1]!)
    })
    server.once('exit', () => reject(new Error('server exited')))
  })
  const { stdout } = await run(process.execPath, ['--import', 'tsx', file('client.ts')], { env: { ...process.env, PORT: port }, timeout: 60_000 })
  t.regex(stdout, /name: 'Ada'/)
  t.regex(stdout, /expected failure: ERR_APP_NOT_FOUND/)
  t.regex(stdout, /cancelled: ERR_POLYCALL_ABORTED/)
})

test('the in-memory testing example passes under the Node test runner', async (t) => {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--test', file('in-memory.test.ts')], { timeout: 60_000 })
  t.regex(stdout, /# pass 4/)
  t.regex(stdout, /# fail 0/)
})
