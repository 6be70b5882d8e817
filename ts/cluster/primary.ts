/**
 * The primary side of {@link serveCluster}: forks the workers, tells them where to listen,
 * replaces the ones that die (with backoff), rolls them on SIGHUP, drains them on
 * SIGTERM/SIGINT and gathers their stats over the IPC channel.
 * @packageDocumentation
 */
import cluster, { type Worker } from 'node:cluster'
import { bounded, checkTimeout, type CallOptions } from '../core/abort.js'
import { TypedEmitter } from '../core/emitter.js'
import { ErrorCode, PolyCallError } from '../core/errors.js'
import type { ServerStats } from '../server/options.js'
import { isClusterMessage, TAG, type ToPrimary, type ToWorker } from './messages.js'
import type {
  ClusterEvents,
  ClusterOptions,
  ClusterStats,
  ClusterWorkerInfo,
  ClusterWorkerStats,
  RespawnOptions,
} from './types.js'

/** A worker was told to stop and has not exited this long after its drain timeout: kill it. */
const KILL_GRACE = 5000

/** @internal Resolved options of the primary. */
export interface PrimaryConfig {
  workers: number
  port: number
  host: string
  startTimeout: number
  drainTimeout: number
  respawn: Required<{ [K in keyof RespawnOptions]-?: number }> | undefined
  signals: boolean
}

interface Record {
  worker: Worker
  id: number
  pid: number
  generation: number
  state: ClusterWorkerInfo['state']
  /** The primary asked it to stop: its exit is no failure. */
  expected: boolean
  /** Replace it if it dies: once it listened, and always for a replacement (a failed start otherwise rejects its caller). */
  respawn: boolean
  listeningAt: number | undefined
  started: Promise<void>
  resolveStarted: () => void
  rejectStarted: (e: PolyCallError) => void
  exited: Promise<void>
  resolveExited: () => void
  killTimer: NodeJS.Timeout | undefined
  /** It had to be killed after its drain. */
  killed: boolean
}

function info(r: Record): ClusterWorkerInfo {
  return { id: r.id, pid: r.pid, generation: r.generation, state: r.state }
}

function send(worker: Worker, message: ToWorker): void {
  try {
    if (worker.isConnected()) worker.send(message)
  } catch {
    // the worker is going away; its exit is handled on its own
  }
}

/** @internal Sums ServerStats; percentiles take the largest (an upper bound). */
export function addStats(all: ServerStats[]): ServerStats {
  const total: ServerStats = {
    connections: { current: 0, total: 0, rejected: 0 },
    requests: { total: 0, inFlight: 0, succeeded: 0, failed: 0, cancelled: 0, timedOut: 0 },
    latency: { count: 0, p50: 0, p90: 0, p99: 0, max: 0 },
    bytesIn: 0,
    bytesOut: 0,
    bytesQueued: 0,
  }
  for (const s of all) {
    for (const k of ['current', 'total', 'rejected'] as const) total.connections[k] += s.connections[k]
    for (const k of ['total', 'inFlight', 'succeeded', 'failed', 'cancelled', 'timedOut'] as const) total.requests[k] += s.requests[k]
    total.latency.count += s.latency.count
    for (const k of ['p50', 'p90', 'p99', 'max'] as const) total.latency[k] = Math.max(total.latency[k], s.latency[k])
    total.bytesIn += s.bytesIn
    total.bytesOut += s.bytesOut
    total.bytesQueued += s.bytesQueued ?? 0
  }
  return total
}

/**
 * The handle {@link serveCluster} returns in the primary process: the workers, their stats,
 * rolling restart and shutdown.
 *
 * @example
 * ```ts
 * const c = await serveCluster(() => buildServer(), { workers: 4, port: 7000 })
 * if (c.role === 'primary') {
 *   c.on('exit', (e) => log.warn('worker exited', e))
 *   setInterval(async () => log.info((await c.stats()).total.requests), 60_000).unref()
 * }
 * ```
 */
