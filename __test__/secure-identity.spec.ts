import test, { type ExecutionContext } from 'ava'
import { createPrivateKey, createPublicKey, hkdfSync } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { inspect } from 'node:util'
import { ErrorCode, Identity, parsePublicKey } from '../ts/index.js'

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'polycall-identity-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function identity(t: ExecutionContext, seed?: Uint8Array): Identity {
  const id = seed ? Identity.fromBytes(seed) : Identity.generate()
  t.teardown(() => id.destroy())
  return id
}

/** Every encoding of `secret` a leak could take. */
function forms(secret: Buffer): string[] {
  return [secret.toString('hex'), secret.toString('base64'), secret.toString('base64url').slice(0, 40), secret.toString('latin1')]
}

/** Walks everything reachable from `value` (own and inherited properties, getters, no-argument methods). */
function reachable(value: unknown, seen = new Set<unknown>(), depth = 0): unknown[] {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function') || seen.has(value) || depth > 4) return [value]
  seen.add(value)
  const out: unknown[] = [value]
  for (let o: object | null = value as object; o && o !== Object.prototype && o !== Function.prototype; o = Object.getPrototypeOf(o)) {
    for (const key of Reflect.ownKeys(o)) {
      if (key === 'constructor' || key === 'destroy' || key === Symbol.dispose || key === Symbol.asyncDispose) continue
      let v: unknown
      try {
        v = Reflect.get(o, key, value)
        if (typeof v === 'function' && v.length === 0 && key !== 'save') v = (v as () => unknown).call(value)
      } catch (e) {
        v = e
      }
      out.push(...reachable(v, seen, depth + 1))
    }
  }
  return out
}

test('generate, fromBytes and the two public keys', (t) => {
  const a = identity(t)
  const b = identity(t)
  t.is(a.publicKey.length, 32)
  t.is(a.signingKey.length, 32)
  t.false(a.publicKey.equals(b.publicKey))
  t.false(a.publicKey.equals(a.signingKey), 'the X25519 and Ed25519 keys are derived apart')
  const seed = Buffer.alloc(32, 7)
  const c = identity(t, seed)
  const d = identity(t, seed)
  t.true(c.publicKey.equals(d.publicKey), 'one seed, one identity')
  t.true(c.signingKey.equals(d.signingKey))
  // Copies: changing one does not change the identity.
  c.publicKey.fill(0)
  t.true(c.publicKey.equals(d.publicKey))
  t.throws(() => Identity.fromBytes(Buffer.alloc(31)), { code: ErrorCode.INVALID_KEY })
  t.throws(() => Identity.fromBytes('seed' as unknown as Uint8Array), { code: ErrorCode.INVALID_ARGUMENT })
})

test('toString and parsePublicKey round trip; bad texts are refused with a code', (t) => {
  const id = identity(t)
  const text = id.toString()
  t.regex(text, /^x25519:[A-Za-z0-9_-]{43}$/)
  t.true(parsePublicKey(text).equals(id.publicKey))
  t.true(parsePublicKey(` ${text}\n`).equals(id.publicKey))
  t.is(`${id}`, text)
  for (const bad of ['', 'x25519:', text.slice(0, -1), text.replace('x25519:', 'ed25519:'), `x25519:${'A'.repeat(43)}`, id.toJSON().signingKey]) {
    t.throws(() => parsePublicKey(bad), { code: ErrorCode.INVALID_KEY }, bad)
  }
  t.throws(() => parsePublicKey(42 as unknown as string), { code: ErrorCode.INVALID_ARGUMENT })
  t.deepEqual(JSON.parse(JSON.stringify(id)), { publicKey: text, signingKey: id.toJSON().signingKey })
  t.regex(id.toJSON().signingKey, /^ed25519:[A-Za-z0-9_-]{43}$/)
})

test('save writes a 0600 text file with a version line; load reads it back', (t) => {
  const dir = tempDir(t)
  const id = identity(t)
  const file = join(dir, 'server.key')
  id.save(file)
  if (process.platform !== 'win32') t.is(statSync(file).mode & 0o777, 0o600)
  const lines = readFileSync(file, 'utf8').split('\n')
  t.true(lines[0]!.startsWith('#'))
  t.is(lines[1], 'polycall-identity 1')
  t.is(lines[2], `public-key ${id.toString()}`)
  t.is(lines[3], `signing-key ${id.toJSON().signingKey}`)
  t.regex(lines[4]!, /^seed [A-Za-z0-9_-]{43}$/)
  const back = Identity.load(file)
  t.teardown(() => back.destroy())
  t.true(back.publicKey.equals(id.publicKey))
  t.true(back.signingKey.equals(id.signingKey))
  const viaUrl = Identity.load(pathToFileURL(file))
  t.true(viaUrl.publicKey.equals(id.publicKey))
  viaUrl.destroy()

  // An existing file is refused unless overwrite; overwrite replaces it (and its mode) atomically.
  const other = identity(t)
  t.throws(() => other.save(file), { code: ErrorCode.IDENTITY_FILE })
  t.true(Identity.load(file).publicKey.equals(id.publicKey))
  writeFileSync(join(dir, 'loose.key'), 'x', { mode: 0o644 })
  other.save(join(dir, 'loose.key'), { overwrite: true })
  if (process.platform !== 'win32') t.is(statSync(join(dir, 'loose.key')).mode & 0o777, 0o600)
  t.true(Identity.load(join(dir, 'loose.key')).publicKey.equals(other.publicKey))
  t.throws(() => id.save(join(dir, 'no', 'such', 'dir', 'k')), { code: ErrorCode.IDENTITY_FILE })
  t.throws(() => id.save(''), { code: ErrorCode.INVALID_ARGUMENT })
})

