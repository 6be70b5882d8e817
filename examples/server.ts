/**
 * A polycall server with authentication, middleware and routes.
 * Run: node --import tsx examples/server.ts   (then examples/client.ts in another terminal)
 */
import { PolyCallError, PolyCallServer } from '../ts/index.js'

const users = new Map([['42', { id: '42', name: 'Ada' }]])

const server = new PolyCallServer({
  requireAuth: true,
  authenticate: (credentials) => {
    const { username, password } = (credentials ?? {}) as { username?: string; password?: string }
    if (username === 'demo' && password === 'demo') return { user: username }
    throw new PolyCallError('ERR_POLYCALL_UNAUTHENTICATED', 'unknown user or wrong password')
  },
  maxInFlight: 128,
})

// Log every request with its duration and outcome.
server.use(async (ctx, next) => {
  const started = performance.now()
  try {
    await next()
    console.log(`${ctx.command} ok ${(performance.now() - started).toFixed(1)} ms`)
  } catch (err) {
    console.log(`${ctx.command} failed: ${(err as PolyCallError).code}`)
    throw err
  }
})

server.route('/users/:id', {
  GET: (ctx) => {
    const user = users.get(ctx.params['id']!)
    if (!user) throw new PolyCallError('ERR_APP_NOT_FOUND', `no user ${ctx.params['id']}`)
    return user
  },
  PUT: (ctx) => {
    const user = { id: ctx.params['id']!, ...(ctx.data as { name: string }) }
    users.set(user.id, user)
    return user
  },
})

server.route('/slow', async (ctx) => {
  // Honour cancellation and the caller's deadline.
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, 2000)
    ctx.signal.addEventListener('abort', () => (clearTimeout(timer), reject(ctx.signal.reason)))
  })
  return 'done'
})

const { port } = await server.listen(Number(process.env['PORT'] ?? 7070), '127.0.0.1')
console.log(`listening on 127.0.0.1:${port}`)
process.once('SIGINT', () => void server.close({ timeout: 5000 }))
