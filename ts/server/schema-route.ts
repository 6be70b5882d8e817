/**
 * Routes with input and output schemas: data is validated before the handler runs
 * (`ERR_POLYCALL_INVALID_INPUT` with the issues, `input.invalid` on the PCR1 wire), and the
 * handler's result after it (a mismatch is a server bug: reported, and sent as
 * `ERR_POLYCALL_INTERNAL`).
 * @packageDocumentation
 */
import { ErrorCode, PolyCallError } from '../core/errors.js'
import {
  isStandardSchema,
  validate,
  type SchemaInput,
  type SchemaOutput,
  type StandardSchemaV1,
  type ValidationError,
} from '../core/schema.js'
import type { Handler, RouteOptions } from './router.js'
import type { Contract, Operation } from '../core/contract.js'
import type { RequestContext } from './context.js'

/** What a handler of `Op` receives as `ctx.data`. */
export type HandlerInput<Op extends Operation> = SchemaOutput<Op['input']>
/** What a handler of `Op` must return. */
export type HandlerOutput<Op extends Operation> = SchemaInput<Op['output']>

/** The handlers a server must provide to implement contract `C`. */
export type ContractHandlers<C extends Contract> = {
  [K in keyof C & string]: (ctx: RequestContext<HandlerInput<C[K]>>) => HandlerOutput<C[K]> | Promise<HandlerOutput<C[K]>>
}

/** A route with schemas: `server.route(path, { input, output, handler })`. */
export interface SchemaRoute<
  I extends StandardSchemaV1 | undefined = StandardSchemaV1 | undefined,
  O extends StandardSchemaV1 | undefined = StandardSchemaV1 | undefined,
> extends RouteOptions {
  /** Validates `ctx.data`; the handler receives the validator's output. */
  input?: I
  /** Validates the handler's result. */
  output?: O
  /** The handler, typed from the schemas. */
  handler: (ctx: RequestContext<SchemaOutput<I>>) => SchemaInput<O> | Promise<SchemaInput<O>>
}

/** @internal */
export function isSchemaRoute(value: unknown): value is SchemaRoute {
  return value !== null && typeof value === 'object' && typeof (value as { handler?: unknown }).handler === 'function'
}

/** @internal Builds the validating handler of a schema route. */
export function schemaHandler(route: SchemaRoute, report: (error: unknown, ctx: RequestContext) => void): Handler {
  const { input, output, handler } = route
  for (const [name, schema] of [
    ['input', input],
    ['output', output],
  ] as const) {
    if (schema !== undefined && !isStandardSchema(schema)) {
      throw new PolyCallError(ErrorCode.INVALID_ARGUMENT, `route ${name} is not a Standard Schema validator`)
    }
  }
  return async (ctx) => {
    if (input) {
      try {
        ;(ctx as { data: unknown }).data = await validate(input, ctx.data, ErrorCode.INVALID_INPUT, 'input')
      } catch (e) {
        const err = e as ValidationError & { data?: unknown }
        // The issues travel to polycall peers in the ERROR payload's data.
        if (err.issues) err.data = { issues: err.issues }
        throw err
      }
    }
    const result = await handler(ctx as RequestContext<never>)
    if (!output) return result
    try {
      return await validate(output, result, ErrorCode.INTERNAL, 'the handler result')
    } catch (e) {
      report(e, ctx)
      throw new PolyCallError(ErrorCode.INTERNAL, 'internal error')
    }
  }
}
