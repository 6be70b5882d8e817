/**
 * Command routing. A command is `[METHOD ]path[?query]`: `'/users/42'`, `'GET /users/42'`,
 * `'POST /orders?dryRun=1'`. Without a method it is `GET`. A path without a leading `/` gets
 * one, so the reference bindings' plain command names (`'status'`) and PCR1's
 * `service.operation` names route like any path. Matching is find-my-way's radix tree.
 * @packageDocumentation
 */
import { METHODS } from 'node:http'
import FindMyWay from 'find-my-way'
import { ErrorCode, PolyCallError, invalidArgument } from '../core/errors.js'
import { compose, type Middleware, type RequestContext, type RouteInfo } from './context.js'

export type { RouteInfo } from './context.js'

/** A route handler: its return value becomes the RESPONSE payload. */
export type Handler<Result = unknown> = (ctx: RequestContext) => Result | Promise<Result>

/** Method-specific handlers for one path. */
export type MethodHandlers = Partial<Record<string, Handler>>

/** Per-route metadata. */
export interface RouteOptions {
  /** One line describing the route (listed by PCR1 `describe`). */
  summary?: string | undefined
  /**
   * The operation can be repeated safely; clients may retry it after a lost connection.
   * @defaultValue false
   */
  idempotent?: boolean | undefined
  /** A hint of the input's shape, as JSON text (listed by PCR1 `describe`). @defaultValue '{}' */
  inputHint?: string | undefined
  /** A hint of the output's shape, as JSON text (listed by PCR1 `describe`). @defaultValue '{}' */
  outputHint?: string | undefined
  /**
   * Middleware for this route only, run in order after the server's own middleware and before
   * the handler (and before a schema route validates its input): for example
   * `requireScope('orders:write')`.
   * @defaultValue none
   */
  use?: Middleware | readonly Middleware[] | undefined
}

/** A handler behind a route's own middleware. */
function guarded(use: readonly Middleware[], handler: Handler): Handler {
  const run = compose(use, async (ctx) => {
    ctx.result = await handler(ctx)
  })
  return async (ctx) => {
    await run(ctx)
    return ctx.result
  }
}

/** The outcome of {@link Router.find}. */
export interface RouteMatch {
  /** The handler for the command's method. */
  handler: Handler
  /** The command's method (`GET` when it named none). */
  method: string
  /** The command's path, without its query. */
  path: string
  /** Path parameters. */
  params: Record<string, string>
  /** Query parameters. */
  query: Record<string, string>
  /** The route that matched. */
  route: RouteInfo
}

interface Store {
  route: RouteInfo
}

const KNOWN_METHODS = new Set(METHODS)
const CACHE_SIZE = 1024

/**
 * Splits a command into its method and path (with query).
 *
 * @param command - `[METHOD ]path[?query]`
 * @returns the method (`GET` when the command names none) and the path with a leading `/`
 * @example
 * ```ts
 * parseCommand('POST orders?dryRun=1') // { method: 'POST', path: '/orders?dryRun=1' }
 * ```
 */
export function parseCommand(command: string): {
  /** An HTTP method. */
  method: string
  /** The path, query included. */
  path: string
} {
  const space = command.indexOf(' ')
  if (space > 0) {
    const method = command.slice(0, space)
    if (KNOWN_METHODS.has(method)) return { method, path: normalizePath(command.slice(space + 1).trim()) }
  }
  return { method: 'GET', path: normalizePath(command.trim()) }
}

function normalizePath(path: string): string {
  return path.startsWith('/') ? path : `/${path}`
}

/**
 * The shape find-my-way matches a pattern by: parameter names do not matter (`/users/:id` and
 * `/users/:name` are one route) and neither does a trailing slash (`ignoreTrailingSlash`).
 */
function routeKey(path: string): string {
  const shape = path.replace(/:[A-Za-z0-9_$-]+/g, ':')
  return shape.length > 1 && shape.endsWith('/') ? shape.slice(0, -1) : shape
}

/**
 * Maps commands to handlers.
 *
 * @example
 * ```ts
 * const router = new Router()
 * router.route('/users/:id', async (ctx) => ({ id: ctx.params.id }))
 * router.route('/orders', { GET: listOrders, POST: createOrder }, { summary: 'orders' })
 * ```
 */
export class Router {
  readonly #fmw = FindMyWay<FindMyWay.HTTPVersion.V1>({ ignoreTrailingSlash: true, caseSensitive: true })
  readonly #routes: RouteInfo[] = []
  /** Methods registered per path shape (see {@link routeKey}), `*` for every method. */
  readonly #taken = new Map<string, Map<string, string>>()
  // Commands repeat (the same few operations, often with the same parameters): remember the
  // last matches. Matches are frozen, so handlers share them safely.
  #cache = new Map<string, RouteMatch | null>()

