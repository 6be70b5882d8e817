//! A connection's secure session, sans I/O: the handshake steps of both roles, the stream
//! decoder that opens sealed frames in the same pass that frames them, and the batch sealer
//! (docs/protocol-extensions.md, "Secure sessions").
//!
//! A session starts in the **handshaking** mode: frames decode as plain v1 frames, and the
//! decoder stops right after each frame that can carry a handshake message (a HANDSHAKE on the
//! server side; a RESPONSE, ERROR or HANDSHAKE on the client side) and reports the stop as
//! *held*. The caller runs the matching handshake step, which switches the mode, and pushes the
//! rest of the chunk again, so bytes after the switch point are always read in the new mode:
//!
//! ```text
//!            client (initiator)                          server (responder)
//!  IK, NK    initiator()  -> HELLO [msg 1]  ------------> read_hello()
//!                                                        accept()     => sealed
//!            read_reply() <- RESPONSE [msg 2] ----------
//!            => sealed
//!  XX        initiator()  -> HELLO [msg 1]  ------------> read_hello()
//!                                                        accept()
//!            read_reply() <- RESPONSE [msg 2] ----------
//!            (check the server key)
//!            finish()     -> HANDSHAKE [msg 3] ---------> read_finish() => sealed
//!            => sealed
//! ```
//!
//! In the **sealed** mode every frame must be sealed ([`super::transport`]); a plaintext frame,
//! a damaged header or a frame that fails to open ends the session with `TAMPERED` (the
//! decoder checks no checksum there: the tag covers every header byte and the payload). A session
//! whose peer turned out not to speak the secure hello can continue in the **plain** mode
//! ([`SecureSession::plain`]), which decodes and encodes v1 frames unchanged (with lz4
//! compression when both peers negotiated it). Every error ends the session: later calls
//! return the same error.
//!
//! Bounds: a hello is at most [`hello::MAX_HELLO`] bytes; the decoder holds at most one
//! unfinished frame of at most the payload limit; the handshake state is of fixed size.

use std::sync::Weak;

use zeroize::Zeroizing;

use super::compress::{self, Compressor};
use super::hello::{self, BATCHES, COMPRESSION, SECURE};
use super::identity::{Identity, StaticDhCache};
use super::noise::{HandshakeKeys, HandshakeState, Pattern};
use super::primitives::{self, Cipher, KEY_LEN, Secret};
use super::transport::{
    BATCH, BATCH_MAX_BODY, BATCH_MAX_FRAMES, Direction, MAX_SEALED_BODY, RekeyPolicy,
    SEALED_OVERHEAD, SealedBatchesV1, SealedV1,
};
use crate::error::{Error, Result};
use crate::packet::handshake::{self, EXTENDED_SIZE, Strictness};
use crate::packet::{
    DecodedFrame, FrameDecoder, HEADER_SIZE, Header, MAX_PAYLOAD, MessageType, Payload,
    StreamDecoder, encode_into, flags,
};

/// Which side of the connection a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The client: writes message 1.
    Initiator,
    /// The server.
    Responder,
}

/// How the session's decoder reads the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain frames; stop after each frame that can carry a handshake message.
    Handshaking,
    /// Plain frames for good (the peer speaks no secure hello).
    Plain,
    /// Sealed frames only.
    Sealed,
}

/// Limits and intervals of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Largest plaintext payload accepted from the peer (at most 1 048 576); a compressed
    /// payload may announce at most this much.
    pub max_payload: u32,
    /// When this side's sending direction rekeys (announced to the peer in the handshake).
    pub rekey: RekeyPolicy,
    /// Payloads of at least this size are compressed once compression is negotiated.
    pub compress_threshold: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_payload: MAX_PAYLOAD,
            rekey: RekeyPolicy::DEFAULT,
            compress_threshold: compress::DEFAULT_THRESHOLD,
        }
    }
}

/// How a client starts a session.
pub struct InitiatorConfig<'a> {
    /// The pattern: IK needs `identity` and `server_key`, NK `server_key` only, XX `identity`
    /// only (the server key is checked by the caller after [`SecureSession::read_reply`]).
    pub pattern: Pattern,
    /// The client's identity.
    pub identity: Option<&'a Identity>,
    /// The server's X25519 public key, known beforehand.
    pub server_key: Option<[u8; KEY_LEN]>,
    /// The cipher of the handshake and the sealed frames (usually [`Cipher::preferred`]); the
    /// server must accept it.
    pub cipher: Cipher,
    /// Capability flags to offer ([`SECURE`] is added).
    pub flags: u16,
    /// The client's own limit of requests in flight, announced in the hello (0: not stated).
    pub max_in_flight: u32,
    /// Limits.
    pub limits: SessionLimits,
    /// A fixed ephemeral secret, for tests only.
    pub ephemeral: Option<[u8; KEY_LEN]>,
}

/// How a server prepares for a client's hello.
pub struct ResponderConfig<'a> {
    /// The server's identity.
    pub identity: &'a Identity,
    /// The patterns the server accepts.
    pub patterns: &'a [Pattern],
    /// The ciphers the server accepts (the client chooses one).
    pub ciphers: &'a [Cipher],
    /// Limits.
    pub limits: SessionLimits,
    /// A fixed ephemeral secret, for tests only; without one, the session draws its ephemeral
    /// key pair when it is created (before the hello arrives).
    pub ephemeral: Option<[u8; KEY_LEN]>,
}

/// What a client's hello offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The hello's capability flags (0 for a legacy hello).
    pub flags: u16,
    /// The client's stated limit of requests in flight, when it stated one.
    pub max_in_flight: Option<u32>,
    /// The secure offer, or `None` when the hello offers no secure session.
    pub secure: Option<SecureOffer>,
}

/// A client's secure offer, after message 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureOffer {
    /// The pattern the client chose.
    pub pattern: Pattern,
    /// The cipher the client chose.
    pub cipher: Cipher,
    /// IK only: the client's static key, already authenticated by message 1 (the caller
    /// decides whether to accept it before calling [`SecureSession::accept`]).
    pub client_key: Option<[u8; KEY_LEN]>,
}

/// A server's reply, after message 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The capability flags the server accepted (a subset of the offer, [`SECURE`] included).
    pub flags: u16,
    /// The server's limit of requests in flight.
    pub max_in_flight: u32,
    /// The cipher (the client's choice, which the server's reply repeats).
    pub cipher: Cipher,
    /// The server's static key (the configured one for IK and NK; for XX the key message 2
    /// carried, which the caller must check before [`SecureSession::finish`]).
    pub server_key: [u8; KEY_LEN],
    /// Whether the session is established (IK, NK); XX needs [`SecureSession::finish`].
    pub established: bool,
}

/// Where an opened frame's payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenedPayload {
    /// `chunk[start..start + len]` of the chunk passed to [`SecureSession::decode`] (opened in
    /// place).
    InChunk {
        /// First payload byte.
        start: usize,
        /// Payload length.
        len: usize,
    },
    /// Assembled across chunks, or decompressed.
    Owned(Vec<u8>),
}

/// One frame delivered by [`SecureSession::decode`]: the header (with the payload's plaintext
/// length, and the flags less COMPRESSED once decompressed) and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedFrame {
    /// The header.
    pub header: Header,
    /// The payload.
    pub payload: OpenedPayload,
}

/// What a [`SecureSession::decode`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStatus {
    /// Bytes of the chunk read: all of it, unless `max_frames` frames came first or the
    /// decoder held.
    pub consumed: usize,
    /// The last frame delivered can carry a handshake message: run the handshake step, then
    /// push `chunk[consumed..]` again.
    pub held: bool,
}

