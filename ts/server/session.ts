/**
 * The server's per-connection and per-request state, and the contract between the server core
 * (accepting, dispatching through middleware and routes, deadlines, limits, shutdown) and a
 * wire protocol adapter (v1 in ts/server/v1.ts, PCR1 in ts/pcr1/server-protocol.ts).
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import type { RouteInfo, Handler } from './router.js'
import type { TraceInfo } from '../core/trace.js'
import type { CommandExt } from '../protocol/msgpack-scalar.js'
import type { PolyCallError } from '../core/errors.js'
import type { Expiring } from '../core/deadlines.js'
import { now, tickNow } from '../core/abort.js'
import { SequenceTable } from '../core/sequence-table.js'
import type { Connection, ConnectionHooks } from '../network/connection.js'
import type { Wire, WireFrame } from '../network/wire.js'
import type { PeerInfo, RequestContext } from './context.js'
import type { ServerLimits, ServerOptions, ServerStats } from './options.js'
import type { ResolvedServerSecure } from '../secure/options.js'

/** One request being served. */
export class ServerRequest implements RequestContext, Expiring {
  result: unknown = undefined
  done = false
  trace: TraceInfo | undefined = undefined
  idempotencyKey: string | undefined = undefined
  /** It carries an idempotency key (its handler's outcome is recorded). */
  keyed = false
  /** Its middleware and handler have started. */
  running = false
  /** The caller gave up (or the connection went): no reply is sent. */
  cancelled = false
  deadlineBucket = -1
  deadlineSlot = 0
  readonly started = tickNow()
  #controller: AbortController | undefined
  #reason: PolyCallError | undefined
  #state: Record<string, unknown> | undefined

  constructor(
    readonly session: ServerSession,
    readonly command: string,
    readonly method: string,
    readonly path: string,
    readonly params: Record<string, string>,
    readonly query: Record<string, string>,
    /** Replaced by the validator's output on schema routes. */
    public data: unknown,
    readonly principal: unknown,
    /** Milliseconds the caller allowed, or Infinity. */
    readonly timeout: number,
    readonly sequence: number,
    readonly route: RouteInfo | undefined,
    readonly handler: Handler | undefined,
  ) {}

  /** The connection's peer. */
  get peer(): PeerInfo {
    return this.session.peer
  }

  /** When the caller stops waiting, in `Date.now()` milliseconds (computed on first read). */
  get deadline(): number {
    return this.timeout === Infinity ? Infinity : performance.timeOrigin + this.started + this.timeout
  }

