/**
 * The multi-endpoint side of PolyCallClient: one connection (or a small pool) per endpoint,
 * each an ordinary single-endpoint client with its own reconnection, heartbeats and pipelining;
 * this layer picks an endpoint per call (round robin, least in flight, or first ready), keeps
 * endpoint health (failures in a row eject an endpoint for a while, in the spirit of grpc-js's
 * outlier detection, never all of them), re-reads endpoint lists given as a function, and
 * fails calls over: a call lost with its endpoint goes to another one within its deadline when
 * it is idempotent (with the same idempotency key) or was never written, and a call a draining
 * server refused (`ERR_POLYCALL_UNAVAILABLE`, it never ran) goes to another one always.
 * @packageDocumentation
 */
import { randomFillSync } from 'node:crypto'
import { abortedError, checkSignal, checkTimeout, now, timeoutError, unrefTimer, type CallOptions } from '../core/abort.js'
import { channels } from '../core/diagnostics.js'
import { ErrorCode, PolyCallError, invalidArgument, isPolyCallError } from '../core/errors.js'
import { LatencyHistogram, type LatencySummary } from '../core/stats.js'
import type { ClientBaseOptions, ClientOptions, ClientStats, PolyCallClient, RequestOptions } from './client.js'

/** An endpoint: `'host:port'` (`'[::1]:7000'` for IPv6) or `{ host, port }`. */
export type Endpoint =
  | string
  | {
      /** Host name or address. */
      host: string
      /** TCP port, 1 to 65535. */
      port: number
    }

/** How a client with several endpoints picks one per call. */
export type BalanceMode = 'round-robin' | 'least-in-flight' | 'pick-first'

/**
 * Temporary ejection of failing endpoints: `consecutiveFailures` failures in a row eject an
 * endpoint for `baseTime × n` ms (n counts its ejections, one less for every `baseTime` it then
 * stayed healthy), at most `max(baseTime, maxTime)`. Never every endpoint: at most
 * `maxPercent` % of them (at least one when there are two or more).
 */
export interface EjectionOptions {
  /** Failures in a row that eject an endpoint. @defaultValue 5 */
  consecutiveFailures?: number | undefined
  /** @defaultValue 30000 */
  baseTime?: number | undefined
  /** @defaultValue 300000 */
  maxTime?: number | undefined
  /** @defaultValue 50 */
  maxPercent?: number | undefined
}

/** Options of a {@link PolyCallClient} with several endpoints. */
export interface MultiEndpointOptions extends ClientBaseOptions {
  /**
   * The servers, or a function returning them (sync or async), read at start, every
   * `refreshInterval`, and again (at most once a second) when an endpoint fails, is ejected, or a
   * call finds no endpoint ready. A read that throws or returns no endpoint keeps the current
   * list.
   */
  endpoints: readonly Endpoint[] | (() => readonly Endpoint[] | Promise<readonly Endpoint[]>)
  /**
   * `'round-robin'`: each ready endpoint in turn; `'least-in-flight'`: the ready endpoint with
   * the fewest calls in flight (ties in turn); `'pick-first'`: the first ready endpoint in list
   * order (the next ones are for failover). @defaultValue 'round-robin'
   */
  balance?: BalanceMode | undefined
  /** Connections per endpoint; a call goes to the one with the fewest calls in flight. @defaultValue 1 */
  connectionsPerEndpoint?: number | undefined
  /** Outlier ejection; `false` turns it off. @defaultValue see {@link EjectionOptions} */
  ejection?: EjectionOptions | false | undefined
  /** How often an endpoint function is read again, in ms. @defaultValue 30000 */
  refreshInterval?: number | undefined
  /** Endpoints one call may be tried on (the first try included). @defaultValue 5 */
  maxAttempts?: number | undefined
}

/** One endpoint in {@link ClientStats.endpoints}. */
export interface EndpointStats {
  /** `host:port`. */
  endpoint: string
  /** `ready` (a connection is up), `connecting` (never connected yet), `down`, or `ejected`. */
  state: 'ready' | 'connecting' | 'down' | 'ejected'
  /** Its connections that are up. */
  connections: number
  /** Calls in flight on its connections. */
  inFlight: number
  /** Attempts sent to it. */
  requests: number
  /** Attempts it answered with a value. */
  succeeded: number
  /** Attempts that failed there and were not sent elsewhere. */
  failed: number
  /** Calls that failed here and went on to another endpoint. */
  failovers: number
  /** Failures in a row (see {@link EjectionOptions}). */
  consecutiveFailures: number
  /** Times it was ejected. */
  ejections: number
  /** While ejected: ms until it takes calls again. */
  ejectedFor?: number
  /** Latency of the attempts it answered, in ms. */
  latency: LatencySummary
}

