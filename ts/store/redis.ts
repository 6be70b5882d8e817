/**
 * A snapshot store in Redis, through a client the application created and connected (node
 * `redis` v5 or v6). Each record is a hash (`v`: version, `s`: snapshot JSON); load, save
 * and delete are Lua scripts, so the version check and the write are one atomic step on the
 * Redis server, whichever host the writers run on.
 * @packageDocumentation
 */
import { createHash } from 'node:crypto'
import { bounded, checkTimeout, type CallOptions } from '../core/abort.js'
import { ErrorCode, PolyCallError, invalidArgument } from '../core/errors.js'
import type { StateMachineSnapshot } from '../state/machine.js'
import {
  checkCall,
  checkId,
  checkIfVersion,
  checkMaxBytes,
  conflict,
  parseStored,
  serialise,
  storeFailed,
  tooLarge,
  type SaveOptions,
  type SnapshotStore,
  type SnapshotStoreOptions,
  type StoredSnapshot,
} from './store.js'

/** Keys and arguments of a script call, as node `redis` takes them. */
export interface RedisScriptArguments {
  /** The script's KEYS (one: the record's key). */
  keys: string[]
  /** The script's ARGV. */
  arguments: string[]
}

/**
 * What {@link RedisSnapshotStore} needs of a Redis client: the script commands of node `redis`
 * v5 or v6 (`createClient()`; a `createCluster()` client has the same methods and routes each call by
 * its one key). The store never connects, quits or configures the client: the application owns it.
 */
export interface RedisScriptClient {
  /** `EVALSHA sha numkeys key... arg...`. */
  evalSha(sha1: string, options: RedisScriptArguments): Promise<unknown>
  /** `EVAL script numkeys key... arg...`. */
  eval(script: string, options: RedisScriptArguments): Promise<unknown>
}

/** Options of {@link RedisSnapshotStore}. */
export interface RedisSnapshotStoreOptions extends SnapshotStoreOptions {
  /** Prefix of every key (a record's key is the prefix followed by its id). @defaultValue 'polycall:snapshot:' */
  prefix?: string | undefined
  /** Expire records this many milliseconds after their last save; 0 keeps them. @defaultValue 0 */
  ttl?: number | undefined
  /** Bound of each Redis call (`ERR_POLYCALL_TIMEOUT`; a call's own `timeout` or `signal` can end it sooner). @defaultValue 5000 */
  timeout?: number | undefined
}

// Replies are { status, version[, data] }. A missing field reads as false in Lua.
const LOAD = `local v = redis.call('HGET', KEYS[1], 'v')
if not v then return {0} end
local n = redis.call('HSTRLEN', KEYS[1], 's')
if n > tonumber(ARGV[1]) then return {2, tonumber(v), n} end
return {1, tonumber(v), redis.call('HGET', KEYS[1], 's')}`

const SAVE = `local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= cur then return {0, cur} end
local nxt = cur + 1
redis.call('HSET', KEYS[1], 'v', nxt, 's', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {1, nxt}`

const DELETE = `local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if cur == 0 then return {2, 0} end
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= cur then return {0, cur} end
redis.call('DEL', KEYS[1])
return {1, cur}`

interface Script {
  text: string
  sha: string
}

function script(text: string): Script {
  return { text, sha: createHash('sha1').update(text).digest('hex') }
}

const SCRIPTS = { load: script(LOAD), save: script(SAVE), delete: script(DELETE) }

function isNoScript(e: unknown): boolean {
  const message = e instanceof Error ? e.message : String(e)
  return message.startsWith('NOSCRIPT')
}

function asInt(v: unknown): number {
  const n = typeof v === 'number' ? v : Number(typeof v === 'string' ? v : Number.NaN)
  if (!Number.isSafeInteger(n)) throw new PolyCallError(ErrorCode.STORE_FAILED, `unexpected reply from Redis: ${String(v)}`)
  return n
}

function reply(value: unknown): unknown[] {
  if (!Array.isArray(value) || value.length === 0) throw new PolyCallError(ErrorCode.STORE_FAILED, 'unexpected reply from Redis')
  return value
}

/**
 * Keeps snapshots in Redis, for services on several hosts. Bring your own connected client:
 *
 * @typeParam T - the snapshot type @defaultValue StateMachineSnapshot
 * @example
 * ```ts
 * import { createClient } from 'redis'
 * const redis = await createClient({ url: 'redis://127.0.0.1:6379' }).connect()
 * const store = new RedisSnapshotStore(redis, { prefix: 'orders:state:' })
 * const persisted = await resumeState(sm, store, 'order-42')
 * ```
 */
