/**
 * Snapshot signatures: Ed25519 over the canonical JSON of a state-machine snapshot, computed
 * in the Rust core (docs/security.md, "Snapshot signatures"). A snapshot's checksums catch
 * corruption; only a signature catches a deliberate edit.
 * @packageDocumentation
 */
import { ErrorCode, PolyCallError } from '../core/errors.js'
import { fromNative, native } from '../native.js'
import { Identity, toSigningKey } from './identity.js'

/** The `signature` member of a signed snapshot. */
export interface SnapshotSignature {
  /** Always `'Ed25519'`. */
  alg: 'Ed25519'
  /** The signer's signing key, `ed25519:` and 43 base64url characters. */
  key: string
  /** The 64-byte signature, unpadded base64url. */
  value: string
}

/** A snapshot with its signature. */
export type SignedSnapshot<T extends object> = Omit<T, 'signature'> & {
  /** The Ed25519 signature over the rest of the snapshot. */
  signature: SnapshotSignature
}

function textOf(snapshot: unknown, what: string): string {
  if (typeof snapshot === 'string') return snapshot
  if (snapshot === null || typeof snapshot !== 'object') {
    throw new PolyCallError(ErrorCode.INVALID_SNAPSHOT, `${what}: a snapshot is an object or its JSON text`)
  }
  try {
    return JSON.stringify(snapshot)
  } catch (cause) {
    throw new PolyCallError(ErrorCode.INVALID_SNAPSHOT, `${what}: the snapshot cannot be serialised as JSON`, { cause })
  }
}

/**
 * Signs a snapshot with an identity's Ed25519 key. The signature covers the snapshot's
 * canonical JSON (sorted keys, no whitespace) without its `signature` member, so the signed
 * snapshot survives any JSON round trip, and signing a signed snapshot again replaces its
 * signature.
 *
 * @param snapshot - a snapshot object (for example from `sm.snapshot()`)
 * @param identity - the signer
 * @returns a shallow copy of the snapshot with a `signature` member
 * @throws `ERR_POLYCALL_INVALID_SNAPSHOT` when the snapshot is not a JSON object;
 *   `ERR_POLYCALL_CLOSED` for a destroyed identity
 * @example
 * ```ts
 * const signed = signSnapshot(sm.snapshot(), identity)
 * ```
 */
export function signSnapshot<T extends object>(snapshot: T, identity: Identity): SignedSnapshot<T> {
  if (snapshot === null || typeof snapshot !== 'object') {
    throw new PolyCallError(ErrorCode.INVALID_SNAPSHOT, 'signSnapshot: a snapshot is an object')
  }
  const text = textOf(snapshot, 'signSnapshot')
  const binding = Identity.bindingOf(identity)
  try {
    const s = native.snapshotSign(binding, text)
    const { signature: _old, ...rest } = snapshot as T & { signature?: unknown }
    return { ...rest, signature: { alg: 'Ed25519', key: s.key, value: s.value } } as SignedSnapshot<T>
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * Verifies a signed snapshot against the signer's signing key and returns it without its
 * signature, ready for `sm.restore()`.
 *
 * @param snapshot - the signed snapshot, or its JSON text
 * @param key - the signer's signing key: an {@link Identity}, its `signingKey` bytes or the
 *   `ed25519:` text from `identity.toJSON().signingKey`
 * @returns the snapshot object without `signature`
 * @throws `ERR_POLYCALL_BAD_SIGNATURE` when the snapshot is unsigned, signed by another key, or
 *   altered since it was signed; `ERR_POLYCALL_INVALID_SNAPSHOT` when it is not a JSON object;
 *   `ERR_POLYCALL_INVALID_KEY` for a bad key
 * @example
 * ```ts
 * await sm.restore(verifySnapshot(stored, identity))
 * ```
 */
export function verifySnapshot<T extends object = Record<string, unknown>>(
  snapshot: SignedSnapshot<T> | T | string,
  key: Identity | Uint8Array | string,
): Omit<T, 'signature'> {
  const text = textOf(snapshot, 'verifySnapshot')
  const signingKey = toSigningKey(key, 'verifySnapshot(key)')
  try {
    native.snapshotVerify(text, signingKey)
  } catch (e) {
    throw fromNative(e)
  }
  const parsed = (typeof snapshot === 'string' ? JSON.parse(snapshot) : snapshot) as T & { signature?: unknown }
  const { signature: _signature, ...rest } = parsed
  return rest
}