/// A frame to seal.
#[derive(Debug, Clone, Copy)]
pub struct OutFrame<'a> {
    /// Message type.
    pub kind: MessageType,
    /// Flags (ENCRYPTED and COMPRESSED are set by the sealer).
    pub flags: u16,
    /// Sequence number.
    pub sequence: u32,
    /// Payload.
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Initiator: hello written, waiting for the reply.
    AwaitReply,
    /// Initiator (XX): reply read, waiting for the caller's verdict on the server key.
    AwaitConfirm,
    /// Responder: waiting for the hello.
    AwaitHello,
    /// Responder: hello read, waiting for the caller's accept.
    AwaitAccept,
    /// Responder (XX): reply written, waiting for message 3.
    AwaitFinish,
    /// Handshake done or not taking place.
    Done,
}

/// A connection's secure session (module docs).
pub struct SecureSession {
    role: Role,
    step: Step,
    mode: Mode,
    limits: SessionLimits,
    patterns: Vec<Pattern>,
    ciphers: Vec<Cipher>,
    cipher: Option<Cipher>,
    local_static: Option<Secret>,
    local_public: [u8; KEY_LEN],
    ephemeral: Option<Secret>,
    ephemeral_public: Option<[u8; KEY_LEN]>,
    dh_cache: Option<Weak<StaticDhCache>>,
    noise: Option<HandshakeState>,
    hello: [u8; EXTENDED_SIZE],
    pattern: Option<Pattern>,
    peer_rekey: RekeyPolicy,
    agreed: u16,
    send: Option<Direction>,
    recv: Option<Direction>,
    decoder: Framer,
    /// Both sides agreed on sealed batches (set at the switch to sealed frames).
    batches: bool,
    compressor: Option<Compressor>,
    decompress: bool,
    remote_static: Option<[u8; KEY_LEN]>,
    handshake_hash: Option<[u8; 32]>,
    failed: Option<Error>,
    scratch: Vec<DecodedFrame>,
}

impl core::fmt::Debug for SecureSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecureSession")
            .field("role", &self.role)
            .field("mode", &self.mode)
            .field("pattern", &self.pattern)
            .field("cipher", &self.cipher)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

fn check_limits(limits: SessionLimits) -> Result<()> {
    if limits.max_payload > MAX_PAYLOAD {
        return Err(Error::InvalidArgument(format!(
            "maxPayload {} exceeds the protocol maximum of {MAX_PAYLOAD} bytes",
            limits.max_payload
        )));
    }
    Ok(())
}

/// The longest handshake frame payload accepted whatever the payload limit.
#[allow(
    clippy::cast_possible_truncation,
    reason = "MAX_HELLO is 1042, a compile-time constant"
)]
const HELLO_LIMIT: u32 = hello::MAX_HELLO as u32;

fn failed(why: &str) -> Error {
    Error::HandshakeFailed(why.to_owned())
}

/// The session's stream decoder: v1 frames with their checksums while handshaking and in the
/// plain mode; in the sealed mode frames whose tag is their only check ([`SealedV1`], or
/// [`SealedBatchesV1`] once batches are agreed).
#[derive(Debug)]
enum Framer {
    Plain(FrameDecoder),
    Sealed(StreamDecoder<SealedV1>),
    Batched(StreamDecoder<SealedBatchesV1>),
}

impl Framer {
    fn plain(max_payload: u32) -> Result<Self> {
        Ok(Self::Plain(FrameDecoder::with_max_payload(max_payload)?))
    }

    fn buffered(&self) -> usize {
        match self {
            Self::Plain(d) => d.buffered(),
            Self::Sealed(d) => d.buffered(),
            Self::Batched(d) => d.buffered(),
        }
    }

    fn decode(
        &mut self,
        chunk: &[u8],
        max_frames: usize,
        sink: impl FnMut(DecodedFrame),
    ) -> Result<usize> {
        match self {
            Self::Plain(d) => d.decode(chunk, max_frames, sink),
            Self::Sealed(d) => d.decode(chunk, max_frames, sink),
            Self::Batched(d) => d.decode(chunk, max_frames, sink),
        }
    }

    fn finish(&mut self) -> Result<()> {
        match self {
            Self::Plain(d) => d.finish(),
            Self::Sealed(d) => d.finish(),
            Self::Batched(d) => d.finish(),
        }
    }
}

impl SecureSession {
    fn blank(role: Role, limits: SessionLimits) -> Result<Self> {
        check_limits(limits)?;
        Ok(Self {
            role,
            step: Step::Done,
            mode: Mode::Handshaking,
            limits,
            patterns: Vec::new(),
            ciphers: Vec::new(),
            cipher: None,
            local_static: None,
            local_public: [0; KEY_LEN],
            ephemeral: None,
            ephemeral_public: None,
            dh_cache: None,
            noise: None,
            hello: [0; EXTENDED_SIZE],
            pattern: None,
            peer_rekey: RekeyPolicy::NEVER,
            agreed: 0,
            send: None,
            recv: None,
            // A hello may be longer than a small payload limit; decode_handshaking holds every
            // other frame to the limit.
            decoder: Framer::plain(limits.max_payload.max(HELLO_LIMIT))?,
            batches: false,
            compressor: None,
            decompress: false,
            remote_static: None,
            handshake_hash: None,
            failed: None,
            scratch: Vec::new(),
        })
    }

