// Snapshot stores (memory, file) and persisting a StateMachine in them.
import test, { type ExecutionContext } from 'ava'
import { spawnSync } from 'node:child_process'
import { mkdtemp, readFile, readdir, rm, writeFile, utimes } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  ErrorCode,
  FileSnapshotStore,
  MemorySnapshotStore,
  persistState,
  resumeState,
  type LostEvent,
  type PolyCallError,
  type SavedEvent,
  type SnapshotStore,
  type StateMachineSnapshot,
} from '../ts/index.js'
import { cycleMachine, nextOf, storeContract } from './helpers/stores.js'

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'polycall-store-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

function machine(t: ExecutionContext) {
  const sm = cycleMachine()
  t.teardown(() => sm.free())
  return sm
}

test('memory store: load, save, compare-and-set, delete, copies, bounds', async (t) => {
  const store = new MemorySnapshotStore<{ n: number }>({ maxBytes: 4096 })
  await storeContract(t, store, 4096)
  t.is(store.size, 0)
  t.throws(() => new MemorySnapshotStore({ maxBytes: 0 }), { code: ErrorCode.INVALID_ARGUMENT })
})

test('file store: the same contract, one JSON file per id with its version, nothing left behind', async (t) => {
  const dir = await tempDir(t)
  const store = new FileSnapshotStore<{ n: number }>({ dir: join(dir, 'nested', 'state'), maxBytes: 4096 })
  await storeContract(t, store, 4096)
  t.deepEqual(await readdir(store.dir), [])

  t.is(await store.save('order-42', { n: 7 }), 1)
  t.is(await store.save('order-42', { n: 8 }, { ifVersion: 1 }), 2)
  const record = JSON.parse(await readFile(store.pathOf('order-42'), 'utf8')) as Record<string, unknown>
  t.deepEqual(record, { format: 'polycall.snapshot-store/1', id: 'order-42', version: 2, snapshot: { n: 8 } })
  // No temporary or lock file survives a write.
  t.deepEqual(await readdir(store.dir), ['order-42.json'])
})

test('file store: ids map to distinct, safe file names (case, dots, slashes, long ids)', async (t) => {
  const dir = await tempDir(t)
  const store = new FileSnapshotStore<{ id: string }>({ dir, fsync: false })
  const ids = ['a', 'A', '../x', 'a/b', '.hidden', 'ünï', '%41', 'x'.repeat(256), 'y'.repeat(256)]
  for (const id of ids) await store.save(id, { id })
  for (const id of ids) t.is((await store.load(id))!.snapshot.id, id)
  const names = await readdir(dir)
  t.is(names.length, ids.length)
  // Names differ even compared without case, and none leaves the directory or hides.
  t.is(new Set(names.map((n) => n.toLowerCase())).size, ids.length)
  for (const n of names) {
    t.regex(n, /^[a-z0-9_%A-F-]+\.json$/)
    t.true(n.length <= 205)
  }
})

test('file store: a malformed or foreign record is STORE_FAILED; an oversized one PAYLOAD_TOO_LARGE', async (t) => {
  const dir = await tempDir(t)
  const store = new FileSnapshotStore<unknown>({ dir, maxBytes: 2048 })
  await writeFile(store.pathOf('bad'), '{not json')
  t.is(((await t.throwsAsync(store.load('bad'))) as PolyCallError).code, ErrorCode.STORE_FAILED)
  await writeFile(store.pathOf('other'), JSON.stringify({ format: 'polycall.snapshot-store/1', id: 'someone-else', version: 1, snapshot: {} }))
  t.is(((await t.throwsAsync(store.load('other'))) as PolyCallError).code, ErrorCode.STORE_FAILED)
  await writeFile(store.pathOf('v0'), JSON.stringify({ format: 'polycall.snapshot-store/1', id: 'v0', version: 0, snapshot: {} }))
  t.is(((await t.throwsAsync(store.load('v0'))) as PolyCallError).code, ErrorCode.STORE_FAILED)
  // A writer refuses to build on a record it cannot read.
  t.is(((await t.throwsAsync(store.save('bad', {}))) as PolyCallError).code, ErrorCode.STORE_FAILED)
  await writeFile(store.pathOf('huge'), JSON.stringify({ format: 'polycall.snapshot-store/1', id: 'huge', version: 1, snapshot: 'z'.repeat(10_000) }))
  t.is(((await t.throwsAsync(store.load('huge'))) as PolyCallError).code, ErrorCode.PAYLOAD_TOO_LARGE)
  t.throws(() => new FileSnapshotStore({ dir: '' }), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => new FileSnapshotStore({ dir, lockTimeout: -1 }), { code: ErrorCode.INVALID_ARGUMENT })
})

