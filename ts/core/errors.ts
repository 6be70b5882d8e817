/**
 * The one error class of polycall and its stable codes.
 *
 * Branch on `err.code`, not on `instanceof`: two copies of the package can be loaded in one
 * process, and errors from either carry the same codes. {@link isPolyCallError} checks the
 * shape, not the class identity.
 */

/**
 * Every code polycall itself raises. Application handlers may throw their own codes (for
 * example `ERR_APP_NOT_FOUND`, or dotted PCR1 codes such as `item.unknown`); those travel to
 * the caller unchanged.
 */
export const ErrorCode = {
  /** The stream ended with 1 to 15 header bytes buffered (docs/protocol.md §8.1). */
  TRUNCATED_HEADER: 'ERR_POLYCALL_TRUNCATED_HEADER',
  /** The stream ended before the announced payload arrived. */
  TRUNCATED_PAYLOAD: 'ERR_POLYCALL_TRUNCATED_PAYLOAD',
  /** The version byte is not 1. */
  VERSION_MISMATCH: 'ERR_POLYCALL_VERSION_MISMATCH',
  /** The message type is not 1..6. */
  UNKNOWN_MESSAGE_TYPE: 'ERR_POLYCALL_UNKNOWN_MESSAGE_TYPE',
  /** A payload is over the limit (1 048 576 bytes, or a lower configured `maxPayload`). */
  PAYLOAD_TOO_LARGE: 'ERR_POLYCALL_PAYLOAD_TOO_LARGE',
  /** The payload checksum differs from the header's. */
  CHECKSUM_MISMATCH: 'ERR_POLYCALL_CHECKSUM_MISMATCH',
  /** A HANDSHAKE payload shorter than the 4-byte magic. */
  HANDSHAKE_PAYLOAD_TOO_SHORT: 'ERR_POLYCALL_HANDSHAKE_PAYLOAD_TOO_SHORT',
  /** A HANDSHAKE payload without the magic `43 4c 50 00`. */
  HANDSHAKE_BAD_MAGIC: 'ERR_POLYCALL_HANDSHAKE_BAD_MAGIC',
  /** PCR1: the frame does not start with `PCR1`. */
  PCR1_BAD_MAGIC: 'ERR_POLYCALL_PCR1_BAD_MAGIC',
  /** PCR1: the type byte is not 1..4. */
  PCR1_UNKNOWN_TYPE: 'ERR_POLYCALL_PCR1_UNKNOWN_TYPE',
  /** PCR1: flags or reserved bits are set. */
  PCR1_RESERVED_BITS: 'ERR_POLYCALL_PCR1_RESERVED_BITS',
  /** PCR1: the length field is over 1 MiB (or the configured limit). */
  PCR1_PAYLOAD_TOO_LARGE: 'ERR_POLYCALL_PCR1_PAYLOAD_TOO_LARGE',
  /** PCR1: the stream ended inside a header. */
  PCR1_TRUNCATED_HEADER: 'ERR_POLYCALL_PCR1_TRUNCATED_HEADER',
  /** PCR1: the stream ended inside a payload. */
  PCR1_TRUNCATED_PAYLOAD: 'ERR_POLYCALL_PCR1_TRUNCATED_PAYLOAD',
  /** An argument of the wrong type or outside its range. */
  INVALID_ARGUMENT: 'ERR_POLYCALL_INVALID_ARGUMENT',
  /** The call's AbortSignal fired; `cause` is the signal's reason. */
  ABORTED: 'ERR_POLYCALL_ABORTED',
  /** The call's timeout elapsed. */
  TIMEOUT: 'ERR_POLYCALL_TIMEOUT',
  /** The request's deadline passed on the server before the handler finished. */
  DEADLINE_EXCEEDED: 'ERR_POLYCALL_DEADLINE_EXCEEDED',
  /** The caller cancelled the request (the server aborts the handler's `ctx.signal` with this). */
  CANCELLED: 'ERR_POLYCALL_CANCELLED',
  /** The connection dropped with the call pending; `written` says whether the request had left. */
  CONNECTION_LOST: 'ERR_POLYCALL_CONNECTION_LOST',
  /** The server could not listen (address in use, permission denied). */
  LISTEN_FAILED: 'ERR_POLYCALL_LISTEN_FAILED',
  /** The connection could not be established (refused, unreachable, TLS failure). */
  CONNECT_FAILED: 'ERR_POLYCALL_CONNECT_FAILED',
  /** The peer broke the protocol (bad handshake, a frame not allowed in the session state). */
  PROTOCOL: 'ERR_POLYCALL_PROTOCOL',
  /** Authentication is required, or the credentials were refused. */
  UNAUTHENTICATED: 'ERR_POLYCALL_UNAUTHENTICATED',
  /**
   * The caller is known but not allowed: a `requirePrincipal` check said no, or the principal
   * lacks a scope `requireScope` asks for.
   */
  FORBIDDEN: 'ERR_POLYCALL_FORBIDDEN',
  /** No route matches the command. */
  NOT_FOUND: 'ERR_POLYCALL_NOT_FOUND',
  /** A route registered twice: the same path shape and method (or every method). */
  DUPLICATE_ROUTE: 'ERR_POLYCALL_DUPLICATE_ROUTE',
  /** Request data failed the route's input schema; `issues` lists every problem. */
  INVALID_INPUT: 'ERR_POLYCALL_INVALID_INPUT',
  /** A reply failed the contract's output schema on the client. */
  BAD_RESPONSE: 'ERR_POLYCALL_BAD_RESPONSE',
  /** A request payload could not be decoded. */
  BAD_REQUEST: 'ERR_POLYCALL_BAD_REQUEST',
  /** Over a limit: connections, requests in flight per connection. Retry later. */
  BUSY: 'ERR_POLYCALL_BUSY',
  /** The server is shutting down and takes no new requests. */
  UNAVAILABLE: 'ERR_POLYCALL_UNAVAILABLE',
  /**
   * The peer did not read what was written to it: more than `maxWriteBuffer` bytes stayed queued
   * for `drainTimeout` ms, and the connection was destroyed.
   */
  DRAIN_TIMEOUT: 'ERR_POLYCALL_DRAIN_TIMEOUT',
  /** The TLS peer's public key does not match any pinned SPKI SHA-256 hash. */
  TLS_PIN_MISMATCH: 'ERR_POLYCALL_TLS_PIN_MISMATCH',
  /** A legacy peer answered with plain error text, which carries no code. */
  REMOTE: 'ERR_POLYCALL_REMOTE',
  /** The object was closed, freed or destroyed before the call. */
  CLOSED: 'ERR_POLYCALL_CLOSED',
  /** No native addon could be loaded for this platform. */
  NATIVE_UNAVAILABLE: 'ERR_POLYCALL_NATIVE_UNAVAILABLE',
  /** An unexpected failure inside polycall or a handler; details are not sent to peers. */
  INTERNAL: 'ERR_POLYCALL_INTERNAL',
  /** No state of that name (errno 1, `POLYCALL_SM_ERROR_INVALID_STATE`). */
  INVALID_STATE: 'ERR_POLYCALL_INVALID_STATE',
  /** No such transition from the current state, or no current state (errno 2). */
  INVALID_TRANSITION: 'ERR_POLYCALL_INVALID_TRANSITION',
  /** A self-transition while `allowSelfTransitions` is off (errno 2). */
  SELF_TRANSITION: 'ERR_POLYCALL_SELF_TRANSITION',
  /** Leaving a final state, or giving it a transition (errno 2). */
  FINAL_STATE: 'ERR_POLYCALL_FINAL_STATE',
  /** A guard returned a falsy value, threw or rejected (errno 2); `cause` is what it threw. */
  GUARD_REJECTED: 'ERR_POLYCALL_GUARD_REJECTED',
  /** A `before`/`after`/`onExit`/`onEnter` hook threw or rejected; `cause` is what it threw. */
  HOOK_FAILED: 'ERR_POLYCALL_HOOK_FAILED',
  /** The machine holds `maxStates` states already (errno 3). */
  MAX_STATES_REACHED: 'ERR_POLYCALL_MAX_STATES_REACHED',
  /** The machine holds `maxTransitions` transitions already (errno 4). */
  MAX_TRANSITIONS_REACHED: 'ERR_POLYCALL_MAX_TRANSITIONS_REACHED',
  /** A state name longer than `maxNameLength` UTF-8 bytes. */
  STATE_NAME_TOO_LONG: 'ERR_POLYCALL_STATE_NAME_TOO_LONG',
  /** A state of that name exists. */
  DUPLICATE_STATE: 'ERR_POLYCALL_DUPLICATE_STATE',
  /** That transition exists. */
  DUPLICATE_TRANSITION: 'ERR_POLYCALL_DUPLICATE_TRANSITION',
  /** The state is locked: a transition's source or target, a restore's target, or locking it again (errno 8). */
  STATE_LOCKED: 'ERR_POLYCALL_STATE_LOCKED',
  /** Unlocking a state that is not locked. */
  STATE_NOT_LOCKED: 'ERR_POLYCALL_STATE_NOT_LOCKED',
  /** A checksum does not match its content, or an integrity hook said no (errno 7). */
  INTEGRITY_CHECK_FAILED: 'ERR_POLYCALL_INTEGRITY_CHECK_FAILED',
  /** A state snapshot of another version than the live state (errno 9). */
  STATE_VERSION_MISMATCH: 'ERR_POLYCALL_STATE_VERSION_MISMATCH',
  /** A snapshot that is not well formed: shape, unknown states, a state checksum of 0. */
  INVALID_SNAPSHOT: 'ERR_POLYCALL_INVALID_SNAPSHOT',
  /** An async iterator of transitions fell further behind than its `bufferSize`. */
  ITERATOR_OVERFLOW: 'ERR_POLYCALL_ITERATOR_OVERFLOW',
  /**
   * A snapshot store refused a write made against a stale version: another writer saved first
   * (`ifVersion` did not match). Load again, then decide.
   */
  CONFLICT: 'ERR_POLYCALL_CONFLICT',
  /** A snapshot store could not be read or written (file system, Redis); `cause` is the original error. */
  STORE_FAILED: 'ERR_POLYCALL_STORE_FAILED',
  /**
   * A retried call's key was used by an earlier run whose outcome cannot be given (its host
   * stopped mid-run, or the outcome was too large to keep): it may have run once, and it is
   * not run again.
   */
  OUTCOME_UNKNOWN: 'ERR_POLYCALL_OUTCOME_UNKNOWN',
  /**
   * A secure handshake failed: a wrong or unknown key, a man in the middle, an altered hello, a
   * malformed, oversized or out-of-order handshake message.
   */
  HANDSHAKE_FAILED: 'ERR_POLYCALL_HANDSHAKE_FAILED',
  /** The peer did not offer, or did not accept, a secure session where one is required. */
  INSECURE_PEER: 'ERR_POLYCALL_INSECURE_PEER',
  /**
   * A frame of a secure session failed authentication: altered header or payload, replayed,
   * reordered, after a dropped frame, from another session, or not sealed at all.
   */
  TAMPERED: 'ERR_POLYCALL_TAMPERED',
  /** A compressed payload announces more than the payload limit (refused before decompressing). */
  DECOMPRESSION_LIMIT: 'ERR_POLYCALL_DECOMPRESSION_LIMIT',
  /** A compressed payload is not a valid lz4 block of its announced size. */
  DECOMPRESSION_FAILED: 'ERR_POLYCALL_DECOMPRESSION_FAILED',
  /** Key bytes or key text that are not a valid key of the expected kind. */
  INVALID_KEY: 'ERR_POLYCALL_INVALID_KEY',
  /** An identity file that cannot be read, created or parsed (or exists, when saving without `overwrite`). */
  IDENTITY_FILE: 'ERR_POLYCALL_IDENTITY_FILE',
  /** A snapshot signature that is missing, malformed, made by another key, or does not match. */
  BAD_SIGNATURE: 'ERR_POLYCALL_BAD_SIGNATURE',
  /** The operating system's random number generator failed. */
  ENTROPY_UNAVAILABLE: 'ERR_POLYCALL_ENTROPY_UNAVAILABLE',
} as const

