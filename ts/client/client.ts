/**
 * PolyCallClient: one connection to a PolyCall server, many requests in flight on it,
 * correlated by sequence number (PROTOCOL.md §5), each bounded by a timeout and an AbortSignal,
 * with reconnection (exponential backoff with jitter) and retries of idempotent calls.
 * @packageDocumentation
 */
import { X509Certificate, createHash } from 'node:crypto'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions as TlsConnectionOptions, type TLSSocket } from 'node:tls'
import {
  type CallOptions,
  abortedError,
  bounded,
  checkSignal,
  checkTimeout,
  now,
  timeoutError,
  unrefTimer,
} from '../core/abort.js'
import { channels } from '../core/diagnostics.js'
import { TypedEmitter } from '../core/emitter.js'
import { ErrorCode, PolyCallError, invalidArgument, isPolyCallError } from '../core/errors.js'
import { LatencyHistogram, type LatencySummary } from '../core/stats.js'
import { Connection } from '../network/connection.js'
import type { Frame } from '../protocol/codec.js'
import { MAX_PAYLOAD, MessageType, ProtocolFlag } from '../protocol/constants.js'
import { buildHandshake, parseHandshake } from '../protocol/handshake.js'
import {
  Capability,
  SUPPORTED_CAPABILITIES,
  encodeCancel,
  encodeCredentials,
  jsonCodec,
  msgpackCodec,
} from '../protocol/payload.js'
import { SessionState } from '../state/session.js'

/** TLS options of the client: node:tls options plus certificate pinning. */
export interface ClientTlsOptions extends TlsConnectionOptions {
  /**
   * Accept only servers whose public key (SPKI, DER) hashes with SHA-256 to one of these base64
   * values (a `sha256/` prefix is allowed). Checked after normal certificate validation.
   */
  pin?: string | string[] | undefined
}

/** Reconnection policy: delay = min(initialDelay × multiplier^attempt, maxDelay) ± jitter. */
export interface ReconnectOptions {
  /** @defaultValue 1000 */
  initialDelay?: number | undefined
  /** @defaultValue 1.6 */
  multiplier?: number | undefined
  /** Fraction of the delay added or removed at random. @defaultValue 0.2 */
  jitter?: number | undefined
  /** @defaultValue 120000 */
  maxDelay?: number | undefined
  /** Attempts in a row before giving up (calls waiting get `ERR_POLYCALL_CONNECT_FAILED`). @defaultValue Infinity */
  maxAttempts?: number | undefined
}

/** Options of {@link PolyCallClient}. */
export interface ClientOptions {
  /** @defaultValue '127.0.0.1' */
  host?: string | undefined
  port: number
  /** Wire protocol. @defaultValue 'v1' */
  protocol?: 'v1' | undefined
  /** Connect with TLS; certificate validation is on unless `rejectUnauthorized: false`. */
  tls?: ClientTlsOptions | boolean | undefined
  /** Default per-request timeout in ms (`Infinity` for none). @defaultValue 5000 */
  timeout?: number | undefined
  /** Bound of one connection attempt, TCP + TLS + handshake + AUTH. @defaultValue 10000 */
  connectTimeout?: number | undefined
  /** Credentials sent as AUTH on every (re)connection. Set them with {@link PolyCallClient.authenticate}. */
  credentials?: unknown
  /** Reconnect after a lost connection; `false` disables. @defaultValue gRPC-like: 1 s × 1.6 ± 20%, at most 120 s */
  reconnect?: ReconnectOptions | boolean | undefined
  /** Requests written and awaiting a reply; more wait in a queue. @defaultValue 1024 */
  maxInFlight?: number | undefined
  /** Heartbeat period towards servers that negotiate it; 0 disables. @defaultValue 30000 */
  heartbeatInterval?: number | undefined
  /**
   * Speak the reference conventions even to a polycall server: no capability bits, JSON
   * payloads, one frame per write and one request at a time. @defaultValue false
   */
  legacy?: boolean | undefined
  /** @internal First sequence number of each connection (to exercise the 2^32 wrap). */
  sequenceStart?: number | undefined
}

