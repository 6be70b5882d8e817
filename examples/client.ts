/**
 * A polycall client: connect, authenticate, call, handle errors, cancel, close.
 * Run: node --import tsx examples/client.ts   (with examples/server.ts running)
 */
import { PolyCallClient, isPolyCallError } from '../ts/index.js'

await using client = new PolyCallClient({ host: '127.0.0.1', port: Number(process.env['PORT'] ?? 7070), timeout: 3000 })
await client.connect()
await client.authenticate({ username: 'demo', password: 'demo' })

console.log(await client.request('/users/42'))
console.log(await client.request('PUT /users/7', { name: 'Grace' }))

try {
  await client.request('/users/999')
} catch (err) {
  if (isPolyCallError(err)) console.log(`expected failure: ${err.code}: ${err.message}`)
}

// Give up on a slow call after 100 ms; the server's handler sees its signal abort.
try {
  await client.request('/slow', undefined, { signal: AbortSignal.timeout(100) })
} catch (err) {
  if (isPolyCallError(err)) console.log(`cancelled: ${err.code}`)
}

console.log(client.stats().requests)
