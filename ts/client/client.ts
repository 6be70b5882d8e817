/**
 * PolyCallClient: one connection to a PolyCall server, many requests in flight on it,
 * correlated by sequence number (docs/protocol.md §5), each bounded by a timeout and an AbortSignal,
 * with reconnection (exponential backoff with jitter) and retries of idempotent calls. The wire
 * protocol (v1 or PCR1) is an adapter; everything else is shared.
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
  tickNow,
  timeoutError,
  unrefTimer,
} from '../core/abort.js'
import { Deadlines, type Expiring } from '../core/deadlines.js'
import { channels } from '../core/diagnostics.js'
import { TypedEmitter } from '../core/emitter.js'
import { ErrorCode, PolyCallError, invalidArgument, isPolyCallError } from '../core/errors.js'
import { checkOptionKeys, optionKeys } from '../core/options.js'
import { SequenceTable } from '../core/sequence-table.js'
import { acceptTrace, checkTrace, type TraceContext } from '../core/trace.js'
import { LatencyHistogram, type LatencySummary } from '../core/stats.js'
import { Connection } from '../network/connection.js'
import type { WireFrame } from '../network/wire.js'
import { pcr1ClientProtocol } from '../pcr1/client-protocol.js'
import { MAX_PAYLOAD, MessageType } from '../protocol/constants.js'
import { writeCommandAt } from '../protocol/msgpack-scalar.js'
import type { CallInput, CallOutput, Contract } from '../core/contract.js'
import { validate } from '../core/schema.js'
import { resolveClientSecure, type SecureClientOptions } from '../secure/options.js'
import { SessionState } from '../state/session.js'
import { EndpointPool, IDEMPOTENCY_KEY, newKey, type EndpointStats, type MultiEndpointOptions } from './pool.js'
import { NOT_SUCCESS, v1ClientProtocol, type ClientProtocol, type ClientSetup, type PendingCall, type PreparedSetup } from './protocol.js'

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
  /** Milliseconds before the first attempt. @defaultValue 1000 */
  initialDelay?: number | undefined
  /** Factor between one attempt's delay and the next. @defaultValue 1.6 */
  multiplier?: number | undefined
  /** Fraction of the delay added or removed at random. @defaultValue 0.2 */
  jitter?: number | undefined
  /** The longest delay between attempts, in milliseconds. @defaultValue 120000 */
  maxDelay?: number | undefined
  /** Attempts in a row before giving up (calls waiting get `ERR_POLYCALL_CONNECT_FAILED`). @defaultValue Infinity */
  maxAttempts?: number | undefined
}

/** Options of {@link PolyCallClient} with one server: `{ host, port }` and the shared options. */
export interface ClientOptions extends ClientBaseOptions {
  /** The server's host name or address. @defaultValue '127.0.0.1' */
  host?: string | undefined
  /** The server's port. */
  port: number
}

/** What every {@link PolyCallClient} takes, with one endpoint or several. */
export interface ClientBaseOptions {
  /**
   * Wire protocol: `'v1'` (LibPolyCall v1) or `'pcr1'` (the upstream runtime's polycall_rpc v1,
   * where commands are `service.operation`). @defaultValue 'v1'
   */
  protocol?: 'v1' | 'pcr1' | undefined
  /** Connect with TLS; certificate validation is on unless `rejectUnauthorized: false`. */
  tls?: ClientTlsOptions | boolean | undefined
  /**
   * Run a secure session (v1 only; docs/security.md): the server is authenticated by its public
   * key and every frame after the handshake is sealed. A server that offers none fails with
   * `ERR_POLYCALL_INSECURE_PEER`, one whose key differs with `ERR_POLYCALL_HANDSHAKE_FAILED`;
   * neither is retried. Composes with `tls`.
   * @defaultValue none
   */
  secure?: SecureClientOptions | undefined
  /** Default per-request timeout in ms (`Infinity` for none). @defaultValue 5000 */
  timeout?: number | undefined
  /** Bound of one connection attempt, TCP + TLS + handshake + AUTH. @defaultValue 10000 */
  connectTimeout?: number | undefined
  /** Credentials sent as AUTH on every (re)connection. Set them with {@link PolyCallClient.authenticate}. */
  credentials?: unknown
  /**
   * Reconnect after a lost connection; `false` disables. Before the first connection, failed
   * attempts are retried in the background too, while the calls waiting on each attempt (and
   * calls made until the next one) fail at once with its `ERR_POLYCALL_CONNECT_FAILED`.
   * @defaultValue gRPC-like: 1 s × 1.6 ± 20%, at most 120 s
   */
  reconnect?: ReconnectOptions | boolean | undefined
  /** Requests written and awaiting a reply; more wait in a queue. @defaultValue 1024 */
  maxInFlight?: number | undefined
  /** Heartbeat period towards servers that negotiate it; 0 disables. @defaultValue 30000 */
  heartbeatInterval?: number | undefined
  /**
   * Speak the reference conventions even to a polycall server: no capability bits, JSON
   * payloads, one frame per write and one request at a time. On PCR1: no `polycall.extensions`
   * offer at connect (for peers that mishandle unknown control actions), so plain REQUESTs
   * only. @defaultValue false
   */
  legacy?: boolean | undefined
  /**
   * Payload encoding towards polycall servers: msgpack, or JSON (readable on the wire; the
   * other extensions stay on). Legacy servers always get JSON. @defaultValue 'msgpack'
   */
  codec?: 'msgpack' | 'json' | undefined
  /**
   * Give the errors of failed `request()` calls the stack of the code that awaited them, instead
   * of the stack where the failure was detected (the socket or timer callback). It costs an extra
   * promise per request: about 8% of throughput with 128 requests in flight. `connect()`,
   * `authenticate()`, `control()` and {@link PolyCallClient.typed} calls always get it.
   * @defaultValue false
   */
  callerStacks?: boolean | undefined
  /** @internal First sequence number of each connection (to exercise the 2^32 wrap). */
  sequenceStart?: number | undefined
  /** @internal Opens the transport instead of TCP/TLS (the in-memory links of polycall/testing). */
  dial?: (() => Promise<Socket>) | undefined
  /** @internal The multi-endpoint client this one serves as a connection of. */
  member?: PolyCallClient | undefined
}

/** @internal Every key of {@link ClientOptions}: others are refused. */
const CLIENT_OPTION_KEYS = optionKeys<ClientOptions>()([
  'host',
  'port',
  'protocol',
  'tls',
  'secure',
  'timeout',
  'connectTimeout',
  'credentials',
  'reconnect',
  'maxInFlight',
  'heartbeatInterval',
  'legacy',
  'codec',
  'callerStacks',
  'sequenceStart',
  'dial',
  'member',
])

/** @internal Every key of {@link MultiEndpointOptions}. */
const MULTI_OPTION_KEYS = optionKeys<MultiEndpointOptions>()([
  'endpoints',
  'balance',
  'connectionsPerEndpoint',
  'ejection',
  'refreshInterval',
  'maxAttempts',
  'protocol',
  'tls',
  'secure',
  'timeout',
  'connectTimeout',
  'credentials',
  'reconnect',
  'maxInFlight',
  'heartbeatInterval',
  'legacy',
  'codec',
  'callerStacks',
  'sequenceStart',
  'dial',
  'member',
])

