//! The Noise Protocol Framework, revision 34 (noiseprotocol.org/noise.html), for the three
//! handshake patterns secure sessions use, with X25519, `ChaChaPoly` or `AESGCM`, and BLAKE2s:
//!
//! ```text
//! IK:  <- s             NK:  <- s             XX:  -> e
//!      ...                   ...                   <- e, ee, s, es
//!      -> e, es, s, ss       -> e, es              -> s, se
//!      <- e, ee, se          <- e, ee
//! ```
//!
//! [`CipherState`], [`SymmetricState`] and [`HandshakeState`] follow §5 of the specification
//! function by function; the test vectors of the cacophony and snow projects
//! (tests/vectors/noise-vectors.json) check the result byte for byte. Every key, chaining key
//! and DH output is held in a zeroizing wrapper. A handshake state that failed once refuses
//! every later step.

use std::sync::Weak;

use zeroize::Zeroizing;

use super::identity::StaticDhCache;
use super::primitives::{self, Aead, Cipher, HASH_LEN, KEY_LEN, Secret, TAG_LEN};
use crate::error::{Error, Result};

/// A handshake pattern (Noise rev 34 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// The initiator knows the responder's static key and sends its own, encrypted, in the
    /// first message: both sides are authenticated after one round trip.
    Ik,
    /// The initiator knows the responder's static key and has none of its own.
    Nk,
    /// Neither side knows the other's key beforehand: the responder's static key arrives
    /// (encrypted) in message 2, the initiator's in message 3.
    Xx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    E,
    S,
    Ee,
    Es,
    Se,
    Ss,
}

const IK: &[&[Token]] = &[
    &[Token::E, Token::Es, Token::S, Token::Ss],
    &[Token::E, Token::Ee, Token::Se],
];
const NK: &[&[Token]] = &[&[Token::E, Token::Es], &[Token::E, Token::Ee]];
const XX: &[&[Token]] = &[
    &[Token::E],
    &[Token::E, Token::Ee, Token::S, Token::Es],
    &[Token::S, Token::Se],
];

impl Pattern {
    /// Every pattern, in wire-id order.
    pub const ALL: [Self; 3] = [Self::Ik, Self::Nk, Self::Xx];

    /// `"IK"`, `"NK"` or `"XX"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ik => "IK",
            Self::Nk => "NK",
            Self::Xx => "XX",
        }
    }

    /// The full Noise protocol name with `ChaChaPoly`, e.g. `Noise_IK_25519_ChaChaPoly_BLAKE2s`.
    pub const fn protocol_name(self) -> &'static str {
        self.protocol_name_with(Cipher::ChaChaPoly)
    }

    /// The full Noise protocol name with `cipher`, e.g. `Noise_IK_25519_AESGCM_BLAKE2s`.
    pub const fn protocol_name_with(self, cipher: Cipher) -> &'static str {
        match (self, cipher) {
            (Self::Ik, Cipher::ChaChaPoly) => "Noise_IK_25519_ChaChaPoly_BLAKE2s",
            (Self::Nk, Cipher::ChaChaPoly) => "Noise_NK_25519_ChaChaPoly_BLAKE2s",
            (Self::Xx, Cipher::ChaChaPoly) => "Noise_XX_25519_ChaChaPoly_BLAKE2s",
            (Self::Ik, Cipher::AesGcm) => "Noise_IK_25519_AESGCM_BLAKE2s",
            (Self::Nk, Cipher::AesGcm) => "Noise_NK_25519_AESGCM_BLAKE2s",
            (Self::Xx, Cipher::AesGcm) => "Noise_XX_25519_AESGCM_BLAKE2s",
        }
    }

    /// The pattern's id in the secure hello (docs/protocol-extensions.md): 1, 2 or 3.
    pub const fn id(self) -> u8 {
        match self {
            Self::Ik => 1,
            Self::Nk => 2,
            Self::Xx => 3,
        }
    }

    /// The pattern with wire id `id`.
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Self::Ik),
            2 => Some(Self::Nk),
            3 => Some(Self::Xx),
            _ => None,
        }
    }

    /// The pattern named `name` (`"IK"`, `"NK"`, `"XX"`, any case).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    fn messages(self) -> &'static [&'static [Token]] {
        match self {
            Self::Ik => IK,
            Self::Nk => NK,
            Self::Xx => XX,
        }
    }

    /// Number of handshake messages: 2 for IK and NK, 3 for XX.
    pub fn message_count(self) -> usize {
        self.messages().len()
    }

    /// Whether the initiator has a static key (IK, XX).
    pub const fn initiator_has_static(self) -> bool {
        matches!(self, Self::Ik | Self::Xx)
    }

    /// Whether the initiator knows the responder's static key before it starts (IK, NK): the
    /// `<- s` pre-message.
    pub const fn initiator_knows_responder(self) -> bool {
        matches!(self, Self::Ik | Self::Nk)
    }
}

