/**
 * The PCR1 side of the server (docs/protocol.md §P2-§P4): REQUEST dispatch to `service.operation`
 * routes, control actions, replies in request order per connection (as the C runtime serves a
 * connection on one thread), `frame.type` for frames a client must not send, and corr-0
 * CONTROL_REPLY notices before closing.
 *
 * Every frame reserves a reply slot, and the slots of a connection (waiting, or answered but
 * held behind a slower request) are what `maxInFlight` bounds: at the limit the connection stops
 * reading until half of them went out.
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { ErrorCode, PolyCallError } from '../core/errors.js'
import { SequenceTable } from '../core/sequence-table.js'
import { pcr1Wire, type WireFrame } from '../network/wire.js'
import type { ServerHost, ServerProtocol, ServerSession } from '../server/session.js'
import { encodePcr1Frame, Pcr1Type } from './frame.js'
import {
  EXTENSIONS_ACTION,
  Pcr1Code,
  acceptExtensions,
  decodeControl,
  decodeRequest,
  encodeOutcome,
  toPcr1Code,
  type Pcr1Outcome,
} from './messages.js'

/** One reply slot, in the order the requests arrived. */
interface Slot {
  sequence: number
  type: Pcr1Type
  payload: Buffer | undefined
  after?: () => void
}

/** The reply order of one connection: a FIFO of slots, and the open REQUEST slots by corr. */
class ReplyOrder {
  slots: Slot[] = []
  head = 0
  readonly open = new SequenceTable<Slot[]>()
  /** The server's `maxInFlight`: reading pauses while this many slots are reserved. */
  constructor(readonly limit: number) {}
  get length(): number {
    return this.slots.length - this.head
  }
}

function order(s: ServerSession): ReplyOrder {
  return s.extra as ReplyOrder
}

/** Sends every finished reply at the head of the queue, in arrival order. */
function flush(s: ServerSession): void {
  const o = order(s)
  while (o.head < o.slots.length && o.slots[o.head]!.payload) {
    const slot = o.slots[o.head++]!
    s.conn.send(slot.type, slot.sequence, slot.payload)
    slot.after?.()
  }
  if (o.head === o.slots.length) {
    o.slots = []
    o.head = 0
  } else if (o.head > 1024) {
    o.slots = o.slots.slice(o.head)
    o.head = 0
  }
  if (o.length <= o.limit >>> 1) s.conn.resume('replies')
}

/** Reserves the next reply slot; `awaiting` marks a REQUEST whose handler will answer later. */
function reserve(s: ServerSession, sequence: number, type: Pcr1Type, awaiting = false): Slot {
  const slot: Slot = { sequence, type, payload: undefined }
  const o = order(s)
  o.slots.push(slot)
  // The frames after this one wait in the connection (at most the rest of their chunk).
  if (o.length >= o.limit) s.conn.pause('replies')
  if (awaiting) {
    const same = o.open.get(sequence)
    if (same) same.push(slot)
    else o.open.set(sequence, [slot])
  }
  return slot
}

/** The oldest open REQUEST slot for `sequence`, taken out of the lookup. */
function takeOpen(s: ServerSession, sequence: number): Slot | undefined {
  const o = order(s)
  const same = o.open.get(sequence)
  if (!same) return undefined
  const slot = same.shift()
  if (same.length === 0) o.open.delete(sequence)
  return slot
}

function fill(s: ServerSession, slot: Slot, outcome: Pcr1Outcome, key: 'output' | 'data', after?: () => void): void {
  slot.payload = encodeOutcome(outcome, key)
  if (after) slot.after = after
  flush(s)
}

function failure(err: unknown): Pcr1Outcome {
  const { code, message } = toPcr1Code(err)
  return { ok: false, code, message }
}

