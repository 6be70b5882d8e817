/**
 * `node:diagnostics_channel` channels. Subscribe with
 * `diagnostics_channel.subscribe('polycall:server:request:end', (msg) => ...)`. Messages are
 * published only when a channel has subscribers, so an unobserved process pays nothing.
 *
 * | channel | message |
 * | --- | --- |
 * | `polycall:client:connect` | `{ client, host, port, legacy, capabilities }` |
 * | `polycall:client:request:start` | `{ client, command, sequence, endpoint, trace }`: a subscriber may set `trace` (a W3C trace context) to the one the call sends |
 * | `polycall:client:request:end` | `{ client, command, sequence, durationMs, error?, endpoint, trace }` |
 * | `polycall:client:error` | `{ client, error }` |
 * | `polycall:server:connect` | `{ server, remoteAddress, remotePort, tls }` |
 * | `polycall:server:request:start` | `{ server, command, sequence, remoteAddress, trace, ctx }` (`trace` is `ctx.trace`) |
 * | `polycall:server:request:end` | `{ server, command, sequence, durationMs, error?, trace, ctx }` |
 * | `polycall:server:error` | `{ server, error }` (includes handler bugs that peers only see as `ERR_POLYCALL_INTERNAL`) |
 *
 * With several endpoints, the client's request messages are per attempt (`endpoint` says where)
 * and `client` is the client the application made. Credentials are never published.
 * @packageDocumentation
 */
import * as diagnostics from 'node:diagnostics_channel'

/** The channels polycall publishes on. */
export const channels = {
  /** `polycall:client:connect`: `{ client, host, port, legacy, capabilities }`. */
  clientConnect: diagnostics.channel('polycall:client:connect'),
  /** `polycall:client:request:start`: `{ client, command, sequence, endpoint, trace }` (a subscriber may set `trace`). */
  clientRequestStart: diagnostics.channel('polycall:client:request:start'),
  /** `polycall:client:request:end`: `{ client, command, sequence, durationMs, error?, endpoint, trace }`. */
  clientRequestEnd: diagnostics.channel('polycall:client:request:end'),
  /** `polycall:client:error`: `{ client, error }`. */
  clientError: diagnostics.channel('polycall:client:error'),
  /** `polycall:server:connect`: `{ server, remoteAddress, remotePort, tls }`. */
  serverConnect: diagnostics.channel('polycall:server:connect'),
  /** `polycall:server:request:start`: `{ server, command, sequence, remoteAddress, trace, ctx }`. */
  serverRequestStart: diagnostics.channel('polycall:server:request:start'),
  /** `polycall:server:request:end`: `{ server, command, sequence, durationMs, error?, trace, ctx }`. */
  serverRequestEnd: diagnostics.channel('polycall:server:request:end'),
  /** `polycall:server:error`: `{ server, error }`, handler bugs included. */
  serverError: diagnostics.channel('polycall:server:error'),
} as const
