/**
 * Long-term identities: the X25519 key a peer is known by in secure sessions and the Ed25519 key
 * that signs snapshots, both derived in the Rust core from one random seed that never enters
 * JavaScript (docs/security.md, "Identities and keys").
 * @packageDocumentation
 */
import { inspect } from 'node:util'
import { fileURLToPath } from 'node:url'
import { ErrorCode, PolyCallError, invalidArgument } from '../core/errors.js'
import { fromNative, native } from '../native.js'

type BindingIdentity = InstanceType<typeof native.BindingIdentity>

/** Options of {@link Identity.save}. */
export interface IdentitySaveOptions {
  /**
   * Replace an existing file (atomically: the new file is written beside it, then renamed over
   * it). Without it, saving over an existing file fails with `ERR_POLYCALL_IDENTITY_FILE`.
   * @defaultValue false
   */
  overwrite?: boolean | undefined
}

/** A file path as a string or a `file:` URL. */
function pathOf(path: unknown, what: string): string {
  if (path instanceof URL) return fileURLToPath(path)
  if (typeof path !== 'string' || path.length === 0) throw invalidArgument(`${what}: path must be a non-empty string or a file: URL`)
  return path
}

function call<T>(f: () => T): T {
  try {
    return f()
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * A long-term identity for secure sessions and snapshot signatures.
 *
 * The seed and the secret keys live in native memory only: no property, method, `toJSON()`,
 * `util.inspect` or `toString()` exposes them. {@link Identity.generate} and
 * {@link Identity.load} never put secret bytes into JavaScript; {@link Identity.fromBytes}
 * takes a seed the caller already holds (wiping that buffer is then the caller's business).
 * {@link Identity.destroy} (also `using` / `await using`) zeroes the secrets at once; the
 * garbage collector does the same for identities that are simply dropped.
 *
 * @example
 * ```ts
 * const id = Identity.generate()
 * id.save('server.key') // mode 0600
 * console.log(id.toString()) // x25519:... — give this to clients as `serverKey`
 * using again = Identity.load('server.key')
 * ```
 */
export class Identity {
  #binding: BindingIdentity | undefined
  readonly #publicKey: Buffer
  readonly #signingKey: Buffer

  private constructor(binding: BindingIdentity) {
    this.#binding = binding
    this.#publicKey = binding.publicKey()
    this.#signingKey = binding.signingKey()
  }

  /**
   * Creates a new identity from the operating system's random generator.
   *
   * @returns the identity
   * @throws `ERR_POLYCALL_ENTROPY_UNAVAILABLE` when the OS generator fails
   * @example
   * ```ts
   * const id = Identity.generate()
   * ```
   */
  static generate(): Identity {
    return new Identity(call(() => native.BindingIdentity.generate()))
  }

  /**
   * The identity of a 32-byte seed: the same seed always gives the same identity. The seed is
   * copied into native memory; the caller's buffer stays the caller's to wipe.
   *
   * @param seed - 32 secret bytes
   * @returns the identity
   * @throws `ERR_POLYCALL_INVALID_KEY` when `seed` is not 32 bytes, `ERR_POLYCALL_INVALID_ARGUMENT`
   *   when it is not a Uint8Array
   * @example
   * ```ts
   * const id = Identity.fromBytes(crypto.getRandomValues(new Uint8Array(32)))
   * ```
   */
  static fromBytes(seed: Uint8Array): Identity {
    if (!(seed instanceof Uint8Array)) throw invalidArgument('Identity.fromBytes(seed): seed must be a Uint8Array')
    return new Identity(call(() => native.BindingIdentity.fromSeed(seed)))
  }

  /**
   * Reads an identity file written by {@link Identity.save} (the file's text is read and
   * parsed in native code).
   *
   * @param path - the file
   * @returns the identity
   * @throws `ERR_POLYCALL_IDENTITY_FILE` when the file cannot be read, is over 4 KiB, has another
   *   format or version, or its public keys do not match its seed
   * @example
   * ```ts
   * const id = Identity.load(new URL('./server.key', import.meta.url))
   * ```
   */
  static load(path: string | URL): Identity {
    const file = pathOf(path, 'Identity.load')
    return new Identity(call(() => native.BindingIdentity.load(file)))
  }

  /**
   * Writes the identity file: UTF-8 text with a version line, the two public keys and the
   * seed (docs/security.md), created with mode 0600 on Unix.
   *
   * @param path - the file
   * @param options - `overwrite` to replace an existing file
   * @throws `ERR_POLYCALL_IDENTITY_FILE` when the file exists (without `overwrite`) or cannot be
   *   written; `ERR_POLYCALL_CLOSED` after {@link Identity.destroy}
   * @example
   * ```ts
   * id.save('/etc/myapp/identity', { overwrite: true })
   * ```
   */
  save(path: string | URL, options: IdentitySaveOptions = {}): void {
    const file = pathOf(path, 'identity.save')
    const binding = this.#live()
    call(() => binding.save(file, options.overwrite === true))
  }

  /** The X25519 public key (32 bytes): the identity's name in secure sessions. A copy. */
  get publicKey(): Buffer {
    return Buffer.from(this.#publicKey)
  }

  /** The Ed25519 public key (32 bytes) that verifies this identity's snapshot signatures. A copy. */
  get signingKey(): Buffer {
    return Buffer.from(this.#signingKey)
  }

  /** Whether {@link Identity.destroy} was called. */
  get destroyed(): boolean {
    return this.#binding === undefined
  }

  /**
   * The printable public key, `x25519:` and 43 base64url characters; {@link parsePublicKey}
   * reads it back. Stays available after {@link Identity.destroy}.
   *
   * @returns the public key text
   */
  toString(): string {
    return call(() => native.formatPublicKey(this.#publicKey))
  }

  /**
   * The public halves only, as text: `{ publicKey: 'x25519:…', signingKey: 'ed25519:…' }`.
   *
   * @returns the public keys
   */
  toJSON(): {
    /** The X25519 public key as `x25519:` text. */
    publicKey: string
    /** The Ed25519 public key as `ed25519:` text. */
    signingKey: string
  } {
    return { publicKey: this.toString(), signingKey: call(() => native.formatSigningKey(this.#signingKey)) }
  }

  /** @internal What `util.inspect` and `console.log` show. */
  [inspect.custom](): string {
    return `Identity { ${this.toString()}${this.destroyed ? ', destroyed' : ''} }`
  }

  /** Zeroes and releases the secrets now. Idempotent; later secret uses throw `ERR_POLYCALL_CLOSED`. */
  destroy(): void {
    const binding = this.#binding
    this.#binding = undefined
    binding?.destroy()
  }

  /** Same as {@link Identity.destroy}, for `using id = ...`. */
  [Symbol.dispose](): void {
    this.destroy()
  }

  /** Same as {@link Identity.destroy}, for `await using id = ...`. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.destroy()
  }

  #live(): BindingIdentity {
    if (this.#binding === undefined) throw new PolyCallError(ErrorCode.CLOSED, 'the identity was destroyed')
    return this.#binding
  }

  /**
   * @internal The native handle, for the secure channel and snapshot signatures.
   * @throws `ERR_POLYCALL_CLOSED` after {@link Identity.destroy}
   */
  static bindingOf(identity: Identity): BindingIdentity {
    if (!(identity instanceof Identity)) throw invalidArgument('expected an Identity')
    return identity.#live()
  }
}

/**
 * Reads a printed public key (`x25519:` and 43 base64url characters, as {@link Identity.toString}
 * writes it).
 *
 * @param text - the key text
 * @returns the 32-byte X25519 public key
 * @throws `ERR_POLYCALL_INVALID_KEY` for another prefix, bad base64url, a wrong length or a
 *   low-order point; `ERR_POLYCALL_INVALID_ARGUMENT` when `text` is not a string
 * @example
 * ```ts
 * const serverKey = parsePublicKey(process.env.SERVER_KEY!)
 * ```
 */
export function parsePublicKey(text: string): Buffer {
  if (typeof text !== 'string') throw invalidArgument('parsePublicKey(text): text must be a string')
  return call(() => native.parsePublicKey(text))
}

/**
 * @internal A public key given as bytes, text or an identity, checked.
 * @throws `ERR_POLYCALL_INVALID_KEY`, `ERR_POLYCALL_INVALID_ARGUMENT`
 */
export function toPublicKey(key: Uint8Array | string | Identity, what: string): Buffer {
  if (key instanceof Identity) return key.publicKey
  if (typeof key === 'string') return parsePublicKey(key)
  if (!(key instanceof Uint8Array)) throw invalidArgument(`${what} must be a 32-byte Uint8Array, an x25519: text or an Identity`)
  // Only the length here: a low-order key fails the handshake's first Diffie-Hellman, and
  // checkPublicKey() costs a scalar multiplication this path need not pay on every connection.
  if (key.length !== 32) throw new PolyCallError(ErrorCode.INVALID_KEY, `${what} is ${key.length} bytes, not 32`)
  return Buffer.from(key)
}

/** @internal The `x25519:` text of 32 key bytes. */
export function publicKeyText(key: Uint8Array): string {
  return call(() => native.formatPublicKey(key))
}

/**
 * @internal Checks 32 bytes as an X25519 public key, including that it is not a low-order point
 * (for configuration time).
 * @throws `ERR_POLYCALL_INVALID_KEY`
 */
export function checkPublicKey(key: Uint8Array): void {
  call(() => native.checkPublicKey(key))
}

/**
 * @internal A signing key given as bytes, `ed25519:` text or an identity, checked.
 * @throws `ERR_POLYCALL_INVALID_KEY`, `ERR_POLYCALL_INVALID_ARGUMENT`
 */
export function toSigningKey(key: Uint8Array | string | Identity, what: string): Buffer {
  if (key instanceof Identity) return key.signingKey
  if (typeof key === 'string') return call(() => native.parseSigningKey(key))
  if (!(key instanceof Uint8Array)) throw invalidArgument(`${what} must be a 32-byte Uint8Array, an ed25519: text or an Identity`)
  const bytes = Buffer.from(key)
  call(() => native.formatSigningKey(bytes))
  return bytes
}
