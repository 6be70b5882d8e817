//! The primitives secure sessions are built from (docs/security.md, "Constructions"), each an
//! established construction from a well-kept crate:
//!
//! - X25519 (RFC 7748) from `x25519-dalek`;
//! - ChaCha20-Poly1305 (RFC 8439) and AES-256-GCM (NIST SP 800-38D) from `aws-lc-rs` (AWS-LC),
//!   with the Noise nonce layouts (32 zero bits, then the 64-bit counter little-endian for
//!   `ChaChaPoly` and big-endian for AESGCM; Noise rev 34 §12.3, §12.4). AWS-LC picks its assembly
//!   for the CPU at run time (AES-NI, carry-less multiplication, AVX2, VAES and AVX-512 on x86-64;
//!   the crypto extensions on 64-bit Arm) and constant-time portable code otherwise. Its key
//!   schedules live in memory AWS-LC allocates, which it wipes (`OPENSSL_cleanse`) when it frees
//!   them;
//! - BLAKE2s-256 (RFC 7693) from `blake2`, HMAC (RFC 2104) from `hmac`, and Noise's HKDF built on
//!   them (Noise rev 34 §4.3);
//! - HKDF-SHA256 (RFC 5869) from `hkdf` and `sha2`, which derives an identity's keys from its seed;
//! - Ed25519 (RFC 8032) from `ed25519-dalek`, with strict verification;
//! - the operating system's random generator through `getrandom`.
//!
//! Every secret value leaves these functions in a [`Zeroizing`] wrapper.

use aws_lc_rs::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use blake2::{Blake2s256, Digest};
use hmac::{KeyInit, Mac, SimpleHmac};
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

/// The u-coordinates (little-endian, bit 255 clear) of the points whose order divides 8, on the
/// curve and on its twist: 0 (order 2; also the ladder's image of the point at infinity), 1 and
/// p - 1 (order 4), the two points of order 8, and the non-canonical encodings p and p + 1 of 0
/// and 1. X25519 with a clamped scalar (a multiple of the cofactor 8) maps exactly these to zero.
const LOW_ORDER: [[u8; KEY_LEN]; 7] = [
    [0; KEY_LEN],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// Whether `public` is a usable X25519 public key: not one of the low-order points, whose
/// Diffie-Hellman output is zero whatever the secret. A comparison with the seven encodings of
/// such points (bit 255 ignored, as X25519 ignores it), with no scalar multiplication; the
/// handshake's Diffie-Hellman refuses a zero result as well.
pub fn is_valid_x25519_public(public: &[u8; KEY_LEN]) -> bool {
    let mut u = *public;
    if let Some(top) = u.last_mut() {
        *top &= 0x7f;
    }
    !LOW_ORDER.contains(&u)
}

/// A Noise cipher function (Noise rev 34 §12.3, §12.4): the AEAD of handshake messages and
/// sealed frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// ChaCha20-Poly1305 (RFC 8439), Noise's `ChaChaPoly`: fast everywhere in software.
    ChaChaPoly,
    /// AES-256-GCM, Noise's `AESGCM`: faster than `ChaChaPoly` for frames past a few hundred
    /// bytes on CPUs with AES and carry-less multiplication instructions, much slower without.
    AesGcm,
}

impl Cipher {
    /// Every cipher, in wire-id order.
    pub const ALL: [Self; 2] = [Self::ChaChaPoly, Self::AesGcm];

