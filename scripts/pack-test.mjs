#!/usr/bin/env node
// npm run pack:test [-- --skip-build] [-- --keep] [-- --from-source]
//
// What a user gets from `npm install polycall`, checked on this machine with no Rust:
//   1. build the addon and dist/ (skipped with --skip-build), `npm pack`, and check the file list;
//   2. lay this machine's binary out as each release flavour does (scripts/release-layout.mjs):
//      - registry: the main tarball with optionalDependencies, plus the per-platform package;
//      - offline: one tarball with prebuilds/<platform>-<arch>/, no optionalDependencies;
//   3. for each, in a fresh temp project whose PATH has no cargo or rustc: `npm install` (timed),
//      an ESM client/server round trip, a CommonJS require, `npx polycall --version`, and
//      `npx polycall call` against a `npx polycall serve` it starts and stops;
//   3b. without the per-platform package (--omit=optional): the loader's error names
//      npx polycall-build, and `polycall --help` still works; with --from-source, npx polycall-build
//      then builds the addon from the tarball's Rust sources (Rust on PATH; minutes);
//   4. a consumer type check: `tsc --noEmit` with strict and skipLibCheck off, under node16 and
//      bundler resolution, over every ```ts snippet of README.md and docs/*.md plus
//      __test__/types/consumer/extra.ts.
// Exits 1 on the first failure. --keep leaves the temp directory for inspection.
import { spawn, spawnSync } from 'node:child_process'
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const args = new Set(process.argv.slice(2))
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const version = pkg.version
const work = mkdtempSync(join(tmpdir(), 'polycall-pack-'))
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
const npx = process.platform === 'win32' ? 'npx.cmd' : 'npx'
const summary = []
const step = (s) => console.log(`\n== pack:test: ${s}`)
const note = (s) => {
  console.log(`   ${s}`)
  summary.push(s)
}
function fail(message) {
  console.error(`\npack:test FAILED: ${message}`)
  if (!args.has('--keep')) rmSync(work, { recursive: true, force: true })
  else console.error(`(kept ${work})`)
  process.exit(1)
}
function check(ok, message) {
  if (!ok) fail(message)
}

/** Runs a command, returns stdout; fails the run on a non-zero exit. */
function sh(cmd, argv, options = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 64 << 20, shell: process.platform === 'win32', ...options })
  if (r.status !== 0) fail(`${cmd} ${argv.join(' ')} exited ${r.status ?? r.signal}\n${r.stdout ?? ''}\n${r.stderr ?? ''}`)
  return r.stdout
}

// ---------------------------------------------------------------- 1. build and pack
if (!args.has('--skip-build')) {
  step('build (addon in release mode, then dist/)')
  sh(npm, ['run', 'build'], { cwd: root, stdio: 'inherit' })
}
const triple = readdirSync(root).find((f) => /^polycall\..+\.node$/.test(f))?.slice('polycall.'.length, -'.node'.length)
check(triple, 'no local addon build (polycall.<triple>.node) to ship')
check(existsSync(join(root, 'npm', triple)), `no per-platform package npm/${triple} for this machine`)
check(!existsSync(join(root, 'prebuilds')), 'prebuilds/ exists in the checkout and would be packed: remove it')

