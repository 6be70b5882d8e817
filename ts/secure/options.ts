/**
 * The `secure` options of clients and servers (docs/security.md, "Configuration").
 * @packageDocumentation
 */
import type { SecureLimits, SecurePattern } from './channel.js'
import type { Identity } from './identity.js'

export type { SecureLimits, SecurePattern } from './channel.js'

/**
 * Decides on a server key the client did not know beforehand (the XX pattern). Only a `true`
 * result (or a promise of one) accepts the server; any other result, or a throw, refuses it
 * with `ERR_POLYCALL_HANDSHAKE_FAILED`.
 */
export type ServerKeyCheck = (publicKey: Buffer) => boolean | Promise<boolean>

/**
 * A client's secure session. The pattern follows from what the client knows: the server's key
 * and an identity give IK, the server's key alone NK, a {@link ServerKeyCheck} XX (with the
 * client's identity, or a fresh one-off identity when none is given).
 */
export interface SecureClientOptions extends SecureLimits {
  /** The server's public key (bytes, `x25519:` text or an identity), or a check of the key it presents. */
  serverKey: Uint8Array | string | Identity | ServerKeyCheck
  /** The client's identity, which the server sees authenticated. @defaultValue none (NK, or a one-off key for XX) */
  identity?: Identity | undefined
  /**
   * Offer lz4 compression of payloads (both sides must offer it).
   * @defaultValue false
   */
  compress?: boolean | undefined
}

/**
 * Decides on a client: its verified public key (`undefined` for an NK client, which has none)
 * and what the server knows of the peer. A result other than `undefined`, `null` or `false`
 * accepts the client and becomes (or feeds) its principal; a throw refuses it.
 */
export type ClientKeyCheck<Peer = unknown> = (publicKey: Buffer | undefined, peer: Peer) => unknown

/** A server's secure sessions. */
export interface SecureServerOptions<Peer = unknown> extends SecureLimits {
  /** The server's identity; clients pin its `publicKey`. */
  identity: Identity
  /**
   * Refuse legacy and plaintext peers with one coded ERROR (`ERR_POLYCALL_INSECURE_PEER`).
   * @defaultValue false
   */
  required?: boolean | undefined
  /**
   * The clients allowed in: a list of public keys, or a {@link ClientKeyCheck}.
   * @defaultValue any client (NK clients included)
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
}