    /// A client session and the payload of its first HANDSHAKE frame (message 1).
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` when the pattern's keys are missing or superfluous, or a limit is out
    /// of range; `HANDSHAKE_FAILED` for a low-order server key (check configured keys with
    /// [`super::identity::check_public_key`] beforehand); `ENTROPY_UNAVAILABLE`.
    pub fn initiator(config: &InitiatorConfig<'_>) -> Result<(Self, Vec<u8>)> {
        let mut session = Self::blank(Role::Initiator, config.limits)?;
        let pattern = config.pattern;
        let cipher = config.cipher;
        let fields = handshake::build_extended(config.flags | SECURE, config.max_in_flight);
        let head = hello::build(config.flags, config.max_in_flight, pattern, cipher, 1, &[])?;
        let ephemeral = config.ephemeral.map(Zeroizing::new);
        let dh_cache = config.identity.map(Identity::dh_cache_weak);
        let mut noise = HandshakeState::with_cipher(
            pattern,
            cipher,
            true,
            &hello::prologue(&head),
            HandshakeKeys {
                local_static: config.identity.map(Identity::static_secret),
                local_public: config.identity.map(Identity::public_key),
                remote_static: config.server_key,
                ephemeral: ephemeral.as_deref(),
                ephemeral_public: None,
                dh_cache: dh_cache.as_ref(),
            },
        )?;
        let mut message = Vec::with_capacity(128);
        noise.write_message(&hello::initiator_payload(config.limits.rekey), &mut message)?;
        let payload = hello::build(
            config.flags,
            config.max_in_flight,
            pattern,
            cipher,
            1,
            &message,
        )?;
        session.hello = fields;
        session.pattern = Some(pattern);
        session.cipher = Some(cipher);
        session.remote_static = config.server_key;
        session.noise = Some(noise);
        session.step = Step::AwaitReply;
        Ok((session, payload))
    }

    /// A server session waiting for a client's hello. Its ephemeral key pair is drawn here, so
    /// that reading the hello and writing the reply spend no time on it; the pair serves this
    /// one handshake and is zeroed with it.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for no accepted pattern or cipher, or a limit out of range;
    /// `ENTROPY_UNAVAILABLE`.
    pub fn responder(config: &ResponderConfig<'_>) -> Result<Self> {
        if config.patterns.is_empty() {
            return Err(Error::InvalidArgument(
                "a responder accepts at least one pattern".into(),
            ));
        }
        if config.ciphers.is_empty() {
            return Err(Error::InvalidArgument(
                "a responder accepts at least one cipher".into(),
            ));
        }
        let mut session = Self::blank(Role::Responder, config.limits)?;
        session.patterns = config.patterns.to_vec();
        session.ciphers = config.ciphers.to_vec();
        session.local_static = Some(Zeroizing::new(*config.identity.static_secret()));
        session.local_public = config.identity.public_key();
        let ephemeral = match config.ephemeral {
            Some(fixed) => Zeroizing::new(fixed),
            None => primitives::random::<KEY_LEN>()?,
        };
        session.ephemeral_public = Some(primitives::x25519_public(&ephemeral));
        session.ephemeral = Some(ephemeral);
        session.dh_cache = Some(config.identity.dh_cache_weak());
        session.step = Step::AwaitHello;
        Ok(session)
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The decoder's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The pattern, once known.
    pub fn pattern(&self) -> Option<Pattern> {
        self.pattern
    }

    /// The cipher, once known.
    pub fn cipher(&self) -> Option<Cipher> {
        self.cipher
    }

    /// Whether frames are sealed in both directions.
    pub fn is_established(&self) -> bool {
        self.mode == Mode::Sealed
    }

    /// The peer's static key, once known (not for an NK client on the server side).
    pub fn remote_static(&self) -> Option<[u8; KEY_LEN]> {
        self.remote_static
    }

    /// The handshake hash, a value unique to this session, once established.
    pub fn handshake_hash(&self) -> Option<[u8; 32]> {
        self.handshake_hash
    }

    /// The capability flags both sides agreed on (0 before the reply).
    pub fn agreed_flags(&self) -> u16 {
        self.agreed
    }

    /// Rekeys done so far by the sending and the receiving direction.
    pub fn rekeys(&self) -> (u64, u64) {
        (
            self.send.as_ref().map_or(0, Direction::rekeys),
            self.recv.as_ref().map_or(0, Direction::rekeys),
        )
    }

    /// The error that ended the session, if any.
    pub fn failure(&self) -> Option<&Error> {
        self.failed.as_ref()
    }

    /// Bytes held for an unfinished frame.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    fn live(&self) -> Result<()> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Records a failure (every error but an argument error ends the session).
    fn settle<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result
            && !matches!(e, Error::InvalidArgument(_))
        {
            self.failed = Some(e.clone());
            self.noise = None;
            self.local_static = None;
            self.ephemeral = None;
            self.ephemeral_public = None;
            self.dh_cache = None;
            self.send = None;
            self.recv = None;
        }
        result
    }

    fn expect_step(&self, step: Step, what: &str) -> Result<()> {
        if self.step == step {
            Ok(())
        } else {
            Err(failed(&format!("{what} is out of order in this handshake")))
        }
    }

    /// Switches the decoder to sealed frames: only at a frame boundary, so no plaintext frame
    /// straddles the switch point.
    fn establish(&mut self) -> Result<()> {
        let noise = self
            .noise
            .take()
            .ok_or_else(|| failed("no handshake state"))?;
        let (send, recv) = noise.split()?;
        if self.decoder.buffered() > 0 {
            return Err(failed(
                "a plaintext frame straddles the switch to sealed frames",
            ));
        }
        let sealed_limit =
            (self.limits.max_payload as usize + SEALED_OVERHEAD).min(MAX_PAYLOAD as usize);
        let sealed_limit = u32::try_from(sealed_limit).unwrap_or(MAX_PAYLOAD);
        self.batches = self.agreed & BATCHES != 0;
        self.decoder = if self.batches {
            Framer::Batched(StreamDecoder::with_max_payload(sealed_limit)?)
        } else {
            Framer::Sealed(StreamDecoder::with_max_payload(sealed_limit)?)
        };
        self.handshake_hash = Some(noise.handshake_hash());
        self.send = Some(Direction::new(send, self.limits.rekey));
        self.recv = Some(Direction::new(recv, self.peer_rekey));
        self.local_static = None;
        self.ephemeral = None;
        self.ephemeral_public = None;
        self.dh_cache = None;
        self.step = Step::Done;
        self.mode = Mode::Sealed;
        if self.agreed & COMPRESSION != 0 {
            self.set_compression(Some(self.limits.compress_threshold));
        }
        Ok(())
    }

    /// Server: reads the payload of the client's first HANDSHAKE (message 1).
    ///
    /// # Errors
    /// `HANDSHAKE_PAYLOAD_TOO_SHORT` / `HANDSHAKE_BAD_MAGIC` for a malformed hello;
    /// `HANDSHAKE_FAILED` for a broken secure block, a pattern the server does not accept, or a
    /// message 1 that does not authenticate (wrong server key, altered hello).
    pub fn read_hello(&mut self, payload: &[u8]) -> Result<Hello> {
        self.live()?;
        let result = self.read_hello_inner(payload);
        self.settle(result)
    }

    fn read_hello_inner(&mut self, payload: &[u8]) -> Result<Hello> {
        self.expect_step(Step::AwaitHello, "a client hello")?;
        let legacy = handshake::parse(payload, Strictness::Lenient)?;
        let Some(h) = hello::parse(payload)? else {
            return Ok(Hello {
                flags: legacy.flags,
                max_in_flight: legacy.max_in_flight,
                secure: None,
            });
        };
        if h.step != 1 {
            return Err(failed("a first hello must carry handshake message 1"));
        }
        if !self.patterns.contains(&h.pattern) {
            return Err(failed(&format!(
                "this server does not accept the {} pattern",
                h.pattern.name()
            )));
        }
        if !self.ciphers.contains(&h.cipher) {
            return Err(failed(&format!(
                "this server does not accept the {} cipher",
                h.cipher.name()
            )));
        }
        let local = self
            .local_static
            .take()
            .ok_or_else(|| failed("no server key"))?;
        let ephemeral = self.ephemeral.take();
        let dh_cache = self.dh_cache.take();
        let mut noise = HandshakeState::with_cipher(
            h.pattern,
            h.cipher,
            false,
            &hello::prologue(payload),
            HandshakeKeys {
                local_static: Some(&local),
                local_public: Some(self.local_public),
                remote_static: None,
                ephemeral: ephemeral.as_deref(),
                ephemeral_public: self.ephemeral_public.take(),
                dh_cache: dh_cache.as_ref(),
            },
        )?;
        let mut inner = Zeroizing::new(Vec::with_capacity(hello::INITIATOR_PAYLOAD_LEN));
        noise.read_message(h.message, &mut inner)?;
        self.peer_rekey = hello::parse_initiator_payload(&inner)?;
        self.remote_static = noise.remote_static().copied();
        self.hello = h.fields;
        self.pattern = Some(h.pattern);
        self.cipher = Some(h.cipher);
        self.noise = Some(noise);
        self.step = Step::AwaitAccept;
        Ok(Hello {
            flags: h.flags,
            max_in_flight: Some(h.max_in_flight),
            secure: Some(SecureOffer {
                pattern: h.pattern,
                cipher: h.cipher,
                client_key: self.remote_static,
            }),
        })
    }

    /// Server: accepts the offer and returns the payload of the RESPONSE (message 2) carrying
    /// `flags` (a subset of the offered flags; [`SECURE`] is added) and the server's limit of
    /// requests in flight. IK and NK sessions are established from here on.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for flags outside the offer; `HANDSHAKE_FAILED` out of order.
    pub fn accept(&mut self, flags: u16, max_in_flight: u32) -> Result<Vec<u8>> {
        self.live()?;
        let step = self.expect_step(Step::AwaitAccept, "accepting");
        self.settle(step)?;
        let offered = u16::from_le_bytes([self.hello[6], self.hello[7]]);
        if (flags | SECURE) & !offered != 0 {
            return Err(Error::InvalidArgument(format!(
                "flags {flags:#06x} include bits the client did not offer ({offered:#06x})"
            )));
        }
        let result = self.accept_inner(flags | SECURE, max_in_flight);
        self.settle(result)
    }

    fn accept_inner(&mut self, flags: u16, max_in_flight: u32) -> Result<Vec<u8>> {
        self.expect_step(Step::AwaitAccept, "accepting")?;
        let pattern = self.pattern.ok_or_else(|| failed("no pattern"))?;
        let cipher = self.cipher.ok_or_else(|| failed("no cipher"))?;
        let fields = handshake::build_extended(flags, max_in_flight);
        let noise = self
            .noise
            .as_mut()
            .ok_or_else(|| failed("no handshake state"))?;
        let mut message = Vec::with_capacity(160);
        noise.write_message(
            &hello::responder_payload(&fields, self.limits.rekey),
            &mut message,
        )?;
        let payload = hello::build(flags, max_in_flight, pattern, cipher, 2, &message)?;
        self.agreed = flags;
        if noise.is_finished() {
            self.establish()?;
        } else {
            self.step = Step::AwaitFinish;
        }
        Ok(payload)
    }

    /// Client: reads the payload of the server's RESPONSE to the hello (message 2).
    ///
    /// # Errors
    /// `INSECURE_PEER` for a reply that does not accept a secure session (a legacy reply, or
    /// one without [`SECURE`]); `HANDSHAKE_FAILED` for a malformed reply, flags the client did
    /// not offer, a message 2 that does not authenticate (wrong or impostor server key, altered
    /// hello), or altered reply fields.
    pub fn read_reply(&mut self, payload: &[u8]) -> Result<Reply> {
        self.live()?;
        let result = self.read_reply_inner(payload);
        self.settle(result)
    }

    fn read_reply_inner(&mut self, payload: &[u8]) -> Result<Reply> {
        self.expect_step(Step::AwaitReply, "a server reply")?;
        let plain = handshake::parse(payload, Strictness::Lenient)
            .map_err(|e| failed(&format!("the reply is not a hello: {e}")))?;
        let Some(h) = hello::parse(payload)? else {
            return Err(Error::InsecurePeer(if plain.is_legacy() {
                "the server answered with a legacy hello: it does not speak secure sessions".into()
            } else {
                "the server did not accept the secure session".into()
            }));
        };
        if h.step != 2 || Some(h.pattern) != self.pattern || Some(h.cipher) != self.cipher {
            return Err(failed("the reply carries another pattern, cipher or step"));
        }
        let offered = u16::from_le_bytes([self.hello[6], self.hello[7]]);
        if h.flags & !offered != 0 {
            return Err(failed(
                "the reply accepts capability bits the client did not offer",
            ));
        }
        let noise = self
            .noise
            .as_mut()
            .ok_or_else(|| failed("no handshake state"))?;
        let mut inner = Zeroizing::new(Vec::with_capacity(hello::RESPONDER_PAYLOAD_LEN));
        noise.read_message(h.message, &mut inner)?;
        let (fields, policy) = hello::parse_responder_payload(&inner)?;
        if fields != h.fields {
            return Err(failed("the reply's hello fields were altered in transit"));
        }
        let server_key = noise
            .remote_static()
            .copied()
            .ok_or_else(|| failed("no server key"))?;
        let finished = noise.is_finished();
        self.peer_rekey = policy;
        self.agreed = h.flags;
        self.remote_static = Some(server_key);
        if finished {
            self.establish()?;
        } else {
            self.step = Step::AwaitConfirm;
        }
        Ok(Reply {
            flags: h.flags,
            max_in_flight: h.max_in_flight,
            cipher: h.cipher,
            server_key,
            established: finished,
        })
    }

    /// Client (XX): after the caller accepted the server key [`Reply::server_key`], returns the
    /// payload of the second HANDSHAKE frame (message 3). The session is established from here
    /// on (the client may send sealed frames right after it).
    ///
    /// # Errors
    /// `HANDSHAKE_FAILED` out of order.
    pub fn finish(&mut self) -> Result<Vec<u8>> {
        self.live()?;
        let result = self.finish_inner();
        self.settle(result)
    }

    fn finish_inner(&mut self) -> Result<Vec<u8>> {
        self.expect_step(Step::AwaitConfirm, "the third handshake message")?;
        let pattern = self.pattern.ok_or_else(|| failed("no pattern"))?;
        let cipher = self.cipher.ok_or_else(|| failed("no cipher"))?;
        let noise = self
            .noise
            .as_mut()
            .ok_or_else(|| failed("no handshake state"))?;
        let mut message = Vec::with_capacity(96);
        noise.write_message(&[hello::PAYLOAD_VERSION], &mut message)?;
        let offered = u16::from_le_bytes([self.hello[6], self.hello[7]]);
        let max =
            u32::from_le_bytes([self.hello[8], self.hello[9], self.hello[10], self.hello[11]]);
        let payload = hello::build(offered, max, pattern, cipher, 3, &message)?;
        self.establish()?;
        Ok(payload)
    }

    /// Server (XX): reads the client's second HANDSHAKE (message 3) and returns the client's
    /// static key. The session is established from here on.
    ///
    /// # Errors
    /// `HANDSHAKE_FAILED` for a malformed or altered message 3, or out of order.
    pub fn read_finish(&mut self, payload: &[u8]) -> Result<[u8; KEY_LEN]> {
        self.live()?;
        let result = self.read_finish_inner(payload);
        self.settle(result)
    }

    fn read_finish_inner(&mut self, payload: &[u8]) -> Result<[u8; KEY_LEN]> {
        self.expect_step(Step::AwaitFinish, "a third handshake message")?;
        let Some(h) = hello::parse(payload)? else {
            return Err(failed("the third handshake message is not a secure hello"));
        };
        if h.step != 3
            || Some(h.pattern) != self.pattern
            || Some(h.cipher) != self.cipher
            || h.fields != self.hello
        {
            return Err(failed(
                "the third handshake message differs from the first hello",
            ));
        }
        let noise = self
            .noise
            .as_mut()
            .ok_or_else(|| failed("no handshake state"))?;
        let mut inner = Vec::new();
        noise.read_message(h.message, &mut inner)?;
        if inner.first() != Some(&hello::PAYLOAD_VERSION) {
            return Err(failed("a third message payload of an unknown version"));
        }
        let client = noise
            .remote_static()
            .copied()
            .ok_or_else(|| failed("no client key"))?;
        self.remote_static = Some(client);
        self.establish()?;
        Ok(client)
    }

    /// Continues without a secure session: frames stay plain in both directions. Allowed only
    /// before the handshake has gone past the hello (a server that got a hello without the
    /// secure offer, or a client that decides to accept a server without one).
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` once a secure handshake is under way or done.
    pub fn plain(&mut self) -> Result<()> {
        self.live()?;
        if !matches!(self.step, Step::AwaitHello | Step::AwaitReply)
            || self.mode != Mode::Handshaking
        {
            return Err(Error::InvalidArgument(
                "a session can only turn plain before its secure handshake".into(),
            ));
        }
        self.noise = None;
        self.local_static = None;
        self.ephemeral = None;
        self.ephemeral_public = None;
        self.dh_cache = None;
        self.step = Step::Done;
        self.mode = Mode::Plain;
        if self.decoder.buffered() == 0 {
            self.decoder = Framer::plain(self.limits.max_payload)?;
        }
        Ok(())
    }

