//! Identities (docs/security.md, "Identities and keys").
//!
//! An identity is one 32-byte random seed. HKDF-SHA256 (RFC 5869) derives from it, under the
//! salt `polycall identity v1` and a distinct `info` label each, two independent keys:
//!
//! - the X25519 static key of secure sessions (`info` = `x25519 static key`): its public half
//!   is the identity's [public key](Identity::public_key), printed `x25519:<base64url>`;
//! - the Ed25519 signing key of snapshot signatures (`info` = `ed25519 signing key`): its
//!   public half is the [signing key](Identity::signing_key), printed `ed25519:<base64url>`.
//!
//! One secret to store, back up and rotate; neither key reveals anything about the other or
//! about the seed. The seed and both secret keys are zeroed when the identity is dropped.
//!
//! An identity also keeps the results of its static-static Diffie-Hellman with the peers it
//! met (the `ss` token of IK, a pure function of the two static keys): a
//! [`StaticDhCache`] of at most [`STATIC_DH_CACHE`] peers, the oldest evicted first, every
//! entry zeroed on eviction and with the identity.
//!
//! The identity file is UTF-8 text, `#` comment lines and blank lines allowed:
//!
//! ```text
//! # polycall identity: this file holds a private key; keep it secret (mode 0600)
//! polycall-identity 1
//! public-key x25519:<43 base64url characters>
//! signing-key ed25519:<43 base64url characters>
//! seed <43 base64url characters>
//! ```
//!
//! The version line comes first. `seed` is required; `public-key` and `signing-key` are
//! optional and, when present, must match the keys the seed derives (a damaged or edited file
//! is refused rather than loaded as another identity). Unknown or repeated lines are refused.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use base64ct::{Base64UrlUnpadded, Encoding};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use super::primitives::{self, KEY_LEN, Secret};
use crate::error::{Error, Result};

/// Length of an identity seed.
pub const SEED_LEN: usize = 32;
/// Largest identity file accepted, in bytes.
pub const MAX_FILE_LEN: usize = 4096;
/// The version line of an identity file.
pub const FILE_VERSION_LINE: &str = "polycall-identity 1";
/// Prefix of a printed X25519 public key.
pub const PUBLIC_KEY_PREFIX: &str = "x25519:";
/// Prefix of a printed Ed25519 public key.
pub const SIGNING_KEY_PREFIX: &str = "ed25519:";

const SALT: &[u8] = b"polycall identity v1";
const X25519_INFO: &[u8] = b"x25519 static key";
const ED25519_INFO: &[u8] = b"ed25519 signing key";
/// Base64url (unpadded) length of 32 bytes.
const B64_KEY_LEN: usize = 43;
/// Most peers whose static-static Diffie-Hellman an identity keeps.
pub const STATIC_DH_CACHE: usize = 256;

struct DhSlots {
    /// Peer static key and shared secret; allocated once at full size, so no entry is ever
    /// moved (a reallocation would leave copies of the secrets behind).
    slots: Vec<([u8; KEY_LEN], Secret)>,
    /// Once full: the oldest slot, replaced next.
    next: usize,
}

/// The static-static Diffie-Hellman results of one static key, by peer key: at most
/// [`STATIC_DH_CACHE`] entries, the oldest evicted first. Every shared secret is held in a
/// zeroizing wrapper, so an evicted, cleared or dropped entry is wiped. Only a successful
/// (contributory) Diffie-Hellman is kept. The lock makes it sound to share between threads; a
/// handshake holds it only for a lookup or an insertion, never during a scalar multiplication.
pub struct StaticDhCache {
    slots: Mutex<DhSlots>,
}

