/**
 * polycall: LibPolyCall for Node.js over a Rust core.
 * @packageDocumentation
 */
export { ErrorCode, PolyCallError, isPolyCallError } from './core/errors.js'
export type { PolyCallErrorCode, PolyCallErrorOptions } from './core/errors.js'
export { HANDSHAKE_MAGIC, HEADER_SIZE, MAX_PAYLOAD, MessageType, PROTOCOL_VERSION, ProtocolFlag } from './protocol/constants.js'
export { FrameDecoder, checksum, encodeFrame, encodeFrameInto } from './protocol/codec.js'
export type { DecodeError, Frame, FrameDecoderOptions, FrameHandler, FrameInit, NativeStreamDecoder } from './protocol/codec.js'
export { buildHandshake, parseHandshake } from './protocol/handshake.js'
export type { HandshakeInfo, ParseHandshakeOptions } from './protocol/handshake.js'
export { Capability } from './protocol/payload.js'
export { SessionMachine, SessionState } from './state/session.js'
export type { SessionRole } from './state/session.js'
export { Router, parseCommand } from './server/router.js'
export type { Handler, MethodHandlers, RouteInfo, RouteMatch, RouteOptions } from './server/router.js'
export { PolyCallServer } from './server/server.js'
export type { Authenticator, Credentials, ServerCloseOptions, ServerEvents, ServerOptions, ServerStats } from './server/options.js'
export type { Middleware, PeerCertificateInfo, PeerInfo, RequestContext } from './server/context.js'
export { requirePrincipal, requireScope } from './server/authorize.js'
export type { PrincipalCheck, ScopeOptions } from './server/authorize.js'
export { PolyCallClient } from './client/client.js'
export type {
  ClientBaseOptions,
  ClientEvents,
  ClientOptions,
  ClientStats,
  ClientTlsOptions,
  ReconnectOptions,
  RequestOptions,
} from './client/client.js'
export type { BalanceMode, EjectionOptions, Endpoint, EndpointStats, MultiEndpointOptions } from './client/pool.js'
export { isValidTracestate, parseTraceContext, parseTraceparent } from './core/trace.js'
export type { TraceContext, TraceInfo } from './core/trace.js'
export type { CallOptions } from './core/abort.js'
export type { TypedEmitter } from './core/emitter.js'
export type { WireFrame } from './network/wire.js'
export type { LatencySummary } from './core/stats.js'
export { channels as diagnosticsChannels } from './core/diagnostics.js'
export { inspectFrame } from './protocol/inspect.js'
export type { FrameInspection } from './protocol/inspect.js'
export { State, StateMachine } from './state/machine.js'
export type {
  Guard,
  LockEvent,
  NodeStateJson,
  RestoreOptions,
  SnapshotFormat,
  SnapshotOptions,
  VerifyOptions,
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
export type { WaitOptions } from './state/wait.js'
export { defineContract } from './core/contract.js'
export type { CallInput, CallOutput, Contract, Operation } from './core/contract.js'
export type { ContractHandlers, HandlerInput, HandlerOutput } from './server/schema-route.js'
export { isStandardSchema, validate } from './core/schema.js'
export type { SchemaInput, SchemaOutput, StandardSchemaV1, ValidationError, ValidationIssue } from './core/schema.js'
export type { SchemaRoute } from './server/schema-route.js'
export type { ContractClient, ControlOptions } from './client/client.js'
export { Context, createContext } from './context.js'
export { Identity, parsePublicKey } from './secure/identity.js'
export { preferredCipher } from './secure/channel.js'
export { signSnapshot, verifySnapshot } from './secure/signature.js'
export type { SignedSnapshot, SnapshotSignature } from './secure/signature.js'
export type { IdentitySaveOptions } from './secure/identity.js'
export type {
  ClientKeyCheck,
  SecureCipher,
  SecureClientOptions,
  SecureLimits,
  SecurePattern,
  SecureServerOptions,
  ServerKeyCheck,
} from './secure/options.js'
export type { ContextLimits, ContextOptions, Logger } from './context.js'
export { MemorySnapshotStore } from './store/store.js'
export type { SaveOptions, SnapshotStore, SnapshotStoreOptions, StoredSnapshot } from './store/store.js'
export { FileSnapshotStore } from './store/file.js'
export type { FileSnapshotStoreOptions } from './store/file.js'
export { RedisSnapshotStore } from './store/redis.js'
export type { RedisScriptArguments, RedisScriptClient, RedisSnapshotStoreOptions } from './store/redis.js'
export { PersistedState, persistState, resumeState } from './store/persist.js'
export type { LostEvent, PersistOptions, PersistedStateEvents, ResumeOptions, SavedEvent } from './store/persist.js'
export { MemoryIdempotencyStore } from './idempotency/store.js'
export type {
  IdempotencyOutcome,
  IdempotencyRef,
  IdempotencyState,
  IdempotencyStore,
  MemoryIdempotencyStoreOptions,
} from './idempotency/store.js'
export { RedisIdempotencyStore } from './idempotency/redis.js'
export type { RedisIdempotencyStoreOptions } from './idempotency/redis.js'
export type { IdempotencyOptions } from './server/idempotency.js'
export { serveCluster } from './cluster/serve.js'
export { ClusterPrimary } from './cluster/primary.js'
export { ClusterWorker } from './cluster/worker.js'
export type {
  ClusterEvents,
  ClusterOptions,
  ClusterStats,
  ClusterWorkerInfo,
  ClusterWorkerStats,
  RespawnEvent,
  RespawnOptions,
  ServerFactory,
  WorkerExitEvent,
  WorkerInfo,
} from './cluster/types.js'
