/**
 * Payload conventions per connection, chosen by the handshake (docs/protocol.md §3-§4).
 *
 * - **Legacy peers** (an empty or 4-byte hello, or a long form without capability bits:
 *   node-polycall, go-polycall, the C library) get the reference conventions: COMMAND is UTF-8
 *   JSON `{"command", "data"}`, AUTH is JSON credentials, RESPONSE is JSON, ERROR is UTF-8 text.
 * - **polycall peers** advertise capability bits in the long-form handshake flags; with
 *   {@link Capability.Msgpack} COMMAND, RESPONSE and ERROR payloads are msgpack (see
 *   docs/protocol-extensions.md for the exact shapes).
 * @packageDocumentation
 */
import { Packr, Unpackr } from 'msgpackr'
import { ErrorCode, PolyCallError } from '../core/errors.js'
import { MessageType, ProtocolFlag } from './constants.js'
import { NOT_SCALAR, packCommand, packCommandExt, packScalar, readCommandName, readScalar, scalarEnd, type CommandExt } from './msgpack-scalar.js'

export type { CommandExt } from './msgpack-scalar.js'

/** Capability bits carried in the long-form handshake's flags field. */
export const Capability = {
  /** COMMAND / RESPONSE / ERROR payloads are msgpack; COMMAND carries the caller's deadline. */
  Msgpack: 0x0001,
  /** The peer understands cancellation notices (a HEARTBEAT with a `CNCL` payload). */
  Cancel: 0x0002,
  /** The peer sends heartbeats when idle, so silence means it is gone. */
  Heartbeat: 0x0004,
  /**
   * The hello carries a Noise handshake: every frame after it is sealed (docs/security.md). Only
   * clients and servers configured with `secure` offer or accept it.
   */
  Secure: 0x0008,
  /** Payloads of a secure session above a threshold travel lz4-compressed (`secure.compress`). */
  Compression: 0x0010,
  /**
   * COMMAND may carry an idempotency key: the server answers a retried key with the first run's
   * recorded outcome instead of running the handler again.
   */
  IdempotencyKeys: 0x0020,
  /** COMMAND may carry a W3C trace context (`traceparent`, `tracestate`). */
  TraceContext: 0x0040,
  /**
   * On a secure session, the small frames of one write may travel as one sealed frame (a sealed
   * batch, docs/protocol-extensions.md). Secure clients and servers always offer and accept it.
   */
  SealedBatches: 0x0080,
} as const

/** @internal Every capability this version implements (a server offers idempotency keys only when it keeps outcomes). */
export const SUPPORTED_CAPABILITIES =
  Capability.Msgpack | Capability.Cancel | Capability.Heartbeat | Capability.IdempotencyKeys | Capability.TraceContext

/** @internal Shortest idempotency key (bytes). */
export const MIN_KEY_BYTES = 16
/** @internal Longest idempotency key (bytes). */
export const MAX_KEY_BYTES = 64

/** @internal A decoded COMMAND. */
export interface CommandPayload {
  command: string
  data: unknown
  /** Milliseconds the caller still allowed when it sent the request (polycall peers only). */
  timeout?: number
  /** Extension fields (idempotency key, trace context), when the caller sent any. */
  ext?: CommandExt
}

/** @internal A decoded ERROR. */
export interface ErrorPayload {
  code: string
  message: string
  data?: unknown
}

/** How one connection's payloads are written and read. @internal */
export interface PayloadCodec {
  readonly name: 'msgpack' | 'json'
  encodeCommand(command: string, data: unknown, timeout: number | undefined, ext?: CommandExt): Buffer
  decodeCommand(payload: Buffer): CommandPayload
  encodeValue(value: unknown): Buffer
  decodeValue(payload: Buffer): unknown
  encodeError(code: string, message: string, data?: unknown): Buffer
  decodeError(payload: Buffer): ErrorPayload
}

const badRequest = (message: string, cause?: unknown) => new PolyCallError(ErrorCode.BAD_REQUEST, message, { cause })

/** Text and JSON from C peers may end in one NUL (docs/protocol.md §10.14). */
function stripNul(payload: Buffer): Buffer {
  return payload.length > 0 && payload[payload.length - 1] === 0 ? payload.subarray(0, payload.length - 1) : payload
}

const packr = new Packr({ useRecords: false, moreTypes: false })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })

/**
 * The common COMMAND shapes read without the generic decoder: `[command, scalar]`,
 * `[command, scalar, timeout]` and `[command, scalar, timeout | nil, ext]` with a string command,
 * a whole, non-negative timeout and an extension map of scalars. Anything else (and anything
 * malformed) returns undefined and goes through msgpackr.
 */
