import test from 'ava'
import fc from 'fast-check'
import {
  ErrorCode,
  FrameDecoder,
  HEADER_SIZE,
  MAX_PAYLOAD,
  MessageType,
  PROTOCOL_VERSION,
  ProtocolFlag,
  buildHandshake,
  checksum,
  encodeFrame,
  isPolyCallError,
  parseHandshake,
  type DecodeError,
  type Frame,
} from '../ts/index.js'
import { checksumJs } from '../ts/protocol/fast-path.js'
import { hex, payloadOf, vectors } from './helpers/vectors.js'

const DECODER_CODES = new Set<string>([
  ErrorCode.TRUNCATED_HEADER,
  ErrorCode.TRUNCATED_PAYLOAD,
  ErrorCode.VERSION_MISMATCH,
  ErrorCode.UNKNOWN_MESSAGE_TYPE,
  ErrorCode.PAYLOAD_TOO_LARGE,
  ErrorCode.CHECKSUM_MISMATCH,
])

function decodeChunks(chunks: Uint8Array[], options?: { maxPayload?: number }): Frame[] {
  const d = new FrameDecoder(options)
  const out: Frame[] = []
  for (const c of chunks) out.push(...d.push(c))
  d.end()
  return out
}

const frameByName = new Map(vectors.frames.map((f) => [f.name, f]))

function sameFrame(t: import('ava').ExecutionContext, got: Frame, want: (typeof vectors.frames)[number]) {
  t.is(got.version, 1)
  t.is(got.type, want.type)
  t.is(got.flags, want.flags)
  t.is(got.sequence, want.sequence)
  t.is(got.checksum, want.checksum)
  t.true(Buffer.isBuffer(got.payload))
  t.true(got.payload.equals(payloadOf(want)), want.name)
}

test('constants match the spec', (t) => {
  t.is(PROTOCOL_VERSION, 1)
  t.is(HEADER_SIZE, 16)
  t.is(MAX_PAYLOAD, 1_048_576)
  t.deepEqual(
    [MessageType.Handshake, MessageType.Auth, MessageType.Command, MessageType.Response, MessageType.Error, MessageType.Heartbeat],
    [1, 2, 3, 4, 5, 6],
  )
  t.deepEqual([ProtocolFlag.None, ProtocolFlag.Encrypted, ProtocolFlag.Compressed, ProtocolFlag.Urgent, ProtocolFlag.Reliable], [0, 1, 2, 4, 8])
})

test('checksum vectors (JS fast path and native path agree)', (t) => {
  t.true(vectors.checksums.length >= 17)
  for (const v of vectors.checksums) {
    const payload = payloadOf(v)
    t.is(payload.length, v.length, v.name)
    t.is(checksum(payload), v.checksum, v.name)
    t.is(checksumJs(payload), v.checksum, `${v.name} (js)`)
    t.is(checksum(new Uint8Array(payload)), v.checksum, `${v.name} (Uint8Array)`)
  }
})

test('checksum is the same on both sides of the fast-path threshold', (t) => {
  const data = Buffer.alloc(4096)
  for (let i = 0; i < data.length; i++) data[i] = (i * 131 + 7) & 0xff
  for (let len = 0; len <= 1100; len += 1) {
    const view = data.subarray(3, 3 + len)
    t.is(checksum(view), checksumJs(view), `length ${len}`)
  }
})

test('frame vectors encode byte-exact and decode field by field', (t) => {
  for (const f of vectors.frames) {
    const payload = payloadOf(f)
    t.is(payload.length, f.payload_length, f.name)
    const bytes = encodeFrame({ type: f.type, flags: f.flags, sequence: f.sequence, payload })
    t.is(bytes.subarray(0, 16).toString('hex'), f.header_hex, `header ${f.name}`)
    if (f.frame_hex) t.is(bytes.toString('hex'), f.frame_hex, `frame ${f.name}`)
    const frames = decodeChunks([bytes])
    t.is(frames.length, 1)
    sameFrame(t, frames[0]!, f)
  }
})