/**
 * @internal The C library's `polycall_sm_status_t` value (docs/protocol.md §8.4) of each code that
 * has one. {@link PolyCallError} fills `errno` from it, so native errors (whose napi form
 * cannot carry a number) get it too.
 */
export const ERRNO: Readonly<Record<string, number>> = {
  [ErrorCode.INVALID_STATE]: 1,
  [ErrorCode.INVALID_TRANSITION]: 2,
  [ErrorCode.SELF_TRANSITION]: 2,
  [ErrorCode.FINAL_STATE]: 2,
  [ErrorCode.GUARD_REJECTED]: 2,
  [ErrorCode.MAX_STATES_REACHED]: 3,
  [ErrorCode.MAX_TRANSITIONS_REACHED]: 4,
  [ErrorCode.INTEGRITY_CHECK_FAILED]: 7,
  [ErrorCode.STATE_LOCKED]: 8,
  [ErrorCode.STATE_VERSION_MISMATCH]: 9,
}

/** A code from {@link ErrorCode}. */
export type PolyCallErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode]

/** Options of the {@link PolyCallError} constructor. */
export interface PolyCallErrorOptions {
  /** The underlying error or abort reason. */
  cause?: unknown
  /** The C library's numeric code, where one exists (for example `polycall_sm_status_t`). */
  errno?: number | undefined
}