impl Default for StaticDhCache {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for StaticDhCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StaticDhCache")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl StaticDhCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            slots: Mutex::new(DhSlots {
                slots: Vec::new(),
                next: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DhSlots> {
        // A panic while the lock was held cannot leave the slots half-written (each update is
        // one assignment), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Diffie-Hellman of `secret` (the static secret this cache belongs to) with `peer`,
    /// from the cache or computed and then cached.
    ///
    /// # Errors
    /// `HANDSHAKE_FAILED` for a low-order peer key (never cached).
    pub fn dh(&self, secret: &[u8; KEY_LEN], peer: &[u8; KEY_LEN]) -> Result<Secret> {
        if let Some(shared) = self.get(peer) {
            return Ok(shared);
        }
        let shared = primitives::dh(secret, peer)?;
        self.insert(*peer, &shared);
        Ok(shared)
    }

    /// The cached shared secret with `peer`, if any.
    pub fn get(&self, peer: &[u8; KEY_LEN]) -> Option<Secret> {
        self.lock()
            .slots
            .iter()
            .find(|(key, _)| key == peer)
            .map(|(_, shared)| Zeroizing::new(**shared))
    }

    fn insert(&self, peer: [u8; KEY_LEN], shared: &Secret) {
        let mut guard = self.lock();
        let DhSlots { slots, next } = &mut *guard;
        if let Some(slot) = slots.iter_mut().find(|(key, _)| *key == peer) {
            slot.1 = Zeroizing::new(**shared);
            return;
        }
        if slots.capacity() < STATIC_DH_CACHE {
            slots.reserve_exact(STATIC_DH_CACHE);
        }
        if slots.len() < STATIC_DH_CACHE {
            slots.push((peer, Zeroizing::new(**shared)));
        } else if let Some(oldest) = slots.get_mut(*next) {
            // The assignment drops (and so zeroes) the evicted secret.
            *oldest = (peer, Zeroizing::new(**shared));
            *next = (*next + 1) % STATIC_DH_CACHE;
        }
    }

    /// Peers cached.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether no peer is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops (and so zeroes) every entry.
    pub fn clear(&self) {
        let mut guard = self.lock();
        guard.slots.clear();
        guard.next = 0;
    }
}

/// A long-term identity: the seed and the two keys derived from it, and the static-static
/// Diffie-Hellman results of its key with the peers it met (module docs).
pub struct Identity {
    seed: Secret,
    x25519_secret: Secret,
    x25519_public: [u8; KEY_LEN],
    signing: SigningKey,
    /// The only strong reference: sessions hold a [`Weak`] one, so the cache (and every secret
    /// in it) goes with the identity.
    dh_cache: Arc<StaticDhCache>,
}

impl Drop for Identity {
    fn drop(&mut self) {
        // A handshake running on another thread may hold the cache for a moment: wipe the
        // entries now rather than when that reference goes.
        self.dh_cache.clear();
    }
}

impl core::fmt::Debug for Identity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &format_public_key(&self.x25519_public))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A new identity from 32 bytes of OS randomness.
    ///
    /// # Errors
    /// `ENTROPY_UNAVAILABLE` when the OS generator fails.
    pub fn generate() -> Result<Self> {
        Self::from_seed(primitives::random::<SEED_LEN>()?.as_slice())
    }

    /// The identity of a 32-byte seed (the same seed always gives the same identity).
    ///
    /// # Errors
    /// `INVALID_KEY` when `seed` is not 32 bytes.
    pub fn from_seed(seed: &[u8]) -> Result<Self> {
        let seed: &[u8; SEED_LEN] = seed.try_into().map_err(|_| {
            Error::InvalidKey(format!("a seed is {SEED_LEN} bytes, not {}", seed.len()))
        })?;
        let x25519_secret = primitives::hkdf_sha256::<KEY_LEN>(SALT, seed, X25519_INFO)?;
        let ed_seed = primitives::hkdf_sha256::<KEY_LEN>(SALT, seed, ED25519_INFO)?;
        Ok(Self {
            x25519_public: primitives::x25519_public(&x25519_secret),
            x25519_secret,
            signing: SigningKey::from_bytes(&ed_seed),
            seed: Zeroizing::new(*seed),
            dh_cache: Arc::new(StaticDhCache::new()),
        })
    }

    /// The static-static Diffie-Hellman cache of this identity's key.
    pub fn dh_cache(&self) -> &StaticDhCache {
        &self.dh_cache
    }

    /// A reference to the cache that does not keep it alive past the identity (for sessions).
    pub(crate) fn dh_cache_weak(&self) -> Weak<StaticDhCache> {
        Arc::downgrade(&self.dh_cache)
    }

    /// The X25519 public key: the identity's name in secure sessions.
    pub fn public_key(&self) -> [u8; KEY_LEN] {
        self.x25519_public
    }

    /// The Ed25519 public key that verifies this identity's signatures.
    pub fn signing_key(&self) -> [u8; KEY_LEN] {
        self.signing.verifying_key().to_bytes()
    }

    /// The X25519 static secret, for the handshake (never leaves the core).
    pub(crate) fn static_secret(&self) -> &[u8; KEY_LEN] {
        &self.x25519_secret
    }

    /// An Ed25519 signature (RFC 8032) of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The identity file's text (module docs). The returned string is zeroed when dropped.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        // Reserve the whole text up front: a growing String would leave copies of the seed
        // behind in the buffers it outgrew.
        let mut out = Zeroizing::new(String::with_capacity(512));
        out.push_str(
            "# polycall identity: this file holds a private key; keep it secret (mode 0600)\n",
        );
        out.push_str(FILE_VERSION_LINE);
        out.push_str("\npublic-key ");
        out.push_str(&format_public_key(&self.x25519_public));
        out.push_str("\nsigning-key ");
        out.push_str(&format_signing_key(&self.signing_key()));
        out.push_str("\nseed ");
        let mut buf = Zeroizing::new([0u8; B64_KEY_LEN]);
        if let Ok(text) = Base64UrlUnpadded::encode(self.seed.as_slice(), buf.as_mut_slice()) {
            out.push_str(text);
        }
        out.push('\n');
        out
    }

    /// Parses an identity file (module docs).
    ///
    /// # Errors
    /// `IDENTITY_FILE` for a file over 4 KiB, not UTF-8, without the version line or seed, with
    /// unknown or repeated lines, or whose public keys do not match its seed.
    pub fn from_file_text(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::IdentityFile(why.to_owned());
        if bytes.len() > MAX_FILE_LEN {
            return Err(bad("the file is larger than 4096 bytes"));
        }
        let text = core::str::from_utf8(bytes).map_err(|_| bad("the file is not UTF-8 text"))?;
        let mut lines = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l).trim())
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        match lines.next() {
            Some(FILE_VERSION_LINE) => {}
            Some(l) if l.starts_with("polycall-identity ") => {
                return Err(bad(
                    "the file has an identity format version this polycall does not read",
                ));
            }
            _ => {
                return Err(bad(
                    "the file does not start with the line `polycall-identity 1`",
                ));
            }
        }
        let mut seed: Option<Secret> = None;
        let mut public: Option<[u8; KEY_LEN]> = None;
        let mut signing: Option<[u8; KEY_LEN]> = None;
        for line in lines {
            let (name, value) = line
                .split_once(' ')
                .map_or((line, ""), |(n, v)| (n, v.trim()));
            let repeated = match name {
                "seed" => {
                    let mut buf = Zeroizing::new([0u8; SEED_LEN]);
                    let n = Base64UrlUnpadded::decode(value, buf.as_mut_slice())
                        .map(<[u8]>::len)
                        .map_err(|_| bad("the seed is not 43 base64url characters"))?;
                    if n != SEED_LEN {
                        return Err(bad("the seed is not 32 bytes"));
                    }
                    seed.replace(buf).is_some()
                }
                "public-key" => public
                    .replace(
                        parse_public_key(value)
                            .map_err(|_| bad("the public-key line is not an x25519: key"))?,
                    )
                    .is_some(),
                "signing-key" => signing
                    .replace(
                        parse_signing_key(value)
                            .map_err(|_| bad("the signing-key line is not an ed25519: key"))?,
                    )
                    .is_some(),
                _ => return Err(bad("the file has a line this format does not define")),
            };
            if repeated {
                return Err(bad("the file repeats a line"));
            }
        }
        let seed = seed.ok_or_else(|| bad("the file has no seed line"))?;
        let identity = Self::from_seed(seed.as_slice())?;
        if public.is_some_and(|p| p != identity.public_key())
            || signing.is_some_and(|s| s != identity.signing_key())
        {
            return Err(bad("the file's public keys do not match its seed"));
        }
        Ok(identity)
    }
}

