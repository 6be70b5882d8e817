/**
 * What a client needs from a wire protocol: connection setup, how a call is framed, how a reply
 * is read, connection-level notices and cancellation. {@link v1ClientProtocol} speaks
 * LibPolyCall v1; the PCR1 adapter lives in ts/pcr1/client-protocol.ts.
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { ErrorCode, PolyCallError } from '../core/errors.js'
import type { Connection } from '../network/connection.js'
import { v1Wire, type Wire, type WireFrame } from '../network/wire.js'
import { MessageType, ProtocolFlag } from '../protocol/constants.js'
import { buildHandshake, parseHandshake } from '../protocol/handshake.js'
import {
  Capability,
  SUPPORTED_CAPABILITIES,
  encodeCancel,
  encodeCredentials,
  sendHeartbeat,
  jsonCodec,
  msgpackCodec,
} from '../protocol/payload.js'
import { SecureChannel } from '../secure/channel.js'
import { Identity, publicKeyText } from '../secure/identity.js'
import type { ResolvedClientSecure } from '../secure/options.js'
import { SessionState } from '../state/session.js'
import type { TraceContext } from '../core/trace.js'
import { commandBound, type CommandExt } from '../protocol/msgpack-scalar.js'

/** The parts of a call a protocol reads. @internal */
export interface PendingCall {
  readonly kind: 'request' | 'control'
  /** v1: the command; PCR1: `service.operation`, or the control action. */
  readonly command: string
  readonly data: unknown
  readonly authToken: string | undefined
  sequence: number
  /** The idempotency key of an idempotent call. */
  readonly key: Buffer | undefined
  /** The trace context to send. */
  readonly trace: TraceContext | undefined
}

/** The extension fields a call carries on this connection: only those the server negotiated. @internal */
export function extOf(conn: Connection, call: PendingCall): CommandExt | undefined {
  const caps = conn.capabilities
  let ext: CommandExt | undefined
  if (call.key !== undefined && caps & Capability.IdempotencyKeys) ext = { key: call.key }
  const trace = call.trace
  if (trace !== undefined && caps & Capability.TraceContext) {
    ext ??= {}
    ext.traceparent = trace.traceparent
    if (trace.tracestate !== undefined) ext.tracestate = trace.tracestate
  }
  return ext
}

/** What the client lends a protocol during setup. @internal */
export interface ClientSetup {
  /**
   * Sends one frame and resolves with the first frame echoing its sequence for which `answers`
   * is true; frames with that sequence for which it is false are ignored (PROTOCOL.md §5: they
   * do not answer a request, whatever their sequence).
   */
  exchange(conn: Connection, type: number, payload: Uint8Array, answers: (f: WireFrame) => boolean, flags?: number): Promise<WireFrame>
  readonly credentials: unknown
  readonly maxInFlight: number
  readonly heartbeatInterval: number
  readonly legacyOnly: boolean
  /** Offer msgpack payloads (otherwise JSON with the other extensions). */
  readonly msgpack: boolean
  readonly sequenceStart: number | undefined
  /** The checked `secure` option: run a secure session, or fail. */
  readonly secure: ResolvedClientSecure | undefined
}

/**
 * The first step of a secure handshake, taken while the connection is being made: the
 * initiator's channel and its hello (IK and NK know the server key beforehand). Whoever holds
 * it and does not pass it to {@link ClientProtocol.setup} destroys the channel. @internal
 */
export interface PreparedSetup {
  readonly channel: SecureChannel
  readonly hello: Buffer
}

/** Returned by {@link ClientProtocol.successValue} when the reply is not a plain success. @internal */
export const NOT_SUCCESS: unique symbol = Symbol('not a success')

/** A reply's outcome. @internal */
export type ReplyOutcome = { ok: true; value: unknown } | { ok: false; code: string; message: string; data?: unknown }

