/**
 * The `secure` options of clients and servers (docs/security.md, "Configuration"), and how they
 * are checked and resolved once, at construction.
 * @packageDocumentation
 */
import { invalidArgument } from '../core/errors.js'
import { checkOptionKeys, optionKeys } from '../core/options.js'
import { MAX_PAYLOAD } from '../protocol/constants.js'
import {
  SECURE_CIPHERS,
  SECURE_PATTERNS,
  cipherOf,
  limitsOf as checkLimits,
  type SecureCipher,
  type SecureLimits,
  type SecurePattern,
} from './channel.js'
import { Identity, checkPublicKey, publicKeyText, toPublicKey } from './identity.js'

export type { SecureCipher, SecureLimits, SecurePattern } from './channel.js'

/**
 * Decides on a server key the client did not know beforehand (the XX pattern), given as
 * `x25519:` text. Only a `true` result (or a promise of one) accepts the server; any other
 * result, or a throw, refuses it with `ERR_POLYCALL_HANDSHAKE_FAILED`.
 *
 * @param publicKey - the key the server proved it holds, `x25519:` and 43 base64url characters
 * @returns `true` to accept the server
 */
export type ServerKeyCheck = (publicKey: string) => boolean | Promise<boolean>

/**
 * A client's secure session. The pattern follows from what the client knows: the server's key
 * and an identity give IK, the server's key alone NK, a {@link ServerKeyCheck} XX (with the
 * client's identity, or a fresh one-off identity per connection when none is given).
 */
export interface SecureClientOptions extends SecureLimits {
  /**
   * The server's public key (32 bytes, `x25519:` text or an identity), or a check of the key it
   * presents (XX).
   */
  serverKey: Uint8Array | string | Identity | ServerKeyCheck
  /** The client's identity, which the server sees authenticated. @defaultValue none (NK, or a one-off key for XX) */
  identity?: Identity | undefined
  /**
   * Offer lz4 compression of payloads of at least `compressThreshold` bytes (both sides must
   * offer it).
   * @defaultValue false
   */
  compress?: boolean | undefined
  /**
   * The cipher: `'auto'` picks `AESGCM` where this CPU has AES and carry-less multiplication
   * instructions and `ChaChaPoly` elsewhere ({@link preferredCipher}). The server must accept it
   * (`ERR_POLYCALL_HANDSHAKE_FAILED` otherwise).
   * @defaultValue 'auto'
   */
  cipher?: SecureCipher | 'auto' | undefined
}

/**
 * Decides on a client: its verified public key as `x25519:` text (`undefined` for an NK client,
 * which has none) and what the server knows of the peer (address, TLS certificate). A truthy
 * result (or a promise of one) admits the client and becomes its principal; a falsy one, a
 * throw or a rejection refuses it with `ERR_POLYCALL_UNAUTHENTICATED`.
 *
 * @typeParam Peer - what the server passes as `peer` ({@link PeerInfo} for {@link PolyCallServer})
 * @param publicKey - the client's key, or undefined
 * @param peer - the connection's peer
 * @returns the principal, or a falsy value to refuse
 */
export type ClientKeyCheck<Peer = unknown> = (publicKey: string | undefined, peer: Peer) => unknown

/** A server's secure sessions. */
export interface SecureServerOptions<Peer = unknown> extends SecureLimits {
  /** The server's identity; clients pin its `publicKey` (`identity.toString()`). */
  identity: Identity
  /**
   * Refuse legacy and plaintext peers with one coded ERROR (`ERR_POLYCALL_INSECURE_PEER`).
   * @defaultValue false
   */
  required?: boolean | undefined
  /**
   * The clients allowed in: a list of public keys (32 bytes or `x25519:` text), or a
   * {@link ClientKeyCheck}. With either, an admitted client is authenticated by its key (its
   * principal is `{ publicKey }` for a list, the check's result otherwise): `requireAuth` is
   * then met without an AUTH step. A list admits no NK client (it has no key).
   * @defaultValue any client, NK clients included, none authenticated by its key
   */
  clients?: readonly (Uint8Array | string)[] | ClientKeyCheck<Peer> | undefined
  /**
   * The patterns accepted.
   * @defaultValue IK, NK and XX
   */
  patterns?: readonly SecurePattern[] | undefined
  /**
   * Accept lz4 compression when a client offers it.
   * @defaultValue false
   */
  compress?: boolean | undefined
  /**
   * The ciphers accepted; a client that chose another one is refused
   * (`ERR_POLYCALL_HANDSHAKE_FAILED`).
   * @defaultValue both, AESGCM and ChaChaPoly
   */
  ciphers?: readonly SecureCipher[] | undefined
}

const LIMIT_KEYS = ['maxPayload', 'rekeyFrames', 'rekeyBytes', 'compressThreshold'] as const

/** @internal Every key of {@link SecureClientOptions}. */
const SECURE_CLIENT_KEYS = optionKeys<SecureClientOptions>()(['serverKey', 'identity', 'compress', 'cipher', ...LIMIT_KEYS])
/** @internal Every key of {@link SecureServerOptions}. */
const SECURE_SERVER_KEYS = optionKeys<SecureServerOptions>()(['identity', 'required', 'clients', 'patterns', 'compress', 'ciphers', ...LIMIT_KEYS])

/**
 * @internal Limits as the channel takes them, all set, with the cipher choice (a client's
 * cipher, a server's accepted ciphers; undefined: the channel's default).
 */
export interface ResolvedLimits {
  maxPayload: number
  rekeyFrames: number
  rekeyBytes: number
  compressThreshold: number
  cipher?: SecureCipher | undefined
  ciphers?: readonly SecureCipher[] | undefined
}

