/**
 * Typed contracts: one object, shared by client and server, naming each operation with its
 * input and output schemas (any Standard Schema validator). The server implements it
 * (`server.implement(api, handlers)`, checked by the compiler: a missing or mistyped handler does
 * not compile) and the client calls it through a typed proxy (`client.typed(api)`).
 * @packageDocumentation
 */
import { invalidArgument } from './errors.js'
import { isStandardSchema, type SchemaInput, type SchemaOutput, type StandardSchemaV1 } from './schema.js'

/** One operation of a contract. */
export interface Operation {
  /** Validates the request data (the handler receives the validator's output). */
  input?: StandardSchemaV1 | undefined
  /** Validates the handler's result before it is sent. */
  output?: StandardSchemaV1 | undefined
  /** One line describing the operation. */
  summary?: string | undefined
  /** Safe to repeat: clients may retry it after a lost connection. */
  idempotent?: boolean | undefined
}

/** Operations by name: a command (`'/users/:id'`, `'users.get'`) per key. */
export type Contract = Record<string, Operation>

/** What a caller of `Op` passes. */
export type CallInput<Op extends Operation> = SchemaInput<Op['input']>
/** What a caller of `Op` gets back. */
export type CallOutput<Op extends Operation> = SchemaOutput<Op['output']>

/**
 * Declares a contract. At runtime it only checks that every schema is a Standard Schema and
 * returns the object unchanged; its value is in the types it carries.
 *
 * @param contract - operations by command name
 * @returns the same object, typed
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT` when a schema is not a Standard Schema validator
 * @example
 * ```ts
 * const api = defineContract({
 *   'users.get': { input: z.object({ id: z.string() }), output: z.object({ id: z.string(), name: z.string() }) },
 * })
 * server.implement(api, { 'users.get': async (ctx) => db.users.get(ctx.data.id) })
 * const user = await client.typed(api)['users.get']({ id: '42' })
 * ```
 */
export function defineContract<const C extends Contract>(contract: C): C {
  if (contract === null || typeof contract !== 'object') throw invalidArgument('a contract is an object of operations')
  for (const [name, op] of Object.entries(contract)) {
    if (op === null || typeof op !== 'object') throw invalidArgument(`operation ${name} must be an object`)
    for (const key of ['input', 'output'] as const) {
      if (op[key] !== undefined && !isStandardSchema(op[key])) throw invalidArgument(`${name}.${key} is not a Standard Schema validator`)
    }
  }
  return contract
}