/**
 * @internal The idempotency key a pool hands its connection for one attempt, so every attempt of
 * one call carries the same key.
 */
export const IDEMPOTENCY_KEY: unique symbol = Symbol('polycall.idempotencyKey')

const DEFAULT_TIMEOUT = 5000
const MIN_REFRESH_GAP = 1000

function parseEndpoint(e: unknown): { host: string; port: number } {
  if (typeof e === 'string') {
    const m = /^\[([^\]]+)\]:(\d+)$|^([^:\s]+):(\d+)$/.exec(e)
    const host = m?.[1] ?? m?.[3]
    const port = Number(m?.[2] ?? m?.[4])
    if (!m || !host || !Number.isInteger(port) || port < 1 || port > 65535) throw invalidArgument(`endpoint ${JSON.stringify(e)} is not host:port`)
    return { host, port }
  }
  const o = e as { host?: unknown; port?: unknown } | null
  if (o === null || typeof o !== 'object' || typeof o.host !== 'string' || o.host === '') throw invalidArgument('an endpoint must be "host:port" or { host, port }')
  if (typeof o.port !== 'number' || !Number.isInteger(o.port) || o.port < 1 || o.port > 65535) throw invalidArgument('an endpoint port must be an integer in 1..65535')
  return { host: o.host, port: o.port }
}

function endpointId(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

function positiveInt(value: unknown, name: string, fallback: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) throw invalidArgument(`${name} must be an integer in ${min}..${max}`)
  return value
}

/** One connection of an endpoint. */
class Member {
  inFlight = 0
  /** A connect() this pool started is under way. */
  kicking = false
  constructor(
    readonly endpoint: EndpointState,
    readonly client: PolyCallClient,
  ) {}
}

class EndpointState {
  readonly id: string
  readonly members: Member[] = []
  everConnected = false
  /** The last connection attempt failed and no connection is up. */
  down = false
  consecutiveFailures = 0
  /** Monotonic ms until which it is ejected (0: not ejected). */
  ejectedUntil = 0
  ejectTimer: NodeJS.Timeout | undefined
  timesEjected = 0
  lastEjectionEnd = 0
  ejections = 0
  removed = false
  lastError: PolyCallError | undefined
  requests = 0
  succeeded = 0
  failed = 0
  failovers = 0
  readonly latency = new LatencyHistogram()
  constructor(
    readonly host: string,
    readonly port: number,
  ) {
    this.id = endpointId(host, port)
  }
  get ejected(): boolean {
    return this.ejectedUntil !== 0
  }
  get inFlight(): number {
    let n = 0
    for (const m of this.members) n += m.inFlight
    return n
  }
  get connections(): number {
    let n = 0
    for (const m of this.members) if (m.client.connected) n++
    return n
  }
  /** The connected member with the fewest calls in flight. */
  member(): Member | undefined {
    let best: Member | undefined
    for (const m of this.members) if (m.client.connected && (best === undefined || m.inFlight < best.inFlight)) best = m
    return best
  }
}

/** One logical call: every attempt shares its deadline, signal and idempotency key. */
class PoolCall {
  attempts = 0
  settled = false
  readonly tried = new Set<EndpointState>()
  lastError: PolyCallError | undefined
  timer: NodeJS.Timeout | undefined
  onAbort: (() => void) | undefined
  constructor(
    readonly kind: 'request' | 'control',
    readonly command: string,
    readonly data: unknown,
    readonly options: RequestOptions,
    readonly authToken: string | undefined,
    readonly started: number,
    /** Monotonic end of the call's own timeout (Infinity: none). */
    readonly ownEnd: number,
    /** Monotonic end of whichever bound comes first. */
    readonly end: number,
    readonly idempotent: boolean,
    readonly key: Buffer | undefined,
    readonly signal: AbortSignal | undefined,
    readonly resolve: (v: unknown) => void,
    readonly reject: (e: PolyCallError) => void,
  ) {}
}

