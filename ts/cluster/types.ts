/**
 * The option, event and statistics types of {@link serveCluster}.
 * @packageDocumentation
 */
import type { PolyCallServer } from '../server/server.js'
import type { ServerStats } from '../server/options.js'

/** Replacement of workers that died: delay = min(initialDelay × multiplier^failures, maxDelay). */
export interface RespawnOptions {
  /** Delay before replacing the first worker that died. @defaultValue 100 */
  initialDelay?: number | undefined
  /** Growth of the delay with each further death in a row. @defaultValue 2 */
  multiplier?: number | undefined
  /** Longest delay. @defaultValue 30000 */
  maxDelay?: number | undefined
  /** A worker that served this long before dying resets the count (its replacement starts at `initialDelay`). @defaultValue 10000 */
  resetAfter?: number | undefined
}

/** Options of {@link serveCluster}. The primary's options rule: workers take port and host from it. */
export interface ClusterOptions {
  /** Worker processes. @defaultValue `os.availableParallelism()` */
  workers?: number | undefined
  /** TCP port all workers share; 0 picks a free one (kept for the cluster's lifetime). @defaultValue 0 */
  port?: number | undefined
  /** Interface to bind. @defaultValue '127.0.0.1' */
  host?: string | undefined
  /**
   * How connections reach workers: `'round-robin'`, the primary accepts and hands each
   * connection to the next worker (Node's default except on Windows; even spread, which suits
   * long-lived connections); `'os'`, every worker accepts on the shared socket and the kernel
   * picks. Process-wide (`cluster.schedulingPolicy`), fixed by the first fork.
   * @defaultValue Node's default
   */
  scheduling?: 'round-robin' | 'os' | undefined
  /** Longest time from fork to listening, per worker. @defaultValue 30000 */
  startTimeout?: number | undefined
  /**
   * Longest graceful drain per worker (its `server.close({ timeout })`): requests still running
   * then are cut off. A worker that has not exited 5 s after that is killed. @defaultValue 30000
   */
  drainTimeout?: number | undefined
  /** Replace workers that die unexpectedly, with backoff; `false` leaves them dead. @defaultValue see {@link RespawnOptions} */
  respawn?: RespawnOptions | false | undefined
  /**
   * Handle signals in the primary: SIGHUP rolls the workers ({@link ClusterPrimary.restart}),
   * SIGTERM and SIGINT drain them ({@link ClusterPrimary.close}) and exit (0 when every worker
   * drained in time, 1 when one had to be killed; a second SIGTERM/SIGINT kills them at once).
   * Workers always ignore SIGHUP, and drain and exit on SIGTERM/SIGINT sent to them alone.
   * @defaultValue true
   */
  signals?: boolean | undefined
  /** Script the workers run. @defaultValue the primary's own (`process.argv[1]`) */
  exec?: string | undefined
  /** Arguments of the workers' script. @defaultValue the primary's (`process.argv.slice(2)`) */
  args?: string[] | undefined
  /** Node options of the workers. @defaultValue the primary's (`process.execArgv`) */
  execArgv?: string[] | undefined
}

/** What a worker's factory receives. */
export interface WorkerInfo {
  /** The worker's id (`cluster.worker.id`): unique in the cluster's lifetime. */
  id: number
  /** 0 for the first workers, one more for each rolling restart started (a failed one counts too). */
  generation: number
}

/** Builds the server of one worker (routes, middleware, options); the cluster makes it listen. */
export type ServerFactory = (info: WorkerInfo) => PolyCallServer | Promise<PolyCallServer>

/** A worker as the primary sees it. */
export interface ClusterWorkerInfo {
  /** `cluster.worker.id`. */
  id: number
  /** Process id. */
  pid: number
  /** Rolling-restart generation. */
  generation: number
  /** `'starting'` until its server listens, `'listening'`, then `'draining'` once told to stop. */
  state: 'starting' | 'listening' | 'draining'
}

/** Payload of the `exit` event. */
export interface WorkerExitEvent {
  /** The worker that exited. */
  worker: ClusterWorkerInfo
  /** Its exit code, or null when a signal ended it. */
  code: number | null
  /** The signal that ended it, or null. */
  signal: string | null
  /** Whether the primary had asked it to stop (rolling restart, close). */
  expected: boolean
}

/** Payload of the `respawn` event. */
export interface RespawnEvent {
  /** The worker being replaced. */
  replaces: number
  /** Milliseconds before the replacement is forked. */
  delay: number
  /** Workers that died in a row (without serving `resetAfter` ms), this one included. */
  failures: number
}

/** Events of a {@link ClusterPrimary}. */
export interface ClusterEvents {
  /** A worker's server listens. */
  listening: [worker: ClusterWorkerInfo]
  /** A worker exited. */
  exit: [event: WorkerExitEvent]
  /** A worker that died will be replaced after `delay`. */
  respawn: [event: RespawnEvent]
  /** A rolling restart finished: every worker is of `generation`. */
  restarted: [generation: number]
  /** Something failed with nobody awaiting it: a signal-started rolling restart, a replacement that did not start. */
  failure: [error: Error]
  /** Every worker is gone after close() or destroy(). */
  close: []
}

/** One worker's answer in {@link ClusterStats}. */
export interface ClusterWorkerStats extends ClusterWorkerInfo {
  /** The worker's `server.stats()`. */
  stats: ServerStats
}

/** What {@link ClusterPrimary.stats} returns. */
export interface ClusterStats {
  /**
   * The workers' stats added up. Latency `count` is the sum and `max` the largest; `p50`,
   * `p90` and `p99` are the largest of the workers' (an upper bound of the cluster-wide
   * percentile: percentiles cannot be added).
   */
  total: ServerStats
  /** Each worker that answered in time. */
  workers: ClusterWorkerStats[]
  /** Ids of the workers that did not answer within the timeout. */
  missing: number[]
  /** Workers replaced after dying, since the cluster started. */
  respawns: number
  /** The current rolling-restart generation. */
  generation: number
}
