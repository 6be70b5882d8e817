/**
 * msgpack for scalars, written and read without the generic encoder.
 *
 * Most requests and replies on a busy connection carry a scalar: bytes, a string, a number, a
 * boolean, null or undefined. For those, the fixed shapes of COMMAND (`[command, data, timeout]`)
 * and RESPONSE (`value`) are written straight into a slab and read straight from the frame,
 * which costs a fraction of a generic `pack`/`unpack`. Anything else (objects, arrays, long
 * strings, big integers) goes through msgpackr as before. Both paths produce msgpack that the
 * other one reads back to the same value, including msgpackr's encoding of `undefined`
 * (fixext 1, type 0).
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */

/** Bytes reserved per write; larger values go through the generic encoder. */
const SLAB_SIZE = 16384
/** Longest string (in UTF-16 units) written here: its UTF-8 form always fits a str8/str16. */
const MAX_STRING = 1024

// Encoded values are views into a slab that only ever grows forward: a view handed out is never
// written again, so callers may keep it as long as they like.
let slab = Buffer.allocUnsafe(SLAB_SIZE)
let slabPos = 0

function reserve(max: number): void {
  if (SLAB_SIZE - slabPos < max) {
    slab = Buffer.allocUnsafe(SLAB_SIZE)
    slabPos = 0
  }
}

/** Upper bound of the encoded size of `value`, or -1 when it is not a scalar this module writes. */
function scalarBound(value: unknown): number {
  switch (typeof value) {
    case 'undefined':
    case 'boolean':
      return 3
    case 'number':
      return 9
    case 'string':
      return value.length <= MAX_STRING ? 3 + 3 * value.length : -1
    case 'object':
      if (value === null) return 1
      return value instanceof Uint8Array && value.length <= SLAB_SIZE - 64 ? 5 + value.length : -1
    default:
      return -1
  }
}

/** Strings up to this many UTF-16 units are tried as ASCII in a loop before `Buffer#write`. */
const ASCII_LOOP_MAX = 24

function writeString(b: Buffer, o: number, s: string): number {
  const len = s.length
  if (len <= ASCII_LOOP_MAX) {
    // Short names and values are mostly ASCII: storing char codes costs less than the call into
    // the UTF-8 encoder. The first non-ASCII unit hands the whole string to it.
    let i = 0
    for (; i < len; i++) {
      const c = s.charCodeAt(i)
      if (c > 0x7f) break
      b[o + 1 + i] = c
    }
    if (i === len) {
      b[o] = 0xa0 | len
      return o + 1 + len
    }
  }
  // Write the UTF-8 bytes after a one-byte header; move them when the length needs a longer one.
  const n = b.write(s, o + 1, 'utf8')
  if (n < 32) {
    b[o] = 0xa0 | n
    return o + 1 + n
  }
  if (n < 0x100) {
    b.copyWithin(o + 2, o + 1, o + 1 + n)
    b[o] = 0xd9
    b[o + 1] = n
    return o + 2 + n
  }
  b.copyWithin(o + 3, o + 1, o + 1 + n)
  b[o] = 0xda
  b.writeUInt16BE(n, o + 1)
  return o + 3 + n
}

function writeNumber(b: Buffer, o: number, v: number): number {
  if (Number.isInteger(v)) {
    if (v >= 0) {
      if (v < 0x80) {
        b[o] = v
        return o + 1
      }
      if (v < 0x100) {
        b[o] = 0xcc
        b[o + 1] = v
        return o + 2
      }
      if (v < 0x10000) {
        b[o] = 0xcd
        b.writeUInt16BE(v, o + 1)
        return o + 3
      }
      if (v < 0x100000000) {
        b[o] = 0xce
        b.writeUInt32BE(v, o + 1)
        return o + 5
      }
    } else {
      if (v >= -32) {
        b[o] = v & 0xff
        return o + 1
      }
      if (v >= -0x80) {
        b[o] = 0xd0
        b.writeInt8(v, o + 1)
        return o + 2
      }
      if (v >= -0x8000) {
        b[o] = 0xd1
        b.writeInt16BE(v, o + 1)
        return o + 3
      }
      if (v >= -0x80000000) {
        b[o] = 0xd2
        b.writeInt32BE(v, o + 1)
        return o + 5
      }
    }
  }
  b[o] = 0xcb
  b.writeDoubleBE(v, o + 1)
  return o + 9
}

