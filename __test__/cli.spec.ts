// The polycall command in real processes.
import test from 'ava'
import { spawn, execFile } from 'node:child_process'
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const cli = join(root, 'ts', 'cli.ts')
const run = promisify(execFile)
const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version
const STATUS_FRAME = '01030800030000001e000000bb66e7ad7b22636f6d6d616e64223a22737461747573222c2264617461223a7b7d7d'

type Result = { code: number; stdout: string; stderr: string }

// Windows has no SIGTERM to catch: killing a process there ends it at once.
const posix = process.platform === 'win32' ? test.skip : test

async function polycall(...args: string[]): Promise<Result> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', cli, ...args], { timeout: 30_000 })
    return { code: 0, stdout, stderr }
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string }
    return { code: x.code, stdout: x.stdout, stderr: x.stderr }
  }
}

/** Runs the command with its stdout already closed, as `polycall ... | head -0` would. */
function withClosedStdout(...args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout.destroy()
    let stderr = ''
    child.stderr.on('data', (c) => (stderr += String(c)))
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stderr })
    })
  })
}

interface Served {
  port: number
  output: () => string
  exited: Promise<number | null>
  kill: (signal: NodeJS.Signals) => void
}

async function serve(t: import('ava').ExecutionContext, ...args: string[]): Promise<Served> {
  const child = spawn(process.execPath, ['--import', 'tsx', cli, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  let out = ''
  const port = await new Promise<number>((resolve, reject) => {
    // Keep reading stdout for the child's whole life so its writes never hit a closed pipe.
    child.stdout!.on('data', (chunk) => {
      out += String(chunk)
      const m = /listening on [\d.]+:(\d+)/.exec(out)
      if (m) resolve(Number(m[1]))
    })
    child.once('exit', () => reject(new Error(`serve exited: ${out}`)))
  })
  return { port, output: () => out, exited, kill: (signal) => child.kill(signal) }
}

test('decode prints every field and the checksum status; a bad frame exits 2 with its problem', async (t) => {
  const good = await polycall('decode', STATUS_FRAME)
  t.is(good.code, 0)
  t.regex(good.stdout, /type\s+3 \(COMMAND\)/)
  t.regex(good.stdout, /sequence\s+3/)
  t.regex(good.stdout, /checksum\s+0xade766bb ok/)
  t.regex(good.stdout, /payload\s+\{"command":"status","data":\{\}\}/)
  const bad = await polycall('decode', '010308000900000005000000ee3db40668656c6c6f')
  t.is(bad.code, 2)
  t.regex(bad.stdout, /MISMATCH: payload sums to 0x06b43def/)
  t.regex(bad.stdout, /problem\s+ERR_POLYCALL_CHECKSUM_MISMATCH/)
  // A sealed frame (ENCRYPTED, checksum field 0) has no checksum to break.
  const sealed = await polycall('decode', '010301000900000005000000000000006a3fe0a1c4')
  t.is(sealed.code, 0, sealed.stdout)
  t.regex(sealed.stdout, /checksum\s+0x00000000 \(sealed frame: no checksum, its tag authenticates it\)/)
  const short = await polycall('decode', '0103')
  t.is(short.code, 1)
  t.regex(short.stderr, /ERR_POLYCALL_TRUNCATED_HEADER/)
})

test("the README's decode example runs as written", async (t) => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const line = /^polycall decode (.+?)(\s+#.*)?$/m.exec(readme)
  t.truthy(line, 'the README shows a decode example')
  const { code, stdout } = await polycall('decode', ...line![1]!.trim().split(/\s+/))
  t.is(code, 0)
  t.regex(stdout, /checksum\s+0x[0-9a-f]{8} ok/)
})

test('--version prints the package version; --help works for the command and every subcommand, exit 0', async (t) => {
  for (const flag of ['--version', '-v']) {
    const r = await polycall(flag)
    t.is(r.code, 0)
    t.is(r.stdout.trim(), version)
  }
  const top = await polycall('--help')
  t.is(top.code, 0)
  for (const cmd of ['serve', 'call', 'control', 'decode', 'keygen']) {
    t.true(top.stdout.includes(`polycall ${cmd}`), cmd)
    for (const args of [[cmd, '--help'], [cmd, '-h'], ['help', cmd]]) {
      const r = await polycall(...args)
      t.is(r.code, 0, args.join(' '))
      t.true(r.stdout.startsWith(`usage: polycall ${cmd}`), `${args.join(' ')}: ${r.stdout}`)
      t.is(r.stderr, '')
    }
  }
})

test('bad flags get a message naming the flag as typed, and exit 1', async (t) => {
  const port = await polycall('serve', '--port', 'abc')
  t.is(port.code, 1)
  t.regex(port.stderr, /--port must be a port number from 0 to 65535, not abc/)
  t.notRegex(port.stderr, /ERR_|RangeError|at /)
  const timeout = await polycall('call', '127.0.0.1:1', 'x', '--timeout', 'abc')
  t.is(timeout.code, 1)
  t.regex(timeout.stderr, /--timeout must be a number of milliseconds, not abc/)
  t.notRegex(timeout.stderr, /connectTimeout/)
  const unknown = await polycall('call', '--prot', 'v1', '127.0.0.1:1', 'x')
  t.regex(unknown.stderr, /unknown option --prot\b/)
  t.regex(unknown.stderr, /polycall call --help/)
  const missing = await polycall('call', '127.0.0.1:1', 'x', '--timeout')
  t.regex(missing.stderr, /--timeout needs a value/)
  const protocol = await polycall('serve', '--protocol', 'v2')
  t.regex(protocol.stderr, /--protocol must be v1 or pcr1, not v2/)
  const file = await polycall('call', '127.0.0.1:1', 'x', '--ca', join(root, 'no-such.pem'))
  t.regex(file.stderr, /--ca .*no-such\.pem: no such file/)
})

test('a closed stdout is not a crash on any command (decode | head -1)', async (t) => {
  const decode = await withClosedStdout('decode', STATUS_FRAME)
  t.is(decode.code, 0)
  t.is(decode.stderr, '')
  const help = await withClosedStdout('serve', '--help')
  t.is(help.code, 0)
  t.is(help.stderr, '')
  const { port } = await serve(t)
  const call = await withClosedStdout('call', `127.0.0.1:${port}`, 'echo', '"x"')
  t.is(call.code, 0)
  t.is(call.stderr, '')
})

posix('serve with a closed stdout keeps serving, and stops on SIGTERM with exit 0', async (t) => {
  // A free port to hand to the child, which cannot report the one it got.
  const port = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const p = (probe.address() as { port: number }).port
      probe.close(() => resolve(p))
    })
  })
  const child = spawn(process.execPath, ['--import', 'tsx', cli, 'serve', '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout.destroy()
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  })
  let stderr = ''
  child.stderr.on('data', (c) => (stderr += String(c)))
  let answer: Result | undefined
  for (let i = 0; i < 50 && answer?.code !== 0; i++) answer = await polycall('call', `127.0.0.1:${port}`, 'sum', '[1,2]', '--timeout', '2000')
  t.is(answer?.stdout.trim(), '3')
  child.kill('SIGTERM')
  t.is(await exited, 0)
  t.is(stderr, '')
})

