/** Wire constants of LibPolyCall v1 (PROTOCOL.md §1, §3, §7). */

/** The only protocol version of the v1 wire. */
export const PROTOCOL_VERSION = 1
/** Size of the fixed frame header in bytes. */
export const HEADER_SIZE = 16
/** Largest payload a frame may carry, inclusive. */
export const MAX_PAYLOAD = 1_048_576
/** `"PLC"` as a little-endian u32: the handshake magic, `43 4c 50 00` on the wire. */
export const HANDSHAKE_MAGIC = 0x00504c43

/** Message type codes (PROTOCOL.md §3.1). */
export enum MessageType {
  Handshake = 1,
  Auth = 2,
  Command = 3,
  Response = 4,
  Error = 5,
  Heartbeat = 6,
}

/** Flag bits of the header (PROTOCOL.md §3.2). Advisory: they never change how a payload is read. */
export enum ProtocolFlag {
  None = 0,
  Encrypted = 1,
  Compressed = 2,
  Urgent = 4,
  Reliable = 8,
}

/** @internal The flags the reference implementations put on each type (§3.2). */
export const DEFAULT_FLAGS: readonly number[] = [0, 0x0008, 0x0009, 0x0008, 0, 0, 0]