    /// Turns compression on (frames of at least `threshold` bytes are compressed, COMPRESSED
    /// frames are decompressed) or off (`None`). Established sessions turn it on themselves when
    /// both sides offered [`COMPRESSION`]; plain sessions need this call.
    pub fn set_compression(&mut self, threshold: Option<u32>) {
        self.compressor = threshold.map(Compressor::new);
        self.decompress = threshold.is_some();
    }

    fn holds(&self, kind: MessageType) -> bool {
        match self.role {
            Role::Responder => kind == MessageType::Handshake,
            Role::Initiator => matches!(
                kind,
                MessageType::Response | MessageType::Error | MessageType::Handshake
            ),
        }
    }

    /// Decodes `chunk`, opening sealed frames in place, and calls `sink` for each frame in
    /// arrival order, stopping after `max_frames` frames or at a hold (see [`DecodeStatus`]).
    /// With sealed batches agreed, a call takes at most `max(1, max_frames / 64)` wire frames,
    /// so it stays within `max_frames` when that is at least 64 (one batch may deliver up to
    /// 64 frames otherwise). Frames before a bad one have reached `sink` when the error is
    /// returned.
    ///
    /// # Errors
    /// The decoder's header errors; in the sealed mode `TAMPERED` for a damaged header or a
    /// frame that does not open, and `DECOMPRESSION_*` for a bad compressed payload;
    /// `PAYLOAD_TOO_LARGE` for a frame over the limit. Every error ends the session.
    pub fn decode(
        &mut self,
        chunk: &mut [u8],
        max_frames: usize,
        mut sink: impl FnMut(OpenedFrame),
    ) -> Result<DecodeStatus> {
        self.live()?;
        let result = match self.mode {
            Mode::Handshaking => self.decode_handshaking(chunk, max_frames, &mut sink),
            Mode::Plain | Mode::Sealed => self.decode_bulk(chunk, max_frames, &mut sink),
        };
        self.settle(result)
    }

