/** The context a middleware and a handler receive for one request. @packageDocumentation */
import type { TraceInfo } from '../core/trace.js'

/** A registered route as listed by `Router.routes()`. */
export interface RouteInfo {
  /** The HTTP method, or `'*'` for a route that serves every method. */
  method: string
  /** The pattern, with its leading `/`: `/users/:id`, `/inventory.get`. */
  path: string
  /** One line describing the route. */
  summary?: string | undefined
  /** Whether clients may retry it after a lost connection. */
  idempotent: boolean
  /** A hint of the input's shape, as JSON text (PCR1 `describe`). */
  inputHint?: string | undefined
  /** A hint of the output's shape, as JSON text (PCR1 `describe`). */
  outputHint?: string | undefined
}

/**
 * Who is on the other end of a connection. The server reads it from the socket when it is first
 * needed (`ctx.peer`, an `authenticate` callback), or at once for TLS connections and while
 * `connect` or `disconnect` listeners exist. A peer first asked for after its socket closed
 * (a `disconnect` listener added after the connection was accepted) may lack its address.
 */
export interface PeerInfo {
  /** The peer's IP address (undefined once the socket is gone). */
  remoteAddress: string | undefined
  /** The peer's port (undefined once the socket is gone). */
  remotePort: number | undefined
  /** True on a TLS connection. */
  tls: boolean
  /** The client certificate of an mTLS connection, when the TLS layer accepted it. */
  certificate?: PeerCertificateInfo | undefined
  /** True when the peer speaks the reference conventions (JSON, one frame per read). */
  legacy: boolean
  /**
   * The Noise pattern of the connection's secure session (`'IK'`, `'NK'` or `'XX'`), once its
   * handshake completed; undefined for a plaintext connection.
   */
  secure?: 'IK' | 'NK' | 'XX' | undefined
  /**
   * The client's public key as `x25519:` text, verified by the secure handshake (IK and XX;
   * an NK client has none).
   */
  publicKey?: string | undefined
}

/** The parts of a client certificate a server usually decides on. */
export interface PeerCertificateInfo {
  /** The subject's fields, e.g. `{ CN: 'client-1', O: 'Example' }`. */
  subject: Record<string, string | string[]>
  /** The issuer's fields. */
  issuer: Record<string, string | string[]>
  /** SHA-256 fingerprint, colon-separated hex. */
  fingerprint256: string
  /** Expiry, as the TLS layer formats it. */
  validTo: string
}

/**
 * One request.
 *
 * @example
 * ```ts
 * server.route('/users/:id', async (ctx) => {
 *   const user = await db.find(ctx.params.id, { signal: ctx.signal })
 *   return { user, by: ctx.principal }
 * })
 * ```
 */
export interface RequestContext<Data = unknown> {
  /** The command as sent, e.g. `'GET /users/42?full=1'`. */
  readonly command: string
  /** `GET` unless the command starts with another HTTP method. */
  readonly method: string
  /** The command's path without its query. */
  readonly path: string
  /** Path parameters, e.g. `{ id: '42' }` for `/users/:id`. */
  readonly params: Record<string, string>
  /** Query parameters of the command. */
  readonly query: Record<string, string>
  /** The request's data. */
  readonly data: Data
  /**
   * Who the connection is: what the server's `authenticate` returned, or what admitted its
   * secure session's key (`secure.clients`), or the mTLS certificate.
   */
  readonly principal: unknown
  /** Aborted when the caller cancels, the deadline passes, the connection drops, or the server is destroyed. */
  readonly signal: AbortSignal
  /** When the caller stops waiting, in `Date.now()` milliseconds; Infinity when it set no timeout. */
  readonly deadline: number
  /** The request's sequence number on its connection. */
  readonly sequence: number
  /** The route that matched, if any. */
  readonly route: RouteInfo | undefined
  /** The connection's peer. */
  readonly peer: PeerInfo
  /** The handler's return value; middleware may read or replace it after `await next()`. */
  result: unknown
  /** A bag for middleware to pass values along. */
  readonly state: Record<string, unknown>
  /**
   * The caller's W3C trace context (capability `0x0040`), validated: undefined when none was
   * sent or what was sent is not a valid `traceparent` (an invalid `tracestate` alone is left out).
   */
  readonly trace: TraceInfo | undefined
  /**
   * The call's idempotency key (lowercase hex) when it carries one: the same on every retry of
   * the call, so a handler may hand it to a downstream service that deduplicates too.
   */
  readonly idempotencyKey: string | undefined
}

/** Koa-style middleware: do work, `await next()`, do more work. */
export type Middleware = (ctx: RequestContext, next: () => Promise<void>) => unknown

/** @internal Runs `middleware` as an onion around `last`. */
export function compose(middleware: readonly Middleware[], last: (ctx: RequestContext) => Promise<void>) {
  if (middleware.length === 0) return last
  return function run(ctx: RequestContext): Promise<void> {
    let index = -1
    const dispatch = async (i: number): Promise<void> => {
      if (i <= index) throw new Error('next() called more than once')
      index = i
      if (i === middleware.length) return last(ctx)
      await middleware[i]!(ctx, () => dispatch(i + 1))
    }
    return dispatch(0)
  }
}