/// A cipher key and nonce (Noise rev 34 §5.1). Without a key, encryption is the identity.
#[derive(Default)]
pub struct CipherState {
    aead: Option<Aead>,
    n: u64,
}

impl CipherState {
    /// A `ChaChaPoly` cipher state holding `key`, nonce 0.
    pub fn with_key(key: &[u8; KEY_LEN]) -> Self {
        Self::with_cipher(Cipher::ChaChaPoly, key)
    }

    /// A cipher state of `cipher` holding `key`, nonce 0.
    pub fn with_cipher(cipher: Cipher, key: &[u8; KEY_LEN]) -> Self {
        Self {
            aead: Some(Aead::with_cipher(cipher, key)),
            n: 0,
        }
    }

    /// Whether a key is set.
    pub fn has_key(&self) -> bool {
        self.aead.is_some()
    }

    /// The next nonce.
    pub fn nonce(&self) -> u64 {
        self.n
    }

    fn take_nonce(&self) -> Result<u64> {
        // 2^64 - 1 is reserved for rekeying; a state that reached it refuses further use.
        if self.n == u64::MAX {
            return Err(Error::Tampered("the cipher state ran out of nonces".into()));
        }
        Ok(self.n)
    }

    /// Encrypts `buf` in place with `ad` and returns the tag (the identity with no key: then
    /// the tag is not used).
    ///
    /// # Errors
    /// `TAMPERED` once the nonce reached 2^64 - 1.
    pub fn seal_in_place(&mut self, ad: &[u8], buf: &mut [u8]) -> Result<Option<[u8; TAG_LEN]>> {
        let Some(aead) = &self.aead else {
            return Ok(None);
        };
        let n = self.take_nonce()?;
        let tag = aead.seal(n, ad, buf)?;
        self.n += 1;
        Ok(Some(tag))
    }

    /// Decrypts `sealed` (ciphertext, then tag) in place when its tag authenticates it with
    /// `ad`, and returns the plaintext's length (`sealed[..len]`), or `None`. A refused message
    /// leaves the nonce where it was (§5.1). With no key set, `sealed` is the plaintext.
    ///
    /// # Errors
    /// `TAMPERED` once the nonce reached 2^64 - 1.
    pub fn open_in_place(&mut self, ad: &[u8], sealed: &mut [u8]) -> Result<Option<usize>> {
        let Some(aead) = &self.aead else {
            return Ok(Some(sealed.len()));
        };
        let n = self.take_nonce()?;
        let Some(len) = aead.open(n, ad, sealed) else {
            return Ok(None);
        };
        self.n += 1;
        Ok(Some(len))
    }

    /// `EncryptWithAd`: appends the ciphertext and tag of `plaintext` to `out` (or the
    /// plaintext itself when no key is set).
    ///
    /// # Errors
    /// As [`CipherState::seal_in_place`].
    pub fn encrypt_with_ad(
        &mut self,
        ad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let start = out.len();
        out.extend_from_slice(plaintext);
        let body = out.get_mut(start..).unwrap_or_default();
        if let Some(tag) = self.seal_in_place(ad, body)? {
            out.extend_from_slice(&tag);
        }
        Ok(())
    }

    /// `DecryptWithAd`: appends the plaintext of `ciphertext` to `out`, and returns whether it
    /// authenticated (with no key set, the ciphertext is the plaintext).
    ///
    /// # Errors
    /// As [`CipherState::open_in_place`].
    pub fn decrypt_with_ad(
        &mut self,
        ad: &[u8],
        ciphertext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        if !self.has_key() {
            out.extend_from_slice(ciphertext);
            return Ok(true);
        }
        if ciphertext.len() < TAG_LEN {
            return Ok(false);
        }
        let start = out.len();
        out.extend_from_slice(ciphertext);
        let opened = self.open_in_place(ad, out.get_mut(start..).unwrap_or_default())?;
        out.truncate(start + opened.unwrap_or(0));
        Ok(opened.is_some())
    }

