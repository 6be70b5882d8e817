/** Frame inspection for diagnostics (`polycall decode`). @packageDocumentation */
import { invalidArgument } from '../core/errors.js'
import { fromNative, native } from '../native.js'

/** Every field of one frame as found, the computed checksum, and every rule broken. */
export interface FrameInspection {
  /** The version byte (1 on a valid frame). */
  version: number
  /** The type byte (1..6 on a valid frame). */
  type: number
  /** The flag bits. */
  flags: number
  /** The sequence number. */
  sequence: number
  /** The payload length the header announces. */
  payloadLength: number
  /** The header's checksum field. */
  checksum: number
  /** Checksum of the payload when all announced bytes are present. */
  computedChecksum?: number
  /** The payload bytes present (fewer than announced when truncated). */
  payload: Buffer
  /** Bytes after the announced payload. */
  trailing: number
  /** `{ code, message }` of each problem, header first; empty for a valid frame. */
  problems: {
    /** The error code the decoder would raise, e.g. `ERR_POLYCALL_CHECKSUM_MISMATCH`. */
    code: string
    /** What is wrong. */
    message: string
  }[]
}

/**
 * Inspects bytes as one frame without stopping at the first problem.
 *
 * @param bytes - a frame (header and payload)
 * @returns the fields, the computed checksum and the problems
 * @throws `ERR_POLYCALL_TRUNCATED_HEADER` for fewer than 16 bytes
 * @example
 * ```ts
 * inspectFrame(Buffer.from('010600000400000000000000000000', 'hex')).problems
 * ```
 */
export function inspectFrame(bytes: Uint8Array): FrameInspection {
  if (!(bytes instanceof Uint8Array)) throw invalidArgument('bytes must be a Uint8Array')
  try {
    const i = native.inspectFrame(bytes)
    const out: FrameInspection = {
      version: i.version,
      type: i.kind,
      flags: i.flags,
      sequence: i.sequence,
      payloadLength: i.payloadLength,
      checksum: i.checksum,
      payload: i.payload,
      trailing: i.trailing,
      problems: i.problems.map(([code, message]) => ({ code: code!, message: message! })),
    }
    if (i.computedChecksum != null) out.computedChecksum = i.computedChecksum
    return out
  } catch (e) {
    throw fromNative(e)
  }
}
