//! The primitives secure sessions are built from (docs/security.md, "Constructions"), each an
//! established construction from a well-kept crate:
//!
//! - X25519 (RFC 7748) from `x25519-dalek`;
//! - ChaCha20-Poly1305 (RFC 8439) from `chacha20poly1305`, with the Noise nonce layout (32 zero
//!   bits, then the 64-bit counter little-endian; Noise rev 34 §12.3);
//! - BLAKE2s-256 (RFC 7693) from `blake2`, HMAC (RFC 2104) from `hmac`, and Noise's HKDF built on
//!   them (Noise rev 34 §4.3);
//! - HKDF-SHA256 (RFC 5869) from `hkdf` and `sha2`, which derives an identity's keys from its seed;
//! - Ed25519 (RFC 8032) from `ed25519-dalek`, with strict verification;
//! - the operating system's random generator through `getrandom`.
//!
//! Every secret value leaves these functions in a [`Zeroizing`] wrapper.

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hmac::{Mac, SimpleHmac};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Length of an X25519 key, a cipher key and a BLAKE2s-256 digest.
pub const KEY_LEN: usize = 32;
/// Length of a Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Length of a BLAKE2s-256 digest (Noise's `HASHLEN`).
pub const HASH_LEN: usize = 32;

/// A 32-byte secret, zeroed when dropped.
pub type Secret = Zeroizing<[u8; KEY_LEN]>;

/// `N` bytes from the operating system's random generator.
///
/// # Errors
/// `ENTROPY_UNAVAILABLE` when the generator fails.
pub fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>> {
    let mut out = Zeroizing::new([0u8; N]);
    getrandom::fill(out.as_mut_slice()).map_err(|e| Error::EntropyUnavailable(e.to_string()))?;
    Ok(out)
}

/// The X25519 function of RFC 7748 §5: `k` (clamped here) times the point `u`.
pub fn x25519(k: &[u8; KEY_LEN], u: &[u8; KEY_LEN]) -> Secret {
    Zeroizing::new(x25519_dalek::x25519(*k, *u))
}

/// The X25519 public key of secret `k` (RFC 7748 §6.1).
pub fn x25519_public(k: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    PublicKey::from(&StaticSecret::from(*k)).to_bytes()
}

/// Diffie-Hellman of secret `k` with the peer's public key, refusing an all-zero result (a
/// low-order public key, which would make the shared secret independent of `k`).
///
/// # Errors
/// `HANDSHAKE_FAILED` for a low-order public key.
pub fn dh(k: &[u8; KEY_LEN], public: &[u8; KEY_LEN]) -> Result<Secret> {
    let shared = StaticSecret::from(*k).diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(Error::HandshakeFailed(
            "the peer's public key is a low-order point".into(),
        ));
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// Whether `public` is a usable X25519 public key: not one of the low-order points, whose
/// Diffie-Hellman output is zero whatever the secret.
pub fn is_valid_x25519_public(public: &[u8; KEY_LEN]) -> bool {
    // Clamped scalars are multiples of the cofactor 8, so a low-order point gives zero for
    // every secret; one fixed scalar decides it.
    let probe = [0x55u8; KEY_LEN];
    x25519(&probe, public).iter().any(|&b| b != 0)
}

/// ChaCha20-Poly1305 (RFC 8439 §2.8) under one key, encrypting and decrypting in place.
pub struct Aead {
    cipher: ChaCha20Poly1305,
}

impl Aead {
    /// The AEAD under `key` (the key schedule copies the key and zeroes it on drop).
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(key.into()),
        }
    }

    /// Encrypts `buf` in place under the 96-bit `nonce`, authenticating `ad` too; returns
    /// the tag.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a message over the 256 GiB limit of `ChaCha20`.
    pub fn seal_raw(&self, nonce: &[u8; 12], ad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        self.cipher
            .encrypt_inout_detached(&Nonce::from(*nonce), ad, buf.into())
            .map(Into::into)
            .map_err(|_| Error::InvalidArgument("message too long for ChaCha20-Poly1305".into()))
    }

    /// Decrypts `buf` in place under `nonce` when `tag` authenticates it and `ad`; returns
    /// `false` (and leaves `buf` as it was) otherwise.
    pub fn open_raw(
        &self,
        nonce: &[u8; 12],
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        self.cipher
            .decrypt_inout_detached(&Nonce::from(*nonce), ad, buf.into(), &Tag::from(*tag))
            .is_ok()
    }

    /// [`Aead::seal_raw`] with Noise's nonce for counter `n`.
    ///
    /// # Errors
    /// As [`Aead::seal_raw`].
    pub fn seal(&self, n: u64, ad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        self.seal_raw(&noise_nonce(n), ad, buf)
    }

    /// [`Aead::open_raw`] with Noise's nonce for counter `n`.
    pub fn open(&self, n: u64, ad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        self.open_raw(&noise_nonce(n), ad, buf, tag)
    }
}

