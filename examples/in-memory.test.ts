/**
 * Testing a service without sockets: polycall/testing connects a client to a server in memory,
 * with the real framing and failure behaviour, and injects faults.
 * Run: node --import tsx --test examples/in-memory.test.ts
 */
import { strict as assert } from 'node:assert'
import { afterEach, test } from 'node:test'
import { PolyCallError, PolyCallServer } from '../ts/index.js'
import { connectInMemory } from '../ts/testing/index.js' // from an app: 'polycall/testing'

// The service under test.
function createInventory() {
  const stock = new Map([['widget-a', 42]])
  const server = new PolyCallServer()
  server.route('stock/:item', (ctx) => {
    const quantity = stock.get(ctx.params['item']!)
    if (quantity === undefined) throw new PolyCallError('ERR_APP_UNKNOWN_ITEM', `no item ${ctx.params['item']}`)
    return { item: ctx.params['item'], quantity }
  })
  return server
}

const cleanup: (() => unknown)[] = []
afterEach(async () => {
  for (const fn of cleanup.splice(0)) await fn()
})

test('answers known items and refuses unknown ones with a code', async () => {
  const server = createInventory()
  const { client } = await connectInMemory(server)
  cleanup.push(() => client.close(), () => server.close())
  assert.deepEqual(await client.request('stock/widget-a'), { item: 'widget-a', quantity: 42 })
  await assert.rejects(client.request('stock/nothing'), { code: 'ERR_APP_UNKNOWN_ITEM' })
})

test('a dropped connection fails the call with CONNECTION_LOST', async () => {
  const server = createInventory()
  server.route('slow', () => new Promise((resolve) => setTimeout(resolve, 1000)))
  const { client, link } = await connectInMemory(server)
  cleanup.push(() => client.destroy(), () => server.destroy())
  const call = client.request('slow')
  setImmediate(() => link.drop())
  await assert.rejects(call, { code: 'ERR_POLYCALL_CONNECTION_LOST' })
})

test('a slow network makes the call time out', async () => {
  const server = createInventory()
  const { client, link } = await connectInMemory(server)
  cleanup.push(() => client.destroy(), () => server.destroy())
  link.delay(100)
  await assert.rejects(client.request('stock/widget-a', undefined, { timeout: 20 }), { code: 'ERR_POLYCALL_TIMEOUT' })
})

test('a corrupted byte fails the connection with the decoder code', async () => {
  const server = createInventory()
  const { client, link } = await connectInMemory(server)
  cleanup.push(() => client.destroy(), () => server.destroy())
  link.corrupt({ direction: 'toServer', offset: 0 })
  await assert.rejects(client.request('stock/widget-a'), { code: 'ERR_POLYCALL_VERSION_MISMATCH' })
})
