/**
 * The LibPolyCall v1 side of the server: the handshake (docs/protocol.md §4) with capability
 * negotiation, AUTH, COMMAND dispatch, cancellation notices, and ERROR replies in the peer's
 * conventions (msgpack for polycall peers, text for legacy ones).
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { ErrorCode, PolyCallError, isPolyCallError } from '../core/errors.js'
import { v1Wire, type WireFrame } from '../network/wire.js'
import { encodeFrame } from '../protocol/codec.js'
import { MessageType, ProtocolFlag } from '../protocol/constants.js'
import { buildHandshake, parseHandshake } from '../protocol/handshake.js'
import {
  Capability,
  decodeCancel,
  decodeCredentials,
  sendHeartbeat,
  jsonCodec,
  msgpackCodec,
} from '../protocol/payload.js'
import { valueBound, writeValueAt } from '../protocol/msgpack-scalar.js'
import type { SecureChannel, SecureHello } from '../secure/channel.js'
import { publicKeyText } from '../secure/identity.js'
import { SessionState } from '../state/session.js'
import type { PeerInfo } from './context.js'
import type { Credentials } from './options.js'
import type { ServerHost, ServerProtocol, ServerSession } from './session.js'

const AUTH_ATTEMPTS = 3

// The reply payload depends only on the agreed capabilities and the server's limit: build each
// variant once instead of once per connection.
const replies = new Map<string, Buffer>()
function handshakeReply(caps: number, maxInFlight: number): Buffer {
  const key = `${caps}:${maxInFlight}`
  let payload = replies.get(key)
  if (!payload) {
    payload = caps ? buildHandshake(caps, maxInFlight) : buildHandshake(0)
    replies.set(key, payload)
  }
  return payload
}

function notAllowed(s: ServerSession, type: number): PolyCallError {
  return new PolyCallError(
    ErrorCode.PROTOCOL,
    `${MessageType[type]?.toUpperCase() ?? type} is not allowed in session state ${SessionState[s.conn.session.state]?.toUpperCase()}`,
  )
}

function sendError(s: ServerSession, sequence: number, err: PolyCallError): void {
  if (s.conn.closed) return
  s.conn.send(MessageType.Error, sequence, s.conn.codec.encodeError(err.code, err.message, (err as { data?: unknown }).data))
}

function handshake(host: ServerHost, s: ServerSession, f: WireFrame): void {
  const { conn } = s
  const channel = conn.channel
  if (conn.session.state !== SessionState.Init) {
    if (channel !== undefined && conn.session.accepts(MessageType.Handshake)) return secureFinish(host, s, f, channel)
    return sendError(s, f.sequence, notAllowed(s, f.type))
  }
  if (channel !== undefined) return secureHello(host, s, f, channel)
  plainHandshake(host, s, f)
}

function plainHandshake(host: ServerHost, s: ServerSession, f: WireFrame): void {
  const { conn } = s
  let hello
  try {
    hello = parseHandshake(f.payload)
  } catch (e) {
    return host.fail(s, e as PolyCallError, f.sequence)
  }
  const caps = hello.legacy ? 0 : hello.flags & host.capabilities
  conn.capabilities = caps
  // A peer that sent capability bits reads frames properly, whatever they were.
  conn.legacy = hello.legacy
  conn.codec = caps & Capability.Msgpack ? msgpackCodec : jsonCodec
  s.settleLegacy()
  conn.session.to(SessionState.Handshake)
  conn.send(MessageType.Response, f.sequence, handshakeReply(caps, host.options.maxInFlight))
  conn.session.to(SessionState.Auth)
  if (!host.options.requireAuth || s.authenticated) conn.session.to(SessionState.Ready)
  if (caps & Capability.Heartbeat) {
    conn.startHeartbeat(host.options.heartbeatInterval, sendHeartbeat)
  }
  host.established(s)
}

const unauthenticated = (message: string) => new PolyCallError(ErrorCode.UNAUTHENTICATED, message)

/** What a secure server decided on a client's key: a principal, or a refusal. */
const REFUSED = Symbol('refused')
/** `secure.clients` is not set: any key gets in, none is authenticated by it. */
const UNCHECKED = Symbol('unchecked')
type Verdict = unknown

/**
 * The auth rule for keys: a listed key, or a truthy answer of the check, admits; an unlisted key,
 * a falsy answer, a throw or a rejection refuses. Synchronous unless the check returns a promise.
 */
