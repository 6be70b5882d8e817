// Signed state-machine snapshots: sm.snapshot({ sign }) and restore(snap, { verify }).
import test from 'ava'
import { ErrorCode, Identity, StateMachine, type PolyCallError, type StateMachineSnapshot } from '../ts/index.js'

function machine(): StateMachine {
  const sm = new StateMachine()
  sm.addState('INIT')
  sm.addState('READY')
  sm.addState('DONE')
  sm.addTransition('INIT', 'READY')
  sm.addTransition('READY', 'DONE')
  return sm
}

async function code(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p
  } catch (e) {
    return (e as PolyCallError).code
  }
  return undefined
}

test('a signed snapshot restores with verify (key bytes, ed25519 text or the identity), also after a JSON round trip', async (t) => {
  using id = Identity.generate()
  const sm = machine()
  t.teardown(() => sm.free())
  await sm.transition('READY')
  const signed = sm.snapshot({ sign: id }) as StateMachineSnapshot & { signature: { alg: string; key: string; value: string } }
  t.is(signed.signature.alg, 'Ed25519')
  t.is(signed.signature.key, id.toJSON().signingKey)
  for (const verify of [id.signingKey, id.toJSON().signingKey, id]) {
    const other = machine()
    t.teardown(() => other.free())
    t.is(await other.restore(JSON.parse(JSON.stringify(signed)) as StateMachineSnapshot, { verify }), 'polycall')
    t.is(other.current, 'READY')
  }
  // A signature is not needed without verify, and does not get in the way.
  const plain = machine()
  t.teardown(() => plain.free())
  await plain.restore(signed)
  t.is(plain.current, 'READY')
})

test('verify refuses unsigned, altered and otherwise signed snapshots with ERR_POLYCALL_BAD_SIGNATURE, changing nothing', async (t) => {
  using id = Identity.generate()
  using other = Identity.generate()
  const sm = machine()
  t.teardown(() => sm.free())
  await sm.transition('READY')
  const signed = sm.snapshot({ sign: id })
  const target = machine()
  t.teardown(() => target.free())
  t.is(await code(target.restore(sm.snapshot(), { verify: id })), ErrorCode.BAD_SIGNATURE)
  t.is(await code(target.restore(signed, { verify: other })), ErrorCode.BAD_SIGNATURE)
  // A forged edit with the checksums recomputed would pass restore's integrity checks; not the signature.
  const edited = JSON.parse(JSON.stringify(signed)) as StateMachineSnapshot
  edited.currentState = 'DONE'
  t.is(await code(target.restore(edited, { verify: id })), ErrorCode.BAD_SIGNATURE)
  const resigned = { ...(JSON.parse(JSON.stringify(signed)) as object), signature: sm.snapshot({ sign: other }) }
  t.is(await code(target.restore(resigned as never, { verify: id })), ErrorCode.BAD_SIGNATURE)
  t.is(target.current, 'INIT')
  t.is(await code(target.restore(signed, { verify: 'ed25519:bad' })), ErrorCode.INVALID_KEY)
})
