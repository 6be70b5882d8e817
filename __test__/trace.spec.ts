// W3C trace context across real connections: carried by capability 0x0040, validated on the
// server (bad values dropped, not fatal), on the diagnostics channels, and the OpenTelemetry
// example's spans. Serial: the channel subscribers of one test would see (and rewrite) the
// calls of another.
import test from 'ava'
import * as diagnostics from 'node:diagnostics_channel'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Packr } from 'msgpackr'
import {
  Capability,
  ErrorCode,
  MessageType,
  PolyCallClient,
  PolyCallServer,
  buildHandshake,
  isValidTracestate,
  parseTraceContext,
  parseTraceparent,
  type RequestContext,
  type TraceInfo,
} from '../ts/index.js'
import { RawPeer, startServer } from './helpers/net.js'
import { RecordingTracer, instrumentPolycall, traceOf } from '../examples/otel.js'

const TP = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
const packr = new Packr({ useRecords: false, moreTypes: false })

function traceServer(t: import('ava').ExecutionContext) {
  const seen: (TraceInfo | undefined)[] = []
  return startServer(t, {}, (s) => s.route('where', (ctx: RequestContext) => (seen.push(ctx.trace), ctx.trace ?? null))).then((r) => ({ ...r, seen }))
}

test.serial('a traceparent and tracestate cross a real connection and reach ctx.trace, parsed', async (t) => {
  const { port, seen } = await traceServer(t)
  const client = new PolyCallClient({ host: '127.0.0.1', port, reconnect: false })
  t.teardown(() => client.destroy())
  const out = await client.request('where', undefined, { trace: { traceparent: TP, tracestate: 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE' } })
  t.deepEqual(out, {
    traceparent: TP,
    tracestate: 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE',
    version: 0,
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    parentId: '00f067aa0ba902b7',
    flags: 1,
    sampled: true,
  })
  t.is(client.stats().capabilities & Capability.TraceContext, Capability.TraceContext)
  // A plain string is a traceparent; no trace, no ctx.trace.
  await client.request('where', undefined, { trace: TP })
  await client.request('where')
  t.is(seen[1]?.traceparent, TP)
  t.is(seen[1]?.tracestate, undefined)
  t.is(seen[2], undefined)
  // A bad trace option is the caller's mistake: refused before anything is sent.
  await t.throwsAsync(client.request('where', undefined, { trace: 'nope' }), { code: ErrorCode.INVALID_ARGUMENT })
  await t.throwsAsync(client.request('where', undefined, { trace: { traceparent: TP, tracestate: 'BAD KEY=1' } }), { code: ErrorCode.INVALID_ARGUMENT })
  t.is(seen.length, 3)
})

test.serial('a bad traceparent from the wire is dropped (the call runs without a trace); a bad tracestate alone is dropped', async (t) => {
  const { port, seen } = await traceServer(t)
  const peer = await RawPeer.connect(t, port)
  peer.send(MessageType.Handshake, 1, buildHandshake(Capability.Msgpack | Capability.TraceContext))
  t.is((await peer.next())?.type, MessageType.Response)
  const bad = [
    '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1', // short flags
    '00-00000000000000000000000000000000-00f067aa0ba902b7-01', // zero trace id
    '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01', // zero parent id
    '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01', // uppercase
    'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', // version ff
    '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra', // 00 is exactly 55 characters
    42, // not a string
  ]
  let seq = 2
  for (const tp of bad) {
    peer.send(MessageType.Command, seq, packr.pack(['where', null, 1000, { tp, ts: 'a=1' }]))
    const f = await peer.next()
    t.is(f?.type, MessageType.Response, String(tp))
    t.is(f?.sequence, seq++)
  }
  t.deepEqual(seen, bad.map(() => undefined))
  // A later version may carry more fields after the 55 of version 00.
  peer.send(MessageType.Command, seq++, packr.pack(['where', null, 1000, { tp: `01-${TP.slice(3)}-what-comes-next`, ts: 'bad key=1' }]))
  await peer.next()
  t.is(seen.at(-1)?.version, 1)
  t.is(seen.at(-1)?.tracestate, undefined)
})

test.serial('a peer that did not negotiate trace context is not sent one, and its trace fields are ignored', async (t) => {
  const { port, seen } = await traceServer(t)
  const legacy = new PolyCallClient({ host: '127.0.0.1', port, reconnect: false, legacy: true })
  t.teardown(() => legacy.destroy())
  t.is(await legacy.request('where', undefined, { trace: TP }), null)
  const peer = await RawPeer.connect(t, port)
  peer.send(MessageType.Handshake, 1, buildHandshake(Capability.Msgpack))
  await peer.next()
  peer.send(MessageType.Command, 2, packr.pack(['where', null, 1000, { tp: TP }]))
  t.is((await peer.next())?.type, MessageType.Response)
  t.deepEqual(seen, [undefined, undefined])
})

test.serial('the client and server request channels carry the trace; a start subscriber may set the one sent', async (t) => {
  const { port, seen } = await traceServer(t)
  const client = new PolyCallClient({ host: '127.0.0.1', port, reconnect: false })
  t.teardown(() => client.destroy())
  const events: string[] = []
  const other = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00'
  const onClientStart = (m: unknown) => {
    const msg = m as { trace?: { traceparent: string }; client: unknown }
    events.push(`client start ${msg.trace?.traceparent ?? '-'}`)
    if (msg.client === client) (msg as { trace?: unknown }).trace = { traceparent: other }
  }
  const onClientEnd = (m: unknown) => events.push(`client end ${(m as { trace?: { traceparent: string } }).trace?.traceparent}`)
  const onServerStart = (m: unknown) => events.push(`server start ${(m as { trace?: TraceInfo }).trace?.parentId}`)
  const onServerEnd = (m: unknown) => events.push(`server end ${(m as { trace?: TraceInfo }).trace?.traceId}`)
  diagnostics.subscribe('polycall:client:request:start', onClientStart)
  diagnostics.subscribe('polycall:client:request:end', onClientEnd)
  diagnostics.subscribe('polycall:server:request:start', onServerStart)
  diagnostics.subscribe('polycall:server:request:end', onServerEnd)
  t.teardown(() => {
    diagnostics.unsubscribe('polycall:client:request:start', onClientStart)
    diagnostics.unsubscribe('polycall:client:request:end', onClientEnd)
    diagnostics.unsubscribe('polycall:server:request:start', onServerStart)
    diagnostics.unsubscribe('polycall:server:request:end', onServerEnd)
  })
  await client.request('where', undefined, { trace: TP })
  t.deepEqual(events, [`client start ${TP}`, 'server start b7ad6b7169203331', 'server end 0af7651916cd43dd8448eb211c80319c', `client end ${other}`])
  t.is(seen[0]?.traceparent, other)
})

test.serial('parsing helpers follow the W3C rules', (t) => {
  t.is(parseTraceparent(TP)?.traceId, '4bf92f3577b34da6a3ce929d0e0e4736')
  t.false(parseTraceparent(TP.replace(/01$/, '00'))!.sampled)
  t.is(parseTraceparent(`${TP}x`), undefined)
  t.is(parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01'), undefined)
  t.true(isValidTracestate('a=1, b@c=2 ,,d=x y'))
  t.false(isValidTracestate('a=1,a=2'))
  t.false(isValidTracestate('a=1 '.repeat(1) + ',b=' + 'x'.repeat(600)))
  t.false(isValidTracestate(Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(',')))
  t.true(isValidTracestate(Array.from({ length: 32 }, (_, i) => `k${i}=v`).join(',')))
  t.is(parseTraceContext(TP, 'a=1')?.tracestate, 'a=1')
  t.is(parseTraceContext('bad', 'a=1'), undefined)
})

test.serial('the OpenTelemetry example: one trace over two hops, server spans children of client spans, errors marked', async (t) => {
  const tracer = new RecordingTracer()
  const stop = instrumentPolycall(tracer)
  t.teardown(stop)
  const back = new PolyCallServer()
  back.route('price', (ctx) => ({ traceId: ctx.trace?.traceId }))
  const { port: backPort } = await back.listen(0, '127.0.0.1')
  t.teardown(() => back.destroy())
  const toBack = new PolyCallClient({ host: '127.0.0.1', port: backPort, reconnect: false })
  t.teardown(() => toBack.destroy())
  const front = new PolyCallServer()
  front.route('quote', (ctx) => toBack.request('price', ctx.data, { trace: traceOf(ctx) }))
  const { port } = await front.listen(0, '127.0.0.1')
  t.teardown(() => front.destroy())
  const client = new PolyCallClient({ host: '127.0.0.1', port, reconnect: false })
  t.teardown(() => client.destroy())
  const out = (await client.request('quote')) as { traceId: string }
  await t.throwsAsync(client.request('missing'), { code: ErrorCode.NOT_FOUND })
  const spans = tracer.spans
  t.is(spans.length, 6)
  const quoteTrace = spans.find((s) => s.name === 'polycall quote')!.traceId
  t.is(out.traceId, quoteTrace)
  const chain = spans.filter((s) => s.traceId === quoteTrace)
  const client1 = chain.find((s) => s.kind === 2 && s.name === 'polycall quote')!
  const server1 = chain.find((s) => s.kind === 1 && s.name === 'polycall quote')!
  const client2 = chain.find((s) => s.kind === 2 && s.name === 'polycall price')!
  const server2 = chain.find((s) => s.kind === 1 && s.name === 'polycall price')!
  t.is(client1.parentSpanId, undefined)
  t.is(server1.parentSpanId, client1.spanId)
  t.is(client2.parentSpanId, server1.spanId)
  t.is(server2.parentSpanId, client2.spanId)
  const failed = spans.filter((s) => s.name === 'polycall missing')
  t.is(failed.length, 2)
  t.true(failed.every((s) => s.status === 2 && s.attributes['polycall.error_code'] === ErrorCode.NOT_FOUND))
})

test.serial('the OpenTelemetry example runs as a script', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('../examples/otel.ts', import.meta.url))], { timeout: 60_000 })
  const lines = stdout.trim().split('\n')
  const traceId = /saw trace ([0-9a-f]{32})/.exec(lines[0]!)![1]
  t.is(lines.filter((l) => l.includes(`trace=${traceId}`)).length, 4)
  t.regex(stdout, /ERROR ERR_POLYCALL_NOT_FOUND/)
})