/** @internal The router behind a PolyCallClient created with `endpoints`. */
export class EndpointPool {
  readonly host: string
  readonly port: number
  readonly #owner: PolyCallClient
  readonly #make: (o: ClientOptions) => PolyCallClient
  readonly #memberOptions: ClientBaseOptions
  readonly #source: (() => readonly Endpoint[] | Promise<readonly Endpoint[]>) | undefined
  readonly #balance: BalanceMode
  readonly #perEndpoint: number
  readonly #ejection: Required<{ [K in keyof EjectionOptions]-?: number }> | undefined
  readonly #refreshInterval: number
  readonly #maxAttempts: number
  readonly #timeout: number | undefined
  #endpoints: EndpointState[] = []
  #queue: PoolCall[] = []
  #active = 0
  #rr = 0
  #everConnected = false
  #closing = false
  #destroyed = false
  #closePromise: Promise<void> | undefined
  #idle: (() => void) | undefined
  #refreshTimer: NodeJS.Timeout | undefined
  #refreshing: Promise<void> | undefined
  #lastRefresh = -Infinity
  #listError: PolyCallError | undefined
  /** Keeps the process alive while calls wait for an endpoint. */
  #keepAlive: NodeJS.Timeout | undefined
  readonly #latency = new LatencyHistogram()
  readonly #counters = { requests: 0, succeeded: 0, failed: 0, timedOut: 0, aborted: 0, retried: 0 }

  constructor(owner: PolyCallClient, options: MultiEndpointOptions, make: (o: ClientOptions) => PolyCallClient) {
    this.#owner = owner
    this.#make = make
    const balance = options.balance ?? 'round-robin'
    if (balance !== 'round-robin' && balance !== 'least-in-flight' && balance !== 'pick-first') throw invalidArgument(`unknown balance ${String(balance)}`)
    this.#balance = balance
    this.#perEndpoint = positiveInt(options.connectionsPerEndpoint, 'connectionsPerEndpoint', 1, 1, 64)
    this.#maxAttempts = positiveInt(options.maxAttempts, 'maxAttempts', 5, 1, 100)
    this.#refreshInterval = positiveInt(options.refreshInterval, 'refreshInterval', 30_000, 10)
    const ej = options.ejection
    if (ej !== undefined && ej !== false && (ej === null || typeof ej !== 'object')) throw invalidArgument('ejection must be an object or false')
    this.#ejection =
      ej === false
        ? undefined
        : {
            consecutiveFailures: positiveInt(ej?.consecutiveFailures, 'ejection.consecutiveFailures', 5),
            baseTime: positiveInt(ej?.baseTime, 'ejection.baseTime', 30_000),
            maxTime: positiveInt(ej?.maxTime, 'ejection.maxTime', 300_000),
            maxPercent: positiveInt(ej?.maxPercent, 'ejection.maxPercent', 50, 1, 100),
          }
    this.#timeout = options.timeout === undefined ? DEFAULT_TIMEOUT : checkTimeout(options.timeout)
    const {
      endpoints,
      balance: _b,
      connectionsPerEndpoint: _c,
      ejection: _e,
      refreshInterval: _r,
      maxAttempts: _m,
      ...rest
    } = options as MultiEndpointOptions & { host?: unknown; port?: unknown }
    this.#memberOptions = rest
    if (typeof endpoints === 'function') {
      this.#source = endpoints
      this.host = ''
      this.port = 0
      void this.#refresh()
      this.#refreshTimer = setInterval(() => void this.#refresh(), this.#refreshInterval)
      this.#refreshTimer.unref()
    } else {
      if (!Array.isArray(endpoints) || endpoints.length === 0) throw invalidArgument('endpoints must be a non-empty array or a function')
      this.#source = undefined
      this.#apply(endpoints.map(parseEndpoint))
      this.host = this.#endpoints[0]!.host
      this.port = this.#endpoints[0]!.port
    }
  }

  get connected(): boolean {
    return this.#endpoints.some((e) => !e.removed && e.connections > 0)
  }

  get closed(): boolean {
    return this.#closing
  }

  get destroyed(): boolean {
    return this.#destroyed
  }

  // ---- endpoint list ---------------------------------------------------------------------

