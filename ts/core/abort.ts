/**
 * Timeouts, deadlines and AbortSignals for every async call.
 *
 * A relative timeout becomes an absolute deadline once, where the call starts; retries and
 * hops reuse that deadline instead of restarting the clock. Deadlines use the monotonic clock
 * (`performance.now()`), so wall-clock jumps do not fire or delay them.
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { ErrorCode, PolyCallError, invalidArgument } from './errors.js'

/** Bounds of an async call. */
export interface CallOptions {
  /** Abort the call; it rejects with `ERR_POLYCALL_ABORTED` whose `cause` is `signal.reason`. */
  signal?: AbortSignal | undefined
  /** Milliseconds before the call rejects with `ERR_POLYCALL_TIMEOUT`. */
  timeout?: number | undefined
}

/** The largest delay `setTimeout` honours; longer ones would fire at once. @internal */
export const MAX_TIMER_DELAY = 2 ** 31 - 1

/** Monotonic milliseconds. @internal */
export const now = (): number => performance.now()

let tick = -1
const resetTick = () => {
  tick = -1
}
// A resolved promise's then() queues the reset as a plain microtask; queueMicrotask would also
// create an AsyncResource per tick.
const settled = Promise.resolve()

/**
 * Monotonic milliseconds, read once per run of synchronous code and its microtasks. Reading the
 * clock costs as much as a small request's bookkeeping; request start times and latencies do
 * not need more than this, while timers still use {@link now}.
 * @internal
 */
export function tickNow(): number {
  if (tick < 0) {
    tick = performance.now()
    void settled.then(resetTick)
  }
  return tick
}

/** Checks a timeout option: undefined, or a finite number ≥ 0 (Infinity means none). @internal */
export function checkTimeout(timeout: unknown, name = 'timeout'): number | undefined {
  if (timeout === undefined || timeout === Infinity) return undefined
  if (typeof timeout !== 'number' || !(timeout >= 0)) throw invalidArgument(`${name} must be a number of milliseconds ≥ 0`)
  return timeout
}

/** Checks a signal option. @internal */
export function checkSignal(signal: unknown): AbortSignal | undefined {
  if (signal === undefined) return undefined
  if (!(signal instanceof AbortSignal)) throw invalidArgument('signal must be an AbortSignal')
  return signal
}

/** The absolute deadline (monotonic ms) of a call started now with `timeout`, or Infinity. @internal */
export function deadlineOf(timeout: number | undefined): number {
  return timeout === undefined ? Infinity : now() + timeout
}

/** The error of a call whose signal fired. @internal */
export function abortedError(signal: AbortSignal): PolyCallError {
  return new PolyCallError(ErrorCode.ABORTED, 'the operation was aborted', { cause: signal.reason })
}

/**
 * The error of a call whose own timeout passed; `cause` says what else was known then (the
 * server's verdict, the last connection failure). @internal
 */
export function timeoutError(ms: number, what = 'the operation', cause?: unknown): PolyCallError {
  return new PolyCallError(ErrorCode.TIMEOUT, `${what} timed out after ${Math.round(ms)} ms`, cause === undefined ? undefined : { cause })
}

/** A timer clamped to the largest delay and unref'd so it never holds the process open. @internal */
export function unrefTimer(fn: () => void, ms: number): NodeJS.Timeout {
  const t = setTimeout(fn, Math.min(Math.max(0, ms), MAX_TIMER_DELAY))
  t.unref()
  return t
}

/**
 * Runs `work` bounded by `options`: rejects with ABORTED or TIMEOUT, whichever comes first, and
 * calls `onCancel` so the work can release what it holds. Listeners and timers are removed in
 * every outcome.
 * @internal
 */
export function bounded<T>(
  work: Promise<T>,
  options: CallOptions,
  what = 'the operation',
  onCancel?: (err: PolyCallError) => void,
): Promise<T> {
  const signal = checkSignal(options.signal)
  const timeout = checkTimeout(options.timeout)
  if (!signal && timeout === undefined) return work
  if (signal?.aborted) {
    const err = abortedError(signal)
    onCancel?.(err)
    work.catch(() => {})
    return Promise.reject(err)
  }
  return new Promise<T>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined
    const finish = () => {
      if (timer) clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
    const fail = (err: PolyCallError) => {
      finish()
      onCancel?.(err)
      reject(err)
    }
    const onAbort = () => fail(abortedError(signal!))
    signal?.addEventListener('abort', onAbort, { once: true })
    if (timeout !== undefined) timer = unrefTimer(() => fail(timeoutError(timeout, what)), timeout)
    work.then(
      (v) => {
        finish()
        resolve(v)
      },
      (e: unknown) => {
        finish()
        reject(e)
      },
    )
  })
}