function readCommand(payload: Buffer): CommandPayload | undefined {
  const head = payload[0]
  if (head !== 0x92 && head !== 0x93 && head !== 0x94) return undefined
  const command = readCommandName(payload, 1)
  if (typeof command !== 'string') return undefined
  const data = readScalar(payload, scalarEnd)
  if (data === NOT_SCALAR) return undefined
  if (head === 0x92) return scalarEnd === payload.length ? { command, data } : undefined
  const timeout = readScalar(payload, scalarEnd)
  if (head === 0x93) {
    if (typeof timeout !== 'number' || !(timeout >= 0) || scalarEnd !== payload.length) return undefined
    return { command, data, timeout }
  }
  if (timeout !== null && (typeof timeout !== 'number' || !(timeout >= 0))) return undefined
  const map = payload[scalarEnd]
  if (map === undefined || (map & 0xf0) !== 0x80) return undefined
  let o = scalarEnd + 1
  const fields: Record<string, unknown> = {}
  for (let n = map & 0x0f; n > 0; n--) {
    const k = readScalar(payload, o)
    if (typeof k !== 'string') return undefined
    const v = readScalar(payload, scalarEnd)
    if (v === NOT_SCALAR) return undefined
    fields[k] = v
    o = scalarEnd
  }
  if (o !== payload.length) return undefined
  const out: CommandPayload = { command, data, ext: readExt(fields) }
  if (timeout !== null) out.timeout = timeout
  return out
}

/**
 * The extension fields of a COMMAND from its decoded map: the key must be 16 to 64 bytes (a
 * malformed key is refused: ignoring it could run a retry twice); trace fields that are not
 * strings are dropped (they are validated where they are used); unknown fields are ignored.
 */
function readExt(fields: Record<string, unknown>): CommandExt {
  const ext: CommandExt = {}
  const k = fields['k']
  if (k !== undefined && k !== null) {
    if (!(k instanceof Uint8Array) || k.length < MIN_KEY_BYTES || k.length > MAX_KEY_BYTES) {
      throw badRequest(`the idempotency key must be ${MIN_KEY_BYTES} to ${MAX_KEY_BYTES} bytes`)
    }
    ext.key = k
  }
  if (typeof fields['tp'] === 'string') ext.traceparent = fields['tp']
  if (typeof fields['ts'] === 'string') ext.tracestate = fields['ts']
  return ext
}

function isMap(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array)
}

/** @internal msgpack for polycall peers: COMMAND `[command, data, timeoutMs?]`, ERROR `{code, message, data?}`. */
export const msgpackCodec: PayloadCodec = {
  name: 'msgpack',
  encodeCommand(command, data, timeout, ext) {
    const t = timeout === undefined ? undefined : Math.max(0, Math.ceil(timeout))
    if (ext === undefined) return packCommand(command, data, t) ?? packr.pack(t === undefined ? [command, data] : [command, data, t])
    return packCommandExt(command, data, t, ext) ?? packr.pack([command, data, t ?? null, extFields(ext)])
  },
  decodeCommand(payload) {
    const fast = readCommand(payload)
    if (fast) return fast
    let v: unknown
    try {
      v = unpackr.unpack(payload)
    } catch (cause) {
      throw badRequest('COMMAND payload is not valid msgpack', cause)
    }
    if (!Array.isArray(v) || typeof v[0] !== 'string' || v.length < 1 || v.length > 4) {
      throw badRequest('COMMAND payload is not [command, data, timeout?, extensions?]')
    }
    const out: CommandPayload = { command: v[0], data: v[1] }
    if (typeof v[2] === 'number' && v[2] >= 0) out.timeout = v[2]
    if (v.length === 4 && v[3] !== null && v[3] !== undefined) {
      if (!isMap(v[3])) throw badRequest('COMMAND extensions must be a map')
      out.ext = readExt(v[3])
    }
    return out
  },
  encodeValue(value) {
    return packScalar(value) ?? packr.pack(value)
  },
  decodeValue(payload) {
    if (payload.length === 0) return undefined
    const v = readScalar(payload, 0)
    return v !== NOT_SCALAR && scalarEnd === payload.length ? v : unpackr.unpack(payload)
  },
  encodeError(code, message, data) {
    return packr.pack(data === undefined ? { code, message } : { code, message, data })
  },
  decodeError(payload) {
    try {
      const v = unpackr.unpack(payload) as Partial<ErrorPayload> | null
      if (v && typeof v.code === 'string' && typeof v.message === 'string') return v as ErrorPayload
    } catch {
      // fall through to text
    }
    return jsonCodec.decodeError(payload)
  },
}

