/**
 * A careful pure-TypeScript implementation of the v1 codec, kept only as the benchmark
 * baseline: the same rules as the Rust core (header validated before the payload is buffered,
 * checksum verified, all frames of a chunk returned at once, zero-copy payload views for frames
 * that arrive whole), with a preallocated assembly buffer and no per-frame allocation beyond
 * the frame object and its payload view.
 */
import type { Frame, FrameInit } from '../ts/index.js'

const HEADER = 16
const MAX = 1_048_576

/** 4x-unrolled rotate-left-5-and-add; the fastest plain-JS form measured here. */
export function checksumTs(data: Uint8Array, start = 0, end = data.length, acc = 0): number {
  let a = acc | 0
  let i = start
  const stop4 = start + ((end - start) & ~3)
  for (; i < stop4; i += 4) {
    a = (((a << 5) | (a >>> 27)) + data[i]!) | 0
    a = (((a << 5) | (a >>> 27)) + data[i + 1]!) | 0
    a = (((a << 5) | (a >>> 27)) + data[i + 2]!) | 0
    a = (((a << 5) | (a >>> 27)) + data[i + 3]!) | 0
  }
  for (; i < end; i++) a = (((a << 5) | (a >>> 27)) + data[i]!) | 0
  return a >>> 0
}

const DEFAULT_FLAGS = [0, 8, 9, 8, 0, 0, 0]
const EMPTY = Buffer.alloc(0)

/** Same argument shape and validation as polycall's `encodeFrame`. */
export function encodeTs(frame: FrameInit): Buffer {
  if (frame === null || typeof frame !== 'object') throw new TypeError('frame')
  const { type, sequence } = frame
  if (!Number.isInteger(type) || type < 1 || type > 6) throw new RangeError('type')
  const flags = frame.flags ?? DEFAULT_FLAGS[type]!
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xffff) throw new RangeError('flags')
  if (!Number.isInteger(sequence) || sequence < 0 || sequence > 0xffffffff) throw new RangeError('sequence')
  const payload = frame.payload ?? EMPTY
  if (!(payload instanceof Uint8Array)) throw new TypeError('payload')
  const len = payload.length
  if (len > MAX) throw new RangeError('too large')
  const out = Buffer.allocUnsafe(HEADER + len)
  const sum = checksumTs(payload)
  out[0] = 1
  out[1] = type
  out[2] = flags & 0xff
  out[3] = flags >>> 8
  out[4] = sequence & 0xff
  out[5] = (sequence >>> 8) & 0xff
  out[6] = (sequence >>> 16) & 0xff
  out[7] = sequence >>> 24
  out[8] = len & 0xff
  out[9] = (len >>> 8) & 0xff
  out[10] = (len >>> 16) & 0xff
  out[11] = len >>> 24
  out[12] = sum & 0xff
  out[13] = (sum >>> 8) & 0xff
  out[14] = (sum >>> 16) & 0xff
  out[15] = sum >>> 24
  out.set(payload, HEADER)
  return out
}

const u32 = (b: Uint8Array, o: number) => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0

