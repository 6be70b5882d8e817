/**
 * The server's option, limit, statistics and event types, shared by the server core and its
 * protocol adapters.
 * @packageDocumentation
 */
import type { TlsOptions } from 'node:tls'
import type { CallOptions } from '../core/abort.js'
import type { PolyCallError } from '../core/errors.js'
import { optionKeys } from '../core/options.js'
import type { LatencySummary } from '../core/stats.js'
import type { SecureServerOptions } from '../secure/options.js'
import type { PeerInfo, RequestContext } from './context.js'
import type { IdempotencyOptions } from './idempotency.js'

/**
 * The credentials `client.authenticate({ username, password })` sends: what an
 * {@link Authenticator} receives by default.
 *
 * They arrive as the JSON the peer wrote, and the server does not check their shape: a field
 * may be missing or of another type when the peer is not a polycall client, so a verifier
 * treats them as untrusted input (a throw refuses, like a falsy answer).
 */
export interface Credentials {
  /** The user name. */
  username: string
  /** The password, in clear on the wire: use TLS where the network is not trusted. */
  password: string
}

/**
 * Verifies the credentials of an AUTH frame and returns (or resolves to) the principal handlers
 * see as `ctx.principal`. Only a truthy principal authenticates: returning `false`, `null`,
 * `undefined`, `0` or `''`, throwing, or rejecting all refuse with
 * `ERR_POLYCALL_UNAUTHENTICATED`. Return who the peer is, never a bare yes/no test.
 *
 * `C` is what the verifier reads: {@link Credentials} by default. A verifier for another scheme
 * (a token, a signed challenge) takes `unknown` and validates what arrives, for example with a
 * schema; `Authenticator<unknown>` is accepted wherever an `Authenticator` is.
 *
 * @example
 * ```ts
 * const authenticate: Authenticator = async ({ username, password }) => {
 *   const user = await db.users.byName(username)
 *   if (!user || !(await verifyPassword(user.hash, password))) return null // refused
 *   return { id: user.id, roles: user.roles } // the principal
 * }
 * ```
 *
 * @typeParam C - the credentials the verifier reads
 * @param credentials - the JSON the client sent, unchecked
 * @param peer - the connection's address and TLS certificate (under mutual TLS)
 * @returns the principal, e.g. `{ id: 'u1', roles: ['admin'] }`, or a promise of it
 */
export type Authenticator<C = Credentials> = (credentials: C, peer: PeerInfo) => unknown | Promise<unknown>

/** Options of {@link PolyCallServer}. */
export interface ServerOptions {
  /**
   * Wire protocol: `'v1'` (LibPolyCall v1) or `'pcr1'` (the upstream runtime's polycall_rpc v1;
   * routes are addressed as `service.operation`). @defaultValue 'v1'
   */
  protocol?: 'v1' | 'pcr1' | undefined
  /**
   * Checks AUTH credentials (the JSON the client sent) and returns the principal handlers see as
   * `ctx.principal`. Only a truthy result authenticates; a falsy one, a throw or a rejection
   * refuses with `ERR_POLYCALL_UNAUTHENTICATED` (see {@link Authenticator}). Without this hook
   * every AUTH frame is refused. A refused AUTH leaves the connection unauthenticated, whoever
   * it was before. Credentials are never logged, echoed or published.
   * @defaultValue none (AUTH is refused)
   */
  authenticate?: Authenticator | undefined
  /**
   * Refuse COMMAND until the connection authenticated: through `authenticate`, with a client
   * certificate the TLS layer verified (`tls.requestCert` with `rejectUnauthorized` not false),
   * or with a secure session key that `secure.clients` admitted. A server with none of these
   * cannot verify anyone and is refused at construction (`ERR_POLYCALL_INVALID_ARGUMENT`). Without `requireAuth`, COMMAND is served once the
   * handshake is done (go-polycall clients never authenticate). @defaultValue false
   */
  requireAuth?: boolean | undefined
  /**
   * With `requireAuth`: close a connection that has not authenticated this many ms after it
   * connected (or after a refused AUTH dropped it back), heartbeats or not. The peer gets an
   * ERROR `ERR_POLYCALL_UNAUTHENTICATED` first; 0 disables. @defaultValue 10000
   */
  authTimeout?: number | undefined
  /** Serve TLS: node:tls options (`key`, `cert`, `ca`, `requestCert` for mutual TLS, ...). */
  tls?: TlsOptions | undefined
  /**
   * Secure sessions (v1 only): clients that offer one run a Noise handshake inside the v1
   * handshake, and every later frame is sealed (docs/security.md). With `required`, peers that
   * offer none get one ERROR `ERR_POLYCALL_INSECURE_PEER`; with `clients`, only the listed keys
   * (or those the check admits) get in, authenticated by their key. Composes with `tls`.
   * @defaultValue none (plaintext frames, or TLS alone)
   */
  secure?: SecureServerOptions<PeerInfo> | undefined
  /**
   * Connections beyond this get `ERR_POLYCALL_BUSY` and are closed. On a TLS server, connections
   * still in their TLS handshake count separately against the same number (past it they are
   * dropped before the handshake: no coded answer can reach them yet). @defaultValue 10000
   */
  maxConnections?: number | undefined
  /** Largest request payload; larger frames fail the connection. @defaultValue 1048576 */
  maxPayload?: number | undefined
  /**
   * Requests in flight per connection: from dispatch until the reply is handed to the socket, so
   * synchronous handlers count too. On PCR1 every reserved reply slot counts (control actions
   * and refusals included, and replies held back to keep request order). At the limit the
   * server stops reading from that connection (TCP backpressure) until it is down to half.
   * @defaultValue 256
   */
  maxInFlight?: number | undefined
  /**
   * Close connections that have not completed the handshake in time (the TLS handshake, then the
   * v1 HANDSHAKE, each get this long). @defaultValue 10000
   */
  handshakeTimeout?: number | undefined
  /** Close connections with no request in flight and no frame received for this long; 0 disables. @defaultValue 300000 */
  idleTimeout?: number | undefined
  /** Heartbeat period towards peers that negotiated heartbeats; 0 disables. @defaultValue 30000 */
  heartbeatInterval?: number | undefined
  /** Deadline for requests whose caller sent none. @defaultValue none */
  requestTimeout?: number | undefined
  /** Close a connection whose peer stopped in the middle of a frame for this long; 0 disables. @defaultValue 10000 */
  stallTimeout?: number | undefined
  /**
   * Close a connection whose frame is not complete this many ms after its first byte arrived,
   * however steadily the bytes trickle in (slowloris); 0 disables. Time the server itself spends
   * not reading (backpressure) does not count. @defaultValue 30000
   */
  frameTimeout?: number | undefined
  /**
   * Longest deadline a request may carry, in ms: a caller's longer timeout (or the
   * `requestTimeout`) is cut to this, and the request fails with `ERR_POLYCALL_DEADLINE_EXCEEDED`
   * once it passes. Requests that carry no deadline keep none. @defaultValue 300000
   */
  maxDeadline?: number | undefined
  /**
   * Bytes queued for writing per connection (in polycall and in the socket) beyond which the
   * server stops reading from and dispatching for that connection until the peer catches up.
   * Replies of requests already in flight still queue, so the worst case is this plus the
   * replies of `maxInFlight` requests. @defaultValue 8388608 (8 MiB)
   */
  maxWriteBuffer?: number | undefined
  /**
   * Destroy a connection that stays over `maxWriteBuffer` this long (the peer does not read);
   * also how long a connection the server ended may take to flush and close before it is
   * destroyed. 0 disables both. @defaultValue 30000
   */
  drainTimeout?: number | undefined
  /** PCR1: the token `shutdown` requires; without it `shutdown` is always denied. */
  controlToken?: string | undefined
  /**
   * Called with errors that peers only see as `ERR_POLYCALL_INTERNAL` (handler bugs, encode
   * failures, results that fail an output schema). Without it, each such handler error is logged
   * to stderr as one line with its code and the command; `onError: () => {}` silences them.
   * @defaultValue one line per handler error on stderr
   */
  onError?: ((error: unknown, ctx?: RequestContext) => void) | undefined
  /**
   * Idempotency records (capability `0x0020` on v1, the `idempotency_key` extension on PCR1): a
   * call that carries a key runs once per key, and a retry with the same key is answered with the
   * first run's outcome, also while that run is still under way (docs/scaling.md). `false` turns
   * them off (keys are then not negotiated, and clients retry without them). @defaultValue `{}`: a bounded
   * `MemoryIdempotencyStore` of this server, records kept for their call's deadline and a
   * second, at most 5 minutes
   */
  idempotency?: IdempotencyOptions | false | undefined
}