/** Options of {@link PolyCallClient.request}. */
export interface RequestOptions extends CallOptions {
  /**
   * The request may run twice without harm: after a lost connection it is sent again (within its
   * deadline) instead of failing; with several endpoints, on another one. Towards servers that
   * keep idempotency records (capability `0x0020`; on PCR1 the `idempotency_key` extension), the
   * call carries a random 128-bit key, the same on every retry, and a retry is answered with the
   * first run's outcome instead of running again (docs/scaling.md). @defaultValue false
   */
  idempotent?: boolean | undefined
  /**
   * A W3C trace context to send with the request (a `traceparent` string, or
   * `{ traceparent, tracestate }`), towards servers that understand it (capability `0x0040`);
   * the handler sees it as `ctx.trace`. A subscriber of `polycall:client:request:start` may
   * replace it (`message.trace = ...`), as an OpenTelemetry instrumentation does.
   * @defaultValue undefined (none)
   */
  trace?: TraceContext | string | undefined
  /**
   * A deadline handed down from elsewhere, in `Date.now()` milliseconds: typically a handler's
   * `ctx.deadline`, so a call made on behalf of a request ends when that request's caller stops
   * waiting. The call ends at the earlier of this and its own `timeout`. When this one comes
   * first, the call rejects with `ERR_POLYCALL_DEADLINE_EXCEEDED` (already passed: at once,
   * without sending anything); when its own timeout comes first, with `ERR_POLYCALL_TIMEOUT`.
   * `Infinity` means none. @defaultValue undefined (none)
   */
  deadline?: number | undefined
  /**
   * Abort the call; it rejects with `ERR_POLYCALL_ABORTED` whose `cause` is `signal.reason`.
   * A signal aborted because a deadline passed (its reason an `ERR_POLYCALL_DEADLINE_EXCEEDED`
   * error, as a handler's `ctx.signal` at its request's deadline), or aborted once the call's
   * propagated `deadline` has passed, rejects with `ERR_POLYCALL_DEADLINE_EXCEEDED` instead, the
   * reason as `cause`: passing `ctx.deadline` and `ctx.signal` on gives one code, whichever fires
   * first. @defaultValue undefined (none)
   */
  signal?: AbortSignal | undefined
}

/** What {@link PolyCallClient.stats} returns. */
export interface ClientStats {
  /** A connection is established and ready for requests. */
  connected: boolean
  /** The server is a legacy peer (no capability bits): JSON payloads, one request at a time. */
  legacy: boolean
  /** The capability bits both sides agreed on ({@link Capability}). */
  capabilities: number
  /** Connections re-established after a loss. */
  reconnects: number
  /** Request counters since the client was made. */
  requests: {
    /** Requests made. */
    total: number
    /** Requests written and awaiting a reply. */
    inFlight: number
    /** Requests waiting for room in flight or for a connection. */
    queued: number
    /** Requests answered with a result. */
    succeeded: number
    /** Requests answered with an error or lost with their connection. */
    failed: number
    /** Requests whose timeout elapsed. */
    timedOut: number
    /** Requests whose signal aborted them. */
    aborted: number
    /** Idempotent requests sent again after a reconnection. */
    retried: number
  }
  /** Round-trip latency of answered requests, in milliseconds. */
  latency: LatencySummary
  /** Per endpoint, for a client with several (`endpoints`); absent otherwise. */
  endpoints?: EndpointStats[]
}

/** Lifecycle events of {@link PolyCallClient}. */
export interface ClientEvents {
  /** A connection is ready: the handshake (and AUTH, with credentials) completed. */
  connect: [
    info: {
      /** The server is a legacy peer. */
      legacy: boolean
      /** The capability bits both sides agreed on. */
      capabilities: number
      /** With several endpoints: which one (`host:port`). */
      endpoint?: string
    },
  ]
  /** The connection closed; `error` says why when it was not a close of ours; with several endpoints, `endpoint` says which. */
  disconnect: [error: PolyCallError | undefined, endpoint?: string]
  /** A reconnection attempt is scheduled. */
  reconnecting: [
    info: {
      /** Attempts in a row so far, from 1. */
      attempt: number
      /** Milliseconds until this attempt. */
      delay: number
      /** Why the connection was lost or the last attempt failed. */
      error: PolyCallError
      /** With several endpoints: which one (`host:port`). */
      endpoint?: string
    },
  ]
  /** Several endpoints: one was ejected after `failures` failures in a row, for `duration` ms. */
  eject: [
    info: {
      /** `host:port`. */
      endpoint: string
      /** Failures in a row that ejected it. */
      failures: number
      /** Milliseconds it stays ejected. */
      duration: number
      /** How often it has been ejected. */
      ejections: number
    },
  ]
  /** Several endpoints: an ejected endpoint's time is up; it takes calls again. */
  restore: [
    info: {
      /** `host:port`. */
      endpoint: string
    },
  ]
  /** Several endpoints from a function: the list was read again (or could not be: `error`). */
  endpoints: [
    info: {
      /** The endpoints in use now. */
      endpoints: string[]
      /** Endpoints new in this read. */
      added: string[]
      /** Endpoints gone in this read (their calls in flight finish). */
      removed: string[]
      /** Why the read failed; the list stays as it was. */
      error?: PolyCallError
    },
  ]
  /** A reply whose sequence matches no pending call (late, or unsolicited; on PCR1 also a reply of the other kind). */
  unsolicited: [frame: WireFrame]
  /** close() finished or destroy() was called. */
  close: []
}

/** A typed view of a contract: one async function per operation (see {@link PolyCallClient.typed}). */
export type ContractClient<C extends Contract> = {
  readonly [K in keyof C & string]: (input: CallInput<C[K]>, options?: RequestOptions) => Promise<CallOutput<C[K]>>
}

/** Options of {@link PolyCallClient.control}. */
export interface ControlOptions extends CallOptions {
  /** The runtime's auth token (needed by `shutdown`). Never logged or published. */
  authToken?: string | undefined
}

/** @internal Every key of the call options: others are refused. */
const REQUEST_OPTION_KEYS = optionKeys<RequestOptions>()(['signal', 'timeout', 'idempotent', 'deadline', 'trace'])
/** @internal */
const CONTROL_OPTION_KEYS = optionKeys<ControlOptions>()(['signal', 'timeout', 'authToken'])

class Call implements PendingCall, Expiring {
  sequence = 0
  written = false
  settled = false
  deadlineBucket = -1
  deadlineSlot = 0
  onAbort: (() => void) | undefined = undefined
  /** The idempotency key, the same on every retry (idempotent calls only). */
  key: Buffer | undefined = undefined
  trace: TraceContext | undefined = undefined
  constructor(
    readonly started: number,
    readonly kind: 'request' | 'control',
    readonly command: string,
    readonly data: unknown,
    readonly authToken: string | undefined,
    /** Monotonic ms: the earlier of the call's own timeout and a propagated deadline. */
    readonly deadline: number,
    /** `deadline` is a propagated one (RequestOptions.deadline), not the call's own timeout. */
    readonly propagated: boolean,
    readonly idempotent: boolean,
    readonly signal: AbortSignal | undefined,
    readonly resolve: (value: unknown) => void,
    readonly reject: (error: PolyCallError) => void,
  ) {}
}

const noop = (): void => {}

/** What {@link capture} took from the promise made last (read and reset right after it). */
const captured: { resolve: (value: unknown) => void; reject: (error: PolyCallError) => void } = { resolve: noop, reject: noop }

