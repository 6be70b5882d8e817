/**
 * OpenTelemetry spans from polycall's diagnostics channels, with `@opentelemetry/api` only (an
 * optional peer dependency of polycall; any SDK's tracer plugs in).
 *
 * - `polycall:client:request:start` starts a CLIENT span (child of the trace context the call
 *   was given, else of the active context) and sets `message.trace` to that span's
 *   `traceparent`, which the client then sends (capability 0x0040);
 * - `polycall:server:request:start` starts a SERVER span whose parent is the caller's span,
 *   read from `ctx.trace`; `traceOf(ctx)` gives a handler the trace context to pass on to its
 *   own calls (`{ trace: traceOf(ctx) }`), so a chain of hops is one trace without a context
 *   manager;
 * - the `request:end` channels end the spans, with an error status and the error code when the
 *   call failed.
 *
 * Run: node --import tsx examples/otel.ts   (prints the spans of a three-hop call)
 */
import * as diagnostics from 'node:diagnostics_channel'
import { fileURLToPath } from 'node:url'
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  context,
  createTraceState,
  trace,
  type Context,
  type Span,
  type SpanContext,
  type Tracer,
} from '@opentelemetry/api'
import { PolyCallClient, PolyCallServer, type RequestContext, type TraceContext, type TraceInfo } from '../ts/index.js'

interface ClientStart {
  command: string
  endpoint?: string
  trace: TraceContext | undefined
}
interface ClientEnd {
  trace: TraceContext | undefined
  error?: { code?: string; message?: string } | undefined
}
interface ServerStart {
  command: string
  remoteAddress?: string
  trace: TraceInfo | undefined
  ctx: RequestContext
}
interface ServerEnd {
  ctx: RequestContext
  error?: { code?: string; message?: string } | undefined
}