/** Options of {@link PolyCallClient.request}. */
export interface RequestOptions extends CallOptions {
  /**
   * The request may run twice without harm: after a lost connection it is sent again (within its
   * deadline) instead of failing. @defaultValue false
   */
  idempotent?: boolean | undefined
}

/** What {@link PolyCallClient.stats} returns. */
export interface ClientStats {
  connected: boolean
  legacy: boolean
  capabilities: number
  reconnects: number
  requests: { total: number; inFlight: number; queued: number; succeeded: number; failed: number; timedOut: number; aborted: number; retried: number }
  latency: LatencySummary
}

/** Lifecycle events of {@link PolyCallClient}. */
export interface ClientEvents {
  connect: [info: { legacy: boolean; capabilities: number }]
  disconnect: [error: PolyCallError | undefined]
  reconnecting: [info: { attempt: number; delay: number; error: PolyCallError }]
  /** A RESPONSE or ERROR whose sequence matches no pending call (late, or unsolicited). */
  unsolicited: [frame: Frame]
}

interface Call {
  command: string
  data: unknown
  deadline: number
  idempotent: boolean
  resolve(value: unknown): void
  reject(error: PolyCallError): void
  sequence: number
  written: boolean
  settled: boolean
  started: number
  timer: NodeJS.Timeout | undefined
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
  site: { stack?: string }
}

const DEFAULT_TIMEOUT = 5000

function lostError(call: Call, cause?: unknown): PolyCallError {
  const err = new PolyCallError(
    ErrorCode.CONNECTION_LOST,
    call.written ? 'the connection was lost after the request was sent' : 'the connection was lost before the request was sent',
    { cause },
  ) as PolyCallError & { written: boolean }
  err.written = call.written
  return err
}

function spkiHash(socket: TLSSocket): string {
  const raw = socket.getPeerCertificate(true).raw
  const spki = new X509Certificate(raw).publicKey.export({ type: 'spki', format: 'der' })
  return createHash('sha256').update(spki).digest('base64')
}

/**
 * A PolyCall client.
 *
 * @example
 * ```ts
 * await using client = new PolyCallClient({ host: '127.0.0.1', port })
 * await client.connect()
 * await client.authenticate({ username: 'ada', password: 's3cret' })
 * const user = await client.request('/users/42', undefined, { timeout: 1000 })
 * ```
 */
export class PolyCallClient extends TypedEmitter<ClientEvents> {
  readonly host: string
  readonly port: number
  readonly #tls: ClientTlsOptions | undefined
  readonly #pins: Set<string> | undefined
  readonly #timeout: number | undefined
  readonly #connectTimeout: number
  readonly #reconnect: Required<{ [K in keyof ReconnectOptions]-?: number }> | undefined
  readonly #maxInFlight: number
  readonly #heartbeat: number
  readonly #legacyOnly: boolean
  readonly #sequenceStart: number | undefined
  #credentials: unknown
  #conn: Connection | undefined
  #connecting: Promise<Connection> | undefined
  readonly #pending = new Map<number, Call>()
  #waiting: Call[] = []
  readonly #control = new Map<number, (f: Frame) => void>()
  #attempt = 0
  #reconnectTimer: NodeJS.Timeout | undefined
  #closing = false
  #destroyed = false
  #closePromise: Promise<void> | undefined
  #fatal: PolyCallError | undefined
  readonly #latency = new LatencyHistogram()
  readonly #counters = { requests: 0, succeeded: 0, failed: 0, timedOut: 0, aborted: 0, retried: 0, reconnects: 0 }