  /**
   * Registers a path.
   *
   * @param path - a find-my-way pattern: `/users/:id`, `/files/*`, `inventory.get`
   * @param handler - one handler for every method, or `{ GET, POST, ... }`
   * @param options - summary and idempotency
   * @returns this router
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad path or handler or an unknown method;
   *   `ERR_POLYCALL_DUPLICATE_ROUTE` when the path (whatever its parameter names) is registered
   *   already for one of the methods, or for every method. Nothing is registered then.
   */
  route(path: string, handler: Handler | MethodHandlers, options: RouteOptions = {}): this {
    if (typeof path !== 'string' || path.length === 0) throw invalidArgument('route path must be a non-empty string')
    const p = normalizePath(path)
    const entries: [string, Handler][] =
      typeof handler === 'function'
        ? [['*', handler]]
        : handler && typeof handler === 'object'
          ? Object.entries(handler).map(([m, h]) => [m.toUpperCase(), h as Handler])
          : []
    if (entries.length === 0) throw invalidArgument(`route ${p}: handler must be a function or { METHOD: handler }`)
    const use = options.use === undefined ? [] : typeof options.use === 'function' ? [options.use] : [...options.use]
    if (!use.every((m) => typeof m === 'function')) throw invalidArgument(`route ${p}: use must be a middleware function or a list of them`)
    // Check everything before registering anything, so a refused call leaves the router as it was.
    const key = routeKey(p)
    const taken = this.#taken.get(key) ?? new Map<string, string>()
    const adding = new Map<string, string>()
    for (const [method, h] of entries) {
      if (typeof h !== 'function') throw invalidArgument(`route ${method} ${p}: handler must be a function`)
      if (method !== '*' && !KNOWN_METHODS.has(method)) throw invalidArgument(`route ${p}: unknown method ${method}`)
      const clash = [...taken, ...adding].find(([m]) => m === method || m === '*' || method === '*')
      if (clash !== undefined) {
        const what = (m: string, path: string) => (m === '*' ? `every method of ${path}` : `${m} ${path}`)
        const [m, path] = clash
        throw new PolyCallError(
          ErrorCode.DUPLICATE_ROUTE,
          m === method && path === p
            ? `route ${what(method, p)} is registered already`
            : `route ${what(method, p)} overlaps ${what(m, path)}, registered already`,
        )
      }
      adding.set(method, p)
    }
    for (const [method, h] of entries) {
      const route: RouteInfo = {
        method,
        path: p,
        summary: options.summary,
        idempotent: options.idempotent === true,
        inputHint: options.inputHint,
        outputHint: options.outputHint,
      }
      const run = use.length === 0 ? h : guarded(use, h)
      try {
        if (method === '*') this.#fmw.all(p, run as never, { route } satisfies Store)
        else this.#fmw.on(method as FindMyWay.HTTPMethod, p, run as never, { route } satisfies Store)
      } catch (cause) {
        throw new PolyCallError(ErrorCode.INVALID_ARGUMENT, `route ${method === '*' ? '' : `${method} `}${p}: ${(cause as Error).message}`, { cause })
      }
      this.#routes.push(route)
      taken.set(method, p)
    }
    this.#taken.set(key, taken)
    this.#cache.clear()
    return this
  }

  /**
   * Finds the handler for a command.
   *
   * @param command - `[METHOD ]path[?query]`
   * @returns the match, or undefined when no route matches
   */
  find(command: string): RouteMatch | undefined {
    const cached = this.#cache.get(command)
    if (cached !== undefined) return cached ?? undefined
    const match = this.#find(command)
    if (this.#cache.size >= CACHE_SIZE) this.#cache.clear()
    this.#cache.set(command, match ?? null)
    return match
  }

  #find(command: string): RouteMatch | undefined {
    const { method, path } = parseCommand(command)
    const found = this.#fmw.find(method as FindMyWay.HTTPMethod, path)
    if (!found) return undefined
    const q = path.indexOf('?')
    return Object.freeze({
      handler: found.handler as unknown as Handler,
      method,
      path: q < 0 ? path : path.slice(0, q),
      params: Object.freeze({ ...(found.params as Record<string, string>) }),
      query: Object.freeze({ ...((found.searchParams ?? {}) as Record<string, string>) }),
      route: (found.store as Store).route,
    })
  }

  /** Every registered route, in registration order. */
  routes(): RouteInfo[] {
    return this.#routes.map((r) => ({ ...r }))
  }
}
