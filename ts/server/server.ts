/**
 * PolyCallServer: accepts connections over TCP or TLS, runs a session per connection, and
 * dispatches requests through middleware and the router. The wire protocol (v1 with its
 * handshake and AUTH, or PCR1) is an adapter (ts/server/v1.ts, ts/pcr1/server-protocol.ts);
 * limits, deadlines, cancellation, shutdown and statistics are shared.
 * @packageDocumentation
 */
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net'
import { createServer as createTlsServer, type TLSSocket, type TlsOptions } from 'node:tls'
import { checkSignal, checkTimeout, now, tickNow, unrefTimer } from '../core/abort.js'
import { Deadlines } from '../core/deadlines.js'
import { channels } from '../core/diagnostics.js'
import { TypedEmitter } from '../core/emitter.js'
import { ErrorCode, PolyCallError, invalidArgument, isPolyCallError } from '../core/errors.js'
import { checkOptionKeys } from '../core/options.js'
import { LatencyHistogram } from '../core/stats.js'
import { Router, type Handler, type MethodHandlers, type RouteInfo, type RouteOptions } from './router.js'
import { Connection, type ConnectionOptions } from '../network/connection.js'
import { every, stop } from '../network/ticker.js'
import { pcr1ServerProtocol } from '../pcr1/server-protocol.js'
import { MAX_PAYLOAD } from '../protocol/constants.js'
import { SessionState } from '../state/session.js'
import { parseTraceContext } from '../core/trace.js'
import { Capability, SUPPORTED_CAPABILITIES, type CommandExt } from '../protocol/payload.js'
import { Idempotency, type KeyedRequest, type KeyedResult } from './idempotency.js'
import { compose, type Middleware, type PeerInfo, type RequestContext } from './context.js'
import { SERVER_OPTION_KEYS, type ServerCloseOptions, type ServerEvents, type ServerLimits, type ServerOptions, type ServerStats } from './options.js'
import { ServerRequest, ServerSession, type ServerHost, type ServerProtocol, type SessionEvents } from './session.js'
import { v1ServerProtocol } from './v1.js'
import { isSchemaRoute, schemaHandler, type ContractHandlers, type SchemaRoute } from './schema-route.js'
import type { Contract } from '../core/contract.js'
import type { StandardSchemaV1 } from '../core/schema.js'
import { SecureChannel } from '../secure/channel.js'
import { resolveServerSecure, type ResolvedServerSecure } from '../secure/options.js'

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

/** How long a connection failed for a protocol error may take to flush its notice and close. */
const FAIL_LINGER_MS = 2000
/** How long a refused connection may take to read its refusal before it is destroyed. */
const REFUSAL_LINGER_MS = 1000

/** `address:port` of a TCP peer: the same for a raw socket and the TLS socket over it. */
function peerKey(socket: Socket): string | undefined {
  return socket.remoteAddress === undefined ? undefined : `${socket.remoteAddress}:${socket.remotePort}`
}

/** @internal Hands a connected socket to a server as if it had accepted it (in-memory links). */
export const acceptSocket = Symbol('polycall.server.acceptSocket')

/** A describe hint naming the validator that checks a side, when no hint was given. */
function schemaHint(schema: StandardSchemaV1 | undefined): string | undefined {
  return schema ? JSON.stringify({ validator: schema['~standard'].vendor }) : undefined
}

/** What a handler that throws `undefined` (or `null`) reports: it is a bug, not a success. */
function thrownUndefined(): Error {
  return new Error('a handler threw or rejected with no error value')
}

async function runHandler(ctx: RequestContext): Promise<void> {
  const req = ctx as ServerRequest
  if (!req.handler) throw new PolyCallError(ErrorCode.NOT_FOUND, `no route for ${req.method} ${req.path}`)
  ctx.result = await req.handler(ctx)
}

/** What a {@link KeyedRun} needs of its server. */
interface KeyedHost {
  execute(req: ServerRequest): Promise<unknown>
  finish(req: ServerRequest, error: unknown): void
  report(error: unknown, req: ServerRequest): void
}