/**
 * The error polycall throws and rejects with.
 *
 * @example
 * ```ts
 * try {
 *   decoder.push(chunk)
 * } catch (err) {
 *   if (isPolyCallError(err) && err.code === 'ERR_POLYCALL_CHECKSUM_MISMATCH') socket.destroy()
 * }
 * ```
 */
export class PolyCallError extends Error {
  /** Stable code: one of {@link ErrorCode}, or an application code carried from a peer. */
  readonly code: string
  /** The C library's numeric code where one exists (for example 8 for `ERR_POLYCALL_STATE_LOCKED`). */
  declare readonly errno?: number

  /**
   * @param code - stable code, e.g. `ERR_POLYCALL_CHECKSUM_MISMATCH`
   * @param message - what was wrong, for people
   * @param options - `cause` and `errno` (by default the C library's value for `code`, if any)
   */
  constructor(code: string, message: string, options: PolyCallErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    const errno = options.errno ?? (Object.hasOwn(ERRNO, code) ? ERRNO[code] : undefined)
    if (errno !== undefined) this.errno = errno
  }

  /** Always `'PolyCallError'`, in every loaded copy of the package. */
  override get name(): string {
    return 'PolyCallError'
  }
}

/**
 * True when `value` is a polycall error (from any loaded copy of the package).
 *
 * @param value - anything caught
 * @returns whether it has the shape of a {@link PolyCallError}
 * @example
 * ```ts
 * if (isPolyCallError(err)) console.log(err.code)
 * ```
 */
export function isPolyCallError(value: unknown): value is PolyCallError {
  return (
    value instanceof Error && value.name === 'PolyCallError' && typeof (value as { code?: unknown }).code === 'string'
  )
}

/** @internal Builds an INVALID_ARGUMENT error. */
export function invalidArgument(message: string): PolyCallError {
  return new PolyCallError(ErrorCode.INVALID_ARGUMENT, message)
}