step('npm pack')
const packed = JSON.parse(sh(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: root }))[0]
const files = packed.files.map((f) => f.path)
const byTop = {}
for (const f of packed.files) {
  const top = f.path.startsWith('dist/') ? `dist/*${f.path.slice(f.path.indexOf('.'))}` : f.path.split('/').slice(0, 2).join('/')
  byTop[top] = (byTop[top] ?? 0) + 1
}
for (const need of ['dist/index.js', 'dist/index.d.ts', 'dist/testing/index.d.ts', 'dist/cli.js', 'scripts/build-native.mjs', 'Cargo.toml', 'Cargo.lock', 'crates/polycall-core/src/lib.rs', 'crates/polycall-napi/src/lib.rs', 'crates/polycall-napi/build.rs']) {
  check(files.includes(need), `the tarball lacks ${need}`)
}
for (const f of files) {
  check(!/\.node$|^ts\/|^__test__|^target\/|\.d\.ts\.map$|^binding\./.test(f), `the tarball should not contain ${f}`)
}
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`
note(`main tarball: ${packed.filename}, ${kib(packed.size)} packed, ${kib(packed.unpackedSize)} unpacked, ${packed.entryCount} files`)
note(`contents: ${Object.entries(byTop).map(([k, v]) => `${k} ${v}`).join(', ')}`)

// ---------------------------------------------------------------- 2. the two release flavours
const base = join(work, packed.filename)
const unpack = (dir) => {
  mkdirSync(dir, { recursive: true })
  sh('tar', ['xzf', base, '-C', dir])
  return join(dir, 'package')
}
const binaries = join(work, 'artifacts', `bindings-${triple}`)
mkdirSync(binaries, { recursive: true })
cpSync(join(root, `polycall.${triple}.node`), join(binaries, `polycall.${triple}.node`))
const layout = (...argv) => sh(process.execPath, [join(root, 'scripts', 'release-layout.mjs'), ...argv])
const packDir = (dir, dest) => {
  mkdirSync(dest, { recursive: true })
  return join(dest, JSON.parse(sh(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', dest], { cwd: dir }))[0].filename)
}

step('registry flavour: main package with optionalDependencies, and the per-platform package')
const registryStage = unpack(join(work, 'stage-registry'))
layout('registry-manifest', '--root', registryStage)
const registryTarball = packDir(registryStage, join(work, 'registry'))
layout('platform-packages', join(work, 'artifacts'), '--root', registryStage)
const platformTarballs = {}
for (const dir of readdirSync(join(root, 'npm'))) {
  const stage = join(registryStage, 'npm', dir)
  if (!existsSync(stage)) {
    // Another platform's package, without its binary: npm must skip it by os/cpu/libc.
    mkdirSync(stage, { recursive: true })
    cpSync(join(root, 'npm', dir, 'package.json'), join(stage, 'package.json'))
  }
  const name = JSON.parse(readFileSync(join(stage, 'package.json'), 'utf8')).name
  platformTarballs[name] = packDir(stage, join(work, 'registry'))
}
const hostPackage = `polycall-${triple}`
const hostFiles = JSON.parse(sh(npm, ['pack', '--dry-run', '--json'], { cwd: join(registryStage, 'npm', triple) }))[0]
note(`per-platform package ${hostPackage}: ${kib(hostFiles.size)} packed, files: ${hostFiles.files.map((f) => f.path).join(', ')}`)

step('offline flavour: one tarball with prebuilds/, no optionalDependencies')
const offlineStage = unpack(join(work, 'stage-offline'))
layout('prebuilds', join(work, 'artifacts'), '--root', offlineStage)
layout('offline-manifest', '--root', offlineStage)
const offlineTarball = packDir(offlineStage, join(work, 'offline'))
const offlineFiles = JSON.parse(sh(npm, ['pack', '--dry-run', '--json'], { cwd: offlineStage }))[0]
note(`offline tarball with this machine's binary: ${kib(offlineFiles.size)} packed; prebuilds: ${offlineFiles.files.map((f) => f.path).filter((p) => p.startsWith('prebuilds/')).join(', ')}`)

// ---------------------------------------------------------------- 3. install and run without Rust
/** PATH without any directory that holds cargo, rustc or rustup; node, npm and npx through a shim dir. */
function rustlessEnv() {
  const shim = join(work, 'bin')
  mkdirSync(shim, { recursive: true })
  const exe = process.platform === 'win32' ? ['.exe', '.cmd', ''] : ['']
  const has = (dir, name) => exe.some((e) => existsSync(join(dir, name + e)))
  const dirs = (process.env.PATH ?? '').split(delimiter).filter((d) => d && !['cargo', 'rustc', 'rustup'].some((n) => has(d, n)))
  for (const tool of ['node', 'npm', 'npx']) {
    if (dirs.some((d) => has(d, tool))) continue
    const from = tool === 'node' ? process.execPath : join(dirname(process.execPath), tool)
    if (existsSync(from) && !existsSync(join(shim, tool))) symlinkSync(from, join(shim, tool))
  }
  const env = { PATH: [shim, ...dirs].join(delimiter) }
  for (const [k, v] of Object.entries(process.env)) {
    // Nothing of the surrounding `npm run` or of a Rust setup leaks into the consumer.
    if (k === 'PATH' || /^(npm_|CARGO|RUSTUP|RUSTC|POLYCALL_|NAPI_RS_|INIT_CWD$)/i.test(k)) continue
    env[k] = v
  }
  const probe = spawnSync('cargo', ['--version'], { env, encoding: 'utf8' })
  check(probe.status !== 0, `cargo is still reachable on the consumer PATH (${env.PATH})`)
  return env
}
const env = rustlessEnv()
note('consumer environment: PATH without cargo, rustc or rustup (cargo --version fails), no CARGO*/RUSTUP*/POLYCALL_* variables')