test('encodeFrame defaults flags to the reference values and payload to empty', (t) => {
  const flagsOf = (type: MessageType) => encodeFrame({ type, sequence: 1 }).readUInt16LE(2)
  t.is(flagsOf(MessageType.Handshake), 0x0008)
  t.is(flagsOf(MessageType.Auth), 0x0009)
  t.is(flagsOf(MessageType.Command), 0x0008)
  t.is(flagsOf(MessageType.Response), 0)
  t.is(flagsOf(MessageType.Error), 0)
  t.is(flagsOf(MessageType.Heartbeat), 0)
  t.is(encodeFrame({ type: MessageType.Heartbeat, sequence: 4 }).toString('hex'), '01060000040000000000000000000000')
})

test('stream vectors: coalesced, odd splits, byte at a time', (t) => {
  for (const s of vectors.streams) {
    const chunks = s.chunks_hex
      ? s.chunks_hex.map(hex)
      : (s.stream_hex!.match(new RegExp(`.{1,${2 * (s.chunk_size ?? 1)}}`, 'g')) ?? []).map(hex)
    const frames = decodeChunks(chunks)
    t.is(frames.length, s.expected_frames.length, s.name)
    s.expected_frames.forEach((name, i) => sameFrame(t, frames[i]!, frameByName.get(name)!))
  }
})

test('every invalid-frame vector fails with its code', (t) => {
  t.is(vectors.invalid_frames.length, 16)
  for (const v of vectors.invalid_frames) {
    const d = new FrameDecoder()
    const err = t.throws(
      () => {
        d.push(hex(v.bytes_hex))
        if (v.stream_ends_after) d.end()
      },
      undefined,
      v.name,
    )
    t.true(isPolyCallError(err), v.name)
    t.is((err as unknown as { code: string }).code, `ERR_POLYCALL_${v.error}`, v.name)
    t.is(err!.name, 'PolyCallError')
    if (v.detected_at === 'header') t.is(d.buffered, 0, `${v.name}: nothing buffered`)
  }
})

test('frames before a bad frame are delivered, then the decoder stays failed', (t) => {
  const good = encodeFrame({ type: MessageType.Command, sequence: 1, payload: Buffer.from('ok') })
  const bad = encodeFrame({ type: MessageType.Command, sequence: 2, payload: Buffer.from('bad') })
  bad[12]! ^= 1
  const d = new FrameDecoder()
  const err = t.throws(() => d.push(Buffer.concat([good, bad]))) as DecodeError
  t.is(err.code, ErrorCode.CHECKSUM_MISMATCH)
  t.is(err.frames.length, 1)
  t.is(err.frames[0]!.payload.toString(), 'ok')
  t.regex(err.message, /checksum mismatch/)
  const again = t.throws(() => d.push(good)) as DecodeError
  t.is(again.code, ErrorCode.CHECKSUM_MISMATCH)
  t.is((t.throws(() => d.end()) as DecodeError).code, ErrorCode.CHECKSUM_MISMATCH)

  const truncated = vectors.invalid_frames.find((v) => v.name === 'second_frame_truncated')!
  const d2 = new FrameDecoder()
  const frames = d2.push(hex(truncated.bytes_hex))
  t.is(frames.length, 1)
  t.is(frames[0]!.payload.toString(), 'hello')
  t.is((t.throws(() => d2.end()) as DecodeError).code, ErrorCode.TRUNCATED_PAYLOAD)
})

test('oversized lengths fail at the header with a message naming the numbers', (t) => {
  const head = Buffer.from('0103000009000000ffffffff00000000', 'hex')
  const err = t.throws(() => new FrameDecoder().push(head)) as DecodeError
  t.is(err.code, ErrorCode.PAYLOAD_TOO_LARGE)
  t.is(err.message, 'payload_length 4294967295 exceeds the 1048576-byte limit')
  const small = new FrameDecoder({ maxPayload: 4 })
  const e2 = t.throws(() => small.push(encodeFrame({ type: 3, sequence: 1, payload: Buffer.from('hello') }))) as DecodeError
  t.is(e2.message, 'payload_length 5 exceeds the 4-byte limit')
  t.is(small.maxPayload, 4)
})