    /// `Rekey` (§4.2, §11.3): the key becomes the first 32 bytes of the encryption of 32 zero
    /// bytes under nonce 2^64 - 1. The nonce is unchanged.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` when no key is set.
    pub fn rekey(&mut self) -> Result<()> {
        let Some(aead) = &self.aead else {
            return Err(Error::InvalidArgument("rekey without a key".into()));
        };
        let mut next = Zeroizing::new([0u8; KEY_LEN]);
        aead.seal(u64::MAX, &[], next.as_mut_slice())?;
        self.aead = Some(Aead::with_cipher(aead.cipher(), &next));
        Ok(())
    }
}

/// The chaining key, handshake hash and cipher state of a handshake (Noise rev 34 §5.2).
pub struct SymmetricState {
    ck: Secret,
    h: [u8; HASH_LEN],
    cipher: CipherState,
    function: Cipher,
}

impl SymmetricState {
    /// `InitializeSymmetric(protocol_name)` for a `ChaChaPoly` protocol.
    pub fn new(protocol_name: &str) -> Self {
        Self::with_cipher(protocol_name, Cipher::ChaChaPoly)
    }

    /// `InitializeSymmetric(protocol_name)`, where `cipher` is the protocol name's cipher.
    pub fn with_cipher(protocol_name: &str, cipher: Cipher) -> Self {
        let name = protocol_name.as_bytes();
        let mut h = [0u8; HASH_LEN];
        match h.get_mut(..name.len()) {
            Some(head) => head.copy_from_slice(name),
            None => h = primitives::hash(&[name]),
        }
        Self {
            ck: Zeroizing::new(h),
            h,
            cipher: CipherState::default(),
            function: cipher,
        }
    }

    /// `MixKey(input_key_material)`.
    pub fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, k) = primitives::hkdf2(&self.ck, ikm);
        self.ck = ck;
        self.cipher = CipherState::with_cipher(self.function, &k);
    }

    /// `MixHash(data)`.
    pub fn mix_hash(&mut self, data: &[u8]) {
        self.h = primitives::hash(&[&self.h, data]);
    }

    /// The handshake hash `h`.
    pub fn handshake_hash(&self) -> [u8; HASH_LEN] {
        self.h
    }

    /// `EncryptAndHash(plaintext)`, appending to `out`.
    ///
    /// # Errors
    /// As [`CipherState::encrypt_with_ad`].
    pub fn encrypt_and_hash(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        let h = self.h;
        self.cipher.encrypt_with_ad(&h, plaintext, out)?;
        let ciphertext = out.get(start..).unwrap_or_default();
        self.h = primitives::hash(&[&h, ciphertext]);
        Ok(())
    }

    /// `DecryptAndHash(ciphertext)`, appending the plaintext to `out`.
    ///
    /// # Errors
    /// `HANDSHAKE_FAILED` when the ciphertext does not authenticate.
    pub fn decrypt_and_hash(&mut self, ciphertext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let h = self.h;
        if !self.cipher.decrypt_with_ad(&h, ciphertext, out)? {
            return Err(Error::HandshakeFailed(
                "a handshake message did not authenticate (wrong key, altered message or hello)"
                    .into(),
            ));
        }
        self.mix_hash(ciphertext);
        Ok(())
    }

    /// `Split()`: the initiator-to-responder and responder-to-initiator cipher states.
    pub fn split(&self) -> (CipherState, CipherState) {
        let (k1, k2) = primitives::hkdf2(&self.ck, &[]);
        (
            CipherState::with_cipher(self.function, &k1),
            CipherState::with_cipher(self.function, &k2),
        )
    }
}

struct Keypair {
    secret: Secret,
    public: [u8; KEY_LEN],
}

impl Keypair {
    fn from_secret(secret: &[u8; KEY_LEN]) -> Self {
        Self {
            public: primitives::x25519_public(secret),
            secret: Zeroizing::new(*secret),
        }
    }
}

