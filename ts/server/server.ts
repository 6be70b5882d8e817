/**
 * PolyCallServer: accepts connections over TCP or TLS, runs the session machine of each
 * (PROTOCOL.md §6), answers the handshake (§4), authenticates, and dispatches COMMAND frames
 * through middleware and the router. Every reply echoes its request's sequence (§5).
 * @packageDocumentation
 */
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net'
import { createServer as createTlsServer, type TLSSocket, type TlsOptions } from 'node:tls'
import { type CallOptions, checkSignal, checkTimeout, now, unrefTimer } from '../core/abort.js'
import { channels } from '../core/diagnostics.js'
import { TypedEmitter } from '../core/emitter.js'
import { ErrorCode, PolyCallError, invalidArgument, isPolyCallError } from '../core/errors.js'
import { LatencyHistogram, type LatencySummary } from '../core/stats.js'
import { Router, type Handler, type MethodHandlers, type RouteInfo, type RouteOptions } from '../client/router.js'
import { Connection } from '../network/connection.js'
import { encodeFrame, type Frame } from '../protocol/codec.js'
import { MAX_PAYLOAD, MessageType } from '../protocol/constants.js'
import { buildHandshake, parseHandshake } from '../protocol/handshake.js'
import {
  Capability,
  SUPPORTED_CAPABILITIES,
  decodeCancel,
  decodeCredentials,
  jsonCodec,
  msgpackCodec,
} from '../protocol/payload.js'
import { SessionState } from '../state/session.js'
import { compose, type Middleware, type PeerInfo, type RequestContext } from './context.js'

/** Verifies credentials; returns the principal, throws to refuse. */
export type Authenticator = (credentials: unknown, peer: PeerInfo) => unknown | Promise<unknown>

/** Options of {@link PolyCallServer}. */
export interface ServerOptions {
  /** Wire protocol. @defaultValue 'v1' */
  protocol?: 'v1' | undefined
  /**
   * Checks AUTH credentials (the JSON the client sent) and returns the principal handlers see as
   * `ctx.principal`. Throwing refuses with `ERR_POLYCALL_UNAUTHENTICATED`; credentials are never
   * logged, echoed or published.
   */
  authenticate?: Authenticator | undefined
  /**
   * Refuse COMMAND until the connection authenticated (an accepted mTLS client certificate
   * counts). Without it, COMMAND is served once the handshake is done (go-polycall clients never
   * authenticate). @defaultValue false
   */
  requireAuth?: boolean | undefined
  /** Serve TLS: node:tls options (`key`, `cert`, `ca`, `requestCert` for mutual TLS, ...). */
  tls?: TlsOptions | undefined
  /** Connections beyond this get `ERR_POLYCALL_BUSY` and are closed. @defaultValue 10000 */
  maxConnections?: number | undefined
  /** Largest request payload; larger frames fail the connection. @defaultValue 1048576 */
  maxPayload?: number | undefined
  /**
   * Requests in flight per connection. At the limit the server stops reading from that
   * connection until handlers finish (TCP backpressure); requests already read beyond it get
   * `ERR_POLYCALL_BUSY`. @defaultValue 256
   */
  maxInFlight?: number | undefined
  /** Close connections that have not completed the handshake in time. @defaultValue 10000 */
  handshakeTimeout?: number | undefined
  /** Close connections with no request in flight and no frame received for this long; 0 disables. @defaultValue 300000 */
  idleTimeout?: number | undefined
  /** Heartbeat period towards peers that negotiated heartbeats; 0 disables. @defaultValue 30000 */
  heartbeatInterval?: number | undefined
  /** Deadline for requests whose caller sent none. @defaultValue none */
  requestTimeout?: number | undefined
  /** Called with errors that peers only see as `ERR_POLYCALL_INTERNAL` (handler bugs, encode failures). */
  onError?: ((error: unknown, ctx?: RequestContext) => void) | undefined
}

/** What {@link PolyCallServer.stats} returns. */
export interface ServerStats {
  connections: { current: number; total: number; rejected: number }
  requests: { total: number; inFlight: number; succeeded: number; failed: number; cancelled: number; timedOut: number }
  latency: LatencySummary
  bytesIn: number
  bytesOut: number
}