test('payloads are zero-copy views of the chunk when a frame arrives whole', (t) => {
  const a = encodeFrame({ type: 3, sequence: 1, payload: Buffer.from('first') })
  const b = encodeFrame({ type: 3, sequence: 2, payload: Buffer.from('second') })
  const chunk = Buffer.concat([a, b])
  const frames = new FrameDecoder().push(chunk)
  t.is(frames[0]!.payload.buffer, chunk.buffer)
  t.is(frames[0]!.payload.byteOffset, chunk.byteOffset + 16)
  t.is(frames[1]!.payload.byteOffset, chunk.byteOffset + a.length + 16)
  // A frame split across chunks is assembled into its own buffer.
  const d = new FrameDecoder()
  t.deepEqual(d.push(chunk.subarray(0, 20)), [])
  t.is(d.buffered, 20)
  const rest = d.push(chunk.subarray(20))
  t.is(rest[0]!.payload.toString(), 'first')
  t.not(rest[0]!.payload.buffer, chunk.buffer)
  t.is(rest[1]!.payload.toString(), 'second')
  t.is(d.buffered, 0)
})

test('a chunk with more frames than the metadata array holds decodes completely', (t) => {
  const one = encodeFrame({ type: MessageType.Heartbeat, sequence: 0 })
  const count = 10_000
  const chunk = Buffer.concat(Array.from({ length: count }, (_, i) => encodeFrame({ type: 6, sequence: i, payload: i % 3 ? Buffer.from([i & 0xff]) : undefined })))
  const frames = new FrameDecoder().push(chunk)
  t.is(frames.length, count)
  t.true(frames.every((f, i) => f.sequence === i && f.payload.length === (i % 3 ? 1 : 0)))
  t.is(one.length, 16)
})

test('a Uint8Array chunk works like a Buffer', (t) => {
  const bytes = encodeFrame({ type: 4, sequence: 9, payload: Buffer.from('{"ok":1}') })
  const u8 = new Uint8Array(bytes.length + 4).subarray(2, 2 + bytes.length)
  u8.set(bytes)
  const [f] = new FrameDecoder().push(u8)
  t.is(f!.payload.toString(), '{"ok":1}')
  t.true(Buffer.isBuffer(f!.payload))
})

test('bad arguments get INVALID_ARGUMENT or the wire code, never a raw napi error', (t) => {
  const code = (fn: () => unknown) => (t.throws(fn) as DecodeError).code
  t.is(code(() => checksum('abc' as unknown as Uint8Array)), ErrorCode.INVALID_ARGUMENT)
  t.is(code(() => encodeFrame({ type: 0 as MessageType, sequence: 1 })), ErrorCode.UNKNOWN_MESSAGE_TYPE)
  t.is(code(() => encodeFrame({ type: 7 as MessageType, sequence: 1 })), ErrorCode.UNKNOWN_MESSAGE_TYPE)
  t.is(code(() => encodeFrame({ type: 1.5 as MessageType, sequence: 1 })), ErrorCode.UNKNOWN_MESSAGE_TYPE)
  t.is(code(() => encodeFrame({ type: 3, sequence: -1 })), ErrorCode.INVALID_ARGUMENT)
  t.is(code(() => encodeFrame({ type: 3, sequence: 2 ** 32 })), ErrorCode.INVALID_ARGUMENT)
  t.is(code(() => encodeFrame({ type: 3, sequence: 1, flags: 0x10000 })), ErrorCode.INVALID_ARGUMENT)
  t.is(code(() => encodeFrame({ type: 3, sequence: 1, payload: 'x' as unknown as Uint8Array })), ErrorCode.INVALID_ARGUMENT)
  t.is(code(() => encodeFrame(null as unknown as { type: 3; sequence: 1 })), ErrorCode.INVALID_ARGUMENT)
  t.is(code(() => encodeFrame({ type: 3, sequence: 1, payload: Buffer.alloc(MAX_PAYLOAD + 1) })), ErrorCode.PAYLOAD_TOO_LARGE)
  t.is(encodeFrame({ type: 3, sequence: 1, payload: Buffer.alloc(MAX_PAYLOAD) }).length, MAX_PAYLOAD + 16)
  t.is(code(() => new FrameDecoder({ maxPayload: MAX_PAYLOAD + 1 })), ErrorCode.INVALID_ARGUMENT)
  t.is(code(() => new FrameDecoder({ maxPayload: -1 })), ErrorCode.INVALID_ARGUMENT)
  t.is(code(() => new FrameDecoder().push([1, 2] as unknown as Uint8Array)), ErrorCode.INVALID_ARGUMENT)
  t.is(code(() => buildHandshake(70000)), ErrorCode.INVALID_ARGUMENT)
  t.is(code(() => parseHandshake('x' as unknown as Uint8Array)), ErrorCode.INVALID_ARGUMENT)
})

