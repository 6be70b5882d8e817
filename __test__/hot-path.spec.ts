/**
 * The data structures and codecs of the request hot path, checked against the general-purpose
 * ones they stand in for: SequenceTable against Map, the msgpack scalar path against msgpackr.
 */
import test from 'ava'
import fc from 'fast-check'
import { Packr, Unpackr } from 'msgpackr'
import { SequenceTable } from '../ts/core/sequence-table.js'
import {
  NOT_SCALAR,
  commandBound,
  packCommand,
  packScalar,
  readCommandName,
  readScalar,
  scalarEnd,
  valueBound,
  writeCommandAt,
  writeValueAt,
} from '../ts/protocol/msgpack-scalar.js'
import { msgpackCodec } from '../ts/protocol/payload.js'

const packr = new Packr({ useRecords: false, moreTypes: false })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })

// ---- SequenceTable ------------------------------------------------------------------------------

type Op = { op: 'set' | 'delete' | 'get'; key: number }

const keys = fc.oneof(
  fc.integer({ min: 0, max: 40 }), // dense, colliding after masking
  fc.integer({ min: 0, max: 0xffffffff }),
  fc.constantFrom(0xffffffff, 0xfffffffe, 0, 1, 8, 16, 1024), // the u32 wrap and mask edges
)
const ops = fc.array(fc.record({ op: fc.constantFrom<Op['op']>('set', 'set', 'delete', 'get'), key: keys }), { maxLength: 400 })

test('SequenceTable behaves like a Map for any sequence of sets, deletes and gets', (t) => {
  fc.assert(
    fc.property(ops, (list) => {
      const table = new SequenceTable<{ key: number; n: number }>()
      const model = new Map<number, { key: number; n: number }>()
      list.forEach(({ op, key }, n) => {
        if (op === 'set') {
          const v = { key, n }
          table.set(key, v)
          model.set(key, v)
        } else if (op === 'delete') {
          if (table.delete(key) !== model.delete(key)) throw new Error(`delete(${key}) disagrees`)
        } else if (table.get(key) !== model.get(key)) throw new Error(`get(${key}) disagrees`)
        if (table.size !== model.size) throw new Error('size disagrees')
      })
      for (const [k, v] of model) if (table.get(k) !== v || !table.has(k)) throw new Error(`lost ${k}`)
      const values = table.values().sort((a, b) => a.n - b.n)
      const expected = [...model.values()].sort((a, b) => a.n - b.n)
      if (values.length !== expected.length || values.some((v, i) => v !== expected[i])) throw new Error('values() disagrees')
    }),
    { numRuns: 300, seed: 11 },
  )
  t.pass()
})

test('SequenceTable: consecutive sequences with out-of-order completion, across growth and the u32 wrap', (t) => {
  const table = new SequenceTable<number>()
  const live = new Set<number>()
  let seq = 0xffffff00
  for (let round = 0; round < 2000; round++) {
    for (let i = 0; i < 3; i++) {
      seq = (seq + 1) >>> 0
      table.set(seq, seq)
      live.add(seq)
    }
    // Complete every other live call, oldest first: leaves gaps that probe runs cross.
    let k = 0
    for (const s of live) {
      if (k++ % 2 === 0) {
        t.true(table.delete(s))
        live.delete(s)
      }
      if (live.size < 200) break
    }
  }
  t.is(table.size, live.size)
  for (const s of live) t.is(table.get(s), s)
  t.false(table.delete(0x12345))
  table.clear()
  t.is(table.size, 0)
  t.is(table.get([...live][0]!), undefined)
  t.deepEqual(table.values(), [])
})

// ---- msgpack scalars ----------------------------------------------------------------------------

const scalar = fc.oneof(
  fc.constant(undefined),
  fc.constant(null),
  fc.boolean(),
  fc.integer({ min: -0x80000000, max: 0xffffffff }),
  fc.constantFrom(0, 127, 128, 255, 256, 65535, 65536, -32, -33, -128, -129, -32768, -32769, 2 ** 32, 2 ** 53, -(2 ** 31) - 1),
  fc.double({ noNaN: true }),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 120 }),
  fc.string({ minLength: 250, maxLength: 1100 }),
  fc.uint8Array({ maxLength: 300 }),
  fc.integer({ min: 65530, max: 70000 }).map((n) => new Uint8Array(n).fill(7)),
)

/** The value as msgpackr reads it back: bytes become Buffers. */
function normal(v: unknown): unknown {
  return v instanceof Uint8Array ? Buffer.from(v) : v
}