/** A wire protocol as the client drives it. @internal */
export interface ClientProtocol {
  readonly wire: Wire
  /**
   * Work of the setup that needs no connection, done synchronously right after the connection
   * attempt starts, so that it overlaps TCP (and TLS): the first message of an IK or NK secure
   * handshake. Undefined when there is nothing to do, or when doing it failed (`setup` then
   * fails the same way).
   */
  prepare?(setup: ClientSetup): PreparedSetup | undefined
  /**
   * Handshake and authentication on a fresh connection; returns its limit of calls in flight.
   * `prepared` is what {@link ClientProtocol.prepare} returned for this connection; the
   * connection owns its channel from here on.
   */
  setup(conn: Connection, setup: ClientSetup, prepared?: PreparedSetup): Promise<number>
  /** Authenticates a live connection with `setup.credentials`. */
  authenticate(conn: Connection, setup: ClientSetup): Promise<void>
  /** The frame type and payload of a call; `remaining` is the time left in ms. */
  encode(conn: Connection, call: PendingCall, remaining: number | undefined): { type: number; payload: Buffer }
  /**
   * Whether `f` answers `call` (a frame type that answers that kind of call), or, without a
   * call, whether it is a reply at all (one whose sequence matches no call is unsolicited).
   */
  isReply(f: WireFrame, call: PendingCall | undefined): boolean
  /** The code a server's "your deadline passed" verdict carries on this wire. */
  readonly deadlineCode: string
  outcome(conn: Connection, f: WireFrame, call: PendingCall): ReplyOutcome
  /**
   * The value of a reply that is a success without a {@link ReplyOutcome} in between, or
   * {@link NOT_SUCCESS} when `outcome` must decide (an ERROR, or anything this shortcut does not
   * read). Throws as `outcome` does for a payload that cannot be decoded.
   */
  successValue?(conn: Connection, f: WireFrame): unknown
  /**
   * The payload bound of a call that can go straight into the connection's write arena with
   * {@link writeCommandAt} (a scalar request of a busy tick, without extensions), or -1 when it
   * must go through `encode`.
   */
  directBound?(conn: Connection, call: PendingCall): number
  /** A connection-level notice (it fails every call on the connection), or undefined. */
  notice(conn: Connection, f: WireFrame): PolyCallError | undefined
  /** Tells the server a written call was abandoned, where the protocol can. */
  cancel(conn: Connection, call: PendingCall): void
}

/** The frames a setup exchange takes from the frames echoing its sequence. */
const answersHello = (f: WireFrame): boolean =>
  f.type === MessageType.Response || f.type === MessageType.Error || f.type === MessageType.Handshake
const answersAuth = (f: WireFrame): boolean => f.type === MessageType.Response || f.type === MessageType.Error || f.type === MessageType.Auth

const handshakeFailed = (message: string, cause?: unknown) =>
  new PolyCallError(ErrorCode.HANDSHAKE_FAILED, message, cause === undefined ? undefined : { cause })

/**
 * The secure handshake (docs/protocol-extensions.md, "Secure sessions"): message 1 in the hello,
 * message 2 in the RESPONSE, XX's message 3 in a second HANDSHAKE followed at once by sealed
 * frames. Anything but a secure answer fails: a plaintext or legacy server is
 * `ERR_POLYCALL_INSECURE_PEER`, an impostor or an altered handshake `ERR_POLYCALL_HANDSHAKE_FAILED`,
 * and an ERROR carries the server's refusal.
 */
