/**
 * Validation with any Standard Schema validator (zod, valibot, arktype, ...): polycall depends
 * only on the `@standard-schema/spec` types, never on one validator.
 * @packageDocumentation
 */
import type { StandardSchemaV1 } from '@standard-schema/spec'
import { ErrorCode, PolyCallError } from './errors.js'

export type { StandardSchemaV1 }

/** The type a schema accepts. */
export type SchemaInput<S> = S extends StandardSchemaV1 ? StandardSchemaV1.InferInput<S> : unknown
/** The type a schema produces. */
export type SchemaOutput<S> = S extends StandardSchemaV1 ? StandardSchemaV1.InferOutput<S> : unknown

/** One validation problem: where (a path of keys and indexes) and what. */
export interface ValidationIssue {
  /** Keys and indexes from the root of the data to the bad value; empty for the root. */
  path: (string | number)[]
  /** The validator's message. */
  message: string
}

/** A {@link PolyCallError} raised by validation, with every issue the validator reported. */
export interface ValidationError extends PolyCallError {
  /** Every problem the validator reported. */
  issues: ValidationIssue[]
}

/** True when `value` implements the Standard Schema interface. */
export function isStandardSchema(value: unknown): value is StandardSchemaV1 {
  const std = (value as { '~standard'?: { version?: unknown; validate?: unknown } } | null)?.['~standard']
  return typeof std === 'object' && std !== null && std.version === 1 && typeof std.validate === 'function'
}

function pathOf(issue: StandardSchemaV1.Issue): (string | number)[] {
  return (issue.path ?? []).map((segment) => {
    const key = typeof segment === 'object' && segment !== null ? segment.key : segment
    return typeof key === 'number' ? key : String(key)
  })
}

/** @internal Builds the coded error for failed validation. */
export function validationError(code: string, what: string, issues: readonly ValidationIssue[]): ValidationError {
  const summary = issues
    .slice(0, 3)
    .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ')
  const more = issues.length > 3 ? `; and ${issues.length - 3} more` : ''
  const err = new PolyCallError(code, `${what} is invalid: ${summary}${more}`) as ValidationError
  err.issues = [...issues]
  return err
}

/**
 * Validates `value` with a Standard Schema validator.
 *
 * @param schema - any Standard Schema v1 validator
 * @param value - the value to check
 * @param code - the error code on failure @defaultValue `ERR_POLYCALL_INVALID_INPUT`
 * @param what - what is being validated, for the message
 * @returns the validator's output (it may transform the value)
 * @throws a {@link ValidationError} with `code` and `issues`
 * @example
 * ```ts
 * const user = await validate(z.object({ id: z.string() }), data)
 * ```
 */
export async function validate<S extends StandardSchemaV1>(
  schema: S,
  value: unknown,
  code: string = ErrorCode.INVALID_INPUT,
  what = 'input',
): Promise<StandardSchemaV1.InferOutput<S>> {
  let result = schema['~standard'].validate(value)
  if (result instanceof Promise) result = await result
  if (result.issues) throw validationError(code, what, result.issues.map((i) => ({ path: pathOf(i), message: i.message })))
  return result.value
}