test('packScalar output reads back to the same value through msgpackr, and msgpackr output through readScalar', (t) => {
  fc.assert(
    fc.property(scalar, (v) => {
      const ours = packScalar(v)
      if (!ours) {
        // Only long strings and large byte arrays are left to the generic encoder.
        return (typeof v === 'string' && v.length > 1024) || (v instanceof Uint8Array && v.length > 16000)
      }
      const back = unpackr.unpack(ours)
      if (!Object.is(normal(back), normal(v)) && !Buffer.isBuffer(back)) {
        if (!(Object.is(v, -0) && back === 0)) return false
      }
      if (Buffer.isBuffer(back) && !back.equals(v as Uint8Array)) return false
      const theirs = packr.pack(v)
      const read = readScalar(theirs, 0)
      if (read === NOT_SCALAR) return typeof v === 'string' && Buffer.byteLength(v) >= 0x10000
      if (scalarEnd !== theirs.length) return false
      if (Buffer.isBuffer(read)) return read.equals(v as Uint8Array)
      return Object.is(read, v) || (Object.is(v, -0) && read === 0)
    }),
    { numRuns: 2000, seed: 5 },
  )
  t.pass()
})

test('short strings written by the ASCII loop and by the UTF-8 encoder give msgpackr\'s bytes, a non-ASCII unit anywhere', (t) => {
  for (let len = 0; len <= 33; len++) {
    const ascii = 'abcdefghijklmnopqrstuvwxyz0123456789'.slice(0, len)
    const cases = [ascii, ...Array.from({ length: len }, (_, i) => ascii.slice(0, i) + 'é' + ascii.slice(i + 1)), `${ascii}\u{1f600}`]
    for (const v of cases) {
      t.deepEqual(packScalar(v), packr.pack(v), JSON.stringify(v))
      const at = Buffer.alloc(3 + valueBound(v) + 8, 0xee)
      t.deepEqual(at.subarray(3, writeValueAt(at, 3, v)), packr.pack(v), JSON.stringify(v))
    }
  }
})

test('readScalar refuses truncated values and leaves non-scalars to the generic decoder', (t) => {
  for (const v of ['hello', 300, 70000, -200, -40000, -3000000, 1.5, new Uint8Array(300), new Uint8Array(16000), 'x'.repeat(40), 'y'.repeat(300), undefined]) {
    const full = packScalar(v)!
    for (let cut = 0; cut < Math.min(full.length, 12); cut++) {
      t.is(readScalar(full.subarray(0, cut), 0), NOT_SCALAR, `${String(v).slice(0, 10)} cut at ${cut}`)
    }
  }
  for (const v of [{ a: 1 }, [1, 2], 2n ** 64n - 1n, new Date(0)]) t.is(readScalar(packr.pack(v), 0), NOT_SCALAR)
  t.is(readScalar(Buffer.from([0xd4, 0x01, 0x00]), 0), NOT_SCALAR, 'another fixext type is an extension')
  t.is(readScalar(Buffer.alloc(0), 0), NOT_SCALAR)
})

test('a packed scalar stays intact after many later packs (views are never reused)', (t) => {
  const first = packScalar(Buffer.from('first value'))!
  const copy = Buffer.from(first)
  for (let i = 0; i < 5000; i++) packScalar(new Uint8Array(100).fill(i & 0xff))
  t.true(first.equals(copy))
})

test('COMMAND payloads: scalar and generic paths read the same on both sides', (t) => {
  fc.assert(
    fc.property(
      fc.string({ maxLength: 60 }),
      fc.oneof(scalar, fc.dictionary(fc.string({ maxLength: 5 }), fc.integer()), fc.array(fc.integer(), { maxLength: 5 })),
      fc.option(fc.integer({ min: 0, max: 2 ** 31 }), { nil: undefined }),
      (command, data, timeout) => {
        const ours = msgpackCodec.encodeCommand(command, data, timeout)
        const generic = packr.pack(timeout === undefined ? [command, data] : [command, data, timeout])
        for (const bytes of [ours, generic]) {
          const cmd = msgpackCodec.decodeCommand(bytes)
          if (cmd.command !== command || cmd.timeout !== timeout) return false
          const got = normal(cmd.data)
          if (Buffer.isBuffer(got)) {
            if (!got.equals(data as Uint8Array)) return false
          } else if (JSON.stringify(got) !== JSON.stringify(data) && !(Object.is(data, -0) && got === 0)) return false
          if (typeof data === 'number' && !Object.is(got, data) && !(Object.is(data, -0) && got === 0)) return false
        }
        return true
      },
    ),
    { numRuns: 1000, seed: 9 },
  )
  t.pass()
})