function admit(host: ServerHost, s: ServerSession, key: string | undefined): Verdict | Promise<Verdict> {
  const clients = host.secure!.clients
  if (clients === undefined) return UNCHECKED
  if (typeof clients !== 'function') {
    if (key === undefined || !clients.has(key)) return REFUSED
    const cert = s.peer.certificate
    return cert ? { publicKey: key, subject: cert.subject, fingerprint256: cert.fingerprint256 } : { publicKey: key }
  }
  let answer: unknown
  try {
    answer = clients(key, s.peer)
  } catch {
    return REFUSED
  }
  if (answer !== null && typeof answer === 'object' && typeof (answer as PromiseLike<unknown>).then === 'function') {
    return Promise.resolve(answer as PromiseLike<unknown>).then(
      (v) => (v ? v : REFUSED),
      () => REFUSED,
    )
  }
  return answer ? answer : REFUSED
}

/** Runs `then` with the verdict: now when it is known now, otherwise once it settles (the step is claimed meanwhile). */
function withVerdict(s: ServerSession, verdict: Verdict | Promise<Verdict>, then: (v: Verdict) => void): void {
  if (!(verdict instanceof Promise)) return then(verdict)
  s.conn.claimStep()
  verdict.then(
    (v) => {
      if (s.conn.closed) return
      then(v)
      s.conn.stepDone()
    },
    // admit() maps every failure to REFUSED; nothing else can reject.
    () => {},
  )
}

function refusedKey(key: string | undefined): PolyCallError {
  return unauthenticated(key === undefined ? 'this server admits only clients with a known key' : `the key ${key} is not admitted`)
}

/** The session is established and its peer admitted: record who it is and go on to AUTH/READY. */
function secureReady(host: ServerHost, s: ServerSession, pattern: PeerInfo['secure'], key: string | undefined, verdict: Verdict): void {
  const { conn } = s
  const peer = s.peer
  peer.secure = pattern
  peer.publicKey = key
  if (verdict !== UNCHECKED) {
    s.principal = verdict
    s.authenticated = true
    host.authenticated(s, true)
  }
  conn.session.to(SessionState.Auth)
  if (!host.options.requireAuth || s.authenticated) conn.session.to(SessionState.Ready)
  if (conn.capabilities & Capability.Heartbeat) conn.startHeartbeat(host.options.heartbeatInterval, sendHeartbeat)
  host.established(s)
}

/**
 * A HANDSHAKE on a secure server: a plaintext hello continues as on any server (unless
 * `required`), a secure one runs message 1 and answers with message 2. IK and NK clients are
 * admitted (or refused with one ERROR echoing the hello) before the answer; XX clients after
 * their third message.
 */
function secureHello(host: ServerHost, s: ServerSession, f: WireFrame, channel: SecureChannel): void {
  const { conn } = s
  const secure = host.secure!
  let hello: SecureHello
  try {
    hello = channel.readHello(f.payload)
  } catch (e) {
    return host.fail(s, e as PolyCallError, f.sequence)
  }
  if (!hello.secure) {
    if (secure.required) {
      return host.fail(s, new PolyCallError(ErrorCode.INSECURE_PEER, 'this server requires a secure session'), f.sequence)
    }
    conn.plain()
    return plainHandshake(host, s, f)
  }
  conn.session.to(SessionState.Handshake)
  const pattern = hello.pattern!
  const caps = hello.flags & (host.capabilities | Capability.SealedBatches | (secure.compress ? Capability.Compression : 0))
  const answer = (): boolean => {
    let reply: Buffer
    try {
      reply = channel.accept(caps, host.options.maxInFlight)
    } catch (e) {
      host.fail(s, e as PolyCallError, f.sequence)
      return false
    }
    conn.capabilities = caps | Capability.Secure
    conn.legacy = false
    conn.codec = caps & Capability.Msgpack ? msgpackCodec : jsonCodec
    s.settleLegacy()
    conn.send(MessageType.Response, f.sequence, reply)
    return true
  }
  if (pattern === 'XX') {
    // The client's key comes with message 3: answer now, decide then.
    if (answer()) conn.session.expectSecondHandshake()
    return
  }
  const key = hello.clientKey === undefined ? undefined : publicKeyText(hello.clientKey)
  withVerdict(s, admit(host, s, key), (verdict) => {
    if (verdict === REFUSED) return host.fail(s, refusedKey(key), f.sequence)
    if (!answer()) return
    // IK and NK: every frame after the RESPONSE is sealed.
    conn.seal()
    secureReady(host, s, pattern, key, verdict)
  })
}

/** XX's third message: the client's key, then the same decision as for IK. */
function secureFinish(host: ServerHost, s: ServerSession, f: WireFrame, channel: SecureChannel): void {
  const { conn } = s
  let key: string
  try {
    key = publicKeyText(channel.readFinish(f.payload))
  } catch (e) {
    return host.fail(s, e as PolyCallError, 0)
  }
  // The client seals from its third message on; so does this side from here.
  conn.seal()
  withVerdict(s, admit(host, s, key), (verdict) => {
    if (verdict === REFUSED) return host.fail(s, refusedKey(key), 0)
    secureReady(host, s, 'XX', key, verdict)
  })
}