/** Writes a value accepted by {@link scalarBound}; returns the offset after it. */
function writeScalar(b: Buffer, o: number, v: unknown): number {
  switch (typeof v) {
    case 'undefined':
      b[o] = 0xd4
      b[o + 1] = 0
      b[o + 2] = 0
      return o + 3
    case 'boolean':
      b[o] = v ? 0xc3 : 0xc2
      return o + 1
    case 'number':
      return writeNumber(b, o, v)
    case 'string':
      return writeString(b, o, v)
    default: {
      if (v === null) {
        b[o] = 0xc0
        return o + 1
      }
      const bytes = v as Uint8Array
      const n = bytes.length
      if (n < 0x100) {
        b[o] = 0xc4
        b[o + 1] = n
        o += 2
      } else if (n < 0x10000) {
        b[o] = 0xc5
        b.writeUInt16BE(n, o + 1)
        o += 3
      } else {
        b[o] = 0xc6
        b.writeUInt32BE(n, o + 1)
        o += 5
      }
      b.set(bytes, o)
      return o + n
    }
  }
}

/** A scalar as msgpack, or undefined when `value` needs the generic encoder. */
export function packScalar(value: unknown): Buffer | undefined {
  const bound = scalarBound(value)
  if (bound < 0) return undefined
  reserve(bound)
  const start = slabPos
  slabPos = writeScalar(slab, start, value)
  return slab.subarray(start, slabPos)
}

/**
 * A COMMAND payload `[command, data]` or `[command, data, timeout]` for a scalar `data`, or
 * undefined when it needs the generic encoder. `timeout` is a whole number of ms ≥ 0.
 */
export function packCommand(command: string, data: unknown, timeout: number | undefined): Buffer | undefined {
  const bound = scalarBound(data)
  if (bound < 0 || command.length > MAX_STRING) return undefined
  reserve(1 + 3 + 3 * command.length + bound + 9)
  const start = slabPos
  const b = slab
  b[start] = timeout === undefined ? 0x92 : 0x93
  let o = writeString(b, start + 1, command)
  o = writeScalar(b, o, data)
  if (timeout !== undefined) o = writeNumber(b, o, timeout)
  slabPos = o
  return b.subarray(start, o)
}

/**
 * Upper bound of {@link writeValueAt}'s output for `value`, or -1 when `value` needs the
 * generic encoder.
 */
export function valueBound(value: unknown): number {
  return scalarBound(value)
}

/**
 * Writes a value accepted by {@link valueBound} at `b[o..]` (the caller made room for the
 * bound) and returns the offset after it: the same bytes as {@link packScalar}, without a slab
 * view in between.
 */
export function writeValueAt(b: Buffer, o: number, value: unknown): number {
  return writeScalar(b, o, value)
}

/**
 * Upper bound of {@link writeCommandAt}'s output, or -1 when the COMMAND needs the generic
 * encoder (the same shapes as {@link packCommand}).
 */
export function commandBound(command: string, data: unknown): number {
  const bound = scalarBound(data)
  return bound < 0 || command.length > MAX_STRING ? -1 : 1 + 3 + 3 * command.length + bound + 9
}

// The last command name written, and its encoded form (header included): a client sends the
// same few names over and over, and a copy of a few bytes is cheaper than encoding them again.
let lastName = ''
let lastNameBytes = Buffer.alloc(0)

/**
 * Writes the COMMAND payload `[command, data]` or `[command, data, timeout]` at `b[o..]` (the
 * caller made room for {@link commandBound}) and returns the offset after it: the same bytes as
 * {@link packCommand}, without a slab view in between.
 */
