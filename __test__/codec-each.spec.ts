import test from 'ava'
import fc from 'fast-check'
import {
  ErrorCode,
  FrameDecoder,
  MessageType,
  encodeFrame,
  encodeFrameInto,
  isPolyCallError,
  type DecodeError,
  type Frame,
  type FrameInit,
} from '../ts/index.js'
import { native } from '../ts/native.js'
import { checksumJs } from '../ts/protocol/fast-path.js'
import { hex, payloadOf, vectors } from './helpers/vectors.js'

/** One delivered frame, as the callback form sees it (the payload copied out). */
interface Got {
  type: number
  flags: number
  sequence: number
  payload: string
}

const fromFrame = (f: Frame): Got => ({ type: f.type, flags: f.flags, sequence: f.sequence, payload: Buffer.from(f.payload).toString('hex') })

/** Pushes `chunks` through the callback form; returns the frames and the error code/message, if any. */
function eachRun(chunks: Uint8Array[], end = true): { got: Got[]; err: string } {
  const d = new FrameDecoder()
  const got: Got[] = []
  try {
    for (const c of chunks) {
      const n = d.push(c, (type, flags, sequence, bytes, start, length) => {
        got.push({ type, flags, sequence, payload: Buffer.from(bytes.subarray(start, start + length)).toString('hex') })
      })
      if (!Number.isInteger(n)) throw new Error('push(chunk, onFrame) must return a count')
    }
    if (end) d.end()
    return { got, err: '' }
  } catch (e) {
    const de = e as DecodeError
    return { got, err: `${de.code}: ${de.message}` }
  }
}

/** The same through `push(chunk): Frame[]`. */
function arrayRun(chunks: Uint8Array[], end = true): { got: Got[]; err: string } {
  const d = new FrameDecoder()
  const got: Got[] = []
  try {
    for (const c of chunks) got.push(...d.push(c).map(fromFrame))
    if (end) d.end()
    return { got, err: '' }
  } catch (e) {
    const de = e as DecodeError
    got.push(...(de.frames ?? []).map(fromFrame))
    return { got, err: `${de.code}: ${de.message}` }
  }
}

const frameByName = new Map(vectors.frames.map((f) => [f.name, f]))
const wantOf = (name: string): Got => {
  const f = frameByName.get(name)!
  return { type: f.type, flags: f.flags, sequence: f.sequence, payload: payloadOf(f).toString('hex') }
}

test('frame vectors: encodeFrameInto writes the bytes encodeFrame does, the callback form decodes them', (t) => {
  for (const f of vectors.frames) {
    const payload = payloadOf(f)
    const init = { type: f.type, flags: f.flags, sequence: f.sequence, payload }
    const bytes = encodeFrame(init)
    t.is(bytes.subarray(0, 16).toString('hex'), f.header_hex, f.name)
    if (f.frame_hex) t.is(bytes.toString('hex'), f.frame_hex, f.name)
    const target = Buffer.alloc(bytes.length + 10, 0xee)
    t.is(encodeFrameInto(target, 3, init), 3 + bytes.length, f.name)
    t.true(target.subarray(3, 3 + bytes.length).equals(bytes), f.name)
    t.true(target.subarray(0, 3).every((b) => b === 0xee) && target.subarray(3 + bytes.length).every((b) => b === 0xee), `${f.name}: nothing else written`)
    const seen: number[] = []
    const d = new FrameDecoder()
    const n = d.push(bytes, (type, flags, sequence, data, start, length) => {
      seen.push(type, flags, sequence, length, checksumJs(data, start, start + length))
      t.true(Buffer.from(data.subarray(start, start + length)).equals(payload), f.name)
    })
    d.end()
    t.is(n, 1)
    t.deepEqual(seen, [f.type, f.flags, f.sequence, f.payload_length, f.checksum], f.name)
  }
})

