// Route registration: duplicates are refused with a polycall code, and a refused call registers
// nothing.
import test from 'ava'
import { ErrorCode, PolyCallServer, Router } from '../ts/index.js'

const ok = () => 'ok'

test('the same method and path twice: ERR_POLYCALL_DUPLICATE_ROUTE naming the route', (t) => {
  const router = new Router()
  router.route('/users/:id', { GET: ok })
  const err = t.throws(() => router.route('/users/:id', { GET: ok }), { code: ErrorCode.DUPLICATE_ROUTE })
  t.regex(err!.message, /GET \/users\/:id is registered already/)
  t.notRegex(err!.message, /declared|constraints/, "find-my-way's wording stays out")
})

test('a route for every method overlaps any method on its path, either way round', (t) => {
  const router = new Router()
  router.route('status', ok)
  t.throws(() => router.route('status', { POST: ok }), { code: ErrorCode.DUPLICATE_ROUTE, message: /POST \/status overlaps every method of \/status/ })
  router.route('/orders', { GET: ok })
  t.throws(() => router.route('/orders', ok), { code: ErrorCode.DUPLICATE_ROUTE, message: /every method of \/orders overlaps GET \/orders/ })
  // Other methods of the same path are fine.
  router.route('/orders', { POST: ok, DELETE: ok })
  t.deepEqual(
    router.routes().map((r) => `${r.method} ${r.path}`),
    ['* /status', 'GET /orders', 'POST /orders', 'DELETE /orders'],
  )
})

test('parameter names and a trailing slash do not make another route', (t) => {
  const router = new Router()
  router.route('/users/:id', { GET: ok })
  t.throws(() => router.route('/users/:name', { GET: ok }), { code: ErrorCode.DUPLICATE_ROUTE, message: /GET \/users\/:name overlaps GET \/users\/:id/ })
  t.throws(() => router.route('/users/:id/', { GET: ok }), { code: ErrorCode.DUPLICATE_ROUTE })
  router.route('/users/:id/posts', { GET: ok })
  t.is(router.routes().length, 2)
})

test('a refused registration registers none of its methods', (t) => {
  const router = new Router()
  router.route('/a', { PUT: ok })
  t.throws(() => router.route('/a', { GET: ok, POST: ok, PUT: ok }), { code: ErrorCode.DUPLICATE_ROUTE })
  t.throws(() => router.route('/b', { GET: ok, get: ok }), { code: ErrorCode.DUPLICATE_ROUTE })
  t.throws(() => router.route('/c', { GET: ok, FETCH: ok }), { code: ErrorCode.INVALID_ARGUMENT })
  t.deepEqual(router.routes().map((r) => `${r.method} ${r.path}`), ['PUT /a'])
  t.is(router.find('GET /a'), undefined)
  t.is(router.find('GET /b'), undefined)
  t.is(router.find('GET /c'), undefined)
})

test('server.route and server.implement refuse duplicates the same way', (t) => {
  const server = new PolyCallServer()
  t.teardown(() => server.destroy())
  server.route('users.get', ok)
  t.throws(() => server.route('users.get', { handler: ok }), { code: ErrorCode.DUPLICATE_ROUTE })
})