  /** Brings the endpoint list in line with `list`: new endpoints get connections, gone ones drain. */
  #apply(list: { host: string; port: number }[]): { added: string[]; removed: string[] } {
    const wanted = new Map<string, { host: string; port: number }>()
    for (const e of list) wanted.set(endpointId(e.host, e.port), e)
    const added: string[] = []
    const removed: string[] = []
    const kept: EndpointState[] = []
    for (const ep of this.#endpoints) {
      if (wanted.has(ep.id)) {
        kept.push(ep)
        wanted.delete(ep.id)
      } else {
        ep.removed = true
        removed.push(ep.id)
        if (ep.ejectTimer) clearTimeout(ep.ejectTimer)
        // Calls in flight there finish; nothing new is sent.
        for (const m of ep.members) void m.client.close().catch(() => {})
      }
    }
    for (const [id, { host, port }] of wanted) {
      const ep = new EndpointState(host, port)
      for (let i = 0; i < this.#perEndpoint; i++) ep.members.push(this.#member(ep))
      kept.push(ep)
      added.push(id)
    }
    // Keep the order the list gives (pick-first follows it).
    const order = new Map(list.map((e, i) => [endpointId(e.host, e.port), i]))
    kept.sort((a, b) => order.get(a.id)! - order.get(b.id)!)
    this.#endpoints = kept
    return { added, removed }
  }