test('file store: a held lock makes writers wait, then time out; a dead holder\'s lock is broken at once', async (t) => {
  const dir = await tempDir(t)
  const store = new FileSnapshotStore<{ n: number }>({ dir, lockTimeout: 300, fsync: false })
  const lock = join(dir, 'held.lock')
  // A live holder (this process's parent shell stands in: it exists and is not us).
  await writeFile(lock, `${(await import('node:os')).hostname()} ${process.ppid} 0123`)
  const started = performance.now()
  const err = (await t.throwsAsync(store.save('held', { n: 1 }))) as PolyCallError
  const waited = performance.now() - started
  t.is(err.code, ErrorCode.TIMEOUT)
  t.true(waited >= 250 && waited < 5000, `waited ${waited} ms`)
  t.is(((await t.throwsAsync(store.save('held', { n: 1 }, { timeout: 20 }))) as PolyCallError).code, ErrorCode.TIMEOUT)
  t.is(await store.load('held'), undefined)

  // A lock left by a process of this host that has exited.
  const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' })
  await writeFile(lock, `${(await import('node:os')).hostname()} ${gone.stdout} 4567`)
  t.is(await store.save('held', { n: 1 }), 1)

  // A lock older than staleLockTimeout, whoever holds it.
  const old = new FileSnapshotStore<{ n: number }>({ dir, lockTimeout: 2000, staleLockTimeout: 1000, fsync: false })
  await writeFile(lock, 'elsewhere 1 89ab')
  const past = new Date(Date.now() - 60_000)
  await utimes(lock, past, past)
  t.is(await old.save('held', { n: 2 }, { ifVersion: 1 }), 2)
  t.deepEqual((await readdir(dir)).sort(), ['held.json'])
})

test('persistState: every transition is saved, with its version; resumeState restores it elsewhere', async (t) => {
  const store = new MemorySnapshotStore()
  const sm = machine(t)
  const persisted = persistState(sm, store, 'cycle')
  const saved: SavedEvent[] = []
  persisted.on('saved', (e) => saved.push(e))
  await persisted.transition('S1')
  t.is(persisted.version, 1)
  await persisted.transition('S2')
  // Transitions started on the machine directly are saved too.
  await sm.transition('S3')
  await persisted.flush()
  t.is(persisted.version, 3)
  t.is(saved.map((e) => e.records.map((r) => r.to).join()).join(' '), 'S1 S2 S3')
  const stored = (await store.load('cycle'))!
  t.is(stored.version, 3)
  t.is(stored.snapshot.currentState, 'S3')

  const other = machine(t)
  const resumed = await resumeState(other, store, 'cycle')
  t.true(resumed.restored)
  t.is(resumed.version, 3)
  t.is(other.current, 'S3')
  t.deepEqual(other.history().map((r) => r.to), ['S1', 'S2', 'S3'])
  await resumed.transition('S0')
  t.is((await store.load('cycle'))!.version, 4)

  // After close, transitions are no longer saved.
  await persisted.close()
  await persisted.close()
  await t.throwsAsync(persisted.transition('S0'), { code: ErrorCode.CLOSED })
  const fresh = await resumeState(machine(t), store, 'nothing-here')
  t.false(fresh.restored)
  t.is(fresh.version, 0)
})

test('persistState: transitions faster than saves are saved together, in order', async (t) => {
  const dir = await tempDir(t)
  const store = new FileSnapshotStore({ dir, fsync: false })
  const sm = machine(t)
  const persisted = persistState(sm, store, 'burst')
  const saved: SavedEvent[] = []
  persisted.on('saved', (e) => saved.push(e))
  const all = []
  for (let i = 0; i < 40; i++) all.push(persisted.transition(nextOf(i === 0 ? 'S0' : `S${i % 4}`)))
  await Promise.all(all)
  await persisted.flush()
  const covered = saved.flatMap((e) => e.records)
  t.is(covered.length, 40)
  // At most one save in flight and one pending: far fewer writes than transitions.
  t.true(saved.length < 40, `${saved.length} writes`)
  const stored = (await store.load('burst'))!
  t.is(stored.version, saved.length)
  t.is(stored.snapshot.history.length, 40)
  await persisted.close()
})