    /// The Noise name: `"ChaChaPoly"` or `"AESGCM"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ChaChaPoly => "ChaChaPoly",
            Self::AesGcm => "AESGCM",
        }
    }

    /// The cipher's id in the secure hello (docs/protocol-extensions.md): 0 or 1.
    pub const fn id(self) -> u8 {
        match self {
            Self::ChaChaPoly => 0,
            Self::AesGcm => 1,
        }
    }

    /// The cipher with wire id `id`.
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(Self::ChaChaPoly),
            1 => Some(Self::AesGcm),
            _ => None,
        }
    }

    /// The cipher named `name` (`"ChaChaPoly"`, `"AESGCM"`, any case).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// Whether this CPU runs the cipher with dedicated instructions: always for `ChaChaPoly`
    /// (it needs none); for `AESGCM`, AES and carry-less multiplication (x86-64 `aes` and
    /// `pclmulqdq`; 64-bit Arm `aes` and `pmull`), detected at run time.
    pub fn is_fast_here(self) -> bool {
        match self {
            Self::ChaChaPoly => true,
            Self::AesGcm => aes_hardware(),
        }
    }

    /// The cipher a client offers unless told otherwise: `AESGCM` where
    /// [`Cipher::is_fast_here`] says so, `ChaChaPoly` elsewhere.
    pub fn preferred() -> Self {
        if aes_hardware() {
            Self::AesGcm
        } else {
            Self::ChaChaPoly
        }
    }

    /// The cipher's 96-bit nonce for counter `n`: 32 zero bits, then `n` as a 64-bit
    /// little-endian (`ChaChaPoly`) or big-endian (`AESGCM`) integer.
    pub fn nonce(self, n: u64) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        let counter = match self {
            Self::ChaChaPoly => n.to_le_bytes(),
            Self::AesGcm => n.to_be_bytes(),
        };
        if let Some(tail) = nonce.get_mut(4..) {
            tail.copy_from_slice(&counter);
        }
        nonce
    }
}

#[cfg(target_arch = "x86_64")]
fn aes_hardware() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn aes_hardware() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn aes_hardware() -> bool {
    false
}

/// An AEAD ([`Cipher`]) under one key, encrypting and decrypting in place. The key schedule is
/// AWS-LC's `EVP_AEAD_CTX`, allocated and wiped on drop by AWS-LC.
pub struct Aead {
    cipher: Cipher,
    key: LessSafeKey,
}

