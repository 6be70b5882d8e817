//! Secure sessions, identities, snapshot signatures and payload compression (DESIGN.md §8;
//! docs/security.md; the wire in docs/protocol-extensions.md, "Secure sessions").
//!
//! - [`primitives`]: X25519, ChaCha20-Poly1305, AES-256-GCM, BLAKE2s/HMAC/HKDF, HKDF-SHA256, OS randomness.
//! - [`noise`]: the Noise handshake (rev 34) for the IK, NK and XX patterns.
//! - [`identity`]: long-term identities and their file and text forms.
//! - [`hello`]: how Noise messages ride in the v1 handshake frames.
//! - [`transport`]: sealed frames, counter nonces and rekeying.
//! - [`session`]: a connection's session: handshake steps, the opening decoder, the sealer.
//! - [`compress`]: lz4 block payloads with a bounded size prefix.
//! - [`signature`]: Ed25519 signatures over canonical snapshot JSON.
//!
//! Nothing here is home-made cryptography: the constructions are Noise, ChaCha20-Poly1305,
//! HKDF and Ed25519, from the `RustCrypto` and `dalek` crates; this module wires them to the v1
//! wire and keeps every secret in zeroizing storage.

pub mod compress;
pub mod hello;
pub mod identity;
pub mod noise;
pub mod primitives;
pub mod session;
pub mod signature;
pub mod transport;

pub use identity::Identity;
pub use noise::Pattern;
pub use primitives::Cipher;
pub use session::{SecureSession, SessionLimits};
pub use transport::RekeyPolicy;
/// The zeroizing wrapper secrets are held in, for callers that handle secret bytes (the glue
/// reading an identity file).
pub use zeroize::Zeroizing;
