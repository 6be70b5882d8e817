import test from 'ava'
import fc from 'fast-check'
import { Deadlines, GRANULARITY_MS, type Expiring } from '../ts/core/deadlines.js'
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