export class ClusterPrimary extends TypedEmitter<ClusterEvents> {
  /** Always `'primary'` (the worker's handle says `'worker'`). */
  readonly role = 'primary' as const
  /** The interface the workers listen on. */
  readonly host: string
  readonly #config: PrimaryConfig
  readonly #records = new Map<number, Record>()
  /** The port the workers listen on (resolved from 0 by the first worker). */
  #port: number
  /** The port value new workers ask for: what the live workers' shared handle was opened with. */
  #askPort: number
  #generation = 0
  #respawns = 0
  #failures = 0
  readonly #respawnTimers = new Set<NodeJS.Timeout>()
  #rolling: Promise<void> | undefined
  #rollAgain = false
  #closing: Promise<void> | undefined
  #destroyed = false
  #statsRef = 0
  /** Stats requests awaiting a worker's answer, by ref: the worker asked and how to finish. */
  readonly #statsWaiters = new Map<number, { id: number; finish: (stats: ServerStats | undefined) => void }>()
  readonly #signalHandlers: [NodeJS.Signals, () => void][] = []

  /** @internal Use {@link serveCluster}. */
  constructor(config: PrimaryConfig) {
    super()
    this.#config = config
    this.host = config.host
    this.#port = config.port
    this.#askPort = config.port
  }

  /** The port every worker listens on. */
  get port(): number {
    return this.#port
  }

  /** The generation of the latest rolling restart started (0 until the first one). */
  get generation(): number {
    return this.#generation
  }

  /** True once close() or destroy() was called. */
  get closed(): boolean {
    return this.#closing !== undefined || this.#destroyed
  }