test('stream vectors through the callback form, and across the metadata batch size', (t) => {
  for (const s of vectors.streams) {
    const chunks = s.chunks_hex
      ? s.chunks_hex.map(hex)
      : (s.stream_hex!.match(new RegExp(`.{1,${2 * (s.chunk_size ?? 1)}}`, 'g')) ?? []).map(hex)
    const r = eachRun(chunks)
    t.is(r.err, '', s.name)
    t.deepEqual(r.got, s.expected_frames.map(wantOf), s.name)
  }
  // More frames in one chunk than one native call reports (4096 slots), with 0- and 5-byte payloads.
  for (const size of [0, 5]) {
    const frames = Array.from({ length: 10_000 }, (_, i) => encodeFrame({ type: MessageType.Command, sequence: i, payload: Buffer.alloc(size, i & 0xff) }))
    const stream = Buffer.concat(frames)
    const r = eachRun([stream])
    t.is(r.err, '')
    t.is(r.got.length, 10_000)
    t.true(r.got.every((g, i) => g.sequence === i))
    t.deepEqual(r.got, arrayRun([stream]).got)
  }
})

test('every invalid-frame vector fails with its code in the callback form, after the frames before it', (t) => {
  const good = encodeFrame({ type: MessageType.Response, sequence: 9, payload: Buffer.from('ok') })
  for (const v of vectors.invalid_frames) {
    for (const prefix of [Buffer.alloc(0), good, Buffer.concat(Array.from({ length: 60 }, () => good))]) {
      const chunks = [Buffer.concat([prefix, hex(v.bytes_hex)])]
      const each = eachRun(chunks, v.stream_ends_after)
      const arr = arrayRun(chunks, v.stream_ends_after)
      t.true(each.err.startsWith(`ERR_POLYCALL_${v.error}:`), `${v.name}: ${each.err}`)
      t.is(each.err, arr.err, v.name)
      t.deepEqual(each.got, arr.got, v.name)
    }
  }
})

test('a failed decoder stays failed: later callback pushes throw the same error and deliver nothing', (t) => {
  const d = new FrameDecoder()
  const bad = Buffer.from(encodeFrame({ type: MessageType.Command, sequence: 1, payload: Buffer.from('abc') }))
  bad[16]! ^= 1
  const first = t.throws(() => d.push(bad, () => t.fail('no frame')))
  t.is((first as unknown as { code: string }).code, ErrorCode.CHECKSUM_MISMATCH)
  const again = t.throws(() => d.push(encodeFrame({ type: MessageType.Heartbeat, sequence: 2 }), () => t.fail('no frame')))
  t.is(again, first)
})

const frameArb = fc.record({
  type: fc.integer({ min: 1, max: 6 }),
  flags: fc.integer({ min: 0, max: 0xffff }),
  sequence: fc.integer({ min: 0, max: 0xffffffff }),
  payload: fc.oneof(fc.uint8Array({ maxLength: 8 }), fc.uint8Array({ maxLength: 700 })),
})

test('property: the callback form and push() agree on random streams, random chunking and damage (1000 runs)', (t) => {
  const damage = fc.record({ at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) })
  fc.assert(
    fc.property(
      fc.array(frameArb, { minLength: 0, maxLength: 40 }),
      fc.array(fc.integer({ min: 1, max: 6000 }), { minLength: 1, maxLength: 8 }),
      fc.option(damage, { nil: undefined }),
      fc.boolean(),
      (frames, cuts, hurt, end) => {
        const stream = Buffer.concat(frames.map((f) => encodeFrame(f)))
        if (hurt && stream.length > 0) stream[hurt.at % stream.length]! ^= hurt.xor
        const chunks: Buffer[] = []
        for (let i = 0, k = 0; i < stream.length; k++) {
          const size = cuts[k % cuts.length]!
          chunks.push(stream.subarray(i, i + size))
          i += size
        }
        const a = eachRun(chunks, end)
        const b = arrayRun(chunks, end)
        if (!hurt && a.err === '') {
          const want = frames.map((f) => ({ type: f.type, flags: f.flags, sequence: f.sequence, payload: Buffer.from(f.payload).toString('hex') }))
          if (JSON.stringify(a.got) !== JSON.stringify(want)) return false
        }
        return a.err === b.err && JSON.stringify(a.got) === JSON.stringify(b.got)
      },
    ),
    { numRuns: 1000 },
  )
  t.pass()
})

/** `count` Command frames with `size`-byte payloads, concatenated. */
function streamOf(count: number, size: number, first = 0): Buffer {
  return Buffer.concat(Array.from({ length: count }, (_, i) => encodeFrame({ type: MessageType.Command, sequence: first + i, payload: Buffer.alloc(size, i) })))
}