  // Most handlers never look at the signal: the AbortController is made on first access.
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController()
      if (this.#reason) this.#controller.abort(this.#reason)
    }
    return this.#controller.signal
  }

  get state(): Record<string, unknown> {
    return (this.#state ??= {})
  }

  abort(reason: PolyCallError): void {
    if (this.#reason) return
    this.#reason = reason
    this.#controller?.abort(reason)
  }
}

/** Where a session sends its connection's events (one object per server). */
export interface SessionEvents {
  frame(s: ServerSession, f: WireFrame): void
  decodeError(s: ServerSession, e: PolyCallError): void
  end(s: ServerSession): void
  close(s: ServerSession, e: PolyCallError | undefined): void
  stalled(s: ServerSession, reason: 'stall' | 'frame'): void
  flushed(s: ServerSession): void
}

/** One connection on the server; it is also the connection's hooks object. */
export class ServerSession implements ConnectionHooks {
  readonly inflight = new SequenceTable<ServerRequest>()
  /** Set right after construction (the connection needs the session as its hooks). */
  conn!: Connection
  principal: unknown = undefined
  authenticated = false
  authFailures = 0
  authPending = false
  peerEnded = false
  handshakeTimer: NodeJS.Timeout | undefined
  /** Closes a requireAuth connection that has not authenticated in time. */
  authTimer: NodeJS.Timeout | undefined
  /** Idle timeout in force (0 until the session is established, or when disabled). */
  idleTimeout = 0
  /** Protocol-specific state (PCR1 keeps its reply order here). */
  extra: unknown = undefined
  #peer: PeerInfo | undefined
  constructor(readonly events: SessionEvents) {}

  /**
   * The peer, read from the socket the first time it is needed: an idle connection nobody asks
   * about carries no copy of its address. The server reads it at once when something listens
   * for `connect` or `disconnect`, and for TLS connections.
   */
  get peer(): PeerInfo {
    const socket = this.conn.socket
    return (this.#peer ??= {
      remoteAddress: socket.remoteAddress,
      remotePort: socket.remotePort,
      tls: 'encrypted' in socket,
      certificate: undefined,
      legacy: this.conn.legacy,
    })
  }

  /** Brings `peer.legacy` in line with the connection once the handshake settled it. */
  settleLegacy(): void {
    if (this.#peer) this.#peer.legacy = this.conn.legacy
  }

  frame(f: WireFrame): void {
    this.events.frame(this, f)
  }
  decodeError(e: PolyCallError): void {
    this.events.decodeError(this, e)
  }
  end(): void {
    this.events.end(this)
  }
  close(e: PolyCallError | undefined): void {
    this.events.close(this, e)
  }
  stalled(reason: 'stall' | 'frame'): void {
    this.events.stalled(this, reason)
  }
  flushed(): void {
    this.events.flushed(this)
  }
  /** The idle sweep: close a quiet connection with nothing in flight. */
  tick(): void {
    // Timers run before the poll phase: after a stall of the event loop a request may already
    // wait in the socket. Decide after the poll phase has read it (setImmediate), not before.
    if (this.#quiet()) setImmediate(endIfQuiet, this)
  }

  /** @internal Nothing in flight and nothing received for the idle timeout. */
  quiet(): boolean {
    return this.#quiet()
  }

  #quiet(): boolean {
    return this.inflight.size === 0 && !this.conn.closed && now() - this.conn.lastReceived >= this.idleTimeout
  }
}

function endIfQuiet(s: ServerSession): void {
  if (s.quiet()) s.conn.end()
}

/** What the server core offers a protocol adapter. */
export interface ServerHost {
  readonly options: ServerOptions & ServerLimits
  /** The checked `secure` option (v1 servers), or undefined. */
  readonly secure: ResolvedServerSecure<PeerInfo> | undefined
  readonly closing: boolean
  /** Capability bits this server offers. */
  readonly capabilities: number
  /** Runs a request through middleware and routes; the adapter's `respond` gets the outcome. */
  dispatch(s: ServerSession, sequence: number, command: string, data: unknown, timeout: number | undefined, ext?: CommandExt): void
  /** The caller gave up on `sequence`: abort its handler, send nothing. */
  cancel(s: ServerSession, sequence: number): void
  /** A connection-level failure: the adapter's notice, then close. */
  fail(s: ServerSession, err: PolyCallError, sequence?: number): void
  /** Starts the idle timer once a session is established. */
  established(s: ServerSession): void
  /** The session authenticated (`true`) or a refused AUTH dropped it back (`false`). */
  authenticated(s: ServerSession, ok: boolean): void
  routes(): RouteInfo[]
  stats(): ServerStats
  close(): Promise<void>
  report(error: unknown): void
}

/** A wire protocol on the server side. */
export interface ServerProtocol {
  readonly wire: Wire
  /** Whether a new connection waits for a handshake (v1) or is ready at once (PCR1). */
  readonly handshake: boolean
  /** A complete frame from the peer. */
  frame(host: ServerHost, s: ServerSession, f: WireFrame): void
  /** A dispatched request finished: send its reply (`failure` set when it failed). */
  respond(host: ServerHost, s: ServerSession, req: ServerRequest, failure: PolyCallError | undefined): void
  /** Refuses one request before dispatch (busy, shutting down, malformed). */
  refuse(host: ServerHost, s: ServerSession, sequence: number, err: PolyCallError): void
  /** Tells the peer about a connection-level failure (the server closes next). */
  notice(host: ServerHost, s: ServerSession, err: PolyCallError, sequence: number): void
  /** The bytes that refuse a connection before any session exists (connection limit, shutdown). */
  refusal(err: PolyCallError): Buffer
}