fn format_key(prefix: &str, key: &[u8; KEY_LEN]) -> String {
    let mut out = String::with_capacity(prefix.len() + B64_KEY_LEN);
    out.push_str(prefix);
    out.push_str(&Base64UrlUnpadded::encode_string(key));
    out
}

fn parse_key(prefix: &str, text: &str) -> Result<[u8; KEY_LEN]> {
    let body = text
        .trim()
        .strip_prefix(prefix)
        .ok_or_else(|| Error::InvalidKey(format!("a key text starts with {prefix:?}")))?;
    let mut key = [0u8; KEY_LEN];
    let n = Base64UrlUnpadded::decode(body, &mut key)
        .map(<[u8]>::len)
        .map_err(|_| {
            Error::InvalidKey(format!(
                "{prefix} must be followed by 43 base64url characters"
            ))
        })?;
    if n != KEY_LEN {
        return Err(Error::InvalidKey("a public key is 32 bytes".into()));
    }
    Ok(key)
}

/// `x25519:` followed by the key in unpadded base64url.
pub fn format_public_key(key: &[u8; KEY_LEN]) -> String {
    format_key(PUBLIC_KEY_PREFIX, key)
}

/// `ed25519:` followed by the key in unpadded base64url.
pub fn format_signing_key(key: &[u8; KEY_LEN]) -> String {
    format_key(SIGNING_KEY_PREFIX, key)
}

