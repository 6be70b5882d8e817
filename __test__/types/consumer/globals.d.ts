// Names the documentation's snippets use without defining: the application's own code. polycall's
// own objects are typed; application placeholders are `any`, so only polycall's API is checked.
import type { Socket } from 'node:net'
import type { PolyCallClient, PolyCallServer, StateMachine } from 'polycall'

declare global {
  /** A server made in an earlier snippet. */
  const server: PolyCallServer
  /** A client made in an earlier snippet. */
  const client: PolyCallClient
  /** A machine to restore a snapshot into. */
  const other: StateMachine
  /** A machine to restore a node-polycall snapshot into. */
  const imported: StateMachine
  /** A snapshot in node-polycall's layout. */
  const fromNodePolycall: any
  /** A socket carrying v1 frames. */
  const socket: Socket
  const db: any
  const sessions: any
  const tokenSchema: any
  const log: any
  const metrics: any
  function checkPassword(username: string, password: string): any
  function verifyPassword(hash: string, password: string): Promise<boolean>
  function buildOrderMachine(): StateMachine
  function configLoaded(signal: AbortSignal): Promise<boolean>
  function paymentCleared(signal: AbortSignal): Promise<boolean>
  function notifyCustomer(signal: AbortSignal): Promise<void>
  function reserveStock(): void
}

export {}
