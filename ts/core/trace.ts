/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): parsing and validation of
 * `traceparent` and `tracestate` values as they travel with a request (capability `0x0040`,
 * docs/protocol-extensions.md). Invalid values are dropped, never fatal: a `traceparent` that
 * fails the rules drops the trace (and its `tracestate`), a `tracestate` that fails them drops
 * only itself.
 * @packageDocumentation
 */
import { invalidArgument } from './errors.js'

/** A trace context as it is sent: a `traceparent` and, optionally, a `tracestate`. */
export interface TraceContext {
  /** `version-traceid-parentid-flags`, e.g. `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`. */
  traceparent: string
  /** Vendor entries, `key=value` separated by commas (at most 32 members, 512 characters). */
  tracestate?: string | undefined
}

/** A validated trace context with its fields read out (`ctx.trace` on the server). */
export interface TraceInfo extends TraceContext {
  /** The version field (0 for today's format). */
  version: number
  /** 32 lowercase hex digits, not all zero. */
  traceId: string
  /** The caller's span id: 16 lowercase hex digits, not all zero. */
  parentId: string
  /** The trace-flags byte. */
  flags: number
  /** Bit 0 of the flags: the caller may have recorded its span. */
  sampled: boolean
}

/** Longest `traceparent` accepted (future versions may append fields after the 55 of version 00). */
export const MAX_TRACEPARENT = 256
/** Longest `tracestate` accepted; longer values are dropped. */
export const MAX_TRACESTATE = 512
const MAX_MEMBERS = 32

const HEX2 = /^[0-9a-f]{2}$/
const HEX32 = /^[0-9a-f]{32}$/
const HEX16 = /^[0-9a-f]{16}$/
const ZERO32 = '0'.repeat(32)
const ZERO16 = '0'.repeat(16)
// tracestate keys: a simple key, or tenant@system (Trace Context §3.3.1.3.1).
const KEY = /^(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})$/
// A value: printable ASCII except ',' and '=', not ending in a space, 1-256 characters.
const VALUE = /^[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$/

/**
 * Parses a `traceparent` value.
 *
 * @param value - the header value
 * @returns its fields, or undefined when it is not a valid traceparent
 * @example
 * ```ts
 * parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')?.sampled // true
 * ```
 */
export function parseTraceparent(value: unknown): Omit<TraceInfo, 'tracestate'> | undefined {
  if (typeof value !== 'string' || value.length < 55 || value.length > MAX_TRACEPARENT) return undefined
  const version = value.slice(0, 2)
  if (!HEX2.test(version) || version === 'ff') return undefined
  // Version 00 is exactly 55 characters; a later version may carry more after a '-'.
  if (version === '00' ? value.length !== 55 : value.length > 55 && value[55] !== '-') return undefined
  if (value[2] !== '-' || value[35] !== '-' || value[52] !== '-') return undefined
  const traceId = value.slice(3, 35)
  const parentId = value.slice(36, 52)
  const flags = value.slice(53, 55)
  if (!HEX32.test(traceId) || traceId === ZERO32 || !HEX16.test(parentId) || parentId === ZERO16 || !HEX2.test(flags)) return undefined
  const f = Number.parseInt(flags, 16)
  return { traceparent: value, version: Number.parseInt(version, 16), traceId, parentId, flags: f, sampled: (f & 1) === 1 }
}

/**
 * Checks a `tracestate` value: at most 32 `key=value` members with valid keys (no key twice)
 * and values, at most 512 characters in all. Empty members (`a=1,,b=2`) are allowed.
 *
 * @param value - the header value
 * @returns whether it is valid
 * @example
 * ```ts
 * isValidTracestate('rojo=00f067aa0ba902b7,congo=t61rcWkgMzE') // true
 * ```
 */
export function isValidTracestate(value: unknown): value is string {
  if (typeof value !== 'string' || value.length > MAX_TRACESTATE) return false
  const seen = new Set<string>()
  let members = 0
  for (const raw of value.split(',')) {
    const member = raw.trim()
    if (member === '') continue
    if (++members > MAX_MEMBERS) return false
    const eq = member.indexOf('=')
    if (eq <= 0) return false
    const key = member.slice(0, eq)
    if (!KEY.test(key) || !VALUE.test(member.slice(eq + 1)) || seen.has(key)) return false
    seen.add(key)
  }
  return true
}

/**
 * The trace context of a request from what a peer sent: undefined when `traceparent` is
 * invalid (its `tracestate` is dropped with it); without `tracestate` when only that is invalid.
 *
 * @param traceparent - the received traceparent
 * @param tracestate - the received tracestate, if any
 * @returns the validated context, or undefined
 * @example
 * ```ts
 * const trace = parseTraceContext(tp, ts)
 * if (trace?.sampled) span.setParent(trace.traceId, trace.parentId)
 * ```
 */
export function parseTraceContext(traceparent: unknown, tracestate?: unknown): TraceInfo | undefined {
  const parent = parseTraceparent(traceparent)
  if (!parent) return undefined
  const info: TraceInfo = parent
  if (tracestate !== undefined && tracestate !== '' && isValidTracestate(tracestate)) info.tracestate = tracestate
  return info
}

/**
 * Normalises a caller's trace option: a traceparent string or `{ traceparent, tracestate }`.
 * @internal
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT` when it is not a valid trace context
 */
export function checkTrace(trace: unknown): TraceContext | undefined {
  if (trace === undefined) return undefined
  const tp = typeof trace === 'string' ? trace : (trace as TraceContext | null)?.traceparent
  const ts = typeof trace === 'string' ? undefined : (trace as TraceContext | null)?.tracestate
  if (parseTraceparent(tp) === undefined) throw invalidArgument('trace.traceparent must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)')
  if (ts !== undefined && ts !== '' && !isValidTracestate(ts)) throw invalidArgument('trace.tracestate must be a W3C tracestate')
  return ts === undefined || ts === '' ? { traceparent: tp as string } : { traceparent: tp as string, tracestate: ts }
}

/**
 * A trace context set by an instrumentation (a diagnostics subscriber): kept when valid,
 * dropped otherwise (the call goes on without it). @internal
 */
export function acceptTrace(trace: unknown): TraceContext | undefined {
  try {
    return checkTrace(trace)
  } catch {
    return undefined
  }
}
