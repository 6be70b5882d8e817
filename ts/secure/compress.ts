/**
 * lz4 payload compression as a COMPRESSED frame carries it: a u32 LE decompressed size, then one
 * lz4 block (docs/protocol-extensions.md, "Compression"). Secure channels compress and
 * decompress inside their seal and push calls; these functions serve single payloads.
 * @packageDocumentation
 */
import { invalidArgument } from '../core/errors.js'
import { fromNative, native } from '../native.js'
import { MAX_PAYLOAD } from '../protocol/constants.js'

/**
 * @internal Compresses a payload, or returns `undefined` when it is shorter than `threshold`
 * or does not shrink (then send it as it is, without the COMPRESSED flag).
 *
 * @param payload - the payload
 * @param threshold - the smallest payload worth compressing
 * @returns the compressed payload (size prefix and block), or `undefined`
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad argument
 */
export function compressPayload(payload: Uint8Array, threshold = 512): Buffer | undefined {
  if (!(payload instanceof Uint8Array)) throw invalidArgument('compressPayload(payload): payload must be a Uint8Array')
  if (!Number.isInteger(threshold) || threshold < 0 || threshold > 0xffffffff) throw invalidArgument('threshold must be a u32')
  try {
    return native.lz4Compress(payload, threshold) ?? undefined
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * @internal Decompresses a COMPRESSED payload. Its announced size is checked against `maxPayload`
 * before anything is allocated or decompressed.
 *
 * @param payload - the compressed payload
 * @param maxPayload - the largest decompressed size accepted
 * @returns the payload
 * @throws `ERR_POLYCALL_DECOMPRESSION_LIMIT` when the announced size exceeds `maxPayload`;
 *   `ERR_POLYCALL_DECOMPRESSION_FAILED` for a malformed block or a size mismatch
 */
export function decompressPayload(payload: Uint8Array, maxPayload = MAX_PAYLOAD): Buffer {
  if (!(payload instanceof Uint8Array)) throw invalidArgument('decompressPayload(payload): payload must be a Uint8Array')
  if (!Number.isInteger(maxPayload) || maxPayload < 0 || maxPayload > MAX_PAYLOAD) {
    throw invalidArgument(`maxPayload must be an integer in 0..${MAX_PAYLOAD}`)
  }
  try {
    return native.lz4Decompress(payload, maxPayload)
  } catch (e) {
    throw fromNative(e)
  }
}