/**
 * A refused AUTH: whoever the connection was before, it is nobody now (on a requireAuth server
 * its commands are refused again until an AUTH succeeds).
 */
function refuseAuth(host: ServerHost, s: ServerSession, sequence: number, err: PolyCallError): void {
  const was = s.authenticated
  s.principal = undefined
  s.authenticated = false
  if (was) host.authenticated(s, false)
  sendError(s, sequence, err)
  if (++s.authFailures >= AUTH_ATTEMPTS) s.conn.end()
}

/**
 * AUTH (PROTOCOL.md §5): the verifier must positively return a principal. No verifier, a falsy
 * result, a throw or a rejection all refuse; nothing falls back to the current principal.
 */
function auth(host: ServerHost, s: ServerSession, f: WireFrame): void {
  const { conn } = s
  if (!conn.session.accepts(MessageType.Auth)) return sendError(s, f.sequence, notAllowed(s, f.type))
  if (s.authPending) return sendError(s, f.sequence, new PolyCallError(ErrorCode.BUSY, 'an authentication is already in progress'))
  const verify = host.options.authenticate
  if (!verify) return refuseAuth(host, s, f.sequence, unauthenticated('this server verifies no credentials'))
  const credentials = decodeCredentials(f.payload)
  s.authPending = true
  Promise.resolve()
    // Unchecked JSON: Credentials is what polycall clients send, and verifiers treat it as untrusted.
    .then(() => verify(credentials as Credentials, s.peer))
    .then(
      (principal) => {
        s.authPending = false
        if (conn.closed) return
        if (!principal) return refuseAuth(host, s, f.sequence, unauthenticated('authentication failed'))
        s.principal = principal
        s.authenticated = true
        s.authFailures = 0
        host.authenticated(s, true)
        if (conn.session.state === SessionState.Auth) conn.session.to(SessionState.Ready)
        conn.send(MessageType.Response, f.sequence, conn.codec.encodeValue({ authenticated: true }))
      },
      (e: unknown) => {
        s.authPending = false
        if (conn.closed) return
        const err =
          isPolyCallError(e) && e.code === ErrorCode.UNAUTHENTICATED
            ? e
            : new PolyCallError(ErrorCode.UNAUTHENTICATED, 'authentication failed', { cause: e })
        refuseAuth(host, s, f.sequence, err)
      },
    )
}

function command(host: ServerHost, s: ServerSession, f: WireFrame): void {
  const { conn } = s
  if (!conn.session.accepts(MessageType.Command)) {
    const err =
      conn.session.state === SessionState.Auth
        ? new PolyCallError(ErrorCode.UNAUTHENTICATED, 'authenticate before sending commands')
        : notAllowed(s, f.type)
    return sendError(s, f.sequence, err)
  }
  // READY, but a refused re-AUTH dropped the principal (the session table has no READY -> AUTH).
  if (!s.authenticated && host.options.requireAuth) {
    return sendError(s, f.sequence, unauthenticated('authenticate before sending commands'))
  }
  let cmd
  try {
    cmd = conn.codec.decodeCommand(f.payload)
  } catch (e) {
    return sendError(s, f.sequence, e as PolyCallError)
  }
  host.dispatch(s, f.sequence, cmd.command, cmd.data, cmd.timeout, cmd.ext)
}

export const v1ServerProtocol: ServerProtocol = {
  wire: v1Wire,
  handshake: true,

  frame(host, s, f) {
    switch (f.type) {
      case MessageType.Command:
        return command(host, s, f)
      case MessageType.Heartbeat: {
        const cancelled = decodeCancel(f.payload)
        if (cancelled !== undefined) host.cancel(s, cancelled)
        return
      }
      case MessageType.Handshake:
        return handshake(host, s, f)
      case MessageType.Auth:
        return auth(host, s, f)
      default:
        return sendError(s, f.sequence, notAllowed(s, f.type))
    }
  },

  respond(_host, s, req, failure) {
    if (failure) return sendError(s, req.sequence, failure)
    const conn = s.conn
    const value = req.result
    // A scalar reply of a busy tick goes straight into the write arena.
    if (conn.codec === msgpackCodec && conn.sendInto(MessageType.Response, req.sequence, valueBound(value), writeValueAt, value, 0, 0)) return
    conn.send(MessageType.Response, req.sequence, conn.codec.encodeValue(value))
  },

  refuse(_host, s, sequence, err) {
    sendError(s, sequence, err)
  },

  notice(_host, s, err, sequence) {
    sendError(s, sequence, err)
  },

  // No handshake yet, so the peer's conventions are unknown: a text ERROR (sequence 0) is what
  // every reference understands.
  refusal: (err) => encodeFrame({ type: MessageType.Error, sequence: 0, payload: Buffer.from(`${err.code}: ${err.message}`) }),
}