impl Aead {
    /// ChaCha20-Poly1305 (RFC 8439 §2.8) under `key`.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self::with_cipher(Cipher::ChaChaPoly, key)
    }

    /// The AEAD `cipher` under `key` (the key schedule copies the key and wipes it on drop).
    ///
    /// # Panics
    /// Only if AWS-LC cannot allocate a key schedule (it refuses no 32-byte key for either
    /// cipher).
    #[allow(
        clippy::expect_used,
        reason = "both algorithms take every 32-byte key; AWS-LC fails here only out of memory, \
                  as Box::new would"
    )]
    pub fn with_cipher(cipher: Cipher, key: &[u8; KEY_LEN]) -> Self {
        let algorithm = match cipher {
            Cipher::ChaChaPoly => &CHACHA20_POLY1305,
            Cipher::AesGcm => &AES_256_GCM,
        };
        let unbound = UnboundKey::new(algorithm, key).expect("an AEAD key schedule");
        Self {
            cipher,
            key: LessSafeKey::new(unbound),
        }
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Encrypts `buf` in place under the 96-bit `nonce`, authenticating `ad` too; returns
    /// the tag.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a message over the cipher's limit (256 GiB for `ChaCha20`, 64 GiB
    /// for GCM).
    pub fn seal_raw(&self, nonce: &[u8; 12], ad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(ad), buf)
            .map_err(|_| {
                Error::InvalidArgument(format!("message too long for {}", self.cipher.name()))
            })?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `sealed` (the ciphertext, then its [`TAG_LEN`]-byte tag) in place under
    /// `nonce` when the tag authenticates it and `ad`, and returns the plaintext's length (it
    /// is then `sealed[..len]`); `None` for a message that does not authenticate or is shorter
    /// than a tag, after which the bytes of `sealed` are unspecified.
    pub fn open_raw(&self, nonce: &[u8; 12], ad: &[u8], sealed: &mut [u8]) -> Option<usize> {
        self.key
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(ad), sealed)
            .ok()
            .map(|plain| plain.len())
    }

    /// [`Aead::seal_raw`] with Noise's nonce for counter `n`.
    ///
    /// # Errors
    /// As [`Aead::seal_raw`].
    pub fn seal(&self, n: u64, ad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        self.seal_raw(&self.cipher.nonce(n), ad, buf)
    }

    /// [`Aead::open_raw`] with Noise's nonce for counter `n`.
    pub fn open(&self, n: u64, ad: &[u8], sealed: &mut [u8]) -> Option<usize> {
        self.open_raw(&self.cipher.nonce(n), ad, sealed)
    }
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
            Cipher::ChaChaPoly.nonce(0x0102_0304_0506_0708),
            [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]
        );
        assert_eq!(
            Cipher::AesGcm.nonce(0x0102_0304_0506_0708),
            [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn cipher_names_and_ids() {
        for c in Cipher::ALL {
            assert_eq!(Cipher::from_id(c.id()), Some(c));
            assert_eq!(Cipher::from_name(&c.name().to_lowercase()), Some(c));
        }
        assert_eq!(Cipher::from_id(2), None);
        assert_eq!(Cipher::from_name("AES"), None);
        assert!(Cipher::preferred().is_fast_here());
    }

    #[test]
    fn aead_round_trip_and_refusal() {
        for cipher in Cipher::ALL {
            aead_round_trip(&Aead::with_cipher(cipher, &[7; 32]));
        }
        let a = Aead::with_cipher(Cipher::AesGcm, &[7; 32]);
        let b = Aead::with_cipher(Cipher::ChaChaPoly, &[7; 32]);
        let mut buf = *b"sixteen byte msg";
        let tag = a.seal(0, b"", &mut buf).unwrap();
        let mut sealed = [buf.as_slice(), tag.as_slice()].concat();
        assert_eq!(
            b.open(0, b"", &mut sealed),
            None,
            "one cipher's frame does not open in the other"
        );
    }

    fn aead_round_trip(aead: &Aead) {
        let mut buf = *b"sixteen byte msg";
        let tag = aead.seal(3, b"ad", &mut buf).unwrap();
        assert_ne!(&buf, b"sixteen byte msg");
        let sealed = [buf.as_slice(), tag.as_slice()].concat();
        assert_eq!(
            aead.open(4, b"ad", &mut sealed.clone()),
            None,
            "another nonce"
        );
        assert_eq!(aead.open(3, b"AD", &mut sealed.clone()), None, "other data");
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert_eq!(aead.open(3, b"ad", &mut flipped), None, "an altered tag");
        assert_eq!(
            aead.open(3, b"ad", &mut sealed[..15].to_vec()),
            None,
            "shorter than a tag"
        );
        let mut opened = sealed;
        assert_eq!(aead.open(3, b"ad", &mut opened), Some(16));
        assert_eq!(&opened[..16], b"sixteen byte msg");
    }

    #[test]
    fn the_low_order_list_is_what_x25519_maps_to_zero() {
        // The definition the list stands for: a clamped scalar times the point is zero.
        let by_multiplication =
            |u: &[u8; KEY_LEN]| x25519(&[0x55; KEY_LEN], u).iter().any(|&b| b != 0);
        for point in LOW_ORDER {
            assert!(!by_multiplication(&point), "{point:02x?}");
            let mut high = point;
            high[31] |= 0x80;
            assert!(!by_multiplication(&high) && !is_valid_x25519_public(&high));
        }
        for i in 0..200u32 {
            let mut k = [0u8; KEY_LEN];
            k[..4].copy_from_slice(&i.to_le_bytes());
            let public = if i % 2 == 0 {
                x25519_public(&k)
            } else {
                let mut u = *random::<KEY_LEN>().unwrap();
                u[0] = u8::try_from(i % 256).unwrap_or(0);
                u
            };
            assert_eq!(is_valid_x25519_public(&public), by_multiplication(&public));
        }
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