export function writeCommandAt(b: Buffer, o: number, command: string, data: unknown, timeout: number | undefined): number {
  b[o] = timeout === undefined ? 0x92 : 0x93
  let at: number
  if (command === lastName) {
    const n = lastNameBytes.length
    for (let i = 0; i < n; i++) b[o + 1 + i] = lastNameBytes[i]!
    at = o + 1 + n
  } else {
    at = writeString(b, o + 1, command)
    if (at - o - 1 <= 64) {
      lastName = command
      lastNameBytes = Buffer.from(b.subarray(o + 1, at))
    }
  }
  at = writeScalar(b, at, data)
  if (timeout !== undefined) at = writeNumber(b, at, timeout)
  return at
}

/** The extension fields of a COMMAND (docs/protocol-extensions.md): all optional. */
export interface CommandExt {
  /** The idempotency key (capability 0x0020): 16 to 64 bytes. */
  key?: Uint8Array | undefined
  /** W3C traceparent (capability 0x0040). */
  traceparent?: string | undefined
  /** W3C tracestate (capability 0x0040). */
  tracestate?: string | undefined
}

/** Upper bound of the encoded extension map, or -1 when it does not fit the slab path. */
function extBound(ext: CommandExt): number {
  let n = 1
  if (ext.key !== undefined) {
    if (ext.key.length > 255) return -1
    n += 2 + 2 + ext.key.length
  }
  for (const v of [ext.traceparent, ext.tracestate]) {
    if (v === undefined) continue
    if (v.length > MAX_STRING) return -1
    n += 3 + 3 + 3 * v.length
  }
  return n
}

/**
 * A COMMAND payload with extensions, `[command, data, timeout | nil, { k?, tp?, ts? }]`, for a
 * scalar `data`; undefined when it needs the generic encoder.
 */
export function packCommandExt(command: string, data: unknown, timeout: number | undefined, ext: CommandExt): Buffer | undefined {
  const bound = scalarBound(data)
  const eb = extBound(ext)
  if (bound < 0 || eb < 0 || command.length > MAX_STRING) return undefined
  reserve(1 + 3 + 3 * command.length + bound + 9 + eb)
  const start = slabPos
  const b = slab
  b[start] = 0x94
  let o = writeString(b, start + 1, command)
  o = writeScalar(b, o, data)
  if (timeout === undefined) b[o++] = 0xc0
  else o = writeNumber(b, o, timeout)
  const head = o++
  let entries = 0
  if (ext.key !== undefined) {
    o = writeString(b, o, 'k')
    o = writeScalar(b, o, ext.key)
    entries++
  }
  if (ext.traceparent !== undefined) {
    o = writeString(b, o, 'tp')
    o = writeString(b, o, ext.traceparent)
    entries++
  }
  if (ext.tracestate !== undefined) {
    o = writeString(b, o, 'ts')
    o = writeString(b, o, ext.tracestate)
    entries++
  }
  b[head] = 0x80 | entries
  slabPos = o
  return b.subarray(start, o)
}

/** Where {@link readScalar} stopped: the offset after the value it read. */
export let scalarEnd = 0

/** Returned by {@link readScalar} when the value at the offset is not a scalar it reads. */
export const NOT_SCALAR: unique symbol = Symbol('not a scalar')

/**
 * Reads one scalar at `o` (setting {@link scalarEnd}), or returns {@link NOT_SCALAR} for any
 * other value and for a truncated one; the generic decoder then has the final word. Bytes come
 * back as a view of `b`, as msgpackr returns them.
 */
