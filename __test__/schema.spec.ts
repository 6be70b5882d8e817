// Schema routes and typed contracts with real validators (zod and valibot), over loopback.
import test from 'ava'
import * as diagnostics from 'node:diagnostics_channel'
import * as v from 'valibot'
import { z } from 'zod'
import { ErrorCode, PolyCallClient, PolyCallServer, defineContract, validate, type PolyCallError, type ValidationError } from '../ts/index.js'
import { newClient, startServer } from './helpers/net.js'

test('schema route: valid input reaches the handler parsed (transforms applied); invalid input never runs it', async (t) => {
  let runs = 0
  const { port } = await startServer(t, {}, (s) =>
    s.route('users.create', {
      input: z.object({ name: z.string().min(1), age: z.coerce.number().int().min(0) }),
      output: z.object({ id: z.string(), name: z.string(), age: z.number() }),
      handler: (ctx) => {
        runs++
        return { id: 'u1', ...ctx.data }
      },
    }),
  )
  const client = newClient(t, port)
  t.deepEqual(await client.request('users.create', { name: 'Ada', age: '36' }), { id: 'u1', name: 'Ada', age: 36 })
  const err = (await t.throwsAsync(client.request('users.create', { name: '', age: -1 }))) as ValidationError & { remote: boolean }
  t.is(err.code, ErrorCode.INVALID_INPUT)
  t.true(err.remote)
  t.deepEqual(
    err.issues.map((i) => i.path.join('.')).sort(),
    ['age', 'name'],
  )
  t.true(err.issues.every((i) => typeof i.message === 'string' && i.message.length > 0))
  t.is(runs, 1)
})

test('schema route: a result that fails the output schema is a server bug: INTERNAL to the caller, reported on the server', async (t) => {
  const reported: unknown[] = []
  const published: unknown[] = []
  const onPublish = (m: unknown) => published.push(m)
  diagnostics.subscribe('polycall:server:error', onPublish)
  t.teardown(() => diagnostics.unsubscribe('polycall:server:error', onPublish))
  const { port } = await startServer(t, { onError: (e) => reported.push(e) }, (s) =>
    s.route('broken', { output: z.object({ ok: z.literal(true) }), handler: () => ({ ok: 'yes' }) as never }),
  )
  const client = newClient(t, port)
  const err = (await t.throwsAsync(client.request('broken'))) as PolyCallError
  t.is(err.code, ErrorCode.INTERNAL)
  t.false(err.message.includes('ok'))
  t.is(reported.length, 1)
  t.true((reported[0] as ValidationError).issues.length > 0)
  t.true(published.length >= 1)
})

test('any Standard Schema validator works: valibot routes, and the validate() helper', async (t) => {
  const { port } = await startServer(t, {}, (s) =>
    s.route('tags.add', {
      input: v.object({ tags: v.array(v.pipe(v.string(), v.maxLength(5))) }),
      handler: (ctx) => ctx.data.tags.length,
    }),
  )
  const client = newClient(t, port)
  t.is(await client.request('tags.add', { tags: ['a', 'bb'] }), 2)
  const err = (await t.throwsAsync(client.request('tags.add', { tags: ['toolong'] }))) as ValidationError
  t.is(err.code, ErrorCode.INVALID_INPUT)
  t.deepEqual(err.issues[0]!.path, ['tags', 0])
  t.is(await validate(z.number(), 4), 4)
  const local = (await t.throwsAsync(validate(z.number(), 'x'))) as ValidationError
  t.is(local.code, ErrorCode.INVALID_INPUT)
  t.deepEqual(local.issues[0]!.path, [])
})

test('invalid input on the PCR1 wire is input.invalid', async (t) => {
  const server = new PolyCallServer({ protocol: 'pcr1' })
  server.route('users.get', { input: z.object({ id: z.string() }), handler: (ctx) => ({ id: ctx.data.id }) })
  const { port } = await server.listen(0)
  t.teardown(() => server.destroy())
  const client = new PolyCallClient({ protocol: 'pcr1', port, reconnect: false })
  t.teardown(() => client.destroy())
  t.deepEqual(await client.request('users.get', { id: 'a' }), { id: 'a' })
  const err = (await t.throwsAsync(client.request('users.get', { id: 1 }))) as PolyCallError
  t.is(err.code, 'input.invalid')
  const { operations } = (await client.control('describe')) as { operations: { input: string }[] }
  t.is(operations[0]!.input, '{"validator":"zod"}')
})

test('contracts: server.implement and client.typed round trip; inputs checked locally, outputs parsed', async (t) => {
  const api = defineContract({
    'users.get': { input: z.object({ id: z.string() }), output: z.object({ id: z.string(), createdAt: z.coerce.date() }), idempotent: true },
    'users.count': { output: z.number() },
  })
  let calls = 0
  const { port, server } = await startServer(t, {}, (s) =>
    s.implement(api, {
      'users.get': (ctx) => {
        calls++
        return { id: ctx.data.id, createdAt: '2026-01-02T03:04:05.000Z' }
      },
      'users.count': () => 7,
    }),
  )
  const client = newClient(t, port)
  const typed = client.typed(api)
  const user = await typed['users.get']({ id: '42' })
  t.is(user.id, '42')
  t.true(user.createdAt instanceof Date, 'the output schema parsed the reply')
  t.is(user.createdAt.toISOString(), '2026-01-02T03:04:05.000Z')
  t.is(await typed['users.count'](undefined), 7)
  const bad = (await t.throwsAsync(typed['users.get']({ id: 5 as unknown as string }))) as ValidationError
  t.is(bad.code, ErrorCode.INVALID_INPUT)
  t.is(calls, 1, 'an invalid input is refused before it is sent')
  t.true(server.router.routes().find((r) => r.path === '/users.get')!.idempotent)
})

test('contracts: bad definitions and missing handlers are refused at startup', (t) => {
  t.throws(() => defineContract({ x: { input: { parse: () => 1 } as never } }), { code: ErrorCode.INVALID_ARGUMENT })
  const api = defineContract({ a: {}, b: {} })
  const server = new PolyCallServer()
  t.throws(() => server.implement(api, { a: () => 1 } as never), { code: ErrorCode.INVALID_ARGUMENT })
  t.throws(() => server.route('x', { input: {} as never, handler: () => 1 }), { code: ErrorCode.INVALID_ARGUMENT })
})

test('legacy JSON clients get the validation failure as ERROR text', async (t) => {
  const { port } = await startServer(t, {}, (s) => s.route('n', { input: z.number(), handler: (ctx) => ctx.data + 1 }))
  const client = newClient(t, port, { legacy: true })
  t.is(await client.request('n', 1), 2)
  const err = (await t.throwsAsync(client.request('n', 'x'))) as PolyCallError
  t.is(err.code, ErrorCode.INVALID_INPUT)
  t.regex(err.message, /input is invalid/)
})