/// Checks 32 bytes as an X25519 public key.
///
/// # Errors
/// `INVALID_KEY` for a wrong length or a low-order point.
pub fn check_public_key(key: &[u8]) -> Result<[u8; KEY_LEN]> {
    let key: [u8; KEY_LEN] = key
        .try_into()
        .map_err(|_| Error::InvalidKey(format!("a public key is 32 bytes, not {}", key.len())))?;
    if !primitives::is_valid_x25519_public(&key) {
        return Err(Error::InvalidKey("the key is a low-order point".into()));
    }
    Ok(key)
}

/// Checks 32 bytes as an Ed25519 public key.
///
/// # Errors
/// `INVALID_KEY` for a wrong length or bytes that are not a curve point.
pub fn check_signing_key(key: &[u8]) -> Result<[u8; KEY_LEN]> {
    let key: [u8; KEY_LEN] = key
        .try_into()
        .map_err(|_| Error::InvalidKey(format!("a signing key is 32 bytes, not {}", key.len())))?;
    VerifyingKey::from_bytes(&key)
        .map_err(|_| Error::InvalidKey("the bytes are not an Ed25519 public key".into()))?;
    Ok(key)
}

/// Parses `x25519:<base64url>`.
///
/// # Errors
/// `INVALID_KEY` for another prefix, bad base64url, a wrong length or a low-order point.
pub fn parse_public_key(text: &str) -> Result<[u8; KEY_LEN]> {
    check_public_key(&parse_key(PUBLIC_KEY_PREFIX, text)?)
}