/** @internal A client's secure options, checked. */
export interface ResolvedClientSecure {
  pattern: SecurePattern
  identity: Identity | undefined
  /** IK, NK: the server's key. */
  serverKey: Buffer | undefined
  /** XX: the check of the key the server presents. */
  check: ServerKeyCheck | undefined
  compress: boolean
  limits: ResolvedLimits
}

/** @internal A server's secure options, checked. */
export interface ResolvedServerSecure<Peer = unknown> {
  identity: Identity
  required: boolean
  /** Allowed keys as `x25519:` text, a check, or none. */
  clients: ReadonlySet<string> | ClientKeyCheck<Peer> | undefined
  patterns: readonly SecurePattern[]
  compress: boolean
  limits: ResolvedLimits
}

function limitsOf(o: SecureLimits, maxPayload: number): ResolvedLimits {
  const l = checkLimits({ ...o, maxPayload: o.maxPayload ?? maxPayload })
  return { ...l, maxPayload: Math.min(l.maxPayload, maxPayload) }
}

function clientCipherOf(c: unknown): SecureCipher | undefined {
  return c === undefined || c === 'auto' ? undefined : cipherOf(c, 'secure.cipher')
}

function serverCiphersOf(c: unknown): readonly SecureCipher[] | undefined {
  if (c === undefined) return undefined
  if (!Array.isArray(c) || c.length === 0) throw invalidArgument(`secure.ciphers must be a non-empty list of ${SECURE_CIPHERS.join(', ')}`)
  return [...new Set(c.map((x) => cipherOf(x, 'secure.ciphers entry')))]
}

function booleanOf(v: unknown, name: string): boolean {
  if (v === undefined) return false
  if (typeof v !== 'boolean') throw invalidArgument(`${name} must be a boolean`)
  return v
}

function identityOf(v: unknown, name: string): Identity {
  if (!(v instanceof Identity)) throw invalidArgument(`${name} must be an Identity (Identity.generate(), Identity.load(path))`)
  if (v.destroyed) throw invalidArgument(`${name} was destroyed`)
  return v
}

/** Keys already checked whole (a client made per connection pays the scalar multiplication once). */
const checked = new Set<string>()
const CHECKED_MAX = 256

/** A key from configuration, checked whole (a low-order point is refused now, not per connection). */
function configuredKey(key: Uint8Array | string | Identity, name: string): Buffer {
  const bytes = toPublicKey(key, name)
  const hex = bytes.toString('hex')
  if (!checked.has(hex)) {
    checkPublicKey(bytes)
    if (checked.size >= CHECKED_MAX) checked.clear()
    checked.add(hex)
  }
  return bytes
}

/**
 * @internal Checks a client's `secure` option and picks its pattern.
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT`, `ERR_POLYCALL_INVALID_KEY`
 */
export function resolveClientSecure(options: SecureClientOptions): ResolvedClientSecure {
  if (options === null || typeof options !== 'object') throw invalidArgument('secure must be an object')
  checkOptionKeys(options, SECURE_CLIENT_KEYS, 'SecureClientOptions')
  const identity = options.identity === undefined ? undefined : identityOf(options.identity, 'secure.identity')
  const key = options.serverKey
  if (key === undefined) throw invalidArgument('secure.serverKey is required: the server key, or a check of the key it presents')
  const check = typeof key === 'function' ? key : undefined
  const serverKey = check ? undefined : configuredKey(key as Uint8Array | string | Identity, 'secure.serverKey')
  const pattern: SecurePattern = check ? 'XX' : identity ? 'IK' : 'NK'
  return {
    pattern,
    identity,
    serverKey,
    check,
    compress: booleanOf(options.compress, 'secure.compress'),
    limits: { ...limitsOf(options, MAX_PAYLOAD), cipher: clientCipherOf(options.cipher) },
  }
}

/**
 * @internal Checks a server's `secure` option.
 * @param maxPayload - the server's payload limit (the secure limit is at most this)
 * @throws `ERR_POLYCALL_INVALID_ARGUMENT`, `ERR_POLYCALL_INVALID_KEY`
 */
export function resolveServerSecure<Peer>(options: SecureServerOptions<Peer>, maxPayload: number): ResolvedServerSecure<Peer> {
  if (options === null || typeof options !== 'object') throw invalidArgument('secure must be an object')
  checkOptionKeys(options, SECURE_SERVER_KEYS, 'SecureServerOptions')
  const identity = identityOf(options.identity, 'secure.identity')
  let clients: ResolvedServerSecure<Peer>['clients']
  const c = options.clients
  if (typeof c === 'function') clients = c
  else if (Array.isArray(c)) clients = new Set(c.map((k, i) => publicKeyText(configuredKey(k as Uint8Array | string, `secure.clients[${i}]`))))
  else if (c !== undefined) throw invalidArgument('secure.clients must be a list of public keys or a function')
  const patterns = options.patterns ?? SECURE_PATTERNS
  if (!Array.isArray(patterns) || patterns.length === 0 || !patterns.every((p) => SECURE_PATTERNS.includes(p))) {
    throw invalidArgument(`secure.patterns must be a non-empty list of ${SECURE_PATTERNS.join(', ')}`)
  }
  return {
    identity,
    required: booleanOf(options.required, 'secure.required'),
    clients,
    patterns: [...new Set(patterns)],
    compress: booleanOf(options.compress, 'secure.compress'),
    limits: { ...limitsOf(options, maxPayload), ciphers: serverCiphersOf(options.ciphers) },
  }
}
