/**
 * A library context: defaults shared by everything created through it (timeouts, limits,
 * payload codec, logging), and ownership of what it created. `await ctx.close()` (or
 * `await using ctx = createContext()`) closes every client, server and state machine it made, in
 * reverse order of creation.
 * @packageDocumentation
 */
import { PolyCallClient, type ClientOptions, type ReconnectOptions } from './client/client.js'
import type { ServerOptions } from './server/options.js'
import { PolyCallServer } from './server/server.js'
import { StateMachine, type StateMachineOptions } from './state/machine.js'
import { ErrorCode, PolyCallError, invalidArgument } from './core/errors.js'
import { checkOptionKeys, optionKeys } from './core/options.js'

/** Where a context sends what happens to the things it owns. Every method is optional. */
export interface Logger {
  /** Detail for debugging. */
  debug?(message: string, fields?: Record<string, unknown>): void
  /** Connections made. */
  info?(message: string, fields?: Record<string, unknown>): void
  /** Disconnections and reconnection attempts. */
  warn?(message: string, fields?: Record<string, unknown>): void
  /** Server errors (handler failures peers see as `ERR_POLYCALL_INTERNAL`) and failed closes. */
  error?(message: string, fields?: Record<string, unknown>): void
}

/** Server limits a context applies unless a server's own options say otherwise. */
export interface ContextLimits {
  /** See {@link ServerOptions.maxConnections}. @defaultValue the server's default */
  maxConnections?: number
  /** See {@link ServerOptions.maxPayload}. @defaultValue the server's default */
  maxPayload?: number
  /** See {@link ServerOptions.maxInFlight}. @defaultValue the server's default */
  maxInFlight?: number
  /** See {@link ServerOptions.handshakeTimeout}. @defaultValue the server's default */
  handshakeTimeout?: number
  /** See {@link ServerOptions.idleTimeout}. @defaultValue the server's default */
  idleTimeout?: number
  /** See {@link ServerOptions.heartbeatInterval}. @defaultValue the server's default */
  heartbeatInterval?: number
  /** See {@link ServerOptions.stallTimeout}. @defaultValue the server's default */
  stallTimeout?: number
  /** See {@link ServerOptions.requestTimeout}. @defaultValue the server's default */
  requestTimeout?: number
  /** See {@link ServerOptions.authTimeout}. @defaultValue the server's default */
  authTimeout?: number
  /** See {@link ServerOptions.frameTimeout}. @defaultValue the server's default */
  frameTimeout?: number
  /** See {@link ServerOptions.maxDeadline}. @defaultValue the server's default */
  maxDeadline?: number
  /** See {@link ServerOptions.maxWriteBuffer}. @defaultValue the server's default */
  maxWriteBuffer?: number
  /** See {@link ServerOptions.drainTimeout}. @defaultValue the server's default */
  drainTimeout?: number
}

/** Options of {@link createContext}. */
export interface ContextOptions {
  /** Default request timeout of clients (ms). @defaultValue the client's default, 5000 */
  timeout?: number
  /** Default connect timeout of clients (ms). @defaultValue the client's default, 10000 */
  connectTimeout?: number
  /** Default reconnection policy of clients. @defaultValue the client's default */
  reconnect?: ReconnectOptions | boolean
  /** Default payload codec of clients towards polycall servers. @defaultValue 'msgpack' */
  codec?: 'msgpack' | 'json'
  /** Default server limits. @defaultValue none: each server's own defaults */
  limits?: ContextLimits
  /**
   * Receives connection, reconnection and server error reports. Credentials never appear.
   * @defaultValue none (servers then log handler errors to stderr themselves)
   */
  logger?: Logger
}

/** @internal Every key of {@link ContextOptions} and {@link ContextLimits}: others are refused. */
const CONTEXT_OPTION_KEYS = optionKeys<ContextOptions>()(['timeout', 'connectTimeout', 'reconnect', 'codec', 'limits', 'logger'])
/** @internal */
const CONTEXT_LIMIT_KEYS = optionKeys<ContextLimits>()([
  'maxConnections',
  'maxPayload',
  'maxInFlight',
  'handshakeTimeout',
  'idleTimeout',
  'heartbeatInterval',
  'stallTimeout',
  'requestTimeout',
  'authTimeout',
  'frameTimeout',
  'maxDeadline',
  'maxWriteBuffer',
  'drainTimeout',
])

/** Anything a context can own. */
interface Owned {
  kind: 'client' | 'server' | 'state machine' | 'resource'
  close(): Promise<void> | void
}

/**
 * Shared defaults and ownership for clients, servers and state machines.
 *
 * @example
 * ```ts
 * await using ctx = createContext({ timeout: 2000, logger: console })
 * const server = ctx.server()
 * server.route('ping', () => 'pong')
 * const { port } = await server.listen(0)
 * const client = ctx.client({ port })
 * await client.request('ping')
 * // leaving the block closes the client, then the server
 * ```
 */
export class Context {
  readonly #options: ContextOptions
  readonly #owned: Owned[] = []
  #closePromise: Promise<void> | undefined

