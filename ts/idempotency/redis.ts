/**
 * Idempotency records in Redis, shared by every host (and cluster worker) behind one balancer,
 * through a node `redis` client the application created and connected. Each record is a hash
 * (`s` state, `c` command, `o` owner, `ok` and `p` the outcome), read and written by Lua
 * scripts, so "read, or claim when absent" is one atomic step on the Redis server.
 *
 * A running record names its owner: a random id per store instance (one per process). The
 * owner keeps a liveness key (`<prefix>owner:<id>`, expiring after `lease` ms) alive while it
 * has runs under way. A retry that finds a running record whose owner's liveness key is gone
 * knows the first run's host died mid-run: the record becomes `unknown` (a coded
 * `ERR_POLYCALL_OUTCOME_UNKNOWN` for every retry), never a second run.
 * @packageDocumentation
 */
import { createHash, randomBytes } from 'node:crypto'
import { bounded } from '../core/abort.js'
import { ErrorCode, PolyCallError, invalidArgument, isPolyCallError } from '../core/errors.js'
import type { RedisScriptClient } from '../store/redis.js'
import type { IdempotencyOutcome, IdempotencyRef, IdempotencyState, IdempotencyStore } from './store.js'

/** Options of {@link RedisIdempotencyStore}. */
export interface RedisIdempotencyStoreOptions {
  /**
   * Prefix of every key. With Redis Cluster, give it a hash tag (`'polycall:idem:{a}:'`): the
   * scripts read a record and its owner's liveness key together, so they must share a slot.
   * @defaultValue 'polycall:idem:'
   */
  prefix?: string | undefined
  /**
   * How long an owner's liveness key lives without renewal (renewed every third of it while
   * runs are under way). A host whose event loop stalls for longer is taken for dead: retries
   * of its runs get `ERR_POLYCALL_OUTCOME_UNKNOWN`. @defaultValue 3000
   */
  lease?: number | undefined
  /** Bound of each Redis call. @defaultValue 2000 */
  timeout?: number | undefined
  /** Largest outcome kept; a larger one answers its caller, retries get `ERR_POLYCALL_OUTCOME_UNKNOWN`. @defaultValue 1048576 */
  maxOutcomeBytes?: number | undefined
}

// Replies: {1} started, {2, ok, payload} done, {3} running, {4} mismatch, {5, reason} unknown,
// {6} missing. ARGV of BEGIN/READ: owner, command, ttl, owner-key prefix, lease.
const BEGIN = `local s = redis.call('HGET', KEYS[1], 's')
if not s then
  redis.call('SET', ARGV[4] .. ARGV[1], '1', 'PX', ARGV[5])
  redis.call('HSET', KEYS[1], 's', 'r', 'o', ARGV[1], 'c', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1}
end
if redis.call('HGET', KEYS[1], 'c') ~= ARGV[2] then return {4} end
if s == 'd' then return {2, redis.call('HGET', KEYS[1], 'ok'), redis.call('HGET', KEYS[1], 'p')} end
if s == 'u' then return {5, redis.call('HGET', KEYS[1], 'why') or 'lost'} end
if redis.call('EXISTS', ARGV[4] .. redis.call('HGET', KEYS[1], 'o')) == 1 then return {3} end
redis.call('HSET', KEYS[1], 's', 'u', 'why', 'lost')
return {5, 'lost'}`

const READ = `local s = redis.call('HGET', KEYS[1], 's')
if not s then return {6} end
if redis.call('HGET', KEYS[1], 'c') ~= ARGV[2] then return {4} end
if s == 'd' then return {2, redis.call('HGET', KEYS[1], 'ok'), redis.call('HGET', KEYS[1], 'p')} end
if s == 'u' then return {5, redis.call('HGET', KEYS[1], 'why') or 'lost'} end
if redis.call('EXISTS', ARGV[4] .. redis.call('HGET', KEYS[1], 'o')) == 1 then return {3} end
redis.call('HSET', KEYS[1], 's', 'u', 'why', 'lost')
return {5, 'lost'}`

// ARGV: owner, ok ('1', '0', or '' for an outcome not kept), payload (base64), ttl.
const COMPLETE = `if redis.call('HGET', KEYS[1], 's') ~= 'r' or redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('HSET', KEYS[1], 's', 'u', 'why', 'not-kept')
else
  redis.call('HSET', KEYS[1], 's', 'd', 'ok', ARGV[2], 'p', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1`

// ARGV: owner.
const RELEASE = `if redis.call('HGET', KEYS[1], 's') == 'r' and redis.call('HGET', KEYS[1], 'o') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1`

interface Script {
  text: string
  sha: string
}

function script(text: string): Script {
  return { text, sha: createHash('sha1').update(text).digest('hex') }
}

const SCRIPTS = { begin: script(BEGIN), read: script(READ), complete: script(COMPLETE), release: script(RELEASE) }

function positive(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw invalidArgument(`${name} must be an integer ≥ 1`)
  return value
}

/**
 * Idempotency records in Redis, for servers on several hosts (or cluster workers) that must
 * answer one another's retries. Bring your own connected client (node `redis` v5 or v6); the
 * store never connects, configures or closes it. Records expire with their `ttl`; the total is
 * bounded by Redis (`maxmemory`), each outcome by `maxOutcomeBytes`.
 *
 * @example
 * ```ts
 * import { createClient } from 'redis'
 * const redis = await createClient({ url: process.env.REDIS_URL }).connect()
 * const server = new PolyCallServer({ idempotency: { store: new RedisIdempotencyStore(redis) } })
 * ```
 */