test('handshake vectors: long form, short form, garbage pad, strict and lenient failures', (t) => {
  const hs = vectors.handshake
  t.is(buildHandshake(0).toString('hex'), hs.long_form.payload_hex)
  t.is(encodeFrame({ type: 1, sequence: 1, payload: buildHandshake(0) }).toString('hex'), hs.long_form.frame_hex)
  t.deepEqual(parseHandshake(hex(hs.long_form.payload_hex)), { form: 'long', version: 1, flags: 0, legacy: true })
  const [padded] = new FrameDecoder().push(hex(hs.long_form.variant_with_garbage_pad_frame_hex))
  t.deepEqual(parseHandshake(padded!.payload, { strict: true }), { form: 'long', version: 1, flags: 0, legacy: true })
  t.deepEqual(parseHandshake(hex(hs.short_form_payload_hex)), { form: 'short', flags: 0, legacy: true })
  t.deepEqual(parseHandshake(buildHandshake(3)), { form: 'long', version: 1, flags: 3, legacy: false })
  for (const v of hs.invalid) {
    const [frame] = new FrameDecoder().push(hex(v.frame_hex))
    t.is(frame!.payload.toString('hex'), v.payload_hex)
    const strict = t.throws(() => parseHandshake(frame!.payload, { strict: true })) as DecodeError
    t.is(strict.code, `ERR_POLYCALL_${v.error}`, v.name)
    if (v.lenient_mode === 'accept') t.deepEqual(parseHandshake(frame!.payload), { form: 'empty', flags: 0, legacy: true })
    else t.is((t.throws(() => parseHandshake(frame!.payload)) as DecodeError).code, `ERR_POLYCALL_${v.error}`)
  }
})

const frameArb = fc.record({
  type: fc.integer({ min: 1, max: 6 }),
  flags: fc.integer({ min: 0, max: 0xffff }),
  sequence: fc.integer({ min: 0, max: 0xffffffff }),
  payload: fc.uint8Array({ maxLength: 600 }),
})

test('property: encode then decode is the identity (1000 runs)', (t) => {
  fc.assert(
    fc.property(frameArb, (f) => {
      const [got, ...rest] = decodeChunks([encodeFrame({ ...f, payload: f.payload })])
      return (
        rest.length === 0 &&
        got!.type === f.type &&
        got!.flags === f.flags &&
        got!.sequence === f.sequence &&
        got!.checksum === checksumJs(f.payload) &&
        Buffer.from(f.payload).equals(got!.payload)
      )
    }),
    { numRuns: 1000 },
  )
  t.pass()
})

test('property: any chunking of a valid stream decodes to the same frames (1000 runs)', (t) => {
  fc.assert(
    fc.property(
      fc.array(frameArb, { minLength: 1, maxLength: 10 }),
      fc.array(fc.nat(), { maxLength: 30 }),
      fc.boolean(),
      (frames, cuts, bytewise) => {
        const stream = Buffer.concat(frames.map((f) => encodeFrame(f)))
        let chunks: Buffer[]
        if (bytewise) chunks = Array.from(stream, (_, i) => stream.subarray(i, i + 1))
        else {
          const idx = [0, ...cuts.map((c) => c % (stream.length + 1)), stream.length].sort((a, b) => a - b)
          chunks = idx.slice(1).map((end, i) => stream.subarray(idx[i]!, end))
        }
        const got = decodeChunks(chunks)
        return (
          got.length === frames.length &&
          got.every(
            (g, i) =>
              g.type === frames[i]!.type &&
              g.flags === frames[i]!.flags &&
              g.sequence === frames[i]!.sequence &&
              Buffer.from(frames[i]!.payload).equals(g.payload),
          )
        )
      },
    ),
    { numRuns: 1000 },
  )
  t.pass()
})

