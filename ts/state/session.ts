/**
 * The protocol session machine of PROTOCOL.md §6: INIT → HANDSHAKE → AUTH → READY → ERROR → CLOSED,
 * with the table of frame types each state accepts, per role. The network layer drives one per
 * connection.
 *
 * Besides the C table (INIT→HANDSHAKE, HANDSHAKE→AUTH, AUTH→READY, READY→ERROR|CLOSED,
 * ERROR→CLOSED), a connection may fail (→ ERROR) or close (→ CLOSED) from any state before CLOSED:
 * a handshake can time out and a peer can send garbage before it is ready.
 */
import { PolyCallError } from '../core/errors.js'
import { MessageType } from '../protocol/constants.js'

/** Session states with the C library's enumeration values. */
export enum SessionState {
  Init = 0,
  Handshake = 1,
  Auth = 2,
  Ready = 3,
  Error = 4,
  Closed = 5,
}

/** Which side of the connection a session machine tracks. */
export type SessionRole = 'client' | 'server'

const bit = (...types: MessageType[]) => types.reduce((m, t) => m | (1 << t), 0)

// Received frame types each state accepts, indexed by SessionState.
const ACCEPTS: Record<SessionRole, readonly number[]> = {
  server: [
    bit(MessageType.Handshake, MessageType.Heartbeat), // INIT
    bit(MessageType.Heartbeat), // HANDSHAKE (reply in progress)
    bit(MessageType.Auth, MessageType.Heartbeat), // AUTH
    bit(MessageType.Auth, MessageType.Command, MessageType.Heartbeat), // READY
    bit(MessageType.Heartbeat), // ERROR
    0, // CLOSED
  ],
  client: [
    bit(MessageType.Heartbeat), // INIT
    bit(MessageType.Handshake, MessageType.Response, MessageType.Error, MessageType.Heartbeat), // HANDSHAKE
    bit(MessageType.Auth, MessageType.Response, MessageType.Error, MessageType.Heartbeat), // AUTH
    bit(MessageType.Response, MessageType.Error, MessageType.Heartbeat), // READY
    bit(MessageType.Heartbeat), // ERROR
    0, // CLOSED
  ],
}

const EDGES: readonly number[] = [
  bit(SessionState.Handshake as number, SessionState.Error as number, SessionState.Closed as number), // INIT
  bit(SessionState.Auth as number, SessionState.Error as number, SessionState.Closed as number), // HANDSHAKE
  bit(SessionState.Ready as number, SessionState.Error as number, SessionState.Closed as number), // AUTH
  bit(SessionState.Error as number, SessionState.Closed as number), // READY
  bit(SessionState.Closed as number), // ERROR
  0, // CLOSED
]

/**
 * One connection's session state.
 *
 * @example
 * ```ts
 * const session = new SessionMachine('server')
 * session.accepts(MessageType.Command) // false until READY
 * ```
 */
export class SessionMachine {
  #state = SessionState.Init
  /** The side this machine tracks. */
  readonly role: SessionRole

  /** @param role - `'client'` or `'server'` */
  constructor(role: SessionRole) {
    this.role = role
  }

  /** The current state. */
  get state(): SessionState {
    return this.#state
  }

  /**
   * Moves to `next` along an allowed edge.
   *
   * @throws `ERR_POLYCALL_INVALID_TRANSITION` (errno 2) when the edge does not exist
   */
  to(next: SessionState): void {
    if (!(EDGES[this.#state]! & (1 << next))) {
      throw new PolyCallError(
        'ERR_POLYCALL_INVALID_TRANSITION',
        `session cannot move from ${SessionState[this.#state]} to ${SessionState[next]}`,
        { errno: 2 },
      )
    }
    this.#state = next
  }

  /** Whether a received frame of `type` is acceptable in the current state. */
  accepts(type: MessageType): boolean {
    return (ACCEPTS[this.role][this.#state]! & (1 << type)) !== 0
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
