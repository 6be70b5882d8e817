// Type-level checks of schema routes and contracts: `tsc --noEmit` (npm run lint, CI) fails when
// inference breaks. Nothing here runs.
import { expectTypeOf } from 'expect-type'
import * as v from 'valibot'
import { z } from 'zod'
import { PolyCallClient, PolyCallServer, defineContract, type ErrorCode, type RequestContext } from '../../ts/index.js'

const api = defineContract({
  'users.get': {
    input: z.object({ id: z.string() }),
    output: z.object({ id: z.string(), name: z.string(), age: z.number().optional() }),
  },
  'users.count': { output: v.number() },
  'users.rename': { input: v.object({ id: v.string(), name: v.pipe(v.string(), v.minLength(1)) }) },
  // A transform: callers send a string, handlers receive a number.
  'math.double': { input: z.string().transform((s) => Number(s)), output: z.number() },
})

declare const server: PolyCallServer
declare const client: PolyCallClient

// The server implements every operation, with ctx.data and the return type from the schemas.
server.implement(api, {
  'users.get': (ctx) => {
    expectTypeOf(ctx.data).toEqualTypeOf<{ id: string }>()
    return { id: ctx.data.id, name: 'Ada' }
  },
  'users.count': async () => 3,
  'users.rename': (ctx) => {
    expectTypeOf(ctx.data).toEqualTypeOf<{ id: string; name: string }>()
    return undefined
  },
  'math.double': (ctx) => {
    expectTypeOf(ctx.data).toEqualTypeOf<number>()
    return ctx.data * 2
  },
})

// A missing handler does not compile.
// @ts-expect-error 'math.double' is missing
server.implement(api, { 'users.get': () => ({ id: '1', name: 'x' }), 'users.count': () => 1, 'users.rename': () => undefined })

server.implement(api, {
  // @ts-expect-error the result lacks `name`
  'users.get': () => ({ id: '1' }),
  'users.count': () => 1,
  'users.rename': () => undefined,
  'math.double': () => 2,
})

server.implement(api, {
  'users.get': () => ({ id: '1', name: 'x' }),
  // @ts-expect-error a string is not a number
  'users.count': () => 'three',
  'users.rename': () => undefined,
  'math.double': () => 2,
})

// The client's typed proxy takes the schemas' input types and returns their output types.
const typed = client.typed(api)
expectTypeOf(typed['users.get']).parameter(0).toEqualTypeOf<{ id: string }>()
expectTypeOf(typed['users.get']({ id: '1' })).resolves.toEqualTypeOf<{ id: string; name: string; age?: number | undefined }>()
expectTypeOf(typed['users.count']).returns.resolves.toBeNumber()
expectTypeOf(typed['math.double']).parameter(0).toBeString()
expectTypeOf(typed['math.double']('4')).resolves.toBeNumber()
// @ts-expect-error id must be a string
void typed['users.get']({ id: 42 })
// @ts-expect-error no such operation
void typed['users.delete']

// Schema routes infer the same way without a contract.
server.route('echo.upper', {
  input: z.object({ text: z.string() }),
  output: z.string(),
  handler: (ctx) => {
    expectTypeOf(ctx).toEqualTypeOf<RequestContext<{ text: string }>>()
    return ctx.data.text.toUpperCase()
  },
})
server.route('echo.bad', {
  input: z.object({ text: z.string() }),
  output: z.string(),
  // @ts-expect-error a number is not the output string
  handler: () => 5,
})

// Error codes are literal types.
expectTypeOf<(typeof ErrorCode)['INVALID_INPUT']>().toEqualTypeOf<'ERR_POLYCALL_INVALID_INPUT'>()