  #refresh(): Promise<void> {
    const source = this.#source
    if (!source || this.#closing) return Promise.resolve()
    this.#refreshing ??= (async () => {
      this.#lastRefresh = now()
      try {
        const list = await source()
        if (!Array.isArray(list) || list.length === 0) throw invalidArgument('the endpoints function returned no endpoint')
        const parsed = list.map(parseEndpoint)
        if (this.#closing) return
        const { added, removed } = this.#apply(parsed)
        this.#listError = undefined
        if (added.length > 0 || removed.length > 0) this.#owner.emit('endpoints', { endpoints: this.#endpoints.map((e) => e.id), added, removed })
        // A client in use connects to new endpoints at once, so they take their share.
        if (added.length > 0 && (this.#everConnected || this.#queue.length > 0)) this.#kick()
        this.#pump()
      } catch (e) {
        const err = isPolyCallError(e) ? e : new PolyCallError(ErrorCode.CONNECT_FAILED, `the endpoints function failed: ${String((e as Error)?.message ?? e)}`, { cause: e })
        this.#listError = err
        if (channels.clientError.hasSubscribers) channels.clientError.publish({ client: this.#owner, error: err })
        this.#owner.emit('endpoints', { endpoints: this.#endpoints.map((x) => x.id), added: [], removed: [], error: err })
        // Nothing to route to yet: the calls waiting for a first list fail with why.
        if (this.#endpoints.length === 0) this.#failQueue(err)
      } finally {
        this.#refreshing = undefined
      }
    })()
    return this.#refreshing
  }

  /** A read of the endpoint function soon, when something failed (at most once a second). */
  #refreshSoon(): void {
    if (this.#source && !this.#refreshing && now() - this.#lastRefresh >= Math.min(MIN_REFRESH_GAP, this.#refreshInterval)) void this.#refresh()
  }

  #member(ep: EndpointState): Member {
    const client = this.#make({ ...this.#memberOptions, host: ep.host, port: ep.port, member: this.#owner })
    const m = new Member(ep, client)
    client.on('connect', (info) => {
      ep.everConnected = true
      ep.down = false
      this.#everConnected = true
      this.#owner.emit('connect', { ...info, endpoint: ep.id })
      this.#pump()
    })
    client.on('disconnect', (error) => {
      if (!this.#closing && !ep.removed && error !== undefined) {
        ep.lastError = error
        this.#failure(ep)
      }
      this.#owner.emit('disconnect', error, ep.id)
    })
    client.on('reconnecting', (info) => {
      ep.lastError = info.error
      if (ep.connections === 0) ep.down = true
      if (!ep.removed && !this.#closing) this.#failure(ep)
      this.#owner.emit('reconnecting', { ...info, endpoint: ep.id })
      this.#refreshSoon()
      this.#checkAllDown()
    })
    client.on('unsolicited', (f) => this.#owner.emit('unsolicited', f))
    return m
  }

  // ---- health ----------------------------------------------------------------------------

  #failure(ep: EndpointState): void {
    ep.consecutiveFailures++
    const ej = this.#ejection
    if (!ej || ep.ejected || ep.consecutiveFailures < ej.consecutiveFailures) return
    const live = this.#endpoints.filter((e) => !e.removed)
    const ejected = live.filter((e) => e.ejected).length
    // Never all of them, and at most maxPercent (at least one of two or more).
    if (live.length < 2 || ejected + 1 >= live.length) return
    if (ejected > 0 && (ejected + 1) * 100 > ej.maxPercent * live.length) return
    const t = now()
    if (ep.lastEjectionEnd > 0) ep.timesEjected = Math.max(0, ep.timesEjected - Math.floor((t - ep.lastEjectionEnd) / ej.baseTime))
    ep.timesEjected++
    ep.ejections++
    const duration = Math.min(ej.baseTime * ep.timesEjected, Math.max(ej.baseTime, ej.maxTime))
    ep.ejectedUntil = t + duration
    ep.ejectTimer = unrefTimer(() => {
      ep.ejectTimer = undefined
      ep.ejectedUntil = 0
      ep.lastEjectionEnd = now()
      ep.consecutiveFailures = 0
      this.#owner.emit('restore', { endpoint: ep.id })
      this.#pump()
    }, duration)
    this.#owner.emit('eject', { endpoint: ep.id, failures: ep.consecutiveFailures, duration, ejections: ep.ejections })
    this.#refreshSoon()
  }

  /**
   * Before any endpoint ever connected, calls fail at once when every endpoint's attempt failed
   * (as a single-endpoint client's do), with the last failure as the reason.
   */
  #checkAllDown(): void {
    if (this.#everConnected || this.#queue.length === 0) return
    const live = this.#endpoints.filter((e) => !e.removed)
    if (live.length > 0 && live.every((e) => e.down)) this.#failQueue(this.#noEndpoint())
  }

  #noEndpoint(): PolyCallError {
    const last = this.#endpoints.find((e) => e.lastError)?.lastError ?? this.#listError
    return new PolyCallError(
      last?.code === undefined || last.code === ErrorCode.CONNECTION_LOST ? ErrorCode.CONNECT_FAILED : last.code,
      `no endpoint could be reached${last ? `: ${last.message}` : ''}`,
      { cause: last?.cause ?? last },
    )
  }

  // ---- routing ---------------------------------------------------------------------------

  /** How good an endpoint is for a call: 0 best, 3 unusable. */
  #level(ep: EndpointState, call: PoolCall): number {
    if (ep.removed || ep.connections === 0) return 3
    if (ep.ejected) return 2
    return call.tried.has(ep) ? 1 : 0
  }

  #pick(call: PoolCall): Member | undefined {
    const eps = this.#endpoints
    const n = eps.length
    if (n === 0) return undefined
    let best: EndpointState | undefined
    let bestLevel = 3
    if (this.#balance === 'least-in-flight') {
      const start = this.#rr++ % n
      let bestLoad = Infinity
      for (let i = 0; i < n; i++) {
        const ep = eps[(start + i) % n]!
        const level = this.#level(ep, call)
        if (level === 3) continue
        const load = ep.inFlight / ep.connections
        if (level < bestLevel || (level === bestLevel && load < bestLoad)) {
          best = ep
          bestLevel = level
          bestLoad = load
        }
      }
    } else {
      const start = this.#balance === 'round-robin' ? this.#rr++ % n : 0
      for (let i = 0; i < n && bestLevel > 0; i++) {
        const ep = eps[(start + i) % n]!
        const level = this.#level(ep, call)
        if (level < bestLevel) {
          best = ep
          bestLevel = level
        }
      }
    }
    return best?.member()
  }

  call(kind: 'request' | 'control', command: string, data: unknown, options: RequestOptions, authToken: string | undefined): Promise<unknown> {
    if (typeof command !== 'string' || command.length === 0) return Promise.reject(invalidArgument('command must be a non-empty string'))
    let signal: AbortSignal | undefined
    let timeout: number | undefined
    const parent = options.deadline
    try {
      signal = checkSignal(options.signal)
      timeout = options.timeout === undefined ? this.#timeout : checkTimeout(options.timeout)
      if (parent !== undefined && (typeof parent !== 'number' || Number.isNaN(parent))) {
        throw invalidArgument('deadline must be a number of Date.now() milliseconds (or Infinity)')
      }
    } catch (e) {
      return Promise.reject(e)
    }
    if (this.#closing) return Promise.reject(new PolyCallError(ErrorCode.CLOSED, 'the client is closed'))
    return new Promise<unknown>((resolve, reject) => {
      const started = now()
      const ownEnd = timeout === undefined ? Infinity : started + timeout
      const parentEnd = parent === undefined || parent === Infinity ? Infinity : started + (parent - Date.now())
      const idempotent = options.idempotent === true
      const key = idempotent ? newKey() : undefined
      const call = new PoolCall(
        kind,
        command,
        data,
        options,
        authToken,
        started,
        ownEnd,
        Math.min(ownEnd, parentEnd),
        idempotent,
        key,
        signal,
        resolve,
        reject,
      )
      this.#counters.requests++
      this.#active++
      this.#dispatch(call)
    })
  }

  #dispatch(call: PoolCall): void {
    if (call.settled) return
    const m = this.#pick(call)
    if (m === undefined) {
      this.#enqueue(call)
      return
    }
    const remaining = call.ownEnd - now()
    if (call.attempts > 0 && remaining <= 0) {
      this.#settle(call, timeoutError(call.ownEnd - call.started, `${call.kind} ${call.command}`, call.lastError))
      return
    }
    call.attempts++
    m.inFlight++
    const ep = m.endpoint
    ep.requests++
    const t0 = now()
    const o = call.options
    const attempt: RequestOptions & { [IDEMPOTENCY_KEY]?: Buffer } = {
      timeout: call.ownEnd === Infinity ? Infinity : Math.max(0, remaining),
      deadline: o.deadline,
      signal: call.signal,
      idempotent: call.idempotent,
      trace: o.trace,
    }
    if (call.key !== undefined) attempt[IDEMPOTENCY_KEY] = call.key
    const p =
      call.kind === 'control'
        ? m.client.control(call.command, { authToken: call.authToken, timeout: attempt.timeout, signal: call.signal })
        : m.client.request(call.command, call.data, attempt)
    p.then(
      (value) => {
        m.inFlight--
        ep.succeeded++
        ep.consecutiveFailures = 0
        ep.latency.record(now() - t0)
        this.#settle(call, undefined, value)
        this.#pump()
      },
      (e: unknown) => {
        m.inFlight--
        this.#attemptFailed(call, m, isPolyCallError(e) ? e : new PolyCallError(ErrorCode.INTERNAL, String(e), { cause: e }))
        this.#pump()
      },
    )
  }

  #attemptFailed(call: PoolCall, m: Member, err: PolyCallError): void {
    const ep = m.endpoint
    const e = err as PolyCallError & { written?: boolean; remote?: boolean }
    // Failures of the endpoint itself (not of the call): transport failures are counted by the
    // connection's events; a server that refuses (draining) or fails internally counts here.
    if ((e.code === ErrorCode.UNAVAILABLE || e.code === ErrorCode.INTERNAL) && e.remote === true) this.#failure(ep)
    const neverRan =
      e.code === ErrorCode.UNAVAILABLE ||
      e.code === ErrorCode.CONNECT_FAILED ||
      (e.code === ErrorCode.CONNECTION_LOST && e.written === false) ||
      (e.code === ErrorCode.CLOSED && ep.removed && !this.#closing)
    const retry = !this.#destroyed && (neverRan || (e.code === ErrorCode.CONNECTION_LOST && call.idempotent))
    if (retry && call.attempts < this.#maxAttempts && now() < call.end) {
      call.tried.add(ep)
      call.lastError = e
      ep.failovers++
      this.#counters.retried++
      this.#dispatch(call)
      return
    }
    ep.failed++
    this.#settle(call, e)
  }

  #enqueue(call: PoolCall): void {
    if (!this.#everConnected) {
      const live = this.#endpoints.filter((e) => !e.removed)
      if ((live.length > 0 && live.every((e) => e.down)) || (live.length === 0 && this.#listError && !this.#refreshing)) {
        this.#settle(call, this.#noEndpoint())
        return
      }
    }
    this.#queue.push(call)
    if (call.end !== Infinity && call.timer === undefined) {
      call.timer = unrefTimer(() => {
        call.timer = undefined
        if (call.end === call.ownEnd) {
          this.#counters.timedOut++
          this.#settle(call, timeoutError(call.ownEnd - call.started, `${call.kind} ${call.command}`, call.lastError ?? this.#noEndpoint()))
        } else {
          this.#settle(call, new PolyCallError(ErrorCode.DEADLINE_EXCEEDED, `${call.kind} ${call.command}: the propagated deadline passed`, { cause: call.lastError }))
        }
      }, call.end - now())
    }
    if (call.signal && call.onAbort === undefined) {
      const signal = call.signal
      call.onAbort = () => {
        const reason: unknown = signal.reason
        if (isPolyCallError(reason) && reason.code === ErrorCode.DEADLINE_EXCEEDED) {
          this.#settle(call, new PolyCallError(ErrorCode.DEADLINE_EXCEEDED, `${call.kind} ${call.command}: the propagated deadline passed`, { cause: reason }))
        } else {
          this.#counters.aborted++
          this.#settle(call, abortedError(signal))
        }
      }
      signal.addEventListener('abort', call.onAbort, { once: true })
      if (signal.aborted) call.onAbort()
    }
    if (this.#keepAlive === undefined) this.#keepAlive = setInterval(() => {}, 1 << 30)
    this.#kick()
    this.#refreshSoon()
  }

  /** Asks every connection that is not up to connect now; their own backoff goes on after. */
  #kick(): void {
    for (const ep of this.#endpoints) {
      if (ep.removed) continue
      for (const member of ep.members) {
        if (member.kicking || member.client.connected || member.client.closed) continue
        member.kicking = true
        member.client.connect().then(
          () => (member.kicking = false),
          (e: unknown) => {
            member.kicking = false
            if (isPolyCallError(e)) ep.lastError = e
            if (ep.connections === 0) ep.down = true
            this.#checkAllDown()
          },
        )
      }
    }
  }

  /** Sends queued calls to endpoints that became ready. */
  #pump(): void {
    if (this.#queue.length === 0) return
    const queue = this.#queue
    this.#queue = []
    for (const call of queue) {
      if (call.settled) continue
      const m = this.#pick(call)
      if (m === undefined) {
        this.#queue.push(call)
        continue
      }
      this.#unqueue(call)
      this.#dispatch(call)
    }
    if (this.#queue.length > 0) this.#kick()
    this.#queueChanged()
  }

  #unqueue(call: PoolCall): void {
    if (call.timer) clearTimeout(call.timer)
    call.timer = undefined
    if (call.onAbort) call.signal!.removeEventListener('abort', call.onAbort)
    call.onAbort = undefined
  }

  #queueChanged(): void {
    if (this.#queue.length === 0 && this.#keepAlive !== undefined) {
      clearInterval(this.#keepAlive)
      this.#keepAlive = undefined
    }
  }

  #failQueue(err: PolyCallError): void {
    const queue = this.#queue
    this.#queue = []
    for (const call of queue) this.#settle(call, new PolyCallError(err.code, err.message, { cause: err.cause }))
    this.#queueChanged()
  }