export class RedisIdempotencyStore implements IdempotencyStore {
  /** The key prefix. */
  readonly prefix: string
  /** This store's owner id (one per instance). */
  readonly owner = randomBytes(12).toString('hex')
  /** The liveness lease, in ms. */
  readonly lease: number
  readonly #client: RedisScriptClient
  readonly #timeout: number
  readonly #maxOutcomeBytes: number
  /** Runs of this owner under way: while there are any, the liveness key is renewed. */
  #running = 0
  #renewal: NodeJS.Timeout | undefined

  /**
   * @param client - a connected node `redis` client (`createClient()`)
   * @param options - prefix, lease, timeout, outcome bound
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a client without script commands or a bad option
   */
  constructor(client: RedisScriptClient, options: RedisIdempotencyStoreOptions = {}) {
    if (client === null || typeof client !== 'object' || typeof client.evalSha !== 'function' || typeof client.eval !== 'function') {
      throw invalidArgument('RedisIdempotencyStore needs a node redis client (createClient())')
    }
    if (options.prefix !== undefined && typeof options.prefix !== 'string') throw invalidArgument('prefix must be a string')
    this.#client = client
    this.prefix = options.prefix ?? 'polycall:idem:'
    this.lease = positive(options.lease, 'lease', 3000)
    this.#timeout = positive(options.timeout, 'timeout', 2000)
    this.#maxOutcomeBytes = positive(options.maxOutcomeBytes, 'maxOutcomeBytes', 1024 * 1024)
  }

  #key(ref: IdempotencyRef): string {
    // The scope can be long (a principal's digest is fixed-size already): hash it into the key.
    const scope = ref.scope === '' ? '-' : createHash('sha256').update(ref.scope).digest('base64url').slice(0, 22)
    return `${this.prefix}${scope}:${ref.key}`
  }

  async #run(s: Script, keys: string[], args: string[]): Promise<unknown> {
    const call = async () => {
      try {
        return await this.#client.evalSha(s.sha, { keys, arguments: args })
      } catch (e) {
        if (!String((e as Error)?.message ?? e).startsWith('NOSCRIPT')) throw e
        return await this.#client.eval(s.text, { keys, arguments: args })
      }
    }
    try {
      return await bounded(call(), { timeout: this.#timeout }, 'a Redis idempotency call')
    } catch (e) {
      if (isPolyCallError(e) && e.code === ErrorCode.TIMEOUT) throw new PolyCallError(ErrorCode.STORE_FAILED, e.message, { cause: e })
      throw new PolyCallError(ErrorCode.STORE_FAILED, `Redis: ${String((e as Error)?.message ?? e)}`, { cause: e })
    }
  }

  #state(reply: unknown): IdempotencyState {
    if (!Array.isArray(reply) || reply.length === 0) throw new PolyCallError(ErrorCode.STORE_FAILED, 'unexpected reply from Redis')
    switch (Number(reply[0])) {
      case 1:
        return { state: 'started' }
      case 2:
        return { state: 'done', outcome: { ok: reply[1] === '1', payload: Buffer.from(String(reply[2] ?? ''), 'base64') } }
      case 3:
        return { state: 'running' }
      case 4:
        return { state: 'mismatch' }
      case 5:
        return { state: 'unknown', reason: reply[1] === 'not-kept' ? 'not-kept' : 'lost' }
      case 6:
        return { state: 'unknown', reason: 'expired' }
      default:
        throw new PolyCallError(ErrorCode.STORE_FAILED, `unexpected reply from Redis: ${String(reply[0])}`)
    }
  }

  #args(ref: IdempotencyRef, ttl: number): string[] {
    return [this.owner, ref.command, String(Math.max(1, Math.ceil(ttl))), `${this.prefix}owner:`, String(this.lease)]
  }

  async begin(ref: IdempotencyRef, options: { ttl: number }): Promise<IdempotencyState> {
    const state = this.#state(await this.#run(SCRIPTS.begin, [this.#key(ref)], this.#args(ref, options.ttl)))
    if (state.state === 'started') this.#started()
    return state
  }

  async read(ref: IdempotencyRef): Promise<IdempotencyState> {
    return this.#state(await this.#run(SCRIPTS.read, [this.#key(ref)], this.#args(ref, 1)))
  }

  async complete(ref: IdempotencyRef, outcome: IdempotencyOutcome | undefined, options: { ttl: number }): Promise<void> {
    try {
      const kept = outcome !== undefined && outcome.payload.length <= this.#maxOutcomeBytes
      await this.#run(SCRIPTS.complete, [this.#key(ref)], [
        this.owner,
        kept ? (outcome.ok ? '1' : '0') : '',
        kept ? Buffer.from(outcome.payload).toString('base64') : '',
        String(Math.max(1, Math.ceil(options.ttl))),
      ])
    } finally {
      this.#ended()
    }
  }

  async release(ref: IdempotencyRef): Promise<void> {
    try {
      await this.#run(SCRIPTS.release, [this.#key(ref)], [this.owner])
    } finally {
      this.#ended()
    }
  }

  #started(): void {
    if (this.#running++ > 0) return
    this.#renewal = setInterval(() => {
      // Renew the liveness key; a failed renewal is retried on the next tick (a third of the lease).
      this.#renew().catch(() => {})
    }, Math.max(1, Math.floor(this.lease / 3)))
    this.#renewal.unref()
  }

  #ended(): void {
    if (--this.#running > 0) return
    this.#running = 0
    if (this.#renewal) clearInterval(this.#renewal)
    this.#renewal = undefined
  }

  #renew(): Promise<unknown> {
    return this.#run(
      RENEW,
      [`${this.prefix}owner:${this.owner}`],
      [String(this.lease)],
    )
  }
}

const RENEW = script(`redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1`)