test('a throwing handler: its error propagates, later frames are not delivered, the decoder is closed', (t) => {
  for (const [count, size] of [
    [10, 3],
    [200, 0],
    [200, 40],
  ] as const) {
    const d = new FrameDecoder()
    const boom = new Error('handler failed')
    const seen: number[] = []
    const err = t.throws(() =>
      d.push(streamOf(count, size), (_type, _flags, sequence) => {
        seen.push(sequence)
        if (sequence === 4) throw boom
      }),
    )
    t.is(err, boom, `${count}x${size}`)
    t.deepEqual(seen, [0, 1, 2, 3, 4])
    const closed = t.throws(() => d.push(streamOf(1, 1), () => t.fail('no frame after a throw')))
    t.is((closed as unknown as { code: string }).code, ErrorCode.CLOSED)
    t.is((closed as unknown as { cause: unknown }).cause, boom)
    t.throws(() => d.push(streamOf(1, 1)), { code: ErrorCode.CLOSED })
    d.free()
  }
})

test('a handler may push into another decoder, and frames keep their order and payloads', (t) => {
  for (const size of [0, 3, 40]) {
    const outer = new FrameDecoder()
    const inner = new FrameDecoder()
    const innerStream = streamOf(300, 20, 10_000)
    const got: Got[] = []
    let innerFrames = 0
    outer.push(streamOf(2000, size), (type, flags, sequence, bytes, start, length) => {
      got.push({ type, flags, sequence, payload: Buffer.from(bytes.subarray(start, start + length)).toString('hex') })
      // Native pushes of the other decoder overwrite the shared metadata slots mid-batch.
      if (sequence % 500 === 7) innerFrames += inner.push(innerStream, () => {})
      if (sequence % 500 === 9) innerFrames += inner.push(innerStream).length
    })
    t.is(innerFrames, 8 * 300)
    t.deepEqual(got, arrayRun([streamOf(2000, size)]).got, `payload ${size}`)
    outer.free()
    inner.free()
  }
})

test('free() or end() from a handler stops delivery after its frame; pushing into its own decoder is refused', (t) => {
  const d = new FrameDecoder()
  const seen: number[] = []
  const n = d.push(streamOf(1000, 8), (_type, _flags, sequence) => {
    seen.push(sequence)
    if (sequence === 600) d.free()
  })
  t.is(n, 601)
  t.deepEqual(seen.at(-1), 600)
  t.throws(() => d.push(streamOf(1, 1), () => {}), { code: ErrorCode.CLOSED })

  const e = new FrameDecoder()
  let inner: unknown
  e.push(streamOf(3, 1), () => {
    try {
      e.push(streamOf(1, 1))
    } catch (err) {
      inner = err
    }
  })
  t.true(isPolyCallError(inner))
  t.is((inner as { code: string }).code, ErrorCode.INVALID_ARGUMENT)
  t.is(e.push(streamOf(2, 1), () => {}), 2, 'the decoder still works after the refused push')
  e.free()
})

test('a frame split across chunks arrives as a Buffer of its own; whole frames are views of the chunk', (t) => {
  const payload = Buffer.from(Array.from({ length: 3000 }, (_, i) => i & 0xff))
  const frame = encodeFrame({ type: MessageType.Response, sequence: 5, payload })
  const tail = encodeFrame({ type: MessageType.Heartbeat, sequence: 6, payload: Buffer.from('hb') })
  const d = new FrameDecoder()
  t.is(
    d.push(frame.subarray(0, 1000), () => t.fail('not yet')),
    0,
  )
  const second = Buffer.concat([frame.subarray(1000), tail])
  const seen: { bytes: Uint8Array; start: number; length: number }[] = []
  t.is(
    d.push(second, (_type, _flags, _sequence, bytes, start, length) => seen.push({ bytes, start, length })),
    2,
  )
  t.not(seen[0]!.bytes, second)
  t.is(seen[0]!.start, 0)
  t.true(Buffer.from(seen[0]!.bytes.subarray(0, seen[0]!.length)).equals(payload))
  t.is(seen[1]!.bytes, second)
  t.is(seen[1]!.start, second.length - 2)
  t.is(Buffer.from(second.subarray(seen[1]!.start, seen[1]!.start + seen[1]!.length)).toString(), 'hb')
  d.free()
})

