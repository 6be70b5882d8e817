/**
 * polycall: LibPolyCall for Node.js over a Rust core.
 * @packageDocumentation
 */
export { ErrorCode, PolyCallError, isPolyCallError } from './core/errors.js'
export type { PolyCallErrorCode, PolyCallErrorOptions } from './core/errors.js'
export { HANDSHAKE_MAGIC, HEADER_SIZE, MAX_PAYLOAD, MessageType, PROTOCOL_VERSION, ProtocolFlag } from './protocol/constants.js'
export { FrameDecoder, checksum, encodeFrame } from './protocol/codec.js'
export type { DecodeError, Frame, FrameDecoderOptions, FrameInit } from './protocol/codec.js'
export { buildHandshake, parseHandshake } from './protocol/handshake.js'
export type { HandshakeInfo, ParseHandshakeOptions } from './protocol/handshake.js'
