/**
 * `serveCluster()`: one PolyCallServer per core on one port, with node:cluster.
 * @packageDocumentation
 */
import cluster from 'node:cluster'
import { availableParallelism } from 'node:os'
import { checkTimeout } from '../core/abort.js'
import { invalidArgument } from '../core/errors.js'
import { ClusterPrimary, type PrimaryConfig } from './primary.js'
import type { ClusterOptions, RespawnOptions, ServerFactory } from './types.js'
import { ClusterWorker, runWorker } from './worker.js'

function positive(value: unknown, name: string, fallback: number, min = 0): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) throw invalidArgument(`${name} must be a number ≥ ${min}`)
  return value
}

function respawnPolicy(r: RespawnOptions | false | undefined): PrimaryConfig['respawn'] {
  if (r === false) return undefined
  if (r !== undefined && (r === null || typeof r !== 'object')) throw invalidArgument('respawn must be an object or false')
  return {
    initialDelay: positive(r?.initialDelay, 'respawn.initialDelay', 100),
    multiplier: positive(r?.multiplier, 'respawn.multiplier', 2, 1),
    maxDelay: positive(r?.maxDelay, 'respawn.maxDelay', 30_000),
    resetAfter: positive(r?.resetAfter, 'respawn.resetAfter', 10_000),
  }
}

/**
 * Runs a PolyCallServer in each of several worker processes sharing one port (node:cluster).
 * Call it the same way in every process (the workers run the same script by default): in the
 * primary it forks the workers and resolves once they all listen, with a
 * {@link ClusterPrimary}; in a worker it builds the server with `factory`, makes it listen
 * where the primary says, and resolves with a {@link ClusterWorker}.
 *
 * The primary replaces workers that die (with backoff), rolls them on SIGHUP (a new worker
 * listens before an old one drains) and drains them all on SIGTERM/SIGINT, then exits.
 *
 * @param factory - builds one worker's server (routes, middleware, options); runs in workers only
 * @param options - workers, port, host, scheduling, timeouts, respawn policy, signals
 * @returns the primary's handle in the primary, the worker's handle in a worker
 * @throws (rejects with) `ERR_POLYCALL_LISTEN_FAILED` in the primary when a worker could not
 *   start (its factory threw, the port is taken, it did not listen within `startTimeout`):
 *   the other workers are stopped; in a worker, what its factory or `listen()` threw;
 *   `ERR_POLYCALL_INVALID_ARGUMENT` for a bad option
 * @example
 * ```ts
 * import { PolyCallServer, serveCluster } from 'polycall'
 *
 * const c = await serveCluster(() => {
 *   const server = new PolyCallServer()
 *   server.route('/users/:id', (ctx) => db.users.get(ctx.params.id))
 *   return server
 * }, { workers: 4, port: 7000, host: '0.0.0.0' })
 * if (c.role === 'primary') console.log(`serving on ${c.port} with ${c.workers().length} workers`)
 * ```
 */
export async function serveCluster(factory: ServerFactory, options: ClusterOptions = {}): Promise<ClusterPrimary | ClusterWorker> {
  if (typeof factory !== 'function') throw invalidArgument('serveCluster needs a factory function returning a PolyCallServer')
  if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object')
  const startTimeout = checkTimeout(options.startTimeout, 'startTimeout') ?? 30_000
  if (cluster.isWorker) return runWorker(factory, startTimeout)

  const workers = options.workers ?? availableParallelism()
  if (!Number.isInteger(workers) || workers < 1 || workers > 1024) throw invalidArgument('workers must be an integer in 1..1024')
  const port = options.port ?? 0
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw invalidArgument('port must be an integer in 0..65535')
  const host = options.host ?? '127.0.0.1'
  if (typeof host !== 'string' || host.length === 0) throw invalidArgument('host must be a non-empty string')
  const drainTimeout = checkTimeout(options.drainTimeout, 'drainTimeout') ?? 30_000
  const signals = options.signals ?? true
  if (typeof signals !== 'boolean') throw invalidArgument('signals must be a boolean')
  const config: PrimaryConfig = { workers, port, host, startTimeout, drainTimeout, respawn: respawnPolicy(options.respawn), signals }

  if (options.scheduling !== undefined) {
    if (options.scheduling !== 'round-robin' && options.scheduling !== 'os') throw invalidArgument(`unknown scheduling ${String(options.scheduling)}`)
    const policy = options.scheduling === 'os' ? cluster.SCHED_NONE : cluster.SCHED_RR
    cluster.schedulingPolicy = policy
  }
  const setup: { exec?: string; args?: string[]; execArgv?: string[] } = {}
  if (options.exec !== undefined) setup.exec = options.exec
  if (options.args !== undefined) setup.args = options.args
  if (options.execArgv !== undefined) setup.execArgv = options.execArgv
  if (Object.keys(setup).length > 0) cluster.setupPrimary(setup)
  if (options.scheduling !== undefined && cluster.schedulingPolicy !== (options.scheduling === 'os' ? cluster.SCHED_NONE : cluster.SCHED_RR)) {
    throw invalidArgument('scheduling cannot change once this process has forked a cluster worker')
  }

  const primary = new ClusterPrimary(config)
  await primary.start()
  return primary
}