function control(host: ServerHost, s: ServerSession, f: WireFrame): void {
  const slot = reserve(s, f.sequence, Pcr1Type.ControlReply)
  let action
  try {
    action = decodeControl(f.payload)
  } catch (e) {
    return fill(s, slot, failure(e), 'data')
  }
  switch (action.action) {
    case 'ping':
      return fill(s, slot, { ok: true, value: { pong: true, abi: 1 } }, 'data')
    case 'describe':
      return fill(s, slot, { ok: true, value: { operations: describe(host) } }, 'data')
    case 'health': {
      const stats = host.stats()
      return fill(
        s,
        slot,
        {
          ok: true,
          value: {
            status: host.closing ? 'draining' : 'ok',
            connections: stats.connections.current,
            in_flight: stats.requests.inFlight,
            requests: stats.requests.total,
          },
        },
        'data',
      )
    }
    case EXTENSIONS_ACTION: {
      // A polycall client's offer: the connection carries what both sides know from the next
      // frame on (frames are read in order, so every later REQUEST sees it).
      let accepted
      try {
        accepted = acceptExtensions(action.offer, host.capabilities)
      } catch (e) {
        return fill(s, slot, failure(e), 'data')
      }
      s.conn.capabilities = accepted.capabilities
      return fill(s, slot, { ok: true, value: { extensions: accepted.names } }, 'data')
    }
    case 'shutdown': {
      if (!tokenMatches(action.authToken, host.options.controlToken)) {
        return fill(s, slot, { ok: false, code: Pcr1Code.AUTH_DENIED, message: 'shutdown needs the runtime auth token' }, 'data')
      }
      // Answer first, then drain: the reply leaves before the connection closes.
      return fill(s, slot, { ok: true, value: { shutting_down: true } }, 'data', () => void host.close())
    }
    default:
      return fill(s, slot, { ok: false, code: Pcr1Code.CONTROL_UNKNOWN, message: `unknown control action ${action.action}` }, 'data')
  }
}

/**
 * Whether the CONTROL's token is the configured one, in time independent of where they differ
 * (both sides are hashed first, so their lengths do not show either). No configured token, or
 * none given, never matches.
 */
function tokenMatches(given: string | undefined, expected: string | undefined): boolean {
  if (expected === undefined) return false
  const a = createHash('sha256').update(given ?? '').digest()
  const b = createHash('sha256').update(expected).digest()
  return timingSafeEqual(a, b) && given !== undefined
}

function describe(host: ServerHost) {
  return host
    .routes()
    .filter((r) => r.path.includes('.'))
    .map((r) => {
      const name = r.path.slice(1)
      const dot = name.lastIndexOf('.')
      return {
        service: name.slice(0, dot),
        operation: name.slice(dot + 1),
        summary: r.summary ?? '',
        input: r.inputHint ?? '{}',
        output: r.outputHint ?? '{}',
        idempotent: r.idempotent,
      }
    })
}

export const pcr1ServerProtocol: ServerProtocol = {
  wire: pcr1Wire,
  handshake: false,

  frame(host, s, f) {
    s.extra ??= new ReplyOrder(host.options.maxInFlight)
    switch (f.type) {
      case Pcr1Type.Request: {
        let request
        try {
          request = decodeRequest(f.payload, s.conn.capabilities)
        } catch (e) {
          return fill(s, reserve(s, f.sequence, Pcr1Type.Response), failure(e), 'output')
        }
        reserve(s, f.sequence, Pcr1Type.Response, true)
        return host.dispatch(s, f.sequence, `${request.service}.${request.operation}`, request.input, request.deadlineMs, request.ext)
      }
      case Pcr1Type.Control:
        return control(host, s, f)
      default:
        // RESPONSE and CONTROL_REPLY flow from server to client only.
        return fill(
          s,
          reserve(s, f.sequence, Pcr1Type.ControlReply),
          { ok: false, code: Pcr1Code.FRAME_TYPE, message: `a client may not send frame type ${f.type}` },
          'data',
        )
    }
  },

  respond(_host, s, req, err) {
    const slot = takeOpen(s, req.sequence)
    if (!slot) return
    if (err?.code === ErrorCode.NOT_FOUND) {
      return fill(s, slot, { ok: false, code: Pcr1Code.OPERATION_UNKNOWN, message: `unknown operation ${req.command}` }, 'output')
    }
    fill(s, slot, err ? failure(err) : { ok: true, value: req.result }, 'output')
  },

  refuse(_host, s, sequence, err) {
    const slot = takeOpen(s, sequence) ?? reserve(s, sequence, Pcr1Type.Response)
    fill(s, slot, failure(err), 'output')
  },

  notice(_host, s, err) {
    // Connection-level: one CONTROL_REPLY with corr 0, outside the reply order, then close.
    const code = err.code === ErrorCode.BUSY ? Pcr1Code.SERVER_BUSY : Pcr1Code.FRAME_INVALID
    s.conn.send(Pcr1Type.ControlReply, 0, encodeOutcome({ ok: false, code, message: err.message }, 'data'))
  },

  refusal(err) {
    const code = err.code === ErrorCode.BUSY || err.code === ErrorCode.UNAVAILABLE ? Pcr1Code.SERVER_BUSY : Pcr1Code.FRAME_INVALID
    return encodePcr1Frame(Pcr1Type.ControlReply, 0, encodeOutcome({ ok: false, code, message: err.message }, 'data'))
  },
}
