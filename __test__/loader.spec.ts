// The addon search order of ts/native.ts, exercised on copies of the built package in temp
// directories, each loaded in a fresh Node process.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const builtAddon = readdirSync(root).find((f) => /^polycall\..+\.node$/.test(f))

function makePackage(t: import('ava').ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'polycall-loader-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const f of ['package.json', 'binding.cjs']) cpSync(join(root, f), join(dir, f))
  cpSync(join(root, 'dist'), join(dir, 'dist'), { recursive: true })
  // The package's runtime dependencies, as an installed package would find them.
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir')
  return dir
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

test('no addon anywhere: one clear NATIVE_UNAVAILABLE error naming the platform and the fix', (t) => {
  const { ok, out } = probe(makePackage(t))
  t.false(ok)
  t.true(out.startsWith('ERR ERR_POLYCALL_NATIVE_UNAVAILABLE'), out)
  t.true(out.includes(`${process.platform}/${process.arch}`), out)
  t.true(out.includes(`prebuilds/${process.platform}-${process.arch}/`), out)
  t.true(out.includes('npm run build'), out)
  if (process.platform === 'linux') t.regex(out, /\((glibc|musl)\)/)
})

test('a local build in the package root is found', (t) => {
  const dir = makePackage(t)
  cpSync(join(root, builtAddon!), join(dir, builtAddon!))
  t.is(probe(dir).out, `OK ${0x06b43def}`)
})

test('prebuilds/<platform>-<arch>/ is found (prebuildify layout)', (t) => {
  const dir = makePackage(t)
  const pre = join(dir, 'prebuilds', `${process.platform}-${process.arch}`)
  mkdirSync(pre, { recursive: true })
  cpSync(join(root, builtAddon!), join(pre, 'polycall.napi.node'))
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
