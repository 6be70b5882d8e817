/**
 * The IPC messages between a cluster's primary and its workers. Every message carries
 * `polycall: 'cluster'`, so an application's own messages on the same channel are left alone.
 * @packageDocumentation
 */
import type { ServerStats } from '../server/options.js'
import type { ClusterStats } from './types.js'

/** @internal */
export const TAG = 'cluster'

/** @internal Primary to worker. */
export type ToWorker =
  | { polycall: typeof TAG; type: 'config'; port: number; host: string; generation: number; drainTimeout: number }
  | { polycall: typeof TAG; type: 'drain'; timeout: number }
  | { polycall: typeof TAG; type: 'stats'; ref: number }
  | { polycall: typeof TAG; type: 'cluster-stats'; ref: number; stats?: ClusterStats; error?: { code: string; message: string } }

/** @internal Worker to primary. */
export type ToPrimary =
  | { polycall: typeof TAG; type: 'hello' }
  | { polycall: typeof TAG; type: 'listening'; port: number; address: string }
  | { polycall: typeof TAG; type: 'failed'; code: string; message: string }
  | { polycall: typeof TAG; type: 'draining' }
  | { polycall: typeof TAG; type: 'stats'; ref: number; stats: ServerStats }
  | { polycall: typeof TAG; type: 'cluster-stats'; ref: number; timeout: number }

/** @internal Whether an IPC message is one of ours. */
export function isClusterMessage(m: unknown): m is { polycall: typeof TAG; type: string } {
  return m !== null && typeof m === 'object' && (m as { polycall?: unknown }).polycall === TAG && typeof (m as { type?: unknown }).type === 'string'
}