export class RedisSnapshotStore<T = StateMachineSnapshot> implements SnapshotStore<T> {
  /** The key prefix. */
  readonly prefix: string
  readonly #client: RedisScriptClient
  readonly #maxBytes: number
  readonly #ttl: number
  readonly #timeout: number

  /**
   * @param client - a node `redis` client (or cluster client), connected by the application
   * @param options - `prefix`, `maxBytes`, `ttl`, `timeout`
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a client without `eval`/`evalSha` or a bad option
   */
  constructor(client: RedisScriptClient, options: RedisSnapshotStoreOptions = {}) {
    if (client === null || typeof client !== 'object' || typeof client.eval !== 'function' || typeof client.evalSha !== 'function') {
      throw invalidArgument('RedisSnapshotStore needs a node redis client (with eval and evalSha)')
    }
    const prefix = options.prefix ?? 'polycall:snapshot:'
    if (typeof prefix !== 'string') throw invalidArgument('prefix must be a string')
    const ttl = options.ttl ?? 0
    if (typeof ttl !== 'number' || !Number.isSafeInteger(ttl) || ttl < 0) throw invalidArgument('ttl must be an integer number of milliseconds ≥ 0')
    this.#client = client
    this.prefix = prefix
    this.#maxBytes = checkMaxBytes(options.maxBytes)
    this.#ttl = ttl
    this.#timeout = checkTimeout(options.timeout) ?? 5000
  }

  /** The Redis key of `id`. */
  keyOf(id: string): string {
    return this.prefix + checkId(id)
  }

  /** {@inheritDoc SnapshotStore.load} */
  async load(id: string, options?: CallOptions): Promise<StoredSnapshot<T> | undefined> {
    const key = this.keyOf(id)
    checkCall(options)
    const r = reply(await this.#run(SCRIPTS.load, key, [String(this.#maxBytes)], options, 'load'))
    const status = asInt(r[0])
    if (status === 0) return undefined
    if (status === 2) {
      tooLarge(asInt(r[2]), this.#maxBytes)
    }
    const data = r[2]
    const text = typeof data === 'string' ? data : Buffer.isBuffer(data) ? data.toString('utf8') : undefined
    if (text === undefined) throw new PolyCallError(ErrorCode.STORE_FAILED, `the record ${JSON.stringify(key)} has no snapshot`)
    return { snapshot: parseStored(text, id) as T, version: asInt(r[1]) }
  }

  /** {@inheritDoc SnapshotStore.save} */
  async save(id: string, snapshot: T, options: SaveOptions = {}): Promise<number> {
    const key = this.keyOf(id)
    checkCall(options)
    const ifVersion = checkIfVersion(options.ifVersion)
    const text = serialise(snapshot, this.#maxBytes)
    const r = reply(await this.#run(SCRIPTS.save, key, [ifVersion === undefined ? '' : String(ifVersion), text, String(this.#ttl)], options, 'save'))
    if (asInt(r[0]) === 0) throw conflict(id, ifVersion ?? 0, asInt(r[1]))
    return asInt(r[1])
  }

  /** {@inheritDoc SnapshotStore.delete} */
  async delete(id: string, options: SaveOptions = {}): Promise<boolean> {
    const key = this.keyOf(id)
    checkCall(options)
    const ifVersion = checkIfVersion(options.ifVersion)
    const r = reply(await this.#run(SCRIPTS.delete, key, [ifVersion === undefined ? '' : String(ifVersion)], options, 'delete'))
    const status = asInt(r[0])
    if (status === 0) throw conflict(id, ifVersion ?? 0, asInt(r[1]))
    return status === 1
  }

  /** EVALSHA, falling back to EVAL once when the server does not have the script cached. */
  async #run(s: Script, key: string, args: string[], options: CallOptions | undefined, what: string): Promise<unknown> {
    const call = { keys: [key], arguments: args }
    const own = checkTimeout(options?.timeout)
    const limit = { timeout: own === undefined ? this.#timeout : Math.min(own, this.#timeout), signal: options?.signal }
    const attempt = async (): Promise<unknown> => {
      try {
        return await this.#client.evalSha(s.sha, call)
      } catch (e) {
        if (!isNoScript(e)) throw e
        return await this.#client.eval(s.text, call)
      }
    }
    try {
      return await bounded(attempt(), limit, `Redis ${what} of ${JSON.stringify(key)}`)
    } catch (e) {
      throw storeFailed(e, `Redis ${what} of ${JSON.stringify(key)} failed`)
    }
  }
}
