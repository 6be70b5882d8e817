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
export { State, StateMachine } from './state/machine.js'
export type {
  Guard,
  LockEvent,
  NodeStateJson,
  RestoreOptions,
  SnapshotFormat,
  StateDiagnostics,
  StateMachineEvents,
  StateMachineOptions,
  StateMachineSnapshot,
  StateMachineSnapshotState,
  StateOptions,
  StateSnapshot,
  TransitionCallOptions,
  TransitionContext,
  TransitionHook,
  TransitionOptions,
  TransitionRecord,
  WatchOptions,
} from './state/machine.js'
export { cStateChecksum, nodeStateChecksum, stateEndpoint } from './state/checksum.js'
export type { CStateChecksumOptions } from './state/checksum.js'
export { SessionMachine, SessionState } from './state/session.js'
export type { SessionRole } from './state/session.js'
export type { WaitOptions } from './state/wait.js'