async function secureSetup(conn: Connection, setup: ClientSetup, secure: ResolvedClientSecure, prepared: PreparedSetup | undefined): Promise<number> {
  const offer = secureOffer(setup, secure)
  if (setup.sequenceStart !== undefined) conn.startSequence(setup.sequenceStart)
  const start = prepared ?? startSecure(setup, secure)
  const { channel } = start
  conn.secure(channel)
  conn.session.to(SessionState.Handshake)
  // The channel holds after the answer: this step, not the connection, decides how to read on.
  const answer = await setup.exchange(conn, MessageType.Handshake, start.hello, (f) => {
    if (!answersHello(f)) return false
    conn.claimStep()
    return true
  })
  if (answer.type === MessageType.Error) {
    const { code, message } = jsonCodec.decodeError(answer.payload)
    throw new PolyCallError(code === ErrorCode.REMOTE ? ErrorCode.HANDSHAKE_FAILED : code, `secure handshake refused: ${message}`)
  }
  if (answer.type === MessageType.Handshake) {
    throw new PolyCallError(ErrorCode.INSECURE_PEER, 'the peer answered the hello with a HANDSHAKE: it speaks no secure session')
  }
  const reply = channel.readReply(answer.payload)
  if (!reply.established) {
    const key = publicKeyText(reply.serverKey)
    let accepted: unknown
    try {
      accepted = await secure.check!(key)
    } catch (e) {
      throw handshakeFailed(`the server key check threw for ${key}`, e)
    }
    if (accepted !== true) throw handshakeFailed(`the server key ${key} was not accepted`)
    if (conn.closed) throw new PolyCallError(ErrorCode.CONNECT_FAILED, 'the server closed the connection during the secure handshake')
    conn.send(MessageType.Handshake, conn.nextSequence(), channel.finish())
  }
  conn.seal()
  conn.stepDone()
  const caps = reply.flags & (offer | Capability.Secure)
  conn.capabilities = caps
  conn.legacy = false
  conn.codec = caps & Capability.Msgpack ? msgpackCodec : jsonCodec
  conn.session.to(SessionState.Auth)
  if (setup.credentials !== undefined) await v1ClientProtocol.authenticate(conn, setup)
  else conn.session.to(SessionState.Ready)
  if (caps & Capability.Heartbeat) conn.startHeartbeat(setup.heartbeatInterval, sendHeartbeat)
  return reply.maxInFlight ? Math.min(setup.maxInFlight, reply.maxInFlight) : setup.maxInFlight
}

/** The capabilities a secure hello offers. */
function secureOffer(setup: ClientSetup, secure: ResolvedClientSecure): number {
  return (
    (setup.msgpack ? SUPPORTED_CAPABILITIES : SUPPORTED_CAPABILITIES & ~Capability.Msgpack) |
    Capability.SealedBatches |
    (secure.compress ? Capability.Compression : 0)
  )
}

/** The initiator's channel and hello (handshake message 1); nothing in them depends on the connection. */
function startSecure(setup: ClientSetup, secure: ResolvedClientSecure): PreparedSetup {
  const { pattern } = secure
  // An XX client without an identity of its own gets a one-off key for this connection only.
  const oneOff = pattern === 'XX' && secure.identity === undefined ? Identity.generate() : undefined
  try {
    return SecureChannel.initiator({
      pattern,
      identity: pattern === 'NK' ? undefined : (secure.identity ?? oneOff),
      serverKey: secure.serverKey,
      flags: secureOffer(setup, secure),
      ...secure.limits,
    })
  } finally {
    oneOff?.destroy()
  }
}

