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
  clientConnect: diagnostics.channel('polycall:client:connect'),
  clientRequestStart: diagnostics.channel('polycall:client:request:start'),
  clientRequestEnd: diagnostics.channel('polycall:client:request:end'),
  clientError: diagnostics.channel('polycall:client:error'),
  serverConnect: diagnostics.channel('polycall:server:connect'),
  serverRequestStart: diagnostics.channel('polycall:server:request:start'),
  serverRequestEnd: diagnostics.channel('polycall:server:request:end'),
  serverError: diagnostics.channel('polycall:server:error'),
} as const
