/**
 * The two frame formats a connection can speak: the LibPolyCall v1 frame and the PCR1 frame.
 * Both decode through the same native stream decoder.
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { FrameDecoder, encodeFrame } from '../protocol/codec.js'
import { DEFAULT_FLAGS, HEADER_SIZE } from '../protocol/constants.js'
import { JS_ENCODE_MAX, checksumJs, writeHeaderJs } from '../protocol/fast-path.js'
import { Pcr1Decoder, encodePcr1Frame, writePcr1Header } from '../pcr1/frame.js'
import type { SecureChannel } from '../secure/channel.js'

/** A decoded frame of either format (`sequence` is PCR1's corr). */
export interface WireFrame {
  /** The frame's type: a {@link MessageType} on v1, PCR1's type byte (1..4) on PCR1. */
  type: number
  /** The sequence number (v1) or corr (PCR1). */
  sequence: number
  /** The payload bytes. */
  payload: Buffer
  /** The v1 flag bits. */
  flags?: number
}

/** @internal */
export interface WireDecoder {
  /** True while an incomplete frame is buffered. */
  readonly pending: boolean
  push(chunk: Uint8Array): WireFrame[]
  end(): void
  free(): void
}

/** @internal */
export interface Wire {
  readonly name: 'v1' | 'pcr1'
  /**
   * Whether a new connection sends one frame per write until told otherwise: v1 peers may be
   * legacy readers until their handshake shows capabilities; PCR1 readers are length-prefixed.
   */
  readonly startsLegacy: boolean
  decoder(maxPayload: number): WireDecoder
  encode(type: number, sequence: number, payload: Uint8Array | undefined, flags: number | undefined): Buffer
  /**
   * Writes a small frame straight into `target` at `offset` (the connection's write arena) and
   * returns its size, or returns -1 when the frame should go through `encode` instead. The
   * caller guarantees room for {@link ARENA_FRAME_MAX} bytes.
   */
  encodeInto?(target: Buffer, offset: number, type: number, sequence: number, payload: Uint8Array, flags: number | undefined): number
  /**
   * Writes the header of a frame whose `length` payload bytes are already in place at
   * `target[offset + 16..]` (the connection's write arena), with the type's default flags.
   * Only frames the connection built itself come here: type, sequence and length are valid.
   */
  headerInto?(target: Buffer, offset: number, type: number, sequence: number, length: number): void
}

/** @internal Largest frame written into a connection's arena; larger frames get their own buffer. */
export const ARENA_FRAME_MAX = HEADER_SIZE + JS_ENCODE_MAX

/** @internal */
export const v1Wire: Wire = {
  name: 'v1',
  startsLegacy: true,
  decoder: (maxPayload) => new FrameDecoder({ maxPayload, ownerFrees: true }),
  encode: (type, sequence, payload, flags) => encodeFrame({ type, sequence, payload, flags }),
  encodeInto(target, offset, type, sequence, payload, flags) {
    const len = payload.length
    // Only frames the connection built itself come here: types, flags and sequences are valid.
    if (len > JS_ENCODE_MAX) return -1
    writeHeaderJs(target, type, flags ?? DEFAULT_FLAGS[type]!, sequence, len, checksumJs(payload, 0, len, 0), offset)
    target.set(payload, offset + HEADER_SIZE)
    return HEADER_SIZE + len
  },
  headerInto(target, offset, type, sequence, length) {
    const start = offset + HEADER_SIZE
    writeHeaderJs(target, type, DEFAULT_FLAGS[type]!, sequence, length, checksumJs(target, start, start + length, 0), offset)
  },
}

const EMPTY = Buffer.alloc(0)

/** @internal */
export const pcr1Wire: Wire = {
  name: 'pcr1',
  startsLegacy: false,
  decoder: (maxPayload) => new Pcr1Decoder({ maxPayload, ownerFrees: true }),
  encode: (type, sequence, payload) => encodePcr1Frame(type, sequence, payload ?? EMPTY),
  encodeInto(target, offset, type, sequence, payload) {
    const len = payload.length
    if (len > JS_ENCODE_MAX) return -1
    writePcr1Header(target, offset, type, sequence, len)
    target.set(payload, offset + HEADER_SIZE)
    return HEADER_SIZE + len
  },
}

/**
 * @internal A connection's decoder while it has a secure session: the channel decodes and
 * opens each socket chunk in one native call. Ending the input keeps the session, so replies
 * to requests read before the peer's end can still be sealed.
 */
export class SecureDecoder implements WireDecoder {
  constructor(readonly channel: SecureChannel) {}

  get pending(): boolean {
    return this.channel.partial
  }

  push(chunk: Uint8Array): WireFrame[] {
    return this.channel.push(chunk)
  }

  end(): void {
    this.channel.endInput()
  }

  free(): void {
    this.channel.destroy()
  }
}