  /** @param options - defaults and logging */
  constructor(options: ContextOptions = {}) {
    if (options === null || typeof options !== 'object') throw invalidArgument('context options must be an object')
    checkOptionKeys(options, CONTEXT_OPTION_KEYS, 'ContextOptions')
    checkOptionKeys(options.limits, CONTEXT_LIMIT_KEYS, 'ContextOptions.limits')
    this.#options = options
  }

  /** True once close() was called. */
  get closed(): boolean {
    return this.#closePromise !== undefined
  }

  /** The defaults this context applies. */
  get options(): Readonly<ContextOptions> {
    return this.#options
  }

  /**
   * A client with the context's defaults under `options`.
   *
   * @throws `ERR_POLYCALL_CLOSED` once the context is closed
   */
  client(options: ClientOptions): PolyCallClient {
    this.#open()
    const o = this.#options
    const client = new PolyCallClient({
      ...(o.timeout !== undefined ? { timeout: o.timeout } : {}),
      ...(o.connectTimeout !== undefined ? { connectTimeout: o.connectTimeout } : {}),
      ...(o.reconnect !== undefined ? { reconnect: o.reconnect } : {}),
      ...(o.codec !== undefined ? { codec: o.codec } : {}),
      ...options,
    })
    const log = o.logger
    if (log) {
      const where = { host: client.host, port: client.port, protocol: client.protocol }
      client.on('connect', (info) => log.info?.('polycall client connected', { ...where, ...info }))
      client.on('disconnect', (error) => log.warn?.('polycall client disconnected', { ...where, code: error?.code }))
      client.on('reconnecting', ({ attempt, delay, error }) =>
        log.warn?.('polycall client reconnecting', { ...where, attempt, delayMs: Math.round(delay), code: error.code }),
      )
    }
    this.#own({ kind: 'client', close: () => client.close() }, client, 'close')
    return client
  }

  /**
   * A server with the context's limits under `options`.
   *
   * @throws `ERR_POLYCALL_CLOSED` once the context is closed
   */
  server(options: ServerOptions = {}): PolyCallServer {
    this.#open()
    const log = this.#options.logger
    const userOnError = options.onError
    const server = new PolyCallServer({
      ...this.#options.limits,
      ...options,
      // Without a logger or a handler of its own, the server's default (a line on stderr) applies.
      onError:
        log?.error || userOnError
          ? (error, ctx) => {
              log?.error?.('polycall server error', { error, command: ctx?.command })
              userOnError?.(error, ctx)
            }
          : undefined,
    })
    this.#own({ kind: 'server', close: () => server.close() }, server, 'close')
    return server
  }

  /**
   * A state machine, freed when the context closes.
   *
   * @throws `ERR_POLYCALL_CLOSED` once the context is closed
   */
  stateMachine(options: StateMachineOptions = {}): StateMachine {
    this.#open()
    const sm = new StateMachine(options)
    this.#own({ kind: 'state machine', close: () => sm.free() })
    return sm
  }

  /**
   * Hands any closable resource to the context: it is closed with the rest.
   *
   * @typeParam T - anything with `close()` or `[Symbol.asyncDispose]()`
   * @param resource - the resource
   * @returns the resource
   * @throws `ERR_POLYCALL_CLOSED` once the context is closed
   */
  track<
    T extends
      | {
          /** Closes the resource (awaited when it returns a promise). */
          close(): unknown
        }
      | {
          /** Closes the resource. */
          [Symbol.asyncDispose](): PromiseLike<void>
        },
  >(resource: T): T {
    this.#open()
    const close =
      'close' in resource && typeof resource.close === 'function'
        ? () => resource.close() as Promise<void> | void
        : () => (resource as { [Symbol.asyncDispose](): PromiseLike<void> })[Symbol.asyncDispose]() as Promise<void>
    this.#own({ kind: 'resource', close })
    return resource
  }

  /**
   * Closes everything created through this context, newest first, each gracefully. Idempotent:
   * every call returns the same promise.
   *
   * @throws an `AggregateError` of the failures, after every close was attempted
   */
  close(): Promise<void> {
    this.#closePromise ??= (async () => {
      const failures: unknown[] = []
      while (this.#owned.length > 0) {
        const owned = this.#owned.pop()!
        try {
          await owned.close()
        } catch (error) {
          failures.push(error)
          this.#options.logger?.error?.(`polycall context: closing a ${owned.kind} failed`, { error })
        }
      }
      if (failures.length > 0) throw new AggregateError(failures, 'closing the context failed')
    })()
    return this.#closePromise
  }

  /** `await using ctx = createContext()` closes it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  #open(): void {
    if (this.#closePromise) throw new PolyCallError(ErrorCode.CLOSED, 'the context is closed')
  }

  /** Owns `entry` until the context closes, or until `emitter` emits `event` on its own. */
  #own(entry: Owned, emitter?: { once(event: string, fn: () => void): unknown }, event?: string): void {
    this.#owned.push(entry)
    emitter?.once(event!, () => {
      if (this.#closePromise) return
      const i = this.#owned.indexOf(entry)
      if (i >= 0) this.#owned.splice(i, 1)
    })
  }
}

/**
 * Creates a {@link Context}.
 *
 * @param options - defaults for everything created through it
 * @returns the context
 */
export function createContext(options: ContextOptions = {}): Context {
  return new Context(options)
}
