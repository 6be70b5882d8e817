/**
 * Authorization middleware for routes: who may call what. Authentication (AUTH, a client
 * certificate, a secure session's key) decides `ctx.principal`; these decide what a principal
 * may do, for the whole server (`server.use(requirePrincipal())`) or one route
 * (`server.route(path, handler, { use: requireScope('orders:write') })`).
 *
 * The same rule as authentication: only a positive answer allows. No principal is
 * `ERR_POLYCALL_UNAUTHENTICATED`; a check that answers falsy, throws or rejects, and a missing
 * scope, are `ERR_POLYCALL_FORBIDDEN`.
 * @packageDocumentation
 */
import { ErrorCode, PolyCallError, invalidArgument } from '../core/errors.js'
import type { Middleware, RequestContext } from './context.js'

/**
 * Decides whether a principal may go on; a truthy answer (or a promise of one) allows.
 *
 * @param principal - `ctx.principal` (never falsy here)
 * @param ctx - the request
 * @returns truthy to allow
 */
export type PrincipalCheck = (principal: unknown, ctx: RequestContext) => unknown

/** Options of {@link requireScope}. */
export interface ScopeOptions {
  /**
   * Reads a principal's scopes: a list, or a space-separated string (OAuth's `scope`).
   * @defaultValue `principal.scopes`, else `principal.scope`
   */
  scopesOf?: ((principal: unknown) => Iterable<string> | string | undefined) | undefined
  /**
   * Whether every listed scope is needed (`'all'`) or one of them (`'any'`).
   * @defaultValue 'all'
   */
  match?: 'all' | 'any' | undefined
}

const forbidden = (message: string, cause?: unknown) =>
  new PolyCallError(ErrorCode.FORBIDDEN, message, cause === undefined ? undefined : { cause })

function principalOf(ctx: RequestContext): unknown {
  const principal = ctx.principal
  if (!principal) throw new PolyCallError(ErrorCode.UNAUTHENTICATED, `${ctx.command} needs an authenticated caller`)
  return principal
}

/**
 * Middleware that lets a request through only when the connection has a principal and, with a
 * `check`, when the check allows it.
 *
 * @param check - decides on the principal; a truthy answer allows @defaultValue any principal
 * @returns the middleware
 * @throws (from the middleware) `ERR_POLYCALL_UNAUTHENTICATED` without a principal;
 *   `ERR_POLYCALL_FORBIDDEN` when the check answers falsy, throws or rejects
 * @example
 * ```ts
 * server.use(requirePrincipal())
 * server.route('admin.reset', reset, { use: requirePrincipal((p) => (p as { admin?: boolean }).admin) })
 * ```
 */
export function requirePrincipal(check?: PrincipalCheck): Middleware {
  if (check !== undefined && typeof check !== 'function') throw invalidArgument('requirePrincipal(check): check must be a function')
  return async (ctx, next) => {
    const principal = principalOf(ctx)
    if (check !== undefined) {
      let allowed: unknown
      try {
        allowed = await check(principal, ctx)
      } catch (e) {
        throw forbidden(`${ctx.command} is not allowed for this caller`, e)
      }
      if (!allowed) throw forbidden(`${ctx.command} is not allowed for this caller`)
    }
    await next()
  }
}

function defaultScopes(principal: unknown): Iterable<string> | string | undefined {
  if (principal === null || typeof principal !== 'object') return undefined
  const p = principal as { scopes?: unknown; scope?: unknown }
  const v = p.scopes ?? p.scope
  if (typeof v === 'string') return v
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string')
  if (v instanceof Set) return [...v].filter((x): x is string => typeof x === 'string')
  return undefined
}

/**
 * Middleware that lets a request through only when its principal holds the scopes.
 *
 * @param scopes - one scope, or several (all needed, unless `match: 'any'`)
 * @param options - where scopes are read, `all` or `any`
 * @returns the middleware
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for no scope or a scope that is not a non-empty string;
 *   (from the middleware) `ERR_POLYCALL_UNAUTHENTICATED` without a principal,
 *   `ERR_POLYCALL_FORBIDDEN` when a scope is missing
 * @example
 * ```ts
 * server.route('orders.create', createOrder, { use: requireScope('orders:write') })
 * server.use(requireScope(['admin', 'support'], { match: 'any' }))
 * ```
 */
export function requireScope(scopes: string | readonly string[], options: ScopeOptions = {}): Middleware {
  const wanted = typeof scopes === 'string' ? [scopes] : Array.isArray(scopes) ? [...(scopes as readonly string[])] : []
  if (wanted.length === 0 || !wanted.every((x) => typeof x === 'string' && x.length > 0)) {
    throw invalidArgument('requireScope(scopes): one or more non-empty scope strings')
  }
  const scopesOf = options.scopesOf ?? defaultScopes
  if (typeof scopesOf !== 'function') throw invalidArgument('requireScope: scopesOf must be a function')
  const match = options.match ?? 'all'
  if (match !== 'all' && match !== 'any') throw invalidArgument("requireScope: match must be 'all' or 'any'")
  return async (ctx, next) => {
    const principal = principalOf(ctx)
    let held: Set<string>
    try {
      const raw = scopesOf(principal)
      held = new Set(typeof raw === 'string' ? raw.split(/\s+/).filter(Boolean) : raw === undefined ? [] : [...raw])
    } catch (e) {
      throw forbidden(`${ctx.command}: the caller's scopes could not be read`, e)
    }
    const ok = match === 'all' ? wanted.every((x) => held.has(x)) : wanted.some((x) => held.has(x))
    if (!ok) {
      const missing = wanted.filter((x) => !held.has(x))
      throw forbidden(`${ctx.command} needs ${match === 'all' ? 'the scope' : 'one of the scopes'} ${missing.join(', ')}`)
    }
    await next()
  }
}
