/**
 * The PCR1 demo service behind `polycall serve --protocol pcr1`: the C runtime's built-in
 * operations (docs/protocol.md §P4) on a polycall server.
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { PolyCallError } from '../core/errors.js'
import { Pcr1Code } from '../pcr1/messages.js'
import type { ServerOptions } from '../server/options.js'
import { PolyCallServer } from '../server/server.js'

/** The runtime's inventory fixture. */
export const INVENTORY: Readonly<Record<string, number>> = Object.freeze({ 'widget-a': 42, 'widget-b': 7, 'gadget-c': 0 })

const invalid = (message: string) => new PolyCallError(Pcr1Code.INPUT_INVALID, message)

/** Builds (does not start) a PCR1 server with `inventory.get`, `debug.echo` and `debug.sleep`. */
export function createPcr1DemoServer(options: ServerOptions = {}): PolyCallServer {
  const server = new PolyCallServer({ ...options, protocol: 'pcr1' })
  server.route(
    'inventory.get',
    (ctx) => {
      const itemId = (ctx.data as { item_id?: unknown } | null)?.item_id
      if (typeof itemId !== 'string') throw invalid('inventory.get needs {"item_id": string}')
      const quantity = INVENTORY[itemId]
      if (quantity === undefined) throw new PolyCallError('item.unknown', `no item ${itemId}`)
      return { item_id: itemId, quantity, in_stock: quantity > 0 }
    },
    {
      summary: 'stock level of one item',
      idempotent: true,
      inputHint: '{"item_id":"string"}',
      outputHint: '{"item_id":"string","quantity":"integer","in_stock":"boolean"}',
    },
  )
  server.route('debug.echo', (ctx) => ({ echo: ctx.data ?? null }), {
    summary: 'returns its input',
    idempotent: true,
    inputHint: '"any"',
    outputHint: '{"echo":"any"}',
  })
  server.route(
    'debug.sleep',
    async (ctx) => {
      const ms = (ctx.data as { ms?: unknown } | null)?.ms
      if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 0) throw invalid('debug.sleep needs {"ms": integer >= 0}')
      if (ms > ctx.deadline - Date.now()) throw new PolyCallError(Pcr1Code.DEADLINE_EXCEEDED, `sleeping ${ms} ms would pass the deadline`)
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, ms)
        ctx.signal.addEventListener('abort', () => (clearTimeout(timer), reject(ctx.signal.reason)), { once: true })
      })
      return { slept_ms: ms }
    },
    { summary: 'sleeps within the deadline', idempotent: true, inputHint: '{"ms":"integer"}', outputHint: '{"slept_ms":"integer"}' },
  )
  return server
}
