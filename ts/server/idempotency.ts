/**
 * The server side of idempotency keys (capability 0x0020, docs/protocol-extensions.md): a keyed
 * request runs only when its store has no record of the key; otherwise it is answered from the
 * record (the first run's outcome), after waiting for a run still under way (bounded by its own
 * deadline), or with a coded error where the outcome cannot be known. The handler's outcome is
 * recorded whatever happens to the request that started it (a lost connection does not abort
 * a keyed run: its retry is coming for the outcome).
 * @packageDocumentation
 */
import { createHash } from 'node:crypto'
import { ErrorCode, PolyCallError, invalidArgument, isPolyCallError } from '../core/errors.js'
import { msgpackCodec } from '../protocol/payload.js'
import { MemoryIdempotencyStore, type IdempotencyOutcome, type IdempotencyRef, type IdempotencyState, type IdempotencyStore } from '../idempotency/store.js'
import type { RequestContext } from './context.js'

/**
 * Options of a server's idempotency records (`ServerOptions.idempotency`).
 *
 * @example
 * ```ts
 * const store = new RedisIdempotencyStore(redis, { prefix: 'orders:idem:' })
 * const server = new PolyCallServer({ idempotency: { store, window: 60_000, scope: (ctx) => String(ctx.principal) } })
 * ```
 */
export interface IdempotencyOptions {
  /**
   * Where records live. Share one store between every server that may see another's retries
   * (a `RedisIdempotencyStore` for several processes or hosts). @defaultValue a
   * `MemoryIdempotencyStore` of this server
   */
  store?: IdempotencyStore | undefined
  /**
   * Longest life of a record, in ms: a record lives for its call's deadline and a second, at
   * most this long (and this long for calls without a deadline). @defaultValue 300000
   */
  window?: number | undefined
  /**
   * The scope of a request's key: retries find a record only within the same scope, so one
   * principal never reads another's outcome. @defaultValue the authenticated principal (a
   * string as is, anything else by a SHA-256 of its JSON with sorted keys); `''` for
   * unauthenticated connections, which share one scope (keys are 128 random bits)
   */
  scope?: ((ctx: RequestContext) => string) | undefined
}

/** How long past its deadline a record is kept (clock rates, transit). */
const SLACK_MS = 1000
/** Polling a record another host is running: first and longest pause. */
const POLL_FIRST_MS = 5
const POLL_MAX_MS = 100

function stableJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`
  if (value instanceof Uint8Array) return JSON.stringify(Buffer.from(value).toString('base64'))
  const o = value as Record<string, unknown>
  return `{${Object.keys(o)
    .sort()
    .filter((k) => o[k] !== undefined)
    .map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`)
    .join(',')}}`
}

/** @internal The default scope: the principal's identity. */
export function principalScope(ctx: RequestContext): string {
  const p = ctx.principal
  if (p === undefined || p === null) return ''
  if (typeof p === 'string') return `s:${p}`
  return `j:${createHash('sha256').update(stableJson(p)).digest('base64url')}`
}

/** @internal What a keyed request ends with: a value to reply with, or an error. */
export type KeyedResult = { ok: true; value: unknown } | { ok: false; error: PolyCallError }

/** @internal What the server lends the coordinator for one request. */
export interface KeyedRequest {
  readonly ctx: RequestContext
  /** The key as lowercase hex. */
  readonly key: string
  /** Milliseconds the caller allowed, or undefined. */
  readonly timeoutMs: number | undefined
  /** True once the request was answered or given up (deadline, lost connection). */
  done(): boolean
  /** Runs middleware and handler; resolves with the result, rejects with the wire error. */
  execute(): Promise<unknown>
  /** Replies (unless the request is done) and finishes it. */
  finish(result: KeyedResult): void
  /** An error to report (a store failing after a run). */
  report(error: unknown): void
}

/** @internal The error of a retry whose first run's outcome cannot be given. */
export function outcomeUnknown(reason: 'lost' | 'not-kept' | 'expired'): PolyCallError {
  const why =
    reason === 'not-kept'
      ? 'its outcome was too large to keep'
      : reason === 'expired'
        ? 'its record is gone (it expired)'
        : 'the host running it stopped before recording its outcome'
  return new PolyCallError(ErrorCode.OUTCOME_UNKNOWN, `this call's key was used by an earlier run, and ${why}; it is not run again`)
}

function toOutcome(result: KeyedResult): IdempotencyOutcome | undefined {
  try {
    // Stores copy the payload during complete(): the encoder's buffer is not copied here.
    if (result.ok) return { ok: true, payload: msgpackCodec.encodeValue(result.value) }
    const e = result.error as PolyCallError & { data?: unknown }
    return { ok: false, payload: msgpackCodec.encodeError(e.code, e.message, e.data) }
  } catch {
    // A value msgpack cannot carry cannot be replied either: the reply fails as INTERNAL.
    return { ok: false, payload: msgpackCodec.encodeError(ErrorCode.INTERNAL, 'internal error') }
  }
}

function fromOutcome(outcome: IdempotencyOutcome): KeyedResult {
  const payload = Buffer.from(outcome.payload)
  if (outcome.ok) return { ok: true, value: msgpackCodec.decodeValue(payload) }
  const { code, message, data } = msgpackCodec.decodeError(payload)
  const error = new PolyCallError(code, message) as PolyCallError & { data?: unknown }
  if (data !== undefined) error.data = data
  return { ok: false, error }
}

const isThenable = <T>(v: T | Promise<T>): v is Promise<T> => typeof (v as { then?: unknown } | null)?.then === 'function'

/** @internal One server's idempotency records. */
export class Idempotency {
  readonly store: IdempotencyStore
  readonly #window: number
  readonly #scope: (ctx: RequestContext) => string

  constructor(options: IdempotencyOptions) {
    if (options === null || typeof options !== 'object') throw invalidArgument('idempotency must be an object or false')
    const store = options.store ?? new MemoryIdempotencyStore()
    if (typeof store.begin !== 'function' || typeof store.complete !== 'function' || typeof store.read !== 'function' || typeof store.release !== 'function') {
      throw invalidArgument('idempotency.store must implement begin, read, complete and release')
    }
    if (options.scope !== undefined && typeof options.scope !== 'function') throw invalidArgument('idempotency.scope must be a function')
    const window = options.window ?? 300_000
    if (typeof window !== 'number' || !Number.isInteger(window) || window < 1) throw invalidArgument('idempotency.window must be an integer ≥ 1')
    this.store = store
    this.#window = window
    this.#scope = options.scope ?? principalScope
  }

  /** Serves one keyed request. */
  handle(req: KeyedRequest): void {
    let scope: string
    try {
      scope = this.#scope(req.ctx)
      if (typeof scope !== 'string') throw new TypeError('the idempotency scope function must return a string')
    } catch (e) {
      req.report(e)
      return req.finish({ ok: false, error: new PolyCallError(ErrorCode.INTERNAL, 'internal error') })
    }
    const ref: IdempotencyRef = { scope, key: req.key, command: req.ctx.command }
    const ttl = Math.min(this.#window, req.timeoutMs === undefined ? this.#window : req.timeoutMs + SLACK_MS)
    let begun: IdempotencyState | Promise<IdempotencyState>
    try {
      begun = this.store.begin(ref, { ttl })
    } catch (e) {
      return req.finish({ ok: false, error: this.#unavailable(e) })
    }
    if (isThenable(begun)) {
      begun.then(
        (state) => this.#begun(req, ref, ttl, state),
        (e: unknown) => req.finish({ ok: false, error: this.#unavailable(e) }),
      )
    } else this.#begun(req, ref, ttl, begun)
  }

  /** A store that cannot be asked: the call is refused and never runs (so it may go elsewhere). */
  #unavailable(e: unknown): PolyCallError {
    return new PolyCallError(ErrorCode.UNAVAILABLE, 'the idempotency store cannot be reached; the call did not run', {
      cause: isPolyCallError(e) ? e : new PolyCallError(ErrorCode.STORE_FAILED, String((e as Error)?.message ?? e), { cause: e }),
    })
  }

  #begun(req: KeyedRequest, ref: IdempotencyRef, ttl: number, state: IdempotencyState): void {
    switch (state.state) {
      case 'started':
        return this.#run(req, ref, ttl)
      case 'done':
        return req.finish(fromOutcome(state.outcome))
      case 'running':
        return this.#wait(req, ref, state, POLL_FIRST_MS)
      case 'unknown':
        return req.finish({ ok: false, error: outcomeUnknown(state.reason) })
      case 'mismatch':
        return req.finish({ ok: false, error: new PolyCallError(ErrorCode.BAD_REQUEST, 'this idempotency key was used for another command') })
      case 'full':
        return req.finish({ ok: false, error: new PolyCallError(ErrorCode.BUSY, `no room for another idempotency record (${state.reason}); the call did not run`) })
    }
  }

  #run(req: KeyedRequest, ref: IdempotencyRef, ttl: number): void {
    if (req.done()) {
      // Its caller went (deadline, lost connection) before the record was made: nothing ran,
      // so a retry may run it.
      this.#settle(req, this.store.release(ref))
      return
    }
    let running: Promise<unknown>
    try {
      running = req.execute()
    } catch (e) {
      running = Promise.reject(e)
    }
    running.then(
      (value) => this.#ran(req, ref, ttl, { ok: true, value }),
      (e: unknown) => this.#ran(req, ref, ttl, { ok: false, error: e as PolyCallError }),
    )
  }

  #ran(req: KeyedRequest, ref: IdempotencyRef, ttl: number, result: KeyedResult): void {
    // Reply first: the caller is waiting; the record is for a retry that may never come.
    req.finish(result)
    let recorded: void | Promise<void>
    try {
      recorded = this.store.complete(ref, toOutcome(result), { ttl })
    } catch (e) {
      req.report(e)
      return
    }
    this.#settle(req, recorded)
  }

  #settle(req: KeyedRequest, p: void | Promise<void>): void {
    if (isThenable(p)) p.catch((e: unknown) => req.report(e))
  }

  /** A run under way elsewhere: wait for its record to change (or read again), within the request's own deadline. */
  #wait(req: KeyedRequest, ref: IdempotencyRef, state: { changed?: Promise<void> | undefined }, pause: number): void {
    if (req.done()) return
    const again = () => {
      if (req.done()) return
      let read: IdempotencyState | Promise<IdempotencyState>
      try {
        read = this.store.read(ref)
      } catch (e) {
        return req.finish({ ok: false, error: this.#unavailable(e) })
      }
      const next = (s: IdempotencyState) => {
        if (s.state === 'running') this.#wait(req, ref, s, Math.min(pause * 2, POLL_MAX_MS))
        else if (s.state === 'started') req.finish({ ok: false, error: outcomeUnknown('expired') })
        else this.#begun(req, ref, 0, s)
      }
      if (isThenable(read)) read.then(next, (e: unknown) => req.finish({ ok: false, error: this.#unavailable(e) }))
      else next(read)
    }
    if (state.changed) void state.changed.then(again)
    else setTimeout(again, pause).unref()
  }
}