  #settle(call: PoolCall, err: PolyCallError | undefined, value?: unknown): void {
    if (call.settled) return
    call.settled = true
    this.#unqueue(call)
    const i = this.#queue.indexOf(call)
    if (i >= 0) {
      this.#queue.splice(i, 1)
      this.#queueChanged()
    }
    this.#active--
    if (err) {
      if (err.code === ErrorCode.TIMEOUT) this.#counters.timedOut++
      else if (err.code === ErrorCode.ABORTED) this.#counters.aborted++
      else this.#counters.failed++
      call.reject(err)
    } else {
      this.#counters.succeeded++
      this.#latency.record(now() - call.started)
      call.resolve(value)
    }
    if (this.#active === 0) this.#idle?.()
  }

  // ---- lifecycle -------------------------------------------------------------------------

  async connect(options: CallOptions): Promise<void> {
    if (this.#closing) throw new PolyCallError(ErrorCode.CLOSED, 'the client is closed')
    if (this.connected) return
    if (this.#source && this.#endpoints.length === 0) {
      await (this.#refreshing ?? this.#refresh())
      if (this.#endpoints.length === 0) throw this.#noEndpoint()
    }
    const attempts = this.#endpoints.flatMap((ep) => ep.members.map((m) => m.client.connect(options)))
    try {
      await Promise.any(attempts)
    } catch (e) {
      const errors = (e as AggregateError).errors as PolyCallError[]
      throw errors.find((x) => x.code !== ErrorCode.CONNECT_FAILED) ?? errors[0] ?? this.#noEndpoint()
    }
  }

  async authenticate(credentials: unknown, options: CallOptions): Promise<void> {
    if (this.#closing) throw new PolyCallError(ErrorCode.CLOSED, 'the client is closed')
    ;(this.#memberOptions as { credentials?: unknown }).credentials = credentials
    if (this.#source && this.#endpoints.length === 0) await (this.#refreshing ?? this.#refresh())
    const attempts = this.#endpoints.flatMap((ep) => ep.members.map((m) => m.client.authenticate(credentials, options)))
    for (const a of attempts) a.catch(() => {})
    try {
      await Promise.any(attempts)
    } catch (e) {
      const errors = (e as AggregateError).errors as PolyCallError[]
      throw errors.find((x) => x.code === ErrorCode.UNAUTHENTICATED) ?? errors[0] ?? this.#noEndpoint()
    }
  }

  close(options: CallOptions): Promise<void> {
    if (this.#closePromise) return this.#closePromise
    this.#closing = true
    if (this.#refreshTimer) clearInterval(this.#refreshTimer)
    this.#closePromise = (async () => {
      if (this.#active > 0) {
        await new Promise<void>((resolve) => {
          const force = () => this.destroy(new PolyCallError(ErrorCode.CLOSED, 'the client closed before the request finished'))
          const timeout = checkTimeout(options.timeout)
          const timer = timeout === undefined ? undefined : unrefTimer(force, timeout)
          options.signal?.addEventListener('abort', force, { once: true })
          this.#idle = () => {
            this.#idle = undefined
            if (timer) clearTimeout(timer)
            options.signal?.removeEventListener('abort', force)
            resolve()
          }
          if (this.#active === 0) this.#idle()
        })
      }
      for (const ep of this.#endpoints) if (ep.ejectTimer) clearTimeout(ep.ejectTimer)
      await Promise.all(this.#endpoints.flatMap((ep) => ep.members.map((m) => m.client.close())))
    })()
    return this.#closePromise
  }

  destroy(reason: PolyCallError | undefined): void {
    if (this.#destroyed) return
    this.#destroyed = true
    this.#closing = true
    if (this.#refreshTimer) clearInterval(this.#refreshTimer)
    const err = reason ?? new PolyCallError(ErrorCode.CLOSED, 'the client was destroyed')
    this.#failQueue(err)
    for (const ep of this.#endpoints) {
      if (ep.ejectTimer) clearTimeout(ep.ejectTimer)
      for (const m of ep.members) m.client.destroy(err)
    }
  }

  stats(): ClientStats {
    const c = this.#counters
    const endpoints: EndpointStats[] = []
    let inFlight = 0
    let reconnects = 0
    let capabilities = 0
    let legacy = false
    const t = now()
    for (const ep of this.#endpoints) {
      if (ep.removed) continue
      const connections = ep.connections
      inFlight += ep.inFlight
      for (const m of ep.members) {
        const s = m.client.stats()
        reconnects += s.reconnects
        if (s.connected) {
          capabilities = s.capabilities
          legacy = s.legacy
        }
      }
      const stat: EndpointStats = {
        endpoint: ep.id,
        state: ep.ejected ? 'ejected' : connections > 0 ? 'ready' : ep.everConnected || ep.down ? 'down' : 'connecting',
        connections,
        inFlight: ep.inFlight,
        requests: ep.requests,
        succeeded: ep.succeeded,
        failed: ep.failed,
        failovers: ep.failovers,
        consecutiveFailures: ep.consecutiveFailures,
        ejections: ep.ejections,
        latency: ep.latency.summary(),
      }
      if (ep.ejected) stat.ejectedFor = Math.max(0, Math.round(ep.ejectedUntil - t))
      endpoints.push(stat)
    }
    return {
      connected: this.connected,
      legacy,
      capabilities,
      reconnects,
      requests: {
        total: c.requests,
        inFlight,
        queued: this.#queue.length,
        succeeded: c.succeeded,
        failed: c.failed,
        timedOut: c.timedOut,
        aborted: c.aborted,
        retried: c.retried,
      },
      latency: this.#latency.summary(),
      endpoints,
    }
  }
}

// Idempotency keys: 128 random bits each, cut from a block filled 256 keys at a time (a
// `randomBytes` call per key costs more than the rest of a small call's bookkeeping). A key is
// a view of its block, which is never written again.
let keyBlock = Buffer.alloc(0)
let keyPos = 0
/** @internal A new random 128-bit idempotency key. */
export function newKey(): Buffer {
  if (keyPos + 16 > keyBlock.length) {
    keyBlock = randomFillSync(Buffer.allocUnsafeSlow(4096))
    keyPos = 0
  }
  const key = keyBlock.subarray(keyPos, keyPos + 16)
  keyPos += 16
  return key
}