export function readScalar(b: Buffer, o: number): unknown {
  const len = b.length
  if (o >= len) return NOT_SCALAR
  const t = b[o]!
  if (t < 0x80) {
    scalarEnd = o + 1
    return t
  }
  if (t >= 0xe0) {
    scalarEnd = o + 1
    return t - 0x100
  }
  if ((t & 0xe0) === 0xa0) return readString(b, o + 1, t & 0x1f)
  switch (t) {
    case 0xc0:
      scalarEnd = o + 1
      return null
    case 0xc2:
      scalarEnd = o + 1
      return false
    case 0xc3:
      scalarEnd = o + 1
      return true
    case 0xc4:
      return o + 2 <= len ? readBytes(b, o + 2, b[o + 1]!) : NOT_SCALAR
    case 0xc5:
      return o + 3 <= len ? readBytes(b, o + 3, b.readUInt16BE(o + 1)) : NOT_SCALAR
    case 0xc6:
      return o + 5 <= len ? readBytes(b, o + 5, b.readUInt32BE(o + 1)) : NOT_SCALAR
    case 0xcb:
      if (o + 9 > len) return NOT_SCALAR
      scalarEnd = o + 9
      return b.readDoubleBE(o + 1)
    case 0xcc:
      if (o + 2 > len) return NOT_SCALAR
      scalarEnd = o + 2
      return b[o + 1]!
    case 0xcd:
      if (o + 3 > len) return NOT_SCALAR
      scalarEnd = o + 3
      return b.readUInt16BE(o + 1)
    case 0xce:
      if (o + 5 > len) return NOT_SCALAR
      scalarEnd = o + 5
      return b.readUInt32BE(o + 1)
    case 0xd0:
      if (o + 2 > len) return NOT_SCALAR
      scalarEnd = o + 2
      return b.readInt8(o + 1)
    case 0xd1:
      if (o + 3 > len) return NOT_SCALAR
      scalarEnd = o + 3
      return b.readInt16BE(o + 1)
    case 0xd2:
      if (o + 5 > len) return NOT_SCALAR
      scalarEnd = o + 5
      return b.readInt32BE(o + 1)
    case 0xd4:
      // msgpackr's undefined; other fixext 1 types are extensions for the generic decoder.
      if (o + 3 > len || b[o + 1] !== 0 || b[o + 2] !== 0) return NOT_SCALAR
      scalarEnd = o + 3
      return undefined
    case 0xd9:
      return o + 2 <= len ? readString(b, o + 2, b[o + 1]!) : NOT_SCALAR
    case 0xda:
      return o + 3 <= len ? readString(b, o + 3, b.readUInt16BE(o + 1)) : NOT_SCALAR
    default:
      return NOT_SCALAR
  }
}

function readBytes(b: Buffer, o: number, n: number): unknown {
  if (o + n > b.length) return NOT_SCALAR
  scalarEnd = o + n
  return b.subarray(o, o + n)
}

function readString(b: Buffer, o: number, n: number): unknown {
  if (o + n > b.length) return NOT_SCALAR
  scalarEnd = o + n
  return b.toString('utf8', o, o + n)
}

// The last command name read and its UTF-8 bytes: a server reads the same few names over and
// over, and comparing a few bytes is cheaper than decoding them into a new string.
let readName = ''
let readNameBytes = new Uint8Array(0)

/**
 * Reads the fixstr at `o` like {@link readScalar} (setting {@link scalarEnd}), or returns
 * {@link NOT_SCALAR} when there is none; a repeat of the previous name comes back without being
 * decoded again.
 */
export function readCommandName(b: Buffer, o: number): unknown {
  const t = b[o]
  if (t === undefined || (t & 0xe0) !== 0xa0) return readScalar(b, o)
  const n = t & 0x1f
  const start = o + 1
  if (start + n > b.length) return NOT_SCALAR
  const cached = readNameBytes
  if (cached.length === n) {
    let i = 0
    while (i < n && b[start + i] === cached[i]) i++
    if (i === n) {
      scalarEnd = start + n
      return readName
    }
  }
  const name = b.toString('utf8', start, start + n)
  scalarEnd = start + n
  readName = name
  readNameBytes = Uint8Array.prototype.slice.call(b, start, start + n)
  return name
}
