/**
 * PCR1 payloads (docs/protocol.md §P2-§P3): UTF-8 JSON requests, responses, control actions and
 * their replies, with the runtime's dotted error codes.
 * @packageDocumentation
 */
import { ErrorCode, PolyCallError, isPolyCallError } from '../core/errors.js'
import { Capability, type CommandExt } from '../protocol/payload.js'

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

/**
 * The CONTROL action a polycall client sends right after connecting, offering the extensions of
 * {@link PCR1_EXTENSIONS} (docs/protocol-extensions.md, "PCR1 extensions"). Other runtimes answer
 * it `control.unknown`, and the connection stays plain PCR1.
 */
export const EXTENSIONS_ACTION = 'polycall.extensions'

/** The PCR1 extensions by name, with the capability bit each one sets on a connection. */
export const PCR1_EXTENSIONS: readonly { readonly name: string; readonly capability: number }[] = [
  { name: 'idempotency_key', capability: Capability.IdempotencyKeys },
  { name: 'traceparent', capability: Capability.TraceContext },
]

/** Every extension bit PCR1 can negotiate. */
const PCR1_EXTENSION_BITS = PCR1_EXTENSIONS.reduce((bits, e) => bits | e.capability, 0)

/** An idempotency key on the PCR1 wire: 16 bytes as 32 hex digits. */
const KEY_HEX = /^[0-9a-fA-F]{32}$/

/** Largest `deadline_ms` a REQUEST may carry. */
export const MAX_DEADLINE_MS = 600_000

export interface Pcr1Request {
  service: string
  operation: string
  deadlineMs: number
  input: unknown
  /** The negotiated extension members the request carried (key as 16 bytes). */
  ext?: CommandExt
}

export interface Pcr1Control {
  action: string
  authToken?: string
  /** `polycall.extensions` only: the offered extension names, as sent. */
  offer?: unknown
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

/**
 * A REQUEST payload. `ext` adds the extension members after the four of §P2 (`idempotency_key`
 * as 32 lowercase hex digits, `traceparent`, `tracestate`); the caller passes only those its
 * connection negotiated. Without `ext` the bytes are what every PCR1 peer sends.
 */
export function encodeRequest(service: string, operation: string, deadlineMs: number, input: unknown, ext?: CommandExt): Buffer {
  const deadline_ms = Math.max(0, Math.min(MAX_DEADLINE_MS, Math.floor(deadlineMs)))
  const body: Record<string, unknown> = { service, operation, deadline_ms, input: input ?? null }
  if (ext !== undefined) {
    if (ext.key !== undefined) body['idempotency_key'] = Buffer.from(ext.key.buffer, ext.key.byteOffset, ext.key.byteLength).toString('hex')
    if (ext.traceparent !== undefined) body['traceparent'] = ext.traceparent
    if (ext.tracestate !== undefined) body['tracestate'] = ext.tracestate
  }
  return Buffer.from(JSON.stringify(body))
}

/**
 * Reads a REQUEST. `negotiated` holds the extension bits of the connection: only their members
 * are read (and a malformed `idempotency_key` refused); any other member is ignored, as before.
 * A `traceparent` or `tracestate` that is not a string is dropped here, an invalid one later.
 *
 * @throws `request.malformed` for anything but `{service, operation, deadline_ms, input}`, or a
 *   negotiated `idempotency_key` that is not a string of exactly 32 hex digits
 */
export function decodeRequest(payload: Buffer, negotiated = 0): Pcr1Request {
  const o = parseObject(payload, 'REQUEST')
  const { service, operation, deadline_ms } = o
  if (typeof service !== 'string' || typeof operation !== 'string' || service === '' || operation === '') {
    throw malformed('service and operation must be non-empty strings')
  }
  if (typeof deadline_ms !== 'number' || !Number.isInteger(deadline_ms) || deadline_ms < 0 || deadline_ms > MAX_DEADLINE_MS) {
    throw malformed(`deadline_ms must be an integer in 0..${MAX_DEADLINE_MS}`)
  }
  const request: Pcr1Request = { service, operation, deadlineMs: deadline_ms, input: o['input'] }
  if (negotiated === 0) return request
  let ext: CommandExt | undefined
  const key = o['idempotency_key']
  if (negotiated & Capability.IdempotencyKeys && key !== undefined) {
    if (typeof key !== 'string' || !KEY_HEX.test(key)) throw malformed('idempotency_key must be a string of 32 hex digits')
    ext = { key: Buffer.from(key, 'hex') }
  }
  const traceparent = o['traceparent']
  if (negotiated & Capability.TraceContext && typeof traceparent === 'string') {
    ext ??= {}
    ext.traceparent = traceparent
    const tracestate = o['tracestate']
    if (typeof tracestate === 'string') ext.tracestate = tracestate
  }
  if (ext !== undefined) request.ext = ext
  return request
}

/** The `polycall.extensions` CONTROL payload offering every extension of {@link PCR1_EXTENSIONS}. */
export function encodeExtensionOffer(): Buffer {
  return Buffer.from(JSON.stringify({ action: EXTENSIONS_ACTION, offer: PCR1_EXTENSIONS.map((e) => e.name) }))
}

/**
 * The extension names a server accepts of `offer`, given the capability bits it supports, in
 * the order of {@link PCR1_EXTENSIONS}, with their bits.
 *
 * @throws `request.malformed` when `offer` is not an array of strings
 */
export function acceptExtensions(offer: unknown, supported: number): { names: string[]; capabilities: number } {
  if (!Array.isArray(offer) || !offer.every((n) => typeof n === 'string')) throw malformed('offer must be an array of extension names')
  const names: string[] = []
  let capabilities = 0
  for (const e of PCR1_EXTENSIONS) {
    if (supported & e.capability && offer.includes(e.name)) {
      names.push(e.name)
      capabilities |= e.capability
    }
  }
  return { names, capabilities }
}

/**
 * The capability bits a CONTROL_REPLY to the offer turns on: only a success whose `data` is an
 * object with an `extensions` array of distinct offered names counts; any other answer
 * (`control.unknown` from the C runtime, another shape, a name never offered) means none.
 */
export function offerAccepted(payload: Buffer): number {
  let o: Record<string, unknown>
  try {
    o = parseObject(payload, 'CONTROL_REPLY')
  } catch {
    return 0
  }
  if (o['ok'] !== true) return 0
  const data = o['data']
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return 0
  const names = (data as Record<string, unknown>)['extensions']
  if (!Array.isArray(names)) return 0
  let capabilities = 0
  for (const name of names) {
    const e = PCR1_EXTENSIONS.find((x) => x.name === name)
    if (e === undefined || capabilities & e.capability) return 0
    capabilities |= e.capability
  }
  return capabilities & PCR1_EXTENSION_BITS
}

export function encodeControl(action: string, authToken?: string): Buffer {
  return Buffer.from(JSON.stringify(authToken === undefined ? { action } : { action, auth_token: authToken }))
}

export function decodeControl(payload: Buffer): Pcr1Control {
  const o = parseObject(payload, 'CONTROL')
  if (typeof o['action'] !== 'string') throw malformed('CONTROL needs a string action')
  const out: Pcr1Control = { action: o['action'] }
  if (typeof o['auth_token'] === 'string') out.authToken = o['auth_token']
  if (o['action'] === EXTENSIONS_ACTION) out.offer = o['offer']
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