/** LibPolyCall v1: handshake with capability bits, JSON AUTH, COMMAND/RESPONSE/ERROR. @internal */
export const v1ClientProtocol: ClientProtocol = {
  wire: v1Wire,

  prepare(setup) {
    // XX learns the server key from message 2 and checks it with a callback: it keeps its order.
    const secure = setup.secure
    if (secure === undefined || secure.pattern === 'XX') return undefined
    try {
      return startSecure(setup, secure)
    } catch {
      // A destroyed identity, say: setup() tries again and fails with the same error.
      return undefined
    }
  },

  async setup(conn, setup, prepared) {
    if (setup.secure) return secureSetup(conn, setup, setup.secure, prepared)
    prepared?.channel.destroy()
    // Handshake (§4): long form with our capability bits. A RESPONSE or ERROR echoing the
    // sequence answers it, and so does a HANDSHAKE carrying the magic (what an echo peer sends
    // back); a HANDSHAKE without it is a broken answer. HEARTBEAT, COMMAND and AUTH frames never
    // answer, whatever their sequence (§5), and are ignored.
    const offer = setup.legacyOnly ? 0 : setup.msgpack ? SUPPORTED_CAPABILITIES : SUPPORTED_CAPABILITIES & ~Capability.Msgpack
    if (setup.sequenceStart !== undefined) conn.startSequence(setup.sequenceStart)
    conn.session.to(SessionState.Handshake)
    const answer = await setup.exchange(conn, MessageType.Handshake, buildHandshake(offer), answersHello)
    if (answer.type === MessageType.Error) {
      const { code, message } = jsonCodec.decodeError(answer.payload)
      throw new PolyCallError(code === ErrorCode.REMOTE ? ErrorCode.PROTOCOL : code, `handshake refused: ${message}`)
    }
    if (answer.type === MessageType.Handshake) {
      try {
        parseHandshake(answer.payload, { strict: true })
      } catch (e) {
        throw new PolyCallError(ErrorCode.PROTOCOL, 'the server answered the handshake with a HANDSHAKE that carries no valid magic', { cause: e })
      }
    }
    let caps = 0
    let limit = setup.maxInFlight
    if (answer.type === MessageType.Response) {
      try {
        const h = parseHandshake(answer.payload)
        caps = h.flags & offer
        if (h.maxInFlight) limit = Math.min(limit, h.maxInFlight)
      } catch {
        caps = 0
      }
    }
    conn.capabilities = caps
    conn.legacy = caps === 0
    conn.codec = caps & Capability.Msgpack ? msgpackCodec : jsonCodec
    conn.session.to(SessionState.Auth)
    if (setup.credentials !== undefined) await this.authenticate(conn, setup)
    else conn.session.to(SessionState.Ready)
    if (caps & Capability.Heartbeat) {
      conn.startHeartbeat(setup.heartbeatInterval, sendHeartbeat)
    }
    // Legacy peers read one frame per read: keep one call outstanding (docs/protocol.md §10.1).
    return caps === 0 ? 1 : limit
  },

  async authenticate(conn, setup) {
    // Only a RESPONSE (accepted) or ERROR (refused) echoing the AUTH's sequence answers it. An
    // AUTH coming back means nothing on the other side looked at the credentials (an echo
    // server): that fails at once, it is never a success. Other frames are ignored (§5).
    const f = await setup.exchange(conn, MessageType.Auth, encodeCredentials(setup.credentials), answersAuth)
    if (f.type === MessageType.Error) {
      const { message } = conn.codec.decodeError(f.payload)
      throw new PolyCallError(ErrorCode.UNAUTHENTICATED, message)
    }
    if (f.type === MessageType.Auth) {
      throw new PolyCallError(ErrorCode.PROTOCOL, 'the server sent the AUTH frame back instead of answering it: nothing verified the credentials')
    }
    if (conn.session.state === SessionState.Auth) conn.session.to(SessionState.Ready)
  },

  encode(conn, call, remaining) {
    if (call.kind !== 'request') throw new PolyCallError(ErrorCode.INVALID_ARGUMENT, 'control actions exist on the PCR1 wire only')
    // Legacy peers get exactly {"command", "data"}; polycall peers also get the deadline and the
    // extension fields they negotiated.
    if (conn.legacy) return { type: MessageType.Command, payload: conn.codec.encodeCommand(call.command, call.data, undefined) }
    const ext = call.key === undefined && call.trace === undefined ? undefined : extOf(conn, call)
    return { type: MessageType.Command, payload: conn.codec.encodeCommand(call.command, call.data, remaining, ext) }
  },

  directBound(conn, call) {
    if (call.kind !== 'request' || call.key !== undefined || call.trace !== undefined || conn.codec !== msgpackCodec || conn.legacy) return -1
    const bound = commandBound(call.command, call.data)
    return conn.canSendInto(bound) ? bound : -1
  },

  // A COMMAND is answered by RESPONSE or ERROR only (§5).
  isReply: (f) => (f.type === MessageType.Response || f.type === MessageType.Error) && f.sequence !== 0,

  deadlineCode: ErrorCode.DEADLINE_EXCEEDED,

  successValue: (conn, f) => (f.type === MessageType.Response ? conn.codec.decodeValue(f.payload) : NOT_SUCCESS),

  outcome(conn, f) {
    if (f.type === MessageType.Response) return { ok: true, value: conn.codec.decodeValue(f.payload) }
    const { code, message, data } = conn.codec.decodeError(f.payload)
    return data === undefined ? { ok: false, code, message } : { ok: false, code, message, data }
  },

  notice(conn, f) {
    if (f.type !== MessageType.Error || f.sequence !== 0) return undefined
    const { code, message } = conn.codec.decodeError(f.payload)
    return new PolyCallError(code, message)
  },

  cancel(conn, call) {
    if (conn.capabilities & Capability.Cancel) conn.send(MessageType.Heartbeat, call.sequence, encodeCancel(call.sequence), ProtocolFlag.Urgent)
  },
}