    fn decode_handshaking(
        &mut self,
        chunk: &mut [u8],
        max_frames: usize,
        sink: &mut impl FnMut(OpenedFrame),
    ) -> Result<DecodeStatus> {
        let mut pos = 0;
        let mut produced = 0;
        while produced < max_frames && pos < chunk.len() {
            let rest = chunk.get(pos..).unwrap_or_default();
            let mut frame = None;
            let used = self.decoder.decode(rest, 1, |f| frame = Some(f))?;
            let base = pos;
            pos += used;
            let Some(f) = frame else { continue };
            produced += 1;
            let held = self.holds(f.header.kind);
            if !held && f.header.payload_length > self.limits.max_payload {
                return Err(Error::PayloadTooLarge {
                    length: u64::from(f.header.payload_length),
                    limit: self.limits.max_payload,
                });
            }
            sink(plain_frame(f, base));
            if held {
                return Ok(DecodeStatus {
                    consumed: pos,
                    held: true,
                });
            }
        }
        Ok(DecodeStatus {
            consumed: pos,
            held: false,
        })
    }

    fn decode_bulk(
        &mut self,
        chunk: &mut [u8],
        max_frames: usize,
        sink: &mut impl FnMut(OpenedFrame),
    ) -> Result<DecodeStatus> {
        let mut frames = core::mem::take(&mut self.scratch);
        frames.clear();
        // A batch opens into up to BATCH_MAX_FRAMES frames: take no more wire frames than can
        // stay within max_frames (but always one).
        let wire_frames = if self.batches {
            (max_frames / BATCH_MAX_FRAMES).max(1)
        } else {
            max_frames
        };
        let decoded = self.decoder.decode(chunk, wire_frames, |f| frames.push(f));
        let mut outcome = Ok(());
        for f in frames.drain(..) {
            if let Err(e) = self.open(f, chunk, sink) {
                outcome = Err(e);
                break;
            }
        }
        self.scratch = frames;
        outcome?;
        let consumed = decoded.map_err(|e| match (self.mode, e) {
            (
                Mode::Sealed,
                e @ (Error::VersionMismatch { .. } | Error::UnknownMessageType { .. }),
            ) => Error::Tampered(format!("a sealed stream carries a damaged header: {e}")),
            (_, e) => e,
        })?;
        Ok(DecodeStatus {
            consumed,
            held: false,
        })
    }

    /// Opens (sealed mode) and decompresses (when negotiated) one decoded frame, and hands it,
    /// or the frames of a sealed batch, to `sink`.
    fn open(
        &mut self,
        f: DecodedFrame,
        chunk: &mut [u8],
        sink: &mut impl FnMut(OpenedFrame),
    ) -> Result<()> {
        let mut header = f.header;
        let mut payload = f.payload;
        if let Some(recv) = self.recv.as_mut() {
            let body_len = match &mut payload {
                Payload::InChunk { start, end } => {
                    let bytes = chunk
                        .get_mut(*start..*end)
                        .ok_or_else(|| Error::InvalidArgument("frame outside its chunk".into()))?;
                    let n = recv.open(&header, bytes)?;
                    *end = *start + n;
                    n
                }
                Payload::Assembled(bytes) => {
                    let n = recv.open(&header, bytes)?;
                    bytes.truncate(n);
                    n
                }
            };
            header.payload_length = u32::try_from(body_len).unwrap_or(u32::MAX);
            if self.batches && header.flags & BATCH != 0 {
                return self.unbatch(&payload, chunk, sink);
            }
        }
        sink(self.deliverable(header, payload, chunk)?);
        Ok(())
    }

    /// Hands each frame of an opened sealed batch to `sink`, checking that the frames fill the
    /// batch exactly and that none is ENCRYPTED, a batch, or carries a checksum.
    fn unbatch(
        &mut self,
        payload: &Payload,
        chunk: &[u8],
        sink: &mut impl FnMut(OpenedFrame),
    ) -> Result<()> {
        let (base, body): (usize, &[u8]) = match payload {
            Payload::InChunk { start, end } => {
                (*start, chunk.get(*start..*end).unwrap_or_default())
            }
            Payload::Assembled(bytes) => (0, bytes),
        };
        let malformed = |why: &str| Error::Tampered(format!("a sealed batch {why}"));
        if body.is_empty() {
            return Err(malformed("holds no frame"));
        }
        let mut pos = 0usize;
        let mut count = 0usize;
        while pos < body.len() {
            count += 1;
            if count > BATCH_MAX_FRAMES {
                return Err(malformed(&format!(
                    "holds more than {BATCH_MAX_FRAMES} frames"
                )));
            }
            let Some(head) = body
                .get(pos..pos + HEADER_SIZE)
                .and_then(|h| <&[u8; HEADER_SIZE]>::try_from(h).ok())
            else {
                return Err(malformed("ends inside a frame header"));
            };
            let mut header =
                Header::decode(head, self.limits.max_payload).map_err(|e| match e {
                    e @ Error::PayloadTooLarge { .. } => e,
                    e => malformed(&format!("holds a malformed frame: {e}")),
                })?;
            if header.flags & (flags::ENCRYPTED | BATCH) != 0 || header.checksum != 0 {
                return Err(malformed(
                    "holds a frame flagged ENCRYPTED or BATCH, or with a checksum",
                ));
            }
            let start = pos + HEADER_SIZE;
            let end = start + header.payload_length as usize;
            let Some(bytes) = body.get(start..end) else {
                return Err(malformed("ends inside a frame"));
            };
            let inner = match payload {
                Payload::InChunk { .. } => Payload::InChunk {
                    start: base + start,
                    end: base + end,
                },
                Payload::Assembled(_) => Payload::Assembled(bytes.to_vec()),
            };
            header.flags |= flags::ENCRYPTED;
            sink(self.deliverable(header, inner, chunk)?);
            pos = end;
        }
        Ok(())
    }