/** The executor of every call's promise: no closure per call. */
function capture(resolve: (value: unknown) => void, reject: (error: PolyCallError) => void): void {
  captured.resolve = resolve
  captured.reject = reject
}

const DEFAULT_TIMEOUT = 5000

/**
 * How early (ms) a server's deadline verdict may come before the call's own deadline and still
 * be that deadline passing: the server rounds the remaining time up and starts its clock when
 * the request arrives, so its deadline is never earlier than ours by more than the age of its
 * cached tick clock. Anything earlier is a deadline of the server's own.
 */
const VERDICT_SLACK_MS = 10

function propagatedError(call: Call, cause?: unknown): PolyCallError {
  return new PolyCallError(
    ErrorCode.DEADLINE_EXCEEDED,
    `${call.kind} ${call.command}: the propagated deadline passed`,
    cause === undefined ? undefined : { cause },
  )
}

/**
 * The error of a call whose signal fired. A signal aborted because a deadline passed (a handler's
 * `ctx.signal` at its request's deadline), or one that fires once the call's propagated deadline
 * has passed (a handler's `ctx.signal` when its caller, timing out, cancelled), ends the call on
 * a deadline the caller did not set itself: DEADLINE_EXCEEDED, as the propagated deadline's own
 * timer would, so passing `ctx.deadline` and `ctx.signal` on gives one code whichever fires
 * first. Any other abort is ABORTED.
 */
function signalError(signal: AbortSignal, kind: string, command: string, call?: Call): PolyCallError {
  const reason: unknown = signal.reason
  if (
    (isPolyCallError(reason) && reason.code === ErrorCode.DEADLINE_EXCEEDED) ||
    (call !== undefined && call.propagated && now() >= call.deadline - VERDICT_SLACK_MS)
  ) {
    return new PolyCallError(ErrorCode.DEADLINE_EXCEEDED, `${kind} ${command}: the propagated deadline passed`, { cause: reason })
  }
  return abortedError(signal)
}

function lostError(call: Call, cause?: unknown): PolyCallError {
  const err = new PolyCallError(
    ErrorCode.CONNECTION_LOST,
    call.written ? 'the connection was lost after the request was sent' : 'the connection was lost before the request was sent',
    { cause },
  ) as PolyCallError & { written: boolean }
  err.written = call.written
  return err
}

/**
 * Points a failed call's stack at the code that awaited it. Runs inside `request()` after its
 * await, where V8's async stack traces hold the caller's frames, and only on failure: a
 * successful call captures nothing.
 */
function withCallerStack(e: unknown): unknown {
  if (!isPolyCallError(e)) return e
  const here: { stack?: string } = {}
  Error.captureStackTrace(here, withCallerStack)
  const frames = here.stack?.split('\n').slice(1).join('\n')
  if (frames) {
    Object.defineProperty(e, 'stack', { value: `${e.name} [${e.code}]: ${e.message}\n${frames}`, writable: true, configurable: true })
  }
  return e
}

/** Awaits `p` in an async frame, so that a failure gets the awaiting code's stack. */
async function awaitedHere<T>(p: Promise<T>): Promise<T> {
  try {
    return await p
  } catch (e) {
    throw withCallerStack(e)
  }
}

const NO_OPTIONS: RequestOptions = Object.freeze({})