/// The keys a handshake starts with.
#[derive(Default, Clone, Copy)]
pub struct HandshakeKeys<'a> {
    /// This side's static secret key (required by every pattern for the responder, and by IK
    /// and XX for the initiator).
    pub local_static: Option<&'a [u8; KEY_LEN]>,
    /// Its public key, when the caller has it at hand (saves a base-point multiplication).
    pub local_public: Option<[u8; KEY_LEN]>,
    /// The responder's static public key, known beforehand by an IK or NK initiator.
    pub remote_static: Option<[u8; KEY_LEN]>,
    /// An ephemeral secret drawn beforehand (a responder draws its own when the connection is
    /// accepted), or a fixed one for test vectors; `None` draws one from the OS when the `e`
    /// token is written. Used for one handshake only.
    pub ephemeral: Option<&'a [u8; KEY_LEN]>,
    /// The public key of `ephemeral`, when the caller computed it beforehand.
    pub ephemeral_public: Option<[u8; KEY_LEN]>,
    /// The static-static Diffie-Hellman cache of `local_static` (it must be that key's): the
    /// `ss` token looks the peer up there first and caches what it computes. A cache gone by
    /// the time of the `ss` token is not used.
    pub dh_cache: Option<&'a Weak<StaticDhCache>>,
}

/// One side of a handshake (Noise rev 34 §5.3).
pub struct HandshakeState {
    pattern: Pattern,
    initiator: bool,
    symmetric: SymmetricState,
    s: Option<Keypair>,
    e: Option<Keypair>,
    rs: Option<[u8; KEY_LEN]>,
    re: Option<[u8; KEY_LEN]>,
    fixed_e: Option<Keypair>,
    dh_cache: Option<Weak<StaticDhCache>>,
    next: usize,
    failed: bool,
}

fn message_too_short() -> Error {
    Error::HandshakeFailed("a handshake message is shorter than its pattern requires".into())
}

impl HandshakeState {
    /// [`HandshakeState::with_cipher`] with `ChaChaPoly`.
    ///
    /// # Errors
    /// As [`HandshakeState::with_cipher`].
    pub fn new(
        pattern: Pattern,
        initiator: bool,
        prologue: &[u8],
        keys: HandshakeKeys<'_>,
    ) -> Result<Self> {
        Self::with_cipher(pattern, Cipher::ChaChaPoly, initiator, prologue, keys)
    }

    /// `Initialize()` for `Noise_<pattern>_25519_<cipher>_BLAKE2s`: mixes the protocol name,
    /// the prologue and the pre-message keys. A low-order remote key is not checked here: its
    /// first Diffie-Hellman refuses it.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` when a key the pattern needs is missing or one it has no place for
    /// is given.
    pub fn with_cipher(
        pattern: Pattern,
        cipher: Cipher,
        initiator: bool,
        prologue: &[u8],
        keys: HandshakeKeys<'_>,
    ) -> Result<Self> {
        let needs_static = !initiator || pattern.initiator_has_static();
        let needs_remote = initiator && pattern.initiator_knows_responder();
        match (needs_static, keys.local_static.is_some()) {
            (true, false) => {
                return Err(Error::InvalidArgument(format!(
                    "{} needs this side's static key",
                    pattern.name()
                )));
            }
            (false, true) => {
                return Err(Error::InvalidArgument(format!(
                    "an {} initiator has no static key",
                    pattern.name()
                )));
            }
            _ => {}
        }
        match (needs_remote, keys.remote_static) {
            (true, None) => {
                return Err(Error::InvalidArgument(format!(
                    "an {} initiator needs the responder's public key",
                    pattern.name()
                )));
            }
            (false, Some(_)) => {
                return Err(Error::InvalidArgument(format!(
                    "{} takes no known remote key on this side",
                    pattern.name()
                )));
            }
            _ => {}
        }
        let s = keys.local_static.map(|secret| match keys.local_public {
            Some(public) => Keypair {
                secret: Zeroizing::new(*secret),
                public,
            },
            None => Keypair::from_secret(secret),
        });
        let mut symmetric = SymmetricState::with_cipher(pattern.protocol_name_with(cipher), cipher);
        symmetric.mix_hash(prologue);
        if pattern.initiator_knows_responder() {
            // The `<- s` pre-message: the responder's static public key.
            let responder = if initiator {
                keys.remote_static
            } else {
                s.as_ref().map(|k| k.public)
            };
            if let Some(key) = responder {
                symmetric.mix_hash(&key);
            }
        }
        Ok(Self {
            pattern,
            initiator,
            symmetric,
            s,
            e: None,
            rs: keys.remote_static,
            re: None,
            fixed_e: keys.ephemeral.map(|secret| match keys.ephemeral_public {
                Some(public) => Keypair {
                    secret: Zeroizing::new(*secret),
                    public,
                },
                None => Keypair::from_secret(secret),
            }),
            dh_cache: keys.dh_cache.cloned(),
            next: 0,
            failed: false,
        })
    }

