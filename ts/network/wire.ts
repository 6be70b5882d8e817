/**
 * The two frame formats a connection can speak: the LibPolyCall v1 frame and the PCR1 frame.
 * Both decode through the same native stream decoder.
 * @internal
 * @packageDocumentation
 */
import { FrameDecoder, encodeFrame } from '../protocol/codec.js'
import { Pcr1Decoder, encodePcr1Frame } from '../pcr1/frame.js'

/** A decoded frame of either format (`sequence` is PCR1's corr). */
export interface WireFrame {
  type: number
  sequence: number
  payload: Buffer
  flags?: number
}

export interface WireDecoder {
  /** True while an incomplete frame is buffered. */
  readonly pending: boolean
  push(chunk: Uint8Array): WireFrame[]
  end(): void
  free(): void
}

export interface Wire {
  readonly name: 'v1' | 'pcr1'
  decoder(maxPayload: number): WireDecoder
  encode(type: number, sequence: number, payload: Uint8Array | undefined, flags: number | undefined): Buffer
}

export const v1Wire: Wire = {
  name: 'v1',
  decoder: (maxPayload) => new FrameDecoder({ maxPayload }),
  encode: (type, sequence, payload, flags) => encodeFrame({ type, sequence, payload, flags }),
}

const EMPTY = Buffer.alloc(0)

export const pcr1Wire: Wire = {
  name: 'pcr1',
  decoder: (maxPayload) => new Pcr1Decoder({ maxPayload }),
  encode: (type, sequence, payload) => encodePcr1Frame(type, sequence, payload ?? EMPTY),
}
