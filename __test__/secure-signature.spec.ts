import test, { type ExecutionContext } from 'ava'
import { ErrorCode, Identity, type PolyCallError, type StateMachineSnapshot } from '../ts/index.js'
import { demoMachine } from '../ts/demo/service.js'
import { native } from '../ts/native.js'
import { signSnapshot, verifySnapshot } from '../ts/secure/signature.js'

function identity(t: ExecutionContext): Identity {
  const id = Identity.generate()
  t.teardown(() => id.destroy())
  return id
}

async function snapshot(t: ExecutionContext): Promise<StateMachineSnapshot> {
  const sm = demoMachine()
  t.teardown(() => sm.free())
  await sm.transition('READY')
  sm.state('READY').setMetadata('note', { quote: '"', emoji: '😀', n: 1.5 })
  return sm.snapshot()
}

function code(t: ExecutionContext, f: () => unknown, expected: string, message?: string): void {
  const err = t.throws(f, undefined, message) as PolyCallError
  t.is(err?.code, expected, message)
}

test('a signed snapshot verifies with the signing key, survives JSON round trips and restores', async (t) => {
  const id = identity(t)
  const snap = await snapshot(t)
  const signed = signSnapshot(snap, id)
  t.is(signed.signature.alg, 'Ed25519')
  t.is(signed.signature.key, id.toJSON().signingKey)
  t.regex(signed.signature.value, /^[A-Za-z0-9_-]{86}$/)
  t.false('signature' in snap, 'the original is left alone')
  // Stored as text, with other key order and spacing: still valid.
  const text = JSON.stringify(signed, null, 2)
  const reordered = JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(text) as object).reverse()))
  for (const form of [signed, text, reordered, JSON.parse(text) as typeof signed]) {
    const plain = verifySnapshot<StateMachineSnapshot>(form, id)
    t.false('signature' in plain)
    t.deepEqual(plain, snap)
  }
  t.deepEqual(verifySnapshot(signed, id.signingKey), snap)
  t.deepEqual(verifySnapshot(signed, id.toJSON().signingKey), snap)
  // The verified snapshot restores (its checksums hold: the signature member is gone).
  const other = demoMachine()
  t.teardown(() => other.free())
  await other.restore(verifySnapshot<StateMachineSnapshot>(text, id) as StateMachineSnapshot)
  t.is(other.current, 'READY')
  // Signing again replaces the signature, and signs the same content.
  t.deepEqual(signSnapshot(signed, id), signed)
})

test('an edited, unsigned or foreign-signed snapshot is refused with ERR_POLYCALL_BAD_SIGNATURE', async (t) => {
  const id = identity(t)
  const mallory = identity(t)
  const snap = await snapshot(t)
  const signed = signSnapshot(snap, id)
  // Edit the content and recompute nothing: the checksum would catch this, the signature does too.
  code(t, () => verifySnapshot({ ...signed, currentState: 'INIT' }, id), ErrorCode.BAD_SIGNATURE, 'edited')
  // Re-sign with another key: valid for that key, refused for the expected one.
  const forged = signSnapshot({ ...snap, currentState: 'INIT' }, mallory)
  t.notThrows(() => verifySnapshot(forged, mallory))
  code(t, () => verifySnapshot(forged, id), ErrorCode.BAD_SIGNATURE, 'another signer')
  // Keep the expected key's name but not its signature.
  code(t, () => verifySnapshot({ ...forged, signature: { ...forged.signature, key: signed.signature.key } }, id), ErrorCode.BAD_SIGNATURE)
  code(t, () => verifySnapshot(snap, id), ErrorCode.BAD_SIGNATURE, 'unsigned')
  code(t, () => verifySnapshot({ ...signed, signature: 'yes' }, id), ErrorCode.BAD_SIGNATURE)
  code(t, () => verifySnapshot({ ...signed, signature: { ...signed.signature, alg: 'HS256' } }, id), ErrorCode.BAD_SIGNATURE)
  code(t, () => verifySnapshot({ ...signed, signature: { ...signed.signature, value: 'AAAA' } }, id), ErrorCode.BAD_SIGNATURE)
  code(t, () => verifySnapshot('{not json', id), ErrorCode.INVALID_SNAPSHOT)
  code(t, () => verifySnapshot(signed, Buffer.alloc(5)), ErrorCode.INVALID_KEY)
  code(t, () => verifySnapshot(signed, 'x25519:AAAA'), ErrorCode.INVALID_KEY)
  code(t, () => signSnapshot(null as unknown as object, id), ErrorCode.INVALID_SNAPSHOT)
  const gone = Identity.generate()
  gone.destroy()
  code(t, () => signSnapshot(snap, gone), ErrorCode.CLOSED)
  // Verification needs only the public key: a destroyed identity still verifies.
  const signer = Identity.generate()
  const byGone = signSnapshot(snap, signer)
  signer.destroy()
  t.notThrows(() => verifySnapshot(byGone, signer))
})

test('the canonical form sorts keys by UTF-16 code units and drops whitespace', (t) => {
  t.is(native.canonicalJson('{ "b": [1, {"z": null, "a": true}], "a": "é\\n" }'), '{"a":"é\\n","b":[1,{"a":true,"z":null}]}')
  t.is(native.canonicalJson('{"\uE000":1,"\u{1F600}":2}'), '{"\u{1F600}":2,"\uE000":1}')
  t.is(native.canonicalJson(JSON.stringify({ x: 'a\u2028b', y: '\u0001' })), JSON.stringify({ x: 'a\u2028b', y: '\u0001' }))
})