test('property: arbitrary bytes end in a documented PolyCallError or frames, never a crash (1000 runs)', (t) => {
  let errors = 0
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 3000 }), fc.nat(), fc.boolean(), (garbage, cut, withPrefix) => {
      const prefix = withPrefix ? encodeFrame({ type: 3, sequence: 1, payload: Buffer.from('prefix') }) : Buffer.alloc(0)
      const bytes = Buffer.concat([prefix, garbage])
      const at = cut % (bytes.length + 1)
      const d = new FrameDecoder()
      const seen: Frame[] = []
      try {
        seen.push(...d.push(bytes.subarray(0, at)))
        seen.push(...d.push(bytes.subarray(at)))
        d.end()
      } catch (e) {
        errors++
        if (!isPolyCallError(e) || !DECODER_CODES.has(e.code)) return false
        seen.push(...((e as DecodeError).frames ?? []))
        // Failed decoders stay failed with the same code.
        try {
          d.push(Buffer.from([1]))
          return false
        } catch (again) {
          if ((again as DecodeError).code !== e.code) return false
        }
      }
      return !withPrefix || bytes.length < 22 || seen[0]?.payload.toString() === 'prefix'
    }),
    { numRuns: 1000 },
  )
  t.true(errors > 0)
})

test('free() releases the decoder; later calls are CLOSED, and free is idempotent', (t) => {
  const d = new FrameDecoder()
  d.push(Buffer.from([1, 3]))
  t.is(d.buffered, 2)
  d.free()
  d.free()
  t.is(d.buffered, 0)
  t.is((t.throws(() => d.push(Buffer.alloc(1))) as DecodeError).code, ErrorCode.CLOSED)
  t.is((t.throws(() => d.end()) as DecodeError).code, ErrorCode.CLOSED)
  {
    using scoped = new FrameDecoder()
    t.is(scoped.push(encodeFrame({ type: 6, sequence: 1 })).length, 1)
  }
  // Many decoders created and freed reuse native slots without leaking handles.
  for (let i = 0; i < 5000; i++) {
    const x = new FrameDecoder()
    t.is(x.push(encodeFrame({ type: 6, sequence: i })).length === 1, true)
    x.end()
  }
})

test('property: the JS small-chunk path and the native path agree on frames, codes and messages (1000 runs)', (t) => {
  const corrupt = fc.record({ at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) })
  fc.assert(
    fc.property(
      fc.array(frameArb, { minLength: 1, maxLength: 6 }),
      fc.option(corrupt, { nil: undefined }),
      fc.integer({ min: 1, max: 600 }),
      (frames, damage, step) => {
        const stream = Buffer.concat(frames.map((f) => encodeFrame(f)))
        if (damage) stream[damage.at % stream.length]! ^= damage.xor
        const run = (chunkSize: number) => {
          const d = new FrameDecoder()
          const got: string[] = []
          const key = (f: Frame) => `${f.type}/${f.flags}/${f.sequence}/${f.checksum}/${f.payload.toString('hex')}`
          try {
            for (let i = 0; i < stream.length; i += chunkSize) got.push(...d.push(stream.subarray(i, i + chunkSize)).map(key))
            d.end()
            return { got, err: '' }
          } catch (e) {
            const de = e as DecodeError
            got.push(...(de.frames ?? []).map(key))
            return { got, err: `${de.code}: ${de.message}` }
          }
        }
        const whole = run(stream.length + 1)
        const small = run(step)
        return whole.err === small.err && whole.got.join() === small.got.join()
      },
    ),
    { numRuns: 1000 },
  )
  t.pass()
})
