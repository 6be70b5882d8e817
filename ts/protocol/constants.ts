/** Wire constants of LibPolyCall v1 (docs/protocol.md §1, §3, §7). */

/** The only protocol version of the v1 wire. */
export const PROTOCOL_VERSION = 1
/** Size of the fixed frame header in bytes. */
export const HEADER_SIZE = 16
/** Largest payload a frame may carry, inclusive. */
export const MAX_PAYLOAD = 1_048_576
/** `"PLC"` as a little-endian u32: the handshake magic, `43 4c 50 00` on the wire. */
export const HANDSHAKE_MAGIC = 0x00504c43

/** Message type codes (docs/protocol.md §3.1). */
export enum MessageType {
  /** The client's hello, answered by the server (docs/protocol.md, "Handshake"). */
  Handshake = 1,
  /** Credentials, JSON. */
  Auth = 2,
  /** A request: command and data. */
  Command = 3,
  /** A reply: the result, with the request's sequence. */
  Response = 4,
  /** A failure: with a request's sequence, or 0 for the connection. */
  Error = 5,
  /** Keep-alive; also carries polycall's cancellation notices. */
  Heartbeat = 6,
}

/** Flag bits of the header (docs/protocol.md §3.2). Advisory: they never change how a payload is read. */
export enum ProtocolFlag {
  /** No flag. */
  None = 0,
  /** Set on AUTH by the references, though nothing is encrypted. */
  Encrypted = 1,
  /** Never set by the references. */
  Compressed = 2,
  /** Marks polycall's cancellation notices. */
  Urgent = 4,
  /** Set on HANDSHAKE, AUTH and COMMAND by the references; no effect. */
  Reliable = 8,
}

/** @internal The flags the reference implementations put on each type (§3.2). */
export const DEFAULT_FLAGS: readonly number[] = [0, 0x0008, 0x0009, 0x0008, 0, 0, 0]
