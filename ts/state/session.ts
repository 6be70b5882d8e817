/**
 * The protocol session machine of docs/protocol.md §6: INIT → HANDSHAKE → AUTH → READY → ERROR → CLOSED,
 * with the table of frame types each state accepts, per role. The network layer drives one per
 * connection.
 *
 * Besides the C table (INIT→HANDSHAKE, HANDSHAKE→AUTH, AUTH→READY, READY→ERROR|CLOSED,
 * ERROR→CLOSED), a connection may fail (→ ERROR) or close (→ CLOSED) from any state before CLOSED:
 * a handshake can time out and a peer can send garbage before it is ready.
 *
 * A secure session of the Noise XX pattern takes three handshake messages, the third in a second
 * client HANDSHAKE: a server that answered the first with XX's second message calls
 * {@link SessionMachine.expectSecondHandshake}, and HANDSHAKE is accepted once more in the
 * HANDSHAKE state.
 */
import { ErrorCode, PolyCallError, invalidArgument } from '../core/errors.js'
import { native } from '../native.js'
import type { MessageType } from '../protocol/constants.js'

/** Session states with the C library's enumeration values. */
export enum SessionState {
  /** Connected, nothing exchanged yet. */
  Init = 0,
  /** The handshake is under way. */
  Handshake = 1,
  /** Handshake done; authentication may follow. */
  Auth = 2,
  /** Requests may flow. */
  Ready = 3,
  /** The connection failed; only closing is left. */
  Error = 4,
  /** Closed: terminal. */
  Closed = 5,
}

/** Which side of the connection a session machine tracks. */
export type SessionRole = 'client' | 'server'

// The tables live in the Rust core (polycall_core::state::session) and are copied once here,
// so the per-frame check `accepts()` is a mask test in JS instead of a call into the addon.
// Layout: 6 edge masks (1 << state), then 6 server and 6 client accepted-frame masks
// (1 << message type), each indexed by state.
const TABLES = native.sessionTables()
const HANDSHAKE = 1
const EDGES: readonly number[] = TABLES.slice(0, 6)
// Received frame types each state accepts, indexed by SessionState.
const ACCEPTS: Record<SessionRole, readonly number[]> = {
  server: TABLES.slice(6, 12),
  client: TABLES.slice(12, 18),
}

/**
 * One connection's session state: which state it is in, which edges it may take, and which
 * received frame types it accepts. `accepts()` and the observers are table lookups in JS (the
 * tables come from the Rust core once, at load), cheap enough for every frame.
 *
 * @example
 * ```ts
 * const session = new SessionMachine('server')
 * session.accepts(MessageType.Command) // false until READY
 * session.to(SessionState.Handshake)
 * session.to(SessionState.Auth)
 * session.to(SessionState.Ready)
 * session.accepts(MessageType.Command) // true
 * ```
 */
export class SessionMachine {
  #state = SessionState.Init
  /** A second client HANDSHAKE (XX's third message) is due. */
  #secondHandshake = false
  /** The side this machine tracks. */
  readonly role: SessionRole

  /**
   * @param role - `'client'` or `'server'`
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for another role
   */
  constructor(role: SessionRole) {
    if (role !== 'client' && role !== 'server') throw invalidArgument(`session role ${String(role)} is not 'client' or 'server'`)
    this.role = role
  }

  /** The current state. */
  get state(): SessionState {
    return this.#state
  }

  /**
   * Moves to `next` along an allowed edge: the C table, plus ERROR and CLOSED from any state
   * before CLOSED.
   *
   * @param next - the state to move to
   * @throws `ERR_POLYCALL_INVALID_TRANSITION` (errno 2) when the edge does not exist; the state
   *   is unchanged
   */
  to(next: SessionState): void {
    if (!(EDGES[this.#state]! & (1 << next))) {
      throw new PolyCallError(
        ErrorCode.INVALID_TRANSITION,
        `session cannot move from ${SessionState[this.#state]} to ${SessionState[next]}`,
        { errno: 2 },
      )
    }
    this.#state = next
    this.#secondHandshake = false
  }

  /**
   * Server, in the HANDSHAKE state: the client's next HANDSHAKE (the Noise XX pattern's third
   * message) is accepted, once, until the state moves on.
   *
   * @throws `ERR_POLYCALL_INVALID_TRANSITION` (errno 2) outside the HANDSHAKE state or on a client
   */
  expectSecondHandshake(): void {
    if (this.role !== 'server' || this.#state !== SessionState.Handshake) {
      throw new PolyCallError(ErrorCode.INVALID_TRANSITION, 'a second HANDSHAKE is only expected by a server in the HANDSHAKE state', {
        errno: 2,
      })
    }
    this.#secondHandshake = true
  }

  /**
   * Whether a received frame of `type` is acceptable in the current state. A server accepts
   * COMMAND once READY and HEARTBEAT in every state but CLOSED (docs/protocol.md §6).
   *
   * @param type - the received frame's message type
   * @returns true when the frame may be processed; otherwise answer it with ERROR
   */
  accepts(type: MessageType): boolean {
    return (ACCEPTS[this.role][this.#state]! & (1 << type)) !== 0 || (this.#secondHandshake && type === HANDSHAKE)
  }

  /** HANDSHAKE ≤ state < ERROR (the C library's *connected*). */
  get connected(): boolean {
    return this.#state >= SessionState.Handshake && this.#state < SessionState.Error
  }

  /** state = READY. */
  get ready(): boolean {
    return this.#state === SessionState.Ready
  }

  /** state = ERROR. */
  get failed(): boolean {
    return this.#state === SessionState.Error
  }

  /** state = CLOSED. */
  get closed(): boolean {
    return this.#state === SessionState.Closed
  }
}
