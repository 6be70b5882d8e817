/** HANDSHAKE payloads (docs/protocol.md §4): build the long form, parse what peers send. */
import { invalidArgument } from '../core/errors.js'
import { fromNative, native } from '../native.js'

/** A parsed HANDSHAKE payload. */
export interface HandshakeInfo {
  /** `'long'` (8+ bytes), `'short'` (magic only, go-polycall) or `'empty'` (node-polycall, lenient only). */
  form: 'empty' | 'short' | 'long'
  /** Version byte of the long form. */
  version?: number
  /** The long form's flags field (polycall capability bits); 0 otherwise. */
  flags: number
  /** True when the peer sent no long form or no capability bits: speak the reference conventions. */
  legacy: boolean
  /** polycall extension (offset 8, u32 LE): the peer's limit of requests in flight per connection. */
  maxInFlight?: number
}

/** Options of {@link parseHandshake}. */
export interface ParseHandshakeOptions {
  /**
   * Refuse an empty payload. Servers stay lenient so node-polycall clients can connect.
   * @defaultValue false
   */
  strict?: boolean
}

/**
 * Builds the 8-byte long-form HANDSHAKE payload: magic, version 1, pad 0, flags; with
 * `maxInFlight`, the 12-byte extended form that also carries that limit (u32 LE at offset 8,
 * which legacy peers ignore).
 *
 * @param flags - u16 capability bits to advertise
 * @param maxInFlight - optional limit of requests in flight per connection
 * @returns the payload
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT` when flags is not in 0..0xffff
 * @example
 * ```ts
 * buildHandshake(0) // <Buffer 43 4c 50 00 01 00 00 00>
 * ```
 */
export function buildHandshake(flags = 0, maxInFlight?: number): Buffer {
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xffff) throw invalidArgument('flags must be in 0..0xffff')
  if (maxInFlight !== undefined && (!Number.isInteger(maxInFlight) || maxInFlight < 0 || maxInFlight > 0xffffffff)) {
    throw invalidArgument('maxInFlight must be a u32')
  }
  try {
    return native.buildHandshake(flags, maxInFlight)
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * Parses a received HANDSHAKE payload. The pad byte and anything after offset 7 are ignored.
 *
 * @param payload - the HANDSHAKE frame's payload
 * @param options - `strict` to refuse an empty payload
 * @returns what the peer announced
 * @throws `ERR_POLYCALL_HANDSHAKE_PAYLOAD_TOO_SHORT` (1-3 bytes, or empty when strict) or
 *   `ERR_POLYCALL_HANDSHAKE_BAD_MAGIC`
 * @example
 * ```ts
 * parseHandshake(frame.payload).legacy
 * ```
 */
export function parseHandshake(payload: Uint8Array, options: ParseHandshakeOptions = {}): HandshakeInfo {
  if (!(payload instanceof Uint8Array)) throw invalidArgument('payload must be a Uint8Array')
  try {
    const h = native.parseHandshake(payload, options.strict === true)
    const info: HandshakeInfo = { form: h.form as HandshakeInfo['form'], flags: h.flags, legacy: h.legacy }
    if (h.version != null) info.version = h.version
    if (h.maxInFlight != null) info.maxInFlight = h.maxInFlight
    return info
  } catch (e) {
    throw fromNative(e)
  }
}