test('writeValueAt and writeCommandAt write the bytes of packScalar and packCommand, within their bounds', (t) => {
  const names = fc.oneof(fc.constantFrom('echo', 'echo', 'echO', 'users.get', ''), fc.string({ maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 20 }))
  fc.assert(
    fc.property(names, scalar, fc.option(fc.integer({ min: 0, max: 2 ** 31 }), { nil: undefined }), fc.integer({ min: 0, max: 64 }), (command, data, timeout, at) => {
      const vb = valueBound(data)
      const packed = packScalar(data)
      if ((vb < 0) !== (packed === undefined)) return false
      if (packed) {
        const out = Buffer.alloc(at + vb + 8, 0xee)
        const end = writeValueAt(out, at, data)
        if (end - at > vb || !out.subarray(at, end).equals(packed) || out[end] !== 0xee) return false
      }
      const cb = commandBound(command, data)
      const cmd = packCommand(command, data, timeout)
      if ((cb < 0) !== (cmd === undefined)) return false
      if (cmd) {
        const out = Buffer.alloc(at + cb + 8, 0xee)
        const end = writeCommandAt(out, at, command, data, timeout)
        if (end - at > cb || !out.subarray(at, end).equals(cmd) || out[end] !== 0xee) return false
      }
      return true
    }),
    { numRuns: 2000, seed: 13 },
  )
  t.pass()
})

test('readCommandName reads what readScalar reads, through repeats and names of the same length', (t) => {
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.constantFrom('echo', 'echO', 'ohce', 'echo'), fc.string({ maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 12 })), { maxLength: 30 }), (list) => {
      for (const name of list) {
        const bytes = Buffer.concat([Buffer.from([0x00]), packr.pack(name), Buffer.from([0xc0])])
        const expected = readScalar(bytes, 1)
        const expectedEnd = scalarEnd
        if (readCommandName(bytes, 1) !== expected || scalarEnd !== expectedEnd) return false
      }
      return true
    }),
    { numRuns: 500, seed: 17 },
  )
  const cut = packr.pack('echo').subarray(0, 3)
  readCommandName(packr.pack('echo'), 0)
  t.is(readCommandName(cut, 0), NOT_SCALAR, 'a truncated repeat is not read from the cache')
  t.is(readCommandName(Buffer.from([0x05]), 0), 5, 'a value that is no string reads as readScalar reads it')
})

test('COMMAND shapes outside the fast path still decode, or fail with BAD_REQUEST', (t) => {
  // A timeout that is not a whole number, and one that is negative, are ignored as before.
  t.deepEqual(msgpackCodec.decodeCommand(packr.pack(['a', 1, 'soon'])), { command: 'a', data: 1 })
  t.deepEqual(msgpackCodec.decodeCommand(packr.pack(['a', 1, -5])), { command: 'a', data: 1 })
  t.deepEqual(msgpackCodec.decodeCommand(packr.pack(['a'])), { command: 'a', data: undefined })
  // Trailing bytes after a scalar COMMAND are refused, as msgpackr refuses them.
  const trailing = Buffer.concat([packCommand('a', 1, 5)!, Buffer.from([0x01])])
  for (const bad of [trailing, Buffer.from([0x93]), Buffer.from([0x92, 0xa1]), packr.pack([1, 2]), packr.pack({ command: 'x' }), Buffer.from([0xc1])]) {
    const err = t.throws(() => msgpackCodec.decodeCommand(bad))
    t.is((err as { code?: string }).code, 'ERR_POLYCALL_BAD_REQUEST')
  }
})

test('RESPONSE values: encodeValue/decodeValue agree with msgpackr for scalars and objects', (t) => {
  for (const v of [undefined, null, true, 0, -1, 2 ** 40, 0.25, 'é', Buffer.from([1, 2, 3]), { a: [1, 'b'] }, [null]]) {
    const bytes = msgpackCodec.encodeValue(v)
    t.deepEqual(normal(unpackr.unpack(bytes)), normal(v))
    t.deepEqual(normal(msgpackCodec.decodeValue(bytes)), normal(v))
    t.deepEqual(normal(msgpackCodec.decodeValue(packr.pack(v))), normal(v))
  }
})
