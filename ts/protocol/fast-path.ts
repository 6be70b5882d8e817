/**
 * Small-input fast paths kept in TypeScript on purpose.
 *
 * A call into the addon costs 100-300 ns on Node 20 (argument conversion, typed-array lookups),
 * which is more than the work for small inputs. So `checksum`, `encodeFrame` and
 * `FrameDecoder.push` run these loops below the thresholds measured by `npm run bench`
 * (benchmarks/results/codec.md) and call the Rust core above them. The decode fast path only
 * ever accepts complete, valid frames: at the first partial, invalid or oversized frame it
 * stops and the Rust decoder takes over from that byte, so error codes, messages and the
 * failed state always come from one place. The test suite checks both paths against each
 * other and against the golden vectors.
 *
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */

/** Payloads up to this many bytes are checksummed in JS (see benchmarks/results/codec.md). */
export const JS_CHECKSUM_MAX = 2047
/** Frames with payloads up to this many bytes are encoded in JS. */
export const JS_ENCODE_MAX = 2047
/** Pushed chunks up to this many bytes are decoded in JS while no frame is pending natively. */
export const JS_DECODE_MAX = 512
/**
 * The callback form of `FrameDecoder.push` reads frames with payloads up to this many bytes in
 * JS at the start of a larger chunk: for them the header costs more than the checksum, and a
 * JS loop reads a header faster than the native decoder reports one.
 */
export const JS_DECODE_TINY_PAYLOAD = 4
/** ...but only in chunks of at least this many bytes, where a DataView pays for itself. */
export const JS_DECODE_TINY_MIN_CHUNK = 4096

/** Rotate-left-5-and-add over `data[start..end)`, continuing from `acc` (docs/protocol.md §2). */
export function checksumJs(data: Uint8Array, start = 0, end = data.length, acc = 0): number {
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

/** Writes the 16-byte header at `out[at..at+16)`, little-endian field by field. */
export function writeHeaderJs(
  out: Uint8Array,
  type: number,
  flags: number,
  sequence: number,
  length: number,
  sum: number,
  at = 0,
): void {
  out[at] = 1
  out[at + 1] = type
  out[at + 2] = flags & 0xff
  out[at + 3] = flags >>> 8
  out[at + 4] = sequence & 0xff
  out[at + 5] = (sequence >>> 8) & 0xff
  out[at + 6] = (sequence >>> 16) & 0xff
  out[at + 7] = sequence >>> 24
  out[at + 8] = length & 0xff
  out[at + 9] = (length >>> 8) & 0xff
  out[at + 10] = (length >>> 16) & 0xff
  out[at + 11] = length >>> 24
  out[at + 12] = sum & 0xff
  out[at + 13] = (sum >>> 8) & 0xff
  out[at + 14] = (sum >>> 16) & 0xff
  out[at + 15] = sum >>> 24
}

/** The subset of a decoded frame this module builds (structurally a `Frame`). */
interface FastFrame {
  version: number
  type: number
  flags: number
  sequence: number
  checksum: number
  payload: Buffer
}

/**
 * Decodes the complete, valid frames at the start of `chunk` into `out` and returns the offset
 * of the first byte it did not take: the end of the chunk, or the start of a partial, invalid
 * or oversized frame, which the caller hands to the Rust decoder.
 */
export function decodeValidPrefixJs(chunk: Uint8Array, maxPayload: number, out: FastFrame[]): number {
  const n = chunk.length
  const ab = chunk.buffer
  const base = chunk.byteOffset
  let pos = 0
  while (n - pos >= 16) {
    const type = chunk[pos + 1]!
    if (chunk[pos] !== 1 || type < 1 || type > 6) break
    const len = (chunk[pos + 8]! | (chunk[pos + 9]! << 8) | (chunk[pos + 10]! << 16) | (chunk[pos + 11]! << 24)) >>> 0
    const start = pos + 16
    if (len > maxPayload || n - start < len) break
    const sum = (chunk[pos + 12]! | (chunk[pos + 13]! << 8) | (chunk[pos + 14]! << 16) | (chunk[pos + 15]! << 24)) >>> 0
    if (checksumJs(chunk, start, start + len) !== sum) break
    out.push({
      version: 1,
      type,
      flags: chunk[pos + 2]! | (chunk[pos + 3]! << 8),
      sequence: (chunk[pos + 4]! | (chunk[pos + 5]! << 8) | (chunk[pos + 6]! << 16) | (chunk[pos + 7]! << 24)) >>> 0,
      checksum: sum,
      payload: Buffer.from(ab, base + start, len),
    })
    pos = start + len
  }
  return pos
}