  /** The live workers. */
  workers(): ClusterWorkerInfo[] {
    return [...this.#records.values()].map(info)
  }

  /** @internal Forks the first workers; rejects (after killing them) if one fails to start. */
  async start(): Promise<void> {
    const first = Array.from({ length: this.#config.workers }, () => this.#spawn(0, false))
    try {
      // One at a time would be slower; all at once share the first one's port-0 choice.
      await Promise.all(first.map((r) => r.started))
    } catch (e) {
      this.destroy()
      await Promise.all(first.map((r) => r.exited))
      throw e
    }
    if (this.#config.signals) this.#installSignals()
  }

  /**
   * Aggregated stats: asks every worker for its `server.stats()` over IPC.
   *
   * @param options - `timeout` (workers not answering by then are listed in `missing`) @defaultValue 2000, `signal`
   * @returns the total, each worker's answer and the ids that did not answer
   * @throws `ERR_POLYCALL_ABORTED` when `signal` aborts, `ERR_POLYCALL_INVALID_ARGUMENT`
   */
  async stats(options: CallOptions = {}): Promise<ClusterStats> {
    const timeout = checkTimeout(options.timeout) ?? 2000
    const asked = [...this.#records.values()].filter((r) => r.state !== 'starting')
    const answers = await bounded(
      Promise.all(
        asked.map(
          (r) =>
            new Promise<ServerStats | undefined>((resolve) => {
              const ref = ++this.#statsRef
              const timer = setTimeout(() => finish(undefined), timeout)
              const finish = (s: ServerStats | undefined) => {
                clearTimeout(timer)
                this.#statsWaiters.delete(ref)
                resolve(s)
              }
              // A worker that exits meanwhile simply does not answer (see #exited).
              this.#statsWaiters.set(ref, { id: r.id, finish })
              send(r.worker, { polycall: TAG, type: 'stats', ref })
            }),
        ),
      ),
      { signal: options.signal },
      'cluster stats',
    )
    const workers: ClusterWorkerStats[] = []
    const missing: number[] = []
    asked.forEach((r, i) => {
      const s = answers[i]
      if (s) workers.push({ ...info(r), stats: s })
      else missing.push(r.id)
    })
    return { total: addStats(workers.map((w) => w.stats)), workers, missing, respawns: this.#respawns, generation: this.#generation }
  }

  /**
   * Rolling restart: for each worker, fork a replacement of the next generation, wait until it
   * listens, then drain the old one (`server.close()`: it stops accepting, finishes its
   * requests in flight and closes its connections; clients reconnect to the others). A call
   * while a restart runs schedules one more after it (new code deployed meanwhile is picked
   * up). If a replacement fails to start, the restart stops there: the old workers that are
   * left keep serving.
   *
   * @param options - `timeout`, `signal` of the wait (the restart itself goes on)
   * @returns when every worker is of the new generation and the old ones have exited
   * @throws `ERR_POLYCALL_LISTEN_FAILED` when a replacement did not start, `ERR_POLYCALL_CLOSED`,
   *   `ERR_POLYCALL_TIMEOUT`, `ERR_POLYCALL_ABORTED`
   */
  restart(options: CallOptions = {}): Promise<void> {
    if (this.closed) return Promise.reject(new PolyCallError(ErrorCode.CLOSED, 'the cluster is closed'))
    if (this.#rolling) this.#rollAgain = true
    else {
      this.#rolling = this.#roll().finally(() => (this.#rolling = undefined))
    }
    return bounded(this.#rolling, options, 'the rolling restart')
  }

  /**
   * Graceful shutdown: every worker drains (see {@link ClusterOptions.drainTimeout}) and exits;
   * no worker is replaced any more. Idempotent.
   *
   * @returns when every worker has exited
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const t of this.#respawnTimers) clearTimeout(t)
      this.#respawnTimers.clear()
      const all = [...this.#records.values()]
      for (const r of all) this.#drain(r)
      await Promise.all(all.map((r) => r.exited))
      this.#removeSignals()
      this.emit('close')
    })()
    return this.#closing
  }

  /** Kills every worker at once (SIGKILL) and replaces none. Idempotent. */
  destroy(): void {
    if (this.#destroyed) return
    this.#destroyed = true
    for (const t of this.#respawnTimers) clearTimeout(t)
    this.#respawnTimers.clear()
    for (const r of this.#records.values()) {
      r.expected = true
      r.killed = true
      r.worker.process.kill('SIGKILL')
    }
    this.#removeSignals()
    if (!this.#closing) {
      const all = [...this.#records.values()]
      this.#closing = Promise.all(all.map((r) => r.exited)).then(() => {
        this.emit('close')
      })
    }
  }

  /** `await using c = ...` closes the cluster. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  #spawn(generation: number, respawn: boolean): Record {
    const worker = cluster.fork()
    let resolveStarted!: () => void
    let rejectStarted!: (e: PolyCallError) => void
    const started = new Promise<void>((res, rej) => {
      resolveStarted = res
      rejectStarted = rej
    })
    started.catch(() => {})
    let resolveExited!: () => void
    const exited = new Promise<void>((res) => (resolveExited = res))
    const r: Record = {
      worker,
      id: worker.id,
      pid: worker.process.pid ?? 0,
      generation,
      state: 'starting',
      expected: false,
      respawn,
      listeningAt: undefined,
      started,
      resolveStarted,
      rejectStarted,
      exited,
      resolveExited,
      killTimer: undefined,
      killed: false,
    }
    this.#records.set(r.id, r)
    const startTimer = setTimeout(() => {
      if (r.state !== 'starting') return
      r.rejectStarted(new PolyCallError(ErrorCode.LISTEN_FAILED, `worker ${r.id} did not listen within ${this.#config.startTimeout} ms`))
      this.#kill(r)
    }, this.#config.startTimeout)
    started.then(
      () => clearTimeout(startTimer),
      () => clearTimeout(startTimer),
    )
    worker.on('message', (m: unknown) => {
      if (isClusterMessage(m)) this.#message(r, m as ToPrimary)
    })
    worker.on('error', () => {}) // IPC errors end in 'exit'
    worker.on('exit', (code: number | null, signal: string | null) => this.#exited(r, code, signal))
    return r
  }

  #message(r: Record, m: ToPrimary): void {
    switch (m.type) {
      case 'hello': {
        // Workers ask for the port the live workers' shared handle uses; once none is left,
        // the resolved port itself (so port 0 stays the same port).
        const live = [...this.#records.values()].some((o) => o !== r && o.state === 'listening')
        if (!live) this.#askPort = this.#port
        send(r.worker, {
          polycall: TAG,
          type: 'config',
          port: this.#askPort,
          host: this.host,
          generation: r.generation,
          drainTimeout: this.#config.drainTimeout,
        })
        return
      }
      case 'listening':
        if (r.state !== 'starting') return
        r.state = 'listening'
        r.respawn = true
        r.listeningAt = performance.now()
        if (this.#port === 0) this.#port = m.port
        r.resolveStarted()
        this.emit('listening', info(r))
        return
      case 'failed':
        if (r.state === 'starting') {
          r.rejectStarted(new PolyCallError(ErrorCode.LISTEN_FAILED, `worker ${r.id} could not start: ${m.code}: ${m.message}`, { cause: m }))
          this.#kill(r)
        }
        return
      case 'draining':
        // It was signalled on its own (SIGTERM/SIGINT): it stops serving, a replacement comes.
        r.state = 'draining'
        return
      case 'stats':
        this.#statsWaiters.get(m.ref)?.finish(m.stats)
        return
      case 'cluster-stats':
        this.stats({ timeout: m.timeout }).then(
          (stats) => send(r.worker, { polycall: TAG, type: 'cluster-stats', ref: m.ref, stats }),
          (e: unknown) => {
            const err = e as PolyCallError
            const error = { code: err.code ?? ErrorCode.INTERNAL, message: err.message }
            send(r.worker, { polycall: TAG, type: 'cluster-stats', ref: m.ref, error })
          },
        )
        return
    }
  }

  #exited(r: Record, code: number | null, signal: string | null): void {
    this.#records.delete(r.id)
    if (r.killTimer) clearTimeout(r.killTimer)
    if (r.state === 'starting') {
      r.rejectStarted(new PolyCallError(ErrorCode.LISTEN_FAILED, `worker ${r.id} exited before listening (code ${code}, signal ${signal})`))
    }
    for (const w of [...this.#statsWaiters.values()]) if (w.id === r.id) w.finish(undefined)
    const expected = r.expected
    this.emit('exit', { worker: info(r), code, signal, expected })
    r.resolveExited()
    if (!expected && r.respawn && !this.closed) this.#scheduleRespawn(r)
  }

  #scheduleRespawn(r: Record): void {
    const policy = this.#config.respawn
    if (!policy) return
    if (r.listeningAt !== undefined && performance.now() - r.listeningAt >= policy.resetAfter) this.#failures = 0
    const delay = Math.min(policy.initialDelay * policy.multiplier ** this.#failures, policy.maxDelay)
    this.#failures++
    this.emit('respawn', { replaces: r.id, delay, failures: this.#failures })
    const timer = setTimeout(() => {
      this.#respawnTimers.delete(timer)
      if (this.closed) return
      this.#respawns++
      const fresh = this.#spawn(this.#generation, true)
      // A replacement that dies before listening is replaced in turn, after a longer delay.
      fresh.started.catch((e: unknown) => this.emit('failure', e as Error))
    }, delay)
    this.#respawnTimers.add(timer)
  }

  async #roll(): Promise<void> {
    do {
      this.#rollAgain = false
      const generation = ++this.#generation
      const old = [...this.#records.values()].filter((r) => r.generation < generation && r.state !== 'draining')
      const drains: Promise<void>[] = []
      for (const o of old) {
        if (this.closed) throw new PolyCallError(ErrorCode.CLOSED, 'the cluster closed during a rolling restart')
        const fresh = this.#spawn(generation, false)
        try {
          await fresh.started
        } catch (e) {
          await Promise.all(drains)
          throw e
        }
        // The old one may have died meanwhile (and been replaced): nothing left to drain.
        if (this.#records.get(o.id) === o) {
          this.#drain(o)
          drains.push(o.exited)
        } else if (this.#config.respawn) {
          // It died and is being replaced by a respawn: the extra worker of this generation drains instead.
          this.#drain(fresh)
          drains.push(fresh.exited)
        }
      }
      await Promise.all(drains)
      this.emit('restarted', generation)
    } while (this.#rollAgain && !this.closed)
  }

  /** Tells a worker to drain; kills it if it has not exited KILL_GRACE after its drain timeout. */
  #drain(r: Record): void {
    if (r.expected) return
    r.expected = true
    if (r.state === 'starting') return this.#kill(r)
    r.state = 'draining'
    send(r.worker, { polycall: TAG, type: 'drain', timeout: this.#config.drainTimeout })
    r.killTimer = setTimeout(() => {
      r.killed = true
      r.worker.process.kill('SIGKILL')
    }, this.#config.drainTimeout + KILL_GRACE)
  }

  /** Kills a worker that is still starting (it serves nobody yet). */
  #kill(r: Record): void {
    r.expected = true
    r.worker.process.kill('SIGKILL')
  }

  #installSignals(): void {
    let stopping = false
    const hup = () => {
      if (this.closed) return
      this.restart().catch((e: unknown) => this.emit('failure', e as Error))
    }
    const stop = () => {
      if (stopping) {
        // A second signal: do not wait any more.
        this.destroy()
        process.exit(1)
      }
      stopping = true
      const all = [...this.#records.values()]
      void this.close().then(() => process.exit(all.some((r) => r.killed) ? 1 : 0))
    }
    for (const [sig, fn] of [
      ['SIGHUP', hup],
      ['SIGTERM', stop],
      ['SIGINT', stop],
    ] as const) {
      process.on(sig, fn)
      this.#signalHandlers.push([sig, fn])
    }
  }

  #removeSignals(): void {
    for (const [sig, fn] of this.#signalHandlers.splice(0)) process.off(sig, fn)
  }
}
