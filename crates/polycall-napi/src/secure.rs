//! Secure-session bindings (docs/protocol-extensions.md, "Secure sessions").
//!
//! Sessions live in a per-thread slab and JS holds a `u32` handle, like decoders, and both bulk
//! calls use one metadata array registered once: `secure_push(handle, chunk)` decodes and opens
//! a socket chunk in place and writes five u32 per frame (`type | flags << 16`, `sequence`,
//! `checksum`, payload start in the chunk or `OWNED | index`, payload length);
//! `secure_seal(handle, count, payloads, out)` reads three u32 per frame (`type | flags << 16`,
//! `sequence`, payload length) and the payloads laid end to end, and writes the wire bytes of
//! the whole batch into `out`. One crossing per chunk in, one per tick out.

#![allow(
    clippy::needless_pass_by_value,
    reason = "#[napi] functions receive JS strings and objects by value"
)]

use std::cell::RefCell;

use napi::bindgen_prelude::{Buffer, BufferSlice, Uint32Array};
use napi::{Env, Result};
use napi_derive::napi;
use polycall_core::MessageType;
use polycall_core::crypto::noise::Pattern;
use polycall_core::crypto::session::{
    InitiatorConfig, Mode, OpenedPayload, OutFrame, ResponderConfig, SecureSession, SessionLimits,
};
use polycall_core::crypto::{Cipher, RekeyPolicy};

use crate::error::{invalid, to_js};
use crate::identity::BindingIdentity;
use crate::slab::Slab;

/// u32 words per opened frame in the metadata array.
const OPEN_WORDS: usize = 5;
/// u32 words per frame to seal in the metadata array.
const SEAL_WORDS: usize = 3;
/// Payload-start bit: the payload is `secure_take_owned()[start & !OWNED]`.
const OWNED: u32 = 1 << 31;
/// Result bit: the metadata array filled up before the chunk was used up (see `consumed`).
const MORE: u32 = 1 << 30;
/// Result bit: a bad frame stopped decoding (see `secure_raise`).
const FAILED: u32 = 1 << 29;
/// Result bit: an unfinished frame is buffered after this push.
const PARTIAL: u32 = 1 << 28;
/// Result bit: the last frame can carry a handshake message; run the step, then push
/// `chunk.subarray(consumed)` again.
const HELD: u32 = 1 << 27;

struct Entry {
    session: SecureSession,
    owned: Vec<Buffer>,
    consumed: u32,
}

#[derive(Default)]
struct Registry {
    sessions: Slab<Entry>,
    meta: Option<Uint32Array>,
}

thread_local! {
    // One registry per JS thread: each worker thread has its own addon instance state.
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

fn stale() -> napi::Error<String> {
    napi::Error::new(
        "ERR_POLYCALL_CLOSED".to_owned(),
        "the secure session was freed".to_owned(),
    )
}

fn with_entry<T>(
    handle: u32,
    f: impl FnOnce(&mut Entry, Option<&mut Uint32Array>) -> Result<T, String>,
) -> Result<T, String> {
    REGISTRY.with_borrow_mut(|r| {
        let Registry { sessions, meta } = r;
        let entry = sessions.get_mut(handle).ok_or_else(stale)?;
        f(entry, meta.as_mut())
    })
}

fn with_session<T>(
    handle: u32,
    f: impl FnOnce(&mut SecureSession) -> polycall_core::Result<T>,
) -> Result<T, String> {
    with_entry(handle, |e, _| f(&mut e.session).map_err(to_js))
}

fn insert(session: SecureSession) -> Result<u32, String> {
    REGISTRY.with_borrow_mut(|r| {
        r.sessions
            .insert(Entry {
                session,
                owned: Vec::new(),
                consumed: 0,
            })
            .ok_or_else(|| invalid("too many live secure sessions"))
    })
}

/// Registers the metadata array `secure_push` writes into and `secure_seal` reads from.
#[napi]
pub fn secure_set_meta(env: Env, meta: Uint32Array) -> Result<(), String> {
    let first = REGISTRY.with_borrow_mut(|r| r.meta.replace(meta).is_none());
    if first {
        // At environment teardown, drop (and so zero) every session, and leave the array's
        // reference alone: releasing a reference of an environment going away is not allowed.
        env.add_env_cleanup_hook((), |()| {
            REGISTRY.with_borrow_mut(|r| {
                std::mem::forget(r.meta.take());
                r.sessions.clear();
            });
        })
        .map_err(|e| invalid(e.reason.clone()))?;
    }
    Ok(())
}

/// Limits and intervals of a session.
#[napi(object)]
pub struct BindingSecureLimits {
    /// Largest plaintext payload accepted from the peer (at most 1 048 576).
    pub max_payload: u32,
    /// Rekey this side's sending direction after this many frames (0: never by count).
    pub rekey_frames: u32,
    /// ... or after this many sealed bytes (0: never by volume).
    pub rekey_bytes: f64,
    /// Compress payloads of at least this size once compression is negotiated.
    pub compress_threshold: u32,
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a non-negative integer below 2^53, checked by ts/secure/channel.ts; the cast saturates anyway"
)]
fn limits(l: &BindingSecureLimits) -> SessionLimits {
    SessionLimits {
        max_payload: l.max_payload,
        rekey: RekeyPolicy {
            frames: l.rekey_frames,
            bytes: if l.rekey_bytes > 0.0 {
                l.rekey_bytes as u64
            } else {
                0
            },
        },
        compress_threshold: l.compress_threshold,
    }
}

