/**
 * `node:diagnostics_channel` channels. Subscribe with
 * `diagnostics_channel.subscribe('polycall:server:request:end', (msg) => ...)`. Messages are
 * published only when a channel has subscribers, so an unobserved process pays nothing.
 *
 * | channel | message |
 * | --- | --- |
 * | `polycall:client:connect` | `{ client, host, port, legacy, capabilities }` |
 * | `polycall:client:request:start` | `{ client, command, sequence }` |
 * | `polycall:client:request:end` | `{ client, command, sequence, durationMs, error? }` |
 * | `polycall:client:error` | `{ client, error }` |
 * | `polycall:server:connect` | `{ server, remoteAddress, remotePort, tls }` |
 * | `polycall:server:request:start` | `{ server, command, sequence, remoteAddress }` |
 * | `polycall:server:request:end` | `{ server, command, sequence, durationMs, error? }` |
 * | `polycall:server:error` | `{ server, error }` (includes handler bugs that peers only see as `ERR_POLYCALL_INTERNAL`) |
 *
 * Credentials are never published.
 * @packageDocumentation
 */
import * as diagnostics from 'node:diagnostics_channel'

/** The channels polycall publishes on. */
export const channels = {
  /** `polycall:client:connect`: `{ client, host, port, legacy, capabilities }`. */
  clientConnect: diagnostics.channel('polycall:client:connect'),
  /** `polycall:client:request:start`: `{ client, command, sequence }`. */
  clientRequestStart: diagnostics.channel('polycall:client:request:start'),
  /** `polycall:client:request:end`: `{ client, command, sequence, durationMs, error? }`. */
  clientRequestEnd: diagnostics.channel('polycall:client:request:end'),
  /** `polycall:client:error`: `{ client, error }`. */
  clientError: diagnostics.channel('polycall:client:error'),
  /** `polycall:server:connect`: `{ server, remoteAddress, remotePort, tls }`. */
  serverConnect: diagnostics.channel('polycall:server:connect'),
  /** `polycall:server:request:start`: `{ server, command, sequence, remoteAddress }`. */
  serverRequestStart: diagnostics.channel('polycall:server:request:start'),
  /** `polycall:server:request:end`: `{ server, command, sequence, durationMs, error? }`. */
  serverRequestEnd: diagnostics.channel('polycall:server:request:end'),
  /** `polycall:server:error`: `{ server, error }`, handler bugs included. */
  serverError: diagnostics.channel('polycall:server:error'),
} as const