/** A secure session's own failures keep their code (they are not plain protocol breaks). */
const SECURE_FAILURES: ReadonlySet<string> = new Set([
  ErrorCode.TAMPERED,
  ErrorCode.DECOMPRESSION_LIMIT,
  ErrorCode.DECOMPRESSION_FAILED,
  ErrorCode.HANDSHAKE_FAILED,
])

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
  /** The server's host name or address. */
  readonly host: string
  /** The server's port. */
  readonly port: number
  /** The wire protocol this client speaks. */
  readonly protocol: 'v1' | 'pcr1'
  readonly #proto: ClientProtocol
  readonly #tls: ClientTlsOptions | undefined
  readonly #pins: Set<string> | undefined
  readonly #timeout: number | undefined
  readonly #connectTimeout: number
  readonly #reconnect: Required<{ [K in keyof ReconnectOptions]-?: number }> | undefined
  readonly #setup: ClientSetup & { credentials: unknown }
  readonly #customDial: (() => Promise<Socket>) | undefined
  readonly #callerStacks: boolean
  /** With several endpoints: the pool that routes every call (this client holds no connection). */
  readonly #pool: EndpointPool | undefined
  /** As a pool's connection: the client its diagnostics name, and no retries of its own. */
  readonly #owner: PolyCallClient | undefined
  #conn: Connection | undefined
  /** The connection of a draining server (it refused a call with UNAVAILABLE): nothing more is sent on it. */
  #retired: Connection | undefined
  #connecting: Promise<Connection> | undefined
  readonly #pending = new SequenceTable<Call>()
  #waiting: Call[] = []
  readonly #control = new Map<number, (f: WireFrame) => void>()
  readonly #readyWaiters = new Set<(e: PolyCallError) => void>()
  readonly #deadlines = new Deadlines<Call>((call) => {
    if (call.propagated) {
      this.#cancel(call, propagatedError(call))
      return
    }
    this.#counters.timedOut++
    // A call that never left because the client could not (re)connect says why.
    const cause = !call.written && this.#conn === undefined ? this.#lastFailure : undefined
    this.#cancel(call, timeoutError(call.deadline - call.started, `${call.kind} ${call.command}`, cause))
  })
  /** Calls in flight allowed on the current connection. */
  #limit = 1
  #attempt = 0
  #reconnectTimer: NodeJS.Timeout | undefined
  #closing = false
  #destroyed = false
  #closePromise: Promise<void> | undefined
  #idle: (() => void) | undefined
  #fatal: PolyCallError | undefined
  /** A connection was established once: from then on, lost connections are retried as before. */
  #everConnected = false
  /** Why the last connection attempt failed (until one succeeds). */
  #lastFailure: PolyCallError | undefined
  /** Monotonic ms of the next background attempt, while one is scheduled. */
  #retryAt = 0
  /** The socket of the current connection or attempt: ref'd while busy, unref'd while idle. */
  #socket: Socket | undefined
  /** Calls pending or queued, or a connect(), authenticate() or close() waiting. */
  #busy = false
  /** connect(), authenticate() and close() calls in progress. */
  #holds = 0
  readonly #latency = new LatencyHistogram()
  readonly #counters = { requests: 0, succeeded: 0, failed: 0, timedOut: 0, aborted: 0, retried: 0, reconnects: 0 }

  /**
   * @param options - one server (`host`, `port`) or several (`endpoints`, `balance`, ...), and
   *   protocol, TLS, timeouts, reconnection
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad option
   * @example
   * ```ts
   * const one = new PolyCallClient({ host: '127.0.0.1', port: 7000 })
   * const many = new PolyCallClient({ endpoints: ['10.0.0.11:7000', '10.0.0.12:7000'], balance: 'least-in-flight' })
   * ```
   */
  constructor(options: ClientOptions | MultiEndpointOptions) {
    super()
    if (!options || typeof options !== 'object') throw invalidArgument('options must be an object')
    const multi = (options as MultiEndpointOptions).endpoints !== undefined
    const single = options as ClientOptions
    if (multi && (single.host !== undefined || single.port !== undefined)) throw invalidArgument('give either endpoints or host and port, not both')
    checkOptionKeys(options, multi ? MULTI_OPTION_KEYS : CLIENT_OPTION_KEYS, multi ? 'MultiEndpointOptions' : 'ClientOptions')
    const protocol = options.protocol ?? 'v1'
    if (protocol !== 'v1' && protocol !== 'pcr1') throw invalidArgument(`unsupported protocol ${String(protocol)}`)
    this.protocol = protocol
    this.#proto = protocol === 'pcr1' ? pcr1ClientProtocol : v1ClientProtocol
    const port = multi ? 0 : single.port
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw invalidArgument('port must be an integer in 0..65535')
    this.host = multi ? '' : (single.host ?? '127.0.0.1')
    this.port = port
    this.#owner = options.member
    this.#tls = options.tls === true ? {} : options.tls === false ? undefined : options.tls
    const pins = this.#tls?.pin
    this.#pins = pins === undefined ? undefined : new Set((Array.isArray(pins) ? pins : [pins]).map((p) => p.replace(/^sha256\//, '')))
    this.#timeout = options.timeout === undefined ? DEFAULT_TIMEOUT : checkTimeout(options.timeout)
    this.#connectTimeout = checkTimeout(options.connectTimeout, 'connectTimeout') ?? 10_000
    const r = options.reconnect ?? true
    const pick = (k: keyof ReconnectOptions) => (r === true || r === false ? undefined : r[k])
    this.#reconnect =
      r === false
        ? undefined
        : {
            initialDelay: pick('initialDelay') ?? 1000,
            multiplier: pick('multiplier') ?? 1.6,
            jitter: pick('jitter') ?? 0.2,
            maxDelay: pick('maxDelay') ?? 120_000,
            maxAttempts: pick('maxAttempts') ?? Infinity,
          }
    const maxInFlight = options.maxInFlight ?? 1024
    if (!Number.isInteger(maxInFlight) || maxInFlight < 1) throw invalidArgument('maxInFlight must be an integer ≥ 1')
    if (protocol === 'pcr1' && options.credentials !== undefined) throw invalidArgument('PCR1 has no authentication step; credentials apply to v1')
    if (options.codec !== undefined && options.codec !== 'msgpack' && options.codec !== 'json') throw invalidArgument('codec must be msgpack or json')
    if (options.secure !== undefined && protocol === 'pcr1') throw invalidArgument('PCR1 has no secure sessions; use TLS')
    if (options.secure !== undefined && options.legacy === true) throw invalidArgument('a legacy client cannot run a secure session')
    const secure = options.secure === undefined ? undefined : resolveClientSecure(options.secure)
    this.#customDial = options.dial
    this.#callerStacks = options.callerStacks === true
    this.#setup = {
      exchange: (conn, type, payload, answers, flags) => this.#exchange(conn, type, payload, answers, flags),
      credentials: options.credentials,
      maxInFlight,
      heartbeatInterval: options.heartbeatInterval ?? 30_000,
      legacyOnly: options.legacy === true,
      msgpack: options.codec !== 'json',
      sequenceStart: options.sequenceStart,
      secure,
    }
    this.#pool = multi ? new EndpointPool(this, options as MultiEndpointOptions, (o) => new PolyCallClient(o)) : undefined
    if (this.#pool) {
      // The first endpoint of a fixed list names the client.
      this.host = this.#pool.host
      this.port = this.#pool.port
    }
  }

  /** True while a connection is established and ready for requests (with several endpoints: any). */
  get connected(): boolean {
    if (this.#pool) return this.#pool.connected
    return this.#conn !== undefined && this.#conn.session.ready
  }

  /** True once close() or destroy() was called. */
  get closed(): boolean {
    return this.#pool ? this.#pool.closed : this.#closing
  }

  /** True once destroy() was called. */
  get destroyed(): boolean {
    return this.#pool ? this.#pool.destroyed : this.#destroyed
  }

  /**
   * Connects (TCP or TLS), completes the handshake and, with credentials set, authenticates.
   * Resolves at once when already connected.
   *
   * Until a connection has been established once, a failed attempt rejects at once with its
   * cause (`ERR_POLYCALL_CONNECT_FAILED` with the socket error, e.g. `ECONNREFUSED`, as `cause`);
   * with reconnection on the client keeps trying in the background, and a `connect()` made
   * while it waits for its next attempt starts that attempt now. Once a connection was
   * established, a `connect()` after losing it waits for the reconnection, within its timeout.
   *
   * @param options - bound: `timeout` (default `connectTimeout`) and `signal`
   * @throws `ERR_POLYCALL_CONNECT_FAILED`, `ERR_POLYCALL_UNAUTHENTICATED`, `ERR_POLYCALL_TLS_PIN_MISMATCH`,
   *   `ERR_POLYCALL_PROTOCOL` (the server broke the handshake or AUTH rules, e.g. sent the AUTH
   *   frame back), `ERR_POLYCALL_BUSY`, `ERR_POLYCALL_TIMEOUT`, `ERR_POLYCALL_ABORTED`, `ERR_POLYCALL_CLOSED`
   */
  async connect(options: CallOptions = {}): Promise<void> {
    if (this.#pool) {
      try {
        return await this.#pool.connect(options)
      } catch (e) {
        throw withCallerStack(e)
      }
    }
    if (this.#closing) throw new PolyCallError(ErrorCode.CLOSED, 'the client is closed')
    if (this.connected) return
    const timeout = checkTimeout(options.timeout) ?? this.#connectTimeout
    const signal = checkSignal(options.signal)
    let onConnect!: () => void
    let onFail!: (e: PolyCallError) => void
    const ready = new Promise<void>((resolve, reject) => {
      onConnect = resolve
      onFail = reject
    })
    this.on('connect', onConnect)
    this.#readyWaiters.add(onFail)
    this.#hold()
    if (!this.#everConnected && this.#reconnectTimer) {
      // Asked to connect while waiting for the next background attempt: make it now.
      clearTimeout(this.#reconnectTimer)
      this.#reconnectTimer = undefined
    }
    this.#ensureConnection()
    try {
      await bounded(ready, { timeout, signal }, 'connect')
    } catch (e) {
      throw withCallerStack(e)
    } finally {
      this.off('connect', onConnect)
      this.#readyWaiters.delete(onFail)
      this.#release()
    }
  }

  /**
   * Authenticates with `credentials` (sent as JSON in an AUTH frame) and keeps them for
   * reconnections. They are never logged or published. v1 only.
   *
   * Only a RESPONSE echoing the AUTH frame's sequence counts as success (PROTOCOL.md §5). A peer
   * that sends the AUTH frame back (an echo server, which checks nothing) gets
   * `ERR_POLYCALL_PROTOCOL` at once; frames that answer nothing (HEARTBEAT, COMMAND) are ignored,
   * so a peer that never answers runs into the timeout.
   *
   * @param credentials - e.g. `{ username, password }`
   * @param options - timeout (default `connectTimeout`) and signal
   * @throws `ERR_POLYCALL_UNAUTHENTICATED` when the server refuses them, `ERR_POLYCALL_PROTOCOL`
   *   when the peer answers with anything but RESPONSE or ERROR, `ERR_POLYCALL_TIMEOUT`,
   *   `ERR_POLYCALL_ABORTED`, `ERR_POLYCALL_CLOSED`, and the codes of {@link PolyCallClient.connect}
   */
  async authenticate(credentials: unknown, options: CallOptions = {}): Promise<void> {
    if (this.#closing) throw new PolyCallError(ErrorCode.CLOSED, 'the client is closed')
    if (this.protocol === 'pcr1') throw invalidArgument('PCR1 has no authentication step; pass authToken to control()')
    if (this.#pool) {
      try {
        return await this.#pool.authenticate(credentials, options)
      } catch (e) {
        throw withCallerStack(e)
      }
    }
    this.#setup.credentials = credentials
    if (!this.connected) {
      await this.connect(options)
      return
    }
    const conn = this.#conn!
    this.#hold()
    try {
      await bounded(this.#proto.authenticate(conn, this.#setup), {
        timeout: checkTimeout(options.timeout) ?? this.#connectTimeout,
        signal: checkSignal(options.signal),
      }, 'authenticate')
    } catch (e) {
      this.#setup.credentials = undefined
      throw withCallerStack(e)
    } finally {
      this.#release()
    }
  }

  /**
   * Sends a request and resolves with the handler's return value.
   *
   * @param command - v1: `[METHOD ]path[?query]`, e.g. `'/users/42'`; PCR1: `'service.operation'`
   * @param data - the request data (msgpack for polycall servers, JSON for legacy and PCR1 peers)
   * @param options - `timeout` (default the client's), `deadline` (propagated), `signal`, `idempotent`
   * @returns the decoded reply
   * @throws the server's error code (`ERR_POLYCALL_NOT_FOUND`, `operation.unknown`, an application
   *   code, ...); `ERR_POLYCALL_TIMEOUT` when the call's own timeout passed, whether the client's
   *   timer or the server's verdict noticed first (the verdict is then the `cause`);
   *   `ERR_POLYCALL_DEADLINE_EXCEEDED` when a propagated `deadline` passed, or the server ended
   *   the call on a deadline of its own; `ERR_POLYCALL_ABORTED`, `ERR_POLYCALL_CONNECTION_LOST`
   *   (with `written`), `ERR_POLYCALL_CONNECT_FAILED` (the connection could not be made; the
   *   socket error is the `cause`), `ERR_POLYCALL_CLOSED`, `ERR_POLYCALL_INVALID_ARGUMENT`
   * @example
   * ```ts
   * const out = await client.request('POST /orders', { sku: 'a1' }, { timeout: 2000, signal })
   * ```
   */
  request<T = unknown>(command: string, data?: unknown, options?: RequestOptions): Promise<T> {
    const p = this.#call('request', command, data, options ?? NO_OPTIONS, undefined) as Promise<T>
    return this.#callerStacks ? awaitedHere(p) : p
  }

  /**
   * A typed proxy for a contract: `client.typed(api)['users.get'](input)` checks the input
   * against the operation's input schema before sending (an invalid input rejects locally with
   * `ERR_POLYCALL_INVALID_INPUT`), and parses the reply with its output schema, so argument and
   * result types come from the schemas.
   *
   * @param contract - the contract shared with the server
   * @returns one function per operation
   * @example
   * ```ts
   * const api = client.typed(contract)
   * const user = await api['users.get']({ id: '42' }, { timeout: 500 })
   * ```
   */
  typed<C extends Contract>(contract: C): ContractClient<C> {
    const out: Record<string, (input: unknown, options?: RequestOptions) => Promise<unknown>> = {}
    for (const [name, op] of Object.entries(contract)) {
      out[name] = async (input, options) => {
        try {
          // Validate for an early, local error; the original input is what travels, so the
          // server's validator sees what the caller wrote.
          if (op.input) await validate(op.input, input)
          const result = await this.#call('request', name, input, options ?? {}, undefined)
          return op.output ? await validate(op.output, result, ErrorCode.BAD_RESPONSE, `the ${name} result`) : result
        } catch (e) {
          throw withCallerStack(e)
        }
      }
    }
    return Object.freeze(out) as ContractClient<C>
  }

  /**
   * Sends a PCR1 control action (§2): `ping`, `describe`, `health` or `shutdown`.
   *
   * @param action - the action name
   * @param options - `authToken` (for `shutdown`), `timeout`, `signal`
   * @returns the reply's `data`
   * @throws `auth.denied`, `control.unknown`, or the transport codes of {@link PolyCallClient.request};
   *   `ERR_POLYCALL_INVALID_ARGUMENT` on a v1 client
   */
  async control<T = unknown>(action: string, options: ControlOptions = {}): Promise<T> {
    try {
      if (this.protocol !== 'pcr1') throw invalidArgument('control actions exist on the PCR1 wire only')
      if (options.authToken !== undefined && typeof options.authToken !== 'string') throw invalidArgument('authToken must be a string')
      return (await this.#call('control', action, undefined, options, options.authToken)) as T
    } catch (e) {
      throw withCallerStack(e)
    }
  }

  #call(kind: 'request' | 'control', command: string, data: unknown, options: RequestOptions, authToken: string | undefined): Promise<unknown> {
    if (this.#pool !== undefined) {
      try {
        if (options !== NO_OPTIONS) checkOptionKeys(options, kind === 'control' ? CONTROL_OPTION_KEYS : REQUEST_OPTION_KEYS, kind === 'control' ? 'ControlOptions' : 'RequestOptions')
      } catch (e) {
        return Promise.reject(e)
      }
      return this.#pool.call(kind, command, data, options, authToken)
    }
    if (typeof command !== 'string' || command.length === 0) return Promise.reject(invalidArgument('command must be a non-empty string'))
    let signal: AbortSignal | undefined
    let timeout: number | undefined
    let trace: TraceContext | undefined
    const parent = options.deadline
    try {
      // A pool's connection gets options the pool built from checked ones.
      if (options !== NO_OPTIONS && this.#owner === undefined) {
        checkOptionKeys(options, kind === 'control' ? CONTROL_OPTION_KEYS : REQUEST_OPTION_KEYS, kind === 'control' ? 'ControlOptions' : 'RequestOptions')
      }
      signal = checkSignal(options.signal)
      timeout = options.timeout === undefined ? this.#timeout : checkTimeout(options.timeout)
      if (parent !== undefined && (typeof parent !== 'number' || Number.isNaN(parent))) {
        throw invalidArgument('deadline must be a number of Date.now() milliseconds (or Infinity)')
      }
      if (options.trace !== undefined) trace = checkTrace(options.trace)
    } catch (e) {
      return Promise.reject(e)
    }
    if (this.#closing) return Promise.reject(new PolyCallError(ErrorCode.CLOSED, 'the client is closed'))
    if (signal?.aborted) return Promise.reject(signalError(signal, kind, command))
    if (this.#conn === undefined && this.#reconnectTimer !== undefined && !this.#everConnected) {
      // Never connected, and the last attempt failed: fail fast with its cause rather than wait
      // for the next attempt of the background retry.
      return Promise.reject(this.#connectError(this.#lastFailure!, this.#retryAt - now()))
    }
    // One shared executor instead of a closure per call: it hands over the promise's functions.
    const promise = new Promise<unknown>(capture)
    const { resolve, reject } = captured
    captured.resolve = captured.reject = noop
    try {
      // The exact clock here: a deadline must not start from a reading taken before a long
      // synchronous stretch of the caller's code.
      const started = now()
      let deadline = timeout === undefined ? Infinity : started + timeout
      let propagated = false
      if (parent !== undefined && parent !== Infinity) {
        const end = started + (parent - Date.now())
        if (end < deadline) {
          deadline = end
          propagated = true
        }
      }
      const idempotent = options.idempotent === true
      const call = new Call(started, kind, command, data, authToken, deadline, propagated, idempotent, signal, resolve, reject)
      if (idempotent) call.key = (options as { [IDEMPOTENCY_KEY]?: Buffer })[IDEMPOTENCY_KEY] ?? newKey()
      call.trace = trace
      if (propagated && deadline <= started) {
        reject(propagatedError(call))
        return promise
      }
      if (!this.#busy) this.#keepAlive(true)
      this.#deadlines.add(call, call.deadline)
      if (signal) {
        call.onAbort = () => {
          const err = signalError(signal!, kind, command, call)
          if (err.code === ErrorCode.ABORTED) this.#counters.aborted++
          this.#cancel(call, err)
        }
        signal.addEventListener('abort', call.onAbort, { once: true })
      }
      this.#counters.requests++
      if (channels.clientRequestStart.hasSubscribers) {
        // A subscriber may set the trace context to send (an instrumentation's client span).
        const message = { client: this.#owner ?? this, command, sequence: 0, endpoint: `${this.host}:${this.port}`, trace }
        channels.clientRequestStart.publish(message)
        if (message.trace !== trace) call.trace = acceptTrace(message.trace)
      }
      const conn = this.#conn
      // Nothing queued ahead and room in flight: straight onto the wire.
      if (this.#waiting.length === 0 && conn !== undefined && this.#pending.size < this.#limit && conn.session.ready && conn !== this.#retired) {
        this.#start(conn, call, started)
      } else {
        this.#waiting.push(call)
        this.#pump()
      }
    } catch (e) {
      // As a throw inside a promise executor would.
      reject(e as PolyCallError)
    }
    return promise
  }

  /**
   * Graceful close: new requests get `ERR_POLYCALL_CLOSED`, requests already made finish (or
   * time out), then the connection closes. With `timeout`/`signal`, what is left then is
   * destroyed. Idempotent: every call returns the same promise.
   */
  close(options: CallOptions = {}): Promise<void> {
    const signal = checkSignal(options.signal)
    const timeout = checkTimeout(options.timeout)
    if (this.#pool) {
      this.#closePromise ??= this.#pool.close({ signal, timeout }).then(() => {
        this.emit('close')
      })
      return this.#closePromise
    }
    if (this.#closePromise) return this.#closePromise
    this.#closing = true
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer)
    this.#reconnectTimer = undefined
    // Until it is done, a graceful close is work that keeps the process alive.
    this.#hold()
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
    }).then(() => {
      this.#release()
      this.emit('close')
    })
    return this.#closePromise
  }

  /**
   * Immediate close: every pending and queued request rejects with `reason` (default
   * `ERR_POLYCALL_CLOSED`) and the socket is destroyed. Idempotent.
   */
  destroy(reason?: PolyCallError): void {
    if (this.#pool) {
      this.#pool.destroy(reason)
      void this.close()
      return
    }
    if (this.#destroyed) return
    this.#destroyed = true
    this.#closing = true
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer)
    this.#reconnectTimer = undefined
    const err = reason ?? new PolyCallError(ErrorCode.CLOSED, 'the client was destroyed')
    const calls = [...this.#pending.values(), ...this.#waiting]
    this.#pending.clear()
    this.#waiting = []
    for (const call of calls) this.#settle(call, err)
    for (const w of this.#readyWaiters) w(err)
    this.#conn?.destroy(err)
    // A connection attempt in progress goes too.
    if (this.#socket && !this.#socket.destroyed) this.#socket.destroy()
    void this.close()
    this.#idle?.()
  }

  /** `await using client = ...` closes it gracefully. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /** Counters, requests in flight and queued, and latency percentiles (ms). */
  stats(): ClientStats {
    if (this.#pool) return this.#pool.stats()
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

  // ---- calls -------------------------------------------------------------------------------

  #inUse = (n: number): boolean => n === 0 || this.#pending.has(n) || this.#control.has(n)

  #pump(): void {
    const conn = this.#conn
    if (!conn || !conn.session.ready || conn === this.#retired) {
      if (this.#waiting.length > 0) this.#ensureConnection()
      return
    }
    if (this.#waiting.length === 0) return
    const t = tickNow()
    while (this.#waiting.length > 0 && this.#pending.size < this.#limit) {
      const call = this.#waiting.shift()!
      if (!call.settled) this.#start(conn, call, t)
    }
  }

  /** Encodes a call and puts it on the wire; `t` is the current monotonic time. */
  #start(conn: Connection, call: Call, t: number): void {
    const remaining = call.deadline - t
    const bound = this.#proto.directBound?.(conn, call) ?? -1
    if (bound >= 0) {
      // A scalar request of a busy tick: written straight into the connection's arena.
      call.sequence = conn.nextSequence(this.#inUse)
      call.written = true
      this.#pending.set(call.sequence, call)
      const timeout = remaining === Infinity ? undefined : Math.max(0, Math.ceil(remaining))
      if (!conn.sendInto(MessageType.Command, call.sequence, bound, writeCommandAt, call.command, call.data, timeout)) {
        conn.send(MessageType.Command, call.sequence, conn.codec.encodeCommand(call.command, call.data, timeout))
      }
      return
    }
    let frame: { type: number; payload: Buffer }
    try {
      frame = this.#proto.encode(conn, call, remaining === Infinity ? undefined : remaining)
    } catch (e) {
      this.#settle(
        call,
        isPolyCallError(e) ? e : new PolyCallError(ErrorCode.INVALID_ARGUMENT, `request data cannot be encoded: ${(e as Error).message}`, { cause: e }),
      )
      return
    }
    if (frame.payload.length > MAX_PAYLOAD) {
      this.#settle(call, new PolyCallError(ErrorCode.PAYLOAD_TOO_LARGE, `request payload of ${frame.payload.length} bytes exceeds ${MAX_PAYLOAD}`))
      return
    }
    // Sequence 0 is never used for a call: it is where connection-level notices go.
    call.sequence = conn.nextSequence(this.#inUse)
    call.written = true
    this.#pending.set(call.sequence, call)
    conn.send(frame.type, call.sequence, frame.payload)
  }

  /** Timeout or abort of one call: forget it and tell the server, where it can hear. */
  #cancel(call: Call, err: PolyCallError): void {
    if (call.settled) return
    if (call.written && this.#pending.get(call.sequence) === call) {
      this.#pending.delete(call.sequence)
      if (this.#conn) this.#proto.cancel(this.#conn, call)
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
    this.#deadlines.delete(call)
    if (call.onAbort) call.signal!.removeEventListener('abort', call.onAbort)
    const duration = tickNow() - call.started
    if (err) {
      if (err.code !== ErrorCode.TIMEOUT && err.code !== ErrorCode.ABORTED) this.#counters.failed++
      call.reject(err)
    } else {
      this.#counters.succeeded++
      this.#latency.record(duration)
      call.resolve(value)
    }
    if (channels.clientRequestEnd.hasSubscribers) {
      channels.clientRequestEnd.publish({
        client: this.#owner ?? this,
        command: call.command,
        sequence: call.sequence,
        durationMs: duration,
        error: err,
        endpoint: `${this.host}:${this.port}`,
        trace: call.trace,
      })
    }
    if (this.#pending.size === 0) this.#checkIdle()
    this.#idle?.()
  }

  // ---- process lifetime ------------------------------------------------------------------
  // While calls are pending or queued, or connect()/authenticate()/close() wait, the socket (or,
  // between attempts, the reconnect timer) is ref'd so the process stays alive for them; an
  // idle client never holds the process open. Only the idle<->busy edges touch the handles.

  #keepAlive(on: boolean): void {
    this.#busy = on
    const socket = this.#socket
    if (socket !== undefined && !socket.destroyed && typeof socket.ref === 'function') {
      if (on) socket.ref()
      else socket.unref()
    }
    const timer = this.#reconnectTimer
    if (timer !== undefined) {
      if (on) timer.ref()
      else timer.unref()
    }
  }

  #checkIdle(): void {
    if (this.#busy && this.#pending.size === 0 && this.#waiting.length === 0 && this.#holds === 0) this.#keepAlive(false)
  }

  #hold(): void {
    this.#holds++
    if (!this.#busy) this.#keepAlive(true)
  }

  #release(): void {
    this.#holds--
    this.#checkIdle()
  }

  /** Takes a new socket into the lifetime rules: it starts ref'd, which only a busy client wants. */
  #adopt(socket: Socket): void {
    this.#socket = socket
    if (!this.#busy && typeof socket.unref === 'function') socket.unref()
  }

  #frame(conn: Connection, f: WireFrame): void {
    const control = this.#control.get(f.sequence)
    if (control) return control(f)
    const notice = this.#proto.notice(conn, f)
    if (notice) {
      // A connection-level failure (decode error, connection limit): every call on this
      // connection fails with it, and the connection goes.
      this.#fatal = notice
      this.emit('unsolicited', f)
      conn.destroy(notice)
      return
    }
    if (conn !== this.#conn) return
    const call = this.#pending.get(f.sequence)
    if (call === undefined || !this.#proto.isReply(f, call)) {
      // Frames that answer nothing are ignored; a reply for no call (or for a call of another
      // kind, on PCR1) is unsolicited.
      if (this.#proto.isReply(f, undefined)) this.emit('unsolicited', f)
      return
    }
    this.#pending.delete(f.sequence)
    let outcome
    let value: unknown
    try {
      // A plain success (the common case) comes without an outcome object.
      value = this.#proto.successValue === undefined ? NOT_SUCCESS : this.#proto.successValue(conn, f)
      if (value === NOT_SUCCESS) outcome = this.#proto.outcome(conn, f, call)
    } catch (e) {
      this.#settle(call, new PolyCallError(ErrorCode.PROTOCOL, 'the reply payload could not be decoded', { cause: e }))
      this.#pump()
      return
    }
    if (outcome === undefined) this.#settle(call, undefined, value)
    else if (outcome.ok) this.#settle(call, undefined, outcome.value)
    else {
      const err = new PolyCallError(outcome.code, outcome.message) as PolyCallError & { remote: boolean; data?: unknown; issues?: unknown }
      err.remote = true
      if (outcome.data !== undefined) {
        err.data = outcome.data
        const issues = (outcome.data as { issues?: unknown } | null)?.issues
        if (Array.isArray(issues)) err.issues = issues
      }
      if (outcome.code === ErrorCode.UNAVAILABLE && this.#owner === undefined && this.#reconnect && !this.#closing && call.kind === 'request' && now() < call.deadline) {
        // A draining server refused it: it never ran, so it is sent again, idempotent or not,
        // on a new connection (behind a balancer, to another server). Nothing more is sent on
        // this one; it is closed once its other calls are answered.
        call.written = false
        this.#counters.retried++
        this.#waiting.unshift(call)
        this.#retired = conn
      } else this.#settle(call, this.#verdict(call, err))
    }
    if (conn === this.#retired && this.#pending.size === 0) conn.end()
    this.#pump()
  }

  /**
   * One deadline, one code: a server's deadline verdict that arrives once the call's own bound
   * has passed is that bound passing, whichever side noticed first. It becomes the error the
   * client's own timer would have raised (TIMEOUT for the call's timeout, DEADLINE_EXCEEDED for a
   * propagated deadline), with the verdict as `cause`. An earlier verdict is about a deadline of
   * the server's own and stays as it is.
   */
  #verdict(call: Call, err: PolyCallError): PolyCallError {
    if (err.code !== this.#proto.deadlineCode || now() < call.deadline - VERDICT_SLACK_MS) return err
    if (call.propagated) return propagatedError(call, err)
    this.#counters.timedOut++
    return timeoutError(call.deadline - call.started, `${call.kind} ${call.command}`, err)
  }

  // ---- connection ------------------------------------------------------------------------

  #ensureConnection(): void {
    if (this.#conn || this.#connecting || this.#reconnectTimer || this.#destroyed) return
    this.#connecting = this.#open()
    this.#connecting.then(
      (conn) => {
        this.#connecting = undefined
        if (this.#destroyed) {
          conn.destroy()
          return
        }
        this.#attempt = 0
        this.#conn = conn
        this.#everConnected = true
        this.#lastFailure = undefined
        if (channels.clientConnect.hasSubscribers) {
          channels.clientConnect.publish({ client: this.#owner ?? this, host: this.host, port: this.port, legacy: conn.legacy, capabilities: conn.capabilities })
        }
        this.emit('connect', { legacy: conn.legacy, capabilities: conn.capabilities })
        this.#pump()
      },
      (e: unknown) => {
        this.#connecting = undefined
        let err = isPolyCallError(e) ? e : new PolyCallError(ErrorCode.CONNECT_FAILED, String(e), { cause: e })
        // ERR_POLYCALL_TIMEOUT is for the caller's own timeouts; an attempt that ran out of
        // connectTimeout is a failed connection.
        if (err.code === ErrorCode.TIMEOUT) {
          err = new PolyCallError(ErrorCode.CONNECT_FAILED, `cannot connect to ${this.host}:${this.port}: ${err.message}`, { cause: err })
        }
        if (channels.clientError.hasSubscribers) channels.clientError.publish({ client: this.#owner ?? this, error: err })
        this.#connectFailed(err)
      },
    )
  }

  /**
   * The error a call or connect() gets for a failed connection attempt: a fresh error (each
   * caller gets its own stack) with the failure's code and cause, saying whether a background
   * attempt follows and when.
   */
  #connectError(err: PolyCallError, retryIn: number | undefined): PolyCallError {
    const message =
      retryIn === undefined ? err.message : `${err.message}; retrying in the background (next attempt in ${Math.max(0, Math.round(retryIn))} ms)`
    return new PolyCallError(err.code, message, { cause: err.cause, errno: err.errno })
  }

  #connectFailed(err: PolyCallError): void {
    // A refusal says something about the server or this client, not the network: asking again
    // gets the same answer.
    const permanent =
      err.code === ErrorCode.UNAUTHENTICATED ||
      err.code === ErrorCode.TLS_PIN_MISMATCH ||
      err.code === ErrorCode.PROTOCOL ||
      err.code === ErrorCode.HANDSHAKE_FAILED ||
      err.code === ErrorCode.INSECURE_PEER
    const policy = this.#reconnect
    this.#attempt++
    this.#lastFailure = err
    let retryIn: number | undefined
    if (!permanent && policy && !this.#closing && this.#attempt < policy.maxAttempts) {
      const base = Math.min(policy.initialDelay * policy.multiplier ** (this.#attempt - 1), policy.maxDelay)
      const delay = Math.max(0, base * (1 + policy.jitter * (2 * Math.random() - 1)))
      this.emit('reconnecting', { attempt: this.#attempt, delay, error: err })
      this.#counters.reconnects++
      this.#retryAt = now() + delay
      this.#reconnectTimer = unrefTimer(() => {
        this.#reconnectTimer = undefined
        this.#ensureConnection()
      }, delay)
      if (this.#busy) this.#reconnectTimer.ref()
      // Once connected before, a lost connection is a blip: queued calls (idempotent retries
      // among them) and connect() callers wait for the reconnection within their own deadline.
      // A pool's connection hands its calls back at once instead: other endpoints may serve them.
      if (this.#everConnected && this.#owner === undefined) return
      retryIn = delay
    } else this.#attempt = 0
    // Nothing to wait for (no retry), or the very first connection failed: everyone waiting on
    // this attempt hears it now, with its cause.
    for (const w of this.#readyWaiters) w(this.#connectError(err, retryIn))
    const waiting = this.#waiting
    this.#waiting = []
    for (const call of waiting) this.#settle(call, this.#connectError(err, retryIn))
    this.#checkIdle()
  }

  async #open(): Promise<Connection> {
    // One bound for the whole attempt: TCP, TLS, handshake and AUTH.
    const deadline = now() + this.#connectTimeout
    // What the setup can do without the connection (a secure hello) is done while it is made.
    const early: { prepared: PreparedSetup | undefined } = { prepared: undefined }
    let socket: Socket
    try {
      socket = await this.#dial(() => (early.prepared = this.#proto.prepare?.(this.#setup)))
    } catch (e) {
      early.prepared?.channel.destroy()
      throw e
    }
    const conn: Connection = new Connection(
      socket,
      'client',
      {
        frame: (f) => this.#frame(conn, f),
        decodeError: (e) =>
          conn.destroy(
            SECURE_FAILURES.has(e.code) ? e : new PolyCallError(ErrorCode.PROTOCOL, `the server sent an invalid frame: ${e.message}`, { cause: e }),
          ),
        end: () => conn.end(),
        close: (e) => this.#lost(conn, e),
        peerIdle: (queued) => this.#pending.size <= queued,
      },
      { maxPayload: MAX_PAYLOAD, wire: this.#proto.wire },
    )
    try {
      const setup = this.#proto.setup(conn, this.#setup, early.prepared)
      this.#limit = await bounded(setup, { timeout: Math.max(0, deadline - now()) }, 'connection setup', (err) => conn.destroy(err))
    } catch (e) {
      // Whatever failed (handshake refused, credentials refused, timeout), the socket goes too.
      conn.destroy(isPolyCallError(e) ? e : undefined)
      early.prepared?.channel.destroy()
      throw e
    }
    return conn
  }

  /** Connects; `dialing` runs synchronously once the attempt is under way. */
  #dial(dialing: () => void): Promise<Socket> {
    if (this.#customDial) {
      const dialed = this.#customDial().then((socket) => {
        this.#adopt(socket)
        return socket
      })
      dialing()
      return dialed
    }
    return new Promise<Socket>((resolve, reject) => {
      const tlsOptions = this.#tls
      let socket: Socket
      let settled = false
      const fail = (e: Error) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        socket.off('close', abandoned)
        socket.destroy()
        reject(
          isPolyCallError(e)
            ? e
            : new PolyCallError(ErrorCode.CONNECT_FAILED, `cannot connect to ${this.host}:${this.port}: ${e.message}`, { cause: e }),
        )
      }
      // destroy() tears a connecting socket down without an error.
      const abandoned = () => fail(new PolyCallError(ErrorCode.CONNECT_FAILED, `the connection attempt to ${this.host}:${this.port} was abandoned`))
      const timer = unrefTimer(() => fail(timeoutError(this.#connectTimeout, 'connect')), this.#connectTimeout)
      const ok = () => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        socket.off('error', fail)
        socket.off('close', abandoned)
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
      socket.once('close', abandoned)
      this.#adopt(socket)
      dialing()
    })
  }

  #servername(): string | undefined {
    // SNI carries host names only, never IP addresses.
    return /^[\d.]+$|:/.test(this.host) ? undefined : this.host
  }

  /**
   * One setup exchange (handshake, AUTH): sends a frame, resolves with the first frame echoing
   * its sequence that `answers` takes; other frames with that sequence are ignored.
   */
  #exchange(conn: Connection, type: number, payload: Uint8Array, answers: (f: WireFrame) => boolean, flags?: number): Promise<WireFrame> {
    const sequence = conn.nextSequence(this.#inUse)
    return new Promise<WireFrame>((resolve, reject) => {
      const onClose = () => {
        if (!this.#control.delete(sequence)) return
        const fatal = this.#fatal
        this.#fatal = undefined
        reject(fatal ?? new PolyCallError(ErrorCode.CONNECT_FAILED, 'the server closed the connection during setup'))
      }
      this.#control.set(sequence, (f) => {
        if (!answers(f)) return
        this.#control.delete(sequence)
        conn.socket.off('close', onClose)
        resolve(f)
      })
      conn.socket.once('close', onClose)
      conn.send(type, sequence, payload, flags)
    })
  }

  #lost(conn: Connection, error: PolyCallError | undefined): void {
    if (!conn.session.closed) conn.session.to(SessionState.Closed)
    if (conn !== this.#conn) return
    this.#conn = undefined
    const retired = conn === this.#retired
    this.#retired = undefined
    const reason = this.#fatal ?? error
    this.#fatal = undefined
    const retry: Call[] = []
    const lost: Call[] = []
    // A draining server's notice: nothing pending here ran there, idempotent or not.
    const neverRan = reason?.code === ErrorCode.UNAVAILABLE
    for (const call of this.#pending.values()) {
      // A pool's connection retries nothing itself: the pool sends the call to another endpoint.
      if ((call.idempotent || neverRan) && call.deadline > now() && !this.#closing && this.#owner === undefined) {
        call.written = false
        this.#counters.retried++
        retry.push(call)
      } else lost.push(call)
    }
    this.#pending.clear()
    this.#waiting = [...retry, ...this.#waiting]
    for (const call of lost) this.#settle(call, reason && reason.code !== ErrorCode.CONNECTION_LOST ? reason : lostError(call, reason))
    this.emit('disconnect', reason)
    if (this.#destroyed) return
    if (this.#closing) {
      // Graceful close in progress: anything still waiting cannot be sent any more.
      const waiting = this.#waiting
      this.#waiting = []
      for (const call of waiting) this.#settle(call, new PolyCallError(ErrorCode.CLOSED, 'the client closed'))
      this.#checkIdle()
      this.#idle?.()
      return
    }
    if (this.#owner !== undefined && this.#waiting.length > 0) {
      // Calls queued on a pool's connection never left: the pool routes them elsewhere.
      const waiting = this.#waiting
      this.#waiting = []
      for (const call of waiting) this.#settle(call, lostError(call, reason))
    }
    if (retired && reason === undefined) {
      // We closed a draining server's connection: reconnect at once, no backoff.
      this.#ensureConnection()
    } else if (this.#reconnect) {
      this.#connectFailed(reason ?? new PolyCallError(ErrorCode.CONNECTION_LOST, 'the connection closed'))
    } else {
      const waiting = this.#waiting
      this.#waiting = []
      for (const call of waiting) this.#settle(call, lostError(call, reason))
      this.#checkIdle()
    }
  }
}