    /// The pattern.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// Whether every message has been written or read.
    pub fn is_finished(&self) -> bool {
        self.next >= self.pattern.message_count()
    }

    /// Whether the next message is this side's to write.
    pub fn is_my_turn(&self) -> bool {
        !self.is_finished() && self.next.is_multiple_of(2) == self.initiator
    }

    /// The peer's static public key, once known.
    pub fn remote_static(&self) -> Option<&[u8; KEY_LEN]> {
        self.rs.as_ref()
    }

    /// The handshake hash so far (after the last message: the channel binding value).
    pub fn handshake_hash(&self) -> [u8; HASH_LEN] {
        self.symmetric.handshake_hash()
    }

    fn check_turn(&self, writing: bool) -> Result<()> {
        if self.failed {
            return Err(Error::HandshakeFailed(
                "the handshake already failed".into(),
            ));
        }
        if self.is_finished() {
            return Err(Error::HandshakeFailed(
                "the handshake is already complete".into(),
            ));
        }
        if self.is_my_turn() != writing {
            return Err(Error::HandshakeFailed(format!(
                "handshake message {} is the other side's to {}",
                self.next + 1,
                if writing { "write" } else { "read" }
            )));
        }
        Ok(())
    }

    fn dh(&self, token: Token) -> Result<Secret> {
        let missing = || Error::HandshakeFailed("a key the pattern needs is missing".into());
        let (local, remote) = match (token, self.initiator) {
            (Token::Ee, _) => (self.e.as_ref(), self.re.as_ref()),
            (Token::Es, true) | (Token::Se, false) => (self.e.as_ref(), self.rs.as_ref()),
            (Token::Es, false) | (Token::Se, true) => (self.s.as_ref(), self.re.as_ref()),
            (Token::Ss, _) => (self.s.as_ref(), self.rs.as_ref()),
            (Token::E | Token::S, _) => return Err(missing()),
        };
        let (Some(local), Some(remote)) = (local, remote) else {
            return Err(missing());
        };
        if token == Token::Ss
            && let Some(cache) = self.dh_cache.as_ref().and_then(Weak::upgrade)
        {
            return cache.dh(&local.secret, remote);
        }
        primitives::dh(&local.secret, remote)
    }

    /// `WriteMessage(payload)`: appends the next handshake message to `out`.
    ///
    /// # Errors
    /// `HANDSHAKE_FAILED` out of turn, after a failure, or for a low-order peer key;
    /// `ENTROPY_UNAVAILABLE` when no ephemeral key can be drawn.
    pub fn write_message(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.check_turn(true)?;
        let result = self.write_inner(payload, out);
        self.settle(result)
    }

    fn write_inner(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let tokens = self
            .pattern
            .messages()
            .get(self.next)
            .copied()
            .unwrap_or_default();
        for &token in tokens {
            match token {
                Token::E => {
                    let e = match self.fixed_e.take() {
                        Some(e) => e,
                        None => Keypair::from_secret(&*primitives::random::<KEY_LEN>()?),
                    };
                    out.extend_from_slice(&e.public);
                    self.symmetric.mix_hash(&e.public);
                    self.e = Some(e);
                }
                Token::S => {
                    let public =
                        self.s.as_ref().map(|k| k.public).ok_or_else(|| {
                            Error::HandshakeFailed("no static key to send".into())
                        })?;
                    self.symmetric.encrypt_and_hash(&public, out)?;
                }
                dh => {
                    let shared = self.dh(dh)?;
                    self.symmetric.mix_key(shared.as_slice());
                }
            }
        }
        self.symmetric.encrypt_and_hash(payload, out)
    }