fn pattern(name: &str) -> Result<Pattern, String> {
    Pattern::from_name(name).ok_or_else(|| invalid(format!("{name:?} is not one of IK, NK, XX")))
}

fn cipher(name: &str) -> Result<Cipher, String> {
    Cipher::from_name(name)
        .ok_or_else(|| invalid(format!("{name:?} is not one of AESGCM, ChaChaPoly")))
}

/// The cipher a client chooses by default on this machine: `'AESGCM'` where the CPU has AES
/// and carry-less multiplication instructions (detected at run time), `'ChaChaPoly'` elsewhere.
#[napi]
pub fn secure_preferred_cipher() -> String {
    Cipher::preferred().name().to_owned()
}

/// A 32-byte key; its validity is the handshake's to refuse (a low-order key fails the first
/// Diffie-Hellman), so no scalar multiplication is spent on it here.
fn key32(bytes: &[u8]) -> Result<[u8; 32], String> {
    bytes.try_into().map_err(|_| {
        to_js(polycall_core::Error::InvalidKey(format!(
            "a public key is 32 bytes, not {}",
            bytes.len()
        )))
    })
}

fn flags16(flags: u32) -> Result<u16, String> {
    u16::try_from(flags).map_err(|_| invalid("flags must fit in 16 bits"))
}

/// A new client session and its first HANDSHAKE payload.
#[napi(object)]
pub struct BindingSecureStart {
    /// The session's handle.
    pub handle: u32,
    /// The payload of the client's first HANDSHAKE frame (hello and handshake message 1).
    pub hello: Buffer,
}

/// Starts a client session. `pattern` is `'IK'`, `'NK'` or `'XX'`; `cipher` `'AESGCM'` or
/// `'ChaChaPoly'` (default: `secure_preferred_cipher()`).
#[napi(catch_unwind)]
pub fn secure_initiator(
    pattern_name: String,
    identity: Option<&BindingIdentity>,
    server_key: Option<&[u8]>,
    flags: u32,
    max_in_flight: u32,
    session_limits: BindingSecureLimits,
    cipher_name: Option<String>,
) -> Result<BindingSecureStart, String> {
    let identity = identity.map(BindingIdentity::get).transpose()?;
    let config = InitiatorConfig {
        pattern: pattern(&pattern_name)?,
        identity,
        server_key: server_key.map(key32).transpose()?,
        cipher: cipher_name
            .as_deref()
            .map_or(Ok(Cipher::preferred()), cipher)?,
        flags: flags16(flags)?,
        max_in_flight,
        limits: limits(&session_limits),
        ephemeral: None,
    };
    let (session, hello) = SecureSession::initiator(&config).map_err(to_js)?;
    Ok(BindingSecureStart {
        handle: insert(session)?,
        hello: hello.into(),
    })
}

/// Starts a server session that accepts the given patterns and ciphers (default: both).
#[napi(catch_unwind)]
pub fn secure_responder(
    identity: &BindingIdentity,
    patterns: Vec<String>,
    session_limits: BindingSecureLimits,
    ciphers: Option<Vec<String>>,
) -> Result<u32, String> {
    let patterns = patterns
        .iter()
        .map(|p| pattern(p))
        .collect::<Result<Vec<_>, _>>()?;
    let ciphers = match ciphers {
        Some(names) => names
            .iter()
            .map(|c| cipher(c))
            .collect::<Result<Vec<_>, _>>()?,
        None => Cipher::ALL.to_vec(),
    };
    let session = SecureSession::responder(&ResponderConfig {
        identity: identity.get()?,
        patterns: &patterns,
        ciphers: &ciphers,
        limits: limits(&session_limits),
        ephemeral: None,
    })
    .map_err(to_js)?;
    insert(session)
}