/// Parses `ed25519:<base64url>`.
///
/// # Errors
/// `INVALID_KEY` for another prefix, bad base64url, a wrong length or bytes that are not a
/// curve point.
pub fn parse_signing_key(text: &str) -> Result<[u8; KEY_LEN]> {
    check_signing_key(&parse_key(SIGNING_KEY_PREFIX, text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_separated() {
        let a = Identity::from_seed(&[1; 32]).unwrap();
        let b = Identity::from_seed(&[1; 32]).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.signing_key(), b.signing_key());
        assert_ne!(a.public_key(), a.signing_key());
        assert_ne!(a.static_secret(), &[1; 32]);
        let c = Identity::from_seed(&[2; 32]).unwrap();
        assert_ne!(a.public_key(), c.public_key());
        assert_eq!(
            Identity::from_seed(&[1; 31]).unwrap_err().code(),
            "INVALID_KEY"
        );
        assert!(!format!("{a:?}").contains("seed"));
    }

    #[test]
    fn file_round_trip_and_refusals() {
        let id = Identity::generate().unwrap();
        let text = id.to_file_text();
        let back = Identity::from_file_text(text.as_bytes()).unwrap();
        assert_eq!(back.public_key(), id.public_key());
        let crlf = text.replace('\n', "\r\n");
        assert!(Identity::from_file_text(crlf.as_bytes()).is_ok());
        let seed_only: String = text
            .lines()
            .filter(|l| !l.starts_with("public") && !l.starts_with("signing"))
            .flat_map(|l| [l, "\n"])
            .collect();
        assert!(Identity::from_file_text(seed_only.as_bytes()).is_ok());
        let other = Identity::generate().unwrap();
        let mismatched = text.replace(
            &format_public_key(&id.public_key()),
            &format_public_key(&other.public_key()),
        );
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (mismatched.into_bytes(), "match"),
            (
                text.replace("polycall-identity 1", "polycall-identity 2")
                    .into_bytes(),
                "version",
            ),
            (
                text.replace("polycall-identity 1\n", "").into_bytes(),
                "start",
            ),
            (format!("{}seed x\n", &*text).into_bytes(), "seed"),
            (format!("{}color blue\n", &*text).into_bytes(), "define"),
            (
                format!("{}{}\n", &*text, text.lines().last().unwrap()).into_bytes(),
                "repeats",
            ),
            (b"polycall-identity 1\n".to_vec(), "no seed"),
            (vec![0xff, 0xfe], "UTF-8"),
            (vec![b'#'; 5000], "4096"),
        ];
        for (bytes, why) in cases {
            let err = Identity::from_file_text(&bytes).unwrap_err();
            assert_eq!(err.code(), "IDENTITY_FILE", "{why}");
            assert!(err.to_string().contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn static_dh_cache_agrees_is_bounded_and_goes_with_the_identity() {
        let id = Identity::from_seed(&[3; 32]).unwrap();
        let peer = Identity::from_seed(&[4; 32]).unwrap();
        let cache = id.dh_cache();
        assert!(cache.is_empty());
        let direct = primitives::dh(id.static_secret(), &peer.public_key()).unwrap();
        let first = cache.dh(id.static_secret(), &peer.public_key()).unwrap();
        assert_eq!(*first, *direct);
        assert_eq!(cache.len(), 1);
        let hit = cache.get(&peer.public_key()).unwrap();
        assert_eq!(*hit, *direct);
        assert_eq!(
            *cache.dh(id.static_secret(), &peer.public_key()).unwrap(),
            *direct
        );
        assert_eq!(cache.len(), 1, "a hit adds nothing");
        // A low-order key fails and is not cached.
        assert_eq!(
            cache
                .dh(id.static_secret(), &[0; KEY_LEN])
                .unwrap_err()
                .code(),
            "HANDSHAKE_FAILED"
        );
        assert!(cache.get(&[0; KEY_LEN]).is_none());
        assert_eq!(cache.len(), 1);
        // 300 more peers: the size stays at the bound, the oldest go first.
        let keys: Vec<[u8; KEY_LEN]> = (0..300u16)
            .map(|i| {
                let mut seed = [9u8; 32];
                seed[1..3].copy_from_slice(&i.to_le_bytes());
                primitives::x25519_public(&seed)
            })
            .collect();
        for key in &keys {
            cache.dh(id.static_secret(), key).unwrap();
            assert!(cache.len() <= STATIC_DH_CACHE);
        }
        assert_eq!(cache.len(), STATIC_DH_CACHE);
        assert!(cache.get(&peer.public_key()).is_none(), "evicted first");
        assert!(cache.get(&keys[300 - STATIC_DH_CACHE - 1]).is_none());
        for key in &keys[300 - STATIC_DH_CACHE..] {
            assert_eq!(
                *cache.get(key).unwrap(),
                *primitives::dh(id.static_secret(), key).unwrap()
            );
        }
        cache.clear();
        assert!(cache.is_empty());
        // The identity holds the only strong reference: dropping it drops the cache.
        cache.dh(id.static_secret(), &peer.public_key()).unwrap();
        let weak = id.dh_cache_weak();
        assert_eq!(weak.upgrade().map(|c| c.len()), Some(1));
        drop(id);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn key_texts() {
        let id = Identity::from_seed(&[7; 32]).unwrap();
        let text = format_public_key(&id.public_key());
        assert!(text.starts_with("x25519:") && text.len() == 50);
        assert_eq!(parse_public_key(&text).unwrap(), id.public_key());
        assert_eq!(
            parse_public_key(&format!("  {text} ")).unwrap(),
            id.public_key()
        );
        let signing = format_signing_key(&id.signing_key());
        assert_eq!(parse_signing_key(&signing).unwrap(), id.signing_key());
        for bad in [
            "",
            "x25519:",
            "ed25519:AAAA",
            &signing,
            &text[..49],
            "x25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(
                parse_public_key(bad).unwrap_err().code(),
                "INVALID_KEY",
                "{bad}"
            );
        }
        assert!(parse_signing_key(&text).is_err());
        assert!(check_public_key(&[1; 31]).is_err());
        assert!(check_signing_key(&[1; 33]).is_err());
    }
}
