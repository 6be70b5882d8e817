import test from 'ava'
import fc from 'fast-check'
import { Deadlines, EMPTY_BUCKETS, GRANULARITY_MS, type Expiring } from '../ts/core/deadlines.js'
import { now } from '../ts/core/abort.js'

interface Item extends Expiring {
  id: number
  due: number
  firedAt?: number
}

test('every scheduled item fires once, not before its deadline; deleted items never fire', async (t) => {
  const fired: Item[] = []
  let done!: () => void
  const all = new Promise<void>((r) => (done = r))
  const expected = new Set<number>()
  const d = new Deadlines<Item>((item) => {
    item.firedAt = now()
    fired.push(item)
    expected.delete(item.id)
    if (expected.size === 0) done()
  })
  const start = now()
  const items: Item[] = fc.sample(fc.integer({ min: 0, max: 120 }), { numRuns: 300, seed: 7 }).map((ms, id) => ({
    id,
    due: start + ms,
    deadlineBucket: -1,
  }))
  for (const item of items) d.add(item, item.due)
  for (const item of items) if (item.id % 3 === 0) d.delete(item)
  for (const item of items) if (item.id % 3 !== 0) expected.add(item.id)
  const never: Item = { id: -1, due: Infinity, deadlineBucket: 5 }
  d.add(never, Infinity)
  t.is(never.deadlineBucket, -1)
  const keepAlive = setInterval(() => {}, 1000)
  await all
  clearInterval(keepAlive)
  t.is(fired.length, items.filter((i) => i.id % 3 !== 0).length)
  t.is(new Set(fired.map((f) => f.id)).size, fired.length, 'no item fired twice')
  for (const f of fired) t.true(f.firedAt! >= f.due - 0.5, `item ${f.id} fired ${f.due - f.firedAt!} ms early`)
  t.true(fired.every((f) => f.id % 3 !== 0))
  t.is(d.size, 0)
  t.true(GRANULARITY_MS > 0)
})

test('buckets emptied at once (handlers that finish synchronously) still fire items added to them later', async (t) => {
  const fired: Item[] = []
  let done!: () => void
  const all = new Promise<void>((r) => (done = r))
  const d = new Deadlines<Item>((item) => {
    fired.push(item)
    if (fired.length === 2) done()
  })
  const start = now()
  // Thousands of add-then-delete rounds on the same few buckets, as a busy server does.
  for (let i = 0; i < 5000; i++) {
    const item: Item = { id: i, due: start + 20 + (i % 3), deadlineBucket: -1 }
    d.add(item, item.due)
    d.delete(item)
  }
  t.is(d.size, 0)
  // An emptied bucket that is still scheduled takes new items, and a new, earlier bucket re-arms.
  const late: Item = { id: 1, due: start + 21, deadlineBucket: -1 }
  const early: Item = { id: 2, due: start + 5, deadlineBucket: -1 }
  d.add(late, late.due)
  d.add(early, early.due)
  t.is(d.size, 2)
  const keepAlive = setInterval(() => {}, 1000)
  await all
  clearInterval(keepAlive)
  t.deepEqual(fired.map((f) => f.id), [2, 1])
  t.is(d.size, 0)
})

test('emptied buckets are freed: memory follows the items scheduled, not the distinct deadlines seen', (t) => {
  const d = new Deadlines<Item>(() => t.fail('nothing is due'))
  const start = now()
  // 100,000 requests, each with its own far-future deadline, each finished at once.
  for (let i = 0; i < 100_000; i++) {
    const item: Item = { id: i, due: start + 1e12 + GRANULARITY_MS * i, deadlineBucket: -1 }
    d.add(item, item.due)
    d.delete(item)
  }
  t.is(d.size, 0)
  t.true(d.buckets <= EMPTY_BUCKETS, `${d.buckets} buckets held`)
  // With items alive, the empty buckets kept stay within the live ones (plus the small cap).
  const live: Item[] = []
  for (let i = 0; i < 5000; i++) {
    const item: Item = { id: i, due: start + 2e12 + GRANULARITY_MS * i, deadlineBucket: -1 }
    d.add(item, item.due)
    if (i % 2 === 0) d.delete(item)
    else live.push(item)
  }
  t.is(d.size, live.length)
  t.true(d.buckets <= 2 * live.length + EMPTY_BUCKETS, `${d.buckets} buckets for ${live.length} items`)
  // Once they are done, the next burst of new deadlines sweeps their buckets out too.
  for (const item of live) d.delete(item)
  t.true(d.buckets <= 2 * live.length + EMPTY_BUCKETS, `${d.buckets} buckets held after all were deleted`)
  for (let i = 0; i < 3 * live.length; i++) {
    const item: Item = { id: i, due: start + 3e12 + GRANULARITY_MS * i, deadlineBucket: -1 }
    d.add(item, item.due)
    d.delete(item)
  }
  t.true(d.buckets <= EMPTY_BUCKETS, `${d.buckets} buckets held after the next burst`)
})

test('property: sweeps never lose or duplicate an item (random adds and deletes over many buckets)', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ ms: fc.integer({ min: 0, max: 60 }), keep: fc.boolean(), spread: fc.integer({ min: 0, max: 400 }) }), {
        minLength: 1,
        maxLength: 400,
      }),
      async (ops) => {
        const fired: number[] = []
        const expected = new Set<number>()
        let done!: () => void
        const all = new Promise<void>((r) => (done = r))
        const d = new Deadlines<Item>((item) => {
          fired.push(item.id)
          expected.delete(item.id)
          if (expected.size === 0) done()
        })
        const start = now()
        // Far buckets that empty at once force sweeps between the near ones that fire.
        ops.forEach((op, id) => {
          const far: Item = { id: -id - 1, due: start + 1e9 + op.spread * GRANULARITY_MS, deadlineBucket: -1 }
          d.add(far, far.due)
          const item: Item = { id, due: start + op.ms, deadlineBucket: -1 }
          d.add(item, item.due)
          d.delete(far)
          if (op.keep) expected.add(id)
          else d.delete(item)
        })
        if (expected.size === 0) done()
        const keepAlive = setInterval(() => {}, 1000)
        await all
        clearInterval(keepAlive)
        return fired.length === new Set(fired).size && fired.every((id) => ops[id]!.keep) && fired.length === ops.filter((o) => o.keep).length && d.size === 0
      },
    ),
    { numRuns: 30, seed: 11 },
  )
  t.pass()
})

test('items added from an expiry callback into a bucket that is firing still fire', async (t) => {
  const fired: number[] = []
  let done!: () => void
  const all = new Promise<void>((r) => (done = r))
  const past = now() - 10
  const d = new Deadlines<Item>((item) => {
    fired.push(item.id)
    // Each expiry schedules the next item into the same past bucket: the bucket has already left
    // the schedule, so the next add must start a new one.
    if (item.id < 20) d.add({ id: item.id + 1, due: past, deadlineBucket: -1 }, past)
    else done()
  })
  d.add({ id: 0, due: past, deadlineBucket: -1 }, past)
  const guard = setTimeout(() => done(), 5000)
  await all
  clearTimeout(guard)
  t.deepEqual(
    fired,
    Array.from({ length: 21 }, (_, i) => i),
  )
  t.is(d.size, 0)
})
