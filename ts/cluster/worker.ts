/**
 * The worker side of {@link serveCluster}: asks the primary where to listen, builds the
 * server with the application's factory, listens, answers stats requests, and drains when
 * told to (or when signalled on its own).
 * @packageDocumentation
 */
import cluster from 'node:cluster'
import { bounded, checkTimeout, type CallOptions } from '../core/abort.js'
import { ErrorCode, PolyCallError, isPolyCallError } from '../core/errors.js'
import type { PolyCallServer } from '../server/server.js'
import { isClusterMessage, TAG, type ToPrimary, type ToWorker } from './messages.js'
import type { ClusterStats, ServerFactory } from './types.js'

function send(message: ToPrimary): void {
  try {
    if (process.connected) process.send?.(message)
  } catch {
    // the primary is gone; node:cluster ends this worker
  }
}

/**
 * The handle {@link serveCluster} returns in a worker process: its server, listening on the
 * cluster's port.
 *
 * @example
 * ```ts
 * const c = await serveCluster(() => buildServer(), { workers: 2, port: 7000 })
 * if (c.role === 'worker') c.server.route('cluster.stats', () => c.clusterStats())
 * ```
 */
export class ClusterWorker {
  /** Always `'worker'`. */
  readonly role = 'worker' as const
  /** `cluster.worker.id`. */
  readonly id: number
  /** The rolling-restart generation this worker belongs to. */
  readonly generation: number
  /** The worker's server (listening). */
  readonly server: PolyCallServer
  #ref = 0
  readonly #waiters = new Map<number, (m: Extract<ToWorker, { type: 'cluster-stats' }>) => void>()
  #draining: Promise<void> | undefined

  /** @internal Use {@link serveCluster}. */
  constructor(id: number, generation: number, server: PolyCallServer) {
    this.id = id
    this.generation = generation
    this.server = server
  }

  /**
   * The whole cluster's stats, gathered by the primary (see {@link ClusterPrimary.stats}).
   *
   * @param options - `timeout` @defaultValue 2000, `signal`
   * @returns the aggregated stats
   * @throws `ERR_POLYCALL_TIMEOUT` when the primary does not answer in time, `ERR_POLYCALL_ABORTED`
   */
  clusterStats(options: CallOptions = {}): Promise<ClusterStats> {
    const timeout = checkTimeout(options.timeout) ?? 2000
    const ref = ++this.#ref
    const answer = new Promise<ClusterStats>((resolve, reject) => {
      this.#waiters.set(ref, (m) => {
        if (m.stats) resolve(m.stats)
        else reject(new PolyCallError(m.error?.code ?? ErrorCode.INTERNAL, m.error?.message ?? 'no stats'))
      })
    })
    // The primary bounds its own gathering a little below ours, so its answer arrives first.
    send({ polycall: TAG, type: 'cluster-stats', ref, timeout: Math.max(0, timeout - 100) })
    return bounded(answer, { timeout, signal: options.signal }, 'cluster stats').finally(() => this.#waiters.delete(ref))
  }

  /** @internal */
  message(m: ToWorker): void {
    switch (m.type) {
      case 'stats':
        send({ polycall: TAG, type: 'stats', ref: m.ref, stats: this.server.stats() })
        return
      case 'drain':
        void this.drain(m.timeout)
        return
      case 'cluster-stats':
        this.#waiters.get(m.ref)?.(m)
        return
      default:
        return
    }
  }

  /** @internal Closes the server gracefully, then exits the process. */
  drain(timeout: number): Promise<void> {
    this.#draining ??= this.server
      .close({ timeout })
      .catch(() => {})
      .then(() => process.exit(0))
    return this.#draining
  }
}

/** @internal The worker side of serveCluster. */
export async function runWorker(factory: ServerFactory, startTimeout: number): Promise<ClusterWorker> {
  const self = cluster.worker
  if (!self) throw new PolyCallError(ErrorCode.INTERNAL, 'not a cluster worker')
  let handle: ClusterWorker | undefined
  let configured!: (m: Extract<ToWorker, { type: 'config' }>) => void
  const config = new Promise<Extract<ToWorker, { type: 'config' }>>((r) => (configured = r))
  const onMessage = (m: unknown) => {
    if (!isClusterMessage(m)) return
    const msg = m as ToWorker
    if (msg.type === 'config') configured(msg)
    else handle?.message(msg)
  }
  process.on('message', onMessage)
  // The primary coordinates: a terminal's SIGHUP reaches the whole group and must not kill us;
  // SIGTERM/SIGINT sent to this worker alone drain it (the primary replaces it).
  process.on('SIGHUP', () => {})
  let drainTimeout = 30_000
  const stop = () => {
    send({ polycall: TAG, type: 'draining' })
    if (handle) void handle.drain(drainTimeout)
    else process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  try {
    send({ polycall: TAG, type: 'hello' })
    const { port, host, generation, ...rest } = await bounded(config, { timeout: startTimeout }, 'waiting for the cluster primary')
    drainTimeout = rest.drainTimeout
    const server = await factory({ id: self.id, generation })
    if (server === null || typeof server !== 'object' || typeof server.listen !== 'function' || typeof server.stats !== 'function') {
      throw new PolyCallError(ErrorCode.INVALID_ARGUMENT, 'the serveCluster factory must return a PolyCallServer')
    }
    const address = await server.listen(port, host)
    handle = new ClusterWorker(self.id, generation, server)
    send({ polycall: TAG, type: 'listening', port: address.port, address: address.address })
    return handle
  } catch (e) {
    const err = isPolyCallError(e) ? e : new PolyCallError(ErrorCode.INTERNAL, e instanceof Error ? e.message : String(e), { cause: e })
    send({ polycall: TAG, type: 'failed', code: err.code, message: err.message })
    throw err
  }
}