/** @internal Every key of {@link ServerOptions}: others are refused. */
export const SERVER_OPTION_KEYS = optionKeys<ServerOptions>()([
  'protocol',
  'authenticate',
  'requireAuth',
  'tls',
  'secure',
  'maxConnections',
  'maxPayload',
  'maxInFlight',
  'handshakeTimeout',
  'idleTimeout',
  'heartbeatInterval',
  'requestTimeout',
  'stallTimeout',
  'controlToken',
  'onError',
  'authTimeout',
  'frameTimeout',
  'maxDeadline',
  'maxWriteBuffer',
  'drainTimeout',
  'idempotency',
])

/** What {@link PolyCallServer.stats} returns. */
export interface ServerStats {
  /** Connection counters. */
  connections: {
    /** Connections open now. */
    current: number
    /** Connections accepted since the server was made. */
    total: number
    /** Connections refused (over `maxConnections`, or while shutting down). */
    rejected: number
  }
  /** Request counters. */
  requests: {
    /** Requests dispatched. */
    total: number
    /** Requests whose handler is running. */
    inFlight: number
    /** Requests answered with a result. */
    succeeded: number
    /** Requests answered with an error. */
    failed: number
    /** Requests the caller cancelled. */
    cancelled: number
    /** Requests whose deadline passed first. */
    timedOut: number
  }
  /** Handler latency, in milliseconds. */
  latency: LatencySummary
  /** Bytes read from peers. */
  bytesIn: number
  /** Bytes written to peers. */
  bytesOut: number
  /** Bytes waiting to be written across open connections, now (queued in polycall or the socket). */
  bytesQueued: number
}

/** Lifecycle events of {@link PolyCallServer}. */
export interface ServerEvents {
  /** A connection was accepted. */
  connect: [peer: PeerInfo]
  /** A connection closed; `error` says why when it failed. */
  disconnect: [peer: PeerInfo, error: PolyCallError | undefined]
  /** The server closed: `close()` finished or `destroy()` was called. */
  close: []
}

/** Options of {@link PolyCallServer.close}. */
export interface ServerCloseOptions extends CallOptions {}

/** @internal Resolved limits of a server (every bound a peer can push; see docs/limits.md). */
export interface ServerLimits {
  maxConnections: number
  maxPayload: number
  maxInFlight: number
  handshakeTimeout: number
  authTimeout: number
  idleTimeout: number
  heartbeatInterval: number
  stallTimeout: number
  frameTimeout: number
  maxDeadline: number
  maxWriteBuffer: number
  drainTimeout: number
}