/** @internal The reference conventions for legacy peers. */
export const jsonCodec: PayloadCodec = {
  name: 'json',
  encodeCommand(command, data, timeout, ext) {
    // `timeout` and `ext` only go to polycall peers (the caller passes undefined for legacy ones).
    const o: Record<string, unknown> = { command, data: data ?? null }
    if (timeout !== undefined) o.timeout = Math.max(0, Math.ceil(timeout))
    if (ext !== undefined) {
      const e = extFields(ext)
      if (ext.key !== undefined) e.k = Buffer.from(ext.key).toString('hex')
      o.ext = e
    }
    return Buffer.from(JSON.stringify(o))
  },
  decodeCommand(payload) {
    const text = stripNul(payload).toString('utf8')
    if (text.startsWith('{')) {
      let v: unknown
      try {
        v = JSON.parse(text)
      } catch (cause) {
        throw badRequest('COMMAND payload is not valid JSON', cause)
      }
      const o = v as { command?: unknown; data?: unknown; timeout?: unknown; ext?: unknown }
      if (typeof o?.command !== 'string') throw badRequest('COMMAND JSON has no string "command"')
      const out: CommandPayload = { command: o.command, data: o.data }
      if (typeof o.timeout === 'number' && o.timeout >= 0) out.timeout = o.timeout
      if (o.ext !== undefined && o.ext !== null) {
        if (!isMap(o.ext)) throw badRequest('COMMAND extensions must be an object')
        const fields = { ...o.ext }
        // JSON carries the key as hex.
        const k = fields['k']
        if (k !== undefined && k !== null) {
          if (typeof k !== 'string' || !/^(?:[0-9a-f]{2})+$/i.test(k)) throw badRequest('the idempotency key must be hex in JSON')
          fields['k'] = Buffer.from(k, 'hex')
        }
        out.ext = readExt(fields)
      }
      return out
    }
    // The C library hands COMMAND bytes through as opaque text: treat it as the command name.
    if (text.length === 0) throw badRequest('empty COMMAND payload')
    return { command: text.trim(), data: undefined }
  },
  encodeValue(value) {
    if (value instanceof Uint8Array) return Buffer.from(value)
    return Buffer.from(JSON.stringify(value ?? null) ?? 'null')
  },
  decodeValue(payload) {
    const body = stripNul(payload)
    if (body.length === 0) return undefined
    try {
      return JSON.parse(body.toString('utf8'))
    } catch {
      return Buffer.from(body)
    }
  },
  encodeError(code, message) {
    return Buffer.from(`${code}: ${message}`)
  },
  decodeError(payload) {
    const text = stripNul(payload).toString('utf8')
    const m = /^([A-Za-z][\w.]*_[\w.]*|[a-z]+\.[a-z_.]+): (.*)$/s.exec(text)
    return m ? { code: m[1]!, message: m[2]! } : { code: ErrorCode.REMOTE, message: text }
  },
}

/** The extension map as msgpack writes it (JSON replaces the key by its hex form). */
function extFields(ext: CommandExt): Record<string, unknown> {
  const e: Record<string, unknown> = {}
  if (ext.key !== undefined) e.k = ext.key
  if (ext.traceparent !== undefined) e.tp = ext.traceparent
  if (ext.tracestate !== undefined) e.ts = ext.tracestate
  return e
}

/** Credentials travel as UTF-8 JSON for every peer (docs/protocol.md §3.1). @internal */
export function encodeCredentials(credentials: unknown): Buffer {
  return Buffer.from(JSON.stringify(credentials ?? {}))
}

/** @internal */
export function decodeCredentials(payload: Buffer): unknown {
  const text = stripNul(payload).toString('utf8')
  if (text.length === 0) return {}
  try {
    return JSON.parse(text)
  } catch {
    // The C library passes opaque credential bytes: hand them over as text.
    return text
  }
}

/** The cancellation notice: HEARTBEAT, flags URGENT, payload `CNCL` + u32 LE sequence. @internal */
const CANCEL_TAG = 0x4c434e43 // "CNCL" read as u32 LE

/** @internal */
export function encodeCancel(sequence: number): Buffer {
  const b = Buffer.allocUnsafe(8)
  b.writeUInt32LE(CANCEL_TAG, 0)
  b.writeUInt32LE(sequence >>> 0, 4)
  return b
}

/** The sequence a cancellation notice names, or undefined for any other heartbeat payload. @internal */
export function decodeCancel(payload: Buffer): number | undefined {
  return payload.length === 8 && payload.readUInt32LE(0) === CANCEL_TAG ? payload.readUInt32LE(4) : undefined
}

/** What {@link sendHeartbeat} needs of a connection. @internal */
export interface HeartbeatSender {
  nextSequence(): number
  send(type: number, sequence: number, payload?: Uint8Array, flags?: number): void
}

/** Sends a v1 HEARTBEAT with the time; shared by every connection (no closure each). @internal */
export function sendHeartbeat(conn: HeartbeatSender): void {
  conn.send(MessageType.Heartbeat, conn.nextSequence(), heartbeatPayload(), ProtocolFlag.None)
}

/** An 8-byte LE Unix-milliseconds heartbeat payload (what C peers expect). @internal */
export function heartbeatPayload(): Buffer {
  const b = Buffer.allocUnsafe(8)
  b.writeBigUInt64LE(BigInt(Date.now()), 0)
  return b
}