/// What a client's hello offered.
#[napi(object)]
pub struct BindingSecureHello {
    /// The hello's capability flags.
    pub flags: u32,
    /// The client's stated limit of requests in flight.
    pub max_in_flight: Option<u32>,
    /// Whether the hello offers a secure session.
    pub secure: bool,
    /// The offered pattern.
    pub pattern: Option<String>,
    /// The client's cipher.
    pub cipher: Option<String>,
    /// IK: the client's authenticated public key.
    pub client_key: Option<Buffer>,
}

/// Server: reads the client's first HANDSHAKE payload.
#[napi(catch_unwind)]
pub fn secure_read_hello(handle: u32, payload: &[u8]) -> Result<BindingSecureHello, String> {
    let h = with_session(handle, |s| s.read_hello(payload))?;
    Ok(BindingSecureHello {
        flags: u32::from(h.flags),
        max_in_flight: h.max_in_flight,
        secure: h.secure.is_some(),
        pattern: h.secure.as_ref().map(|o| o.pattern.name().to_owned()),
        cipher: h.secure.as_ref().map(|o| o.cipher.name().to_owned()),
        client_key: h
            .secure
            .and_then(|o| o.client_key)
            .map(|k| k.to_vec().into()),
    })
}

/// Server: accepts the offer; returns the RESPONSE payload (handshake message 2).
#[napi(catch_unwind)]
pub fn secure_accept(handle: u32, flags: u32, max_in_flight: u32) -> Result<Buffer, String> {
    let flags = flags16(flags)?;
    with_session(handle, |s| s.accept(flags, max_in_flight)).map(Buffer::from)
}

/// A server's reply.
#[napi(object)]
pub struct BindingSecureReply {
    /// The accepted capability flags.
    pub flags: u32,
    /// The server's limit of requests in flight.
    pub max_in_flight: u32,
    /// The server's public key.
    pub server_key: Buffer,
    /// Whether the session is established (IK, NK); XX needs `secure_finish`.
    pub established: bool,
}

/// Client: reads the server's RESPONSE payload (handshake message 2).
#[napi(catch_unwind)]
pub fn secure_read_reply(handle: u32, payload: &[u8]) -> Result<BindingSecureReply, String> {
    let r = with_session(handle, |s| s.read_reply(payload))?;
    Ok(BindingSecureReply {
        flags: u32::from(r.flags),
        max_in_flight: r.max_in_flight,
        server_key: r.server_key.to_vec().into(),
        established: r.established,
    })
}

/// Client (XX): returns the second HANDSHAKE payload (handshake message 3).
#[napi(catch_unwind)]
pub fn secure_finish(handle: u32) -> Result<Buffer, String> {
    with_session(handle, SecureSession::finish).map(Buffer::from)
}

/// Server (XX): reads the client's second HANDSHAKE payload; returns the client's key.
#[napi(catch_unwind)]
pub fn secure_read_finish(handle: u32, payload: &[u8]) -> Result<Buffer, String> {
    with_session(handle, |s| s.read_finish(payload)).map(|k| k.to_vec().into())
}

/// Continues without a secure session (plain frames in both directions).
#[napi]
pub fn secure_plain(handle: u32) -> Result<(), String> {
    with_session(handle, SecureSession::plain)
}

/// Turns lz4 compression on for payloads of at least `threshold` bytes, or off.
#[napi]
pub fn secure_set_compression(handle: u32, threshold: Option<u32>) -> Result<(), String> {
    with_session(handle, |s| {
        s.set_compression(threshold);
        Ok(())
    })
}