export class DecoderTs {
  readonly #head = Buffer.alloc(HEADER)
  #headLen = 0
  // Preallocated once; a frame straddling chunks is assembled here and copied out on completion.
  readonly #body = Buffer.allocUnsafe(MAX)
  #bodyLen = 0
  #want = -1
  #type = 0
  #flags = 0
  #seq = 0
  #sum = 0
  #acc = 0

  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = []
    let pos = 0
    const n = chunk.length
    while (pos < n || (this.#want === 0 && this.#headLen === 0)) {
      if (this.#want >= 0) {
        const take = Math.min(this.#want - this.#bodyLen, n - pos)
        this.#body.set(chunk.subarray(pos, pos + take), this.#bodyLen)
        this.#acc = checksumTs(chunk, pos, pos + take, this.#acc)
        this.#bodyLen += take
        pos += take
        if (this.#bodyLen < this.#want) break
        if (this.#acc !== this.#sum) throw new Error('checksum')
        frames.push({ version: 1, type: this.#type, flags: this.#flags, sequence: this.#seq, checksum: this.#sum, payload: Buffer.from(this.#body.subarray(0, this.#want)) })
        this.#want = -1
        continue
      }
      let h: Uint8Array
      let ho: number
      if (this.#headLen === 0 && n - pos >= HEADER) {
        h = chunk
        ho = pos
        pos += HEADER
      } else {
        const take = Math.min(HEADER - this.#headLen, n - pos)
        this.#head.set(chunk.subarray(pos, pos + take), this.#headLen)
        this.#headLen += take
        pos += take
        if (this.#headLen < HEADER) break
        this.#headLen = 0
        h = this.#head
        ho = 0
      }
      if (h[ho] !== 1) throw new Error('version')
      const type = h[ho + 1]!
      if (type < 1 || type > 6) throw new Error('type')
      const len = u32(h, ho + 8)
      if (len > MAX) throw new Error('too large')
      const flags = h[ho + 2]! | (h[ho + 3]! << 8)
      const seq = u32(h, ho + 4)
      const sum = u32(h, ho + 12)
      if (n - pos >= len) {
        if (checksumTs(chunk, pos, pos + len) !== sum) throw new Error('checksum')
        frames.push({ version: 1, type, flags, sequence: seq, checksum: sum, payload: Buffer.from(chunk.buffer, chunk.byteOffset + pos, len) })
        pos += len
      } else {
        this.#want = len
        this.#bodyLen = 0
        this.#acc = 0
        this.#type = type
        this.#flags = flags
        this.#seq = seq
        this.#sum = sum
      }
    }
    return frames
  }
}

/**
 * The callback-style baseline: the same rules as {@link DecoderTs}, but no Frame object and no
 * array per frame. Each frame goes to `onFrame(type, flags, sequence, bytes, start, length)`, the
 * payload being `bytes[start..start+length)` (the chunk itself when the frame arrived whole, a
 * fresh copy when it was assembled across chunks), the signature of polycall's callback form.
 * Header fields are read through one DataView per chunk (measured faster here than byte reads
 * once a chunk holds more than a few frames), the checksum loop is 4x unrolled and inline, and
 * the whole-frame loop keeps every piece of state in locals.
 */
export type FrameCallback = (type: number, flags: number, sequence: number, bytes: Uint8Array, start: number, length: number) => void

export class DecoderTsEach {
  readonly #head = Buffer.alloc(HEADER)
  #headLen = 0
  readonly #body = Buffer.allocUnsafe(MAX)
  #bodyLen = 0
  #want = -1
  #type = 0
  #flags = 0
  #seq = 0
  #sum = 0
  #acc = 0

  /** Decodes `chunk`, calling `onFrame` per completed frame; returns the frames delivered. */
  push(chunk: Uint8Array, onFrame: FrameCallback): number {
    let pos = 0
    let count = 0
    if (this.#want >= 0 || this.#headLen > 0) {
      pos = this.#resume(chunk, onFrame)
      if (pos < 0) return 0
      count = 1
    }
    const n = chunk.length
    const dv = new DataView(chunk.buffer, chunk.byteOffset, n)
    while (n - pos >= HEADER) {
      const w0 = dv.getUint32(pos, true)
      if ((w0 & 0xff) !== 1) throw new Error('version')
      const type = (w0 >>> 8) & 0xff
      if (type < 1 || type > 6) throw new Error('type')
      const len = dv.getUint32(pos + 8, true)
      if (len > MAX) throw new Error('too large')
      const start = pos + HEADER
      const end = start + len
      if (end > n) {
        this.#begin(chunk, pos, start)
        return count
      }
      let a = 0
      let i = start
      for (const stop = start + (len & ~3); i < stop; i += 4) {
        a = (((a << 5) | (a >>> 27)) + chunk[i]!) | 0
        a = (((a << 5) | (a >>> 27)) + chunk[i + 1]!) | 0
        a = (((a << 5) | (a >>> 27)) + chunk[i + 2]!) | 0
        a = (((a << 5) | (a >>> 27)) + chunk[i + 3]!) | 0
      }
      for (; i < end; i++) a = (((a << 5) | (a >>> 27)) + chunk[i]!) | 0
      if (a !== dv.getInt32(pos + 12, true)) throw new Error('checksum')
      onFrame(
        type,
        w0 >>> 16,
        dv.getUint32(pos + 4, true),
        chunk,
        start,
        len,
      )
      count++
      pos = end
    }
    if (pos < n) {
      this.#head.set(chunk.subarray(pos), 0)
      this.#headLen = n - pos
    }
    return count
  }

  /** Starts a frame whose header is whole at `chunk[at..]` but whose payload is not. */
  #begin(chunk: Uint8Array, at: number, start: number): void {
    this.#type = chunk[at + 1]!
    this.#flags = chunk[at + 2]! | (chunk[at + 3]! << 8)
    this.#seq = u32(chunk, at + 4)
    this.#want = u32(chunk, at + 8)
    this.#sum = u32(chunk, at + 12)
    this.#body.set(chunk.subarray(start), 0)
    this.#bodyLen = chunk.length - start
    this.#acc = checksumTs(chunk, start, chunk.length, 0)
  }

  /** Continues the frame in progress; returns where whole frames start, or -1 if it is still unfinished. */
  #resume(chunk: Uint8Array, onFrame: FrameCallback): number {
    let pos = 0
    if (this.#want < 0) {
      const take = Math.min(HEADER - this.#headLen, chunk.length)
      this.#head.set(chunk.subarray(0, take), this.#headLen)
      this.#headLen += take
      pos = take
      if (this.#headLen < HEADER) return -1
      this.#headLen = 0
      const h = this.#head
      if (h[0] !== 1) throw new Error('version')
      const type = h[1]!
      if (type < 1 || type > 6) throw new Error('type')
      const len = u32(h, 8)
      if (len > MAX) throw new Error('too large')
      this.#type = type
      this.#flags = h[2]! | (h[3]! << 8)
      this.#seq = u32(h, 4)
      this.#want = len
      this.#sum = u32(h, 12)
      this.#bodyLen = 0
      this.#acc = 0
    }
    const take = Math.min(this.#want - this.#bodyLen, chunk.length - pos)
    this.#body.set(chunk.subarray(pos, pos + take), this.#bodyLen)
    this.#acc = checksumTs(chunk, pos, pos + take, this.#acc)
    this.#bodyLen += take
    pos += take
    if (this.#bodyLen < this.#want) return -1
    if (this.#acc !== this.#sum) throw new Error('checksum')
    const payload = Buffer.from(this.#body.subarray(0, this.#want))
    this.#want = -1
    onFrame(this.#type, this.#flags, this.#seq, payload, 0, payload.length)
    return pos
  }
}