test('small payloads: the copy-and-checksum loop writes the bytes of the native encoder at every length and alignment', (t) => {
  // Lengths 0..40 cross the fused loop's four-byte steps and its remainder, and the switch to
  // set() above 16 bytes; odd offsets misalign source and target.
  const data = Buffer.alloc(64)
  for (let i = 0; i < data.length; i++) data[i] = (i * 167 + 13) & 0xff
  const target = Buffer.alloc(128)
  for (let len = 0; len <= 40; len++) {
    for (const from of [0, 1, 3]) {
      const payload = data.subarray(from, from + len)
      const init: FrameInit = { type: MessageType.Command, sequence: len * 7 + from, payload }
      const want = Buffer.alloc(16 + len)
      native.encodeInto(want, MessageType.Command, 8, len * 7 + from, payload)
      t.deepEqual(encodeFrame(init), want, `encodeFrame, length ${len} from ${from}`)
      t.is(encodeFrameInto(target, 5, init), 5 + want.length)
      t.deepEqual(target.subarray(5, 5 + want.length), want, `encodeFrameInto, length ${len} from ${from}`)
    }
  }
})

test('bad arguments to the callback form and to encodeFrameInto get INVALID_ARGUMENT or the wire code', (t) => {
  const d = new FrameDecoder()
  t.throws(() => d.push('x' as unknown as Uint8Array, () => {}), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => d.push(Buffer.alloc(1), 5 as unknown as () => void), { code: ErrorCode.INVALID_ARGUMENT })
  d.free()
  const target = Buffer.alloc(64, 0xaa)
  const ok: FrameInit = { type: MessageType.Command, sequence: 1, payload: Buffer.from('hello') }
  t.throws(() => encodeFrameInto('x' as unknown as Uint8Array, 0, ok), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => encodeFrameInto(target, -1, ok), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => encodeFrameInto(target, 1.5, ok), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => encodeFrameInto(target, 44, ok), { code: ErrorCode.INVALID_ARGUMENT, message: /does not fit/ })
  t.throws(() => encodeFrameInto(target, 0, { ...ok, type: 9 as MessageType }), { code: ErrorCode.UNKNOWN_MESSAGE_TYPE })
  t.throws(() => encodeFrameInto(target, 0, { ...ok, sequence: -1 }), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => encodeFrameInto(target, 0, { ...ok, flags: 0x10000 }), { code: ErrorCode.INVALID_ARGUMENT })
  t.true(target.every((b) => b === 0xaa), 'nothing written by a refused call')
  t.is(encodeFrameInto(target, 43, ok), 64)
  t.true(target.subarray(43).equals(encodeFrame(ok)))
  // A large payload takes the native path into the caller's buffer.
  const big = Buffer.alloc(5000, 3)
  const arena = new Uint8Array(6000)
  t.is(encodeFrameInto(arena, 100, { type: MessageType.Response, sequence: 2, payload: big }), 5116)
  t.true(Buffer.from(arena.subarray(100, 5116)).equals(encodeFrame({ type: MessageType.Response, sequence: 2, payload: big })))
})

test('encodeFrame and encodeFrameInto agree with each other on random frames, either side of every threshold (500 runs)', (t) => {
  fc.assert(
    fc.property(
      fc.record({
        type: fc.integer({ min: 1, max: 6 }),
        flags: fc.option(fc.integer({ min: 0, max: 0xffff }), { nil: undefined }),
        sequence: fc.integer({ min: 0, max: 0xffffffff }),
        payload: fc.oneof(fc.uint8Array({ maxLength: 20 }), fc.uint8Array({ minLength: 200, maxLength: 300 }), fc.uint8Array({ minLength: 2000, maxLength: 2100 })),
      }),
      fc.nat({ max: 50 }),
      (f, at) => {
        const a = encodeFrame(f)
        const target = Buffer.alloc(at + a.length)
        return encodeFrameInto(target, at, f) === target.length && target.subarray(at).equals(a) && arrayRun([a]).got.length === 1
      },
    ),
    { numRuns: 500 },
  )
  t.pass()
})
