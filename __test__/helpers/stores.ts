/** What every SnapshotStore must do, run against each store the specs build; and a test machine. */
import type { ExecutionContext } from 'ava'
import { ErrorCode, StateMachine, type PolyCallError, type SnapshotStore } from '../../ts/index.js'

/** A machine cycling S0 -> S1 -> S2 -> S3 -> S0, with a long history. */
export function cycleMachine(): StateMachine {
  const sm = new StateMachine({ maxHistory: 100_000 })
  for (let i = 0; i < 4; i++) sm.addState(`S${i}`)
  for (let i = 0; i < 4; i++) sm.addTransition(`S${i}`, `S${(i + 1) % 4}`)
  return sm
}

/** The state after `current` in {@link cycleMachine}. */
export function nextOf(current: string | undefined): string {
  return `S${(Number(current?.slice(1) ?? 0) + 1) % 4}`
}

type Snap = { n: number; text?: string; big?: string }

/** Load/save/delete semantics, compare-and-set, copies, bounds and argument checks. */
export async function storeContract(t: ExecutionContext, store: SnapshotStore<Snap>, maxBytes: number): Promise<void> {
  const id = `contract-${Math.random().toString(36).slice(2)}`
  t.is(await store.load(id), undefined)
  t.false(await store.delete(id))

  // Create-only, then compare-and-set from the version read.
  t.is(await store.save(id, { n: 1 }, { ifVersion: 0 }), 1)
  const c0 = await t.throwsAsync(store.save(id, { n: 99 }, { ifVersion: 0 }))
  t.is((c0 as PolyCallError).code, ErrorCode.CONFLICT)
  t.is((c0 as PolyCallError & { version: number }).version, 1)
  t.is(await store.save(id, { n: 2, text: 'é "quoted" \n 😀' }, { ifVersion: 1 }), 2)
  const stale = await t.throwsAsync(store.save(id, { n: 3 }, { ifVersion: 1 }))
  t.is((stale as PolyCallError).code, ErrorCode.CONFLICT)
  t.deepEqual(await store.load(id), { snapshot: { n: 2, text: 'é "quoted" \n 😀' }, version: 2 })
  // Unconditional writes still bump the version.
  t.is(await store.save(id, { n: 3 }), 3)

  // A loaded object is a copy.
  const loaded = (await store.load(id))!
  loaded.snapshot.n = 1000
  t.is((await store.load(id))!.snapshot.n, 3)

  // Delete honours ifVersion.
  t.is(((await t.throwsAsync(store.delete(id, { ifVersion: 2 }))) as PolyCallError).code, ErrorCode.CONFLICT)
  t.true(await store.delete(id, { ifVersion: 3 }))
  t.is(await store.load(id), undefined)
  t.is(await store.save(id, { n: 1 }, { ifVersion: 0 }), 1)
  t.true(await store.delete(id))

  // Bounds: a snapshot over maxBytes is refused and nothing is stored.
  const big = { n: 0, big: 'x'.repeat(maxBytes) }
  t.is(((await t.throwsAsync(store.save(id, big))) as PolyCallError).code, ErrorCode.PAYLOAD_TOO_LARGE)
  t.is(await store.load(id), undefined)

  // Arguments.
  for (const bad of ['', 'x'.repeat(257), '\ud800', 42 as unknown as string]) {
    t.is(((await t.throwsAsync(store.load(bad))) as PolyCallError).code, ErrorCode.INVALID_ARGUMENT)
  }
  t.is(((await t.throwsAsync(store.save(id, { n: 1n } as unknown as Snap))) as PolyCallError).code, ErrorCode.INVALID_ARGUMENT)
  t.is(((await t.throwsAsync(store.save(id, { n: 1 }, { ifVersion: -1 }))) as PolyCallError).code, ErrorCode.INVALID_ARGUMENT)
  t.is(((await t.throwsAsync(store.save(id, { n: 1 }, { ifVersion: 1.5 }))) as PolyCallError).code, ErrorCode.INVALID_ARGUMENT)
  const aborted = AbortSignal.abort(new Error('stop'))
  t.is(((await t.throwsAsync(store.save(id, { n: 1 }, { signal: aborted }))) as PolyCallError).code, ErrorCode.ABORTED)
  t.is(((await t.throwsAsync(store.load(id, { signal: aborted }))) as PolyCallError).code, ErrorCode.ABORTED)
  t.is(await store.load(id), undefined)

  // Many writers with the same ifVersion at once: exactly one wins.
  await store.save(id, { n: 0 }, { ifVersion: 0 })
  const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => store.save(id, { n: i + 1 }, { ifVersion: 1 })))
  const won = results.filter((r) => r.status === 'fulfilled')
  t.is(won.length, 1)
  t.is((won[0] as PromiseFulfilledResult<number>).value, 2)
  for (const r of results) if (r.status === 'rejected') t.is((r.reason as PolyCallError).code, ErrorCode.CONFLICT)
  t.is((await store.load(id))!.version, 2)
  await store.delete(id)
}
