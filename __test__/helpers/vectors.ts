import { readFileSync } from 'node:fs'

export interface ChecksumVector {
  name: string
  length: number
  payload_hex?: string
  fill?: { byte: number; length: number }
  checksum: number
}
export interface FrameVector {
  name: string
  type: number
  flags: number
  sequence: number
  payload_length: number
  payload_hex?: string
  payload_fill?: { byte: number; length: number }
  checksum: number
  header_hex: string
  frame_hex?: string
}
export interface StreamVector {
  name: string
  chunks_hex?: string[]
  stream_hex?: string
  chunk_size?: number
  expected_frames: string[]
}
export interface InvalidFrameVector {
  name: string
  bytes_hex: string
  stream_ends_after: boolean
  error: string
  detected_at: string
}
export interface Vectors {
  checksums: ChecksumVector[]
  frames: FrameVector[]
  streams: StreamVector[]
  invalid_frames: InvalidFrameVector[]
  handshake: {
    magic: number
    long_form: {
      payload_hex: string
      frame_hex: string
      variant_with_garbage_pad_hex: string
      variant_with_garbage_pad_frame_hex: string
    }
    short_form_payload_hex: string
    invalid: { name: string; frame_hex: string; payload_hex: string; error: string; lenient_mode: 'accept' | 'reject' }[]
  }
  state_machine: {
    c_state_checksum_lp64: {
      vectors: {
        name: string
        stored_name: string
        is_final: boolean
        id: number
        covered_bytes_hex: string
        checksum: number
      }[]
    }
    js_state_checksum: { name: string; json: string; checksum: number }[]
    js_endpoint_names: { state_name: string; endpoint: string }[]
  }
}

/** The golden vectors, shared with the cargo tests. */
export const vectors: Vectors = JSON.parse(
  readFileSync(new URL('../../crates/polycall-core/tests/vectors/protocol-vectors.json', import.meta.url), 'utf8'),
)

export const hex = (s: string): Buffer => Buffer.from(s, 'hex')

/** A vector's payload from its hex or its fill description. */
export function payloadOf(v: {
  payload_hex?: string
  fill?: { byte: number; length: number }
  payload_fill?: { byte: number; length: number }
}): Buffer {
  const fill = v.fill ?? v.payload_fill
  return fill ? Buffer.alloc(fill.length, fill.byte) : hex(v.payload_hex ?? '')
}