/// Decodes `chunk`, opening sealed frames in place, into the registered metadata array.
/// Returns the frame count with `MORE`, `FAILED`, `PARTIAL` and `HELD` bits.
#[napi(catch_unwind)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "chunks are checked to be under 2 GiB, so offsets, lengths and counts fit in u31"
)]
pub fn secure_push(handle: u32, mut chunk: BufferSlice) -> Result<u32, String> {
    let chunk: &mut [u8] = &mut chunk;
    if chunk.len() >= OWNED as usize {
        return Err(invalid("a chunk must be smaller than 2 GiB"));
    }
    let len = chunk.len();
    with_entry(handle, |entry, meta| {
        let Some(meta) = meta else {
            return Err(invalid("secure metadata array not registered"));
        };
        // SAFETY: `meta` is a Uint32Array held by the registry (so its ArrayBuffer stays alive
        // and, being fixed-length, keeps its address). JS runs on this thread and is suspended
        // for the length of this call, no other slice of it exists during the call, and
        // `chunk` is another array (the caller never passes the metadata array as a chunk).
        let meta = unsafe { meta.as_mut() };
        let capacity = meta.len() / OPEN_WORDS;
        entry.owned.clear();
        let owned = &mut entry.owned;
        let mut count = 0usize;
        let result = entry.session.decode(chunk, capacity.max(1), |f| {
            let (start, size) = match f.payload {
                OpenedPayload::InChunk { start, len } => (start as u32, len as u32),
                OpenedPayload::Owned(bytes) => {
                    let size = bytes.len() as u32;
                    owned.push(bytes.into());
                    (OWNED | (owned.len() - 1) as u32, size)
                }
            };
            let h = f.header;
            let words = [
                u32::from(h.kind as u8) | (u32::from(h.flags) << 16),
                h.sequence,
                h.checksum,
                start,
                size,
            ];
            if let Some(slot) = meta.get_mut(count * OPEN_WORDS..(count + 1) * OPEN_WORDS) {
                slot.copy_from_slice(&words);
            }
            count += 1;
        });
        let mut status = count as u32;
        match result {
            Ok(st) => {
                entry.consumed = st.consumed as u32;
                if st.held {
                    status |= HELD;
                } else if st.consumed < len {
                    status |= MORE;
                }
                if entry.session.buffered() > 0 {
                    status |= PARTIAL;
                }
            }
            Err(_) => status |= FAILED,
        }
        Ok(status)
    })
}

/// The payloads reported with the `OWNED` bit by the last push (assembled across chunks or
/// decompressed), in index order.
#[napi]
pub fn secure_take_owned(handle: u32) -> Result<Vec<Buffer>, String> {
    with_entry(handle, |e, _| Ok(std::mem::take(&mut e.owned)))
}

/// Bytes of the last chunk read by a push that returned `MORE` or `HELD`.
#[napi]
pub fn secure_consumed(handle: u32) -> Result<u32, String> {
    with_entry(handle, |e, _| Ok(e.consumed))
}

/// Throws the error that ended the session (does nothing when it has not failed).
#[napi]
pub fn secure_raise(handle: u32) -> Result<(), String> {
    with_entry(handle, |e, _| {
        e.session
            .failure()
            .cloned()
            .map_or(Ok(()), |err| Err(to_js(err)))
    })
}

/// Seals (or, in a plain session, encodes) `count` frames described in the metadata array,
/// whose payloads lie end to end in `payloads`, into `out` (at least `count * 32 +
/// payloads.length` bytes). Returns the bytes written.
#[napi(catch_unwind)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "flags are the high 16 bits of a u32; a batch writes less than 4 GiB"
)]
pub fn secure_seal(
    handle: u32,
    count: u32,
    payloads: &[u8],
    mut out: BufferSlice,
) -> Result<u32, String> {
    let out: &mut [u8] = &mut out;
    with_entry(handle, |entry, meta| {
        let Some(meta) = meta else {
            return Err(invalid("secure metadata array not registered"));
        };
        // SAFETY: as in `secure_push`; the array is only read here.
        let meta = unsafe { meta.as_mut() };
        let count = count as usize;
        let words = meta
            .get(..count * SEAL_WORDS)
            .ok_or_else(|| invalid("more frames than the metadata array holds"))?;
        let mut frames = Vec::with_capacity(count);
        let mut pos = 0usize;
        for w in words.chunks_exact(SEAL_WORDS) {
            let &[head, sequence, len] = w else {
                return Err(invalid("metadata words"));
            };
            let kind = MessageType::try_from(head & 0xff).map_err(to_js)?;
            let len = len as usize;
            let payload = payloads
                .get(pos..pos + len)
                .ok_or_else(|| invalid("payload lengths exceed the payload bytes"))?;
            pos += len;
            frames.push(OutFrame {
                kind,
                flags: (head >> 16) as u16,
                sequence,
                payload,
            });
        }
        if pos != payloads.len() {
            return Err(invalid(
                "payload lengths do not add up to the payload bytes",
            ));
        }
        let written = entry.session.seal_batch(&frames, out).map_err(to_js)?;
        u32::try_from(written).map_err(|_| invalid("a batch over 4 GiB"))
    })
}