/** Lifecycle events of {@link PolyCallServer}. */
export interface ServerEvents {
  connect: [peer: PeerInfo]
  disconnect: [peer: PeerInfo, error: PolyCallError | undefined]
  close: []
}

/** Options of {@link PolyCallServer.close}. */
export interface ServerCloseOptions extends CallOptions {}

interface Limits {
  maxConnections: number
  maxPayload: number
  maxInFlight: number
  handshakeTimeout: number
  idleTimeout: number
  heartbeatInterval: number
}

const AUTH_ATTEMPTS = 3
const BUSY_NOTICE = `${ErrorCode.BUSY}: server is at its connection limit`

class ServerRequest implements RequestContext {
  result: unknown = undefined
  done = false
  cancelled = false
  timer: NodeJS.Timeout | undefined = undefined
  readonly started = now()
  #controller: AbortController | undefined
  #reason: PolyCallError | undefined
  #state: Record<string, unknown> | undefined

  constructor(
    readonly command: string,
    readonly method: string,
    readonly path: string,
    readonly params: Record<string, string>,
    readonly query: Record<string, string>,
    readonly data: unknown,
    readonly principal: unknown,
    readonly deadline: number,
    readonly sequence: number,
    readonly route: RouteInfo | undefined,
    readonly peer: PeerInfo,
    readonly handler: Handler | undefined,
  ) {}

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

class Session {
  readonly inflight = new Map<number, ServerRequest>()
  principal: unknown = undefined
  authenticated = false
  authFailures = 0
  authPending = false
  peerEnded = false
  handshakeTimer: NodeJS.Timeout | undefined
  idleTimer: NodeJS.Timeout | undefined
  constructor(
    readonly conn: Connection,
    readonly peer: PeerInfo,
  ) {}
}

function certificateOf(socket: Socket): PeerInfo['certificate'] {
  const tlsSocket = socket as TLSSocket
  if (typeof tlsSocket.getPeerCertificate !== 'function' || !tlsSocket.authorized) return undefined
  const cert = tlsSocket.getPeerCertificate()
  if (!cert || Object.keys(cert).length === 0) return undefined
  return {
    subject: { ...(cert.subject as unknown as Record<string, string>) },
    issuer: { ...(cert.issuer as unknown as Record<string, string>) },
    fingerprint256: cert.fingerprint256,
    validTo: cert.valid_to,
  }
}

function checkLimit(value: unknown, name: string, fallback: number, min = 0): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) throw invalidArgument(`${name} must be an integer ≥ ${min}`)
  return value
}

/**
 * A PolyCall server.
 *
 * @example
 * ```ts
 * const server = new PolyCallServer({ requireAuth: true, authenticate: ({ username, password }) => check(username, password) })
 * server.use(async (ctx, next) => { const t = Date.now(); await next(); log(ctx.command, Date.now() - t) })
 * server.route('/users/:id', async (ctx) => ({ id: ctx.params.id }))
 * const { port } = await server.listen(0, '127.0.0.1')
 * // ...
 * await server.close()
 * ```
 */
export class PolyCallServer extends TypedEmitter<ServerEvents> {
  /** The router commands are dispatched through. */
  readonly router = new Router()
  readonly #options: ServerOptions & Limits
  readonly #middleware: Middleware[] = []
  #chain: ((ctx: RequestContext) => Promise<void>) | undefined
  readonly #net: NetServer
  readonly #sessions = new Set<Session>()
  #listening: Promise<AddressInfo> | undefined
  #closing = false
  #destroyed = false
  #closePromise: Promise<void> | undefined
  #drained: (() => void) | undefined
  readonly #latency = new LatencyHistogram()
  readonly #counters = { connections: 0, rejected: 0, requests: 0, succeeded: 0, failed: 0, cancelled: 0, timedOut: 0, bytesIn: 0, bytesOut: 0 }

