// The addon search order of ts/native.ts, exercised on copies of the built package in temp
// directories, each loaded in a fresh Node process.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const builtAddon = readdirSync(root).find((f) => /^polycall\..+\.node$/.test(f))
const triple = builtAddon?.slice('polycall.'.length, -'.node'.length)
const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version

function makePackage(t: import('ava').ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'polycall-loader-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  cpSync(join(root, 'package.json'), join(dir, 'package.json'))
  cpSync(join(root, 'dist'), join(dir, 'dist'), { recursive: true })
  // The package's runtime dependencies, as an installed package would find them; a real folder,
  // so that a test can add a per-platform package beside them.
  mkdirSync(join(dir, 'node_modules'))
  for (const entry of readdirSync(join(root, 'node_modules'))) {
    if (!entry.startsWith('.')) symlinkSync(join(root, 'node_modules', entry), join(dir, 'node_modules', entry), process.platform === 'win32' ? 'junction' : 'dir')
  }
  return dir
}

/** Installs a per-platform package `polycall-<triple>` at `pkgVersion` next to the copy. */
function addPlatformPackage(dir: string, pkgVersion: string): void {
  const pkg = join(dir, 'node_modules', `polycall-${triple}`)
  mkdirSync(pkg)
  cpSync(join(root, builtAddon!), join(pkg, builtAddon!))
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: `polycall-${triple}`, version: pkgVersion, main: builtAddon }))
}

function probe(dir: string, env: Record<string, string> = {}): { ok: boolean; out: string } {
  const script = `import(${JSON.stringify(join(dir, 'dist', 'index.js'))}).then(
    (m) => console.log('OK', m.checksum(Buffer.from('hello'))),
    (e) => console.log('ERR', e.code, e.message))`
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, POLYCALL_NATIVE_PATH: '', NAPI_RS_NATIVE_LIBRARY_PATH: '', ...env },
    encoding: 'utf8',
    timeout: 30_000,
  }).trim()
  return { ok: out.startsWith('OK'), out }
}

test.before(() => {
  if (!existsSync(join(root, 'dist', 'index.js'))) throw new Error('dist/ is not built: run `npm run build:ts`')
  if (!builtAddon) throw new Error('no local addon build: run `npm run build:native`')
})

test('no addon anywhere: one clear NATIVE_UNAVAILABLE error naming the platform, each place tried and the build step', (t) => {
  const { ok, out } = probe(makePackage(t))
  t.false(ok)
  t.true(out.startsWith('ERR ERR_POLYCALL_NATIVE_UNAVAILABLE'), out)
  t.true(out.includes(`${process.platform}/${process.arch}`), out)
  t.true(out.includes(`polycall.${triple}.node: not built`), out)
  t.true(out.includes(`the package polycall-${triple}: not installed`), out)
  t.true(out.includes(`prebuilds/${process.platform}-${process.arch}/`), out)
  t.true(out.includes('npx polycall-build'), out)
  t.true(out.includes(join('scripts', 'build-native.mjs')), out)
  // Advice that cannot work in an installed package, and napi-rs's generic text, stay out.
  t.false(out.includes('npm run build'), out)
  t.false(/npm\/cli|optional dependencies/i.test(out), out)
  if (process.platform === 'linux') t.regex(out, /\((glibc|musl)\)/)
})

test('a local build in the package root is found', (t) => {
  const dir = makePackage(t)
  cpSync(join(root, builtAddon!), join(dir, builtAddon!))
  t.is(probe(dir).out, `OK ${0x06b43def}`)
})

test('the per-platform package of the same version is found; another version is named and skipped', (t) => {
  const dir = makePackage(t)
  addPlatformPackage(dir, version)
  t.is(probe(dir).out, `OK ${0x06b43def}`)
  const stale = makePackage(t)
  addPlatformPackage(stale, '0.0.1-other')
  const { ok, out } = probe(stale)
  t.false(ok)
  t.true(out.includes(`the package polycall-${triple}: version 0.0.1-other, polycall is ${version}`), out)
})

test('prebuilds/<platform>-<arch>/ is found (prebuildify layout, node-gyp-build tags); the other libc is skipped', (t) => {
  const dir = makePackage(t)
  const pre = join(dir, 'prebuilds', `${process.platform}-${process.arch}`)
  mkdirSync(pre, { recursive: true })
  const libc = triple!.endsWith('-musl') ? 'musl' : triple!.endsWith('-gnu') ? 'glibc' : undefined
  if (libc) {
    // Only the other libc's file: nothing usable.
    writeFileSync(join(pre, `node.napi.${libc === 'musl' ? 'glibc' : 'musl'}.node`), 'not for this libc')
    t.false(probe(dir).ok)
  }
  cpSync(join(root, builtAddon!), join(pre, `node.napi${libc ? `.${libc}` : ''}.node`))
  t.is(probe(dir).out, `OK ${0x06b43def}`)
})

test('POLYCALL_NATIVE_PATH wins, and a bad override is an error, not a silent fallback', (t) => {
  const dir = makePackage(t)
  t.is(probe(dir, { POLYCALL_NATIVE_PATH: join(root, builtAddon!) }).out, `OK ${0x06b43def}`)
  cpSync(join(root, builtAddon!), join(dir, builtAddon!))
  const bogus = join(dir, 'bogus.node')
  writeFileSync(bogus, 'not a shared object')
  const { ok, out } = probe(dir, { POLYCALL_NATIVE_PATH: bogus })
  t.false(ok)
  t.true(out.startsWith('ERR ERR_POLYCALL_NATIVE_UNAVAILABLE'), out)
  t.true(out.includes('POLYCALL_NATIVE_PATH'), out)
})