    /// An opened frame as delivered: decompressed when it is COMPRESSED and compression is on,
    /// held to the payload limit.
    fn deliverable(
        &mut self,
        mut header: Header,
        payload: Payload,
        chunk: &[u8],
    ) -> Result<OpenedFrame> {
        let compressed = header.flags & flags::COMPRESSED != 0;
        if !(compressed && self.decompress) {
            if header.payload_length > self.limits.max_payload {
                return Err(Error::PayloadTooLarge {
                    length: u64::from(header.payload_length),
                    limit: self.limits.max_payload,
                });
            }
            return Ok(match payload {
                Payload::InChunk { start, end } => OpenedFrame {
                    header,
                    payload: OpenedPayload::InChunk {
                        start,
                        len: end - start,
                    },
                },
                Payload::Assembled(bytes) => OpenedFrame {
                    header,
                    payload: OpenedPayload::Owned(bytes),
                },
            });
        }
        let body: &[u8] = match &payload {
            Payload::InChunk { start, end } => chunk.get(*start..*end).unwrap_or_default(),
            Payload::Assembled(bytes) => bytes,
        };
        let plain = compress::decompress(body, self.limits.max_payload)?;
        header.flags &= !flags::COMPRESSED;
        header.payload_length = u32::try_from(plain.len()).unwrap_or(u32::MAX);
        Ok(OpenedFrame {
            header,
            payload: OpenedPayload::Owned(plain),
        })
    }