test('serve and call: results on stdout, remote errors on stderr with their code and exit 1', async (t) => {
  const { port } = await serve(t)
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

test('serve with a user requires authentication; call hints at --user/--password, and passes them', async (t) => {
  const { port } = await serve(t, '--user', 'ada', '--password', 'pw')
  const anon = await polycall('call', `127.0.0.1:${port}`, 'status')
  t.is(anon.code, 1)
  t.regex(anon.stderr, /ERR_POLYCALL_UNAUTHENTICATED/)
  t.regex(anon.stderr, /hint: .*--user NAME --password SECRET/)
  const wrong = await polycall('call', `127.0.0.1:${port}`, 'status', '--user', 'ada', '--password', 'nope')
  t.regex(wrong.stderr, /ERR_POLYCALL_UNAUTHENTICATED/)
  t.regex(wrong.stderr, /hint: the server refused these credentials/)
  t.false(wrong.stderr.includes('nope'))
  const good = await polycall('call', `127.0.0.1:${port}`, 'status', '--user', 'ada', '--password', 'pw')
  t.is(good.code, 0)
  t.deepEqual(JSON.parse(good.stdout).principal, { user: 'ada' })
})

posix('serve says when and why it shuts down: a signal, or a PCR1 shutdown action', async (t) => {
  const v1 = await serve(t)
  t.is((await polycall('call', `127.0.0.1:${v1.port}`, 'status')).code, 0)
  v1.kill('SIGTERM')
  t.is(await v1.exited, 0)
  t.regex(v1.output(), /shutting down on SIGTERM: finishing the requests in flight/)
  t.regex(v1.output(), /stopped \(SIGTERM\) after 1 requests on 1 connections/)
  const pcr1 = await serve(t, '--protocol', 'pcr1', '--token', 'tok')
  const done = await polycall('control', `127.0.0.1:${pcr1.port}`, 'shutdown', '--token', 'tok')
  t.is(done.code, 0)
  t.is(await pcr1.exited, 0)
  t.regex(pcr1.output(), /stopped \(a shutdown control action\)/)
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

test('without a native addon, --help and --version still work and a command names the missing addon', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'polycall-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  cpSync(join(root, 'package.json'), join(dir, 'package.json'))
  cpSync(join(root, 'dist'), join(dir, 'dist'), { recursive: true })
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'), process.platform === 'win32' ? 'junction' : 'dir')
  const bare = async (...args: string[]): Promise<Result> => {
    try {
      const env = { ...process.env, POLYCALL_NATIVE_PATH: '' }
      const { stdout, stderr } = await run(process.execPath, [join(dir, 'dist', 'cli.js'), ...args], { timeout: 30_000, env })
      return { code: 0, stdout, stderr }
    } catch (e) {
      return e as Result
    }
  }
  t.is((await bare('--version')).stdout.trim(), version)
  const help = await bare('call', '--help')
  t.is(help.code, 0)
  t.regex(help.stdout, /usage: polycall call/)
  const decode = await bare('decode', STATUS_FRAME)
  t.is(decode.code, 1)
  t.regex(decode.stderr, /^error ERR_POLYCALL_NATIVE_UNAVAILABLE: .*npx polycall-build/)
})

test('PCR1: serve --protocol pcr1 and call with the C client exit-code contract (0, 3, 4, 5, 6, 7, 1)', async (t) => {
  const { port } = await serve(t, '--protocol', 'pcr1', '--token', 'tok')
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

test('keygen writes a 0600 identity file and prints its public key; it refuses to overwrite without --force', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'polycall-keygen-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'server.key')
  const made = await polycall('keygen', '--out', file)
  t.is(made.code, 0)
  t.regex(made.stdout.trim(), /^x25519:[A-Za-z0-9_-]{43}$/)
  t.regex(made.stderr, /signing key ed25519:/)
  if (process.platform !== 'win32') t.is(statSync(file).mode & 0o777, 0o600)
  const { Identity } = await import('../ts/index.js')
  using loaded = Identity.load(file)
  t.is(loaded.toString(), made.stdout.trim())
  const again = await polycall('keygen', '--out', file)
  t.is(again.code, 1)
  t.regex(again.stderr, /--force/)
  const forced = await polycall('keygen', '--out', file, '--force')
  t.is(forced.code, 0)
  t.not(forced.stdout.trim(), made.stdout.trim())
})

test('serve --secure-key and call --server-key: a sealed call; a wrong key and a plaintext call are refused with their codes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'polycall-secure-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const serverFile = join(dir, 'server.key')
  const clientFile = join(dir, 'client.key')
  const key = (await polycall('keygen', '--out', serverFile)).stdout.trim()
  const otherKey = (await polycall('keygen', '--out', clientFile)).stdout.trim()
  const served = await serve(t, '--secure-key', serverFile, '--secure-required')
  // The key line follows the listening line: wait for it (bounded).
  for (let i = 0; i < 200 && !served.output().includes('server key'); i++) await new Promise((r) => setTimeout(r, 10))
  t.true(served.output().includes(`secure sessions required: server key ${key}`))
  const ok = await polycall('call', `127.0.0.1:${served.port}`, 'sum', '[1,2,3]', '--server-key', key)
  t.is(ok.code, 0, ok.stderr)
  t.is(ok.stdout.trim(), '6')
  const ik = await polycall('call', `127.0.0.1:${served.port}`, 'sum', '[4]', '--server-key', key, '--identity', clientFile)
  t.is(ik.stdout.trim(), '4')
  const wrong = await polycall('call', `127.0.0.1:${served.port}`, 'sum', '[1]', '--server-key', otherKey)
  t.is(wrong.code, 1)
  t.regex(wrong.stderr, /ERR_POLYCALL_HANDSHAKE_FAILED/)
  const plain = await polycall('call', `127.0.0.1:${served.port}`, 'sum', '[1]')
  t.is(plain.code, 1)
  t.regex(plain.stderr, /ERR_POLYCALL_INSECURE_PEER[^]*hint: the server requires a secure session/)
  const badKey = await polycall('call', `127.0.0.1:${served.port}`, 'sum', '[1]', '--server-key', 'x25519:nope')
  t.is(badKey.code, 1)
  t.regex(badKey.stderr, /--server-key x25519:nope/)
  const missing = await polycall('serve', '--secure-key', join(dir, 'missing.key'))
  t.is(missing.code, 1)
  t.regex(missing.stderr, /--secure-key .*missing\.key/)
})
