// The polycall command in real processes.
import test from 'ava'
import { spawn, execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'

const cli = fileURLToPath(new URL('../ts/cli.ts', import.meta.url))
const run = promisify(execFile)

async function polycall(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', cli, ...args], { timeout: 30_000 })
    return { code: 0, stdout, stderr }
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string }
    return { code: x.code, stdout: x.stdout, stderr: x.stderr }
  }
}

async function serve(t: import('ava').ExecutionContext, ...args: string[]): Promise<number> {
  const child = spawn(process.execPath, ['--import', 'tsx', cli, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  return new Promise<number>((resolve, reject) => {
    let out = ''
    // Keep reading stdout for the child's whole life so its writes never hit a closed pipe.
    child.stdout!.on('data', (chunk) => {
      out += String(chunk)
      const m = /listening on [\d.]+:(\d+)/.exec(out)
      if (m) resolve(Number(m[1]))
    })
    child.once('exit', () => reject(new Error(`serve exited: ${out}`)))
  })
}

test('decode prints every field and the checksum status; a bad frame exits 2 with its problem', async (t) => {
  const good = await polycall('decode', '01030800030000001e000000bb66e7ad7b22636f6d6d616e64223a22737461747573222c2264617461223a7b7d7d')
  t.is(good.code, 0)
  t.regex(good.stdout, /type\s+3 \(COMMAND\)/)
  t.regex(good.stdout, /sequence\s+3/)
  t.regex(good.stdout, /checksum\s+0xade766bb ok/)
  t.regex(good.stdout, /payload\s+\{"command":"status","data":\{\}\}/)
  const bad = await polycall('decode', '010308000900000005000000ee3db40668656c6c6f')
  t.is(bad.code, 2)
  t.regex(bad.stdout, /MISMATCH: payload sums to 0x06b43def/)
  t.regex(bad.stdout, /problem\s+ERR_POLYCALL_CHECKSUM_MISMATCH/)
  const short = await polycall('decode', '0103')
  t.is(short.code, 1)
  t.regex(short.stderr, /ERR_POLYCALL_TRUNCATED_HEADER/)
})

test('serve and call: results on stdout, remote errors on stderr with their code and exit 1', async (t) => {
  const port = await serve(t)
  const ok = await polycall('call', `127.0.0.1:${port}`, 'sum', '[1,2,3.5]')
  t.is(ok.code, 0)
  t.is(ok.stdout.trim(), '6.5')
  const echo = await polycall('call', `127.0.0.1:${port}`, 'echo', '{"a":[1,"x"]}')
  t.deepEqual(JSON.parse(echo.stdout), { a: [1, 'x'] })
  const bad = await polycall('call', `127.0.0.1:${port}`, 'sum', '"nope"')
  t.is(bad.code, 1)
  t.regex(bad.stderr, /^error ERR_APP_INVALID_INPUT: sum expects an array of numbers/)
  const missing = await polycall('call', `127.0.0.1:${port}`, '/missing')
  t.regex(missing.stderr, /ERR_POLYCALL_NOT_FOUND/)
})

test('serve with a user requires authentication; call passes --user/--password', async (t) => {
  const port = await serve(t, '--user', 'ada', '--password', 'pw')
  const anon = await polycall('call', `127.0.0.1:${port}`, 'status')
  t.is(anon.code, 1)
  t.regex(anon.stderr, /ERR_POLYCALL_UNAUTHENTICATED/)
  const wrong = await polycall('call', `127.0.0.1:${port}`, 'status', '--user', 'ada', '--password', 'nope')
  t.regex(wrong.stderr, /ERR_POLYCALL_UNAUTHENTICATED/)
  t.false(wrong.stderr.includes('nope'))
  const good = await polycall('call', `127.0.0.1:${port}`, 'status', '--user', 'ada', '--password', 'pw')
  t.is(good.code, 0)
  t.deepEqual(JSON.parse(good.stdout).principal, { user: 'ada' })
})

test('usage errors exit 1 with the usage text', async (t) => {
  const none = await polycall()
  t.is(none.code, 1)
  t.regex(none.stdout, /usage:/)
  const unknown = await polycall('frobnicate')
  t.is(unknown.code, 1)
  t.regex(unknown.stderr, /unknown command frobnicate/)
  const badEndpoint = await polycall('call', 'nowhere', 'x')
  t.regex(badEndpoint.stderr, /expected <host:port>/)
  const refused = await polycall('call', '127.0.0.1:1', 'x', '--timeout', '2000')
  t.is(refused.code, 1)
  t.regex(refused.stderr, /ERR_POLYCALL_CONNECT_FAILED/)
})

test('PCR1: serve --protocol pcr1 and call with the C client exit-code contract (0, 3, 4, 5, 6, 7, 1)', async (t) => {
  const port = await serve(t, '--protocol', 'pcr1', '--token', 'tok')
  const at = `127.0.0.1:${port}`
  const ok = await polycall('call', '--protocol', 'pcr1', at, 'inventory.get', '{"item_id":"widget-a"}')
  t.is(ok.code, 0)
  t.deepEqual(JSON.parse(ok.stdout), { item_id: 'widget-a', quantity: 42, in_stock: true })
  t.is((await polycall('call', '--protocol', 'pcr1', at, 'inventory.get', '{"item_id":7}')).code, 3)
  t.is((await polycall('call', '--protocol', 'pcr1', at, 'inventory.get', 'not json')).code, 3)
  t.is((await polycall('call', '--protocol', 'pcr1', at, 'inventory.get', '{"item_id":"nope"}')).code, 4)
  t.is((await polycall('call', '--protocol', 'pcr1', at, 'nothing.here', '{}')).code, 4)
  t.is((await polycall('call', '--protocol', 'pcr1', at, 'debug.sleep', '{"ms":3000}', '--timeout', '200')).code, 6)
  t.is((await polycall('call', '--protocol', 'pcr1', '127.0.0.1:1', 'debug.echo', '{}')).code, 5)
  const denied = await polycall('control', '--protocol', 'pcr1', at, 'shutdown', '--token', 'bad')
  t.is(denied.code, 7)
  t.regex(denied.stderr, /auth\.denied/)
  const ping = await polycall('control', at, 'ping')
  t.deepEqual(JSON.parse(ping.stdout), { pong: true, abi: 1 })
  t.is((await polycall('control', at, 'frobnicate')).code, 1)
})
