/**
 * Abort and timeout plumbing shared by the state-machine waits: one signal per call
 * combining the caller's `signal` and `timeout` (turned into a deadline once, at the call
 * site), and the errors they end in.
 * @packageDocumentation
 */
import { ErrorCode, PolyCallError, invalidArgument } from '../core/errors.js'

/** What every wait accepts. */
export interface WaitOptions {
  /** Aborts the wait; it then rejects with `ERR_POLYCALL_ABORTED` and `cause = signal.reason`. */
  signal?: AbortSignal | undefined
  /** Milliseconds before the wait rejects with `ERR_POLYCALL_TIMEOUT`. @defaultValue no limit */
  timeout?: number | undefined
}

/** @internal The largest delay `setTimeout` honours; longer ones would fire at once. */
export const MAX_DELAY = 2 ** 31 - 1

/** @internal A call's combined signal and the error its abort means. */
export interface Deadline {
  /** Aborts when the caller's signal does or the timeout passes; undefined when neither was given. */
  readonly signal: AbortSignal | undefined
  /** The error to reject with once `signal` has aborted. */
  error(): PolyCallError
}

const NONE: Deadline = {
  signal: undefined,
  error: () => new PolyCallError(ErrorCode.INTERNAL, 'no deadline'),
}

/** @internal Validates `timeout`. */
export function checkTimeout(timeout: unknown): void {
  if (timeout !== undefined && (typeof timeout !== 'number' || !(timeout >= 0))) {
    throw invalidArgument(`timeout ${String(timeout)} is not a non-negative number of milliseconds`)
  }
}

/** @internal Validates `signal`. */
export function checkSignal(signal: unknown): void {
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw invalidArgument('signal must be an AbortSignal')
  }
}

/**
 * @internal One deadline per call: the caller's signal and timeout combined once, so the clock
 * is never restarted by later stages of the same call. The timeout's timer (AbortSignal.timeout)
 * does not keep the process alive.
 */
export function deadline(options: WaitOptions | undefined): Deadline {
  if (options === undefined) return NONE
  const { signal, timeout } = options
  checkSignal(signal)
  checkTimeout(timeout)
  if (signal === undefined && timeout === undefined) return NONE
  const timer = timeout === undefined ? undefined : AbortSignal.timeout(Math.min(Math.ceil(timeout), MAX_DELAY))
  const combined = signal && timer ? AbortSignal.any([signal, timer]) : (signal ?? timer)
  return {
    signal: combined,
    error: () =>
      signal?.aborted
        ? new PolyCallError(ErrorCode.ABORTED, 'the operation was aborted', { cause: signal.reason })
        : new PolyCallError(ErrorCode.TIMEOUT, `the operation timed out after ${String(timeout)} ms`),
  }
}

/**
 * @internal Settles with `value` (awaited), or rejects with the deadline's error as soon as its
 * signal aborts. The abort listener is removed either way. A late settlement of `value` is
 * ignored (its rejection is observed so it never goes unhandled).
 */
export function raceDeadline<T>(value: T | PromiseLike<T>, d: Deadline): Promise<T> {
  const signal = d.signal
  if (signal === undefined) return Promise.resolve(value)
  if (signal.aborted) {
    void Promise.resolve(value).catch(() => {})
    return Promise.reject(d.error())
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(d.error())
    signal.addEventListener('abort', onAbort, { once: true })
    Promise.resolve(value)
      .then(resolve, reject)
      .finally(() => signal.removeEventListener('abort', onAbort))
  })
}