/** One request with an idempotency key, as the idempotency coordinator drives it. */
class KeyedRun implements KeyedRequest {
  readonly key: string
  constructor(
    readonly host: KeyedHost,
    readonly ctx: ServerRequest,
    readonly timeoutMs: number | undefined,
  ) {
    ctx.keyed = true
    this.key = ctx.idempotencyKey!
  }
  done(): boolean {
    return this.ctx.done || this.ctx.cancelled
  }
  execute(): Promise<unknown> {
    return this.host.execute(this.ctx)
  }
  finish(result: KeyedResult): void {
    if (result.ok) this.ctx.result = result.value
    this.host.finish(this.ctx, result.ok ? undefined : result.error)
  }
  report(error: unknown): void {
    this.host.report(error, this.ctx)
  }
}

/**
 * A PolyCall server.
 *
 * @example
 * ```ts
 * const server = new PolyCallServer({
 *   requireAuth: true,
 *   // The principal, or null to refuse: only a truthy result authenticates.
 *   authenticate: async ({ username, password }) => ((await check(username, password)) ? { user: username } : null),
 * })
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
  /** The wire protocol this server speaks. */
  readonly protocol: 'v1' | 'pcr1'
  readonly #proto: ServerProtocol
  readonly #options: ServerOptions & ServerLimits
  readonly #secure: ResolvedServerSecure<PeerInfo> | undefined
  readonly #middleware: Middleware[] = []
  #chain: ((ctx: RequestContext) => Promise<void>) | undefined
  readonly #net: NetServer
  readonly #sessions = new Set<ServerSession>()
  /** TLS connections that have not finished their TLS handshake, by `address:port`. */
  readonly #handshaking = new Map<string, Socket>()
  /** Connections refused at accept, reading their refusal. */
  readonly #refused = new Set<Socket>()
  /** The options every connection of this server shares. */
  readonly #connection: ConnectionOptions
  #listening: Promise<AddressInfo> | undefined
  #closing = false
  #destroyed = false
  #closePromise: Promise<void> | undefined
  #drained: (() => void) | undefined
  readonly #deadlines = new Deadlines<ServerRequest>((req) => this.#expire(req))
  readonly #latency = new LatencyHistogram()
  readonly #counters = { connections: 0, rejected: 0, requests: 0, succeeded: 0, failed: 0, cancelled: 0, timedOut: 0, bytesIn: 0, bytesOut: 0 }
  readonly #host: ServerHost
  /** Idempotency records (`idempotency: false` turns them off). */
  readonly #idem: Idempotency | undefined
  /** Keyed runs whose connection went: they run on so their outcome is recorded for the retry. */
  readonly #detached = new Set<ServerRequest>()
  /** What keyed runs call back into (one object per server). */
  readonly #keyedHost: KeyedHost = {
    execute: (req) => this.#execute(req),
    finish: (req, error) => this.#finish(req, error),
    report: (error, req) => this.#report(error, req),
  }
  /** Period of the shared idle sweep. */
  get #idlePeriod(): number {
    return Math.max(10, Math.min(Math.ceil(this.#options.idleTimeout / 4), 30_000))
  }
  /** What every session forwards its connection's events to. */
  readonly #events: SessionEvents = {
    frame: (s, f) => this.#proto.frame(this.#host, s, f),
    decodeError: (s, e) => this.#fail(s, e, 0),
    end: (s) => {
      s.peerEnded = true
      if (s.inflight.size === 0) s.conn.end()
    },
    close: (s, e) => this.#closed(s, e),
    stalled: (s, reason) =>
      this.#fail(
        s,
        new PolyCallError(
          ErrorCode.PROTOCOL,
          reason === 'frame'
            ? `a frame was not complete ${this.#options.frameTimeout} ms after its first byte`
            : `no progress on a partial frame for ${this.#options.stallTimeout} ms`,
        ),
        0,
      ),
    flushed: (s) => {
      if (s.inflight.size <= this.#options.maxInFlight >>> 1) s.conn.resume('dispatch')
    },
  }

  /**
   * @param options - protocol, authentication, TLS and limits
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad option
   */
  constructor(options: ServerOptions = {}) {
    super()
    checkOptionKeys(options, SERVER_OPTION_KEYS, 'ServerOptions')
    const protocol = options.protocol ?? 'v1'
    if (protocol !== 'v1' && protocol !== 'pcr1') throw invalidArgument(`unsupported protocol ${String(protocol)}`)
    this.protocol = protocol
    this.#proto = protocol === 'pcr1' ? pcr1ServerProtocol : v1ServerProtocol
    if (options.authenticate !== undefined && typeof options.authenticate !== 'function') throw invalidArgument('authenticate must be a function')
    // A client certificate verifies someone only when the TLS layer refuses the ones it cannot verify.
    const enforcedCertificates = options.tls?.requestCert === true && options.tls.rejectUnauthorized !== false
    const keyedClients = options.secure?.clients !== undefined
    if (options.requireAuth && !options.authenticate && !enforcedCertificates && !keyedClients) {
      throw invalidArgument(
        'requireAuth needs a way to verify peers: an authenticate function, TLS client certificates ' +
          'the server enforces (tls.requestCert without rejectUnauthorized: false), or secure.clients',
      )
    }
    if (protocol === 'pcr1' && (options.requireAuth || options.authenticate)) {
      throw invalidArgument('PCR1 has no authentication step; use TLS client certificates or controlToken')
    }
    if (protocol === 'pcr1' && options.secure !== undefined) throw invalidArgument('PCR1 has no secure sessions; use TLS')
    if (options.controlToken !== undefined && typeof options.controlToken !== 'string') throw invalidArgument('controlToken must be a string')
    this.#options = {
      ...options,
      maxConnections: checkLimit(options.maxConnections, 'maxConnections', 10_000, 1),
      maxPayload: checkLimit(options.maxPayload, 'maxPayload', MAX_PAYLOAD),
      maxInFlight: checkLimit(options.maxInFlight, 'maxInFlight', 256, 1),
      handshakeTimeout: checkLimit(options.handshakeTimeout, 'handshakeTimeout', 10_000, 1),
      authTimeout: checkLimit(options.authTimeout, 'authTimeout', 10_000),
      idleTimeout: checkLimit(options.idleTimeout, 'idleTimeout', 300_000),
      heartbeatInterval: checkLimit(options.heartbeatInterval, 'heartbeatInterval', 30_000),
      stallTimeout: checkLimit(options.stallTimeout, 'stallTimeout', 10_000),
      frameTimeout: checkLimit(options.frameTimeout, 'frameTimeout', 30_000),
      maxDeadline: checkLimit(options.maxDeadline, 'maxDeadline', 300_000, 1),
      maxWriteBuffer: checkLimit(options.maxWriteBuffer, 'maxWriteBuffer', 8 * 1024 * 1024, 1),
      drainTimeout: checkLimit(options.drainTimeout, 'drainTimeout', 30_000),
    }
    if (this.#options.maxPayload > MAX_PAYLOAD) throw invalidArgument(`maxPayload must be at most ${MAX_PAYLOAD}`)
    this.#secure = options.secure === undefined ? undefined : resolveServerSecure(options.secure, this.#options.maxPayload)
    checkTimeout(options.requestTimeout, 'requestTimeout')
    const idem = options.idempotency
    if (idem !== undefined && idem !== false && (idem === null || typeof idem !== 'object')) throw invalidArgument('idempotency must be an object or false')
    this.#idem = idem === false ? undefined : new Idempotency(idem ?? {})
    const capabilities = this.#idem ? SUPPORTED_CAPABILITIES : SUPPORTED_CAPABILITIES & ~Capability.IdempotencyKeys
    const limits = this.#options
    this.#connection = {
      maxPayload: limits.maxPayload,
      wire: this.#proto.wire,
      stallTimeout: limits.stallTimeout,
      frameTimeout: limits.frameTimeout,
      maxWriteBuffer: limits.maxWriteBuffer,
      drainTimeout: limits.drainTimeout,
      lingerTimeout: limits.drainTimeout,
    }
    const self = this
    this.#host = {
      get options() {
        return self.#options
      },
      get closing() {
        return self.#closing
      },
      get secure() {
        return self.#secure
      },
      capabilities,
      dispatch: (s, sequence, command, data, timeout, ext) => this.#dispatch(s, sequence, command, data, timeout, ext),
      cancel: (s, sequence) => this.#cancel(s, sequence),
      fail: (s, err, sequence) => this.#fail(s, err, sequence),
      established: (s) => this.#established(s),
      authenticated: (s, ok) => this.#authenticated(s, ok),
      routes: () => this.router.routes(),
      stats: () => this.stats(),
      close: () => this.close(),
      report: (error) => this.#report(error),
    }
    const onSocket = (socket: Socket) => this.#accept(socket)
    if (options.tls) {
      // Half-open only once the handshake is done (see #accept): a peer that goes away during
      // the handshake must close its socket here too.
      const server = createTlsServer(
        { handshakeTimeout: this.#options.handshakeTimeout, ...options.tls, allowHalfOpen: false } as TlsOptions,
        onSocket,
      )
      // A socket whose TLS handshake failed or timed out never reaches 'secureConnection', and
      // nothing else would close it: it goes now.
      server.on('tlsClientError', (error, socket) => {
        this.#report(error)
        socket.destroy()
      })
      server.on('connection', (raw: Socket) => this.#handshakeStarted(raw))
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
   * Registers a typed route: with `{ input, output, handler }` the data and the result are
   * validated by any Standard Schema validator (zod, valibot, arktype, ...), and the handler's
   * types follow from the schemas. Invalid data gets `ERR_POLYCALL_INVALID_INPUT` (`input.invalid`
   * on PCR1) before the handler runs; a result that fails `output` is reported and answered with
   * `ERR_POLYCALL_INTERNAL`.
   *
   * @typeParam I - the input schema
   * @typeParam O - the output schema
   * @param path - `/users/:id`, `users.get`, `inventory.get`, ...
   * @param route - `{ input, output, handler }` plus any {@link RouteOptions}
   * @returns this server
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a schema that is not a Standard Schema validator,
   *   `ERR_POLYCALL_DUPLICATE_ROUTE` for a path and method registered already
   * @example
   * ```ts
   * server.route('users.get', {
   *   input: z.object({ id: z.string() }),
   *   output: z.object({ id: z.string(), name: z.string() }),
   *   handler: async (ctx) => db.users.get(ctx.data.id), // ctx.data: { id: string }
   * })
   * ```
   */
  route<I extends StandardSchemaV1 | undefined = undefined, O extends StandardSchemaV1 | undefined = undefined>(
    path: string,
    route: SchemaRoute<I, O>,
  ): this
  /**
   * Registers a route (see {@link Router.route}). PCR1 servers address routes as
   * `service.operation`.
   *
   * @param path - `/users/:id`, `inventory.get`, ...
   * @param handler - one handler for every method, or `{ GET, POST, ... }`
   * @param options - summary, idempotency, describe hints
   * @returns this server
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad handler or an unknown method,
   *   `ERR_POLYCALL_DUPLICATE_ROUTE` for a path and method registered already
   * @example
   * ```ts
   * server.route('/users/:id', async (ctx) => db.users.find(ctx.params.id, { signal: ctx.signal }))
   * server.route('/orders', { GET: listOrders, POST: createOrder }, { summary: 'orders' })
   * ```
   */
  route(path: string, handler: Handler | MethodHandlers, options?: RouteOptions): this
  route(path: string, handler: Handler | MethodHandlers | SchemaRoute, options?: RouteOptions): this {
    if (isSchemaRoute(handler)) {
      const { input, output, handler: _h, ...rest } = handler
      const validating = schemaHandler(handler, (e, ctx) => this.#report(e, ctx))
      const hints = {
        inputHint: rest.inputHint ?? schemaHint(input),
        outputHint: rest.outputHint ?? schemaHint(output),
      }
      this.router.route(path, validating, { ...rest, ...hints })
      return this
    }
    this.router.route(path, handler, options)
    return this
  }

  /**
   * Implements every operation of a contract (see {@link defineContract}): one schema route per
   * operation, named by its key. A missing or mistyped handler is a compile error.
   *
   * @param contract - the shared contract
   * @param handlers - one handler per operation
   * @returns this server
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` when a handler is missing
   */
  implement<C extends Contract>(contract: C, handlers: ContractHandlers<C>): this {
    for (const [name, op] of Object.entries(contract)) {
      const handler = (handlers as Record<string, unknown>)[name]
      if (typeof handler !== 'function') throw invalidArgument(`no handler for contract operation ${name}`)
      this.route(name, {
        input: op.input,
        output: op.output,
        summary: op.summary,
        idempotent: op.idempotent,
        handler: handler as SchemaRoute['handler'],
      })
    }
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
      // A TLS handshake still in progress would only be refused: it goes now.
      for (const raw of this.#handshaking.values()) raw.destroy()
      for (const s of this.#sessions) if (s.inflight.size === 0) this.#drainEnd(s)
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
    for (const req of this.#detached) {
      req.abort(err)
      this.#finish(req, undefined)
    }
    for (const raw of this.#handshaking.values()) raw.destroy()
    for (const socket of this.#refused) socket.destroy()
    void this.close()
  }

  /** `await using server = new PolyCallServer()` closes it gracefully. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /** Counters, requests in flight and latency percentiles (ms) since the server was created. */
  stats(): ServerStats {
    let inFlight = this.#detached.size
    let bytesIn = this.#counters.bytesIn
    let bytesOut = this.#counters.bytesOut
    let bytesQueued = 0
    for (const s of this.#sessions) {
      inFlight += s.inflight.size
      bytesIn += s.conn.bytesIn
      bytesOut += s.conn.bytesOut
      bytesQueued += s.conn.pendingBytes
    }
    const c = this.#counters
    return {
      connections: { current: this.#sessions.size, total: c.connections, rejected: c.rejected },
      requests: { total: c.requests, inFlight, succeeded: c.succeeded, failed: c.failed, cancelled: c.cancelled, timedOut: c.timedOut },
      latency: this.#latency.summary(),
      bytesIn,
      bytesOut,
      bytesQueued,
    }
  }

  /** @internal */
  [acceptSocket](socket: Socket): void {
    this.#accept(socket)
  }

  #report(error: unknown, ctx?: RequestContext): void {
    if (channels.serverError.hasSubscribers) channels.serverError.publish({ server: this, error })
    try {
      const onError = this.#options.onError
      if (onError) onError(error, ctx)
      // A handler's bug must not go unseen: one line with its code and the command.
      else if (ctx) console.error(`polycall server: ${String((error as { code?: unknown })?.code ?? ErrorCode.INTERNAL)} from ${JSON.stringify(ctx.command)}: ${String((error as Error)?.stack ?? error).split('\n')[0]} (set onError to handle these)`)
    } catch {
      // an observer's failure must not take the server down
    }
  }

  /** A TLS server's raw connection, before its handshake: tracked, and bounded in number. */
  #handshakeStarted(raw: Socket): void {
    const key = peerKey(raw)
    if (this.#closing || key === undefined || this.#handshaking.size >= this.#options.maxConnections) {
      this.#counters.rejected++
      raw.destroy()
      return
    }
    this.#handshaking.set(key, raw)
    raw.once('close', () => {
      if (this.#handshaking.get(key) === raw) this.#handshaking.delete(key)
    })
  }

  #accept(socket: Socket): void {
    if (this.#options.tls) {
      const key = peerKey(socket)
      if (key !== undefined) this.#handshaking.delete(key)
      // Read when the peer's side ends, so setting it now keeps a half-closing peer's replies.
      socket.allowHalfOpen = true
    }
    if (this.#closing || this.#sessions.size >= this.#options.maxConnections) {
      this.#counters.rejected++
      socket.on('error', () => {})
      const err = this.#closing
        ? new PolyCallError(ErrorCode.UNAVAILABLE, 'server is shutting down')
        : new PolyCallError(ErrorCode.BUSY, 'server is at its connection limit')
      this.#refused.add(socket)
      socket.once('close', () => this.#refused.delete(socket))
      socket.end(this.#proto.refusal(err))
      unrefTimer(() => socket.destroy(), REFUSAL_LINGER_MS)
      return
    }
    // The session is the connection's hooks object: no closures per connection.
    const secure = this.#secure
    let channel: SecureChannel | undefined
    if (secure !== undefined) {
      try {
        channel = SecureChannel.responder({ identity: secure.identity, patterns: secure.patterns, ...secure.limits })
      } catch (error) {
        // The identity was destroyed after the server was made (or the OS gave no randomness for
        // the connection's ephemeral key, drawn here): nothing can be served securely.
        this.#counters.rejected++
        this.#report(error)
        socket.destroy()
        return
      }
    }
    const session = new ServerSession(this.#events)
    const conn = new Connection(socket, 'server', session, this.#connection)
    session.conn = conn
    if (channel !== undefined) conn.secure(channel)
    const tls = 'encrypted' in socket
    const watched = this.listenerCount('connect') > 0 || this.listenerCount('disconnect') > 0
    // Read the peer now where it is needed now or may be needed after the socket is gone.
    if (tls || watched || channels.serverConnect.hasSubscribers) {
      const peer = session.peer
      peer.certificate = tls ? certificateOf(socket) : undefined
      if (peer.certificate) {
        session.principal = { subject: peer.certificate.subject, fingerprint256: peer.certificate.fingerprint256 }
        session.authenticated = true
      }
    }
    this.#sessions.add(session)
    this.#counters.connections++
    if (this.#options.requireAuth && !session.authenticated) this.#awaitAuth(session)
    if (this.#proto.handshake) {
      session.handshakeTimer = unrefTimer(() => {
        this.#fail(session, new PolyCallError(ErrorCode.PROTOCOL, `no handshake within ${this.#options.handshakeTimeout} ms`))
      }, this.#options.handshakeTimeout)
    } else {
      conn.session.to(SessionState.Handshake)
      conn.session.to(SessionState.Auth)
      conn.session.to(SessionState.Ready)
      this.#established(session)
    }
    if (channels.serverConnect.hasSubscribers) {
      const peer = session.peer
      channels.serverConnect.publish({ server: this, remoteAddress: peer.remoteAddress, remotePort: peer.remotePort, tls: peer.tls })
    }
    if (watched) this.emit('connect', session.peer)
  }

  #established(s: ServerSession): void {
    if (s.handshakeTimer) clearTimeout(s.handshakeTimer)
    s.handshakeTimer = undefined
    const idle = this.#options.idleTimeout
    if (idle > 0 && s.idleTimeout === 0) {
      // A shared sweep, a few times per idle period, instead of a timer per connection.
      s.idleTimeout = idle
      every(this.#idlePeriod, s)
    }
  }

  /** Closes `s` unless it authenticates within `authTimeout` (requireAuth servers). */
  #awaitAuth(s: ServerSession): void {
    const ms = this.#options.authTimeout
    if (ms <= 0 || s.authTimer) return
    s.authTimer = unrefTimer(() => {
      s.authTimer = undefined
      if (s.authenticated) return
      this.#fail(s, new PolyCallError(ErrorCode.UNAUTHENTICATED, `not authenticated within ${ms} ms`))
    }, ms)
  }

  #authenticated(s: ServerSession, ok: boolean): void {
    if (ok) {
      if (s.authTimer) clearTimeout(s.authTimer)
      s.authTimer = undefined
    } else if (this.#options.requireAuth) this.#awaitAuth(s)
  }

  #dispatch(s: ServerSession, sequence: number, command: string, data: unknown, timeout: number | undefined, ext?: CommandExt): void {
    const { conn } = s
    const limits = this.#options
    if (this.#closing) return this.#proto.refuse(this.#host, s, sequence, new PolyCallError(ErrorCode.UNAVAILABLE, 'the server is shutting down'))
    if (s.inflight.size >= limits.maxInFlight) {
      return this.#proto.refuse(this.#host, s, sequence, new PolyCallError(ErrorCode.BUSY, `more than ${limits.maxInFlight} requests in flight`))
    }
    if (s.inflight.has(sequence)) {
      return this.#proto.refuse(this.#host, s, sequence, new PolyCallError(ErrorCode.BAD_REQUEST, `sequence ${sequence} is already in flight`))
    }
    const match = this.router.find(command)
    let deadlineMs = timeout ?? limits.requestTimeout
    // A peer's deadline decides how long the server holds the request: it is capped.
    if (deadlineMs !== undefined && deadlineMs > limits.maxDeadline) deadlineMs = limits.maxDeadline
    const req = new ServerRequest(
      s,
      command,
      match?.method ?? 'GET',
      match?.path ?? command,
      match?.params ?? {},
      match?.query ?? {},
      data,
      s.principal,
      deadlineMs ?? Infinity,
      sequence,
      match?.route,
      match?.handler,
    )
    s.inflight.set(sequence, req)
    this.#counters.requests++
    // Replies not yet written count as in flight: synchronous handlers are bounded too.
    if (s.inflight.size + conn.queuedFrames >= limits.maxInFlight) conn.pause('dispatch')
    if (deadlineMs !== undefined) this.#deadlines.add(req, req.started + deadlineMs)
    let keyed = false
    if (ext !== undefined) {
      // Only what this connection negotiated counts; a bad trace context is dropped, not fatal.
      const caps = conn.capabilities
      if (caps & Capability.TraceContext && ext.traceparent !== undefined) req.trace = parseTraceContext(ext.traceparent, ext.tracestate)
      if (caps & Capability.IdempotencyKeys && ext.key !== undefined && this.#idem) {
        keyed = true
        const k = ext.key
        req.idempotencyKey = (Buffer.isBuffer(k) ? k : Buffer.from(k.buffer, k.byteOffset, k.byteLength)).toString('hex')
      }
    }
    if (channels.serverRequestStart.hasSubscribers) {
      channels.serverRequestStart.publish({ server: this, command, sequence, remoteAddress: s.peer.remoteAddress, trace: req.trace, ctx: req })
    }
    if (keyed) return this.#idem!.handle(new KeyedRun(this.#keyedHost, req, deadlineMs))
    if (this.#middleware.length === 0) return this.#runDirect(req)
    this.#chain ??= compose(this.#middleware, runHandler)
    this.#chain(req).then(
      () => this.#finish(req, undefined),
      (e: unknown) => this.#finish(req, e ?? thrownUndefined()),
    )
  }

  /** Runs middleware and handler; resolves with the result, rejects with the error the peer sees. */
  #execute(req: ServerRequest): Promise<unknown> {
    req.running = true
    let run: Promise<unknown>
    if (this.#middleware.length === 0) {
      const handler = req.handler
      run = handler
        ? new Promise<unknown>((resolve) => resolve(handler(req)))
        : Promise.reject(new PolyCallError(ErrorCode.NOT_FOUND, `no route for ${req.method} ${req.path}`))
    } else {
      this.#chain ??= compose(this.#middleware, runHandler)
      run = this.#chain(req).then(() => req.result)
    }
    return run.catch((e: unknown) => {
      throw this.#toWire(e ?? thrownUndefined(), req)
    })
  }

  /** Without middleware a synchronous handler completes without a single promise. */
  #runDirect(req: ServerRequest): void {
    const handler = req.handler
    if (!handler) return this.#finish(req, new PolyCallError(ErrorCode.NOT_FOUND, `no route for ${req.method} ${req.path}`))
    let out: unknown
    try {
      out = handler(req)
    } catch (e) {
      return this.#finish(req, e ?? thrownUndefined())
    }
    if (out !== null && typeof out === 'object' && typeof (out as PromiseLike<unknown>).then === 'function') {
      ;(out as PromiseLike<unknown>).then(
        (value) => {
          req.result = value
          this.#finish(req, undefined)
        },
        (e: unknown) => this.#finish(req, e ?? thrownUndefined()),
      )
      return
    }
    req.result = out
    this.#finish(req, undefined)
  }

  #finish(req: ServerRequest, error: unknown): void {
    if (req.done) return
    req.done = true
    this.#deadlines.delete(req)
    if (this.#detached.delete(req)) this.#checkDrained()
    const s = req.session
    if (s.inflight.get(req.sequence) === req) s.inflight.delete(req.sequence)
    let failure: PolyCallError | undefined = error === undefined ? undefined : this.#toWire(error, req)
    if (!req.cancelled && !s.conn.closed) {
      try {
        this.#proto.respond(this.#host, s, req, failure)
      } catch (e) {
        // The result could not be encoded (or is over 1 MiB): the caller gets an error instead.
        failure = this.#toWire(e, req)
        this.#proto.respond(this.#host, s, req, failure)
      }
    }
    if (!req.cancelled) {
      if (failure === undefined) this.#counters.succeeded++
      else this.#counters.failed++
    }
    const duration = tickNow() - req.started
    this.#latency.record(duration)
    if (channels.serverRequestEnd.hasSubscribers) {
      channels.serverRequestEnd.publish({
        server: this,
        command: req.command,
        sequence: req.sequence,
        durationMs: duration,
        error: failure,
        trace: req.trace,
        ctx: req,
      })
    }
    // Resume reading at half the limit, finish a graceful close once the connection is quiet.
    if (s.inflight.size + s.conn.queuedFrames <= this.#options.maxInFlight >>> 1) s.conn.resume('dispatch')
    if (s.inflight.size === 0 && (this.#closing || s.peerEnded)) {
      if (this.#closing) this.#drainEnd(s)
      else s.conn.end()
    }
  }

  /**
   * Maps a thrown value to what the peer sees: a PolyCallError travels as thrown (its thrower
   * chose code and message); anything else is reported and sent as INTERNAL, without details.
   */
  #toWire(error: unknown, req: ServerRequest): PolyCallError {
    if (isPolyCallError(error)) return error
    this.#report(error, req)
    return new PolyCallError(ErrorCode.INTERNAL, 'internal error')
  }

  #expire(req: ServerRequest): void {
    if (req.done) return
    const err = new PolyCallError(ErrorCode.DEADLINE_EXCEEDED, `the request's deadline passed after ${Math.round(now() - req.started)} ms`)
    req.abort(err)
    this.#counters.timedOut++
    this.#finish(req, err)
  }

  #cancel(s: ServerSession, sequence: number): void {
    const req = s.inflight.get(sequence)
    if (!req || req.done) return
    req.cancelled = true
    req.abort(new PolyCallError(ErrorCode.CANCELLED, 'the caller cancelled the request'))
    this.#counters.cancelled++
    this.#finish(req, undefined)
  }

  /**
   * Ends a quiet connection of a draining server. A polycall peer first gets a connection-level
   * UNAVAILABLE notice: whatever it still waits for on this connection (a COMMAND on its way
   * while the drain ended the connection) never ran here, and may be sent elsewhere.
   */
  #drainEnd(s: ServerSession): void {
    if (this.protocol === 'v1' && !s.conn.legacy && s.conn.session.ready) {
      this.#proto.notice(this.#host, s, new PolyCallError(ErrorCode.UNAVAILABLE, 'the server is draining: nothing more runs on this connection'), 0)
    }
    s.conn.end()
  }

  /** A connection-level failure: tell the peer when possible, then close. */
  #fail(s: ServerSession, err: PolyCallError, sequence = 0): void {
    const { conn } = s
    if (conn.closed) return
    this.#proto.notice(this.#host, s, err, sequence)
    if (conn.session.state !== SessionState.Error && conn.session.state !== SessionState.Closed) conn.session.to(SessionState.Error)
    for (const req of s.inflight.values()) {
      req.cancelled = true
      // A keyed run goes on: its retry is coming for the outcome.
      if (!(req.keyed && req.running)) req.abort(new PolyCallError(ErrorCode.CONNECTION_LOST, 'the connection failed', { cause: err }))
    }
    conn.end(FAIL_LINGER_MS, err)
  }

  #closed(s: ServerSession, error: PolyCallError | undefined): void {
    if (s.handshakeTimer) clearTimeout(s.handshakeTimer)
    if (s.authTimer) clearTimeout(s.authTimer)
    if (s.idleTimeout > 0) stop(this.#idlePeriod, s)
    if (!s.conn.session.closed) s.conn.session.to(SessionState.Closed)
    const lost = new PolyCallError(ErrorCode.CONNECTION_LOST, 'the connection closed', { cause: error })
    for (const req of s.inflight.values()) {
      req.cancelled = true
      if (req.keyed && req.running && !req.done && !this.#destroyed) {
        // A keyed run goes on (within its deadline) so its outcome is recorded for the retry;
        // a graceful close waits for it.
        this.#detached.add(req)
        continue
      }
      req.abort(lost)
      this.#finish(req, undefined)
    }
    this.#counters.bytesIn += s.conn.bytesIn
    this.#counters.bytesOut += s.conn.bytesOut
    this.#sessions.delete(s)
    if (this.listenerCount('disconnect') > 0) this.emit('disconnect', s.peer, error)
    this.#checkDrained()
  }

  #checkDrained(): void {
    if (this.#closing && this.#sessions.size === 0 && this.#detached.size === 0 && this.#drained) {
      const drained = this.#drained
      this.#drained = undefined
      drained()
    }
  }
}