/// Seals in place the frames laid out in `buf[start..end]` (see
/// `SecureSession::seal_in_place`: a provisional header, the body and 16 bytes of room for the
/// tag each) and returns the offset in `buf` where the sealed frames end.
#[napi(catch_unwind)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "the region lies inside a buffer, so its offsets fit in u32"
)]
pub fn secure_seal_in_place(
    handle: u32,
    mut buf: BufferSlice,
    start: u32,
    end: u32,
) -> Result<u32, String> {
    let buf: &mut [u8] = &mut buf;
    let (start, end) = (start as usize, end as usize);
    let Some(region) = buf.get_mut(start..end) else {
        return Err(invalid("the region to seal lies outside the buffer"));
    };
    with_entry(handle, |entry, _| {
        let written = entry.session.seal_in_place(region).map_err(to_js)?;
        Ok((start + written) as u32)
    })
}

/// Declares the end of the stream; throws `TRUNCATED_*` when bytes remain.
#[napi]
pub fn secure_end(handle: u32) -> Result<(), String> {
    with_session(handle, SecureSession::end)
}

/// Releases a session (zeroing its keys). Freeing twice, or a stale handle, does nothing.
#[napi]
pub fn secure_free(handle: u32) {
    REGISTRY.with_borrow_mut(|r| r.sessions.remove(handle));
}

/// Sessions alive on this thread (created and not yet freed): a leak check for tests.
#[napi]
pub fn secure_live_count() -> u32 {
    REGISTRY.with_borrow(|r| u32::try_from(r.sessions.live()).unwrap_or(u32::MAX))
}

/// What a session knows about itself.
#[napi(object)]
pub struct BindingSecureState {
    /// `'handshaking'`, `'plain'` or `'sealed'`.
    pub mode: String,
    /// `'IK'`, `'NK'` or `'XX'`, once known.
    pub pattern: Option<String>,
    /// `'AESGCM'` or `'ChaChaPoly'`, once known.
    pub cipher: Option<String>,
    /// The peer's public key, once known.
    pub remote_key: Option<Buffer>,
    /// The handshake hash (unique to the session), once established.
    pub handshake_hash: Option<Buffer>,
    /// The capability flags both sides agreed on.
    pub agreed_flags: u32,
    /// Rekeys of the sending direction so far.
    pub rekeys_sent: f64,
    /// Rekeys of the receiving direction so far.
    pub rekeys_received: f64,
    /// Bytes held for an unfinished frame.
    pub buffered: u32,
}

/// The session's state.
#[napi]
#[allow(
    clippy::cast_precision_loss,
    reason = "rekey counters stay far below 2^53"
)]
pub fn secure_state(handle: u32) -> Result<BindingSecureState, String> {
    with_entry(handle, |e, _| {
        let s = &e.session;
        let (sent, received) = s.rekeys();
        Ok(BindingSecureState {
            mode: match s.mode() {
                Mode::Handshaking => "handshaking",
                Mode::Plain => "plain",
                Mode::Sealed => "sealed",
            }
            .to_owned(),
            pattern: s.pattern().map(|p| p.name().to_owned()),
            cipher: s.cipher().map(|c| c.name().to_owned()),
            remote_key: s.remote_static().map(|k| k.to_vec().into()),
            handshake_hash: s.handshake_hash().map(|h| h.to_vec().into()),
            agreed_flags: u32::from(s.agreed_flags()),
            rekeys_sent: sent as f64,
            rekeys_received: received as f64,
            buffered: u32::try_from(s.buffered()).unwrap_or(u32::MAX),
        })
    })
}

/// Compresses one payload as a COMPRESSED frame carries it (size prefix, lz4 block), or returns
/// `null` when it is under `threshold` or does not shrink.
#[napi(catch_unwind)]
pub fn lz4_compress(payload: &[u8], threshold: u32) -> Option<Buffer> {
    let mut c = polycall_core::crypto::compress::Compressor::new(threshold);
    c.compress(payload).map(|b| b.to_vec().into())
}

/// Decompresses a COMPRESSED payload whose announced size is at most `limit`.
#[napi(catch_unwind)]
pub fn lz4_decompress(payload: &[u8], limit: u32) -> Result<Buffer, String> {
    polycall_core::crypto::compress::decompress(payload, limit)
        .map(Buffer::from)
        .map_err(to_js)
}