/// Noise's `ChaChaPoly` nonce: 32 bits of zeros, then the counter as a little-endian u64.
fn noise_nonce(n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    if let Some(tail) = nonce.get_mut(4..) {
        tail.copy_from_slice(&n.to_le_bytes());
    }
    nonce
}

/// BLAKE2s-256 of the concatenation of `parts`.
pub fn hash(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut h = Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-BLAKE2s-256 (RFC 2104, 64-byte blocks) of the concatenation of `parts` under `key`.
pub fn hmac(key: &[u8; HASH_LEN], parts: &[&[u8]]) -> Secret {
    // HMAC pads a key shorter than the block with zeros; doing it here makes the keyed
    // constructor the infallible fixed-size one.
    let mut block = Zeroizing::new([0u8; 64]);
    if let Some(head) = block.get_mut(..HASH_LEN) {
        head.copy_from_slice(key);
    }
    let mut mac = SimpleHmac::<Blake2s256>::new(&(*block).into());
    for p in parts {
        mac.update(p);
    }
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// Noise's `HKDF(chaining_key, input_key_material, 2)` (Noise rev 34 §4.3).
pub fn hkdf2(chaining_key: &[u8; HASH_LEN], ikm: &[u8]) -> (Secret, Secret) {
    let temp = hmac(chaining_key, &[ikm]);
    let first = hmac(&temp, &[&[1]]);
    let second = hmac(&temp, &[first.as_slice(), &[2]]);
    (first, second)
}

/// The Ed25519 public key of the 32-byte secret seed (RFC 8032 §5.1.5).
pub fn ed25519_public(seed: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    ed25519_dalek::SigningKey::from_bytes(seed)
        .verifying_key()
        .to_bytes()
}

/// The Ed25519 signature (RFC 8032 §5.1.6) of `message` under the 32-byte secret seed.
pub fn ed25519_sign(seed: &[u8; KEY_LEN], message: &[u8]) -> [u8; 64] {
    use ed25519_dalek::Signer;
    ed25519_dalek::SigningKey::from_bytes(seed)
        .sign(message)
        .to_bytes()
}

/// Whether `signature` is a valid Ed25519 signature of `message` under `public` (RFC 8032
/// §5.1.7, with the strict checks: no small-order keys, canonical encodings).
pub fn ed25519_verify(public: &[u8; KEY_LEN], message: &[u8], signature: &[u8; 64]) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(public).is_ok_and(|key| {
        key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
            .is_ok()
    })
}

/// HKDF-SHA256 (RFC 5869) of `ikm` with `salt` and `info`, `N` bytes of output.
///
/// # Errors
/// `INVALID_ARGUMENT` when `N` exceeds HKDF's 8160-byte output limit.
pub fn hkdf_sha256<const N: usize>(
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
) -> Result<Zeroizing<[u8; N]>> {
    let mut okm = Zeroizing::new([0u8; N]);
    hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), ikm)
        .expand(info, okm.as_mut_slice())
        .map_err(|_| Error::InvalidArgument("HKDF output too long".into()))?;
    Ok(okm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_nonce_layout() {
        assert_eq!(
            noise_nonce(0x0102_0304_0506_0708),
            [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]
        );
    }

    #[test]
    fn aead_round_trip_and_refusal() {
        let aead = Aead::new(&[7; 32]);
        let mut buf = *b"sixteen byte msg";
        let tag = aead.seal(3, b"ad", &mut buf).unwrap();
        assert_ne!(&buf, b"sixteen byte msg");
        let sealed = buf;
        assert!(!aead.open(4, b"ad", &mut buf, &tag));
        assert_eq!(buf, sealed, "a refused open leaves the bytes alone");
        assert!(!aead.open(3, b"AD", &mut buf, &tag));
        assert!(aead.open(3, b"ad", &mut buf, &tag));
        assert_eq!(&buf, b"sixteen byte msg");
    }

    #[test]
    fn low_order_points_are_refused() {
        assert!(!is_valid_x25519_public(&[0; 32]));
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(!is_valid_x25519_public(&one));
        assert!(dh(&[9; 32], &[0; 32]).is_err());
        let public = x25519_public(&[9; 32]);
        assert!(is_valid_x25519_public(&public));
        assert_eq!(
            dh(&[3; 32], &public).unwrap(),
            dh(&[9; 32], &x25519_public(&[3; 32])).unwrap()
        );
    }

    #[test]
    fn random_differs() {
        assert_ne!(*random::<32>().unwrap(), *random::<32>().unwrap());
    }
}
