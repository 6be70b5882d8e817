/**
 * PCR1 payloads (docs/protocol.md §P2-§P3): UTF-8 JSON requests, responses, control actions and
 * their replies, with the runtime's dotted error codes.
 * @packageDocumentation
 */
import { ErrorCode, PolyCallError, isPolyCallError } from '../core/errors.js'

/** Error codes of the PCR1 wire. */
export const Pcr1Code = {
  REQUEST_MALFORMED: 'request.malformed',
  OPERATION_UNKNOWN: 'operation.unknown',
  INPUT_INVALID: 'input.invalid',
  DEADLINE_EXCEEDED: 'deadline.exceeded',
  OUTPUT_TOO_LARGE: 'output.too_large',
  CONTROL_UNKNOWN: 'control.unknown',
  AUTH_DENIED: 'auth.denied',
  FRAME_TYPE: 'frame.type',
  FRAME_INVALID: 'frame.invalid',
  SERVER_BUSY: 'server.busy',
  INTERNAL: 'internal',
} as const

/** The control actions of §2. */
export type Pcr1Action = 'ping' | 'describe' | 'health' | 'shutdown'

/** Largest `deadline_ms` a REQUEST may carry. */
export const MAX_DEADLINE_MS = 600_000

export interface Pcr1Request {
  service: string
  operation: string
  deadlineMs: number
  input: unknown
}

export interface Pcr1Control {
  action: string
  authToken?: string
}

export type Pcr1Outcome = { ok: true; value: unknown } | { ok: false; code: string; message: string }

const malformed = (message: string) => new PolyCallError(Pcr1Code.REQUEST_MALFORMED, message)

function parseObject(payload: Buffer, what: string): Record<string, unknown> {
  let v: unknown
  try {
    v = JSON.parse(payload.toString('utf8'))
  } catch {
    throw malformed(`${what} payload is not JSON`)
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw malformed(`${what} payload is not a JSON object`)
  return v as Record<string, unknown>
}

/** Splits `service.operation` at its last dot. */
export function splitOperation(name: string): { service: string; operation: string } {
  const dot = name.lastIndexOf('.')
  if (dot <= 0 || dot === name.length - 1) throw new PolyCallError(ErrorCode.INVALID_ARGUMENT, `"${name}" is not service.operation`)
  return { service: name.slice(0, dot), operation: name.slice(dot + 1) }
}

export function encodeRequest(service: string, operation: string, deadlineMs: number, input: unknown): Buffer {
  const deadline_ms = Math.max(0, Math.min(MAX_DEADLINE_MS, Math.floor(deadlineMs)))
  return Buffer.from(JSON.stringify({ service, operation, deadline_ms, input: input ?? null }))
}

/** @throws `request.malformed` for anything but `{service, operation, deadline_ms, input}` */
export function decodeRequest(payload: Buffer): Pcr1Request {
  const o = parseObject(payload, 'REQUEST')
  const { service, operation, deadline_ms } = o
  if (typeof service !== 'string' || typeof operation !== 'string' || service === '' || operation === '') {
    throw malformed('service and operation must be non-empty strings')
  }
  if (typeof deadline_ms !== 'number' || !Number.isInteger(deadline_ms) || deadline_ms < 0 || deadline_ms > MAX_DEADLINE_MS) {
    throw malformed(`deadline_ms must be an integer in 0..${MAX_DEADLINE_MS}`)
  }
  return { service, operation, deadlineMs: deadline_ms, input: o['input'] }
}

export function encodeControl(action: string, authToken?: string): Buffer {
  return Buffer.from(JSON.stringify(authToken === undefined ? { action } : { action, auth_token: authToken }))
}

export function decodeControl(payload: Buffer): Pcr1Control {
  const o = parseObject(payload, 'CONTROL')
  if (typeof o['action'] !== 'string') throw malformed('CONTROL needs a string action')
  const out: Pcr1Control = { action: o['action'] }
  if (typeof o['auth_token'] === 'string') out.authToken = o['auth_token']
  return out
}

/** RESPONSE (`output`) or CONTROL_REPLY (`data`) payload. */
export function encodeOutcome(outcome: Pcr1Outcome, valueKey: 'output' | 'data'): Buffer {
  return Buffer.from(
    JSON.stringify(
      outcome.ok
        ? { ok: true, [valueKey]: outcome.value ?? null }
        : { ok: false, error: { code: outcome.code, message: outcome.message } },
    ),
  )
}

export function decodeOutcome(payload: Buffer, valueKey: 'output' | 'data'): Pcr1Outcome {
  let o: Record<string, unknown>
  try {
    o = parseObject(payload, 'reply')
  } catch {
    return { ok: false, code: ErrorCode.PROTOCOL, message: 'the reply payload is not a JSON object' }
  }
  if (o['ok'] === true) return { ok: true, value: o[valueKey] }
  const e = (o['error'] ?? {}) as { code?: unknown; message?: unknown }
  return {
    ok: false,
    code: typeof e.code === 'string' ? e.code : ErrorCode.REMOTE,
    message: typeof e.message === 'string' ? e.message : 'the server reported an error without a message',
  }
}

/** Maps an error thrown on the server to the code a PCR1 caller sees. */
export function toPcr1Code(err: unknown): { code: string; message: string } {
  if (!isPolyCallError(err)) return { code: Pcr1Code.INTERNAL, message: 'internal error' }
  const mapped: Record<string, string> = {
    [ErrorCode.NOT_FOUND]: Pcr1Code.OPERATION_UNKNOWN,
    [ErrorCode.BAD_REQUEST]: Pcr1Code.REQUEST_MALFORMED,
    [ErrorCode.DEADLINE_EXCEEDED]: Pcr1Code.DEADLINE_EXCEEDED,
    [ErrorCode.PAYLOAD_TOO_LARGE]: Pcr1Code.OUTPUT_TOO_LARGE,
    [ErrorCode.UNAUTHENTICATED]: Pcr1Code.AUTH_DENIED,
    [ErrorCode.BUSY]: Pcr1Code.SERVER_BUSY,
    [ErrorCode.INTERNAL]: Pcr1Code.INTERNAL,
    ERR_POLYCALL_INVALID_INPUT: Pcr1Code.INPUT_INVALID,
  }
  return { code: mapped[err.code] ?? err.code, message: err.message }
}