/** The W3C traceparent of a span context. */
export function traceparentOf(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & TraceFlags.SAMPLED ? 1 : 0).toString(16).padStart(2, '0')}`
}

/** The remote parent a received trace context describes. */
function remoteContext(t: TraceContext | TraceInfo | undefined): Context | undefined {
  if (!t) return undefined
  const m = /^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})/.exec(t.traceparent)
  if (!m) return undefined
  const sc: SpanContext = { traceId: m[1]!, spanId: m[2]!, traceFlags: Number.parseInt(m[3]!, 16), isRemote: true }
  if (t.tracestate) sc.traceState = createTraceState(t.tracestate)
  return trace.setSpanContext(ROOT_CONTEXT, sc)
}

const serverSpans = new WeakMap<RequestContext, Span>()

/**
 * The trace context a handler passes on to its own calls: its SERVER span's, so they become
 * that span's children.
 *
 * @param ctx - the handler's request context
 * @returns `{ traceparent, tracestate? }`, or undefined when the request is not traced
 */
export function traceOf(ctx: RequestContext): TraceContext | undefined {
  const span = serverSpans.get(ctx)
  if (!span) return undefined
  const sc = span.spanContext()
  const state = sc.traceState?.serialize()
  return state ? { traceparent: traceparentOf(sc), tracestate: state } : { traceparent: traceparentOf(sc) }
}

/**
 * Subscribes to polycall's request channels and turns each request into a span.
 *
 * @param tracer - the tracer to start spans with (e.g. `trace.getTracer('polycall')` after an SDK registered)
 * @returns a function that unsubscribes
 */
export function instrumentPolycall(tracer: Tracer): () => void {
  // Client spans are found again by the span id they put into the traceparent they send.
  const clientSpans = new Map<string, Span>()
  const onClientStart = (m: unknown) => {
    const msg = m as ClientStart
    const parent = remoteContext(msg.trace) ?? context.active()
    const [host, port] = (msg.endpoint ?? '').split(/:(?=\d+$)/)
    const span = tracer.startSpan(
      `polycall ${msg.command}`,
      { kind: SpanKind.CLIENT, attributes: { 'rpc.system': 'polycall', 'rpc.method': msg.command, 'server.address': host ?? '', 'server.port': Number(port) || 0 } },
      parent,
    )
    const sc = span.spanContext()
    clientSpans.set(sc.spanId, span)
    const state = sc.traceState?.serialize()
    msg.trace = state ? { traceparent: traceparentOf(sc), tracestate: state } : { traceparent: traceparentOf(sc) }
  }
  const onClientEnd = (m: unknown) => {
    const msg = m as ClientEnd
    const spanId = msg.trace?.traceparent.slice(36, 52)
    const span = spanId === undefined ? undefined : clientSpans.get(spanId)
    if (!span) return
    clientSpans.delete(spanId!)
    if (msg.error) {
      span.setAttribute('polycall.error_code', msg.error.code ?? 'unknown')
      span.setStatus(msg.error.message === undefined ? { code: SpanStatusCode.ERROR } : { code: SpanStatusCode.ERROR, message: msg.error.message })
    }
    span.end()
  }
  const onServerStart = (m: unknown) => {
    const msg = m as ServerStart
    const span = tracer.startSpan(
      `polycall ${msg.command}`,
      { kind: SpanKind.SERVER, attributes: { 'rpc.system': 'polycall', 'rpc.method': msg.command, 'client.address': msg.remoteAddress ?? '' } },
      remoteContext(msg.trace) ?? ROOT_CONTEXT,
    )
    serverSpans.set(msg.ctx, span)
  }
  const onServerEnd = (m: unknown) => {
    const msg = m as ServerEnd
    const span = serverSpans.get(msg.ctx)
    if (!span) return
    serverSpans.delete(msg.ctx)
    if (msg.error) {
      span.setAttribute('polycall.error_code', msg.error.code ?? 'unknown')
      span.setStatus(msg.error.message === undefined ? { code: SpanStatusCode.ERROR } : { code: SpanStatusCode.ERROR, message: msg.error.message })
    }
    span.end()
  }
  diagnostics.subscribe('polycall:client:request:start', onClientStart)
  diagnostics.subscribe('polycall:client:request:end', onClientEnd)
  diagnostics.subscribe('polycall:server:request:start', onServerStart)
  diagnostics.subscribe('polycall:server:request:end', onServerEnd)
  return () => {
    diagnostics.unsubscribe('polycall:client:request:start', onClientStart)
    diagnostics.unsubscribe('polycall:client:request:end', onClientEnd)
    diagnostics.unsubscribe('polycall:server:request:start', onServerStart)
    diagnostics.unsubscribe('polycall:server:request:end', onServerEnd)
  }
}

/** A finished span as {@link RecordingTracer} keeps it. */
export interface RecordedSpan {
  name: string
  kind: SpanKind
  traceId: string
  spanId: string
  parentSpanId: string | undefined
  status: SpanStatusCode
  attributes: Record<string, unknown>
}

/**
 * A tracer that records finished spans in memory: enough to see the spans without an SDK (an
 * application uses its SDK's tracer instead).
 */
export class RecordingTracer implements Tracer {
  readonly spans: RecordedSpan[] = []

  startSpan(name: string, options: { kind?: SpanKind; attributes?: Record<string, unknown> } = {}, ctx: Context = context.active()): Span {
    const parent = trace.getSpanContext(ctx)
    const rand = (bytes: number) => Buffer.from(crypto.getRandomValues(new Uint8Array(bytes))).toString('hex')
    const sc: SpanContext = { traceId: parent?.traceId ?? rand(16), spanId: rand(8), traceFlags: TraceFlags.SAMPLED }
    if (parent?.traceState) sc.traceState = parent.traceState
    const record: RecordedSpan = {
      name,
      kind: options.kind ?? SpanKind.INTERNAL,
      traceId: sc.traceId,
      spanId: sc.spanId,
      parentSpanId: parent?.spanId,
      status: SpanStatusCode.UNSET,
      attributes: { ...options.attributes },
    }
    const spans = this.spans
    let ended = false
    const span: Span = {
      spanContext: () => sc,
      setAttribute: (k, v) => ((record.attributes[k] = v), span),
      setAttributes: (a) => (Object.assign(record.attributes, a), span),
      addEvent: () => span,
      addLink: () => span,
      addLinks: () => span,
      setStatus: (s) => ((record.status = s.code), span),
      updateName: (n) => ((record.name = n), span),
      end: () => {
        if (ended) return
        ended = true
        spans.push(record)
      },
      isRecording: () => !ended,
      recordException: () => {},
    }
    return span
  }

  startActiveSpan<F extends (span: Span) => unknown>(name: string, ...rest: unknown[]): ReturnType<F> {
    const fn = rest[rest.length - 1] as F
    return fn(this.startSpan(name)) as ReturnType<F>
  }
}

/** The demo: client -> front -> back, three spans deep, printed as a tree. */
async function main(): Promise<void> {
  const tracer = new RecordingTracer()
  const stop = instrumentPolycall(tracer)
  const back = new PolyCallServer()
  back.route('price', (ctx) => ({ sku: (ctx.data as { sku: string }).sku, cents: 1250, traceId: ctx.trace?.traceId }))
  const { port: backPort } = await back.listen(0, '127.0.0.1')
  const toBack = new PolyCallClient({ host: '127.0.0.1', port: backPort })
  const front = new PolyCallServer()
  front.route('quote', (ctx) => toBack.request('price', ctx.data, { deadline: ctx.deadline, trace: traceOf(ctx) }))
  const { port: frontPort } = await front.listen(0, '127.0.0.1')
  const client = new PolyCallClient({ host: '127.0.0.1', port: frontPort })
  const quote = (await client.request('quote', { sku: 'a1' })) as { traceId: string }
  await client.request('missing').catch(() => {})
  await Promise.all([client.close(), toBack.close()])
  await Promise.all([front.close(), back.close()])
  stop()
  const byId = new Map(tracer.spans.map((s) => [s.spanId, s]))
  const depth = (s: RecordedSpan): number => (s.parentSpanId && byId.has(s.parentSpanId) ? 1 + depth(byId.get(s.parentSpanId)!) : 0)
  console.log(`the back end saw trace ${quote.traceId}`)
  for (const s of [...tracer.spans].sort((a, b) => (a.traceId === b.traceId ? depth(a) - depth(b) : a.traceId < b.traceId ? -1 : 1))) {
    console.log(
      `${'  '.repeat(depth(s))}${SpanKind[s.kind]} ${s.name} trace=${s.traceId} span=${s.spanId} parent=${s.parentSpanId ?? '-'}${s.status === SpanStatusCode.ERROR ? ` ERROR ${String(s.attributes['polycall.error_code'])}` : ''}`,
    )
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main()