test('load refuses missing, damaged, oversized and edited files with ERR_POLYCALL_IDENTITY_FILE', (t) => {
  const dir = tempDir(t)
  const id = identity(t)
  const file = join(dir, 'id.key')
  id.save(file)
  const text = readFileSync(file, 'utf8')
  const other = identity(t)
  const cases: Record<string, string | Buffer> = {
    'another public key': text.replace(id.toString(), other.toString()),
    'another version': text.replace('polycall-identity 1', 'polycall-identity 2'),
    'no version line': text.replace('polycall-identity 1\n', ''),
    'no seed': text.replace(/^seed .*$/m, ''),
    'a short seed': text.replace(/^seed (.*)$/m, (_, s: string) => `seed ${s.slice(1)}`),
    'an unknown line': `${text}owner ada\n`,
    'a repeated line': `${text}${text.split('\n').filter(Boolean).pop()}\n`,
    'not UTF-8': Buffer.from([0xff, 0xfe, 0x00]),
    'over 4 KiB': `${'#'.repeat(5000)}\n${text}`,
  }
  for (const [name, content] of Object.entries(cases)) {
    writeFileSync(join(dir, 'bad.key'), content)
    t.throws(() => Identity.load(join(dir, 'bad.key')), { code: ErrorCode.IDENTITY_FILE }, name)
  }
  t.throws(() => Identity.load(join(dir, 'missing.key')), { code: ErrorCode.IDENTITY_FILE })
  t.throws(() => Identity.load(dir), { code: ErrorCode.IDENTITY_FILE }, 'a directory')
  // Comments, blank lines and CRLF are fine, and so is a file with the seed alone.
  const seedOnly = text
    .split('\n')
    .filter((l) => !l.startsWith('public-key') && !l.startsWith('signing-key'))
    .join('\r\n')
  writeFileSync(join(dir, 'ok.key'), `\n# mine\n${seedOnly}`)
  t.true(Identity.load(join(dir, 'ok.key')).publicKey.equals(id.publicKey))
})

test('destroy releases the secrets; later secret uses fail with ERR_POLYCALL_CLOSED', async (t) => {
  const dir = tempDir(t)
  const id = Identity.generate()
  const text = id.toString()
  t.false(id.destroyed)
  id.destroy()
  id.destroy()
  t.true(id.destroyed)
  t.throws(() => id.save(join(dir, 'k')), { code: ErrorCode.CLOSED })
  t.is(id.toString(), text, 'the public key stays printable')
  t.is(inspect(id), `Identity { ${text}, destroyed }`)
  let kept: Identity
  {
    using scoped = Identity.generate()
    t.false(scoped.destroyed)
    kept = scoped
  }
  t.true(kept.destroyed)
  await (async () => {
    await using scoped = Identity.generate()
    kept = scoped
  })()
  t.true(kept.destroyed)
})

test('no property, method, inspection or serialisation reaches the secret', (t) => {
  const dir = tempDir(t)
  const seed = Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 37 + 11) & 0xff))
  const id = identity(t, seed)
  // The seed as the file holds it (a secret the test knows because it chose the seed).
  id.save(join(dir, 'k'))
  const fileSeed = /^seed (.*)$/m.exec(readFileSync(join(dir, 'k'), 'utf8'))![1]!
  t.is(fileSeed, seed.toString('base64url'))
  // The documented derivation (docs/security.md): HKDF-SHA256, salt "polycall identity v1", one
  // label per key. node:crypto recomputes both secret keys, which must give the public keys...
  const derive = (info: string) => Buffer.from(hkdfSync('sha256', seed, 'polycall identity v1', info, 32))
  const x25519 = derive('x25519 static key')
  const ed25519 = derive('ed25519 signing key')
  const publicOf = (crv: 'X25519' | 'Ed25519', d: Buffer) =>
    Buffer.from(
      createPublicKey(createPrivateKey({ key: { kty: 'OKP', crv, d: d.toString('base64url'), x: '' }, format: 'jwk' }))
        .export({ format: 'jwk' })
        .x!,
      'base64url',
    )
  t.true(publicOf('X25519', x25519).equals(id.publicKey))
  t.true(publicOf('Ed25519', ed25519).equals(id.signingKey))
  // ... and none of the three secrets may be reachable from the object.
  const secretForms = [...forms(seed), ...forms(x25519), ...forms(ed25519), fileSeed]

  t.deepEqual(Object.keys(id), [])
  t.deepEqual(Object.getOwnPropertyNames(id), [])
  const views: unknown[] = [
    ...reachable(id),
    inspect(id, { showHidden: true, depth: Infinity, getters: true }),
    JSON.stringify(id),
    String(id),
    { ...id },
    Object.entries(id),
  ]
  let checked = 0
  for (const v of views) {
    const text =
      typeof v === 'string'
        ? v
        : Buffer.isBuffer(v) || v instanceof Uint8Array
          ? Buffer.from(v).toString('latin1')
          : inspect(v, { showHidden: true, depth: 3 })
    for (const secret of secretForms) t.false(text.includes(secret), `a secret form appears in ${text.slice(0, 80)}`)
    if (v instanceof Uint8Array) t.false(Buffer.from(v).includes(seed.subarray(0, 16)))
    checked++
  }
  t.true(checked > 10)
})
