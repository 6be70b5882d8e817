/**
 * PCR1 frames (docs/protocol.md §P1): a 16-byte big-endian header (`PCR1`, type, zero flags and
 * reserved, corr, length) and a UTF-8 JSON payload. Decoding goes through the same native stream
 * decoder as the v1 frame: header rules are checked before any payload byte is buffered.
 * @packageDocumentation
 */
import { invalidArgument } from '../core/errors.js'
import { fromNative, native } from '../native.js'
import {
  ASSEMBLED,
  DECODER_META,
  DECODER_META_WORDS,
  NativeStreamDecoder,
  statusCount,
  statusFailed,
  statusMore,
  type FrameDecoderOptions,
} from '../protocol/codec.js'
import { HEADER_SIZE } from '../protocol/constants.js'
import { JS_ENCODE_MAX } from '../protocol/fast-path.js'

/** PCR1 frame types. */
export enum Pcr1Type {
  Request = 1,
  Response = 2,
  Control = 3,
  ControlReply = 4,
}

/** A decoded PCR1 frame. `sequence` is the header's corr. */
export interface Pcr1Frame {
  type: Pcr1Type
  /** The corr field: chosen by the caller, echoed in the reply; 0 on connection-level notices. */
  sequence: number
  /** UTF-8 JSON bytes (a view into the pushed chunk when the frame arrived whole). */
  payload: Buffer
}

/**
 * Writes a PCR1 header at `out[at..at+16)`: magic, type, zero flags and reserved, corr and
 * length big-endian. The caller has checked type, corr and length.
 * @internal
 */
export function writePcr1Header(out: Uint8Array, at: number, type: number, corr: number, length: number): void {
  out[at] = 0x50
  out[at + 1] = 0x43
  out[at + 2] = 0x52
  out[at + 3] = 0x31
  out[at + 4] = type
  out[at + 5] = 0
  out[at + 6] = 0
  out[at + 7] = 0
  out[at + 8] = corr >>> 24
  out[at + 9] = (corr >>> 16) & 0xff
  out[at + 10] = (corr >>> 8) & 0xff
  out[at + 11] = corr & 0xff
  out[at + 12] = length >>> 24
  out[at + 13] = (length >>> 16) & 0xff
  out[at + 14] = (length >>> 8) & 0xff
  out[at + 15] = length & 0xff
}

/**
 * Encodes one PCR1 frame.
 *
 * @param type - frame type 1..4
 * @param corr - correlation number, u32
 * @param payload - JSON bytes, at most 1 MiB
 * @returns header and payload
 * @throws `ERR_POLYCALL_PCR1_UNKNOWN_TYPE`, `ERR_POLYCALL_PCR1_PAYLOAD_TOO_LARGE`, `ERR_POLYCALL_INVALID_ARGUMENT`
 */
export function encodePcr1Frame(type: Pcr1Type, corr: number, payload: Uint8Array): Buffer {
  if (!Number.isInteger(corr) || corr < 0 || corr > 0xffffffff) throw invalidArgument('corr must be a u32')
  if (!(payload instanceof Uint8Array)) throw invalidArgument('payload must be a Uint8Array')
  // Without a checksum there is nothing for Rust to speed up on small frames, only a call to pay
  // for: valid small frames are written here; the rest (and every refusal) go to the core.
  if (payload.length <= JS_ENCODE_MAX && type >= 1 && type <= 4) {
    const out = Buffer.allocUnsafe(HEADER_SIZE + payload.length)
    writePcr1Header(out, 0, type, corr, payload.length)
    out.set(payload, HEADER_SIZE)
    return out
  }
  try {
    return native.encodePcr1(type, corr, payload)
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * Incremental PCR1 decoder: push chunks, get every completed frame. A bad header throws
 * `ERR_POLYCALL_PCR1_BAD_MAGIC`, `..._UNKNOWN_TYPE`, `..._RESERVED_BITS` or
 * `..._PAYLOAD_TOO_LARGE` before its payload is read; `end()` throws `..._TRUNCATED_*`.
 */
export class Pcr1Decoder extends NativeStreamDecoder {
  constructor(options: FrameDecoderOptions = {}) {
    super(options, 1)
  }

  /**
   * @param chunk - the next bytes of the stream
   * @returns every frame this chunk completed
   * @throws the PCR1 header errors; `err.frames` holds the frames before the bad one
   */
  push(chunk: Uint8Array): Pcr1Frame[] {
    if (!(chunk instanceof Uint8Array)) throw invalidArgument('push(chunk): chunk must be a Uint8Array')
    const frames: Pcr1Frame[] = []
    let view = chunk
    for (;;) {
      const status = this.nativePush(view)
      const count = statusCount(status)
      for (let i = 0, o = 0; i < count; i++, o += DECODER_META_WORDS) {
        const start = DECODER_META[o + 3]!
        frames.push({
          type: DECODER_META[o]!,
          sequence: DECODER_META[o + 1]!,
          payload: start === ASSEMBLED ? this.takeAssembled() : Buffer.from(view.buffer, view.byteOffset + start, DECODER_META[o + 4]!),
        })
      }
      if (statusFailed(status)) throw this.fail(frames)
      if (!statusMore(status)) return frames
      view = view.subarray(this.consumed())
    }
  }
}