    /// `ReadMessage(message)`: appends the message's payload to `payload`.
    ///
    /// # Errors
    /// `HANDSHAKE_FAILED` for a short or unauthenticated message, a low-order key, out of
    /// turn, or after a failure.
    pub fn read_message(&mut self, message: &[u8], payload: &mut Vec<u8>) -> Result<()> {
        self.check_turn(false)?;
        let result = self.read_inner(message, payload);
        self.settle(result)
    }

    fn read_inner(&mut self, message: &[u8], payload: &mut Vec<u8>) -> Result<()> {
        let tokens = self
            .pattern
            .messages()
            .get(self.next)
            .copied()
            .unwrap_or_default();
        let mut rest = message;
        for &token in tokens {
            match token {
                Token::E => {
                    let (key, tail) = rest
                        .split_first_chunk::<KEY_LEN>()
                        .ok_or_else(message_too_short)?;
                    rest = tail;
                    self.re = Some(*key);
                    self.symmetric.mix_hash(key);
                }
                Token::S => {
                    let len = KEY_LEN
                        + if self.symmetric.cipher.has_key() {
                            TAG_LEN
                        } else {
                            0
                        };
                    if rest.len() < len {
                        return Err(message_too_short());
                    }
                    let (sealed, tail) = rest.split_at(len);
                    rest = tail;
                    let mut key = Zeroizing::new(Vec::with_capacity(KEY_LEN));
                    self.symmetric.decrypt_and_hash(sealed, &mut key)?;
                    let key: [u8; KEY_LEN] =
                        key.as_slice().try_into().map_err(|_| message_too_short())?;
                    self.rs = Some(key);
                }
                dh => {
                    let shared = self.dh(dh)?;
                    self.symmetric.mix_key(shared.as_slice());
                }
            }
        }
        self.symmetric.decrypt_and_hash(rest, payload)
    }

