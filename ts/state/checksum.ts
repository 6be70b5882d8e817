/**
 * The reference bindings' state checksums and endpoint names (docs/protocol.md §9.1, §9.2),
 * computed by the Rust core so they agree with the state machines byte for byte.
 */
import { invalidArgument } from '../core/errors.js'
import { fromNative, native } from '../native.js'
import type { NodeStateJson } from './machine.js'

/** Options of {@link cStateChecksum}. */
export interface CStateChecksumOptions {
  /** The state's final flag. @defaultValue false */
  final?: boolean | undefined
  /** The state's id (its index in the C machine). @defaultValue 0 */
  id?: number | undefined
}

/**
 * The C library's state integrity checksum for the one reproducible layout: LP64, little-endian,
 * enter and exit actions both NULL (docs/protocol.md §9.1). It covers the name cut to 31 bytes and NUL
 * padded to 32, two NULL pointers, the final flag, three padding bytes and the id (u32 LE), as
 * `acc = rotl(acc, 8) + byte`. States with actions embed pointer bytes and cannot be reproduced.
 *
 * @param name - the state name (UTF-8; bytes past 31 are cut, as C does)
 * @param options - `final` and `id`
 * @returns the u32 checksum
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a non-string name or an id outside u32
 * @example
 * ```ts
 * cStateChecksum('INIT') // 0x494e4954
 * cStateChecksum('ERROR', { final: true, id: 4 }) // 0x9c52524f
 * ```
 */
export function cStateChecksum(name: string, options: CStateChecksumOptions = {}): number {
  if (typeof name !== 'string') throw invalidArgument('cStateChecksum(name): name must be a string')
  const { final = false, id = 0 } = options
  if (typeof final !== 'boolean') throw invalidArgument('final must be a boolean')
  if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw invalidArgument(`id ${String(id)} is not a u32`)
  try {
    return native.cStateChecksum(name, final, id)
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * node-polycall's state checksum: Java's `String.hashCode` over the UTF-16 code units of the
 * state's compact JSON, read as unsigned. Pass the JSON text itself, or the state object, which
 * is serialised with `JSON.stringify` (so its key order matters, as in node-polycall).
 *
 * @param state - the state JSON text, or a {@link NodeStateJson} object
 * @returns the u32 checksum
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT` when `state` has no JSON form
 * @example
 * ```ts
 * nodeStateChecksum('{}') // 3938
 * nodeStateChecksum(sm.state('READY').toJSON()) === sm.state('READY').checksum // true
 * ```
 */
export function nodeStateChecksum(state: NodeStateJson | string): number {
  const text = typeof state === 'string' ? state : (JSON.stringify(state) as string | undefined)
  if (typeof text !== 'string') throw invalidArgument('nodeStateChecksum(state): state has no JSON form')
  try {
    return native.nodeStateChecksum(text)
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * node-polycall's default endpoint of a state name: `"/" + name.trim().toLowerCase()` with every
 * whitespace run replaced by `-`.
 *
 * @param name - a state name
 * @returns the endpoint
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a non-string name
 * @example
 * ```ts
 * stateEndpoint('Ready State') // '/ready-state'
 * ```
 */
export function stateEndpoint(name: string): string {
  if (typeof name !== 'string') throw invalidArgument('stateEndpoint(name): name must be a string')
  return native.stateEndpoint(name)
}