  /**
   * @param options - address, TLS, timeouts, reconnection
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad option
   */
  constructor(options: ClientOptions) {
    super()
    if (!options || typeof options !== 'object') throw invalidArgument('options must be an object')
    if (options.protocol !== undefined && options.protocol !== 'v1') throw invalidArgument(`unsupported protocol ${String(options.protocol)}`)
    const port = options.port
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw invalidArgument('port must be an integer in 0..65535')
    this.host = options.host ?? '127.0.0.1'
    this.port = port
    this.#tls = options.tls === true ? {} : options.tls === false ? undefined : options.tls
    const pins = this.#tls?.pin
    this.#pins = pins === undefined ? undefined : new Set((Array.isArray(pins) ? pins : [pins]).map((p) => p.replace(/^sha256\//, '')))
    this.#timeout = options.timeout === undefined ? DEFAULT_TIMEOUT : checkTimeout(options.timeout)
    this.#connectTimeout = checkTimeout(options.connectTimeout, 'connectTimeout') ?? 10_000
    const r = options.reconnect ?? true
    this.#reconnect =
      r === false
        ? undefined
        : {
            initialDelay: (r === true ? undefined : r.initialDelay) ?? 1000,
            multiplier: (r === true ? undefined : r.multiplier) ?? 1.6,
            jitter: (r === true ? undefined : r.jitter) ?? 0.2,
            maxDelay: (r === true ? undefined : r.maxDelay) ?? 120_000,
            maxAttempts: (r === true ? undefined : r.maxAttempts) ?? Infinity,
          }
    this.#maxInFlight = options.maxInFlight ?? 1024
    if (!Number.isInteger(this.#maxInFlight) || this.#maxInFlight < 1) throw invalidArgument('maxInFlight must be an integer ≥ 1')
    this.#heartbeat = options.heartbeatInterval ?? 30_000
    this.#legacyOnly = options.legacy === true
    this.#sequenceStart = options.sequenceStart
    this.#credentials = options.credentials
  }

  /** True while a connection is established and ready for requests. */
  get connected(): boolean {
    return this.#conn !== undefined && this.#conn.session.ready
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
   * Connects (TCP or TLS), completes the handshake and, with credentials set, authenticates.
   * Resolves at once when already connected. With reconnection on, failed attempts are retried
   * with backoff until the timeout.
   *
   * @param options - bound: `timeout` (default `connectTimeout`) and `signal`
   * @throws `ERR_POLYCALL_CONNECT_FAILED`, `ERR_POLYCALL_UNAUTHENTICATED`, `ERR_POLYCALL_TLS_PIN_MISMATCH`,
   *   `ERR_POLYCALL_TIMEOUT`, `ERR_POLYCALL_ABORTED`, `ERR_POLYCALL_CLOSED`
   */
  async connect(options: CallOptions = {}): Promise<void> {
    if (this.#closing) throw new PolyCallError(ErrorCode.CLOSED, 'the client is closed')
    if (this.connected) return
    const timeout = checkTimeout(options.timeout) ?? this.#connectTimeout
    const signal = checkSignal(options.signal)
    const ready = new Promise<void>((resolve, reject) => {
      const onConnect = () => {
        this.off('connect', onConnect)
        this.#readyWaiters.delete(onFail)
        resolve()
      }
      const onFail = (e: PolyCallError) => {
        this.off('connect', onConnect)
        this.#readyWaiters.delete(onFail)
        reject(e)
      }
      this.on('connect', onConnect)
      this.#readyWaiters.add(onFail)
    })
    this.#ensureConnection()
    await bounded(ready, { timeout, signal }, 'connect')
  }

  readonly #readyWaiters = new Set<(e: PolyCallError) => void>()
  /** Requests in flight allowed on the current connection: ours, the server's, 1 for legacy peers. */
  #limit = 1

  /**
   * Authenticates with `credentials` (sent as JSON in an AUTH frame) and keeps them for
   * reconnections. They are never logged or published.
   *
   * @param credentials - e.g. `{ username, password }`
   * @param options - timeout and signal
   * @throws `ERR_POLYCALL_UNAUTHENTICATED` when the server refuses them
   */
  async authenticate(credentials: unknown, options: CallOptions = {}): Promise<void> {
    if (this.#closing) throw new PolyCallError(ErrorCode.CLOSED, 'the client is closed')
    this.#credentials = credentials
    if (!this.connected) {
      await this.connect(options)
      return
    }
    const conn = this.#conn!
    try {
      await bounded(this.#sendAuth(conn), { timeout: checkTimeout(options.timeout) ?? this.#connectTimeout, signal: checkSignal(options.signal) }, 'authenticate')
    } catch (e) {
      this.#credentials = undefined
      throw e
    }
  }

  /**
   * Sends a COMMAND and resolves with the handler's return value.
   *
   * @param command - `[METHOD ]path[?query]`, e.g. `'/users/42'`
   * @param data - the request data (msgpack for polycall servers, JSON for legacy ones)
   * @param options - `timeout` (default the client's), `signal`, `idempotent`
   * @returns the decoded RESPONSE payload
   * @throws the server's error code (`ERR_POLYCALL_NOT_FOUND`, an application code, ...),
   *   `ERR_POLYCALL_TIMEOUT`, `ERR_POLYCALL_ABORTED`, `ERR_POLYCALL_CONNECTION_LOST` (with
   *   `written`), `ERR_POLYCALL_CONNECT_FAILED`, `ERR_POLYCALL_CLOSED`
   * @example
   * ```ts
   * const out = await client.request('POST /orders', { sku: 'a1' }, { timeout: 2000, signal })
   * ```
   */
  request<T = unknown>(command: string, data?: unknown, options: RequestOptions = {}): Promise<T> {
    if (typeof command !== 'string' || command.length === 0) return Promise.reject(invalidArgument('command must be a non-empty string'))
    let signal: AbortSignal | undefined
    let timeout: number | undefined
    try {
      signal = checkSignal(options.signal)
      timeout = options.timeout === undefined ? this.#timeout : checkTimeout(options.timeout)
    } catch (e) {
      return Promise.reject(e)
    }
    if (this.#closing) return Promise.reject(new PolyCallError(ErrorCode.CLOSED, 'the client is closed'))
    if (signal?.aborted) return Promise.reject(abortedError(signal))
    const site: { stack?: string } = {}
    Error.captureStackTrace(site, this.request)
    return new Promise<T>((resolve, reject) => {
      const started = now()
      const call: Call = {
        command,
        data,
        deadline: timeout === undefined ? Infinity : started + timeout,
        idempotent: options.idempotent === true,
        resolve: resolve as (v: unknown) => void,
        reject,
        sequence: 0,
        written: false,
        settled: false,
        started,
        timer: undefined,
        signal,
        onAbort: undefined,
        site,
      }
      if (timeout !== undefined) {
        call.timer = unrefTimer(() => {
          this.#counters.timedOut++
          this.#cancel(call, timeoutError(timeout!, `request ${command}`))
        }, timeout)
      }
      if (signal) {
        call.onAbort = () => {
          this.#counters.aborted++
          this.#cancel(call, abortedError(signal!))
        }
        signal.addEventListener('abort', call.onAbort, { once: true })
      }
      this.#counters.requests++
      this.#waiting.push(call)
      if (channels.clientRequestStart.hasSubscribers) channels.clientRequestStart.publish({ client: this, command, sequence: 0 })
      this.#pump()
    })
  }

  /**
   * Graceful close: new requests get `ERR_POLYCALL_CLOSED`, requests already made finish (or
   * time out), then the connection closes. With `timeout`/`signal`, what is left then is
   * destroyed. Idempotent: every call returns the same promise.
   */
  close(options: CallOptions = {}): Promise<void> {
    const signal = checkSignal(options.signal)
    const timeout = checkTimeout(options.timeout)
    if (this.#closePromise) return this.#closePromise
    this.#closing = true
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer)
    this.#closePromise = new Promise<void>((resolve) => {
      const force = () => this.destroy(new PolyCallError(ErrorCode.CLOSED, 'the client closed before the request finished'))
      const timer = timeout === undefined ? undefined : unrefTimer(force, timeout)
      signal?.addEventListener('abort', force, { once: true })
      const finish = () => {
        if (timer) clearTimeout(timer)
        signal?.removeEventListener('abort', force)
        const conn = this.#conn
        if (!conn || conn.closed) return resolve()
        conn.socket.once('close', () => resolve())
        conn.end()
        unrefTimer(() => conn.destroy(), 2000)
      }
      this.#idle = () => {
        if (this.#pending.size === 0 && this.#waiting.length === 0) {
          this.#idle = undefined
          finish()
        }
      }
      if (!this.#conn && this.#waiting.length > 0) this.#ensureConnection()
      this.#idle()
    })
    return this.#closePromise
  }

  #idle: (() => void) | undefined

  /**
   * Immediate close: every pending and queued request rejects with `reason` (default
   * `ERR_POLYCALL_CLOSED`) and the socket is destroyed. Idempotent.
   */
  destroy(reason?: PolyCallError): void {
    if (this.#destroyed) return
    this.#destroyed = true
    this.#closing = true
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer)
    const err = reason ?? new PolyCallError(ErrorCode.CLOSED, 'the client was destroyed')
    for (const call of [...this.#pending.values(), ...this.#waiting]) this.#settle(call, err)
    this.#pending.clear()
    this.#waiting = []
    for (const w of this.#readyWaiters) w(err)
    this.#conn?.destroy(err)
    void this.close()
    this.#idle?.()
  }

  /** `await using client = ...` closes it gracefully. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /** Counters, requests in flight and queued, and latency percentiles (ms). */
  stats(): ClientStats {
    const c = this.#counters
    return {
      connected: this.connected,
      legacy: this.#conn?.legacy ?? false,
      capabilities: this.#conn?.capabilities ?? 0,
      reconnects: c.reconnects,
      requests: {
        total: c.requests,
        inFlight: this.#pending.size,
        queued: this.#waiting.length,
        succeeded: c.succeeded,
        failed: c.failed,
        timedOut: c.timedOut,
        aborted: c.aborted,
        retried: c.retried,
      },
      latency: this.#latency.summary(),
    }
  }

  // ---- requests -------------------------------------------------------------------------

  #pump(): void {
    const conn = this.#conn
    if (!conn || !conn.session.ready) {
      if (this.#waiting.length > 0) this.#ensureConnection()
      return
    }
    const limit = this.#limit
    while (this.#waiting.length > 0 && this.#pending.size < limit) {
      const call = this.#waiting.shift()!
      if (call.settled) continue
      const remaining = call.deadline - now()
      let payload: Buffer
      try {
        payload = conn.codec.encodeCommand(call.command, call.data, remaining === Infinity ? undefined : remaining)
      } catch (e) {
        this.#settle(call, new PolyCallError(ErrorCode.INVALID_ARGUMENT, `request data cannot be encoded: ${(e as Error).message}`, { cause: e }))
        continue
      }
      if (payload.length > MAX_PAYLOAD) {
        this.#settle(call, new PolyCallError(ErrorCode.PAYLOAD_TOO_LARGE, `request payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`))
        continue
      }
      call.sequence = conn.nextSequence((n) => this.#pending.has(n) || this.#control.has(n))
      call.written = true
      this.#pending.set(call.sequence, call)
      conn.send(MessageType.Command, call.sequence, payload)
    }
  }

  /** Timeout or abort of one call: forget it and tell the server, when it listens. */
  #cancel(call: Call, err: PolyCallError): void {
    if (call.settled) return
    if (call.written && this.#pending.get(call.sequence) === call) {
      this.#pending.delete(call.sequence)
      const conn = this.#conn
      if (conn && conn.capabilities & Capability.Cancel) conn.send(MessageType.Heartbeat, call.sequence, encodeCancel(call.sequence), ProtocolFlag.Urgent)
    } else {
      const i = this.#waiting.indexOf(call)
      if (i >= 0) this.#waiting.splice(i, 1)
    }
    this.#settle(call, err)
    this.#pump()
  }

  #settle(call: Call, err: PolyCallError | undefined, value?: unknown): void {
    if (call.settled) return
    call.settled = true
    if (call.timer) clearTimeout(call.timer)
    if (call.onAbort) call.signal!.removeEventListener('abort', call.onAbort)
    const duration = now() - call.started
    if (err) {
      if (err.code !== ErrorCode.TIMEOUT && err.code !== ErrorCode.ABORTED) this.#counters.failed++
      call.reject(err)
    } else {
      this.#counters.succeeded++
      this.#latency.record(duration)
      call.resolve(value)
    }
    if (channels.clientRequestEnd.hasSubscribers) {
      channels.clientRequestEnd.publish({ client: this, command: call.command, sequence: call.sequence, durationMs: duration, error: err })
    }
    this.#idle?.()
  }

  #reply(f: Frame): void {
    const call = this.#pending.get(f.sequence)
    if (!call) {
      const control = this.#control.get(f.sequence)
      if (control) return control(f)
      this.emit('unsolicited', f)
      if (f.sequence === 0 && f.type === MessageType.Error) {
        // A connection-level notice (decode failure, connection limit): the server closes next.
        const { code, message } = this.#conn!.codec.decodeError(f.payload)
        this.#fatal = new PolyCallError(code, message)
      }
      return
    }
    this.#pending.delete(f.sequence)
    const codec = this.#conn!.codec
    if (f.type === MessageType.Response) {
      let value: unknown
      try {
        value = codec.decodeValue(f.payload)
      } catch (e) {
        this.#settle(call, new PolyCallError(ErrorCode.PROTOCOL, 'the response payload could not be decoded', { cause: e }))
        this.#pump()
        return
      }
      this.#settle(call, undefined, value)
    } else {
      const { code, message, data } = codec.decodeError(f.payload)
      const err = new PolyCallError(code, message) as PolyCallError & { remote: boolean; data?: unknown }
      err.remote = true
      if (data !== undefined) err.data = data
      // Point the trace at the caller, as grpc-js does: the remote failure, then where it was requested.
      const callerFrames = call.site.stack?.split('\n').slice(1).join('\n')
      if (callerFrames) err.stack = `${err.name} [${code}]: ${message}\n${callerFrames}`
      this.#settle(call, err)
    }
    this.#pump()
  }

  // ---- connection ------------------------------------------------------------------------

  #ensureConnection(): void {
    if (this.#conn || this.#connecting || this.#reconnectTimer || this.#destroyed) return
    this.#connecting = this.#open()
    this.#connecting.then(
      (conn) => {
        this.#connecting = undefined
        this.#attempt = 0
        this.#conn = conn
        if (channels.clientConnect.hasSubscribers) {
          channels.clientConnect.publish({ client: this, host: this.host, port: this.port, legacy: conn.legacy, capabilities: conn.capabilities })
        }
        this.emit('connect', { legacy: conn.legacy, capabilities: conn.capabilities })
        this.#pump()
      },
      (e: unknown) => {
        this.#connecting = undefined
        const err = isPolyCallError(e) ? e : new PolyCallError(ErrorCode.CONNECT_FAILED, String(e), { cause: e })
        if (channels.clientError.hasSubscribers) channels.clientError.publish({ client: this, error: err })
        this.#connectFailed(err)
      },
    )
  }

  #connectFailed(err: PolyCallError): void {
    const permanent = err.code === ErrorCode.UNAUTHENTICATED || err.code === ErrorCode.TLS_PIN_MISMATCH || err.code === ErrorCode.PROTOCOL
    const policy = this.#reconnect
    this.#attempt++
    if (!permanent && policy && !this.#closing && this.#attempt < policy.maxAttempts) {
      const base = Math.min(policy.initialDelay * policy.multiplier ** (this.#attempt - 1), policy.maxDelay)
      const delay = Math.max(0, base * (1 + policy.jitter * (2 * Math.random() - 1)))
      this.emit('reconnecting', { attempt: this.#attempt, delay, error: err })
      this.#counters.reconnects++
      this.#reconnectTimer = unrefTimer(() => {
        this.#reconnectTimer = undefined
        this.#ensureConnection()
      }, delay)
      // A queued call or a connect() caller keeps waiting within its own deadline.
      return
    }
    this.#attempt = 0
    for (const w of this.#readyWaiters) w(err)
    const waiting = this.#waiting
    this.#waiting = []
    for (const call of waiting) this.#settle(call, err)
  }

  async #open(): Promise<Connection> {
    const socket = await this.#dial()
    const conn = new Connection(
      socket,
      'client',
      {
        frame: (f) => this.#frame(conn, f),
        decodeError: (e) => conn.destroy(new PolyCallError(ErrorCode.PROTOCOL, `the server sent an invalid frame: ${e.message}`, { cause: e })),
        end: () => conn.end(),
        close: (e) => this.#lost(conn, e),
      },
      { maxPayload: MAX_PAYLOAD },
    )
    try {
      await this.#setup(conn)
    } catch (e) {
      // Whatever failed (handshake refused, credentials refused, timeout), the socket goes too.
      conn.destroy(isPolyCallError(e) ? e : undefined)
      throw e
    }
    return conn
  }

  async #setup(conn: Connection): Promise<void> {
    const deadline = now() + this.#connectTimeout
    const step = <T>(p: Promise<T>, what: string) =>
      bounded(p, { timeout: Math.max(0, deadline - now()) }, what, (err) => conn.destroy(err))
    // Handshake (§4): long form with our capability bits; any of RESPONSE/ERROR echoing the
    // sequence, or a magic-bearing HANDSHAKE (echo peers), completes it.
    const offer = this.#legacyOnly ? 0 : SUPPORTED_CAPABILITIES
    if (this.#sequenceStart !== undefined) conn.startSequence(this.#sequenceStart)
    const hello = conn.nextSequence()
    conn.session.to(SessionState.Handshake)
    const reply = step(this.#controlReply(conn, hello), 'handshake')
    conn.send(MessageType.Handshake, hello, buildHandshake(offer))
    const answer = await reply
    if (answer.type === MessageType.Error) {
      const { code, message } = jsonCodec.decodeError(answer.payload)
      conn.destroy()
      throw new PolyCallError(code === ErrorCode.REMOTE ? ErrorCode.PROTOCOL : code, `handshake refused: ${message}`)
    }
    let caps = 0
    let limit = this.#maxInFlight
    if (answer.type === MessageType.Response) {
      try {
        const h = parseHandshake(answer.payload)
        caps = h.flags & offer
        if (h.maxInFlight) limit = Math.min(limit, h.maxInFlight)
      } catch {
        caps = 0
      }
    }
    this.#limit = caps === 0 ? 1 : limit
    conn.capabilities = caps
    conn.legacy = caps === 0
    conn.codec = caps & Capability.Msgpack ? msgpackCodec : jsonCodec
    conn.session.to(SessionState.Auth)
    if (this.#credentials !== undefined) await step(this.#sendAuth(conn), 'authenticate')
    else conn.session.to(SessionState.Ready)
    if (caps & Capability.Heartbeat) conn.startHeartbeat(this.#heartbeat)
  }

  #dial(): Promise<Socket> {
    return new Promise<Socket>((resolve, reject) => {
      const tlsOptions = this.#tls
      let socket: Socket
      const fail = (e: Error) => {
        clearTimeout(timer)
        socket.destroy()
        reject(
          isPolyCallError(e)
            ? e
            : new PolyCallError(ErrorCode.CONNECT_FAILED, `cannot connect to ${this.host}:${this.port}: ${e.message}`, { cause: e }),
        )
      }
      const timer = unrefTimer(() => fail(timeoutError(this.#connectTimeout, 'connect')), this.#connectTimeout)
      const ok = () => {
        clearTimeout(timer)
        socket.off('error', fail)
        resolve(socket)
      }
      if (tlsOptions) {
        const { pin: _pin, ...opts } = tlsOptions
        const tlsSocket = tlsConnect({ host: this.host, port: this.port, servername: this.#servername(), ...opts })
        socket = tlsSocket
        tlsSocket.once('secureConnect', () => {
          if (this.#pins && !this.#pins.has(spkiHash(tlsSocket))) {
            return fail(new PolyCallError(ErrorCode.TLS_PIN_MISMATCH, `the server's public key matches no pinned SPKI hash`))
          }
          ok()
        })
      } else {
        socket = netConnect({ host: this.host, port: this.port })
        socket.once('connect', ok)
      }
      socket.once('error', fail)
    })
  }

  #servername(): string | undefined {
    // SNI carries host names only, never IP addresses.
    return /^[\d.]+$|:/.test(this.host) ? undefined : this.host
  }

  #controlReply(conn: Connection, sequence: number): Promise<Frame> {
    return new Promise<Frame>((resolve, reject) => {
      this.#control.set(sequence, (f) => {
        this.#control.delete(sequence)
        resolve(f)
      })
      conn.socket.once('close', () => {
        if (!this.#control.delete(sequence)) return
        const fatal = this.#fatal
        this.#fatal = undefined
        reject(fatal ?? new PolyCallError(ErrorCode.CONNECT_FAILED, 'the server closed the connection during setup'))
      })
    })
  }

  async #sendAuth(conn: Connection): Promise<void> {
    const seq = conn.nextSequence((n) => this.#pending.has(n) || this.#control.has(n))
    const reply = this.#controlReply(conn, seq)
    conn.send(MessageType.Auth, seq, encodeCredentials(this.#credentials))
    const f = await reply
    if (f.type === MessageType.Error) {
      const { message } = conn.codec.decodeError(f.payload)
      throw new PolyCallError(ErrorCode.UNAUTHENTICATED, message)
    }
    if (conn.session.state === SessionState.Auth) conn.session.to(SessionState.Ready)
  }

  #frame(conn: Connection, f: Frame): void {
    if (conn !== this.#conn && !this.#control.has(f.sequence)) {
      // Frames during setup belong to the control exchanges only.
      if (f.type === MessageType.Handshake && conn.session.state === SessionState.Handshake) {
        // An echo peer (the C demo) returns our own hello: that completes the handshake too.
        for (const [seq, handler] of this.#control) if (seq === f.sequence) handler(f)
      } else if (f.type === MessageType.Error && f.sequence === 0) {
        const { code, message } = jsonCodec.decodeError(f.payload)
        this.#fatal = new PolyCallError(code, message)
      }
      return
    }
    switch (f.type) {
      case MessageType.Response:
      case MessageType.Error:
        return this.#reply(f)
      case MessageType.Handshake: {
        const control = this.#control.get(f.sequence)
        if (control) control(f)
        return
      }
      default:
        // HEARTBEAT: liveness is tracked by the connection; AUTH from a server means nothing here.
        return
    }
  }

  #lost(conn: Connection, error: PolyCallError | undefined): void {
    if (!conn.session.closed) conn.session.to(SessionState.Closed)
    if (conn !== this.#conn) return
    const reason = this.#fatal ?? error
    this.#fatal = undefined
    this.#conn = undefined
    const retry: Call[] = []
    for (const call of this.#pending.values()) {
      if (call.idempotent && call.deadline > now() && !this.#closing) {
        call.written = false
        this.#counters.retried++
        retry.push(call)
      } else this.#settle(call, reason && reason.code !== ErrorCode.CONNECTION_LOST ? reason : lostError(call, reason))
    }
    this.#pending.clear()
    this.#waiting = [...retry, ...this.#waiting]
    this.emit('disconnect', reason)
    if (this.#destroyed) return
    if (this.#closing) {
      // Graceful close in progress: anything still waiting cannot be sent any more.
      for (const call of this.#waiting) this.#settle(call, new PolyCallError(ErrorCode.CLOSED, 'the client closed'))
      this.#waiting = []
      this.#idle?.()
      return
    }
    if (this.#reconnect) {
      this.#connectFailed(reason ?? new PolyCallError(ErrorCode.CONNECTION_LOST, 'the connection closed'))
    } else {
      for (const call of this.#waiting) this.#settle(call, lostError(call, reason))
      this.#waiting = []
    }
  }
}