  /**
   * @param options - authentication, TLS and limits
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad option
   */
  constructor(options: ServerOptions = {}) {
    super()
    if (options.protocol !== undefined && options.protocol !== 'v1') throw invalidArgument(`unsupported protocol ${String(options.protocol)}`)
    if (options.authenticate !== undefined && typeof options.authenticate !== 'function') throw invalidArgument('authenticate must be a function')
    if (options.requireAuth && !options.authenticate && !options.tls?.requestCert) {
      throw invalidArgument('requireAuth needs an authenticate function or TLS client certificates (tls.requestCert)')
    }
    this.#options = {
      ...options,
      maxConnections: checkLimit(options.maxConnections, 'maxConnections', 10_000, 1),
      maxPayload: checkLimit(options.maxPayload, 'maxPayload', MAX_PAYLOAD),
      maxInFlight: checkLimit(options.maxInFlight, 'maxInFlight', 256, 1),
      handshakeTimeout: checkLimit(options.handshakeTimeout, 'handshakeTimeout', 10_000, 1),
      idleTimeout: checkLimit(options.idleTimeout, 'idleTimeout', 300_000),
      heartbeatInterval: checkLimit(options.heartbeatInterval, 'heartbeatInterval', 30_000),
    }
    if (this.#options.maxPayload > MAX_PAYLOAD) throw invalidArgument(`maxPayload must be at most ${MAX_PAYLOAD}`)
    checkTimeout(options.requestTimeout, 'requestTimeout')
    const onSocket = (socket: Socket) => this.#accept(socket)
    if (options.tls) {
      const server = createTlsServer({ ...options.tls, allowHalfOpen: true } as TlsOptions, onSocket)
      // A failed TLS handshake never reaches 'secureConnection'; the socket is already being closed.
      server.on('tlsClientError', (error) => this.#report(error))
      this.#net = server
    } else {
      this.#net = createNetServer({ allowHalfOpen: true }, onSocket)
    }
    this.#net.on('error', (error) => this.#report(error))
  }

  /**
   * Adds Koa-style middleware, run in order around every request.
   *
   * @param middleware - `(ctx, next) => ...`
   * @returns this server
   * @example
   * ```ts
   * server.use(async (ctx, next) => { if (!ctx.principal) throw new PolyCallError('ERR_APP_FORBIDDEN', 'no'); await next() })
   * ```
   */
  use(middleware: Middleware): this {
    if (typeof middleware !== 'function') throw invalidArgument('middleware must be a function')
    this.#middleware.push(middleware)
    this.#chain = undefined
    return this
  }

  /**
   * Registers a route (see {@link Router.route}).
   *
   * @param path - `/users/:id`, `inventory.get`, ...
   * @param handler - a handler or `{ GET, POST, ... }`
   * @param options - summary and idempotency
   * @returns this server
   */
  route(path: string, handler: Handler | MethodHandlers, options?: RouteOptions): this {
    this.router.route(path, handler, options)
    return this
  }

  /**
   * Starts listening.
   *
   * @param port - TCP port; 0 picks a free one
   * @param host - interface to bind @defaultValue '127.0.0.1'
   * @returns the bound address
   * @throws `ERR_POLYCALL_LISTEN_FAILED` (address in use, ...) or `ERR_POLYCALL_CLOSED`
   */
  listen(port = 0, host = '127.0.0.1'): Promise<AddressInfo> {
    if (this.#closing) return Promise.reject(new PolyCallError(ErrorCode.CLOSED, 'the server is closed'))
    this.#listening ??= new Promise<AddressInfo>((resolve, reject) => {
      const onError = (error: Error) => {
        this.#listening = undefined
        reject(new PolyCallError(ErrorCode.LISTEN_FAILED, `cannot listen on ${host}:${port}: ${error.message}`, { cause: error }))
      }
      this.#net.once('error', onError)
      this.#net.listen(port, host, () => {
        this.#net.off('error', onError)
        resolve(this.#net.address() as AddressInfo)
      })
    })
    return this.#listening
  }

  /** The bound address, or undefined before `listen()` resolves. */
  address(): AddressInfo | undefined {
    const a = this.#net.address()
    return a && typeof a === 'object' ? a : undefined
  }

  /** True once close() or destroy() was called. */
  get closed(): boolean {
    return this.#closing
  }

  /** True once destroy() was called. */
  get destroyed(): boolean {
    return this.#destroyed
  }

  /**
   * Graceful shutdown: stops accepting, refuses new requests with `ERR_POLYCALL_UNAVAILABLE`,
   * lets requests in flight finish, then closes every connection. With a `timeout` or `signal`,
   * whatever is still open when it fires is destroyed. Idempotent: every call returns the same
   * promise.
   *
   * @param options - bound the graceful phase
   * @returns resolves when every connection and the listener are closed
   */
  close(options: ServerCloseOptions = {}): Promise<void> {
    const signal = checkSignal(options.signal)
    const timeout = checkTimeout(options.timeout)
    if (this.#closePromise) return this.#closePromise
    this.#closing = true
    this.#closePromise = new Promise<void>((resolve) => {
      let pending = 2
      const done = () => {
        if (--pending === 0) {
          this.emit('close')
          resolve()
        }
      }
      if (this.#net.listening) this.#net.close(() => done())
      else done()
      const force = () => this.destroy(new PolyCallError(ErrorCode.UNAVAILABLE, 'the server closed before the request finished'))
      const timer = timeout === undefined ? undefined : unrefTimer(force, timeout)
      signal?.addEventListener('abort', force, { once: true })
      this.#drained = () => {
        if (timer) clearTimeout(timer)
        signal?.removeEventListener('abort', force)
        done()
      }
      for (const s of this.#sessions) if (s.inflight.size === 0) s.conn.end()
      this.#checkDrained()
    })
    return this.#closePromise
  }

  /**
   * Immediate shutdown: destroys every connection and aborts every handler's `ctx.signal`.
   * Idempotent.
   *
   * @param reason - the abort reason handlers see @defaultValue `ERR_POLYCALL_UNAVAILABLE`
   */
  destroy(reason?: PolyCallError): void {
    if (this.#destroyed) return
    this.#destroyed = true
    const err = reason ?? new PolyCallError(ErrorCode.UNAVAILABLE, 'the server was destroyed')
    for (const s of this.#sessions) {
      for (const req of s.inflight.values()) req.abort(err)
      s.conn.destroy(err)
    }
    void this.close()
  }

  /** `await using server = new PolyCallServer()` closes it gracefully. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /** Counters, requests in flight and latency percentiles (ms) since the server was created. */
  stats(): ServerStats {
    let inFlight = 0
    let bytesIn = this.#counters.bytesIn
    let bytesOut = this.#counters.bytesOut
    for (const s of this.#sessions) {
      inFlight += s.inflight.size
      bytesIn += s.conn.bytesIn
      bytesOut += s.conn.bytesOut
    }
    const c = this.#counters
    return {
      connections: { current: this.#sessions.size, total: c.connections, rejected: c.rejected },
      requests: { total: c.requests, inFlight, succeeded: c.succeeded, failed: c.failed, cancelled: c.cancelled, timedOut: c.timedOut },
      latency: this.#latency.summary(),
      bytesIn,
      bytesOut,
    }
  }

  #report(error: unknown, ctx?: RequestContext): void {
    if (channels.serverError.hasSubscribers) channels.serverError.publish({ server: this, error })
    try {
      this.#options.onError?.(error, ctx)
    } catch {
      // an observer's failure must not take the server down
    }
  }

  #accept(socket: Socket): void {
    if (this.#closing || this.#sessions.size >= this.#options.maxConnections) {
      this.#counters.rejected++
      socket.on('error', () => {})
      // No handshake yet, so the peer's conventions are unknown: a text ERROR (sequence 0) is
      // what every reference understands.
      socket.end(jsonErrorFrame(this.#closing ? `${ErrorCode.UNAVAILABLE}: server is shutting down` : BUSY_NOTICE))
      unrefTimer(() => socket.destroy(), 1000)
      return
    }
    const peer: PeerInfo = {
      remoteAddress: socket.remoteAddress,
      remotePort: socket.remotePort,
      tls: 'encrypted' in socket,
      certificate: certificateOf(socket),
      legacy: true,
    }
    let session!: Session
    const conn = new Connection(
      socket,
      'server',
      {
        frame: (f) => this.#frame(session, f),
        decodeError: (e) => this.#fail(session, e, 0),
        end: () => {
          session.peerEnded = true
          if (session.inflight.size === 0) conn.end()
        },
        close: (e) => this.#closed(session, e),
      },
      { maxPayload: this.#options.maxPayload },
    )
    session = new Session(conn, peer)
    if (peer.certificate) {
      session.principal = { subject: peer.certificate.subject, fingerprint256: peer.certificate.fingerprint256 }
      session.authenticated = true
    }
    this.#sessions.add(session)
    this.#counters.connections++
    session.handshakeTimer = unrefTimer(() => {
      this.#fail(session, new PolyCallError(ErrorCode.PROTOCOL, `no handshake within ${this.#options.handshakeTimeout} ms`))
    }, this.#options.handshakeTimeout)
    if (channels.serverConnect.hasSubscribers) {
      channels.serverConnect.publish({ server: this, remoteAddress: peer.remoteAddress, remotePort: peer.remotePort, tls: peer.tls })
    }
    this.emit('connect', peer)
  }

  #frame(s: Session, f: Frame): void {
    if (s.idleTimer) s.idleTimer.refresh()
    switch (f.type) {
      case MessageType.Command:
        return this.#command(s, f)
      case MessageType.Heartbeat: {
        const cancelled = decodeCancel(f.payload)
        if (cancelled !== undefined) this.#cancel(s, cancelled)
        return
      }
      case MessageType.Handshake:
        return this.#handshake(s, f)
      case MessageType.Auth:
        return this.#auth(s, f)
      default:
        return this.#reply(s, f.sequence, undefined, notAllowed(s, f.type))
    }
  }

  #handshake(s: Session, f: Frame): void {
    const { conn } = s
    if (conn.session.state !== SessionState.Init) return this.#reply(s, f.sequence, undefined, notAllowed(s, f.type))
    let hello
    try {
      hello = parseHandshake(f.payload)
    } catch (e) {
      return this.#fail(s, e as PolyCallError, f.sequence)
    }
    const caps = hello.legacy ? 0 : hello.flags & SUPPORTED_CAPABILITIES
    conn.capabilities = caps
    conn.legacy = caps === 0
    conn.codec = caps & Capability.Msgpack ? msgpackCodec : jsonCodec
    s.peer.legacy = conn.legacy
    conn.session.to(SessionState.Handshake)
    conn.send(MessageType.Response, f.sequence, caps ? buildHandshake(caps, this.#options.maxInFlight) : buildHandshake(0))
    conn.session.to(SessionState.Auth)
    if (s.handshakeTimer) clearTimeout(s.handshakeTimer)
    s.handshakeTimer = undefined
    if (!this.#options.requireAuth || s.authenticated) conn.session.to(SessionState.Ready)
    if (caps & Capability.Heartbeat) conn.startHeartbeat(this.#options.heartbeatInterval)
    if (this.#options.idleTimeout > 0) {
      s.idleTimer = unrefTimer(() => this.#idle(s), this.#options.idleTimeout)
    }
  }

  #idle(s: Session): void {
    if (s.inflight.size === 0) s.conn.end()
    else s.idleTimer?.refresh()
  }

  #auth(s: Session, f: Frame): void {
    const { conn } = s
    if (!conn.session.accepts(MessageType.Auth)) return this.#reply(s, f.sequence, undefined, notAllowed(s, f.type))
    if (s.authPending) return this.#reply(s, f.sequence, undefined, new PolyCallError(ErrorCode.BUSY, 'an authentication is already in progress'))
    const credentials = decodeCredentials(f.payload)
    const verify = this.#options.authenticate
    s.authPending = true
    Promise.resolve()
      .then(() => (verify ? verify(credentials, s.peer) : s.principal))
      .then(
        (principal) => {
          s.authPending = false
          if (conn.closed) return
          s.principal = principal
          s.authenticated = true
          s.authFailures = 0
          if (conn.session.state === SessionState.Auth) conn.session.to(SessionState.Ready)
          conn.send(MessageType.Response, f.sequence, conn.codec.encodeValue({ authenticated: true }))
        },
        (e: unknown) => {
          s.authPending = false
          if (conn.closed) return
          const err =
            isPolyCallError(e) && e.code === ErrorCode.UNAUTHENTICATED
              ? e
              : new PolyCallError(ErrorCode.UNAUTHENTICATED, 'authentication failed', { cause: e })
          this.#reply(s, f.sequence, undefined, err)
          if (++s.authFailures >= AUTH_ATTEMPTS) conn.end()
        },
      )
  }

  #command(s: Session, f: Frame): void {
    const { conn } = s
    const seq = f.sequence
    if (!conn.session.accepts(MessageType.Command)) {
      const err =
        conn.session.state === SessionState.Auth
          ? new PolyCallError(ErrorCode.UNAUTHENTICATED, 'authenticate before sending commands')
          : notAllowed(s, f.type)
      return this.#reply(s, seq, undefined, err)
    }
    if (this.#closing) return this.#reply(s, seq, undefined, new PolyCallError(ErrorCode.UNAVAILABLE, 'the server is shutting down'))
    if (s.inflight.size >= this.#options.maxInFlight) {
      return this.#reply(s, seq, undefined, new PolyCallError(ErrorCode.BUSY, `more than ${this.#options.maxInFlight} requests in flight`))
    }
    if (s.inflight.has(seq)) {
      return this.#reply(s, seq, undefined, new PolyCallError(ErrorCode.BAD_REQUEST, `sequence ${seq} is already in flight`))
    }
    let cmd
    try {
      cmd = conn.codec.decodeCommand(f.payload)
    } catch (e) {
      return this.#reply(s, seq, undefined, e as PolyCallError)
    }
    const match = this.router.find(cmd.command)
    const timeout = cmd.timeout ?? this.#options.requestTimeout
    const req = new ServerRequest(
      cmd.command,
      match?.method ?? 'GET',
      match?.path ?? cmd.command,
      match?.params ?? {},
      match?.query ?? {},
      cmd.data,
      s.principal,
      timeout === undefined ? Infinity : Date.now() + timeout,
      seq,
      match?.route,
      s.peer,
      match?.handler,
    )
    s.inflight.set(seq, req)
    this.#counters.requests++
    if (s.inflight.size >= this.#options.maxInFlight) conn.pause('dispatch')
    if (timeout !== undefined) req.timer = unrefTimer(() => this.#expire(s, req), timeout)
    if (channels.serverRequestStart.hasSubscribers) {
      channels.serverRequestStart.publish({ server: this, command: req.command, sequence: seq, remoteAddress: s.peer.remoteAddress })
    }
    this.#chain ??= compose(this.#middleware, runHandler)
    this.#chain(req).then(
      () => this.#finish(s, req, undefined),
      (e: unknown) => this.#finish(s, req, e),
    )
  }

  #finish(s: Session, req: ServerRequest, error: unknown): void {
    if (req.done) return
    req.done = true
    if (req.timer) clearTimeout(req.timer)
    if (s.inflight.get(req.sequence) === req) s.inflight.delete(req.sequence)
    const { conn } = s
    let failure: PolyCallError | undefined
    if (error !== undefined) failure = this.#toWire(error, req)
    if (!req.cancelled && !conn.closed) {
      if (failure === undefined) {
        let payload: Buffer | undefined
        try {
          payload = conn.codec.encodeValue(req.result)
        } catch (e) {
          failure = this.#toWire(e, req)
        }
        if (payload && payload.length > MAX_PAYLOAD) {
          failure = new PolyCallError(ErrorCode.PAYLOAD_TOO_LARGE, `the response of ${payload.length} bytes exceeds the ${MAX_PAYLOAD}-byte limit`)
        } else if (payload) conn.send(MessageType.Response, req.sequence, payload)
      }
      if (failure !== undefined) this.#reply(s, req.sequence, req, failure)
    }
    if (failure === undefined && !req.cancelled) this.#counters.succeeded++
    else if (!req.cancelled) this.#counters.failed++
    const duration = now() - req.started
    this.#latency.record(duration)
    if (channels.serverRequestEnd.hasSubscribers) {
      channels.serverRequestEnd.publish({ server: this, command: req.command, sequence: req.sequence, durationMs: duration, error: failure })
    }
    this.#settled(s)
  }

  /** After a request leaves the in-flight set: resume reading, finish a graceful close. */
  #settled(s: Session): void {
    const { conn } = s
    if (s.inflight.size <= this.#options.maxInFlight >>> 1) conn.resume('dispatch')
    if (s.inflight.size === 0 && (this.#closing || s.peerEnded)) conn.end()
  }

  /** Maps a thrown value to what the peer sees; unexpected errors are reported, not leaked. */
  #toWire(error: unknown, req: ServerRequest): PolyCallError {
    if (isPolyCallError(error) && error.code !== ErrorCode.INTERNAL) return error
    this.#report(error, req)
    return new PolyCallError(ErrorCode.INTERNAL, 'internal error')
  }

  #expire(s: Session, req: ServerRequest): void {
    if (req.done) return
    const err = new PolyCallError(ErrorCode.DEADLINE_EXCEEDED, `the request's deadline passed after ${Math.round(now() - req.started)} ms`)
    req.abort(err)
    this.#counters.timedOut++
    this.#finish(s, req, err)
  }

  #cancel(s: Session, sequence: number): void {
    const req = s.inflight.get(sequence)
    if (!req || req.done) return
    req.cancelled = true
    req.abort(new PolyCallError(ErrorCode.CANCELLED, 'the caller cancelled the request'))
    this.#counters.cancelled++
    this.#finish(s, req, undefined)
  }

  #reply(s: Session, sequence: number, _req: ServerRequest | undefined, err: PolyCallError): void {
    const { conn } = s
    if (conn.closed) return
    conn.send(MessageType.Error, sequence, conn.codec.encodeError(err.code, err.message))
  }

  /** A connection-level failure: answer with ERROR when possible, then close. */
  #fail(s: Session, err: PolyCallError, sequence = 0): void {
    const { conn } = s
    if (conn.closed) return
    this.#reply(s, sequence, undefined, err)
    if (conn.session.state !== SessionState.Error && conn.session.state !== SessionState.Closed) conn.session.to(SessionState.Error)
    for (const req of s.inflight.values()) {
      req.cancelled = true
      req.abort(new PolyCallError(ErrorCode.CONNECTION_LOST, 'the connection failed', { cause: err }))
    }
    conn.end()
    unrefTimer(() => conn.destroy(), 2000)
  }

  #closed(s: Session, error: PolyCallError | undefined): void {
    if (s.handshakeTimer) clearTimeout(s.handshakeTimer)
    if (s.idleTimer) clearTimeout(s.idleTimer)
    if (!s.conn.session.closed) s.conn.session.to(SessionState.Closed)
    const lost = new PolyCallError(ErrorCode.CONNECTION_LOST, 'the connection closed', { cause: error })
    for (const req of s.inflight.values()) {
      req.cancelled = true
      req.abort(lost)
      this.#finish(s, req, undefined)
    }
    this.#counters.bytesIn += s.conn.bytesIn
    this.#counters.bytesOut += s.conn.bytesOut
    this.#sessions.delete(s)
    this.emit('disconnect', s.peer, error)
    this.#checkDrained()
  }

  #checkDrained(): void {
    if (this.#closing && this.#sessions.size === 0 && this.#drained) {
      const drained = this.#drained
      this.#drained = undefined
      drained()
    }
  }
}

async function runHandler(ctx: RequestContext): Promise<void> {
  const req = ctx as ServerRequest
  if (!req.handler) throw new PolyCallError(ErrorCode.NOT_FOUND, `no route for ${req.method} ${req.path}`)
  ctx.result = await req.handler(ctx)
}

function notAllowed(s: Session, type: MessageType): PolyCallError {
  return new PolyCallError(
    ErrorCode.PROTOCOL,
    `${MessageType[type]?.toUpperCase() ?? type} is not allowed in session state ${SessionState[s.conn.session.state]?.toUpperCase()}`,
  )
}

function jsonErrorFrame(text: string): Buffer {
  return encodeFrame({ type: MessageType.Error, sequence: 0, payload: Buffer.from(text) })
}