const ESM_APP = `
import assert from 'node:assert/strict'
import { FrameDecoder, MessageType, PolyCallClient, PolyCallError, PolyCallServer, StateMachine, encodeFrame } from 'polycall'
import { connectInMemory } from 'polycall/testing'

const server = new PolyCallServer({
  requireAuth: true,
  authenticate: ({ username, password }) => {
    if (username !== 'ada' || password !== 's3cret') throw new PolyCallError('ERR_POLYCALL_UNAUTHENTICATED', 'no')
    return { user: username }
  },
})
server.route('/users/:id', (ctx) => ({ id: ctx.params.id, by: ctx.principal }))
const { port } = await server.listen(0, '127.0.0.1')
const client = new PolyCallClient({ host: '127.0.0.1', port })
await client.authenticate({ username: 'ada', password: 's3cret' })
assert.deepEqual(await client.request('/users/42', undefined, { timeout: 2000 }), { id: '42', by: { user: 'ada' } })
await assert.rejects(client.request('/nope'), { code: 'ERR_POLYCALL_NOT_FOUND' })
const { client: memory } = await connectInMemory(server, { credentials: { username: 'ada', password: 's3cret' } })
assert.deepEqual(await memory.request('/users/7'), { id: '7', by: { user: 'ada' } })
await memory.close()
await client.close()
await server.close()

const decoder = new FrameDecoder()
const [frame] = decoder.push(encodeFrame({ type: MessageType.Command, sequence: 3, payload: Buffer.from('{"command":"status"}') }))
decoder.end()
assert.equal(frame.sequence, 3)
const sm = new StateMachine()
sm.addState('INIT')
sm.addState('READY')
sm.addTransition('INIT', 'READY')
await sm.transition('READY')
assert.equal(sm.current, 'READY')
console.log('ESM round trip ok')
`
const CJS_APP = `
const assert = require('node:assert/strict')
const polycall = require('polycall')
const { connectInMemory } = require('polycall/testing')
assert.equal(polycall.checksum(Buffer.from('hello')), 0x06b43def)
assert.equal(typeof polycall.PolyCallServer, 'function')
assert.equal(typeof connectInMemory, 'function')
console.log('CommonJS require ok')
`

function consumer(name, dependencies, overrides) {
  const dir = join(work, name)
  mkdirSync(dir, { recursive: true })
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({ name: `consumer-${name}`, private: true, type: 'module', dependencies, ...(overrides ? { overrides } : {}) }, null, 2),
  )
  return dir
}