    fn settle(&mut self, result: Result<()>) -> Result<()> {
        match result {
            Ok(()) => {
                self.next += 1;
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// `Split()` after the last message: this side's sending and receiving cipher states.
    ///
    /// # Errors
    /// `HANDSHAKE_FAILED` before the handshake is complete or after it failed.
    pub fn split(&self) -> Result<(CipherState, CipherState)> {
        if self.failed || !self.is_finished() {
            return Err(Error::HandshakeFailed(
                "the handshake is not complete".into(),
            ));
        }
        let (i2r, r2i) = self.symmetric.split();
        Ok(if self.initiator {
            (i2r, r2i)
        } else {
            (r2i, i2r)
        })
    }
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    clippy::many_single_char_names,
    reason = "test values are small by construction; a and b are the two ends"
)]
mod tests {
    use super::*;

    fn pair(pattern: Pattern) -> (HandshakeState, HandshakeState) {
        let (i, r) = ([1u8; 32], [2u8; 32]);
        let rpub = primitives::x25519_public(&r);
        let ik = HandshakeKeys {
            local_static: pattern.initiator_has_static().then_some(&i),
            remote_static: pattern.initiator_knows_responder().then_some(rpub),
            ..HandshakeKeys::default()
        };
        let rk = HandshakeKeys {
            local_static: Some(&r),
            local_public: Some(rpub),
            ..HandshakeKeys::default()
        };
        (
            HandshakeState::new(pattern, true, b"p", ik).unwrap(),
            HandshakeState::new(pattern, false, b"p", rk).unwrap(),
        )
    }

    #[test]
    fn every_pattern_completes_and_agrees() {
        for pattern in Pattern::ALL {
            let (mut a, mut b) = pair(pattern);
            let (mut writer, mut reader) = (&mut a, &mut b);
            for i in 0..pattern.message_count() {
                let mut msg = Vec::new();
                writer.write_message(&[i as u8; 3], &mut msg).unwrap();
                let mut got = Vec::new();
                reader.read_message(&msg, &mut got).unwrap();
                assert_eq!(got, [i as u8; 3]);
                std::mem::swap(&mut writer, &mut reader);
            }
            assert!(a.is_finished() && b.is_finished());
            assert_eq!(a.handshake_hash(), b.handshake_hash());
            let (mut a_send, mut a_recv) = a.split().unwrap();
            let (mut b_send, mut b_recv) = b.split().unwrap();
            let mut c = Vec::new();
            a_send.encrypt_with_ad(b"", b"hi", &mut c).unwrap();
            let mut p = Vec::new();
            assert!(b_recv.decrypt_with_ad(b"", &c, &mut p).unwrap());
            assert_eq!(p, b"hi");
            c.clear();
            b_send.encrypt_with_ad(b"x", b"yo", &mut c).unwrap();
            p.clear();
            assert!(a_recv.decrypt_with_ad(b"x", &c, &mut p).unwrap());
            if pattern == Pattern::Nk {
                assert!(a.remote_static().is_some() && b.remote_static().is_none());
            } else {
                assert!(a.remote_static().is_some() && b.remote_static().is_some());
            }
        }
    }

    #[test]
    fn different_prologues_fail() {
        for pattern in Pattern::ALL {
            let (mut a, _) = pair(pattern);
            let r = [2u8; 32];
            let mut b = HandshakeState::new(
                pattern,
                false,
                b"q",
                HandshakeKeys {
                    local_static: Some(&r),
                    ..HandshakeKeys::default()
                },
            )
            .unwrap();
            let mut m1 = Vec::new();
            a.write_message(&[], &mut m1).unwrap();
            let read = b.read_message(&m1, &mut Vec::new());
            if pattern == Pattern::Xx {
                // XX's first message has nothing encrypted yet; message 2 fails instead.
                read.unwrap();
                let mut m2 = Vec::new();
                b.write_message(&[], &mut m2).unwrap();
                assert_eq!(
                    a.read_message(&m2, &mut Vec::new()).unwrap_err().code(),
                    "HANDSHAKE_FAILED"
                );
            } else {
                assert_eq!(read.unwrap_err().code(), "HANDSHAKE_FAILED");
            }
        }
    }

    #[test]
    fn misuse_and_short_messages() {
        let (mut a, mut b) = pair(Pattern::Ik);
        assert!(
            b.write_message(&[], &mut Vec::new()).is_err(),
            "not the responder's turn"
        );
        let (mut a2, mut b2) = pair(Pattern::Ik);
        let mut m = Vec::new();
        a2.write_message(&[], &mut m).unwrap();
        assert!(b2.read_message(&m[..40], &mut Vec::new()).is_err());
        assert!(
            b2.read_message(&m, &mut Vec::new()).is_err(),
            "a failed state stays failed"
        );
        assert!(a.split().is_err());
        let mut m = Vec::new();
        a.write_message(&[], &mut m).unwrap();
        assert!(a.write_message(&[], &mut Vec::new()).is_err());
        b.read_message(&m, &mut Vec::new()).unwrap();
        assert!(HandshakeState::new(Pattern::Nk, true, b"", HandshakeKeys::default()).is_err());
        let mut low_order = HandshakeState::new(
            Pattern::Nk,
            true,
            b"",
            HandshakeKeys {
                remote_static: Some([0; 32]),
                ..HandshakeKeys::default()
            },
        )
        .unwrap();
        assert_eq!(
            low_order
                .write_message(&[], &mut Vec::new())
                .unwrap_err()
                .code(),
            "HANDSHAKE_FAILED"
        );
        assert!(HandshakeState::new(Pattern::Xx, false, b"", HandshakeKeys::default()).is_err());
    }

    #[test]
    fn rekey_changes_the_key_not_the_nonce() {
        let mut a = CipherState::with_key(&[5; 32]);
        let mut b = CipherState::with_key(&[5; 32]);
        let mut c = Vec::new();
        a.encrypt_with_ad(b"", b"one", &mut c).unwrap();
        a.rekey().unwrap();
        assert_eq!(a.nonce(), 1);
        let mut c2 = Vec::new();
        a.encrypt_with_ad(b"", b"two", &mut c2).unwrap();
        let mut p = Vec::new();
        assert!(b.decrypt_with_ad(b"", &c, &mut p).unwrap());
        assert!(
            !b.decrypt_with_ad(b"", &c2, &mut p).unwrap(),
            "old key refuses"
        );
        assert_eq!(b.nonce(), 1, "a refused message keeps the nonce");
        b.rekey().unwrap();
        p.clear();
        assert!(b.decrypt_with_ad(b"", &c2, &mut p).unwrap());
        assert_eq!(p, b"two");
        assert!(CipherState::default().rekey().is_err());
    }
}