    /// Whether outgoing frames are sealed (true) or encoded plain (false).
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` while the handshake is not complete.
    fn sealing(&self) -> Result<bool> {
        match self.mode {
            Mode::Sealed => Ok(true),
            Mode::Plain => Ok(false),
            Mode::Handshaking => Err(Error::InvalidArgument(
                "the secure handshake is not complete: nothing can be sealed yet".into(),
            )),
        }
    }

    /// The largest output [`SecureSession::seal_batch`] can write for `count` frames carrying
    /// `payload_bytes` in all.
    pub fn sealed_bound(count: usize, payload_bytes: usize) -> usize {
        count * (HEADER_SIZE + SEALED_OVERHEAD) + payload_bytes
    }

    /// Encodes every frame into `out` (at least [`SecureSession::sealed_bound`] bytes) and
    /// returns the bytes written: sealed in the sealed mode, plain in the plain mode, each
    /// compressed first when compression is on and it pays. Checks every frame before it
    /// writes any, so a refused batch consumes no nonce.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` before the session is established (or turned plain), or for a short
    /// `out`; `PAYLOAD_TOO_LARGE` for a payload that does not fit in a frame.
    pub fn seal_batch(&mut self, frames: &[OutFrame<'_>], out: &mut [u8]) -> Result<usize> {
        self.live()?;
        let sealing = self.sealing()?;
        let (overhead, limit) = if sealing {
            (SEALED_OVERHEAD, MAX_SEALED_BODY)
        } else {
            (0, MAX_PAYLOAD as usize)
        };
        let mut total = 0usize;
        for f in frames {
            if f.payload.len() > limit {
                return Err(Error::PayloadTooLarge {
                    length: f.payload.len() as u64,
                    limit: u32::try_from(limit).unwrap_or(MAX_PAYLOAD),
                });
            }
            total += HEADER_SIZE + overhead + f.payload.len();
        }
        if out.len() < total {
            return Err(Error::InvalidArgument(format!(
                "output buffer holds {} bytes, the batch needs up to {total}",
                out.len()
            )));
        }
        let result = self.seal_checked(frames, out, sealing);
        self.settle(result)
    }

    fn seal_checked(
        &mut self,
        frames: &[OutFrame<'_>],
        out: &mut [u8],
        sealing: bool,
    ) -> Result<usize> {
        let mut pos = 0usize;
        let reserved = self.reserved_flags();
        for f in frames {
            let mut flags = f.flags & !(flags::ENCRYPTED | flags::COMPRESSED | reserved);
            let body = match self.compressor.as_mut().and_then(|c| c.compress(f.payload)) {
                Some(packed) => {
                    flags |= flags::COMPRESSED;
                    packed
                }
                None => f.payload,
            };
            let dst = out.get_mut(pos..).unwrap_or_default();
            pos += if sealing {
                let send = self
                    .send
                    .as_mut()
                    .ok_or_else(|| Error::InvalidArgument("no sending direction".into()))?;
                send.seal(f.kind, flags, f.sequence, body, dst)?
            } else {
                let n = HEADER_SIZE + body.len();
                let dst = dst
                    .get_mut(..n)
                    .ok_or_else(|| Error::InvalidArgument("output buffer too short".into()))?;
                encode_into(dst, f.kind, flags, f.sequence, body)?;
                n
            };
        }
        Ok(pos)
    }

    /// Seals, in place, frames a caller laid out end to end in `buf`. Each is 16 bytes of
    /// provisional header (a v1 header whose length field gives the body's length; its version
    /// and checksum bytes are ignored), the body, then [`SEALED_OVERHEAD`] bytes reserved for the
    /// tag. Each frame is compressed first where compression is on and pays, sealed in the sealed
    /// mode (encoded plain in the plain mode), and moved down over the room an earlier frame no
    /// longer needed, so the frames end up contiguous in `buf[..n]`; returns `n`. Checks the
    /// whole layout before it writes anything, so a refused region consumes no nonce.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` before the session is established (or turned plain), or for a layout
    /// that does not fill `buf` exactly; `PAYLOAD_TOO_LARGE` for a body over the sealed limit.
    pub fn seal_in_place(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.live()?;
        let sealing = self.sealing()?;
        let mut at = 0usize;
        while at < buf.len() {
            at += provisional(buf, at)?.3;
        }
        let result = self.seal_in_place_checked(buf, sealing);
        self.settle(result)
    }

    fn seal_in_place_checked(&mut self, buf: &mut [u8], sealing: bool) -> Result<usize> {
        let short =
            || Error::InvalidArgument("a frame laid out for sealing runs past the region".into());
        let mut read = 0usize;
        let mut write = 0usize;
        while read < buf.len() {
            if sealing && self.batches {
                let (count, span) = batch_span(buf, read)?;
                if count >= 2 {
                    write += self.seal_batch_at(buf, read, write, count)?;
                    read += span;
                    continue;
                }
            }
            let (kind, flags, sequence, reserved) = provisional(buf, read)?;
            let len = reserved - HEADER_SIZE - SEALED_OVERHEAD;
            let body_at = read + HEADER_SIZE;
            let mut flags = flags & !(flags::ENCRYPTED | flags::COMPRESSED | self.reserved_flags());
            // A compressed body is shorter than the payload, and `write <= read`: it fits.
            let (compressed, body_len) = self.place_body(buf, body_at, len, write + HEADER_SIZE)?;
            if compressed {
                flags |= flags::COMPRESSED;
            }
            write += if sealing {
                let send = self
                    .send
                    .as_mut()
                    .ok_or_else(|| Error::InvalidArgument("no sending direction".into()))?;
                let end = write + HEADER_SIZE + body_len + SEALED_OVERHEAD;
                let frame = buf.get_mut(write..end).ok_or_else(short)?;
                send.seal_frame(kind, flags, sequence, frame)?
            } else {
                let frame = buf
                    .get_mut(write..write + HEADER_SIZE + body_len)
                    .ok_or_else(short)?;
                let (head, body) = frame.split_at_mut(HEADER_SIZE);
                let header = Header {
                    kind,
                    flags,
                    sequence,
                    payload_length: u32::try_from(body_len).unwrap_or(MAX_PAYLOAD),
                    checksum: crate::checksum::checksum(body),
                };
                head.copy_from_slice(&header.encode());
                HEADER_SIZE + body_len
            };
            read += reserved;
        }
        Ok(write)
    }

    /// Puts the body at `buf[body_at..body_at + len]` at `buf[dst..]` (`dst` at most 16 bytes
    /// past `body_at`, within the frame's reserved room): compressed where compression is on and
    /// pays, moved otherwise. Returns whether it was compressed and its length there.
    fn place_body(
        &mut self,
        buf: &mut [u8],
        body_at: usize,
        len: usize,
        dst: usize,
    ) -> Result<(bool, usize)> {
        let short =
            || Error::InvalidArgument("a frame laid out for sealing runs past the region".into());
        let body = buf.get(body_at..body_at + len).ok_or_else(short)?;
        if let Some(packed) = self.compressor.as_mut().and_then(|c| c.compress(body)) {
            buf.get_mut(dst..dst + packed.len())
                .ok_or_else(short)?
                .copy_from_slice(packed);
            return Ok((true, packed.len()));
        }
        if dst != body_at {
            buf.copy_within(body_at..body_at + len, dst);
        }
        Ok((false, len))
    }

    /// Flag bits this session keeps for itself on outgoing frames: [`BATCH`] once batches are
    /// agreed (a caller's frame flags lose it, as they lose ENCRYPTED and COMPRESSED).
    fn reserved_flags(&self) -> u16 {
        if self.batches { BATCH } else { 0 }
    }

    /// Seals `count` (at least 2) provisional frames starting at `buf[read..]` as one sealed
    /// batch written at `buf[write..]` (`write <= read`): an outer header, each frame's header
    /// (checksum 0) and body (compressed first where that is on and pays), then the tag.
    /// Returns the batch's length, which is at most the room the frames reserved.
    fn seal_batch_at(
        &mut self,
        buf: &mut [u8],
        read: usize,
        write: usize,
        count: usize,
    ) -> Result<usize> {
        let short =
            || Error::InvalidArgument("a frame laid out for sealing runs past the region".into());
        let mut r = read;
        let mut w = write + HEADER_SIZE;
        for _ in 0..count {
            // This frame's provisional header is intact: everything written so far ends at or
            // before it (each frame gives back the 16 bytes of its tag room; the first one's
            // pay for the outer header).
            let (kind, flags, sequence, reserved) = provisional(buf, r)?;
            let len = reserved - HEADER_SIZE - SEALED_OVERHEAD;
            let body_at = r + HEADER_SIZE;
            let mut flags = flags & !(flags::ENCRYPTED | flags::COMPRESSED | BATCH);
            // The body moves before the header is written: the first frame's inner header
            // lands where its body began.
            let (compressed, body_len) = self.place_body(buf, body_at, len, w + HEADER_SIZE)?;
            if compressed {
                flags |= flags::COMPRESSED;
            }
            let header = Header {
                kind,
                flags,
                sequence,
                payload_length: u32::try_from(body_len).unwrap_or(MAX_PAYLOAD),
                checksum: 0,
            };
            buf.get_mut(w..w + HEADER_SIZE)
                .ok_or_else(short)?
                .copy_from_slice(&header.encode());
            w += HEADER_SIZE + body_len;
            r += reserved;
        }
        let end = w + SEALED_OVERHEAD;
        let send = self
            .send
            .as_mut()
            .ok_or_else(|| Error::InvalidArgument("no sending direction".into()))?;
        let frame = buf.get_mut(write..end).ok_or_else(short)?;
        send.seal_frame(MessageType::Command, BATCH, 0, frame)
    }

    /// Declares the end of the stream.
    ///
    /// # Errors
    /// `TRUNCATED_HEADER` / `TRUNCATED_PAYLOAD` when a frame was cut short, or the error that
    /// ended the session.
    pub fn end(&mut self) -> Result<()> {
        self.live()?;
        let result = self.decoder.finish();
        self.settle(result)
    }
}

fn plain_frame(f: DecodedFrame, base: usize) -> OpenedFrame {
    OpenedFrame {
        header: f.header,
        payload: match f.payload {
            Payload::InChunk { start, end } => OpenedPayload::InChunk {
                start: base + start,
                len: end - start,
            },
            Payload::Assembled(bytes) => OpenedPayload::Owned(bytes),
        },
    }
}

/// Reads the provisional header at `buf[at..]` that [`SecureSession::seal_in_place`] takes:
/// type, flags, sequence and the room the frame reserves (header, body and tag).
fn provisional(buf: &[u8], at: usize) -> Result<(MessageType, u16, u32, usize)> {
    let Some(&[_, kind, f0, f1, s0, s1, s2, s3, l0, l1, l2, l3, ..]) =
        buf.get(at..at + HEADER_SIZE)
    else {
        return Err(Error::InvalidArgument(
            "a frame laid out for sealing ends inside its header".into(),
        ));
    };
    let kind = MessageType::try_from(kind)?;
    let flags = u16::from_le_bytes([f0, f1]);
    let sequence = u32::from_le_bytes([s0, s1, s2, s3]);
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if len > MAX_SEALED_BODY {
        return Err(Error::PayloadTooLarge {
            length: len as u64,
            limit: u32::try_from(MAX_SEALED_BODY).unwrap_or(MAX_PAYLOAD),
        });
    }
    let reserved = HEADER_SIZE + len + SEALED_OVERHEAD;
    if buf.len() - at < reserved {
        return Err(Error::InvalidArgument(
            "a frame laid out for sealing runs past the region".into(),
        ));
    }
    Ok((kind, flags, sequence, reserved))
}

/// How many provisional frames from `buf[at..]` go into one sealed batch (the most that fit in
/// [`BATCH_MAX_BODY`] with their headers, at most [`BATCH_MAX_FRAMES`]), and the room they
/// reserve.
fn batch_span(buf: &[u8], at: usize) -> Result<(usize, usize)> {
    let mut count = 0usize;
    let mut body = 0usize;
    let mut end = at;
    while end < buf.len() && count < BATCH_MAX_FRAMES {
        let reserved = provisional(buf, end)?.3;
        let inner = reserved - SEALED_OVERHEAD;
        if body + inner > BATCH_MAX_BODY {
            break;
        }
        body += inner;
        count += 1;
        end += reserved;
    }
    Ok((count, end - at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_responder_holds_its_ephemeral_pair_from_creation_to_the_reply() {
        let id = Identity::from_seed(&[8; 32]).unwrap();
        let config = |ephemeral| ResponderConfig {
            identity: &id,
            patterns: &Pattern::ALL,
            ciphers: &Cipher::ALL,
            limits: SessionLimits::default(),
            ephemeral,
        };
        let mut server = SecureSession::responder(&config(None)).unwrap();
        let public = server.ephemeral_public.unwrap();
        let secret = server.ephemeral.as_deref().copied().unwrap();
        assert_eq!(primitives::x25519_public(&secret), public);
        let fixed = SecureSession::responder(&config(Some([0x22; 32]))).unwrap();
        assert_eq!(
            fixed.ephemeral_public,
            Some(primitives::x25519_public(&[0x22; 32]))
        );
        let (mut client, hello) = SecureSession::initiator(&InitiatorConfig {
            pattern: Pattern::Nk,
            identity: None,
            server_key: Some(id.public_key()),
            cipher: Cipher::ChaChaPoly,
            flags: 0,
            max_in_flight: 0,
            limits: SessionLimits::default(),
            ephemeral: None,
        })
        .unwrap();
        server.read_hello(&hello).unwrap();
        assert!(server.ephemeral.is_none() && server.ephemeral_public.is_none());
        let reply = server.accept(0, 16).unwrap();
        // Message 2 starts with the pre-drawn public key (after the hello's fixed fields).
        assert!(reply.windows(KEY_LEN).any(|w| w == public));
        client.read_reply(&reply).unwrap();
        assert!(server.is_established() && client.is_established());
    }

    /// An established NK pair that agreed on batches.
    fn batched_pair() -> (SecureSession, SecureSession) {
        let id = Identity::from_seed(&[8; 32]).unwrap();
        let (mut client, hello) = SecureSession::initiator(&InitiatorConfig {
            pattern: Pattern::Nk,
            identity: None,
            server_key: Some(id.public_key()),
            cipher: Cipher::AesGcm,
            flags: BATCHES,
            max_in_flight: 0,
            limits: SessionLimits {
                max_payload: 1000,
                ..SessionLimits::default()
            },
            ephemeral: None,
        })
        .unwrap();
        let mut server = SecureSession::responder(&ResponderConfig {
            identity: &id,
            patterns: &Pattern::ALL,
            ciphers: &Cipher::ALL,
            limits: SessionLimits {
                max_payload: 1000,
                ..SessionLimits::default()
            },
            ephemeral: None,
        })
        .unwrap();
        server.read_hello(&hello).unwrap();
        client
            .read_reply(&server.accept(BATCHES, 16).unwrap())
            .unwrap();
        assert!(client.batches && server.batches);
        (client, server)
    }

    /// `body` sealed by `client` as a batch, as it goes on the wire.
    fn sealed_batch(client: &mut SecureSession, body: &[u8]) -> Vec<u8> {
        let mut frame = vec![0; HEADER_SIZE + body.len() + SEALED_OVERHEAD];
        frame[HEADER_SIZE..HEADER_SIZE + body.len()].copy_from_slice(body);
        let send = client.send.as_mut().unwrap();
        send.seal_frame(MessageType::Command, BATCH, 0, &mut frame)
            .unwrap();
        frame
    }

    fn inner(kind: u8, flags: u16, len: u32, checksum: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![1, kind];
        f.extend(flags.to_le_bytes());
        f.extend(7u32.to_le_bytes());
        f.extend(len.to_le_bytes());
        f.extend(checksum.to_le_bytes());
        f.extend(payload);
        f
    }

    /// What the server makes of `body` sealed as a batch: the payloads it delivered and the
    /// error code, if any.
    fn unbatched(body: &[u8]) -> (Vec<Vec<u8>>, Option<&'static str>) {
        let (mut client, mut server) = batched_pair();
        let mut wire = sealed_batch(&mut client, body);
        let mut got = Vec::new();
        let result = server.decode(&mut wire, 4096, |f| got.push(f));
        let payloads = got
            .into_iter()
            .map(|f| match f.payload {
                OpenedPayload::InChunk { start, len } => wire[start..start + len].to_vec(),
                OpenedPayload::Owned(v) => v,
            })
            .collect();
        (payloads, result.err().map(|e| e.code()))
    }

    #[test]
    fn a_malformed_batch_from_the_peer_ends_the_session_with_a_code() {
        let good = inner(3, 8, 2, 0, b"ok");
        let (frames, err) = unbatched(&[good.clone(), good.clone()].concat());
        assert_eq!((frames.len(), err), (2, None));
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("a cut header", vec![1, 3, 0], "TAMPERED"),
            ("ENCRYPTED inside", inner(3, 1, 2, 0, b"ok"), "TAMPERED"),
            ("a batch inside", inner(3, BATCH, 2, 0, b"ok"), "TAMPERED"),
            ("a checksum", inner(3, 8, 2, 5, b"ok"), "TAMPERED"),
            (
                "a length past the end",
                inner(3, 8, 3, 0, b"ok"),
                "TAMPERED",
            ),
            (
                "version 2",
                [vec![2], good[1..].to_vec()].concat(),
                "TAMPERED",
            ),
            ("type 9", inner(9, 8, 2, 0, b"ok"), "TAMPERED"),
            (
                "over the payload limit",
                inner(3, 8, 1001, 0, &[0; 1001]),
                "PAYLOAD_TOO_LARGE",
            ),
            (
                "65 frames",
                inner(6, 0, 0, 0, b"").repeat(BATCH_MAX_FRAMES + 1),
                "TAMPERED",
            ),
            (
                "a bad compressed frame",
                inner(3, flags::COMPRESSED, 4, 0, &[0xff, 0xff, 0xff, 0x7f]),
                "",
            ),
        ];
        for (what, body, code) in cases {
            let (frames, err) = unbatched(&[good.clone(), body].concat());
            // The compressed flag is advisory without compression: that frame is delivered.
            if code.is_empty() {
                assert_eq!((frames.len(), err), (2, None), "{what}");
                continue;
            }
            assert_eq!(err, Some(code), "{what}");
            // The frames before the bad one arrived (64 of them when the 65th is one too many).
            let before = if what == "65 frames" {
                BATCH_MAX_FRAMES
            } else {
                1
            };
            assert_eq!(frames.len(), before, "{what}: the frames before it arrived");
            assert_eq!(frames[0], b"ok", "{what}");
        }
        assert_eq!(
            unbatched(&[]),
            (Vec::new(), Some("TAMPERED")),
            "an empty batch"
        );
        // 64 frames are fine.
        let (frames, err) = unbatched(&inner(6, 0, 0, 0, b"").repeat(BATCH_MAX_FRAMES));
        assert_eq!((frames.len(), err), (BATCH_MAX_FRAMES, None));
    }

    #[test]
    fn arbitrary_batch_contents_end_in_frames_or_a_code() {
        // Valid batches with bytes changed, cut or appended before sealing: whatever an
        // authenticated peer puts in a batch ends in frames or a coded error, never a panic,
        // and every frame delivered lies inside the batch and within the payload limit.
        let mut x = 0x9e37_79b9u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let base: Vec<u8> = (0..6)
            .flat_map(|i: u8| {
                inner(
                    3 + (i % 3),
                    8,
                    u32::from(i) * 5,
                    0,
                    &vec![0x41; usize::from(i) * 5],
                )
            })
            .collect();
        for _ in 0..1000 {
            let mut body = base.clone();
            for _ in 0..=(next() % 4) {
                match next() % 3 {
                    0 if !body.is_empty() => {
                        let at = next() as usize % body.len();
                        body[at] = next().to_le_bytes()[0];
                    }
                    1 => body.truncate(next() as usize % (body.len() + 1)),
                    _ => body.extend((0..next() % 40).map(|_| next().to_le_bytes()[0])),
                }
            }
            let (frames, err) = unbatched(&body);
            assert!(frames.iter().all(|f| f.len() <= 1000));
            if let Some(code) = err {
                assert!(["TAMPERED", "PAYLOAD_TOO_LARGE"].contains(&code), "{code}");
            } else {
                assert!(!frames.is_empty());
            }
        }
    }
}