async function exercise(dir, label) {
  step(`${label}: npm install without Rust`)
  const started = performance.now()
  const out = spawnSync(npm, ['install', '--no-audit', '--no-fund'], { cwd: dir, env, encoding: 'utf8', shell: process.platform === 'win32' })
  const seconds = ((performance.now() - started) / 1000).toFixed(1)
  check(out.status === 0, `npm install failed\n${out.stdout}\n${out.stderr}`)
  const installed = join(dir, 'node_modules', 'polycall')
  check(!existsSync(join(installed, 'target')) && !readdirSync(installed).some((f) => f.endsWith('.node')), 'the install built something')
  const warnings = `${out.stdout}${out.stderr}`.split('\n').filter((l) => /install-scripts/.test(l) && /polycall/.test(l))
  check(warnings.length === 0, `npm reports an install script of polycall:\n${warnings.join('\n')}`)
  const others = [...new Set(`${out.stdout}${out.stderr}`.split('\n').map((l) => /^npm warn install-scripts\s+(\S+@\S+) \(/.exec(l)?.[1]).filter(Boolean))]
  note(`${label}: npm install took ${seconds} s with no Rust on PATH; no polycall install script reported` + (others.length ? ` (npm lists dependencies' install scripts: ${others.join(', ')})` : ''))

  writeFileSync(join(dir, 'app.mjs'), ESM_APP)
  writeFileSync(join(dir, 'app.cjs'), CJS_APP)
  const esm = sh('node', ['app.mjs'], { cwd: dir, env })
  check(esm.includes('ESM round trip ok'), `ESM app: ${esm}`)
  const cjs = spawnSync('node', ['app.cjs'], { cwd: dir, env, encoding: 'utf8' })
  check(cjs.status === 0 && cjs.stdout.includes('CommonJS require ok'), `CommonJS app: ${cjs.stdout}${cjs.stderr}`)
  note(`${label}: ESM client/server round trip and CommonJS require('polycall') ok${cjs.stderr.trim() ? ` (stderr: ${cjs.stderr.trim().split('\n')[0]})` : ''}`)

  const v = sh(npx, ['--no-install', 'polycall', '--version'], { cwd: dir, env }).trim()
  check(v === version, `npx polycall --version printed ${v}, expected ${version}`)
  await serveAndCall(dir, label)
}

/** `polycall serve` (the installed bin), `npx polycall call` against it, then SIGTERM. */
async function serveAndCall(dir, label) {
  const bin = join(dir, 'node_modules', '.bin', process.platform === 'win32' ? 'polycall.cmd' : 'polycall')
  const child = spawn(bin, ['serve', '--port', '0'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'], shell: process.platform === 'win32' })
  let output = ''
  child.stdout.on('data', (c) => (output += String(c)))
  child.stderr.on('data', (c) => (output += String(c)))
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)))
  try {
    const port = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`serve did not start: ${output}`)), 60_000)
      child.stdout.on('data', () => {
        const m = /listening on [\d.]+:(\d+)/.exec(output)
        if (m) {
          clearTimeout(timer)
          resolve(Number(m[1]))
        }
      })
      child.once('exit', () => reject(new Error(`serve exited: ${output}`)))
    }).catch((e) => fail(e.message))
    const result = sh(npx, ['--no-install', 'polycall', 'call', `127.0.0.1:${port}`, 'sum', '[1,2,3]'], { cwd: dir, env }).trim()
    check(result === '6', `polycall call sum [1,2,3] printed ${result}`)
    child.kill('SIGTERM')
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('no exit within 20 s'), 20_000))])
    check(code === 0, `polycall serve ended with ${code} after SIGTERM: ${output}`)
    check(/stopped \(SIGTERM\)/.test(output), `polycall serve did not say why it stopped: ${output}`)
    note(`${label}: npx polycall --version = ${version}; npx polycall call ... sum [1,2,3] = 6 against polycall serve, which stopped on SIGTERM with exit 0`)
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
}

const overrides = Object.fromEntries(Object.entries(platformTarballs).map(([name, file]) => [name, `file:${file}`]))
// The overrides stand in for the registry: npm resolves polycall's optionalDependencies to the
// local tarballs (and installs only this platform's) instead of asking the registry.
const registryConsumer = consumer('consumer-registry', { polycall: `file:${registryTarball}` }, overrides)
await exercise(registryConsumer, 'registry flavour')
const installedPlatforms = readdirSync(join(registryConsumer, 'node_modules')).filter((f) => f.startsWith('polycall-'))
check(installedPlatforms.join() === hostPackage, `npm installed the per-platform packages ${installedPlatforms.join(', ') || '(none)'}, expected ${hostPackage} only`)
note(`registry flavour: npm installed ${hostPackage} only, and the addon loaded from it`)

const offlineConsumer = consumer('consumer-offline', { polycall: `file:${offlineTarball}` })
await exercise(offlineConsumer, 'offline flavour')
check(!readdirSync(join(offlineConsumer, 'node_modules')).some((f) => f.startsWith('polycall-')), 'the offline flavour installed a per-platform package')
note('offline flavour: no per-platform package installed; the addon loaded from prebuilds/')