test('two machines on one id: the loser\'s transition rejects with CONFLICT and its machine reloads the winner\'s state', async (t) => {
  const store = new MemorySnapshotStore()
  const a = machine(t)
  const b = machine(t)
  const pa = await resumeState(a, store, 'shared')
  const pb = await resumeState(b, store, 'shared')
  const conflicts: LostEvent[] = []
  pb.on('conflict', (e) => conflicts.push(e))
  await pa.transition('S1')
  const err = (await t.throwsAsync(pb.transition('S1'))) as PolyCallError & { lost: { to: string }[] }
  t.is(err.code, ErrorCode.CONFLICT)
  t.deepEqual(err.lost.map((r) => r.to), ['S1'])
  t.is(conflicts.length, 1)
  t.is(conflicts[0]!.version, 1)
  // b now holds a's state (history included) and continues from there.
  t.is(b.current, 'S1')
  t.deepEqual(b.history(), a.history())
  t.is(pb.version, 1)
  await pb.transition('S2')
  t.is((await store.load('shared'))!.version, 2)
  await t.throwsAsync(pa.transition('S2'), { code: ErrorCode.CONFLICT })
  t.is(a.current, 'S2')
  await pa.close()
  await pb.close()
})

test('persistState with a store that fails: transitions are reported lost and undone; a lost reply counts as saved', async (t) => {
  const inner = new MemorySnapshotStore()
  let mode: 'ok' | 'fail' | 'apply-then-fail' | 'down' = 'ok'
  const flaky: SnapshotStore = {
    load: (id, o) => (mode === 'down' ? Promise.reject(Object.assign(new Error('down'), { code: 'ECONNREFUSED' })) : inner.load(id, o)),
    save: async (id, snap, o) => {
      if (mode === 'fail' || mode === 'down') throw new Error('connection reset')
      const v = await inner.save(id, snap, o)
      if (mode === 'apply-then-fail') throw new Error('reply lost')
      return v
    },
    delete: (id, o) => inner.delete(id, o),
  }
  const sm = machine(t)
  const persisted = persistState(sm, flaky, 'flaky')
  const failed: LostEvent[] = []
  persisted.on('failed', (e) => failed.push(e))
  await persisted.transition('S1')

  mode = 'fail'
  const err = (await t.throwsAsync(persisted.transition('S2'))) as PolyCallError
  t.is(err.code, ErrorCode.STORE_FAILED)
  t.is(sm.current, 'S1') // undone by the reload
  t.is(failed.length, 1)

  mode = 'apply-then-fail'
  const record = await persisted.transition('S2')
  t.is(record.to, 'S2')
  t.is(persisted.version, 2)
  t.is(sm.current, 'S2')

  // The store is down: the save fails, so does the reload; the next transition is refused too
  // until a reload succeeds, then the machine is back at the stored state.
  mode = 'down'
  await t.throwsAsync(persisted.transition('S3'), { code: ErrorCode.STORE_FAILED })
  mode = 'ok'
  await t.throwsAsync(persisted.transition('S0'), { code: ErrorCode.CONFLICT })
  t.is(sm.current, 'S2')
  await persisted.transition('S3')
  t.is((await inner.load('flaky'))!.version, 3)
  await persisted.close()
})

test('resumeState refuses a stored snapshot that does not verify', async (t) => {
  const store = new MemorySnapshotStore<StateMachineSnapshot>()
  const sm = machine(t)
  const snap = sm.snapshot()
  await store.save('tampered', { ...snap, currentState: 'S2' })
  await t.throwsAsync(resumeState(machine(t), store, 'tampered'), { code: ErrorCode.INTEGRITY_CHECK_FAILED })
  const { checksum: _c, ...unchecked } = snap
  await store.save('unchecked', unchecked)
  const err = (await t.throwsAsync(resumeState(machine(t), store, 'unchecked'))) as PolyCallError
  t.true([ErrorCode.INTEGRITY_CHECK_FAILED, ErrorCode.INVALID_SNAPSHOT].includes(err.code as never), err.code)
  t.throws(() => persistState({} as never, store, 'x'), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => persistState(sm, {} as never, 'x'), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => persistState(sm, store, ''), { code: ErrorCode.INVALID_ARGUMENT })
})