// ---------------------------------------------------------------- 3b. no binary, then from source
step('no binary for this platform: the error, then npx polycall-build')
const bare = consumer('consumer-bare', { polycall: `file:${registryTarball}` }, overrides)
const omit = spawnSync(npm, ['install', '--no-audit', '--no-fund', '--omit=optional'], { cwd: bare, env, encoding: 'utf8', shell: process.platform === 'win32' })
check(omit.status === 0, `npm install --omit=optional failed\n${omit.stdout}\n${omit.stderr}`)
const probeScript = `import('polycall').then((m) => console.log('loaded', m.checksum(Buffer.from('hello'))), (e) => console.log(e.code, e.message))`
const missing = sh('node', ['--input-type=module', '-e', probeScript], { cwd: bare, env }).trim()
check(missing.startsWith('ERR_POLYCALL_NATIVE_UNAVAILABLE') && missing.includes('npx polycall-build'), `without a binary: ${missing}`)
const help = spawnSync(npx, ['--no-install', 'polycall', '--help'], { cwd: bare, env, encoding: 'utf8' })
check(help.status === 0, `polycall --help without a binary exited ${help.status}: ${help.stderr}`)
note('no binary (npm install --omit=optional): importing polycall throws ERR_POLYCALL_NATIVE_UNAVAILABLE naming npx polycall-build; polycall --help still works')
if (args.has('--from-source')) {
  // With the machine's own PATH (Rust on it): the sources in the tarball must build.
  const started = performance.now()
  const built = spawnSync(npx, ['--no-install', 'polycall-build'], { cwd: bare, encoding: 'utf8', env: { ...env, PATH: process.env.PATH } })
  check(built.status === 0, `npx polycall-build failed:\n${built.stdout}\n${built.stderr}`)
  const loaded = sh('node', ['--input-type=module', '-e', probeScript], { cwd: bare, env }).trim()
  check(loaded === `loaded ${0x06b43def}`, `after npx polycall-build: ${loaded}`)
  const leftover = existsSync(join(bare, 'node_modules', 'polycall', 'target'))
  check(!leftover, 'npx polycall-build left its cargo target/ directory in the package')
  note(`npx polycall-build from the tarball's sources: built and loaded in ${((performance.now() - started) / 1000).toFixed(0)} s, no target/ left behind`)
}

// ---------------------------------------------------------------- 4. consumer type check
step('consumer type check: strict, skipLibCheck off, node16 and bundler resolution')
const devVersion = (name) => JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')).version
const tools = ['typescript', 'zod', '@types/node', 'redis'].map((n) => `${n}@${devVersion(n)}`)
sh(npm, ['install', '--no-save', '--no-audit', '--no-fund', ...tools], { cwd: registryConsumer, env })
const typesDir = join(root, '__test__', 'types', 'consumer')
for (const f of readdirSync(typesDir)) cpSync(join(typesDir, f), join(registryConsumer, f))
let snippets = 0
for (const doc of ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)]) {
  const text = readFileSync(join(root, doc), 'utf8')
  let n = 0
  for (const m of text.matchAll(/^```ts\n([\s\S]*?)^```$/gm)) {
    n++
    snippets++
    const file = `snippet-${doc.replace(/[/.]/g, '-')}-${n}.ts`
    writeFileSync(join(registryConsumer, file), `// ${doc}, snippet ${n}\n${m[1]}\nexport {}\n`)
  }
}
for (const config of ['tsconfig.node16.json', 'tsconfig.bundler.json']) {
  const r = spawnSync('node', [join('node_modules', 'typescript', 'bin', 'tsc'), '-p', config], { cwd: registryConsumer, env, encoding: 'utf8' })
  check(r.status === 0, `tsc -p ${config} failed:\n${r.stdout}${r.stderr}`)
}
note(`consumer type check clean under node16 and bundler (TypeScript ${devVersion('typescript')}, strict, skipLibCheck off): ${snippets} documentation snippets and extra.ts`)

step('summary')
for (const s of summary) console.log(`   - ${s}`)
if (args.has('--keep')) console.log(`\n(kept ${work})`)
else rmSync(work, { recursive: true, force: true })
console.log('\npack:test passed')
